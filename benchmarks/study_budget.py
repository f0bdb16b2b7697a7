"""What a params file (the study) will cost on this machine, stage by stage, before it runs.

    XLT_DATA_DIR=../shared/data .venv/bin/python benchmarks/study_budget.py outputs/quick \
        [--params params/study.yaml] [--ledger docs/results/recipe-search.csv] [--attack-rows 12] \
        [--sample-rows 200] [--sample-sentences 300]

Rates are measured, not assumed. A finished run of this machine (``RUN``, e.g. ``make run``'s quick) gives the
training loop's tokens per second (its baseline cells' logged clock) and its checkpoints; with them this script
times, on this machine and in one process: the transfer stage's prediction on a sample of test rows, the alignment
stage's ``encode_layers`` on a sample of Tatoeba pairs, each alignment metric on random representations of the
params' exact shape (languages x pool x layers x width) and the robustness attacks of the params on a few English
rows. The params' work is counted in tokens from the real data (its splits, scored rows and Tatoeba pools). A
robust method's training epoch costs a multiple of the baseline's, from the recipe-search ledger's PAWS-X cells
(one core each, the clean first epoch taken out, method and baseline in one precision), else from its XNLI cells.
The totals are estimates built from those measurements; the first line checks the training model against measured
cells (the ledger's PAWS-X baseline).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _quiet import quiet_reports  # benchmarks/_quiet.py (the script folder is on sys.path)
from xltlib.config.grid import expand_grid
from xltlib.config.validate import load_config
from xltlib.core.peak import format_peaks
from xltlib.data import tasks as T
from xltlib.data.parallel import load_parallel
from xltlib.data.split import eval_records, make_split, train_records
from xltlib.evaluation.alignment import compute_alignment_pairs, encode_layers, pool_rows
from xltlib.evaluation.robustness import robustness_settings, score_robustness
from xltlib.evaluation.task_types import get_kind, load_checkpoint
from xltlib.models.load import load_tokenizer
from xltlib.runner.cost import machine_peak
from xltlib.runner.run_dir import Run

HOUR = 3600.0


def token_counts(tok, records: list[dict], max_length: int) -> np.ndarray:
    """Tokens per record as the stages feed them: a pair truncated to ``max_length``, or a tagged sentence."""
    if not records:
        return np.zeros(0, int)
    if "tokens" in records[0]:
        enc = tok([r["tokens"] for r in records], is_split_into_words=True, truncation=True, max_length=max_length)
    else:
        enc = tok([r["text_a"] for r in records], [r.get("text_b") or "" for r in records], truncation=True,
                  max_length=max_length)
    return np.array([len(ids) for ids in enc["input_ids"]])


def sentence_tokens(tok, texts: list[str], max_length: int) -> int:
    return int(sum(len(ids) for ids in tok(texts, truncation=True, max_length=max_length)["input_ids"])) if texts else 0


def pooled_tatoeba_tokens(tok, data_dir, languages: list[str], max_sentences: int | None, pool: str,
                          max_length: int) -> tuple[int, int, int]:
    """(tokens encoded per checkpoint, languages, pool size) of the alignment stage's Tatoeba pairs."""
    pairs = load_parallel("tatoeba", data_dir, languages, max_sentences)
    keep = pool_rows({lang: len(xs) for lang, (xs, _) in pairs.items()}, pool)
    total = sum(sentence_tokens(tok, [xs[i] for i in keep[lang]], max_length)
                + sentence_tokens(tok, [en[i] for i in keep[lang]], max_length) for lang, (xs, en) in pairs.items())
    return total, len(pairs), min((len(k) for k in keep.values()), default=0)


def train_rates(run: Run) -> dict[str, float]:
    """Per task, the training loop's tokens per second over the run's baseline cells (their logged clock)."""
    found: dict[str, list[tuple[float, float]]] = {}
    for cell in run.training_cells():
        if cell.method != "baseline" or not run.train_path(cell.checkpoint).is_file():
            continue
        log = pd.read_parquet(run.train_path(cell.checkpoint), columns=["metric", "tokens", "elapsed_s"])
        log = log[log["metric"] == "train_loss"]
        found.setdefault(cell.task, []).append((float(log["tokens"].max()), float(log["elapsed_s"].max())))
    return {t: sum(a for a, _ in v) / sum(b for _, b in v) for t, v in found.items()}


def baseline_checkpoint(run: Run, task: str):
    cell = next(c for c in run.training_cells() if c.task == task and c.method == "baseline"
                and run.checkpoint_dir(c.checkpoint).is_dir())
    return load_checkpoint(run.checkpoint_dir(cell.checkpoint), run.device)


def timed_call(fn, *args, **kw) -> float:
    t0 = time.perf_counter()
    fn(*args, **kw)
    return time.perf_counter() - t0


def transfer_rate(run: Run, task: str, rows: int) -> float:
    """Scored tokens per second of the transfer stage's prediction (its batch size, length and precision) on
    ``rows`` test rows of two languages, with the run's baseline checkpoint of ``task``."""
    model, tok, _ = baseline_checkpoint(run, task)
    recs = eval_records(run.split(task), run.data_dir)
    sample = {lang: recs[lang][:rows] for lang in list(recs)[:2]}
    kind = get_kind(T.get_task(task).kind)
    kw = dict(batch_size=run.cfg.evaluate.batch_size, max_length=run.cfg.train.max_length, bf16=run.bf16)
    kind.predict(model, tok, T.get_task(task), {k: v[:8] for k, v in sample.items()}, **kw)  # warm-up
    seconds = timed_call(kind.predict, model, tok, T.get_task(task), sample, **kw)
    return sum(int(token_counts(tok, v, run.cfg.train.max_length).sum()) for v in sample.values()) / seconds


def encode_rate(run: Run, data_dir, sentences: int) -> float:
    """Encoded tokens per second of the alignment stage's ``encode_layers`` (every layer, its pooling and
    precision) on ``sentences`` German Tatoeba sentences and their English sides."""
    model, tok, _ = baseline_checkpoint(run, run.cfg.grid.task[0])
    xs, en = load_parallel("tatoeba", data_dir, ["de"], sentences)["de"]
    a = run.cfg.alignment
    kw = dict(pooling=a.pooling, batch_size=a.batch_size, max_length=a.max_length, bf16=run.bf16)
    encode_layers(model, tok, xs[:8], **kw)  # warm-up
    seconds = timed_call(encode_layers, model, tok, xs, **kw) + timed_call(encode_layers, model, tok, en, **kw)
    return (sentence_tokens(tok, xs, a.max_length) + sentence_tokens(tok, en, a.max_length)) / seconds


def metric_seconds(metrics: list[str], languages: int, pool: int, layers: int, dim: int) -> dict[str, float]:
    """Each alignment metric's seconds per checkpoint at the params' shape (languages x pool pairs x layers x the
    encoder's width), timed on random representations: a metric's cost depends on the shapes, not the values."""
    g = np.random.default_rng(0)
    y = {f"l{k}": g.standard_normal((layers, pool, dim)).astype(np.float32) for k in range(languages)}
    x = {k: v + g.standard_normal(v.shape).astype(np.float32) for k, v in y.items()}
    return {name: timed_call(compute_alignment_pairs, x, y, metrics=[name]) for name in metrics}


def method_multipliers(ledger: pd.DataFrame, methods: dict[str, str], clean: dict[str, float]) -> dict[str, float]:
    """A method's training seconds per epoch over the baseline's at the same learning rate and precision, from the
    ledger's PAWS-X cells (one core each, the clean epochs taken out); a method without a PAWS-X cell takes
    the mean of its objective type's there, else its XNLI ratio (those cells ran on other machines, but the
    baseline and the method of one rate on the same kind), else 1. ``methods``: name -> objective type."""
    def ratios(task: str) -> dict[str, float]:
        rows = ledger[ledger["task"] == task]
        # a ratio within one precision: a bf16 cell against an fp32 baseline would measure the machine, not the method
        rows = rows.assign(precision=rows["precision"].fillna("") if "precision" in rows else "")
        base = rows[rows["method"] == "baseline"].set_index(["setting", "precision"])["train_seconds"]
        share = clean.get(task, 0.0)  # the fraction of a cell's epochs trained clean, once per group
        found: dict[str, list[float]] = {}
        for (method, setting, prec), sec in rows.set_index(["method", "setting", "precision"])["train_seconds"].items():
            if method != "baseline" and (setting, prec) in base.index:
                b = float(base[(setting, prec)])
                found.setdefault(method, []).append((float(sec) - share * b) / ((1 - share) * b))
        return {m: float(np.mean(v)) for m, v in found.items()}

    pawsx, xnli = ratios("pawsx"), ratios("xnli")
    by_type: dict[str, list[float]] = {}
    for method, m in pawsx.items():
        by_type.setdefault(methods.get(method, method), []).append(m)
    out = {}
    for name, kind in methods.items():
        if name in pawsx:
            out[name] = pawsx[name]
        elif kind in by_type:
            out[name] = float(np.mean(by_type[kind]))
        else:
            out[name] = xnli.get(name, 1.0)
    return out


def attack_seconds_per_row(run: Run, cfg, task: str, rows: int) -> float:
    """``score_robustness`` under ``cfg``'s attack settings on ``rows`` English test rows of one of the run's
    checkpoints of ``task`` (its scoring precision as the transfer stage's)."""
    cell = next(c for c in run.training_cells() if c.task == task and run.checkpoint_dir(c.checkpoint).is_dir())
    model, tok, _ = load_checkpoint(run.checkpoint_dir(cell.checkpoint), run.device)
    recs = eval_records(run.split(task), run.data_dir)["en"]
    settings = robustness_settings(cfg.evaluate, task, run.data_dir)
    score_robustness(model, tok, recs, settings, max_examples=2, max_length=cfg.train.max_length, bf16=run.bf16)
    t0 = time.perf_counter()
    score_robustness(model, tok, recs, settings, max_examples=rows, max_length=cfg.train.max_length, bf16=run.bf16)
    return (time.perf_counter() - t0) / rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a finished run of this machine with training, transfer and alignment (quick)")
    ap.add_argument("--params", default="params/study.yaml")
    ap.add_argument("--ledger", default="docs/results/recipe-search.csv")
    ap.add_argument("--attack-rows", type=int, default=12, help="English rows attacked to time the robustness check")
    ap.add_argument("--sample-rows", type=int, default=200, help="test rows per language timed for transfer (x2)")
    ap.add_argument("--sample-sentences", type=int, default=300, help="Tatoeba pairs timed for alignment encoding")
    args = ap.parse_args()
    quiet_reports()
    run = Run.open(args.run)
    cfg = load_config(args.params)
    data_dir = cfg.resolved_data_dir() or run.data_dir
    model = cfg.grid.model[0]
    tok = load_tokenizer(model)
    peak = machine_peak(run.dir)
    rates = dict(train=train_rates(run))
    ledger = pd.read_csv(args.ledger)
    search = load_config("params/recipe-search.yaml")
    methods = {c.method: c.method_type for c in expand_grid(search) + expand_grid(cfg)}
    methods = {cfg.split_entry(m)[0]: kind for m, kind in methods.items()}
    clean = {t: s["clean_epochs"] / s["epochs"] for t, s in search.task_train.items() if s.get("clean_epochs")}
    mult = method_multipliers(ledger, methods, clean)

    print(f"budget of {args.params} on this machine ({run.dir.name}'s rates; {format_peaks(peak)})")
    # --- training: per cell its epochs' tokens; a (task, seed) group's clean epochs once
    train_rows, groups = [], set()
    tokens_of: dict[str, int] = {}
    for cell in expand_grid(cfg):
        task, method, seed = T.get_task(cell.task).training_task, cell.method, cell.seed
        tc = cfg.train_for(task, method)
        if task not in tokens_of:
            split = make_split(task, cfg.languages.get(task) or T.get_task(task).languages, cfg.protocol, data_dir)
            tokens_of[task] = int(token_counts(tok, train_records(split, data_dir), tc.max_length).sum())
        rate = rates["train"].get(task) or rates["train"].get("xnli")
        epochs, clean_e = tc.epochs, tc.clean_epochs
        robust = (epochs - clean_e) * tokens_of[task] * (mult.get(method, 1.0) if method != "baseline" else 1.0)
        shared = clean_e * tokens_of[task] if (task, seed, tc.lr) not in groups else 0
        groups.add((task, seed, tc.lr))
        train_rows.append(dict(task=task, method=method, seed=seed, seconds=(robust + shared) / rate))
    train = pd.DataFrame(train_rows)
    base_pawsx = ledger[(ledger["task"] == "pawsx") & (ledger["method"] == "baseline")]["train_seconds"]
    if len(base_pawsx) and "pawsx" in tokens_of and "pawsx" in rates["train"]:
        predicted = 3 * tokens_of["pawsx"] / rates["train"]["pawsx"]
        print(f"check: a PAWS-X baseline cell (8,311 pairs x 3 epochs) predicted {predicted:,.0f} s from this run's "
              f"rate; the ledger's measured cells: {', '.join(f'{s:,.0f}' for s in base_pawsx)} s")
    print("\nstep multipliers (method / baseline, per epoch): "
          + ", ".join(f"{m} {mult.get(m, 1.0):.2f}" for m in cfg.grid.method if m != "baseline"))
    # --- transfer, generalized pairs, robustness: per checkpoint of each task
    ev, stages = cfg.evaluate, []
    checkpoints = train.groupby("task").size()
    measured = {t: transfer_rate(run, t, args.sample_rows) for t in dict.fromkeys(run.cfg.grid.task)}
    rates["transfer"] = {t: measured.get(t, float(np.mean(list(measured.values())))) for t in checkpoints.index}
    for task, n_ck in checkpoints.items():
        split = make_split(task, cfg.languages.get(task) or T.get_task(task).languages, cfg.protocol, data_dir)
        recs = eval_records(split, data_dir)
        per_lang = {lang: token_counts(tok, rows, cfg.train.max_length) for lang, rows in recs.items()}
        scored = sum(int(v.sum()) for v in per_lang.values())
        stages.append(dict(stage="transfer", task=task, checkpoints=n_ck,
                           per_checkpoint_s=scored / rates["transfer"][task]))
        pair_task = T.get_task(task).kind == "pair_classification"
        if ev.generalized and pair_task:
            langs = [lang for lang in recs if ev.generalized_languages is None or lang in ev.generalized_languages]
            mean_tok = np.mean([per_lang[lang][: ev.generalized_max_rows].mean() for lang in langs])
            n_rows = ev.generalized_max_rows * len(langs) * (len(langs) - 1)
            stages.append(dict(stage="transfer: generalized pairs", task=task, checkpoints=n_ck,
                               per_checkpoint_s=n_rows * mean_tok / rates["transfer"][task]))
        if ev.robustness and pair_task:
            s_row = attack_seconds_per_row(run, cfg, task, args.attack_rows) if any(
                c.task == task for c in run.training_cells()) else float("nan")
            stages.append(dict(stage="transfer: robustness attacks", task=task, checkpoints=n_ck,
                               per_checkpoint_s=s_row * ev.robustness_max_examples))
    # --- alignment: every checkpoint and the pre-trained model, the study's pooled Tatoeba pairs
    a = cfg.alignment
    langs = T.get_task("tatoeba").languages if a.languages is None else a.languages
    langs = [T.TATOEBA_ISO1.get(x, x) for x in langs]
    encoded, n_lang, n_pool = pooled_tatoeba_tokens(tok, data_dir, langs, a.max_sentences, a.pool, a.max_length)
    n_align = len(train) + 1
    rates["encode"] = encode_rate(run, data_dir, args.sample_sentences)
    stages.append(dict(stage="alignment: encoding", task="tatoeba", checkpoints=n_align,
                       per_checkpoint_s=encoded / rates["encode"]))
    model_cfg = baseline_checkpoint(run, run.cfg.grid.task[0])[0].config
    for name, seconds in metric_seconds(a.metrics, n_lang, n_pool, model_cfg.num_hidden_layers + 1,
                                        model_cfg.hidden_size).items():
        stages.append(dict(stage=f"alignment metric: {name}", task="tatoeba", checkpoints=n_align,
                           per_checkpoint_s=seconds))
    ev_table = pd.DataFrame(stages)
    ev_table["core_hours"] = ev_table["checkpoints"] * ev_table["per_checkpoint_s"] / HOUR
    by_task = train.groupby(["task", "method"])["seconds"].agg(["count", "sum"]).reset_index()
    by_task["core_hours"] = by_task["sum"] / HOUR
    print(f"\ntraining: {len(train)} cells, tokens per epoch "
          + ", ".join(f"{t} {n:,}" for t, n in tokens_of.items())
          + ", baseline loop rates " + ", ".join(f"{t} {r:,.0f} tok/s" for t, r in rates["train"].items()))
    print(by_task.rename(columns={"count": "cells"})[["task", "method", "cells", "core_hours"]]
          .to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    print("\nevaluation (measured here: transfer " + ", ".join(f"{t} {r:,.0f}" for t, r in measured.items())
          + f" scored tok/s, the others at their mean; alignment {rates['encode']:,.0f} encoded tok/s; Tatoeba: "
          f"{n_lang} languages, pool {n_pool}; metrics timed at that shape)")
    print(ev_table.to_string(index=False, float_format=lambda v: f"{v:,.1f}"))
    total_train, total_eval = train["seconds"].sum() / HOUR, ev_table["core_hours"].sum()
    print(f"\ntotal: training {total_train:,.1f} + evaluation {total_eval:,.1f} = {total_train + total_eval:,.1f} "
          f"core-hours; about {(total_train + total_eval) / 2:,.1f} h on 2 cores (a cell per core)")


if __name__ == "__main__":
    main()
