"""precision="auto": bf16 only where this machine multiplies bf16 fast; fp32 on an AVX2-only CPU."""

import os
import subprocess
import sys
import warnings

import pytest
import torch

from llmlab.model import GPT, GPTConfig
from llmlab.train import TrainConfig, Trainer, resolve_precision
from llmlab.train import precision as precision_module

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _in_subprocess(code: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.strip() + "\n" + out.stderr


def test_auto_picks_fp32_on_an_avx2_only_cpu_and_explicit_bf16_warns():
    code = ("import warnings; warnings.simplefilter('always');"
            "from llmlab.train import resolve_precision;"
            "print(resolve_precision('auto')); resolve_precision('bf16')")
    out = _in_subprocess(code, AVX2_ONLY)
    assert out.splitlines()[0] == "fp32"
    assert "without fast native bf16" in out
    slowdown = float(out.split("bf16 matmuls run at ")[1].split("×")[0])
    assert slowdown < 0.5  # measured, and well below fp32 without native bf16


def test_auto_follows_the_measurement(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    for speedup, expected in [(4.0, "bf16"), (1.1, "fp32"), (0.05, "fp32")]:
        monkeypatch.setattr(precision_module, "bf16_speedup", lambda device_type="cpu", s=speedup: s)
        assert resolve_precision("auto") == expected
        assert resolve_precision("fp32") == "fp32"
    monkeypatch.setattr(precision_module, "bf16_speedup", lambda device_type="cpu": 4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # bf16 where it is fast: no warning
        assert resolve_precision("bf16") == "bf16"


def test_no_native_bf16_means_fp32_without_timing(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(precision_module, "bf16_speedup", lambda device_type="cpu": pytest.fail("timed"))
    assert resolve_precision("auto") == "fp32"


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="expected one of"):
        resolve_precision("fp16")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="int8")


def test_trainer_trains_and_measures_its_peak_in_the_resolved_precision(monkeypatch):
    calls = []
    monkeypatch.setattr("llmlab.train.trainer.measure_matmul_peak",
                        lambda dtype: calls.append(dtype) or 1e9)
    cfg = GPTConfig.llama_style(vocab_size=16, block_size=8, d_model=16, n_head=2, n_kv_head=1, n_layer=1)
    tokens = torch.arange(200).remainder(16).numpy().astype("uint16")
    tr = Trainer(GPT(cfg), tokens, config=TrainConfig(max_steps=1, batch_size=2, warmup_steps=0))
    assert tr.config.precision == "auto" and tr.precision == resolve_precision("auto")
    assert tr.peak_flops == 1e9
    assert calls == [{"bf16": torch.bfloat16, "fp32": torch.float32}[tr.precision]]
