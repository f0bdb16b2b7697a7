"""Training throughput per robust method on mE5-small, against a Hugging Face Trainer and the matmul peak.

    XLT_DATA_DIR=../shared/data .venv/bin/python benchmarks/train_throughput.py [--examples 384] [--repeats 2]
        [--device auto|cpu|cuda]

The report's first line names the device (and, on the CPU, the thread count); peaks are measured on it.

Prints a table: examples/s and tokens/s (non-padding) per method and precision (bf16 weights with fp32
master copies = the default; bf16 autocast; fp32), the ratio of each method's step time to baseline's,
and the model FLOP utilisation (6 x non-embedding parameters x non-padding tokens per second) against
two references measured in the same run:

* the bare bf16 2048^2 matmul peak (best of several timed trials, after a warm-up: this CPU's AMX
  units run well below peak for the first few hundred milliseconds, so a short single trial varies 2x);
* a matmul-bound ceiling: the same FLOPs at the speed of the model's own linear-layer matmuls (forward,
  input-gradient and weight-gradient shapes of one layer at the batch's token count), i.e. the step
  time if everything except the matmuls were free.

Then the same model and data through ``transformers.Trainer`` at its best CPU settings (bf16 on,
group_by_length on), and the per-epoch cost of RS-DA's synonym rewrite + re-tokenization.
The host is a shared VM: every configuration runs ``--repeats`` times, interleaved, and the best
step time is reported (as ``timeit`` does: noise only ever slows a run down).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import torch

from xltlib.data import tasks as T
from xltlib.config.schema import TrainConfig
from xltlib.core.devices import describe, resolve_device
from xltlib.core.peak import compute_dtype
from xltlib.training.objectives import build_objective
from xltlib.training.batching import tokenize_pairs
from xltlib.evaluation.task_types import train_classifier

warnings.filterwarnings("ignore")
METHODS = {
    "baseline": {},
    "pgd (K=3)": {"type": "pgd", "steps": 3},  # 4 passes, dropout masks shared across them (the default)
    "pgd K=3 fresh": {"type": "pgd", "steps": 3, "share_dropout": False},  # a new mask every pass
    "freelb (K=3)": {"type": "freelb", "adv_steps": 3},  # K ascent steps = 4 forward/backward passes
    "rs_rp (m=1)": {"type": "rs_rp", "m": 1},
    "rs_da": {"type": "rs_da"},
    # the control arm of the study: the 96M-row word-embedding table trained, row-sparse (only the rows a
    # batch touches: sparse gradients, SparseAdam, a row-wise copy back into the bf16 model)
    "baseline +emb": {"train": {"freeze_embeddings": False}},
    "rs_da +emb": {"type": "rs_da", "train": {"freeze_embeddings": False}},
}
# precision name -> (bf16, bf16_weights) of train_model
PRECISIONS = {"bf16 weights": (True, True), "bf16 autocast": (True, False), "fp32": (False, False)}


def _best_rate(flops: float, fn, trials: int = 5, reps: int = 10, warmup_s: float = 1.0) -> float:
    """Best FLOP/s of ``fn`` over ``trials`` timed runs of ``reps`` calls, after ``warmup_s`` of calls."""
    t_end = time.perf_counter() + warmup_s
    while time.perf_counter() < t_end:
        fn()
    best = 0.0
    for _ in range(trials):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        _sync()
        best = max(best, flops * reps / (time.perf_counter() - t))
    return best


DEVICE = torch.device("cpu")  # set by --device


def _sync() -> None:
    if DEVICE.type == "cuda":  # kernels run asynchronously: time them to completion
        torch.cuda.synchronize()


def matmul_peak(dtype=torch.bfloat16, n=2048) -> float:
    n = 8192 if DEVICE.type == "cuda" else n  # a GPU needs a large product to reach its peak
    a, b = torch.randn(n, n, dtype=dtype, device=DEVICE), torch.randn(n, n, dtype=dtype, device=DEVICE)
    return _best_rate(2 * n ** 3, lambda: a @ b)


def model_matmul_rate(tokens: int, hidden: int, intermediate: int, dtype=torch.bfloat16) -> float:
    """FLOP/s of one encoder layer's linear matmuls (forward, input and weight gradients) at ``tokens`` rows."""
    shapes = [(hidden, hidden)] * 4 + [(hidden, intermediate), (intermediate, hidden)]
    ops, flops = [], 0
    for k, n in shapes:
        x, w, g = (torch.randn(tokens, k, dtype=dtype, device=DEVICE), torch.randn(n, k, dtype=dtype, device=DEVICE),
                   torch.randn(tokens, n, dtype=dtype, device=DEVICE))
        ops += [lambda x=x, w=w: x @ w.t(), lambda g=g, w=w: g @ w, lambda g=g, x=x: g.t() @ x]
        flops += 3 * 2 * tokens * k * n
    return _best_rate(flops, lambda: [op() for op in ops], trials=3, reps=3, warmup_s=0.5)


def non_embedding_params(model) -> int:
    emb = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - emb


def run_ours(records, method_spec, precision, batch_size, warmup_steps=2, diagnostics=True):
    spec = dict(method_spec)
    kind = spec.pop("type", "baseline")
    train_over = spec.pop("train", {})
    obj = build_objective(kind, spec, data_dir=T.data_dir_or_none(None))
    bf16, bf16_weights = PRECISIONS[precision]
    cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=3e-5, warmup_ratio=0.1, weight_decay=0.01, max_length=128,
                      bf16=bf16, bf16_weights=bf16_weights, diagnostics=diagnostics, **train_over)
    model, tok, log = train_classifier("me5-small", records, num_labels=3, objective=obj, seed=1, cfg=cfg,
                                      device=DEVICE)
    w, last = log[warmup_steps - 1], log[-1]
    steps = len(log) - warmup_steps
    secs = last["elapsed_s"] - w["elapsed_s"]
    return dict(examples=last["examples"] - w["examples"], tokens=last["tokens"] - w["tokens"], secs=secs,
                steps=steps, params=non_embedding_params(model), config=model.config)


def run_trainer(records, batch_size):
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from xltlib.models.heads import load_classifier
    from xltlib.models.load import load_tokenizer

    tok = load_tokenizer("me5-small")
    model = load_classifier("me5-small", 3)
    enc = tok([r["text_a"] for r in records], [r["text_b"] for r in records], truncation=True, max_length=128)
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                            "labels": [r["label"] for r in records]})
    with tempfile.TemporaryDirectory() as d:
        # transformers 5 spells group_by_length as train_sampling_strategy="group_by_length"
        args = TrainingArguments(output_dir=d, per_device_train_batch_size=batch_size, num_train_epochs=1,
                                 learning_rate=3e-5, bf16=True, train_sampling_strategy="group_by_length",
                                 use_cpu=DEVICE.type == "cpu",
                                 report_to=[], save_strategy="no", logging_strategy="no",
                                 dataloader_num_workers=0, disable_tqdm=True, seed=1)
        trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DataCollatorWithPadding(tok))
        out = trainer.train()
    return out.metrics["train_samples_per_second"]


def rs_da_rewrite_seconds(records) -> float:
    """Seconds per epoch that RS-DA spends rewriting and re-tokenizing ``records`` (outside the steps)."""
    from xltlib.models.load import load_tokenizer

    obj, tok = build_objective("rs_da", data_dir=T.data_dir_or_none(None)), load_tokenizer("me5-small")
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    a = obj.transform_texts([r["text_a"] for r in records], rng)
    b = obj.transform_texts([r["text_b"] for r in records], rng)
    tokenize_pairs(tok, a, b, 128)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=384)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {list(METHODS)}")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help=f"comma-separated subset of {list(PRECISIONS)}")
    ap.add_argument("--no-diagnostics", action="store_true",
                    help="train.diagnostics=false: no extra clean forward per step (pgd/freelb/rs_rp)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--no-trainer", action="store_true", help="skip the Hugging Face Trainer reference")
    args = ap.parse_args()
    global DEVICE
    DEVICE = resolve_device(args.device)
    print(f"device: {describe(DEVICE)}", flush=True)
    if not os.environ.get("XLT_DATA_DIR"):
        raise SystemExit("set XLT_DATA_DIR to the XTREME-layout data folder (e.g. ../shared/data)")
    methods, precisions = args.methods.split(","), args.precisions.split(",")
    unknown = [m for m in methods if m not in METHODS] + [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise SystemExit(f"unknown method/precision {unknown}: expected {list(METHODS)} / {list(PRECISIONS)}")
    records = T.load_records("xnli", "en", None)[: args.examples]
    trainer_ex_s = float("nan") if args.no_trainer else run_trainer(records, args.batch_size)  # first: fails fast
    print(f"  measured HF Trainer (bf16, group_by_length): {trainer_ex_s:.1f} ex/s", flush=True)

    runs: dict[tuple[str, str], list[dict]] = {}
    for rep in range(args.repeats):  # interleaved, so a slow spell of the VM hits every configuration
        for name in methods:
            for prec in precisions:
                r = run_ours(records, METHODS[name], prec, args.batch_size, diagnostics=not args.no_diagnostics)
                runs.setdefault((name, prec), []).append(r)
                print(f"  measured {name:13s} {prec:13s} rep {rep}: {r['secs'] / r['steps']:.3f} s/step", flush=True)
    any_run = next(iter(runs.values()))[0]
    cfg, params = any_run["config"], any_run["params"]
    tokens_per_step = any_run["tokens"] / any_run["steps"]
    dtype = compute_dtype(DEVICE)
    peak = matmul_peak(dtype)
    ceiling_rate = model_matmul_rate(int(tokens_per_step), cfg.hidden_size, cfg.intermediate_size, dtype)
    if dtype != torch.bfloat16:
        print("\nthis device has no native bf16: the 'bf16' rows ran fp32 (xltlib.core.devices.use_bf16)")
    print(f"\nbare {str(dtype).removeprefix('torch.')} {8192 if DEVICE.type == 'cuda' else 2048}^2 matmul peak: {peak / 1e9:.0f} GFLOP/s "
          f"(fp32: {matmul_peak(torch.float32) / 1e9:.0f}); "
          f"mE5-small's own layer matmuls at {tokens_per_step:.0f} tokens: {ceiling_rate / 1e9:.0f} GFLOP/s; "
          f"device {describe(DEVICE)}; {args.examples} XNLI-en examples, batch {args.batch_size}, "
          f"best of {args.repeats}; per-step diagnostics {'off' if args.no_diagnostics else 'on'}")

    summary = {}
    for key, rs in runs.items():
        r = min(rs, key=lambda r: r["secs"] / r["steps"])  # best of the repeats: noise only ever slows a run
        summary[key] = dict(step_s=r["secs"] / r["steps"], ex_s=r["examples"] / r["secs"], tok_s=r["tokens"] / r["secs"])
    print(f"\n{'method':14s} {'precision':13s} {'ex/s':>7s} {'tok/s':>7s} {'tok/ex':>6s} {'s/step':>7s} {'x baseline':>10s} "
          f"{'MFU vs peak':>11s} {'vs matmul-bound':>15s}")
    for (name, prec), s in summary.items():
        base = summary.get(("baseline", prec))
        ratio = s["step_s"] / base["step_s"] if base else float("nan")
        flops = 6 * params * s["tok_s"]
        print(f"{name:14s} {prec:13s} {s['ex_s']:7.1f} {s['tok_s']:7.0f} {s['tok_s'] / s['ex_s']:6.1f} "
              f"{s['step_s']:7.3f} {ratio:10.2f} "
              f"{flops / peak:11.1%} {flops / ceiling_rate:15.1%}")
    print(f"{'HF Trainer':14s} {'bf16 autocast':13s} {trainer_ex_s:7.1f}   (group_by_length, CLS head, all weights trained)")
    ours = summary.get(("baseline", precisions[0]), {}).get("ex_s", float("nan"))
    print(f"\nbaseline ({precisions[0]}) / HF Trainer: {ours / trainer_ex_s:.2f}x examples/s")
    if "rs_da" in methods and ("baseline", precisions[0]) in summary:
        secs = rs_da_rewrite_seconds(records)
        epoch = len(records) / summary[("baseline", precisions[0])]["ex_s"]
        print(f"rs_da rewrite + re-tokenization: {secs:.2f} s per epoch of {len(records)} examples "
              f"({secs / epoch:.1%} of a baseline epoch's {epoch:.1f} s of steps)")
    print("tok/s and tok/ex count non-padding tokens (RS-DA's synonyms split into more subwords than the words "
          "they replace); MFU = 6 x non-embedding parameters x tok/s over the reference rate. "
          "PGD/FreeLB ascent passes are counted at the same 6 FLOPs/param/token, so their MFU is a lower bound.")


if __name__ == "__main__":
    main()
