"""The machine's bf16 matmul peak: the yardstick beside every wall time (``xlt cost``, the benchmarks).

A square bf16 matmul (2048^2 on a CPU, 8192^2 on a GPU) after a warm-up (AMX units run well below peak for the
first few hundred milliseconds), best of a few timed trials: the rate no dense layer of a model can beat.
"""
from __future__ import annotations

import os
import time

import torch


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


def cpu_peaks() -> dict[str, float]:
    """bf16 2048^2 matmul GFLOP/s on one thread per CPU second (a shared core does not lower it) and on every
    usable core per wall second (it does), with the core count."""
    cores = usable_cores()
    one = matmul_peak("cpu", 1, clock=time.process_time)
    return dict(bf16_gflops_1_thread=one / 1e9, threads=cores,
                bf16_gflops_all_threads=(matmul_peak("cpu", cores) if cores > 1 else one) / 1e9)
