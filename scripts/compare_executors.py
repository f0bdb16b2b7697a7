"""Run one params file with the local executor and with Ray, and compare every result row.

    XLT_DATA_DIR=../shared/data .venv/bin/python scripts/compare_executors.py [params/quick.yaml] \
        [--out outputs/compare-executors] [--set KEY=VALUE ...]

Default: a two-cell real grid (mE5-small, XNLI, baseline, seeds 1 and 2; 300 training rows, 1 epoch, 100 test
rows per language, 4 Tatoeba languages): small enough for two CPU cores, real enough to exercise the offline
model, the zero-shot split, training, transfer and alignment. Ray runs a local cluster with each task given as
many CPUs as this machine has, so both executors run the kernels with the same thread count (bit-equal
numbers need the same reduction order). Prints, per result kind, the number of rows, whether keys and values
are identical, and the largest absolute difference; exits 1 when anything differs.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd

from xltlib.config.validate import load_config
from xltlib.runner.pipeline import run_pipeline

SMALL = ["grid.task=[xnli]", "grid.method=[baseline]", "grid.seed=[1,2]", "protocol.max_train=300",
         "protocol.max_eval=100", "task_train={xnli: {epochs: 1}}", "alignment.languages=[deu,swh,tha,cmn]",
         "alignment.max_sentences=100"]
PROVENANCE = {"created_at", "git_commit", "host", "device", "params_file", "python", "interactive", "elapsed_s"}


def rows(run_dir: Path, kind: str) -> pd.DataFrame:
    df = pd.read_parquet(run_dir / "results" / kind)
    df = df.drop(columns=[c for c in df.columns if c in PROVENANCE or c.startswith("v_")])
    sort = [c for c in ("checkpoint", "cell_id", "dataset", "metric", "language", "language2", "layer", "n") if c in df]
    return df.sort_values(sort).reset_index(drop=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("params", nargs="?", default="params/quick.yaml")
    ap.add_argument("--out", default="outputs/compare-executors")
    ap.add_argument("--set", action="append", default=[], help="more overrides after the small-grid ones")
    args = ap.parse_args()
    overrides = SMALL + args.set
    cpus = os.cpu_count() or 1
    times = {}
    for name, extra in (("local", []), ("ray", ["executor.name=ray", f"executor.cell_resources={{num_cpus: {cpus}}}"])):
        cfg = load_config(args.params, overrides + extra)
        t = time.perf_counter()
        run_pipeline(cfg, Path(args.out) / name, params_file=args.params)
        times[name] = time.perf_counter() - t
    print(f"\n{args.params} with {' '.join(overrides)}")
    print(f"local {times['local']:.0f} s, ray {times['ray']:.0f} s (local Ray cluster, {cpus} CPUs per task)\n")
    same = True
    print(f"{'rows':10s} {'n':>6s} {'keys equal':>10s} {'values equal':>12s} {'max |diff|':>11s}")
    for kind in ("train", "transfer", "alignment"):
        a, b = rows(Path(args.out) / "local", kind), rows(Path(args.out) / "ray", kind)
        keys = len(a) == len(b) and list(a.get("key", [])) == list(b.get("key", []))
        num = [c for c in a.columns if pd.api.types.is_numeric_dtype(a[c])]
        equal = keys and a.equals(b)
        diff = (a[num] - b[num]).abs().max().max() if keys else float("nan")
        same &= equal
        print(f"{kind:10s} {len(a):6d} {str(keys):>10s} {str(equal):>12s} {diff:11.3g}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
