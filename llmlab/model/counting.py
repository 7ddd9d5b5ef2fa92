"""Counting a transformer: parameters, training FLOPs (6·N·D), and memory (weights, grads,
optimizer states, activations).

- 6ND: each parameter costs 2 FLOPs per token forward (a multiply-add) and 4 backward, so
  training on D tokens costs ≈ 6·N·D (Kaplan et al., "Scaling Laws for Neural Language Models",
  arXiv:2001.08361, section 2.1); attention adds 12·n_layer·seq·d_attn per token (their
  C_forward term, tripled for the backward).
- Activations: the tensors autograd saves for the backward pass (Korthikanti et al., "Reducing
  Activation Recomputation in Large Transformer Models", arXiv:2205.05198, section 4), counted
  here for llmlab's exact block with a fused attention kernel; ``saved_activation_bytes``
  measures the same quantity on a real forward pass so the estimate can be checked.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.model.config import GPTConfig


def param_count(c: GPTConfig) -> dict[str, int]:
    """Parameters by part, from the config alone (no model needed); ``"total"`` counts tied
    embeddings once. Matches ``sum(p.numel() for p in GPT(c).parameters())``."""
    if c.attention != "gqa":
        raise ValueError("param_count covers 'gqa' attention; count MLA from its module")
    d, L = c.d_model, c.n_layer
    b = 1 if c.bias else 0
    q_o = 2 * (d * c.n_head * c.d_head) + b * (c.n_head * c.d_head + d)
    k_v = 2 * (d * c.n_kv_head * c.d_head + b * c.n_kv_head * c.d_head)
    n_mats = 3 if c.mlp == "swiglu" else 2
    mlp = n_mats * d * c.d_ff + b * ((n_mats - 1) * c.d_ff + d)
    norm = d * (2 if c.norm == "layernorm" and c.bias else 1)
    parts = {
        "token_embedding": c.vocab_size * d,
        "position_embedding": c.block_size * d if c.position == "learned" else 0,
        "attention": L * (q_o + k_v),
        "mlp": L * mlp,
        "norms": (2 * L + 1) * norm,
        "lm_head": 0 if c.tie_embeddings else c.vocab_size * d,
    }
    parts["total"] = sum(parts.values())
    parts["non_embedding"] = parts["total"] - parts["token_embedding"] - parts["position_embedding"]
    return parts


def flops_per_token(c: GPTConfig, seq_len: int | None = None, training: bool = True) -> float:
    """Matmul FLOPs per token: 2·N_matmul (+ attention scores 2·n_layer·seq·d_attn·2 causal-free)
    forward, ×3 for forward + backward. Embedding lookups are free; the LM head is a matmul."""
    p = param_count(c)
    n_matmul = p["total"] - p["token_embedding"] - p["position_embedding"] - p["norms"]
    n_matmul += c.vocab_size * c.d_model  # the LM head multiplies even when tied
    seq_len = seq_len or c.block_size
    attn = 2 * 2 * c.n_layer * seq_len * c.n_head * c.d_head  # QK^T and AV per query token
    fwd = 2 * n_matmul + attn
    return float(3 * fwd if training else fwd)


def training_flops(n_params: int, n_tokens: int) -> float:
    """C ≈ 6·N·D (Kaplan et al. 2020)."""
    return 6.0 * n_params * n_tokens


def _norm_elements(c: GPTConfig) -> int:
    """Per token: RMSNorm keeps x, rsqrt, x·rsqrt and its output; LayerNorm x, mean, rstd, out."""
    return 3 * c.d_model + 1 if c.norm == "rmsnorm" else 2 * c.d_model + 2


def _activation_elements_per_token(c: GPTConfig) -> int:
    """Elements autograd keeps per token for one llmlab block (fused SDPA attention)."""
    h, kv, dh, ff = c.n_head, c.n_kv_head, c.d_head, c.d_ff
    rope = dh if c.position == "rope" else 0  # the cos and sin rows
    attn = (h + 2 * kv) * dh + h + h * dh + rope  # q, k, v; log-sum-exp; output
    mlp = 4 * ff if c.mlp == "swiglu" else 2 * ff  # gate, up, silu, product / fc, gelu
    return 2 * _norm_elements(c) + attn + mlp


def memory_estimate(
    c: GPTConfig,
    batch_size: int,
    seq_len: int | None = None,
    param_bytes: int = 4,
    act_bytes: int = 4,
    optimizer_states: int = 2,
) -> dict[str, float]:
    """Bytes of training memory by kind for a batch of (batch_size, seq_len) tokens.

    ``param_bytes`` = 4 for fp32 master weights (grads same size); ``optimizer_states`` = 2 for
    Adam (m and v, fp32); ``act_bytes`` = 2 under bf16 autocast. Activations include the logits
    and the fp32 log-softmax the loss keeps.
    """
    seq_len = seq_len or c.block_size
    n = param_count(c)["total"]
    tokens = batch_size * seq_len
    per_token = c.n_layer * _activation_elements_per_token(c) + _norm_elements(c)
    acts = tokens * per_token * act_bytes
    acts += tokens * c.vocab_size * (act_bytes + (4 if act_bytes != 4 else 0))  # logits (+fp32)
    out = {
        "weights": float(n * param_bytes),
        "grads": float(n * param_bytes),
        "optimizer": float(n * 4 * optimizer_states),
        "activations": float(acts),
    }
    out["total"] = sum(out.values())
    return out


def saved_activation_bytes(model: nn.Module, idx: torch.Tensor, targets: torch.Tensor) -> int:
    """Measure the bytes autograd saves for backward during ``model.loss(idx, targets)``.

    Counts each distinct storage once and leaves out parameters (already counted as weights).
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.loss(idx, targets)
    del loss
    return sum(seen.values())
