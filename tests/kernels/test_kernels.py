"""The Triton kernels equal their PyTorch references (values and gradients), at small sizes.

Without a GPU they run under Triton's interpreter (``TRITON_INTERPRET=1``) on CPU tensors."""

from __future__ import annotations

import os

import pytest
import torch

from llmlab import kernels
from llmlab.attention import flash_attention_forward as torch_flash_forward
from llmlab.model import GPT, GPTConfig
from llmlab.nn import attention, cross_entropy, rms_norm, softmax

DEVICE = "cpu" if kernels.INTERPRETED else "cuda"


def _rand(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(DEVICE, dtype)


def _grads(fn, *xs):
    xs = [x.detach().clone().requires_grad_() for x in xs]
    out = fn(*xs)
    out.backward(_rand(*out.shape, seed=99, dtype=out.dtype))
    return out, [x.grad for x in xs]


@pytest.mark.parametrize("shape", [(3, 5, 24), (7, 64)])  # d not a power of two, and one that is
def test_rms_norm_forward_backward(shape):
    x, w = _rand(*shape), _rand(shape[-1], seed=1)
    got, got_g = _grads(kernels.rms_norm, x, w)
    want, want_g = _grads(rms_norm, x, w)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_softmax_rows():
    x = _rand(4, 3, 37) * 5
    x[0, 0, :30] = float("-inf")  # a mostly masked row
    torch.testing.assert_close(kernels.softmax(x), softmax(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_forward_backward(reduction):
    logits = _rand(2, 5, 300) * 3
    targets = torch.randint(0, 300, (2, 5), generator=torch.Generator().manual_seed(2)).to(DEVICE)
    targets[1, 2] = -100  # ignored

    def fused(lg):
        return kernels.cross_entropy(lg, targets, reduction=reduction, block=64)  # 5 chunks

    def ref(lg):
        return cross_entropy(lg, targets, reduction=reduction)

    got, (g1,) = _grads(fused, logits)
    want, (g2,) = _grads(ref, logits)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g1, g2, atol=1e-6, rtol=1e-5)
    assert g1[1, 2].abs().max() == 0  # an ignored position gets no gradient


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("t_q,t_k,n_kv", [(32, 32, 2), (20, 45, 1), (1, 33, 2)])
def test_flash_attention_forward_backward(causal, t_q, t_k, n_kv):
    q = _rand(2, 2, t_q, 16)
    k, v = _rand(2, n_kv, t_k, 16, seed=1), _rand(2, n_kv, t_k, 16, seed=2)

    def fused(q, k, v):
        return kernels.flash_attention(q, k, v, causal=causal, block_q=16, block_k=16)

    def ref(q, k, v):
        return attention(q, k, v, is_causal=causal)

    got, got_g = _grads(fused, q, k, v)
    want, want_g = _grads(ref, q, k, v)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    for a, b in zip(got_g, want_g):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_flash_forward_lse_equals_the_pytorch_tile_loop():
    q, k, v = _rand(1, 2, 24, 16), _rand(1, 2, 40, 16, seed=1), _rand(1, 2, 40, 16, seed=2)
    o, lse = kernels.flash_attention_forward(q, k, v, causal=True, block_q=16, block_k=16)
    o2, lse2 = torch_flash_forward(q, k, v, causal=True, block_q=16, block_k=16)
    torch.testing.assert_close(o, o2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(lse, lse2, atol=1e-5, rtol=1e-5)


def test_bad_inputs_are_named():
    q = _rand(1, 2, 16, 16)
    with pytest.raises(ValueError, match="block_q"):
        kernels.flash_attention(q, q, q, block_q=12)
    with pytest.raises(ValueError, match="d_v == d_head"):
        kernels.flash_attention(q, q, _rand(1, 2, 16, 8))
    with pytest.raises(ValueError, match="weight"):
        kernels.rms_norm(q, _rand(3))


def test_use_kernels_keeps_the_model_function():
    torch.manual_seed(0)
    cfg = GPTConfig.llama_style(vocab_size=61, block_size=32, d_model=32, n_head=2, n_kv_head=1,
                                n_layer=1)
    model = GPT(cfg).to(DEVICE)
    idx = torch.randint(0, 61, (1, 16), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    want = model(idx)
    kernels.use_kernels(model)
    assert type(model.norm_f).__name__ == "TritonRMSNorm"
    torch.testing.assert_close(model(idx), want, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not kernels.INTERPRETED, reason="the interpreter is for machines without a GPU")
def test_interpreter_works_when_triton_was_imported_first():
    """torch can import triton before llmlab.kernels (e.g. its profiler): kernels still run."""
    import subprocess
    import sys

    code = ("import os, torch, triton.language\nos.environ.pop('TRITON_INTERPRET', None)\n"
            "from llmlab import kernels\nfrom llmlab.nn import rms_norm\n"
            "x, w = torch.randn(3, 24), torch.randn(24)\n"
            "assert torch.allclose(kernels.rms_norm(x, w), rms_norm(x, w), atol=1e-5)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.skipif(not kernels.INTERPRETED, reason="the guard sees a kernel run by the interpreter")
def test_a_blocked_kernel_is_blocked_where_it_runs_and_in_any_alias():
    """Chapter 03 blocks llmlab's flash kernel while a learner's runs: launching it (the
    interpreter runs its Python function) raises, and so does a re-jit of its function."""
    import triton

    from llmlab.grading.guard import ReferenceBlocked, blocked, keys_for
    from llmlab.kernels.flash import flash_attention_forward, flash_fwd_kernel

    q, k, v = (_rand(1, 1, 16, 16) for _ in range(3))
    with blocked([flash_fwd_kernel]), pytest.raises(Exception) as info:
        flash_attention_forward(q, k, v, True, block_q=16, block_k=16, kernel=flash_fwd_kernel)
    blocked_call = info.value.__cause__ or info.value  # the interpreter re-raises it, chained
    assert isinstance(blocked_call, ReferenceBlocked)
    assert "llmlab.kernels.flash.flash_fwd_kernel" in str(blocked_call)
    keys = keys_for([flash_fwd_kernel])
    assert keys.covers(flash_fwd_kernel) and keys.covers(triton.jit(flash_fwd_kernel.fn))
    flash_attention_forward(q, k, v, True, block_q=16, block_k=16)  # only while blocked
