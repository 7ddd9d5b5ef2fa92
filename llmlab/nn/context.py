"""The model↔cache seam: a per-step context, and the KV-cache protocol the attention layers call.

One forward of the model is one *step*: a training batch, a packed batch of documents, a prompt's
prefill, one decode token per row against a KV cache. What the attention layers must know about
that step travels in one explicit object, :class:`StepContext`:

- ``positions`` (batch, t): the position of each input token (its RoPE angle or learned row);
- ``mask`` (batch | 1, 1, t, T) bool, True = may attend — a complete mask, causality included —
  or None for plain causal attention with the queries at the last t of the T keys;
- ``cache``: a :class:`KVCache` the layers store their new keys and values in, or None;
- ``logits_at`` (batch,): the one column per row whose logits are wanted (a server samples only
  each row's last token; ``transformers``' ``logits_to_keep``), or None for every column.

A cache builds the context of its next step (``ctx = cache.prepare(...)``: positions past what it
holds, the mask of its padding or block tables), the model runs ``model(ids, ctx)``, and the
cache's owner then commits it (``cache.commit(ctx)``): nothing is implied by call order or by the
last layer's update. Without a cache a context is built by hand (:meth:`StepContext.causal`,
a document mask for packed sequences, a sliding-window mask). Taught in chapter 02
(solutions/02_gpt); the caches in chapter 08 (solutions/08_kvcache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


def step_positions(batch: int, t: int, device: torch.device | str | None = None,
                   start: int = 0) -> torch.Tensor:
    """(batch, t) positions ``start .. start + t - 1`` of every row (a view, no copy)."""
    return torch.arange(start, start + t, device=device).expand(batch, t)


@runtime_checkable
class KVCache(Protocol):
    """Everything an attention layer calls on ``ctx.cache`` during a forward.

    Per layer, attention computes its new per-token tensors with the sequence on dim 1 — GQA
    caches ``k, v: (batch, t, n_kv_head, d_head)`` after RoPE, MLA the latent ``c_kv`` and the
    RoPE key — and calls, in this order:

    - ``observe_queries(layer_idx, q)`` with ``q: (batch, t, n_head, d_head)`` after RoPE (caches
      that evict by attention, H2O, read them; the others ignore them);
    - ``update(layer_idx, *new)``, which stores the new tensors and returns the full ones
      ``(batch, T, ...)`` the step attends to, past and new, in the same order.
    """

    def observe_queries(self, layer_idx: int, q: torch.Tensor) -> None: ...

    def update(self, layer_idx: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]: ...


@runtime_checkable
class DecodeCache(KVCache, Protocol):
    """A KV cache whose rows are whole sequences, as :func:`llmlab.model.generate` decodes through:
    the model-facing :class:`KVCache` plus its owner's half of the step.

    - ``prepare(input_ids (batch, t)) -> StepContext``: the context of a forward over the next
      ``t`` tokens of every row (positions after what the cache holds, its mask, itself as
      ``ctx.cache``);
    - ``commit(ctx)``: after the forward, make the step's tokens part of the cache.
    """

    def prepare(self, input_ids: torch.Tensor) -> StepContext: ...

    def commit(self, ctx: StepContext) -> None: ...


@dataclass
class StepContext:
    """What one forward needs besides the token ids (see the module docstring for the shapes)."""

    positions: torch.Tensor
    mask: torch.Tensor | None = None
    cache: KVCache | None = None
    logits_at: torch.Tensor | None = None

    @property
    def is_causal(self) -> bool:
        """True when attention is plain causal (no explicit mask)."""
        return self.mask is None

    @classmethod
    def causal(cls, batch: int, t: int, device: torch.device | str | None = None,
               start: int = 0) -> StepContext:
        """Plain causal attention over ``t`` tokens at positions ``start .. start + t - 1``."""
        return cls(step_positions(batch, t, device, start))

    def check(self, batch: int, t: int) -> None:
        """Raise ``ValueError`` unless the context fits ``batch`` rows of ``t`` input tokens."""
        if self.positions.shape != (batch, t):
            raise ValueError(f"the step's positions must be (batch, t) = ({batch}, {t}), got "
                             f"{tuple(self.positions.shape)}")
        if self.mask is not None and (self.mask.dim() != 4 or self.mask.shape[2] != t
                                      or self.mask.shape[0] not in (1, batch)):
            raise ValueError(f"the step's mask must be (batch or 1, 1, {t}, T), got "
                             f"{tuple(self.mask.shape)}")
        if self.logits_at is not None and self.logits_at.shape != (batch,):
            raise ValueError(f"logits_at must be ({batch},), one column per row, got "
                             f"{tuple(self.logits_at.shape)}")
