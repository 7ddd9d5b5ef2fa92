"""CacheBlend: reuse the KV cache of retrieved chunks that are *not* a prefix, and repair it.

Yao et al., "CacheBlend: Fast Large Language Model Serving for RAG with Cached Knowledge
Fusion", arXiv:2405.16444 (EuroSys 2025). A prefix cache (chapter 08/09) reuses a chunk's keys
and values only when everything before it is the same; in RAG the same chunk comes after
different chunks in different prompts. Computing each chunk's KV *alone* (positions from 0) and
concatenating them is cheap but wrong twice: the keys carry the wrong RoPE positions, and no
chunk token attended to the chunks before it. CacheBlend fixes the first exactly (rotate each
stored key by its chunk's offset: RoPE rotations compose, ``R(p + Δ) = R(Δ) R(p)``) and the
second approximately: it recomputes a small fraction of tokens — those whose values deviate
most from the reused ones ("high-KV-deviation" tokens) — in every layer, and reuses the rest.

Here: layer 0 is recomputed for every token (its input is the embeddings, so this is cheap and
gives the true input of layer 1); at layer 1 the ``recompute_ratio`` of chunk tokens whose
value vectors differ most from the cached ones are selected, and layers 1.. recompute only
those (and the query). The paper refines the selection layer by layer; one selection keeps the
code short. ``recompute_ratio=1`` is exactly a full prefill; ``0`` is plain concatenation.
Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from llmlab.nn.context import StepContext, step_positions


class _Capture:
    """A KV cache (:class:`~llmlab.nn.KVCache`) that keeps each layer's (k, v) of one plain
    causal forward."""

    def __init__(self) -> None:
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def observe_queries(self, layer_idx: int, q: torch.Tensor) -> None:
        pass

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.kv[layer_idx] = (k, v)
        return k, v


@dataclass
class ChunkKV:
    """One chunk's tokens and per-layer keys (after RoPE at positions 0..n-1) and values,
    each (1, n, n_kv_head, d_head)."""

    ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


@torch.no_grad()
def precompute_chunk(model: nn.Module, ids: Sequence[int]) -> ChunkKV:
    """Prefill one chunk alone (positions 0..n-1) and keep its KV: what a cache would store."""
    if not ids:
        raise ValueError("a chunk needs at least one token")
    device = next(model.parameters()).device
    capture = _Capture()
    model(torch.tensor([list(ids)], device=device),
          StepContext(step_positions(1, len(ids), device), cache=capture))
    n_layer = model.config.n_layer
    return ChunkKV(list(ids), [capture.kv[i][0] for i in range(n_layer)],
                   [capture.kv[i][1] for i in range(n_layer)])


class _BlendContext:
    """The KV cache of a blended forward: each layer's full keys and values (reused), with the
    rows being computed written in; ``step(positions)`` is the forward's context, whose mask lets
    queries see keys at positions <= their own."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self.keys, self.values = keys, values
        self.rows = torch.zeros(0, dtype=torch.long)
        self.mask: torch.Tensor | None = None

    def select(self, rows: torch.Tensor) -> None:
        """Compute ``rows`` (indices into the full sequence, ascending) from now on."""
        n = self.keys[0].shape[1]
        self.rows = rows
        self.mask = (torch.arange(n, device=rows.device)[None, :] <= rows[:, None])[None, None]

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        keys, values = self.keys[layer_idx].clone(), self.values[layer_idx].clone()
        keys[:, self.rows], values[:, self.rows] = k, v
        self.keys[layer_idx], self.values[layer_idx] = keys, values
        return keys, values

    def observe_queries(self, layer_idx: int, q: torch.Tensor) -> None:
        pass

    def step(self, positions: torch.Tensor) -> StepContext:
        return StepContext(positions, mask=self.mask, cache=self)


def _shifted_keys(model: nn.Module, chunks: Sequence[ChunkKV], layer: int) -> torch.Tensor:
    """Layer ``layer``'s keys of every chunk, each rotated to its place in the concatenation."""
    out, offset = [], 0
    for c in chunks:
        k = c.keys[layer]
        if model.rope is not None and offset:
            pos = torch.full(k.shape[:2], offset, device=k.device)
            cos, sin = model.rope(pos)
            k = model.rope.rotate(k, cos, sin)
        out.append(k)
        offset += len(c.ids)
    return torch.cat(out, 1)


@dataclass
class BlendResult:
    """Logits at the query tokens (1, t_query, vocab) and the share of chunk tokens recomputed
    per layer after layer 0."""

    logits: torch.Tensor
    recomputed: float


@torch.no_grad()
def blend_forward(model: nn.Module, chunks: Sequence[ChunkKV], query: Sequence[int],
                  recompute_ratio: float = 0.15) -> BlendResult:
    """Prefill ``chunks`` (reused KV) + ``query`` (computed) with CacheBlend's repair."""
    if not 0.0 <= recompute_ratio <= 1.0:
        raise ValueError(f"recompute_ratio must be in [0, 1], got {recompute_ratio}")
    if not chunks or not query:
        raise ValueError("need at least one chunk and one query token")
    device = next(model.parameters()).device
    ids = torch.tensor([[t for c in chunks for t in c.ids] + list(query)], device=device)
    n_ctx, total = sum(len(c.ids) for c in chunks), ids.shape[1]
    if total > model.config.block_size:
        raise ValueError(f"{total} tokens exceed the model's context of {model.config.block_size}")
    zeros = torch.zeros_like(chunks[0].keys[0][:, :1]).expand(-1, len(query), -1, -1)
    ctx = _BlendContext(
        [torch.cat([_shifted_keys(model, chunks, i), zeros], 1) for i in range(model.config.n_layer)],
        [torch.cat([*(c.values[i] for c in chunks), zeros], 1) for i in range(model.config.n_layer)])
    positions = torch.arange(total, device=device)
    query_rows = torch.arange(n_ctx, total, device=device)
    x_all = model.tok_emb(ids)  # (1, total, d_model)
    if model.pos_emb is not None:
        x_all = x_all + model.pos_emb(positions[None])
    blocks = list(model.blocks)
    if recompute_ratio == 0.0:  # plain reuse: only the query is computed, in every layer
        rows, start = query_rows, 0
    else:  # layer 0 on every token, then pick the tokens whose layer-1 values moved most
        ctx.select(positions)
        x_all = blocks[0](x_all, ctx.step(positions[None]), 0)
        start = 1
        if len(blocks) > 1:
            attn = blocks[1].attn
            v_new = attn.v_proj(blocks[1].norm1(x_all[:, :n_ctx]))  # (1, n_ctx, kv * d_head)
            deviation = (v_new - ctx.values[1][:, :n_ctx].flatten(2)).norm(dim=-1)[0]
            k = round(recompute_ratio * n_ctx)
            picked = torch.topk(deviation, k).indices.sort().values if k else query_rows[:0]
            rows = torch.cat([picked, query_rows])
        else:
            rows = positions
    x = x_all[:, rows]
    ctx.select(rows)
    for i in range(start, len(blocks)):
        x = blocks[i](x, ctx.step(positions[rows][None]), i)
    logits = model.lm_head(model.norm_f(x[:, -len(query):]))
    recomputed = (len(rows) - len(query)) / n_ctx
    return BlendResult(logits, recomputed)


__all__ = ["BlendResult", "ChunkKV", "blend_forward", "precompute_chunk"]
