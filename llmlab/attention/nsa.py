"""Native Sparse Attention (NSA), a readable reference of its three branches and their gates.

"Native Sparse Attention: Hardware-Aligned and Natively Trainable Sparse Attention"
(Yuan et al., DeepSeek, arXiv 2502.11089). Each query attends through three branches, each with
its own keys and values, and mixes them with learned sigmoid gates (eq. 5):

1. **compression** — blocks of ``block_len`` keys taken every ``stride`` tokens are compressed by
   a learned map ``phi`` (here: add an intra-block position embedding, then a linear map) into
   one key and one value each (eq. 7); a query sees the blocks that end at or before it;
2. **selection** — the compression branch's attention probabilities score the selection blocks
   of ``select_block`` tokens (eq. 9, summed over the heads of a GQA group, eq. 10); each query
   keeps the ``n_select`` best blocks — always the first block and its ``n_local`` most recent
   ones — and attends to their tokens in full (eq. 11-12);
3. **sliding window** — the last ``window`` tokens.

This reference builds per-token masks over the full score matrix to stay readable; the paper's
kernel gathers the selected blocks instead (what
:func:`~llmlab.attention.sparse.block_sparse_attention` does for a fixed layout).
No KV cache. Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.attention.gqa import repeat_kv
from llmlab.attention.masks import sliding_window_mask
from llmlab.attention.naive import naive_attention
from llmlab.nn.context import StepContext, step_positions
from llmlab.nn.linear import Linear
from llmlab.nn.rope import RotaryEmbedding


class NativeSparseAttention(nn.Module):
    """NSA layer. forward(x: (batch, seq, d_model), positions: (batch, seq) | None)
    -> (batch, seq, d_model). The paper's sizes are block_len=32, stride=16, select_block=64,
    n_select=16, window=512; the defaults here are small so the mechanics show on short inputs.
    """

    def __init__(self, d_model: int, n_head: int, n_kv_head: int | None = None,
                 d_head: int | None = None, block_len: int = 8, stride: int = 4,
                 select_block: int = 8, n_select: int = 4, n_local: int = 2, window: int = 16,
                 rope: RotaryEmbedding | None = None) -> None:
        super().__init__()
        n_kv_head = n_kv_head or n_head
        if n_head % n_kv_head:
            raise ValueError(f"n_head ({n_head}) must be a multiple of n_kv_head ({n_kv_head})")
        if min(block_len, stride, select_block, n_select, window) < 1 or stride > block_len:
            raise ValueError("need block_len >= stride >= 1 and positive select_block, "
                             "n_select, window")
        self.n_head, self.n_kv_head = n_head, n_kv_head
        self.d_head = d_head = d_head or d_model // n_head
        self.block_len, self.stride, self.select_block = block_len, stride, select_block
        self.n_select, self.n_local, self.window = n_select, n_local, window
        self.q_proj = Linear(d_model, n_head * d_head, bias=False)
        self.kv_proj = Linear(d_model, 3 * 2 * n_kv_head * d_head, bias=False)  # per branch K, V
        self.cmp_pos = nn.Parameter(torch.zeros(block_len, d_head))  # intra-block position
        self.cmp_k = Linear(block_len * d_head, d_head)  # phi for keys
        self.cmp_v = Linear(block_len * d_head, d_head)  # phi for values
        self.gate = Linear(d_model, 3 * n_head)  # g^cmp, g^slc, g^win per head
        self.o_proj = Linear(n_head * d_head, d_model, bias=False)
        self.rope = rope

    def compress(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """k, v: (b, n_kv, seq, d) -> compressed k, v (b, n_kv, n_cmp, d) and each block's
        last position (n_cmp,)."""
        seq = k.shape[-2]
        n_cmp = (seq - self.block_len) // self.stride + 1 if seq >= self.block_len else 0
        starts = torch.arange(n_cmp, device=k.device) * self.stride
        idx = starts[:, None] + torch.arange(self.block_len, device=k.device)  # (n_cmp, l)
        k_cmp = self.cmp_k((k[:, :, idx] + self.cmp_pos).flatten(-2))  # (b, n_kv, n_cmp, d)
        v_cmp = self.cmp_v((v[:, :, idx] + self.cmp_pos).flatten(-2))
        return k_cmp, v_cmp, starts + self.block_len - 1

    def compressed_branch(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (b, h, seq, d), k/v: (b, n_kv, seq, d) -> output (b, h, seq, d) and the
        probabilities over compressed blocks (b, h, seq, n_cmp)."""
        k_cmp, v_cmp, ends = self.compress(k, v)
        rep = self.n_head // self.n_kv_head
        visible = ends[None, :] <= torch.arange(q.shape[-2], device=q.device)[:, None]
        return naive_attention(q, repeat_kv(k_cmp, rep), repeat_kv(v_cmp, rep), mask=visible,
                               return_probs=True)

    def select_blocks(self, p_cmp: torch.Tensor, seq: int) -> torch.Tensor:
        """Block choice per query and KV group: p_cmp (b, h, seq, n_cmp) -> (b, n_kv, seq,
        n_sel) bool, the ``n_select`` best causal blocks incl. the first and the local ones."""
        dev, l_sel = p_cmp.device, self.select_block
        n_sel = -(-seq // l_sel)
        cmp_start = torch.arange(p_cmp.shape[-1], device=dev) * self.stride
        sel_start = torch.arange(n_sel, device=dev) * l_sel
        overlap = (cmp_start[:, None] < sel_start[None, :] + l_sel) & \
                  (cmp_start[:, None] + self.block_len > sel_start[None, :])  # (n_cmp, n_sel)
        score = p_cmp @ overlap.to(p_cmp.dtype)  # eq. 9: (b, h, seq, n_sel)
        b, h = score.shape[:2]
        score = score.view(b, self.n_kv_head, h // self.n_kv_head, seq, n_sel).sum(2)  # eq. 10
        q_block = torch.arange(seq, device=dev)[:, None] // l_sel
        recent = q_block - torch.arange(n_sel, device=dev)[None, :]  # (seq, n_sel)
        forced = (torch.arange(n_sel, device=dev) == 0)[None, :] | ((recent >= 0) &
                                                                    (recent < self.n_local))
        causal = recent >= 0
        score = score.masked_fill(forced, float("inf")).masked_fill(~causal, float("-inf"))
        top = score.topk(min(self.n_select, n_sel), dim=-1).indices
        chosen = torch.zeros_like(score, dtype=torch.bool).scatter(-1, top, True)
        return chosen & causal

    def selected_branch(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        p_cmp: torch.Tensor) -> torch.Tensor:
        """Full attention to the tokens of each query's selected blocks -> (b, h, seq, d)."""
        seq, rep = q.shape[-2], self.n_head // self.n_kv_head
        chosen = self.select_blocks(p_cmp.detach(), seq)  # (b, n_kv, seq, n_sel)
        mask = chosen.repeat_interleave(self.select_block, -1)[..., :seq]  # (b, n_kv, seq, seq)
        mask = repeat_kv(mask, rep)
        return naive_attention(q, repeat_kv(k, rep), repeat_kv(v, rep), mask=mask, causal=True)

    def window_branch(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Sliding-window attention -> (b, h, seq, d)."""
        rep, seq = self.n_head // self.n_kv_head, q.shape[-2]
        mask = sliding_window_mask(seq, seq, self.window, device=q.device)
        return naive_attention(q, repeat_kv(k, rep), repeat_kv(v, rep), mask=mask)

    def forward(self, x: torch.Tensor, ctx: StepContext | None = None,
                layer_idx: int = 0) -> torch.Tensor:
        if ctx is not None and (ctx.cache is not None or ctx.mask is not None):
            raise ValueError("the NSA reference has no KV-cache or mask path; give it at most "
                             "positions (StepContext(positions))")
        if x.dim() != 3:
            raise ValueError(f"NSA expects x (batch, seq, d_model), got {tuple(x.shape)}")
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_head, self.d_head)
        kv = self.kv_proj(x).view(b, s, 6, self.n_kv_head, self.d_head)
        if self.rope is not None:
            positions = step_positions(b, s, x.device) if ctx is None else ctx.positions
            cos, sin = self.rope(positions)
            q = self.rope.rotate(q, cos, sin)
            k_rot = [self.rope.rotate(kv[:, :, i], cos, sin) for i in (0, 2, 4)]
            kv = torch.stack([k_rot[0], kv[:, :, 1], k_rot[1], kv[:, :, 3], k_rot[2],
                              kv[:, :, 5]], dim=2)
        q = q.transpose(1, 2)  # (b, h, s, d)
        k_cmp, v_cmp, k_slc, v_slc, k_win, v_win = kv.permute(2, 0, 3, 1, 4)  # each (b, n_kv, s, d)
        o_cmp, p_cmp = self.compressed_branch(q, k_cmp, v_cmp)
        o_slc = self.selected_branch(q, k_slc, v_slc, p_cmp)
        o_win = self.window_branch(q, k_win, v_win)
        g = torch.sigmoid(self.gate(x)).view(b, s, self.n_head, 3).transpose(1, 2)  # (b,h,s,3)
        o = g[..., 0:1] * o_cmp + g[..., 1:2] * o_slc + g[..., 2:3] * o_win
        return self.o_proj(o.transpose(1, 2).reshape(b, s, self.n_head * self.d_head))
