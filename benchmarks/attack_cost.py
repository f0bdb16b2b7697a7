"""What the robustness checks cost per English row, on a real fine-tuned checkpoint (a report, not a test).

    OMP_NUM_THREADS=1 XLT_DATA_DIR=../shared/data taskset -c 0 .venv/bin/python benchmarks/attack_cost.py \
        [--checkpoint RUN/checkpoints/me5-small__xnli__rs_da__s1] [--n 50] [--queries 300] [--max-change 0.2] \
        [--sentences second] [--eps 0.02] [--sigma 0.3] [--steps 10] [--threads 1] [--device cpu] [--fp32]

Runs :func:`xltlib.evaluation.robustness.score_robustness` once on the first N English test rows of the checkpoint's
task (one PGD strength, one noise strength, the greedy synonym-swap attack, the random synonym draw) and prints,
per attack, seconds per row (its wall time / N; the stage runs one PGD pass per strength in
``evaluate.robustness_pgd_eps``), then the synonym attack's queries per row (mean, median, 90th percentile, max:
every distinct text scored, the original included), texts scored per second, and its log as TextAttack prints it.
The last line extrapolates to ``evaluate.robustness_max_examples`` rows per checkpoint at the default strengths.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from _quiet import quiet_reports  # benchmarks/_quiet.py (the script folder is on sys.path)
from xltlib.config.schema import EvalConfig
from xltlib.core.devices import describe, resolve_device
from xltlib.data import tasks as T
from xltlib.evaluation.attacks import AttackResult, summarize_attack
from xltlib.evaluation.robustness import RobustnessSettings, score_robustness
from xltlib.evaluation.task_types import load_checkpoint
from xltlib.training.checkpoints import read_checkpoint_meta
from xltlib.training.objectives.synonyms import DEFAULT_TABLE

quiet_reports()
DEFAULT_CHECKPOINT = "/work/runs/quick-after/checkpoints/me5-small__xnli__rs_da__s1"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="a checkpoint folder (read only)")
    p.add_argument("--n", type=int, default=50, help="English test rows attacked (the first N)")
    p.add_argument("--queries", type=int, default=EvalConfig().robustness_synonym_queries, help="query budget per row")
    p.add_argument("--max-change", type=float, default=EvalConfig().robustness_synonym_max_change)
    p.add_argument("--sentences", default=EvalConfig().robustness_synonym_sentences, choices=("second", "both"))
    p.add_argument("--eps", type=float, default=0.02, help="one relative PGD strength")
    p.add_argument("--sigma", type=float, default=0.3, help="one relative noise strength")
    p.add_argument("--steps", type=int, default=EvalConfig().robustness_attack_steps, help="PGD steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--fp32", action="store_true",
                   help="fp32 weights (default: bf16 weights, as the stage with train.bf16)")
    p.add_argument("--data-dir", default=os.environ.get("XLT_DATA_DIR", "../shared/data"))
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    meta = read_checkpoint_meta(args.checkpoint)
    task = meta["task"]
    t = time.perf_counter()
    model, tokenizer, _ = load_checkpoint(args.checkpoint, device)
    load_s = time.perf_counter() - t
    records = T.load_records(task, "en", Path(args.data_dir), "test")[: args.n]
    settings = RobustnessSettings(pgd_eps=(args.eps,), noise_sigma=(args.sigma,),
                                  synonyms=Path(args.data_dir) / DEFAULT_TABLE, pgd_steps=args.steps,
                                  query_budget=args.queries, max_change=args.max_change, sentences=args.sentences)
    print(f"device {describe(device)}, torch {torch.__version__}; checkpoint {Path(args.checkpoint).name} "
          f"({meta.get('method')}, loaded in {load_s:.1f} s); {len(records)} English {task} test rows; "
          f"{'fp32' if args.fp32 else 'bf16'} weights")
    print(f"synonym attack: budget {args.queries} queries, max change {args.max_change}, sentences {args.sentences}; "
          f"PGD l2 eps {args.eps} relative, {args.steps} steps; noise sigma {args.sigma} relative\n")

    out = score_robustness(model, tokenizer, records, settings, batch_size=args.batch_size, max_length=128,
                           bf16=not args.fp32)
    n = len(records)
    values = {r["metric"]: r["value"] for r in out.rows}
    print(f"{'attack':16s} {'s/row':>7s} {'total s':>8s}  result")
    pgd = (f"accuracy {values[f'robust_acc_pgd_{args.eps:g}']:.3f}, "
           f"loss gain {values[f'attack_loss_gain_pgd_{args.eps:g}']:.3f}")
    draw = (f"accuracy {values['robust_acc_synonym_draw']:.3f} "
            f"(substitution rate {values['synonym_subst_rate']:.3f})")
    for attack, result in (("clean", f"accuracy {values['robust_acc_clean']:.3f}"), ("pgd", pgd),
                           ("noise", f"accuracy {values[f'robust_acc_noise_{args.sigma:g}']:.3f}"),
                           ("synonym_attack", f"accuracy under attack {values['robust_acc_synonym_attack']:.3f}"),
                           ("synonym_draw", draw)):
        print(f"{attack:16s} {out.seconds[attack] / n:7.3f} {out.seconds[attack]:8.1f}  {result}")

    syn = out.items[out.items["attack"] == "synonym_attack"]
    attacked = syn[syn["status"] != "skipped"]
    q = syn["queries"].to_numpy()
    print(f"\nsynonym attack queries per row: mean {q.mean():.1f}, median {np.median(q):.0f}, 90th percentile "
          f"{np.percentile(q, 90):.0f}, max {q.max():.0f} (rows attacked, not skipped: mean "
          f"{attacked['queries'].mean():.1f}); {q.sum() / out.seconds['synonym_attack']:.0f} texts scored per second; "
          f"budget reached by {(q >= args.queries).sum()} rows")
    log = summarize_attack([AttackResult(r.status, r.text_a, r.text_b, r.prediction, int(r.queries), int(r.words),
                                         int(r.words_total), int(r.words_changed), 0.0) for r in syn.itertuples()])
    print("TextAttack-style log:")
    print(f"  successful {log['successful']}, failed {log['failed']}, skipped {log['skipped']}")
    print(f"  original accuracy {100 * log['original_accuracy']:.1f}%, accuracy under attack "
          f"{100 * log['accuracy_under_attack']:.1f}%, attack success rate {100 * log['attack_success_rate']:.1f}%")
    print(f"  average perturbed word % {100 * log['perturbed_word_share']:.1f}, average words per input "
          f"{log['avg_words_per_input']:.1f}, average queries {log['avg_queries']:.1f}")
    by_id = {str(r["id"]): r for r in records}
    for r in syn[syn["status"] == "successful"].head(2).itertuples():
        print(f"  e.g. '{by_id[r.id]['text_b']}' -> '{r.text_b}'")

    ev = EvalConfig()
    per_row = (out.seconds["clean"] + out.seconds["synonym_attack"] + out.seconds["synonym_draw"]
               + out.seconds["pgd"] * len(ev.robustness_pgd_eps)
               + out.seconds["noise"] * len(ev.robustness_noise_sigma)) / n
    print(f"\nper checkpoint at the defaults ({ev.robustness_max_examples} rows, {len(ev.robustness_pgd_eps)} PGD and "
          f"{len(ev.robustness_noise_sigma)} noise strengths): about {per_row * ev.robustness_max_examples / 60:.1f} "
          f"min at {per_row:.3f} s/row")


if __name__ == "__main__":
    main()
