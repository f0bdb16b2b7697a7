"""The run folder: create/open it, lock it, where its artefacts live, its grid cells, device and provenance.

Layout of a run folder ``DIR``::

    config.yaml                   the validated params snapshot (notebooks read it; validated once per run)
    .xlt.lock                     held while `xlt run` / `xlt report` works on the folder
    data/<task>.json              the split (xltlib.data.split): training rows, scored rows, keys, label counts
    data/parallel.json            the key of the parallel data the alignment stage encoded
    data/parallel_items.parquet   the item (English sentence id) of every parallel pair, per dataset and language
    checkpoints/<checkpoint>/     a finished checkpoint (written atomically) with its key
    checkpoints/<checkpoint>.resume.pt  an unfinished cell's state after its last epoch (xltlib.training.resume)
    checkpoints/clean-prefix-<key>.pt   the state after train.clean_epochs, shared by the methods of a group
    results/train/<checkpoint>.parquet      per-step training log
    results/transfer/<cell_id>.parquet      task score (and its parts) per language (pair)
    results/alignment/<checkpoint>.parquet  alignment per dataset x metric x language x layer
    results/alignment_outcomes/<checkpoint>.parquet  per-pair retrieval outcomes (top-1 right or not), with its key
    results/predictions/<cell_id>/<task>-<lang>[-<lang2>].parquet  every prediction of a transfer cell, with its key
    results/robustness/<cell_id>/<task>-en.parquet  per-item outcomes under each attack (xltlib.evaluation.robustness)
    results/rescored/transfer/<cell_id>.parquet  rows recomputed from the predictions by `xlt rescore` (no --write)
    notebooks/, report/           executed notebooks and their HTML; status.json

Every artefact is written with its chained cache key (:mod:`xltlib.runner.keys`); only rows under a live key are
read back (:mod:`xltlib.runner.results`, also reachable as methods of :class:`Run` for the reporting layer,
which cannot import the runner).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from xltlib.config.grid import Cell, expand_grid
from xltlib.config.schema import RunConfig, dump_config
from xltlib.config.validate import load_config
from xltlib.core.devices import describe, resolve_device, set_cpu_threads, use_bf16
from xltlib.core.rows import provenance, write_json
from xltlib.data import tasks as T
from xltlib.data.split import Split
from xltlib.data.synthetic import make_smoke_data
from xltlib.runner import results

LOCK_NAME = ".xlt.lock"
log = logging.getLogger("xlt")


class RunLocked(RuntimeError):
    """Another live process is working on this run folder."""


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
        return cls(load_config(snap, check=False), run_dir, meta.get("params_file", ""))

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)

    @property
    def data_dir(self) -> Path | None:
        return self.cfg.resolved_data_dir()

    def cells(self) -> list[Cell]:
        return expand_grid(self.cfg)

    def training_cells(self) -> list[Cell]:
        """One grid cell per distinct checkpoint (cells sharing a training task train once)."""
        first: dict[str, Cell] = {}
        for c in self.cells():
            first.setdefault(c.checkpoint, c)
        return list(first.values())

    def find_cell(self, cell_id: str) -> Cell:
        for cell in self.cells():
            if cell.cell_id == cell_id:
                return cell
        raise ValueError(f"cell '{cell_id}' is not in the grid of {self.dir}; cells: {[c.cell_id for c in self.cells()]}")

    def languages(self, task: str) -> list[str]:
        langs = self.cfg.languages.get(task) or list(T.get_task(task).languages)
        return ["en"] + [lang for lang in langs if lang != "en"]

    def split(self, task: str) -> Split:
        """The task's split (written by the data stage), parsed once per version of its file."""
        return Split.load_cached(self.path("data", f"{task}.json"))

    def checkpoint_dir(self, checkpoint: str) -> Path:
        return self.path("checkpoints", checkpoint)

    def resume_path(self, checkpoint: str) -> Path:
        """The training loop's state after its last finished epoch, while the checkpoint is unfinished."""
        return self.path("checkpoints", f"{checkpoint}.resume.pt")

    def clean_prefix_path(self, prefix_key: str) -> Path:
        """The state after the clean epochs that every method of one (data, model, seed, settings) group shares."""
        return self.path("checkpoints", f"clean-prefix-{prefix_key}.pt")

    def train_path(self, checkpoint: str) -> Path:
        return self.path("results", "train", f"{checkpoint}.parquet")

    def selection_counts_path(self, checkpoint: str) -> Path:
        """An entity tagger's chunk counts per English selection sentence (the gate's F1 and its bootstrap)."""
        return self.path("results", results.SELECTION_COUNTS, f"{checkpoint}.parquet")

    def transfer_path(self, cell_id: str) -> Path:
        return self.path("results", "transfer", f"{cell_id}.parquet")

    def alignment_path(self, checkpoint: str) -> Path:
        """``pretrained:<model>`` names a file too."""
        return self.path("results", "alignment", checkpoint.replace(":", "__").replace("/", "--") + ".parquet")

    def prov(self) -> dict:
        """Provenance columns of every row: commit, time, versions, and the host and device that computed it."""

        return dict(provenance(self.params_file), host=socket.gethostname(), device=describe(self.device),
                    precision="bf16" if self.bf16 else "fp32")

    @functools.cached_property
    def device(self):
        """This kernel's torch device (``device`` in the params, resolved by :mod:`xltlib.core.devices`), with
        ``train.threads`` CPU threads set for every stage: float sums depend on the thread count, so a Ray worker
        and a local kernel give the same rows only at the same count."""

        device = resolve_device(self.cfg.device)
        set_cpu_threads(device, self.cfg.train.threads)
        return device

    @functools.cached_property
    def bf16(self) -> bool:
        """``train.bf16`` where this kernel's device has bf16."""

        return use_bf16(self.cfg.train.bf16, self.device)

    # the reporting layer reads the rows through these (see xltlib.runner.results)
    def load_results(self, kind: str) -> pd.DataFrame:
        return results.load_results(self, kind)

    def weight_drift(self) -> dict[str, float]:
        return results.weight_drift(self)

    def alignment_outcomes(self, metric: str, layer: int) -> pd.DataFrame:
        return results.alignment_outcomes(self, metric, layer)

    def majority_rates(self) -> dict[str, float]:
        return results.majority_rates(self)

    def selection_counts(self, keys: set[str] | None = None) -> dict[str, np.ndarray]:
        return results.selection_counts(self, keys)


def init_run(cfg: RunConfig, run_dir: Path, params_file: str = "") -> Run:
    """Create the run folder and snapshot the validated params; smoke runs get their tiny data here."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.data_dir is None and cfg.resolved_data_dir() is not None:
        # the snapshot names the folder $XLT_DATA_DIR pointed at, so the run folder alone says what was read
        cfg = cfg.model_copy(update={"data_dir": str(cfg.resolved_data_dir())})
    if cfg.smoke:
        data = make_smoke_data(run_dir / "smoke-data")
        cfg = cfg.model_copy(update={"data_dir": str(data)})
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    write_json({"params_file": str(params_file)}, run_dir / "run.json")
    return Run(cfg, run_dir, str(params_file))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold ``DIR/.xlt.lock`` while working on a run folder. A second process stops at once, naming the
    holder; a lock left by a process that no longer exists on this host is taken over."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    me = dict(pid=os.getpid(), host=socket.gethostname(),
              started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (json.JSONDecodeError, FileNotFoundError):  # being written or just released
                time.sleep(0.2)
                continue
            if holder.get("host") == me["host"] and not _pid_alive(int(holder.get("pid", -1))):
                log.warning("taking over the lock of %s left by pid %s (started %s), which is no longer running",
                            run_dir, holder.get("pid"), holder.get("started"))
                path.unlink(missing_ok=True)
                continue
            raise RunLocked(f"run folder {run_dir} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                            f"since {holder.get('started')}; wait for it to finish or choose another --out "
                            f"(if that process is gone, delete {path})") from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise RunLocked(f"could not take the lock {path}; another process keeps creating it")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            if json.loads(path.read_text()).get("pid") == me["pid"]:
                path.unlink()
