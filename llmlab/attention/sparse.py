"""Block-sparse attention: a layout says which (query block, key block) pairs are computed.

Fixed sparsity patterns — local bands plus a few global blocks — come from "Generating Long
Sequences with Sparse Transformers" (Child et al., arXiv 1904.10509), Longformer
(arXiv 2004.05150) and BigBird (arXiv 2007.14062). The reference expands the layout to a token
mask over the full score matrix; :func:`block_sparse_attention` gathers only the active key
blocks of each query block, so the cost is proportional to the number of active blocks.
Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import torch

from llmlab.attention.masks import block_layout_to_mask
from llmlab.attention.naive import check_qkv, naive_attention


def local_global_layout(n_blocks: int, n_local: int = 2, n_global: int = 1,
                        device: torch.device | None = None) -> torch.Tensor:
    """Causal layout (n_blocks, n_blocks) bool: each query block sees its ``n_local`` most recent
    key blocks (itself included) and the first ``n_global`` blocks."""
    if n_local < 1:
        raise ValueError(f"n_local must be >= 1 (a block must see itself), got {n_local}")
    i = torch.arange(n_blocks, device=device)[:, None]
    j = torch.arange(n_blocks, device=device)[None, :]
    return (j <= i) & ((i - j < n_local) | (j < n_global))


def _check_layout(layout: torch.Tensor, n_blocks: int) -> torch.Tensor:
    if layout.dtype != torch.bool or layout.dim() not in (2, 3) or \
            layout.shape[-2:] != (n_blocks, n_blocks):
        raise ValueError(f"layout must be bool (heads?, {n_blocks}, {n_blocks}); got "
                         f"{layout.dtype} {tuple(layout.shape)}")
    if not layout.diagonal(dim1=-2, dim2=-1).all():
        raise ValueError("every query block must see its own key block (layout diagonal)")
    return layout if layout.dim() == 3 else layout[None]


def block_sparse_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           layout: torch.Tensor, block_size: int) -> torch.Tensor:
    """Full scores masked by the layout (and causality). q, k, v: (batch, heads, seq, d);
    layout: (heads or 1, n_blocks, n_blocks) or (n_blocks, n_blocks) bool."""
    seq = q.shape[-2]
    layout = _check_layout(layout, -(-seq // block_size))
    return naive_attention(q, k, v, mask=block_layout_to_mask(layout, block_size, seq, seq))


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           layout: torch.Tensor, block_size: int) -> torch.Tensor:
    """Causal block-sparse self-attention computing only active blocks.

    q, k, v: (batch, heads, seq, d) -> (batch, heads, seq, d_v). For query block ``i`` the key
    blocks active for any head are gathered; heads that do not use one of them mask it out.
    """
    check_qkv(q, k, v, same_heads=True)
    seq = q.shape[-2]
    layout = _check_layout(layout, -(-seq // block_size)).to(q.device)  # (heads|1, nb, nb)
    outs = []
    for i in range(layout.shape[-1]):
        qs, qe = i * block_size, min((i + 1) * block_size, seq)
        blocks = layout[:, i].any(0).nonzero().flatten()  # key blocks some head needs
        keys = (blocks[:, None] * block_size + torch.arange(block_size, device=q.device))
        keys = keys.flatten()
        keys = keys[keys < seq]
        head_mask = layout[:, i, keys // block_size]  # (heads|1, n_keys)
        causal = keys[None, :] <= torch.arange(qs, qe, device=q.device)[:, None]
        mask = head_mask[None, :, None, :] & causal  # (1, heads|1, block, n_keys)
        outs.append(naive_attention(q[..., qs:qe, :], k[..., keys, :], v[..., keys, :], mask=mask))
    return torch.cat(outs, dim=-2)
