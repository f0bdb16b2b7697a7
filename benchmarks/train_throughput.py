"""Training throughput per robust method on mE5-small, against a Hugging Face Trainer and the matmul peak.

    XLT_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_throughput.py [--examples 384]

Prints a table: examples/s and tokens/s (non-padding) per method with bf16 autocast on and off, the ratio
of each method's step time to baseline's, the model FLOP utilisation (6 x non-embedding parameters x
padded tokens per second, over a bare bf16 2048^2 matmul measured in the same run), and the same model and
data through `transformers.Trainer` at its best CPU settings (bf16 on, group_by_length on).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import torch

from xltlib import tasks as T
from xltlib.robust import build_objective
from xltlib.train import train_classifier

warnings.filterwarnings("ignore")
METHODS = {
    "baseline": {},
    "pgd (K=3)": {"type": "pgd", "steps": 3},
    "freelb (K=3)": {"type": "freelb", "adv_steps": 3},
    "rs_rp (m=1)": {"type": "rs_rp", "m": 1},
    "rs_da": {"type": "rs_da"},
}


def matmul_peak(dtype=torch.bfloat16, n=2048, reps=10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def non_embedding_params(model) -> int:
    emb = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - emb


def run_ours(records, method_spec, bf16, batch_size, warmup_steps=2):
    spec = dict(method_spec)
    kind = spec.pop("type", "baseline")
    obj = build_objective(kind, spec, data_dir=T.data_dir_or_none(None))
    model, tok, log = train_classifier("me5-small", records, num_labels=3, objective=obj, seed=1, epochs=1,
                                       batch_size=batch_size, lr=3e-5, warmup_ratio=0.1, weight_decay=0.01,
                                       max_length=128, bf16=bf16)
    w = log[warmup_steps - 1]
    last = log[-1]
    secs = last["elapsed_s"] - w["elapsed_s"]
    return dict(ex_s=(last["examples"] - w["examples"]) / secs, tok_s=(last["tokens"] - w["tokens"]) / secs,
                params=non_embedding_params(model), step_s=secs / (len(log) - warmup_steps))


def run_trainer(records, batch_size):
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from xltlib.models import load_classifier, load_tokenizer

    tok = load_tokenizer("me5-small")
    model = load_classifier("me5-small", 3)
    enc = tok([r["text_a"] for r in records], [r["text_b"] for r in records], truncation=True, max_length=128)
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                            "labels": [r["label"] for r in records]})
    with tempfile.TemporaryDirectory() as d:
        # transformers 5 spells group_by_length as train_sampling_strategy="group_by_length"
        args = TrainingArguments(output_dir=d, per_device_train_batch_size=batch_size, num_train_epochs=1,
                                 learning_rate=3e-5, bf16=True, train_sampling_strategy="group_by_length", use_cpu=True,
                                 report_to=[], save_strategy="no", logging_strategy="no",
                                 dataloader_num_workers=0, disable_tqdm=True, seed=1)
        trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
        out = trainer.train()
    return dict(ex_s=out.metrics["train_samples_per_second"], tok_s=np.nan, params=non_embedding_params(model))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    if not os.environ.get("XLT_DATA_DIR"):
        raise SystemExit("set XLT_DATA_DIR to the XTREME-layout data folder (e.g. ../shared/data)")
    records = T.load_records("xnli", "en", None)[: args.examples]
    tr = run_trainer(records, args.batch_size)  # first, so a Trainer API change fails fast
    print(f"  measured HF Trainer     bf16=True  {tr['ex_s']:6.1f} ex/s", flush=True)
    peak = matmul_peak()
    print(f"bare bf16 2048^2 matmul: {peak / 1e9:.0f} GFLOP/s; fp32: {matmul_peak(torch.float32) / 1e9:.0f} GFLOP/s; "
          f"threads={torch.get_num_threads()}; {args.examples} XNLI-en examples, batch {args.batch_size}")
    rows = []
    for name in args.methods.split(","):
        for bf16 in (True, False):
            r = run_ours(records, METHODS[name], bf16, args.batch_size)
            rows.append(dict(method=name, bf16=bf16, **r))
            print(f"  measured {name:14s} bf16={bf16!s:5s} {r['ex_s']:6.1f} ex/s", flush=True)
    base = {bf16: next(r["step_s"] for r in rows if r["method"] == "baseline" and r["bf16"] == bf16)
            for bf16 in (True, False)} if any(r["method"] == "baseline" for r in rows) else {}
    print()
    print(f"{'method':16s} {'bf16':5s} {'ex/s':>7s} {'tok/s':>7s} {'x baseline step':>16s} {'MFU vs bf16 peak':>17s}")
    for r in rows:
        mfu = 6 * r["params"] * r["tok_s"] / peak
        ratio = r["step_s"] / base[r["bf16"]] if base else float("nan")
        print(f"{r['method']:16s} {r['bf16']!s:5s} {r['ex_s']:7.1f} {r['tok_s']:7.0f} {ratio:16.2f} {mfu:16.1%}")
    print(f"{'HF Trainer':16s} {'True':5s} {tr['ex_s']:7.1f} {'':>7s}  (bf16=True, group_by_length, CLS head, all weights)")
    ours = next((r["ex_s"] for r in rows if r["method"] == "baseline" and r["bf16"]), float("nan"))
    print(f"\nbaseline (ours, bf16) / HF Trainer: {ours / tr['ex_s']:.2f}x examples/s")
    print("tok/s counts non-padding tokens; MFU uses 6 x non-embedding parameters per non-padding token.")


if __name__ == "__main__":
    main()
