"""Where tensors run: ``device: auto | cpu | cuda`` from the params, resolved once per stage kernel.

The rest of the library follows the model: inference moves each batch to the model's device
(:func:`to_device`), so only the places that load a model call :func:`resolve_device`. Nothing here assumes a CPU: thread counts are set only for the CPU.
"""
from __future__ import annotations

import functools
import logging
import os
import platform

import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when a GPU is visible, else the CPU; ``cuda`` without one is an error, not a fallback.
    A ``torch.device`` is returned as it is."""
    if isinstance(name, torch.device):
        return name
    if name not in DEVICES:
        raise ValueError(f"device = {name!r}: expected one of {', '.join(DEVICES)}")
    if name == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cuda":
        raise RuntimeError(
            f"device = 'cuda', but torch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False; "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}, "
            f"torch.version.cuda={torch.version.cuda}); use device: auto or cpu, or install a CUDA build of torch")
    return torch.device("cpu")


def bf16_supported(device: torch.device) -> bool:
    """bf16 matmuls at speed: on CUDA, Ampere and later; on an x86 CPU, AVX-512 BF16 or AMX. An x86 CPU without them
    (AVX2 only) emulates bf16: a 2048^2 bf16 matmul ran at 0.35 GFLOP/s on such an EPYC against 58 in fp32, so bf16
    there would make a run ~100x slower, not faster. Other CPUs (ARM) are trusted with bf16, as torch is."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    return cpu_has_native_bf16()


@functools.cache
def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX on this x86 CPU: torch's own probes, else the kernel's CPU flags (a fixed fact of the
    machine: probed once per process, not at every inference call)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(p) for p in probes):
        return any(p() for p in probes)
    try:  # pragma: no cover - a torch without the probes
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(requested: bool, device: torch.device) -> bool:
    """The params' ``train.bf16`` where the device has bf16, fp32 otherwise (said once in the log)."""
    if requested and not bf16_supported(device):
        logging.getLogger(__name__).warning(
            "bf16 requested but %s has no native bf16 (on a CPU: AVX-512 BF16 or AMX); running fp32", describe(device))
        return False
    return requested


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def to_device(batch: dict, device: torch.device) -> dict:
    """Tensors of a collated batch on ``device`` (a no-op on the CPU)."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def set_cpu_threads(device: torch.device, threads: int | None) -> None:
    """``train.threads`` is a CPU setting; a GPU run leaves the host's thread pool alone."""
    if threads and device.type == "cpu":
        torch.set_num_threads(threads)


def describe(device: torch.device) -> str:
    """``cuda (NVIDIA H100 80GB HBM3)`` / ``cpu (2 threads)``: benchmarks and reports print it."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
