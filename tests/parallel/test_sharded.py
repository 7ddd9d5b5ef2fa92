"""ShardedOptimizer (ZeRO-1/2 as a torch.optim.Optimizer, arXiv:1910.02054) and fully_shard with
a mixed-precision policy (FSDP, arXiv:2304.11277) on 2 gloo processes, against the unsharded
optimizer, torch's ZeroRedundancyOptimizer and torch FSDP2."""

from __future__ import annotations

import pytest
import torch

from llmlab.parallel import launch
from llmlab.parallel import sharded_workers as W
from llmlab.parallel.fsdp import MixedPrecisionPolicy, fully_shard
from llmlab.parallel.zero_optim import ShardedOptimizer, partition_by_size


@pytest.mark.parity
def test_sharded_optimizer_equals_unsharded_and_torch_zero_and_holds_half_the_state():
    outs = launch(W.zero_optimizer_check, 2, 10, timeout=300)
    for out in outs:
        # 10 steps, two parameter groups (own lr and weight decay) under an LR schedule:
        # bit-equal to the unsharded optimizer given the same averaged gradients
        for what in ("stage1", "stage2", "sgd", "torch_zero_vs_plain", "resumed", "under_ddp"):
            assert out["diff"][what] <= 1e-7, (what, out["diff"])
        assert out["names_kept"]
        assert out["state_dict_diff"] <= 1e-7  # consolidated = the unsharded optimizer's state
        assert out["state_dict_lrs"] == pytest.approx(out["plain_lrs"])
        assert out["state_dict_lrs"][1] == pytest.approx(2 * out["state_dict_lrs"][0])
        full, largest = out["state_bytes"]["unsharded"], out["largest_param_state_bytes"]
        for stage in ("stage1", "stage2"):  # whole tensors per rank: within one tensor of 1/N
            assert abs(out["state_bytes"][stage] - full / 2) <= largest / 2
            assert out["state_bytes"][stage] == out["state_bytes"]["torch_zero"]  # same split
        assert out["grad_bytes"]["stage1"] == out["grad_bytes"]["unsharded"]
        assert abs(out["grad_bytes"]["stage2"] - out["grad_bytes"]["unsharded"] / 2) <= largest / 4
    assert sum(o["state_bytes"]["stage1"] for o in outs) == outs[0]["state_bytes"]["unsharded"]
    assert outs[1]["state_dict_off_root_raises"]


@pytest.mark.parity
def test_fully_shard_mixed_precision_equals_torch_fsdp2_and_one_process():
    for out in launch(W.fsdp_mixed_check, 2, 3, timeout=300):
        assert out["compute_dtype"] == "torch.bfloat16" == out["logits_dtype"]
        assert out["master_dtypes"] == ["torch.float32"] == out["grad_dtypes"]
        assert out["names"] and out["local_shapes_match"]  # FSDP2's dim-0 chunks, norms too
        assert out["local_vs_torch"] <= 1e-6 and out["full_vs_torch"] <= 1e-6
        assert out["full_vs_reference"] <= 1e-6
        assert out["fp32_vs_reference"] > 1e-3  # the check sees a policy that was not applied
        assert out["held_fraction"] == 0.5


def test_partition_balances_whole_tensors_largest_first():
    assert partition_by_size([10, 1, 6, 5], 2) == [0, 0, 1, 1]  # 10 | 6, 5 | then 1 onto 10
    assert partition_by_size([4, 4, 4], 3) == [0, 1, 2]
    load = [0, 0]
    partition_by_size([8], 2, load)  # a second group continues from the first one's load
    assert partition_by_size([3, 2], 2, load) == [1, 1] and load == [8, 5]
    with pytest.raises(ValueError, match="at least one rank"):
        partition_by_size([1], 0)


def test_bad_arguments_are_named():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="torch.optim.Optimizer subclass"):
        ShardedOptimizer(p, torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]))
    with pytest.raises(ValueError, match="stages 1 and 2"):
        ShardedOptimizer(p, torch.optim.AdamW, stage=3)
    with pytest.raises(ValueError, match="reduce_gradients=True"):
        ShardedOptimizer(p, torch.optim.AdamW, stage=2, reduce_gradients=False)
    with pytest.raises(ValueError, match="param_dtype"):
        MixedPrecisionPolicy(param_dtype=torch.int8)
    with pytest.raises(ValueError, match="param_dtyp"):
        MixedPrecisionPolicy(param_dtyp=torch.bfloat16)
    with pytest.raises(ValueError, match="nn.Module"):
        fully_shard(torch.zeros(3))
