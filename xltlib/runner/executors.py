"""Executors: how a run's units of work are executed, by name (``executor.name`` in the params, ``--executor``).

A unit is one stage notebook over one piece of the grid: a training cell (``02_train/<checkpoint>``), one
cell's transfer scores (``03_transfer/<cell_id>``) or one checkpoint's alignment (``04_alignment/<checkpoint>``).
Every executor runs the same notebooks (:func:`xltlib.runner.notebook.execute_notebook`) into the same run folder and
skips finished units by the same keys (:mod:`xltlib.runner.keys`), so a grid gives the same rows whichever runs it
and a rerun resumes whichever ran it before.

* ``local``: units on this machine: one after another, transfer and alignment as one notebook each; or with
  ``workers`` > 1 that many at once (one process each), transfer and alignment per cell / checkpoint.
* ``ray``: each unit is a Ray task (``cell_resources`` per task, ``max_retries`` retries of a failed task) on
  the cluster at ``address`` (``None``: a local cluster on this machine). The run folder must be on a
  filesystem that every worker sees at the same path; a worker that cannot see it fails saying so.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.std import tqdm

from xltlib.config.schema import ExecutorConfig
from xltlib.core.peak import usable_cores
from xltlib.core.registry import Registry, UnknownName
from xltlib.runner.notebook import execute_notebook

log = logging.getLogger("xlt")
# driver environment passed on to every worker (model cache, data folder, Hugging Face settings)
FORWARDED_ENV_PREFIXES = ("XLT_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")


class ExecutorError(RuntimeError):
    """An executor that cannot run here: the message names the setting and what was found."""


class UnitFailed(RuntimeError):
    """A unit's notebook failed on a worker; ``args[0]`` is its status entry (raised so that Ray retries it)."""


@dataclass(frozen=True)
class Unit:
    stage: str  # train | transfer | alignment
    name: str  # the executed notebook's name under DIR/notebooks (and its page under DIR/report)
    parameters: dict = field(hash=False)  # what papermill injects
    # units run after this one by the same worker, each only if the one before it succeeded (a checkpoint's
    # transfer and alignment after its training: ``executor.evaluate_as_trained``); the local executor only
    then: tuple["Unit", ...] = field(default=(), hash=False)


def execute_chain(run_dir: str | Path, unit: Unit, live: bool = True) -> list[tuple[Unit, dict]]:
    """``unit`` and then its ``then`` units, stopping at the first that fails: each with its status entry."""
    done = []
    for u in (unit, *unit.then):
        entry = execute_notebook(run_dir, u.stage, u.name, u.parameters, live=live)
        done.append((u, entry))
        if not entry["ok"]:
            break
    return done


Record = Callable[[Unit, dict], None]  # the driver's bookkeeping for one finished unit (status.json, log line)


def local_workers(workers: int | str) -> int:
    """``executor.workers`` as a number: ``auto`` = every usable core on a CPU-only machine, 1 with a GPU (its
    cells share one device)."""
    if workers != "auto":
        return int(workers)
    return 1 if torch.cuda.is_available() else usable_cores()


def _pool_worker_env(threads: int) -> None:
    """A pool process's environment: the kernels it starts use ``threads`` torch threads each."""
    os.environ["OMP_NUM_THREADS"] = str(threads)


class LocalExecutor:
    """Kernels on this machine: one unit after another with the live progress bar of each (``workers: 1``), or
    ``workers`` units at once, each notebook in its own process (its own environment and kernel CPU count) with
    ``usable cores // workers`` torch threads; then transfer and alignment run per cell / checkpoint, as on Ray.
    One-thread cells side by side beat two-thread cells one after another on a CPU: a 2-core machine without
    AMX ran two PAWS-X training cells at once in 4,257 s and 5,135 s where each took 4,062 s and 5,043 s alone."""

    name = "local"
    chains = True  # runs a unit's ``then`` units after it (executor.evaluate_as_trained)

    def __init__(self, cfg: ExecutorConfig):
        self.cfg = cfg
        self.workers = local_workers(cfg.workers)
        self.splits_stages = self.workers > 1  # else transfer / alignment run as one notebook over every cell

    def run(self, run_dir: Path, units: list[Unit], record: Record, position: Callable[[], str]) -> None:
        if self.workers == 1:
            for unit in units:
                for u in (unit, *unit.then):
                    label = f"{position()} {u.name}"
                    entry = execute_notebook(run_dir, u.stage, u.name, u.parameters, label=label)
                    record(u, entry, label)
                    if not entry["ok"]:
                        break
            return
        if not units:
            return
        threads = max(1, usable_cores() // self.workers)
        # spawn: a clean interpreter per worker (no inherited locks or thread pools of the driver)
        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_pool_worker_env, initargs=(threads,)) as pool:
            pending = {pool.submit(execute_chain, str(run_dir), u, live=False): u for u in units}
            try:
                for future in as_completed(pending):
                    unit = pending[future]
                    try:
                        done = future.result()
                    except Exception as exc:  # noqa: BLE001 - a worker process died: the unit failed
                        done = [(unit, _failed_entry(unit, exc))]
                    for u, entry in done:
                        record(u, entry, f"{position()} {u.name}")
            finally:  # the driver is stopping: units not started stay undone and run next time
                pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        pass


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


def run_unit_on_worker(run_dir: str, stage: str, name: str, parameters: dict, env: dict, num_cpus: float | None) -> dict:
    """The body of one Ray task: check the run folder is visible, set the environment, run the notebook."""
    host = socket.gethostname()
    if not (Path(run_dir) / "config.yaml").is_file():
        raise ExecutorError(f"worker {host} cannot see the run folder {run_dir} (no config.yaml there): the run "
                            f"folder must be on a filesystem shared by the driver and every worker, at the same path")
    os.environ.update(env)
    if num_cpus:  # the kernel's torch uses as many threads as the task was given cores
        os.environ["OMP_NUM_THREADS"] = str(max(1, int(num_cpus)))
    entry = dict(execute_notebook(run_dir, stage, name, parameters, live=False), host=host)
    if not entry["ok"]:
        raise UnitFailed(entry)
    return entry


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """A ``host:port`` / ``ray://host:port`` address must accept a connection; Ray itself retries for minutes."""
    if not address or address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"executor.address = {address!r}: expected 'auto', 'host:port' or 'ray://host:port'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ExecutorError(f"executor.address = {address!r}: nothing reachable at {host}:{port} "
                            f"({exc.strerror or exc}); start the cluster (`ray start --head`) or fix the address") from None


# A local Ray node whose dashboard agent starts slower than the raylet's fixed 15 s wait (a busy or slow machine)
# fails with a bare Exception (ray-project/ray#65983); a second try usually finds the agent's imports cached
RAY_START_ATTEMPTS = 3


def init_ray(address: str | None = None, attempts: int = RAY_START_ATTEMPTS, **kw) -> None:
    """``ray.init`` (quiet, no dashboard) with retries of a local node's start-up time-out; other errors at once."""
    import ray

    kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **kw)
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=address, **kw)
            return
        except (ConnectionError, ValueError, RuntimeError, TimeoutError):
            raise
        except Exception as exc:  # Ray raises a bare Exception when a node times out during start-up
            ray.shutdown()
            if address is not None or "timed out during startup" not in str(exc) or attempt == attempts:
                raise RuntimeError(f"{str(exc).strip().splitlines()[0]} (after {attempt} attempt(s); the raylet's "
                                   f"reason is in /tmp/ray/session_latest/logs/raylet.err)") from exc
            log.warning("Ray's local node timed out during start-up (attempt %d of %d); trying again", attempt,
                        attempts)


class RayExecutor:
    """Each unit a Ray task; the driver records units as they finish (status.json, a tqdm bar on a terminal)."""

    name = "ray"
    splits_stages = True  # transfer and alignment also run per cell / checkpoint
    chains = False  # every unit its own task: the pipeline runs the stages one after another

    def __init__(self, cfg: ExecutorConfig):
        try:
            import ray
        except ImportError as exc:
            raise ExecutorError("executor.name = 'ray' needs Ray: pip install 'ray[default]' "
                                "(or the package's dev / scale extra)") from exc
        self.cfg, self.ray = cfg, ray
        self.started_here = not ray.is_initialized()
        if self.started_here:
            check_reachable(cfg.address)
            try:
                init_ray(cfg.address)
            except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
                where = repr(cfg.address) if cfg.address else "None (a local cluster on this machine)"
                raise ExecutorError(f"executor.address = {where}: cannot start or reach a Ray cluster: "
                                    f"{str(exc).strip().splitlines()[0]}") from None
        self.options = self._task_options(ray.cluster_resources())

    def _task_options(self, cluster: dict) -> dict:
        """Ray task options from ``cell_resources``; a request the cluster can never meet is an error now,
        not a task that waits forever."""
        req = dict(self.cfg.cell_resources)
        opts = dict(num_cpus=req.pop("num_cpus", 1), num_gpus=req.pop("num_gpus", 0))
        wanted = dict(CPU=opts["num_cpus"], GPU=opts["num_gpus"], **req)
        for res, amount in wanted.items():
            if amount and cluster.get(res, 0) < amount:
                key = {"CPU": "num_cpus", "GPU": "num_gpus"}.get(res, res)
                raise ExecutorError(
                    f"executor.cell_resources.{key} = {amount:g}, but the Ray cluster has {cluster.get(res, 0):g} "
                    f"{res} (cluster resources: {', '.join(f'{k} {v:g}' for k, v in sorted(cluster.items()) if '/' not in k and 'node:' not in k)})")
        if req:
            opts["resources"] = req
        return dict(opts, max_retries=self.cfg.max_retries, retry_exceptions=True)

    def run(self, run_dir: Path, units: list[Unit], record: Record, position: Callable[[], str]) -> None:
        if not units:
            return
        ray = self.ray
        task = ray.remote(run_unit_on_worker).options(**self.options)
        env = forwarded_env()
        pending = {task.remote(str(run_dir), u.stage, u.name, u.parameters, env, self.options["num_cpus"]): u
                   for u in units}

        bar = tqdm(total=len(units), desc=f"ray: {units[0].stage} units", unit="unit", file=sys.stderr,
                   disable=not sys.stderr.isatty(), leave=False)
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                unit = pending.pop(done[0])
                try:
                    entry = ray.get(done[0])
                except Exception as exc:  # noqa: BLE001 - the unit failed after its retries
                    entry = _failed_entry(unit, exc)
                bar.update()
                record(unit, entry, f"{position()} {unit.name}")
        finally:
            bar.close()
            for ref in pending:  # the driver is stopping: finished units stay, the rest rerun next time
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.started_here:
            self.ray.shutdown()


def _failed_entry(unit: Unit, exc: BaseException) -> dict:
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, UnitFailed) and cause.args and isinstance(cause.args[0], dict):
        return dict(cause.args[0], attempts="all retries failed")
    msg = str(cause).strip().splitlines()
    # a chain's later units may have run before its worker died: the keys say next time what is on disk
    chain = f" (the worker died in the chain of {', '.join(u.name for u in (unit, *unit.then))})" if unit.then else ""
    return dict(stage=unit.stage, ok=False, error=f"{type(cause).__name__}: {msg[-1] if msg else ''}{chain}",
                notebook="", seconds=float("nan"))


EXECUTORS: Registry[type] = Registry("executor")
EXECUTORS.add("local", LocalExecutor)
EXECUTORS.add("ray", RayExecutor)


def make_executor(cfg: ExecutorConfig):
    """The executor named by ``executor.name`` (unknown names list the registered ones)."""

    try:
        cls = EXECUTORS.get(cfg.name)
    except UnknownName as exc:
        raise ExecutorError(f"executor.name: {exc}") from None
    return cls(cfg)
