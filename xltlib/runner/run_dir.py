"""The run folder: create/open it, lock it, its grid cells, the chained cache keys, and its live result rows.

Layout of a run folder ``DIR``::

    config.yaml                   the validated params snapshot (notebooks read it; validated once per run)
    .xlt.lock                     held while `xlt run` / `xlt report` works on the folder
    data/<task>.json              the split (xltlib.data.split): training rows, scored rows, keys, label counts
    data/parallel.json            the key of the parallel data the alignment stage encoded
    checkpoints/<checkpoint>/     a finished checkpoint (written atomically) with its key
    results/train/<checkpoint>.parquet      per-step training log
    results/transfer/<cell_id>.parquet      task score (and its parts) per language (pair)
    results/alignment/<checkpoint>.parquet  alignment per dataset x metric x language x layer
    notebooks/, report/           executed notebooks and their HTML; status.json

One artefact, one key, each chained on the one it is made from:
split (task, languages, protocol, content of the rows read) -> checkpoint (+ model, method, seed, train
settings) -> transfer (+ the scored rows and evaluate settings) / alignment (+ alignment settings and the
parallel data). Every result row carries its artefact's key; only rows whose key is live are analysed, so a
rerun after any change recomputes exactly the artefacts whose key moved.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from xltlib.config.grid import expand_grid
from xltlib.config.schema import RunConfig, dump_config
from xltlib.config.validate import load_config
from xltlib.core.devices import describe, resolve_device, use_bf16
from xltlib.core.rows import provenance, read_rows, write_json
from xltlib.data import tasks as T
from xltlib.data.split import Split, content_hash
from xltlib.data.synthetic import make_smoke_data

PRETRAINED = "pretrained"
LOCK_NAME = ".xlt.lock"
_SPLITS: dict[Path, tuple[int | None, Split]] = {}  # split file -> (mtime_ns, parsed split)
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

    def cells(self) -> list[dict]:
        return expand_grid(self.cfg)

    def training_cells(self) -> list[dict]:
        """One grid cell per distinct checkpoint (cells sharing a training task train once)."""
        first: dict[str, dict] = {}
        for c in self.cells():
            first.setdefault(c["checkpoint"], c)
        return list(first.values())

    def find_cell(self, cell_id: str) -> dict:
        for cell in self.cells():
            if cell["cell_id"] == cell_id:
                return cell
        raise ValueError(f"cell '{cell_id}' is not in the grid of {self.dir}; cells: {[c['cell_id'] for c in self.cells()]}")

    def languages(self, task: str) -> list[str]:
        langs = self.cfg.languages.get(task) or list(T.get_task(task).languages)
        return ["en"] + [lang for lang in langs if lang != "en"]

    def prov(self) -> dict:
        """Provenance columns of every row: commit, time, versions, and the host and device that computed it."""

        return dict(provenance(self.params_file), host=socket.gethostname(), device=describe(self.device))

    @functools.cached_property
    def device(self):
        """This kernel's torch device (``device`` in the params, resolved by :mod:`xltlib.core.devices`)."""

        return resolve_device(self.cfg.device)

    @functools.cached_property
    def bf16(self) -> bool:
        """``train.bf16`` where this kernel's device has bf16."""

        return use_bf16(self.cfg.train.bf16, self.device)

    # ------------------------------------------------------------------ splits and keys
    def split(self, task: str) -> Split:
        """The task's split; parsed once per file version (every key of every cell reads it)."""
        path = self.path("data", f"{task}.json")
        stamp = path.stat().st_mtime_ns if path.is_file() else None
        cached = _SPLITS.get(path)
        if stamp is None or cached is None or cached[0] != stamp:
            _SPLITS[path] = cached = (stamp, Split.load(path))
        return cached[1]

    def checkpoint_dir(self, checkpoint: str) -> Path:
        return self.path("checkpoints", checkpoint)

    def checkpoint_key(self, cell: dict) -> str:
        """split (training rows) -> checkpoint: everything that determines the trained weights."""
        c = self.cfg
        return content_hash(dict(split=self.split(cell["task"]).train_key, model=cell["model"],
                                 training_task=T.get_task(cell["task"]).training_task, method=cell["method_type"],
                                 method_params=cell["method_params"], seed=cell["seed"],
                                 train=c.train_for(T.get_task(cell["task"]).training_task, cell["method"]).model_dump()))

    def transfer_key(self, cell: dict) -> str:
        """checkpoint -> transfer: the checkpoint, the scored rows and how they are scored."""
        c = self.cfg
        return content_hash(dict(checkpoint=self.checkpoint_key(cell), split=self.split(cell["task"]).eval_key,
                                 evaluate=c.evaluate.model_dump(), max_length=c.train.max_length, bf16=c.train.bf16,
                                 method=cell["method_type"], method_params=cell["method_params"]))

    def parallel_key(self) -> str:
        path = self.path("data", "parallel.json")
        return json.loads(path.read_text())["key"] if path.is_file() else ""

    def alignment_key(self, ck: dict) -> str:
        """checkpoint (or the pre-trained model) -> alignment: + alignment settings and the parallel data."""
        base = ck["key"] if ck["path"] is not None else ck["checkpoint"]
        return content_hash(dict(checkpoint=base, alignment=self.cfg.alignment.model_dump(),
                                 parallel=self.parallel_key(), bf16=self.cfg.train.bf16))

    def transfer_path(self, cell: dict) -> Path:
        return self.path("results", "transfer", f"{cell['cell_id']}.parquet")

    def alignment_path(self, ck: dict) -> Path:
        return self.path("results", "alignment", ck["checkpoint"].replace(":", "__").replace("/", "--") + ".parquet")

    def transfer_done(self, cell: dict) -> bool:
        return cached(self.transfer_path(cell), self.transfer_key(cell))

    def alignment_done(self, ck: dict) -> bool:
        """False also before the alignment stage first wrote the parallel data's key."""
        return bool(self.parallel_key()) and cached(self.alignment_path(ck), self.alignment_key(ck))

    def cell_done(self, cell: dict) -> bool:
        meta = self.checkpoint_dir(cell["checkpoint"]) / "xlt_checkpoint.json"
        try:
            return meta.is_file() and json.loads(meta.read_text()).get("key") == self.checkpoint_key(cell)
        except FileNotFoundError:  # no split yet: nothing can be done
            return False

    def finished_cells(self) -> list[dict]:
        return [c for c in self.cells() if self.cell_done(c)]

    def missing_cells(self) -> list[str]:
        return [c["cell_id"] for c in self.cells() if not self.cell_done(c)]

    def alignment_checkpoints(self) -> list[dict]:
        """The pre-trained model(s) and every finished checkpoint, with their keys."""
        ck = []
        if self.cfg.alignment.include_pretrained:
            ck += [dict(checkpoint=f"{PRETRAINED}:{m}", model=m, task="", method=PRETRAINED, seed=-1, path=None)
                   for m in self.cfg.grid.model]
        ck += [dict(checkpoint=c["checkpoint"], model=c["model"], task=T.get_task(c["task"]).training_task,
                    method=c["method"], seed=c["seed"], path=self.checkpoint_dir(c["checkpoint"]),
                    key=self.checkpoint_key(c))
               for c in self.training_cells() if self.cell_done(c)]
        return ck

    def scored_cells(self) -> list[dict]:
        """Cells whose results can be analysed: checkpoint on disk, or training rows under the current key (a run
        folder whose checkpoints were pruned, or that came back from a remote machine without them)."""
        def trained(c):
            rows = self.path("results", "train", f"{c['checkpoint']}.parquet")
            try:
                return rows.is_file() and cached(rows, self.checkpoint_key(c))
            except FileNotFoundError:  # no split yet: nothing can be done
                return False

        return [c for c in self.cells() if self.cell_done(c) or trained(c)]

    def live_keys(self, kind: str) -> set[str]:
        if kind == "train":
            return {self.checkpoint_key(c) for c in self.scored_cells()}
        if kind == "transfer":
            return {self.transfer_key(c) for c in self.scored_cells()}
        if kind == "alignment":
            return {self.alignment_key(ck) for ck in self.alignment_checkpoints()}
        raise ValueError(f"unknown results kind '{kind}'; kinds: train, transfer, alignment")

    def load_results(self, kind: str) -> pd.DataFrame:
        """Rows of live artefacts only. Rows of artefacts whose key moved (settings, data or checkpoint
        changed) stay on disk until recomputed but are not analysed; ``df.attrs['stale_rows']`` counts them."""
        df = read_rows(self.path("results", kind))
        if not len(df):
            df.attrs["stale_rows"] = 0
            return df
        live = df["key"].isin(self.live_keys(kind)) if "key" in df else pd.Series(False, index=df.index)
        out = df[live].reset_index(drop=True)
        out.attrs["stale_rows"] = int((~live).sum())
        return out

    def weight_drift(self) -> dict[str, float]:
        """Checkpoint -> relative L2 distance of its encoder from the pre-trained weights (live checkpoints)."""
        train = self.load_results("train")
        if not len(train):
            return {}
        d = train[train["metric"] == "weight_drift"]
        return dict(zip(d["checkpoint"], d["value"].astype(float)))

    def majority_rates(self) -> dict[str, float]:
        """Per task, the share of the most frequent label among the English scored rows (a trivial baseline)."""
        out = {}
        for task in self.cfg.grid.task:
            if T.get_task(task).kind in ("pair_classification", "multiple_choice"):
                out[task] = self.split(task).majority_rate("en")
        return out


def cached(path: Path, key: str) -> bool:
    """The artefact at ``path`` exists and was made under ``key`` by a batch run."""
    if not path.exists():
        return False
    try:
        import pyarrow.parquet as pq

        cols = ["key", "interactive"] if "interactive" in pq.read_schema(path).names else ["key"]
        rows = pd.read_parquet(path, columns=cols)
    except (KeyError, ValueError, IndexError, OSError):  # written without a key, or unreadable: recompute
        return False
    # rows written from a JupyterLab session (xlt lab) never stand in for a batch result
    interactive = "interactive" in rows and rows["interactive"].fillna(False).astype(bool).any()
    return len(rows) > 0 and rows["key"].iloc[0] == key and not interactive


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
                import time

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
