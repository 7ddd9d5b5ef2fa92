"""Context parallelism: attention over a sequence split across ranks.

- **Ring attention** (Liu, Zaharia & Abbeel, "Ring Attention with Blockwise Transformers for
  Near-Infinite Context", arXiv:2310.01889): rank r holds query, key and value chunk r. Key/value
  chunks travel around the ring; at each of N steps a rank attends its queries to the chunk it
  holds and merges the partial result into its running one with the online-softmax rescaling
  (chapter 03's ``merge_partials``). Causal: chunk j > r is skipped, j = r is masked causally.
- **DeepSpeed-Ulysses** (Jacobs et al., arXiv:2309.14509): one ``all_to_all`` turns
  "all heads, my sequence chunk" into "my heads, the whole sequence", ordinary attention runs
  per head group, and a second ``all_to_all`` turns it back. Needs heads divisible by N.

Both take q, k, v: (batch, heads, seq / N, d_head) — this rank's contiguous chunk — and return
this rank's chunk of causal attention over the whole sequence; gradients flow through the
communication (``llmlab.parallel.functional``). Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from llmlab.attention import merge_partials
from llmlab.attention.naive import attention_scores
from llmlab.nn import fast_causal_attention
from llmlab.parallel.functional import all_to_all, ring_shift


def partial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of q to one key/value block: (out (b, h, t_q, d), lse (b, h, t_q))."""
    scores = attention_scores(q, k, is_causal=causal)  # (b, h, t_q, t_k)
    lse = scores.logsumexp(-1)
    return torch.exp(scores - lse[..., None]) @ v, lse


def merge_step(out: torch.Tensor, lse: torch.Tensor, out_b: torch.Tensor,
               lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold block b's partial (out_b, lse_b) into the running (out, lse): the online softmax."""
    return (merge_partials(torch.stack([out, out_b]), torch.stack([lse, lse_b])),
            torch.logaddexp(lse, lse_b))


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   group=None) -> torch.Tensor:
    """Causal ring attention. q, k, v: (batch, heads, seq / N, d) -> (batch, heads, seq / N, d)."""
    r, n = dist.get_rank(group), dist.get_world_size(group)
    out, lse = partial_attention(q, k, v, causal=True)  # step 0: my own chunk
    kv = torch.stack([k, v])  # one message per step: (2, batch, heads, seq / N, d)
    for s in range(1, n):
        kv = ring_shift(kv, group)  # now holding chunk (r - s) mod n
        if (r - s) % n < r:  # earlier chunks are fully visible; later ones not at all
            out, lse = merge_step(out, lse, *partial_attention(q, kv[0], kv[1], causal=False))
    # Backward runs the shifts in reverse on every rank only if every rank's last kv is in the
    # graph; a rank that skipped the last chunks (rank 0 skips all) would leave its neighbours
    # waiting. A zero-weighted term keeps the chain (its gradient is exactly 0).
    return out + 0.0 * kv.sum() if n > 1 else out


def _seq_to_heads(x: torch.Tensor, group) -> torch.Tensor:
    """(b, h, t/N, d) -> (b, h/N, t, d) with one all_to_all."""
    n = dist.get_world_size(group)
    b, h, t, d = x.shape
    if h % n:
        raise ValueError(f"Ulysses needs heads ({h}) divisible by the context-parallel size {n}")
    rows = x.permute(1, 0, 2, 3).reshape(h, b * t * d)  # head groups are row blocks
    got = all_to_all(rows, [h // n] * n, [h // n] * n, group)  # (n · h/n, …), by source rank
    return got.view(n, h // n, b, t, d).permute(2, 1, 0, 3, 4).reshape(b, h // n, n * t, d)


def _heads_to_seq(x: torch.Tensor, group) -> torch.Tensor:
    """(b, h/N, t, d) -> (b, h, t/N, d), the inverse all_to_all."""
    n = dist.get_world_size(group)
    b, hn, t, d = x.shape
    rows = x.view(b, hn, n, t // n, d).permute(2, 1, 0, 3, 4).reshape(n * hn, -1)
    got = all_to_all(rows, [hn] * n, [hn] * n, group)  # (n · h/n, b·t/N·d): head groups by rank
    return got.view(n * hn, b, t // n, d).permute(1, 0, 2, 3)


def ulysses_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      group=None) -> torch.Tensor:
    """Causal DeepSpeed-Ulysses attention. q, k, v: (batch, heads, seq / N, d) -> same shape."""
    q, k, v = (_seq_to_heads(t, group) for t in (q, k, v))
    return _heads_to_seq(fast_causal_attention(q, k, v), group)
