"""The work of each stage notebook, as short functions over a :class:`~xltlib.runner.run_dir.Run` (the notebooks stay thin).

data -> train (one call per checkpoint) -> transfer -> alignment; each artefact is written with its chained
key (:mod:`xltlib.runner.keys`), and a stage skips an artefact whose key is unchanged.
A cell is (model, task, method, seed); its checkpoint is named after the task it trains on, so XQuAD and
MLQA cells (both trained on TyDiQA-GoldP English) share one checkpoint.
"""
from __future__ import annotations

import shutil

from dataclasses import asdict

import numpy as np
import pandas as pd

from xltlib.config.grid import Cell
from xltlib.core.rows import write_json, write_parquet_atomic, write_rows
from xltlib.core.timing import record, timed
from xltlib.data import tasks as T
from xltlib.data.parallel import PARALLEL, load_parallel
from xltlib.data.split import content_hash, eval_records, make_split, select_records, train_records
from xltlib.evaluation.alignment import compute_alignment_pairs, encode_layers, item_ids, pool_rows
from xltlib.evaluation.memorized import is_entity_tagging
from xltlib.evaluation.metrics import tag_f1
from xltlib.evaluation.predictions import write_predictions
from xltlib.evaluation.robustness import robustness_settings, score_robustness
from xltlib.evaluation.task_types import get_kind, load_checkpoint
from xltlib.models.load import load_encoder, load_tokenizer
from xltlib.runner import keys
from xltlib.runner.results import ALIGNMENT_OUTCOMES, CHUNK_COUNTS, PARALLEL_ITEMS
from xltlib.runner.run_dir import Run  # noqa: F401 - notebooks import Run from here with the stage functions
from xltlib.training.checkpoints import save_checkpoint
from xltlib.training.drift import DRIFT_METRIC, trained_state, weight_drift
from xltlib.training.loop import train_model
from xltlib.training.resume import clear_epoch_state
from xltlib.training.objectives import build_objective

try:  # the stage notebooks should show results, not load reports of newly initialised heads
    from transformers.utils import logging as _hf_logging

    _hf_logging.set_verbosity_error()
except ImportError:  # pragma: no cover
    pass


# --------------------------------------------------------------------------- data
@timed("data: splits")
def stage_data(run: Run) -> pd.DataFrame:
    """Fix every task's training rows and scored rows (xltlib.data.split), write them, summarize per language."""
    rows = []
    for task in run.cfg.grid.task:
        split = make_split(task, run.languages(task), run.cfg.protocol, run.data_dir)
        split.save(run.path("data", f"{task}.json"))
        for lang in split.languages:
            row = dict(task=task, protocol=split.protocol, scored_split=split.eval_split, language=lang,
                       train_rows=split.n_train if lang == "en" else 0, scored_rows=len(split.eval_ids[lang]))
            if lang == "en":
                row["train_sources"] = ", ".join(f"{s} ({len(ids)})" for s, ids in split.train_rows.items())
                if split.select_rows:  # checkpoint selection (protocol.selection)
                    row["selection_rows"] = ", ".join(f"{s} ({len(ids)})" for s, ids in split.select_rows.items())
            if lang in split.label_counts:
                row["label_counts"] = split.label_counts[lang]
                row["majority"] = round(split.majority_rate(lang), 4)
            rows.append(row)
    return pd.DataFrame(rows)


def build_objective_for(run: Run, cell: Cell):
    return build_objective(cell.method_type, cell.method_params, data_dir=run.data_dir, entry=cell.method)


# -------------------------------------------------------------------------- train
def discard_evaluation(run: Run, checkpoint: str) -> None:
    """Delete the rows scored from an earlier training of ``checkpoint`` (its transfer rows, predictions, attacked
    rows, alignment rows and outcomes), under whatever key. Called when the checkpoint is trained: its key is a
    function of the settings, not of the weights, so the rows of a training whose folder is gone (a study resumed
    on another machine after a chain was cut between its transfer and its alignment) would otherwise stay live
    beside the new training's, and a checkpoint's alignment and transfer come from two sets of weights."""
    cells = [c.cell_id for c in run.cells() if c.checkpoint == checkpoint]
    files = [run.transfer_path(c) for c in cells] + [run.alignment_path(checkpoint),
                                                     run.path("results", ALIGNMENT_OUTCOMES, run.alignment_path(checkpoint).name)]
    folders = [run.path("results", kind, c) for kind in ("predictions", "robustness") for c in cells]
    for path in files:
        path.unlink(missing_ok=True)
    for folder in folders:
        if folder.is_dir():
            shutil.rmtree(folder)


@timed("train: other stage code (split, rows, keys)")  # the parts below are timed on their own (xlt cost)
def stage_train(run: Run, cell_id: str) -> pd.DataFrame:
    """Fine-tune the checkpoint of one grid cell and save it; returns the per-step log."""

    cell = run.find_cell(cell_id)
    task = T.get_task(T.get_task(cell.task).training_task)
    split = run.split(cell.task)
    records = train_records(split, run.data_dir)
    selection = select_records(split, run.data_dir)
    t = run.cfg.train_for(task.name, cell.method)
    kind = T.get_task(cell.task).kind
    ck, key = cell.checkpoint, keys.checkpoint_key(run, cell)
    discard_evaluation(run, ck)
    resume = run.resume_path(ck)  # the loop's state after each epoch: a cut-off cell goes on from there
    prefix_key = keys.clean_prefix_key(run, cell)  # the clean epochs every method of the group shares
    with timed("train: model loading + tokenisation"):  # the rest of train_model: its loop has its own clock
        model, tokenizer, log = train_model(
            cell.model, records, task_type=get_kind(kind), task=task, num_labels=get_kind(kind).num_labels(task),
            objective=build_objective_for(run, cell), seed=cell.seed, cfg=t, device=run.device,
            select_records=selection or None, resume_path=resume, resume_key=key,
            prefix_path=run.clean_prefix_path(prefix_key), prefix_key=prefix_key)
        # this process's part of the loop's clock (a resumed cell's log goes on from the earlier processes' time)
        earlier = max((r["elapsed_s"] for r in log if r["resumed"] < log[-1]["resumed"]), default=0.0) if log else 0.0
        record("train: training loop", max((r["elapsed_s"] for r in log), default=0.0) - earlier)
    log_df = pd.DataFrame(log)
    if not np.isfinite(log_df["loss"]).all():
        raise FloatingPointError(f"cell {cell_id}: non-finite training loss; no checkpoint written")
    # over the trained parameters only (xltlib.training.drift): a frozen embedding table is not drift
    with timed("train: weight drift (loads the pre-trained encoder)"):
        drift = weight_drift(trained_state(model), dict(load_encoder(cell.model).named_parameters()))
    meta = asdict(cell)
    if "selected_epoch" in log_df:  # checkpoint selection: the epoch whose weights were kept
        meta["selected_epoch"] = int(log_df["selected_epoch"].iloc[0])
    if "plateau" in log_df:  # did the run leave the majority plateau? (xltlib.training.plateau; also in the log)
        meta["plateau"] = str(log_df["plateau"].iloc[0])
    meta = dict(meta, key=key, train_examples=len(records), pooling=t.pooling, **{DRIFT_METRIC: drift.value},
                kind=kind, training_task=task.name, train_seconds=float(log_df["elapsed_s"].iloc[-1]), **run.prov())
    extra = [c for c in log_df.columns if c not in ("step", "loss")]
    rows = [dict(checkpoint=ck, model=cell.model, task=task.name, method=cell.method, seed=cell.seed,
                 language="en", language2="", layer=-1, metric="train_loss", value=r["loss"], n=r["step"], key=key,
                 **{c: r.get(c, np.nan) for c in extra}) for r in log]
    # how far training moved the encoder: separates "robust training aligns" from "moves the weights less";
    # n: the parameters it was computed over
    rows.append(dict(checkpoint=ck, model=cell.model, task=task.name, method=cell.method, seed=cell.seed,
                     language="en", language2="", layer=-1, metric=DRIFT_METRIC, value=drift.value, n=drift.n_params,
                     key=key))
    if selection and is_entity_tagging(task):  # span F1 has no Wilson CI: the gate bootstraps these counts
        with timed("train: selection chunk counts (entity tagging)"):
            write_selection_counts(run, ck, key, get_kind(kind), model, tokenizer, task, selection, t)
    with timed("train: saving rows and checkpoint"):
        write_rows(rows, run.train_path(ck), run.prov())
        save_checkpoint(model, tokenizer, run.checkpoint_dir(ck), base_model=cell.model, meta=meta)
    clear_epoch_state(resume)  # only after the checkpoint is saved: a cut here resumes, never loses the cell
    if all(keys.cell_done(run, c) or keys.evaluated(run, c) for c in run.training_cells()
           if keys.clean_prefix_key(run, c) == prefix_key):
        clear_epoch_state(run.clean_prefix_path(prefix_key))  # the group's last cell: no method needs it now
    return log_df


def write_selection_counts(run: Run, ck: str, key: str, kind, model, tokenizer, task, records: list[dict],
                           t) -> None:
    """The kept weights' (correct, predicted, gold) chunk counts per English selection sentence, in row order
    (``results/selection/``; the model-quality gate bootstraps their F1 against the memorized-entity bar)."""
    table = kind.predict(model, tokenizer, task, {"en": records}, batch_size=2 * t.batch_size,
                         max_length=t.max_length, bf16=run.bf16)[("en", "")]
    counts = tag_f1([list(g) for g in table["gold"]], [list(p) for p in table["prediction"]])["per_sentence"]
    frame = pd.DataFrame(counts, columns=CHUNK_COUNTS).assign(checkpoint=ck, key=key, item=np.arange(len(counts)),
                                                              **run.prov())
    write_parquet_atomic(frame, run.selection_counts_path(ck))


# ----------------------------------------------------------------------- transfer
@timed("transfer: other stage code (keys, records, rows)")
def stage_transfer(run: Run, unit: str = "", compute: bool = True) -> pd.DataFrame:
    """Zero-shot score of every finished cell in every language (cached per cell by its transfer key).

    ``unit``: this cell only (one unit of a distributed run); ``compute=False``: compute nothing, return
    the live rows on disk."""

    loaded: dict[str, tuple] = {}
    for cell in keys.finished_cells(run) if compute else []:
        if unit and cell.cell_id != unit:
            continue
        out, key = run.transfer_path(cell.cell_id), keys.transfer_key(run, cell)
        if keys.transfer_done(run, cell):
            continue
        if cell.checkpoint not in loaded:
            with timed("transfer: model loading", unit=cell.cell_id):
                loaded = {cell.checkpoint: load_checkpoint(run.checkpoint_dir(cell.checkpoint), run.device)}
        model, tokenizer, _ = loaded[cell.checkpoint]
        task = T.get_task(cell.task)
        kind = get_kind(task.kind)
        recs = eval_records(run.split(cell.task), run.data_dir)
        kw = dict(objective=build_objective_for(run, cell), batch_size=run.cfg.evaluate.batch_size,
                  max_length=run.cfg.train.max_length, bf16=run.bf16)
        with timed("transfer: scoring (tokenisation + forward)", unit=cell.cell_id):
            preds = kind.predict(model, tokenizer, task, recs, **kw)  # kept: `xlt rescore` scores them without the model
        with timed("transfer: metrics", unit=cell.cell_id):
            rows = kind.score(task, preds)
        if task.kind == "answer_retrieval":  # the pre-trained encoder's own score: the reference fine-tuning must beat
            base = kind.load_model(cell.model, task, kind.num_labels(task), "mean")
            base = base.to(next(model.parameters()).device).eval()
            rows += [dict(r, metric=f"pretrained_{r['metric']}") for r in kind.evaluate(base, tokenizer, task, recs, **kw)]
        ev = run.cfg.evaluate
        if ev.generalized and task.row_aligned and task.kind == "pair_classification":
            langs = [lang for lang in recs if ev.generalized_languages is None or lang in ev.generalized_languages]
            sub = {lang: recs[lang][: ev.generalized_max_rows] for lang in langs}
            pairs = [(a, b) for a in langs for b in langs if a != b]
            with timed("transfer: scoring generalized pairs", unit=cell.cell_id):
                pair_preds = kind.predict(model, tokenizer, task, sub, pairs=pairs, **kw)
            rows += kind.score(task, pair_preds)
            preds.update(pair_preds)
        robust = None
        if ev.robustness and task.kind == "pair_classification":
            with timed("transfer: robustness attacks", unit=cell.cell_id):  # the same attacks for every checkpoint
                robust = score_robustness(model, tokenizer, recs["en"], robustness_settings(ev, cell.task, run.data_dir),
                                          max_examples=ev.robustness_max_examples,
                                          max_length=run.cfg.train.max_length, bf16=run.bf16)
            rows += robust.rows
        for r in rows:
            r.update(cell_id=cell.cell_id, checkpoint=cell.checkpoint, model=cell.model, task=cell.task,
                     method=cell.method, seed=cell.seed, layer=-1, key=key)
        # predictions first: the rows mark the cell done
        with timed("transfer: writing predictions and rows", unit=cell.cell_id):
            write_predictions(run.path("results", "predictions", cell.cell_id), cell.task, preds, key)
            if robust is not None:  # per-item outcomes under attack, paired across checkpoints by item id
                write_predictions(run.path("results", "robustness", cell.cell_id), cell.task, {("en", ""): robust.items}, key)
            write_rows(rows, out, run.prov())
    with timed("transfer: reading the rows back"):
        return run.load_results("transfer")


# ---------------------------------------------------------------------- alignment
def alignment_languages(run: Run) -> list[str]:
    a = run.cfg.alignment
    if a.languages:
        return [T.TATOEBA_ISO1.get(x, x) for x in a.languages]
    langs = {lang for task in run.cfg.grid.task for lang in run.languages(task)}
    return sorted(lang for lang in langs if lang != "en")


def parallel_sentences(run: Run, dataset: str) -> dict[str, tuple[list[str], list[str]]]:
    """xx sentences (or words) and their English translations, disjoint from the rows that score transfer."""

    ctx = {}
    if "xnli" in run.cfg.grid.task:
        split = run.split("xnli")
        # premises of English-dev blocks that are never scored: the training blocks of the offline split, or
        # every dev block when test is scored
        ctx["xnli_train_ids"] = split.train_rows.get("dev") if split.eval_split == "dev" \
            else list(range(len(T.load_records("xnli", "en", run.data_dir, "dev"))))
    return load_parallel(dataset, run.data_dir, alignment_languages(run), run.cfg.alignment.max_sentences, **ctx)


def write_parallel_items(run: Run, data: dict[str, dict[str, tuple[list[str], list[str]]]], key: str) -> None:
    """``data/parallel_items.parquet``: per dataset, language and pair position, the item the pair is (the id of
    its English sentence, :func:`~xltlib.evaluation.alignment.item_ids`): a pair of two languages with the same
    English sentence is one item (XNLI premises and PUD sentences are the same items in every language), so the
    item-level comparison of checkpoints resamples them together. ``key``: the parallel data's key."""
    frames = [pd.DataFrame(dict(dataset=dataset, language=lang, position=np.arange(len(en)), item=item_ids(en)))
              for dataset, pairs in data.items() for lang, (_, en) in pairs.items()]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["dataset", "language", "position", "item"])
    write_parquet_atomic(table.assign(key=key), run.path("data", PARALLEL_ITEMS))


@timed("alignment: other stage code (keys, rows)")
def stage_alignment(run: Run, unit: str = "", compute: bool = True) -> pd.DataFrame:
    """Every alignment metric x language x layer for the pre-trained model and each checkpoint.

    ``unit``: this checkpoint only (one unit of a distributed run); ``compute=False``: compute nothing,
    return the live rows on disk."""
    if not compute:
        return run.load_results("alignment")

    a = run.cfg.alignment
    with timed("alignment: reading the parallel data"):
        data = {d: parallel_sentences(run, d) for d in a.datasets}
    write_parallel_items(run, data, content_hash(data))
    write_json(dict(key=content_hash(data), datasets=list(data)), run.path("data", "parallel.json"))
    for ck in keys.alignment_checkpoints(run):
        if unit and ck.checkpoint != unit:
            continue
        out, key = run.alignment_path(ck.checkpoint), keys.alignment_key(run, ck)
        if keys.alignment_done(run, ck):
            continue
        with timed("alignment: model loading", unit=ck.checkpoint):
            if ck.path is None:
                model, tok = load_encoder(ck.model).to(run.device), load_tokenizer(ck.model)
            else:
                model, tok, _ = load_checkpoint(ck.path, run.device)
        rows, outcomes = [], []
        kw = dict(pooling=a.pooling, batch_size=a.batch_size, max_length=a.max_length, bf16=run.bf16)
        cache: dict[int, np.ndarray] = {}

        def encode(texts: list[str]) -> np.ndarray:  # English sides shared across languages are encoded once
            h = hash(tuple(texts))
            if h not in cache:
                with timed("alignment: encoding (forward + pooling)", unit=ck.checkpoint):
                    cache[h] = encode_layers(model, tok, texts, **kw)
            return cache[h]

        for dataset, pairs in data.items():
            if not pairs:
                continue
            # only the pairs the metrics score are encoded: a common pool over 61 Tatoeba languages is 168 pairs
            available = {lang: len(xs) for lang, (xs, _) in pairs.items()}
            keep = pool_rows(available, a.pool)
            x = {lang: encode([xs[i] for i in keep[lang]]) for lang, (xs, _) in pairs.items()}
            y = {lang: encode([ys[i] for i in keep[lang]]) for lang, (_, ys) in pairs.items()}
            per_pair: list[dict] = []
            with timed("alignment: metrics (pools, rows)", unit=ck.checkpoint):  # each metric on its own inside
                for r in compute_alignment_pairs(x, y, metrics=a.metrics, layers=a.layers, pool=a.pool,
                                                 options=PARALLEL[dataset].options, outcomes=per_pair,
                                                 available=available):
                    rows.append(dict(r, dataset=dataset))
            outcomes += [dict(r, dataset=dataset) for r in per_pair]
            cache.clear()
        for r in rows + outcomes:
            r.update(checkpoint=ck.checkpoint, model=ck.model, task=ck.task, method=ck.method, seed=ck.seed, key=key)
        # per-pair outcomes first: the rows mark the checkpoint done
        with timed("alignment: writing rows", unit=ck.checkpoint):
            write_parquet_atomic(pd.DataFrame(outcomes), run.path("results", ALIGNMENT_OUTCOMES, out.name))
            write_rows(rows, out, run.prov())
    with timed("alignment: reading the rows back"):
        return run.load_results("alignment")
