"""Boolean attention masks (True = the query may attend to the key).

Every mask here is aligned *bottom-right*: with ``seq_q`` queries and ``seq_k`` keys, query ``i``
sits at absolute position ``i + (seq_k - seq_q)``, as it does when the last ``seq_q`` tokens are
decoded against a cache of ``seq_k`` tokens. Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import torch

from llmlab.nn.attention import causal_mask  # the same bottom-right alignment

__all__ = ["block_layout_to_mask", "causal_mask", "sliding_window_mask", "window_visible"]


def _positions(seq_q: int, seq_k: int, device: torch.device | None) -> tuple[torch.Tensor, ...]:
    if seq_q > seq_k:
        raise ValueError(f"a causal mask needs seq_q <= seq_k, got seq_q={seq_q}, seq_k={seq_k}")
    q_pos = torch.arange(seq_k - seq_q, seq_k, device=device)[:, None]  # (seq_q, 1)
    k_pos = torch.arange(seq_k, device=device)[None, :]  # (1, seq_k)
    return q_pos, k_pos


def sliding_window_mask(seq_q: int, seq_k: int, window: int, n_sink: int = 0,
                        device: torch.device | None = None) -> torch.Tensor:
    """Sliding-window causal mask with optional attention sinks, ``(seq_q, seq_k)`` bool.

    Query at position p sees key j when ``p - window < j <= p`` (the last ``window`` tokens,
    itself included; Mistral 7B, arXiv 2310.06825) or when ``j < n_sink`` and ``j <= p`` (the
    first tokens kept as attention sinks; StreamingLLM, "Efficient Streaming Language Models with
    Attention Sinks", arXiv 2309.17453).
    """
    q_pos, k_pos = _positions(seq_q, seq_k, device)
    return window_visible(q_pos, k_pos, window, n_sink)


def window_visible(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int,
                   n_sink: int = 0) -> torch.Tensor:
    """Which keys a query sees under sliding window + sinks, from absolute positions.

    q_pos: (seq_q, 1) and k_pos: (1, seq_k) long (or anything broadcasting) -> bool.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if n_sink < 0:
        raise ValueError(f"n_sink must be >= 0, got {n_sink}")
    causal = k_pos <= q_pos
    in_window = k_pos > q_pos - window
    is_sink = k_pos < n_sink
    return causal & (in_window | is_sink)


def block_layout_to_mask(layout: torch.Tensor, block_size: int, seq_q: int, seq_k: int,
                         causal: bool = True) -> torch.Tensor:
    """Expand a block layout ``(..., n_q_blocks, n_k_blocks)`` bool to a token mask.

    Returns ``(..., seq_q, seq_k)``: token (i, j) is visible when its block pair is on in the
    layout (and ``j`` is not in the future of ``i`` when ``causal``). Queries and keys are both
    blocked from position 0, so a layout is meant for self-attention (``seq_q == seq_k``).
    """
    n_qb, n_kb = -(-seq_q // block_size), -(-seq_k // block_size)
    if layout.shape[-2:] != (n_qb, n_kb):
        raise ValueError(f"layout must end in ({n_qb}, {n_kb}) blocks for seq_q={seq_q}, "
                         f"seq_k={seq_k}, block_size={block_size}; got {tuple(layout.shape)}")
    mask = layout.repeat_interleave(block_size, -2).repeat_interleave(block_size, -1)
    mask = mask[..., :seq_q, :seq_k]
    if causal:
        mask = mask & causal_mask(seq_q, seq_k, device=layout.device)
    return mask
