"""Linear attention: replace softmax by a feature map, and attention becomes an RNN.

With ``sim(q, k) = phi(q) . phi(k)`` the causal output is
``o_t = phi(q_t)^T S_t / (phi(q_t)^T z_t)``, ``S_t = sum_{j<=t} phi(k_j) v_j^T``,
``z_t = sum_{j<=t} phi(k_j)`` ("Transformers are RNNs: Fast Autoregressive Transformers with
Linear Attention", Katharopoulos et al., arXiv 2006.16236; ``phi = elu + 1``). Three equal forms:

- **parallel** — the masked ``(seq, seq)`` matrix ``phi(Q) phi(K)^T``: training-friendly, O(n^2);
- **recurrent** — carry ``S`` (d_k x d_v) and ``z`` token by token: O(1) state per step;
- **chunked** — masked parallel inside a chunk, the recurrent state between chunks
  ("Lightning Attention-2", Qin et al., arXiv 2401.04658): O(n * chunk) and matmul-friendly.

Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from llmlab.attention.naive import check_qkv

FeatureMap = Callable[[torch.Tensor], torch.Tensor]


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 > 0 (arXiv 2006.16236, eq. 7)."""
    return F.elu(x) + 1


def linear_attention_parallel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              causal: bool = True, feature_map: FeatureMap = elu_feature_map,
                              eps: float = 1e-6) -> torch.Tensor:
    """q, k: (batch, heads, seq, d_k), v: (batch, heads, seq, d_v) -> (batch, heads, seq, d_v)."""
    check_qkv(q, k, v, same_heads=True)
    fq, fk = feature_map(q), feature_map(k)
    if not causal:  # associativity: phi(Q) (phi(K)^T V) costs O(n d_k d_v)
        kv = fk.transpose(-1, -2) @ v  # (batch, heads, d_k, d_v)
        return (fq @ kv) / (fq @ fk.sum(-2)[..., None] + eps)
    a = (fq @ fk.transpose(-1, -2)).tril()  # (batch, heads, seq, seq), no softmax
    return (a @ v) / (a.sum(-1, keepdim=True) + eps)


def linear_attention_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               feature_map: FeatureMap = elu_feature_map,
                               eps: float = 1e-6) -> torch.Tensor:
    """Causal linear attention one token at a time with state S (d_k, d_v) and z (d_k).

    q, k: (batch, heads, seq, d_k), v: (batch, heads, seq, d_v) -> (batch, heads, seq, d_v).
    """
    fq, fk = feature_map(q), feature_map(k)
    S = torch.zeros(*q.shape[:2], q.shape[-1], v.shape[-1], dtype=v.dtype, device=v.device)
    z = torch.zeros(*q.shape[:2], q.shape[-1], dtype=v.dtype, device=v.device)
    outs = []
    for t in range(q.shape[-2]):
        S = S + fk[..., t, :, None] * v[..., t, None, :]  # add phi(k_t) v_t^T
        z = z + fk[..., t, :]
        num = (fq[..., t, :, None] * S).sum(-2)  # phi(q_t)^T S_t: (batch, heads, d_v)
        den = (fq[..., t, :] * z).sum(-1, keepdim=True) + eps
        outs.append(num / den)
    return torch.stack(outs, dim=-2)


def linear_attention_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             chunk: int = 64, feature_map: FeatureMap = elu_feature_map,
                             eps: float = 1e-6) -> torch.Tensor:
    """Causal linear attention by chunks: intra-chunk masked matmul + inter-chunk state.

    q, k: (batch, heads, seq, d_k), v: (batch, heads, seq, d_v) -> (batch, heads, seq, d_v).
    """
    check_qkv(q, k, v, same_heads=True)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    fq, fk = feature_map(q), feature_map(k)
    S = torch.zeros(*q.shape[:2], q.shape[-1], v.shape[-1], dtype=v.dtype, device=v.device)
    z = torch.zeros(*q.shape[:2], 1, q.shape[-1], dtype=v.dtype, device=v.device)
    outs = []
    for start in range(0, q.shape[-2], chunk):
        qc, kc, vc = (t[..., start:start + chunk, :] for t in (fq, fk, v))
        a = (qc @ kc.transpose(-1, -2)).tril()  # (batch, heads, c, c): inside the chunk
        num = a @ vc + qc @ S  # intra-chunk + everything before the chunk
        den = a.sum(-1, keepdim=True) + (qc * z).sum(-1, keepdim=True) + eps
        outs.append(num / den)
        S = S + kc.transpose(-1, -2) @ vc  # fold the chunk into the state
        z = z + kc.sum(-2, keepdim=True)
    return torch.cat(outs, dim=-2)
