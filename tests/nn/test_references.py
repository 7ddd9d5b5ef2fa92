"""The pieces chapter 02 grades are marked as references: while a check blocks them, neither
they nor a fast twin a learner could call instead will run."""

import pytest
import torch

from llmlab import grading
from llmlab.nn import (
    CausalSelfAttention,
    TransformerBlock,
    apply_rope,
    causal_attention,
    cross_entropy,
    fast_causal_attention,
    fast_cross_entropy,
    rms_norm,
    swiglu,
)
from llmlab.train import adamw_step, adamw_step_foreach, cosine_lr

REFERENCES = [rms_norm, apply_rope, causal_attention, fast_causal_attention, swiglu,
              TransformerBlock, cross_entropy, fast_cross_entropy, adamw_step,
              adamw_step_foreach, cosine_lr]


@pytest.mark.parametrize("ref", REFERENCES, ids=lambda r: r.__name__)
def test_is_marked_as_reference(ref):
    assert grading.guard.reference_key(ref) is not None


def test_blocking_attention_blocks_the_module_that_uses_it():
    attn = CausalSelfAttention(16, 2)
    x = torch.randn(1, 3, 16)
    with grading.blocked([causal_attention, fast_causal_attention]):
        with pytest.raises(grading.ReferenceBlocked):
            attn(x)
    assert attn(x).shape == (1, 3, 16)  # unblocked again outside the check
