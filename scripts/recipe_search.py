"""Training-recipe search for the zero-shot protocol, scored on English selection data only (never test).

    XLT_DATA_DIR=../shared/data .venv/bin/python scripts/recipe_search.py \
        --try pawsx:4000:1e-4:2 --try xnli:all:1e-4:2 [--out recipe_search.csv]

Each ``--try TASK:N_TRAIN:LR:EPOCHS[:SET+SET]`` fine-tunes the baseline (mE5-small, the default
``TrainConfig`` otherwise) on N_TRAIN rows of the task's training sets (``all`` = every row) and scores
the task's English *selection* set:

* PAWS-X: English dev (2,000 rows). It is never trained on (it shares sentences with test) and never
  scored as transfer.
* XNLI: a held-out 20% of the premise blocks of English XNLI dev (498 rows); the model trains on the
  other 80% (plus any ``nli-en`` sets named).

Prints one line per try (accuracy with a bootstrap 95% CI, seconds) and appends it to ``--out``. The
recipe chosen from these lines is written in the params files and docs/recipes.md.
"""
from __future__ import annotations

import argparse
import csv
import os
import time
import warnings
from pathlib import Path

import numpy as np

from xltlib.data import tasks as T
from xltlib.evaluation.predict import evaluate_languages
from xltlib.training.objectives import build_objective
from xltlib.data.trainsets import DEFAULT_TRAIN_SETS, load_train_set

warnings.filterwarnings("ignore")


def selection_split(task: str, data_dir: Path, sets: list[str], seed: int = 0):
    """(training records, selection records) for one task: disjoint by construction."""
    if task == "pawsx":
        train = [r for s in sets for r in load_train_set(s, data_dir)]
        return train, T.load_records("pawsx", "en", data_dir, "dev")
    dev = load_train_set("xnli_dev_en", data_dir)
    blocks = np.unique([r["group"] for r in dev])
    held = set(np.random.default_rng(seed).permutation(blocks)[: len(blocks) // 5].tolist())
    train = [r for r in dev if r["group"] not in held] if "xnli_dev_en" in sets else []
    train += [r for s in sets if s != "xnli_dev_en" for r in load_train_set(s, data_dir)]
    return train, [r for r in dev if r["group"] in held]


def main():
    from xltlib.config.schema import TrainConfig
    from xltlib.evaluation.task_types import train_classifier

    ap = argparse.ArgumentParser()
    ap.add_argument("--try", dest="tries", action="append", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="recipe_search.csv")
    args = ap.parse_args()
    data_dir = Path(os.environ["XLT_DATA_DIR"])
    base = TrainConfig()
    for spec in args.tries:
        task, n, lr, epochs, *rest = spec.split(":")
        sets = rest[0].split("+") if rest else list(DEFAULT_TRAIN_SETS[task])
        train, select = selection_split(task, data_dir, sets)
        rng = np.random.default_rng(0)
        if n != "all" and int(n) < len(train):
            train = [train[i] for i in np.sort(rng.choice(len(train), int(n), replace=False))]
        t0 = time.perf_counter()
        model, tok, log = train_classifier(
            "me5-small", train, num_labels=len(T.get_task(task).labels), objective=build_objective("baseline"),
            seed=args.seed, epochs=float(epochs), batch_size=base.batch_size, lr=float(lr),
            warmup_ratio=base.warmup_ratio, weight_decay=base.weight_decay, max_length=base.max_length,
            bf16=True)
        secs = time.perf_counter() - t0
        row = evaluate_languages(model, tok, {"en": select}, batch_size=128, max_length=base.max_length)[0]
        labels = np.array([r["label"] for r in select])
        out = dict(task=task, train_sets="+".join(sets), n_train=len(train), lr=lr, epochs=epochs, seed=args.seed,
                   selection_acc=round(row["value"], 4), ci_low=round(row["ci_low"], 4),
                   ci_high=round(row["ci_high"], 4), majority=round(np.bincount(labels).max() / len(labels), 4),
                   n_select=len(select), final_loss=round(float(np.mean([r["loss"] for r in log[-20:]])), 4),
                   train_s=round(secs, 1))
        print(out, flush=True)
        new = not Path(args.out).exists()
        with open(args.out, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(out))
            if new:
                w.writeheader()
            w.writerow(out)


if __name__ == "__main__":
    main()
