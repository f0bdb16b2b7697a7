"""The machine's matmul peak: the yardstick beside every wall time (``xlt cost``, the benchmarks).

Measured in the precision runs compute in here: bf16 where the device has it natively, fp32 on an x86 CPU without
AVX-512 BF16 or AMX (:func:`xltlib.core.devices.bf16_supported`; there a bf16 matmul is emulated, ~100x slower,
and the runs train in fp32). A square matmul (2048^2 on a CPU, 8192^2 on a GPU) after a warm-up (AMX units run well below peak for the
first few hundred milliseconds), best of a few timed trials: the rate no dense layer of a model can beat.
"""
from __future__ import annotations

import os
import time

import torch

from xltlib.core.devices import bf16_supported


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run asynchronously: time them to completion
        torch.cuda.synchronize(device)


def matmul_peak(device: str | torch.device = "cpu", threads: int | None = None, *, dtype=torch.bfloat16,
                trials: int = 5, reps: int = 5, warmup_s: float = 0.5, clock=time.perf_counter) -> float:
    """Best FLOP/s of an ``n x n`` matmul on ``device`` with ``threads`` CPU threads (None: as set now), timed by
    ``clock`` (``time.process_time`` on one thread: per CPU second, which other jobs on the core do not lower)."""
    device = torch.device(device)
    n = 8192 if device.type == "cuda" else 2048
    before = torch.get_num_threads()
    if threads is not None and device.type == "cpu":
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        t_end = time.perf_counter() + warmup_s
        while time.perf_counter() < t_end:
            a @ b
            _sync(device)
        best = 0.0
        for _ in range(trials):
            t = clock()
            for _ in range(reps):
                a @ b
            _sync(device)
            best = max(best, 2 * n**3 * reps / (clock() - t))
        return best
    finally:
        torch.set_num_threads(before)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask: ``taskset -c 0`` gives 1)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def compute_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """The dtype a run's matmuls use on ``device`` when params ask for bf16: bf16 where it is native, else fp32."""
    return torch.bfloat16 if bf16_supported(torch.device(device)) else torch.float32


def cpu_peaks() -> dict[str, float]:
    """2048^2 matmul GFLOP/s in :func:`compute_dtype` (named in ``dtype``) on one thread per CPU second (a shared
    core does not lower it) and on every usable core per wall second (it does), with the core count."""
    cores = usable_cores()
    dtype = compute_dtype("cpu")
    one = matmul_peak("cpu", 1, dtype=dtype, clock=time.process_time)
    return dict(dtype=str(dtype).removeprefix("torch."), gflops_1_thread=one / 1e9, threads=cores,
                gflops_all_threads=(matmul_peak("cpu", cores, dtype=dtype) if cores > 1 else one) / 1e9)


def format_peaks(peaks: dict) -> str:
    """``bfloat16 2048² matmul peak 200 GFLOP/s on 1 thread (per CPU second), 390 GFLOP/s on 2 threads``."""
    one = f"{peaks['dtype']} 2048² matmul peak {peaks['gflops_1_thread']:,.0f} GFLOP/s on 1 thread (per CPU second), "
    return one + (f"{peaks['gflops_all_threads']:,.0f} GFLOP/s on {peaks['threads']} threads" if peaks["threads"] > 1
                  else "the only usable core")
