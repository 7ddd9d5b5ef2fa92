"""The pieces chapter 02 grades can be blocked by naming them: while a check blocks them, neither
they nor a module that calls them will run (no decorator in the library is needed)."""

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
def test_naming_a_reference_blocks_it(ref):
    assert grading.guard.keys_for([ref]), f"{ref.__name__} yields nothing to block"


def test_blocking_attention_blocks_the_module_that_uses_it():
    attn = CausalSelfAttention(16, 2)
    x = torch.randn(1, 3, 16)
    with grading.blocked([causal_attention, fast_causal_attention]):
        with pytest.raises(grading.ReferenceBlocked):
            attn(x)
    assert attn(x).shape == (1, 3, 16)  # unblocked again outside the check
