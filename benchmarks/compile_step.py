"""Does ``torch.compile`` make a training step faster here? Eager vs Inductor, the baseline objective on mE5-small.

    OMP_NUM_THREADS=1 XLT_DATA_DIR=../shared/data taskset -c 0 .venv/bin/python benchmarks/compile_step.py \
        [--examples 384] [--pad-multiple 16] [--variants eager,eager-pad,compile-dynamic,compile-static]

Each variant trains 2 epochs of ``--examples`` English XNLI rows (batch 32, bf16 weights, the training loop of
``xltlib.training.loop.train_model``) in a fresh process, as every notebook of a run is, with a cold Inductor
cache (a temporary ``TORCHINDUCTOR_CACHE_DIR``). The step time is the second epoch's (every shape of the first
epoch compiled by then); the compile cost is the first epoch's time above the second's.

* ``eager``: the library's step (batches padded to their longest row);
* ``eager-pad``: the same, padded to a multiple of ``--pad-multiple`` tokens (what static shapes cost in padding);
* ``compile-dynamic``: ``model.compile(dynamic=True)``, padded as eager-pad (one graph for every length);
* ``compile-static``: ``model.compile(dynamic=False)``, padded as eager-pad (one graph per length bucket and
  batch size, the issue's "static shapes per length bucket"; the recompile limit is raised to 64).

The library does not compile: on the 2-core AVX-512 machine of 2026-12-03 the best compiled step was slower than
the eager one (``benchmarks/README.md``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

VARIANTS = {"eager": ("eager", False), "eager-pad": ("eager", True),
            "compile-dynamic": ("dynamic", True), "compile-static": ("static", True)}


def child(mode: str, pad_multiple: int, examples: int) -> dict:
    """One variant in this process: train, return the timings of its two epochs."""
    import torch
    import torch._dynamo

    from xltlib.config.schema import TrainConfig
    from xltlib.data import tasks as T
    from xltlib.evaluation import task_types as TT
    from xltlib.training.batching import collate
    from xltlib.training.objectives import build_objective

    torch._dynamo.config.recompile_limit = 64  # static shapes: a graph per (length bucket, batch size)

    def padded_collate(ids, pad_id, labels=None):  # pad to a multiple: a handful of shapes cover an epoch
        batch = collate(ids, pad_id, labels)
        width = batch["input_ids"].shape[1]
        extra = -width % pad_multiple
        if extra:
            batch["input_ids"] = torch.nn.functional.pad(batch["input_ids"], (0, extra), value=pad_id)
            batch["attention_mask"] = torch.nn.functional.pad(batch["attention_mask"], (0, extra), value=0)
        return batch

    load = TT.PairClassification.load_model

    def compiled_load(self, *args, **kw):  # compiled lazily, at the first forward after the loop's set-up
        model = load(self, *args, **kw)
        if mode != "eager":
            model.compile(dynamic=mode == "dynamic")
        return model

    TT.collate = padded_collate  # the pair kind's collate (benchmark-only patches: the library never compiles)
    TT.PairClassification.load_model = compiled_load
    records = T.load_records("xnli", "en", None)[:examples]
    cfg = TrainConfig(epochs=2, batch_size=32, lr=3e-5, warmup_ratio=0.1, max_length=128, bf16=True,
                      bf16_weights=True, diagnostics=False)
    objective = build_objective("baseline", {}, data_dir=T.data_dir_or_none(None))
    t0 = time.perf_counter()
    _, _, log = TT.train_classifier("me5-small", records, num_labels=3, objective=objective, seed=1, cfg=cfg,
                                    device="cpu")
    first = [r for r in log if r["epoch"] == 0]
    end1, last = first[-1], log[-1]
    epoch2 = last["elapsed_s"] - end1["elapsed_s"]
    steps2 = len(log) - len(first)
    return dict(total_s=time.perf_counter() - t0, epoch1_s=end1["elapsed_s"], epoch2_s=epoch2,
                step_s=epoch2 / steps2, tok_s=(last["tokens"] - end1["tokens"]) / epoch2,
                steps_per_epoch=len(first), final_loss=last["loss"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=384)
    ap.add_argument("--pad-multiple", type=int, default=16)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {list(VARIANTS)}")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one variant, print its JSON
    args = ap.parse_args()
    if args.child:
        mode, pad = VARIANTS[args.child]
        print(json.dumps(child(mode, args.pad_multiple if pad else 1, args.examples)))
        return
    if not os.environ.get("XLT_DATA_DIR"):
        raise SystemExit("set XLT_DATA_DIR to the XTREME-layout data folder (e.g. ../shared/data)")
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}: expected some of {list(VARIANTS)}")
    import torch

    from xltlib.core.peak import cpu_peaks, format_peaks

    pk = cpu_peaks()
    peak = pk["gflops_1_thread"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {format_peaks(pk)}", flush=True)
    rows = {}
    for name in variants:
        with tempfile.TemporaryDirectory() as cache:  # cold Inductor / AOTAutograd caches, as a new machine
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache)
            out = subprocess.run([sys.executable, __file__, "--child", name, "--examples", str(args.examples),
                                  "--pad-multiple", str(args.pad_multiple)], env=env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"variant {name} failed:\n{out.stderr[-2000:]}")
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  measured {name}: {rows[name]['step_s']:.3f} s/step", flush=True)
    ref = rows.get("eager")
    print(f"\n{'variant':16s} {'s/step':>7s} {'tok/s':>6s} {'vs eager':>8s} {'compile s':>9s} {'final loss':>10s}")
    for name, r in rows.items():
        compile_s = r["epoch1_s"] - r["epoch2_s"] if VARIANTS[name][0] != "eager" else 0.0
        ratio = ref["step_s"] / r["step_s"] if ref else float("nan")
        print(f"{name:16s} {r['step_s']:7.3f} {r['tok_s']:6.0f} {ratio:7.2f}x {compile_s:9.0f} {r['final_loss']:10.4f}")
    print(f"\n{args.examples} XNLI-en rows, batch 32, bf16 weights, 2 epochs of {ref['steps_per_epoch'] if ref else '?'} "
          f"steps; step time = epoch 2; 'vs eager' = eager step time / this one (above 1 = faster); compile s = "
          f"epoch 1 minus epoch 2 (paid in every new process with a cold cache); pad multiple {args.pad_multiple}; "
          f"tok/s counts non-padding tokens")


if __name__ == "__main__":
    main()
