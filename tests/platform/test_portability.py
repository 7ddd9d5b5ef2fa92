"""The suite stands in for an AVX2-only laptop: torch and oneDNN run AVX2 kernels here, in the
test process and in the notebook kernels it starts, so a saved output that depends on AMX or
AVX-512 fails on any machine, and precision="auto" trains in fp32."""

import os
import platform
import subprocess
import sys

import pytest
import torch

from llmlab.train import resolve_precision

x86 = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                         reason="ISA restriction applies to x86-64 CPUs")


@x86
def test_this_process_runs_avx2_kernels_at_most():
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2"
    assert torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT")
    assert not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_precision("auto") == "fp32"


@x86
def test_child_processes_inherit_the_restriction():
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() in ("AVX2", "DEFAULT")
