"""The work of each stage notebook, as plain functions (the notebooks stay thin).

Layout of a run folder ``DIR``::

    config.yaml                   the validated params snapshot
    data/<task>.json              the offline split (row ids) every cell uses
    checkpoints/<cell_id>/        a finished checkpoint (written atomically)
    results/train/<cell_id>.parquet      per-step loss log
    results/transfer/<cell_id>.parquet   accuracy per language (pair)
    results/alignment/<ckpt>.parquet     alignment per metric x language x layer
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
from .config import RunConfig, dump_config, expand_grid, load_config
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
def stage_data(run: Run) -> pd.DataFrame:
    """Read every task and language, split English by group, write the split, return a summary."""
    rows = []
    for task in run.cfg.grid.task:
        by_lang = {lang: T.load_records(task, lang, run.data_dir) for lang in run.languages(task)}
        T.check_aligned(task, by_lang)
        p = run.cfg.protocol
        train_ids, eval_ids = T.offline_split(task, by_lang["en"], p.train_fraction, p.split_seed)
        rng = np.random.default_rng(p.split_seed)
        if p.max_train and len(train_ids) > p.max_train:
            train_ids = np.sort(rng.choice(train_ids, p.max_train, replace=False))
        if p.max_eval and len(eval_ids) > p.max_eval:
            eval_ids = np.sort(rng.choice(eval_ids, p.max_eval, replace=False))
        write_json(dict(task=task, protocol=p.name, languages=list(by_lang), train_ids=train_ids.tolist(),
                        eval_ids=eval_ids.tolist()), run.path("data", f"{task}.json"))
        for lang, recs in by_lang.items():
            labels = np.array([r["label"] for r in recs])
            rows.append(dict(task=task, language=lang, rows=len(recs), train_rows=len(train_ids) if lang == "en" else 0,
                             eval_rows=len(eval_ids), label_counts=np.bincount(labels[eval_ids]).tolist()))
    return pd.DataFrame(rows)


def task_split(run: Run, task: str) -> dict:
    path = run.path("data", f"{task}.json")
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: the data stage has not finished for task '{task}'")
    return json.loads(path.read_text())


def eval_records(run: Run, task: str) -> dict[str, list[dict]]:
    split = task_split(run, task)
    out = {}
    for lang in split["languages"]:
        recs = T.load_records(task, lang, run.data_dir)
        out[lang] = [recs[i] for i in split["eval_ids"]]
    return out


# -------------------------------------------------------------------------- train
def train_fingerprint(run: Run, cell: dict) -> str:
    """Hash of everything that determines a checkpoint; a rerun retrains only if it changed."""
    c = run.cfg
    key = dict(cell=cell, train=c.train.model_dump(), protocol=c.protocol.model_dump(),
               data_dir=str(run.data_dir), split=task_split(run, cell["task"])["train_ids"][:50])
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_dir(run: Run, cell_id: str) -> Path:
    return run.path("checkpoints", cell_id)


def cell_done(run: Run, cell: dict) -> bool:
    meta = checkpoint_dir(run, cell["cell_id"]) / "xlt_checkpoint.json"
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
    """Fine-tune one grid cell and save its checkpoint; returns the per-step log."""
    from .train import save_checkpoint, train_classifier

    cell = find_cell(run, cell_id)
    task = T.get_task(cell["task"])
    split = task_split(run, cell["task"])
    english = T.load_records(cell["task"], "en", run.data_dir)
    records = [english[i] for i in split["train_ids"]]
    t = run.cfg.train
    model, tokenizer, log = train_classifier(
        cell["model"], records, num_labels=len(task.labels), objective=build_objective_for(run, cell),
        seed=cell["seed"], epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, warmup_ratio=t.warmup_ratio,
        weight_decay=t.weight_decay, max_length=t.max_length, bf16=t.bf16, freeze_embeddings=t.freeze_embeddings,
        threads=t.threads, fast_dropout=t.fast_dropout, pooling=t.pooling)
    log_df = pd.DataFrame(log)
    if not np.isfinite(log_df["loss"]).all():
        raise FloatingPointError(f"cell {cell_id}: non-finite training loss; no checkpoint written")
    meta = dict(cell, fingerprint=train_fingerprint(run, cell), train_examples=len(records), pooling=t.pooling,
                train_seconds=float(log_df["elapsed_s"].iloc[-1]), **run.prov())
    rows = [dict(checkpoint=cell_id, model=cell["model"], task=cell["task"], method=cell["method"], seed=cell["seed"],
                 language="en", language2="", layer=-1, metric="train_loss", value=r["loss"], n=r["step"],
                 elapsed_s=r["elapsed_s"], tokens=r["tokens"], examples=r["examples"]) for r in log]
    write_rows(rows, run.path("results", "train", f"{cell_id}.parquet"), run.prov())
    save_checkpoint(model, tokenizer, checkpoint_dir(run, cell_id), base_model=cell["model"], meta=meta)
    return log_df


def finished_cells(run: Run) -> list[dict]:
    return [c for c in run.cells() if cell_done(run, c)]


# ----------------------------------------------------------------------- transfer
def stage_transfer(run: Run) -> pd.DataFrame:
    """Zero-shot accuracy of every finished checkpoint in every language (cached per checkpoint)."""
    from .evaluate import evaluate_languages
    from .train import load_checkpoint

    out_dir = run.path("results", "transfer")
    for cell in finished_cells(run):
        out = out_dir / f"{cell['cell_id']}.parquet"
        fp = train_fingerprint(run, cell) + str(run.cfg.evaluate.model_dump())
        if out.exists() and pd.read_parquet(out, columns=["fingerprint"])["fingerprint"].iloc[0] == fp:
            continue
        model, tokenizer, _ = load_checkpoint(checkpoint_dir(run, cell["cell_id"]))
        recs = eval_records(run, cell["task"])
        kw = dict(objective=build_objective_for(run, cell), batch_size=run.cfg.evaluate.batch_size,
                  max_length=run.cfg.train.max_length, bf16=run.cfg.train.bf16)
        rows = evaluate_languages(model, tokenizer, recs, **kw)
        ev = run.cfg.evaluate
        if ev.generalized and T.get_task(cell["task"]).row_aligned:
            langs = [lang for lang in recs if ev.generalized_languages is None or lang in ev.generalized_languages]
            sub = {lang: recs[lang][: ev.generalized_max_rows] for lang in langs}
            pairs = [(a, b) for a in langs for b in langs if a != b]
            rows += evaluate_languages(model, tokenizer, sub, pairs=pairs, **kw)
        for r in rows:
            r.update(checkpoint=cell["cell_id"], model=cell["model"], task=cell["task"], method=cell["method"],
                     seed=cell["seed"], layer=-1, fingerprint=fp)
        write_rows(rows, out, run.prov())
    return load_results(run, "transfer")


def majority_rates(run: Run) -> dict[str, float]:
    """Per task, the share of the most frequent label among the English evaluation rows (a trivial baseline)."""
    out = {}
    for task in run.cfg.grid.task:
        labels = np.array([r["label"] for r in eval_records(run, task)["en"]])
        out[task] = float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")
    return out


def load_results(run: Run, kind: str) -> pd.DataFrame:
    """Result rows of the current run only: rows of checkpoints that are no longer valid (grid or training
    settings changed) or computed under other alignment settings stay on disk but are not analysed."""
    df = read_rows(run.path("results", kind))
    if not len(df):
        return df
    live = {c["cell_id"] for c in finished_cells(run)}
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
    ck += [dict(checkpoint=c["cell_id"], model=c["model"], task=c["task"], method=c["method"], seed=c["seed"],
                path=checkpoint_dir(run, c["cell_id"])) for c in finished_cells(run)]
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
