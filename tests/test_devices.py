"""device: auto | cpu | cuda — resolution, clear errors, and (where a GPU is visible) the CUDA path itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xltlib.config.schema import ConfigError
from xltlib.config.validate import load_config
from xltlib.core import devices
from xltlib.core.devices import resolve_device, to_device, use_bf16
from xltlib.evaluation.probe import cv_logistic_accuracy
from xltlib.training.precision import bf16_inference
from xltlib.evaluation.task_types import load_checkpoint
from xltlib.training.checkpoints import save_checkpoint
from xltlib.evaluation.task_types import train_classifier

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


def test_auto_and_cpu_resolve_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    assert resolve_device("cpu").type == "cpu"


def test_cuda_without_a_gpu_is_an_error_naming_the_setting(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"device = 'cuda'.*no CUDA GPU.*CUDA_VISIBLE_DEVICES"):
        resolve_device("cuda")


def test_unknown_device_is_refused_in_params(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("device: gpu\n")
    with pytest.raises(ConfigError, match=r"key 'device' = 'gpu'.*'auto', 'cpu' or 'cuda'"):
        load_config(p)
    with pytest.raises(ValueError, match="expected one of auto, cpu, cuda"):
        resolve_device("tpu")


def test_cpu_batches_stay_put_and_bf16_is_kept_on_a_cpu_with_native_bf16(monkeypatch):
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long)}
    assert to_device(batch, torch.device("cpu")) is batch
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert use_bf16(True, torch.device("cpu")) and not use_bf16(False, torch.device("cpu"))


@pytest.fixture
def avx2_only_cpu(monkeypatch):
    """An x86 CPU without AVX-512 BF16 or AMX, where torch emulates bf16 matmuls (~100x slower than fp32)."""
    monkeypatch.setattr(devices.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)


def test_an_x86_cpu_without_native_bf16_runs_fp32_and_says_so(avx2_only_cpu, caplog):
    assert not use_bf16(True, torch.device("cpu"))
    assert "no native bf16" in caplog.text and "running fp32" in caplog.text


def test_bf16_inference_leaves_the_weights_fp32_where_bf16_is_emulated(avx2_only_cpu):
    model = torch.nn.Linear(4, 2)
    with bf16_inference(model, True):
        assert model.weight.dtype == torch.float32
        out = model(torch.ones(1, 4))
    assert out.dtype == torch.float32


def test_the_language_id_probe_gives_the_same_folds_either_way_where_bf16_is_emulated(avx2_only_cpu):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y = np.repeat(np.arange(3), 20)
    x[:, 0] += y  # a separable direction: the probe must find it in fp32 as in bf16
    folds = [(np.setdiff1d(np.arange(60), np.arange(i, 60, 3)), np.arange(i, 60, 3)) for i in range(3)]
    np.testing.assert_allclose(cv_logistic_accuracy(x, y, folds, bf16=True),
                               cv_logistic_accuracy(x, y, folds, bf16=False))


def test_the_real_cpu_probe_agrees_with_its_flags():
    """torch's probes and the kernel's flags name the same capability (Linux x86 only)."""
    if devices.platform.machine().lower() != "x86_64":
        pytest.skip("not an x86 machine")
    with open("/proc/cpuinfo") as f:
        flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    assert devices.cpu_has_native_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def _records(n=32):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    return [dict(text_a=" ".join(rng.choice(words, 5)), text_b=" ".join(rng.choice(words, 4)), label=int(i % 3))
            for i in range(n)]


@needs_cuda
def test_cuda_training_learns_like_the_cpu_and_saves_a_loadable_checkpoint(tmp_path):
    kw = dict(num_labels=3, objective=build("pgd"), epochs=2, batch_size=8, lr=1e-3)
    gpu, tok, log_gpu = train_classifier("tiny-random", _records(), seed=1, device="cuda", **kw)
    _, _, log_cpu = train_classifier("tiny-random", _records(), seed=1, device="cpu", **kw)
    assert next(gpu.parameters()).device.type == "cuda"
    # different RNG streams (dropout, PGD starts) and kernels: the same curve within noise, not bit-equal
    assert abs(log_gpu[-1]["loss"] - log_cpu[-1]["loss"]) < 0.5
    save_checkpoint(gpu, tok, tmp_path / "ck", base_model="tiny-random",
                    meta=dict(kind="pair_classification", pooling="mean"))
    back, _, _ = load_checkpoint(tmp_path / "ck", device="cpu")
    assert next(back.parameters()).device.type == "cpu"


def build(name):
    from xltlib.training.objectives import build_objective

    return build_objective(name)
