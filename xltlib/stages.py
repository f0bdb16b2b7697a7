"""The work of each stage notebook, as plain functions (the notebooks stay thin).

Layout of a run folder ``DIR``::

    config.yaml                   the validated params snapshot
    data/<task>.json              the offline split (row ids) every cell uses
    checkpoints/<cell_id>/        a finished checkpoint (written atomically)
    results/train/<checkpoint>.parquet   per-step loss log
    results/transfer/<cell_id>.parquet   task score (and its parts) per language (pair)
    results/alignment/<checkpoint>.parquet  alignment per metric x language x layer

A cell is (model, task, method, seed); its checkpoint is named after the task it trains on, so XQuAD,
MLQA and LAReQA cells (all trained on TyDiQA-GoldP English) share one checkpoint.
    notebooks/, report/           executed notebooks and their HTML
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import tasks as T
from .config import RunConfig, cell_id, dump_config, expand_grid, load_config
from .results import provenance, read_rows, write_json, write_rows

PRETRAINED = "pretrained"

try:  # the stage notebooks should show results, not load reports of newly initialised heads
    from transformers.utils import logging as _hf_logging

    _hf_logging.set_verbosity_error()
except ImportError:  # pragma: no cover
    pass


@dataclass
class Run:
    cfg: RunConfig
    dir: Path
    params_file: str = ""

    @classmethod
    def open(cls, run_dir: str | Path) -> "Run":
        run_dir = Path(run_dir).resolve()
        snap = run_dir / "config.yaml"
        if not snap.is_file():
            raise FileNotFoundError(f"{run_dir} is not an xlt run folder (no config.yaml); start one with `xlt run PARAMS`")
        meta = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
        return cls(load_config(snap), run_dir, meta.get("params_file", ""))

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    @property
    def data_dir(self) -> Path | None:
        return self.cfg.resolved_data_dir()

    def cells(self) -> list[dict]:
        return expand_grid(self.cfg)

    def languages(self, task: str) -> list[str]:
        langs = self.cfg.languages.get(task) or list(T.get_task(task).languages)
        return ["en"] + [lang for lang in langs if lang != "en"]

    def prov(self) -> dict:
        return provenance(self.params_file)


def init_run(cfg: RunConfig, run_dir: Path, params_file: str = "") -> Run:
    """Create the run folder; smoke runs get their tiny data here."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.smoke:
        from .smoke import make_smoke_data

        data = make_smoke_data(run_dir / "smoke-data")
        cfg = cfg.model_copy(update={"data_dir": str(data)})
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    write_json({"params_file": str(params_file)}, run_dir / "run.json")
    return Run(cfg, run_dir, str(params_file))


# --------------------------------------------------------------------------- data
def _cap(ids: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(ids, limit, replace=False)) if limit and len(ids) > limit else ids


def stage_data(run: Run) -> pd.DataFrame:
    """Read every task and language, fix the training rows and the evaluated rows, write the split, summarize.

    ``dev_split`` tasks (no training file offline) split the English dev set by group and evaluate the
    held-out row indices in every language; ``train_file`` tasks train on their (or their source task's)
    English training file and evaluate each language's file, the same rows everywhere when the files are
    row-aligned.
    """
    rows = []
    p = run.cfg.protocol
    for task in run.cfg.grid.task:
        t = T.get_task(task)
        by_lang = {lang: T.load_records(task, lang, run.data_dir) for lang in run.languages(task)}
        rng = np.random.default_rng(p.split_seed)
        if t.protocol == "dev_split":
            T.check_aligned(task, by_lang)
            train_ids, eval_ids = T.offline_split(task, by_lang["en"], p.train_fraction, p.split_seed)
            train_ids = _cap(train_ids, p.max_train, rng)
            held_out = _cap(eval_ids, p.max_eval, rng)
            eval_by_lang = {lang: held_out for lang in by_lang}
        else:
            n_train_rows = len(T.load_train_records(task, run.data_dir))
            train_ids = _cap(np.arange(n_train_rows), p.max_train, np.random.default_rng(p.split_seed))
            if t.row_aligned:
                T.check_aligned(task, by_lang)
                shared = _cap(np.arange(len(by_lang["en"])), p.max_eval, rng)
                eval_by_lang = {lang: shared for lang in by_lang}
            else:
                eval_by_lang = {lang: _cap(np.arange(len(r)), p.max_eval, rng) for lang, r in by_lang.items()}
        protocol = p.name if t.protocol == "dev_split" else f"train_file:{t.training_task}"
        write_json(dict(task=task, protocol=protocol, languages=list(by_lang), train_ids=train_ids.tolist(),
                        eval_ids={lang: ids.tolist() for lang, ids in eval_by_lang.items()}),
                   run.path("data", f"{task}.json"))
        for lang, recs in by_lang.items():
            ids = eval_by_lang[lang]
            row = dict(task=task, protocol=protocol, language=lang, rows=len(recs),
                       train_rows=len(train_ids) if lang == "en" else 0, eval_rows=len(ids))
            if "label" in (recs[0] if recs else {}):
                labels = np.array([recs[i]["label"] for i in ids])
                row["label_counts"] = np.bincount(labels).tolist() if len(labels) else []
            rows.append(row)
    return pd.DataFrame(rows)


def task_split(run: Run, task: str) -> dict:
    path = run.path("data", f"{task}.json")
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: the data stage has not finished for task '{task}'")
    return json.loads(path.read_text())


def eval_ids(split: dict, lang: str) -> list[int]:
    """Evaluated row indices of one language (older split files hold one list for every language)."""
    ids = split["eval_ids"]
    return ids[lang] if isinstance(ids, dict) else ids


def eval_records(run: Run, task: str) -> dict[str, list[dict]]:
    split = task_split(run, task)
    out = {}
    for lang in split["languages"]:
        recs = T.load_records(task, lang, run.data_dir)
        out[lang] = [recs[i] for i in eval_ids(split, lang)]
    return out


def train_records(run: Run, task: str) -> list[dict]:
    """The English rows a checkpoint of ``task`` trains on (the same for tasks sharing a training task)."""
    split = task_split(run, task)
    t = T.get_task(task)
    source = T.load_records(task, "en", run.data_dir) if t.protocol == "dev_split" \
        else T.load_train_records(task, run.data_dir)
    return [source[i] for i in split["train_ids"]]


# -------------------------------------------------------------------------- train
def train_fingerprint(run: Run, cell: dict) -> str:
    """Hash of everything that determines a checkpoint; a rerun retrains only if it changed."""
    c = run.cfg
    split = task_split(run, cell["task"])["train_ids"][:50]
    cell = {k: v for k, v in cell.items() if k != "checkpoint"}
    source = T.get_task(cell["task"]).training_task
    if source != cell["task"]:  # cells sharing a training task share one checkpoint and fingerprint
        cell.update(task=source, cell_id=cell_id(cell["model"], source, cell["method"], cell["seed"]))
    key = dict(cell=cell, train=c.train.model_dump(), protocol=c.protocol.model_dump(),
               data_dir=str(run.data_dir), split=split)
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_dir(run: Run, checkpoint: str) -> Path:
    return run.path("checkpoints", checkpoint)


def cell_done(run: Run, cell: dict) -> bool:
    meta = checkpoint_dir(run, cell["checkpoint"]) / "xlt_checkpoint.json"
    return meta.is_file() and json.loads(meta.read_text()).get("fingerprint") == train_fingerprint(run, cell)


def find_cell(run: Run, cell_id: str) -> dict:
    for cell in run.cells():
        if cell["cell_id"] == cell_id:
            return cell
    raise ValueError(f"cell '{cell_id}' is not in the grid of {run.dir}; cells: {[c['cell_id'] for c in run.cells()]}")


def build_objective_for(run: Run, cell: dict):
    from .robust import build_objective

    return build_objective(cell["method_type"], cell["method_params"], data_dir=run.data_dir, entry=cell["method"])


def stage_train(run: Run, cell_id: str) -> pd.DataFrame:
    """Fine-tune the checkpoint of one grid cell and save it; returns the per-step log."""
    from .kinds import get_kind
    from .train import save_checkpoint, train_model

    cell = find_cell(run, cell_id)
    task = T.get_task(T.get_task(cell["task"]).training_task)
    records = train_records(run, cell["task"])
    t = run.cfg.train
    kind = T.get_task(cell["task"]).kind
    model, tokenizer, log = train_model(
        cell["model"], records, kind=kind, task=task, num_labels=get_kind(kind).num_labels(task),
        objective=build_objective_for(run, cell), seed=cell["seed"], cfg=t)
    log_df = pd.DataFrame(log)
    if not np.isfinite(log_df["loss"]).all():
        raise FloatingPointError(f"cell {cell_id}: non-finite training loss; no checkpoint written")
    ck = cell["checkpoint"]
    meta = dict(cell, fingerprint=train_fingerprint(run, cell), train_examples=len(records), pooling=t.pooling,
                kind=kind, training_task=task.name, train_seconds=float(log_df["elapsed_s"].iloc[-1]), **run.prov())
    rows = [dict(checkpoint=ck, model=cell["model"], task=task.name, method=cell["method"], seed=cell["seed"],
                 language="en", language2="", layer=-1, metric="train_loss", value=r["loss"], n=r["step"],
                 elapsed_s=r["elapsed_s"], tokens=r["tokens"], examples=r["examples"]) for r in log]
    write_rows(rows, run.path("results", "train", f"{ck}.parquet"), run.prov())
    save_checkpoint(model, tokenizer, checkpoint_dir(run, ck), base_model=cell["model"], meta=meta)
    return log_df


def finished_cells(run: Run) -> list[dict]:
    return [c for c in run.cells() if cell_done(run, c)]


# ----------------------------------------------------------------------- transfer
def training_cells(run: Run) -> list[dict]:
    """One grid cell per distinct checkpoint (cells sharing a training task train once)."""
    first: dict[str, dict] = {}
    for c in run.cells():
        first.setdefault(c["checkpoint"], c)
    return list(first.values())


def stage_transfer(run: Run) -> pd.DataFrame:
    """Zero-shot score of every finished cell in every language (cached per cell), by the task's kind."""
    from .kinds import get_kind
    from .train import load_checkpoint

    out_dir = run.path("results", "transfer")
    loaded: dict[str, tuple] = {}
    for cell in finished_cells(run):
        out = out_dir / f"{cell['cell_id']}.parquet"
        fp = train_fingerprint(run, cell) + str(run.cfg.evaluate.model_dump())
        if out.exists() and pd.read_parquet(out, columns=["fingerprint"])["fingerprint"].iloc[0] == fp:
            continue
        if cell["checkpoint"] not in loaded:
            loaded = {cell["checkpoint"]: load_checkpoint(checkpoint_dir(run, cell["checkpoint"]))}
        model, tokenizer, _ = loaded[cell["checkpoint"]]
        task = T.get_task(cell["task"])
        kind = get_kind(task.kind)
        recs = eval_records(run, cell["task"])
        kw = dict(objective=build_objective_for(run, cell), batch_size=run.cfg.evaluate.batch_size,
                  max_length=run.cfg.train.max_length, bf16=run.cfg.train.bf16)
        rows = kind.evaluate(model, tokenizer, task, recs, **kw)
        ev = run.cfg.evaluate
        if ev.generalized and task.row_aligned and task.kind == "pair_classification":
            langs = [lang for lang in recs if ev.generalized_languages is None or lang in ev.generalized_languages]
            sub = {lang: recs[lang][: ev.generalized_max_rows] for lang in langs}
            pairs = [(a, b) for a in langs for b in langs if a != b]
            rows += kind.evaluate(model, tokenizer, task, sub, pairs=pairs, **kw)
        for r in rows:
            r.update(cell_id=cell["cell_id"], checkpoint=cell["checkpoint"], model=cell["model"], task=cell["task"],
                     method=cell["method"], seed=cell["seed"], layer=-1, fingerprint=fp)
        write_rows(rows, out, run.prov())
    return load_results(run, "transfer")


def majority_rates(run: Run) -> dict[str, float]:
    """Per task, the share of the most frequent label among the English evaluation rows (a trivial baseline)."""
    out = {}
    for task in run.cfg.grid.task:
        if T.get_task(task).kind not in ("pair_classification", "multiple_choice"):
            continue
        labels = np.array([r["label"] for r in eval_records(run, task)["en"]])
        out[task] = float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")
    return out


def load_results(run: Run, kind: str) -> pd.DataFrame:
    """Result rows of the current run only: rows of checkpoints that are no longer valid (grid or training
    settings changed) or computed under other alignment settings stay on disk but are not analysed."""
    df = read_rows(run.path("results", kind))
    if not len(df):
        return df
    live = {c["checkpoint"] for c in finished_cells(run)}
    if kind == "transfer" and "score" not in set(df["metric"]):
        # results cached before tasks had a "score" row: for sentence-pair tasks it is the accuracy
        df = pd.concat([df, df[df["metric"] == "accuracy"].assign(metric="score")], ignore_index=True)
    if kind == "transfer" and "cell_id" not in df:  # rows written before they carried their cell id
        df["cell_id"] = [cell_id(m, t, me, s) for m, t, me, s in zip(df["model"], df["task"], df["method"], df["seed"])]
    if kind == "alignment":
        live |= {ck["checkpoint"] for ck in alignment_checkpoints(run) if ck["path"] is None}
        df = df[df["fingerprint"] == alignment_fingerprint(run)]
    return df[df["checkpoint"].isin(live)].reset_index(drop=True)


# ---------------------------------------------------------------------- alignment
def alignment_languages(run: Run) -> list[str]:
    a = run.cfg.alignment
    if a.languages:
        return [T.TATOEBA_ISO1.get(x, x) for x in a.languages]
    langs = {lang for task in run.cfg.grid.task for lang in run.languages(task)}
    return sorted(lang for lang in langs if lang != "en")


def parallel_sentences(run: Run, dataset: str) -> dict[str, tuple[list[str], list[str]]]:
    """xx sentences (or words) and their English translations, disjoint from the rows that score transfer."""
    from .parallel import load_parallel

    ctx = {}
    if "xnli" in run.cfg.grid.task:
        ctx["xnli_train_ids"] = task_split(run, "xnli")["train_ids"]
    return load_parallel(dataset, run.data_dir, alignment_languages(run), run.cfg.alignment.max_sentences, **ctx)


def alignment_fingerprint(run: Run) -> str:
    return hashlib.sha256(json.dumps(run.cfg.alignment.model_dump(), sort_keys=True).encode()).hexdigest()[:12]


def alignment_checkpoints(run: Run) -> list[dict]:
    ck = []
    if run.cfg.alignment.include_pretrained:
        ck += [dict(checkpoint=f"{PRETRAINED}:{m}", model=m, task="", method=PRETRAINED, seed=-1, path=None)
               for m in run.cfg.grid.model]
    ck += [dict(checkpoint=c["checkpoint"], model=c["model"], task=T.get_task(c["task"]).training_task,
                method=c["method"], seed=c["seed"], path=checkpoint_dir(run, c["checkpoint"]))
           for c in training_cells(run) if cell_done(run, c)]
    return ck


def stage_alignment(run: Run) -> pd.DataFrame:
    """Every alignment metric x language x layer for the pre-trained model and each checkpoint."""
    from .alignment import compute_alignment_pairs, encode_layers
    from .models import load_encoder, load_tokenizer
    from .parallel import PARALLEL
    from .train import load_checkpoint

    a = run.cfg.alignment
    data = {d: parallel_sentences(run, d) for d in a.datasets}
    fp = alignment_fingerprint(run)
    for ck in alignment_checkpoints(run):
        out = run.path("results", "alignment", ck["checkpoint"].replace(":", "__").replace("/", "--") + ".parquet")
        if out.exists() and pd.read_parquet(out, columns=["fingerprint"])["fingerprint"].iloc[0] == fp:
            continue
        if ck["path"] is None:
            model, tok = load_encoder(ck["model"]), load_tokenizer(ck["model"])
        else:
            model, tok, _ = load_checkpoint(ck["path"])
        rows = []
        kw = dict(pooling=a.pooling, batch_size=a.batch_size, max_length=a.max_length, bf16=run.cfg.train.bf16)
        cache: dict[int, np.ndarray] = {}

        def encode(texts: list[str]) -> np.ndarray:  # English sides shared across languages are encoded once
            key = hash(tuple(texts))
            if key not in cache:
                cache[key] = encode_layers(model, tok, texts, **kw)
            return cache[key]

        for dataset, pairs in data.items():
            if not pairs:
                continue
            x = {lang: encode(xs) for lang, (xs, _) in pairs.items()}
            y = {lang: encode(ys) for lang, (_, ys) in pairs.items()}
            for r in compute_alignment_pairs(x, y, metrics=a.metrics, layers=a.layers,
                                             options=PARALLEL[dataset].options):
                rows.append(dict(r, dataset=dataset))
            cache.clear()
        for r in rows:
            r.update({k: ck[k] for k in ("checkpoint", "model", "task", "method", "seed")}, fingerprint=fp)
        write_rows(rows, out, run.prov())
    return load_results(run, "alignment")


def missing_cells(run: Run) -> list[str]:
    return [c["cell_id"] for c in run.cells() if not cell_done(run, c)]
