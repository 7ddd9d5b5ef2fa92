"""KV eviction under a token budget: StreamingLLM (sinks + window) and H2O (heavy hitters).

- StreamingLLM, "Efficient Streaming Language Models with Attention Sinks" (Xiao et al.,
  arXiv 2309.17453): keep the first ``n_sink`` tokens — softmax dumps attention on them, and
  dropping them breaks the model — plus the last ``window`` tokens.
- H2O, "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models"
  (Zhang et al., arXiv 2306.14048): per KV head, keep the last ``n_recent`` tokens plus the
  ``n_heavy`` older tokens that have received the most attention so far (accumulated softmax
  mass). It needs the queries: the attention layer hands them over through ``observe_queries``.

Between forwards a cache holds at most its budget; within a forward the new tokens attend to the
kept past and to each other, and the cache evicts when the step is committed. Kept keys keep the
RoPE rotation of their original position — StreamingLLM re-numbers positions inside the cache
to run past the training length; within it (all the book measures) original positions are the
exact choice.
Taught in chapter 08 (solutions/08_kvcache).
"""

from __future__ import annotations

import math

import torch

from llmlab.kvcache.base import StepContext, check_update, step_positions


class EvictingKVCache:
    """Stores each layer's tensors by concatenation and trims them with :meth:`select` on commit."""

    def __init__(self, n_layer: int) -> None:
        self.n_layer = n_layer
        self._kept: list[tuple[torch.Tensor, ...] | None] = [None] * n_layer  # (batch, kept, ...)
        self._full: list[tuple[torch.Tensor, ...] | None] = [None] * n_layer  # kept + the step's
        self.seen = 0  # tokens ever committed: the next token's position
        self._step: StepContext | None = None

    @property
    def offset(self) -> int:
        """Tokens seen (not kept) before the next step: its first token's position."""
        return self.seen

    def prepare(self, input_ids: torch.Tensor) -> StepContext:
        """Positions continue from every token seen; every kept token precedes the new ones, so
        attention is plain causal (no mask)."""
        batch, t = input_ids.shape
        self._step = StepContext(step_positions(batch, t, input_ids.device, self.seen), None, self)
        self._full = [None] * self.n_layer
        return self._step

    def observe_queries(self, layer_idx: int, q: torch.Tensor) -> None:
        """Only caches that score keys by attention (H2O) need the queries."""

    def update(self, layer_idx: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kept = self._kept[layer_idx] if 0 <= layer_idx < self.n_layer else None
        check_update(self.n_layer, layer_idx, tensors,
                     None if kept is None else tuple(k.shape[2:] for k in kept))
        full = tensors if kept is None else tuple(torch.cat(p, 1) for p in zip(kept, tensors))
        self._full[layer_idx] = full
        return full

    def commit(self, ctx: StepContext) -> None:
        """Evict: every layer keeps what :meth:`select` chooses of its past and new tokens."""
        if ctx is not self._step:
            raise ValueError("commit the context the latest prepare() returned")
        missing = [i for i, f in enumerate(self._full) if f is None]
        if missing:
            raise ValueError(f"layers {missing} did not store the step's tokens: run the model "
                             "with this context before committing it")
        for layer_idx, full in enumerate(self._full):
            self._kept[layer_idx] = self.select(layer_idx, full)
        self.seen += ctx.positions.shape[1]
        self._full, self._step = [None] * self.n_layer, None

    def select(self, layer_idx: int, full: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def kept_tokens(self, layer_idx: int = 0) -> int:
        kept = self._kept[layer_idx]
        return 0 if kept is None else kept[0].shape[1]


class SinkWindowCache(EvictingKVCache):
    """StreamingLLM: keep ``n_sink`` first tokens and the last ``window`` tokens."""

    def __init__(self, n_layer: int, n_sink: int = 4, window: int = 64) -> None:
        if n_sink < 0 or window < 1:
            raise ValueError(f"need n_sink >= 0 and window >= 1, got {n_sink}, {window}")
        super().__init__(n_layer)
        self.n_sink, self.window = n_sink, window

    def select(self, layer_idx: int, full: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if full[0].shape[1] <= self.n_sink + self.window:
            return full
        return tuple(torch.cat([t[:, :self.n_sink], t[:, -self.window:]], 1) for t in full)


class HeavyHitterCache(EvictingKVCache):
    """H2O: per KV head keep the ``n_recent`` last tokens and ``n_heavy`` top-scored older ones.

    Works on GQA caches ``k, v: (batch, T, n_kv_head, d_head)``; the score of a key is the
    attention its KV head's query group has paid it, summed over all queries so far.
    """

    def __init__(self, n_layer: int, n_heavy: int = 32, n_recent: int = 32) -> None:
        if n_heavy < 0 or n_recent < 1:
            raise ValueError(f"need n_heavy >= 0 and n_recent >= 1, got {n_heavy}, {n_recent}")
        super().__init__(n_layer)
        self.n_heavy, self.n_recent = n_heavy, n_recent
        self._q: list[torch.Tensor | None] = [None] * n_layer
        self._score: list[torch.Tensor | None] = [None] * n_layer  # (batch, n_kv_head, kept)

    def observe_queries(self, layer_idx: int, q: torch.Tensor) -> None:
        """q: (batch, t_new, n_head, d_head), the queries about to attend (after RoPE)."""
        self._q[layer_idx] = q

    def select(self, layer_idx: int, full: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        k = full[0]
        q = self._q[layer_idx]
        if q is None or k.dim() != 4:
            raise ValueError("HeavyHitterCache needs GQA tensors (batch, T, n_kv_head, d_head) "
                             "and the queries (the attention layer hands them to observe_queries)")
        score = self._accumulate(layer_idx, q, k)  # (batch, n_kv, T)
        T = k.shape[1]
        if T <= self.n_heavy + self.n_recent:
            self._score[layer_idx] = score
            return full
        old = T - self.n_recent
        heavy = score[..., :old].topk(self.n_heavy, -1).indices  # (batch, n_kv, n_heavy)
        recent = torch.arange(old, T, device=k.device).expand(*heavy.shape[:2], -1)
        keep = torch.cat([heavy.sort(-1).values, recent], -1)  # (batch, n_kv, budget)
        self._score[layer_idx] = score.gather(-1, keep)
        idx = keep.transpose(1, 2)  # (batch, budget, n_kv)
        return tuple(t.gather(1, idx[..., None].expand(-1, -1, -1, t.shape[-1])) for t in full)

    def _accumulate(self, layer_idx: int, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Past scores (zero for the new keys) plus the attention the new queries pay each key."""
        b, t, n_head, d = q.shape
        n_kv, T = k.shape[2], k.shape[1]
        qg = q.view(b, t, n_kv, n_head // n_kv, d)
        logits = torch.einsum("btgrd,bsgd->bgrts", qg.float(), k.float()) / math.sqrt(d)
        q_pos = torch.arange(T - t, T, device=k.device)[:, None]
        causal = torch.arange(T, device=k.device)[None] <= q_pos  # (t, T)
        probs = logits.masked_fill(~causal, float("-inf")).softmax(-1)
        new = probs.sum((2, 3))  # (batch, n_kv, T)
        past = self._score[layer_idx]
        if past is not None:
            new[..., :past.shape[-1]] += past
        return new
