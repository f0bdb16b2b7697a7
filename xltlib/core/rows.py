"""Tidy result rows with provenance, written atomically so a partial file never looks done.

Every row carries the run's provenance columns (git commit, package versions,
time, params file); the full params snapshot sits beside them in ``config.yaml``.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import subprocess
import uuid
from importlib import metadata
from pathlib import Path

import pandas as pd

ROW_COLUMNS = ["checkpoint", "model", "task", "method", "seed", "language", "language2", "layer",
               "metric", "value", "n"]
PACKAGES = ("xltlib", "torch", "transformers", "datasets", "numpy", "pandas", "scikit-learn", "statsmodels")


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def git_diff_hash() -> str:
    """sha256 (12 hex) of the uncommitted change to tracked files, "" on a clean tree: a row made from a dirty
    tree names the exact diff it ran with, so an export that allows it can say which."""
    here = Path(__file__).resolve().parent
    try:
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=here, capture_output=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return hashlib.sha256(diff).hexdigest()[:12] if diff.strip() else ""


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


INTERACTIVE_ENV = "XLT_INTERACTIVE"  # set by `xlt lab` for its kernels


def provenance(params_file: str | None = None) -> dict:
    """``interactive``: written from an `xlt lab` session, not by a batch run (such rows must not pass for one)."""
    return dict(git_commit=git_commit(), git_diff=git_diff_hash(), created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                params_file=params_file or "", python=platform.python_version(),
                interactive=os.environ.get(INTERACTIVE_ENV, "") not in ("", "0"),
                **{f"v_{k}": v for k, v in package_versions().items()})


def write_rows(rows: list[dict] | pd.DataFrame, path: str | Path, prov: dict) -> pd.DataFrame:
    """Write tidy rows + provenance columns to parquet via a temporary file and rename."""
    df = pd.DataFrame(rows).copy()
    for col in ROW_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
    for k, v in prov.items():
        df[k] = v
    write_parquet_atomic(df, path)
    return df


def write_parquet_atomic(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` via a temporary file and rename: a file that exists is complete."""
    _write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def write_csv_atomic(df: pd.DataFrame, path: str | Path) -> None:
    """The same for a CSV file (e.g. the recipe search's ledger, kept in the repository)."""
    _write_atomic(path, lambda tmp: df.to_csv(tmp, index=False))


def _write_atomic(path: str | Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    write(tmp)
    os.replace(tmp, path)


def read_rows(folder: str | Path) -> pd.DataFrame:
    files = sorted(Path(folder).glob("*.parquet"))
    if not files:
        return pd.DataFrame(columns=ROW_COLUMNS)
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def write_json(obj, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")  # unique: workers may write the same file
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)
