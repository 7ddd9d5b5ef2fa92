"""ZeRO-1/2/3 and PyTorch FSDP2 equal plain AdamW; per-rank model-state bytes match the paper."""

from __future__ import annotations

import pytest

from llmlab.parallel import launch, ring_bytes, zero_memory
from llmlab.parallel import workers as W


@pytest.mark.parity
def test_zero_stages_and_fsdp2_equal_adamw_and_hold_the_formula_bytes():
    for out in launch(W.zero_check, 2, 3, True, True):
        psi, n = out["psi"], 2
        for stage in (1, 2, 3, "fsdp2"):
            assert out["diff"][stage] < 1e-4, (stage, out["diff"])
        padded = -(-psi // n) * n  # the flat buffer is padded to a multiple of N
        for stage in (0, 1, 2, 3):  # fp32 params and grads, K = 8 (m, v)
            expected = zero_memory(padded if stage else psi, n, stage, 4, 4, 8)
            assert abs(out["held"][stage] - expected) <= 64, (stage, out["held"][stage], expected)
        for stage in (1, 2):  # measured message by message: reduce-scatter + all-gather per step
            assert out["sent"][stage] == ring_bytes("all_reduce", padded * 4, n)
