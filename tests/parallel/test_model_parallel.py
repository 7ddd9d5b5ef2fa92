"""Tensor (+ sequence), pipeline, expert and context parallelism equal the dense computation."""

from __future__ import annotations

from llmlab.parallel import launch
from llmlab.parallel import workers as W


def test_tensor_parallel_with_and_without_sequence_parallel():
    for out in launch(W.tp_check, 2):
        for key in ("tp_loss", "sp_loss"):
            assert out[key] < 1e-5, out
        for key in ("tp_grad", "sp_grad"):
            assert out[key] < 1e-5, out


def test_gpipe_and_1f1b_equal_one_backward():
    outs = launch(W.pipeline_check, 2, 4)
    for name in ("gpipe", "1f1b"):
        assert all(o[f"{name}_grad"] < 1e-5 for o in outs)
        assert sum(o[f"{name}_n_grads"] for o in outs) == outs[0]["n_params"]  # stages cover all
        ops = [op + str(mb) for op, mb, *_ in outs[0][f"{name}_timeline"]]
        assert ops[:2] == (["F0", "F1"] if name == "gpipe" else ["F0", "B0"][:1] + ["F1"])


def test_expert_parallel_and_context_parallel():
    for out in launch(W.moe_check, 2):
        assert out["out"] < 1e-5 and out["grad"] < 1e-4, out
    for out in launch(W.cp_check, 2):
        for key in ("ring_out", "ring_grad", "ulysses_out", "ulysses_grad"):
            assert out[key] < 1e-5, out
