"""Real processes (gloo): the launcher, ring collectives from send/recv, DDP, and torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmlab.parallel import launch, ring_bytes
from llmlab.parallel import workers as W

ROOT = Path(__file__).resolve().parents[2]


def test_ring_collectives_equal_torch_and_formulas():
    for r, out in enumerate(launch(W.collectives_check, 2, 500)):
        assert out["all_reduce"] < 1e-5 and out["reduce_scatter"] < 1e-5
        assert out["all_gather"] == 0 and out["broadcast"] == 0
        assert out["all_reduce_bytes"] == ring_bytes("all_reduce", 500 * 4, 2)
        assert out["reduce_scatter_bytes"] == ring_bytes("reduce_scatter", 500 * 4, 2)
        assert out["all_gather_bytes"] == ring_bytes("all_gather", 2 * 10 * 4, 2)
        assert out["broadcast_bytes"] == (500 * 4 if r == 0 else 0)  # 2 ranks: root sends


@pytest.mark.parity
def test_ddp_equals_single_process_and_torch_ddp():
    for out in launch(W.ddp_check, 2, 3, 4096):
        assert out["ours_vs_single"] < 1e-4
        assert out["torch_vs_single"] < 1e-4
        assert out["n_buckets"] > 1
        assert out["bytes_reduced"] == 3 * out["param_bytes"]  # every gradient, once a step


_SUM_DDP = """
class DDP(torch.nn.Module):  # a DDP that never averages: the check must see it
    def __init__(self, module, group, bucket_bytes):
        super().__init__()
        self.module, self.group = module, group
        with torch.no_grad():
            for p in module.parameters():
                group.broadcast(p, 0)

    def forward(self, *args):
        return self.module(*args)

    def finish_gradient_sync(self):
        for p in self.module.parameters():
            self.group.all_reduce(p.grad).wait()
"""


def test_a_ddp_class_sent_as_source_runs_on_real_processes():
    from llmlab.parallel import DDP, source_of

    assert source_of(DDP).startswith("class DDP(nn.Module):")
    right = _SUM_DDP.replace("self.group.all_reduce(p.grad).wait()",
                             "self.group.all_reduce(p.grad).wait()\n            p.grad /= 2")
    for out in launch(W.ddp_source_check, 2, [right], "DDP", 2, 4096):
        assert out["vs_single"] < 1e-4
    for out in launch(W.ddp_source_check, 2, [_SUM_DDP], "DDP", 2, 4096):
        assert out["vs_single"] > 1e-3


def test_a_failing_rank_fails_the_run_with_its_error():
    with pytest.raises(RuntimeError, match="(?s)rank 1 of 2 failed.*fails on purpose"):
        launch(W.fail_on_rank, 2, 1, timeout=10)
    with pytest.raises(ValueError, match="module-level"):
        launch(lambda: None, 2)


def test_the_same_worker_runs_under_torchrun():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "llmlab.parallel.launch", "llmlab.parallel.workers:collectives_check"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rank 0: {'all_reduce': 0.0" in proc.stdout and "rank 1:" in proc.stdout
