"""The contiguous KV cache: one pre-allocated ``(batch, capacity, ...)`` buffer per cached tensor.

Decoding token ``t`` needs the keys and values of tokens ``0..t``. They never change once computed
(causal attention: a token's K and V depend only on the tokens before it), so computing them once
and appending is exact — the cache turns each decode step from O(t) token computations into one.
This is the cache of Hugging Face ``transformers`` (``DynamicCache``/``StaticCache``) and of most
research code. Its weakness, measured in chapter 08: every row reserves room for the longest
sequence, so a batch of mixed lengths wastes memory — the problem paging solves
(:mod:`llmlab.kvcache.paged`).

One step is explicit (:mod:`llmlab.nn.context`): ``ctx = cache.prepare(ids)`` builds the step's
positions and mask, ``model(ids, ctx)`` makes every layer append its new keys and values after
the committed ones, and ``cache.commit(ctx)`` makes them part of the cache — a step that is not
committed leaves the cache as it was. Rows of a batch may be left-padded prompts of different
lengths: ``key_valid`` marks the real tokens of the prompt; positions then count real tokens only
and the mask hides the padding. It lives beside the model because :func:`llmlab.model.generate`
decodes through it by default; chapter 08's other caches (:mod:`llmlab.kvcache`) share its
checks. Taught in chapter 08 (solutions/08_kvcache).
"""

from __future__ import annotations

import torch

from llmlab.nn.attention import padded_causal_mask
from llmlab.nn.context import StepContext, step_positions


def check_update(n_layer: int, layer_idx: int, tensors: tuple[torch.Tensor, ...],
                 expected: tuple[torch.Size, ...] | None = None) -> None:
    """Raise ``ValueError`` for a layer index out of range or tensors that do not fit together.

    Every tensor must be ``(batch, t_new, ...)`` with the same batch and ``t_new``; ``expected``
    holds the per-token shapes (``shape[2:]``) this layer stored before, which must not change.
    """
    if not 0 <= layer_idx < n_layer:
        raise ValueError(f"layer_idx must be in [0, {n_layer}), got {layer_idx}")
    if not tensors:
        raise ValueError("update needs at least one tensor, e.g. update(layer_idx, k, v)")
    for t in tensors:
        if t.dim() < 2:
            raise ValueError(f"cached tensors are (batch, t_new, ...), got shape {tuple(t.shape)}")
        if t.shape[:2] != tensors[0].shape[:2]:
            raise ValueError("all tensors of one update need the same (batch, t_new); got "
                             f"{[tuple(x.shape) for x in tensors]}")
    if expected is not None:
        got = tuple(t.shape[2:] for t in tensors)
        if got != expected:
            raise ValueError(f"layer {layer_idx} stores per-token shapes "
                             f"{list(map(tuple, expected))}, got {list(map(tuple, got))}")


def append_kv(buffer: torch.Tensor, length: int, new: torch.Tensor) -> torch.Tensor:
    """Write ``new`` after the first ``length`` tokens of ``buffer`` and return the filled part.

    buffer: (batch, capacity, ...), new: (batch, t_new, ...) -> (batch, length + t_new, ...), a view
    of ``buffer`` (no copy of the past). Raises ``ValueError`` when the buffer is too small.
    """
    t_new = new.shape[1]
    if length + t_new > buffer.shape[1]:
        raise ValueError(f"buffer holds {buffer.shape[1]} tokens, cannot append {t_new} "
                         f"after {length}")
    buffer[:, length:length + t_new] = new
    return buffer[:, :length + t_new]


class ContiguousKVCache:
    """Per-layer contiguous cache, growing by doubling (amortised O(1) copy per token).

    n_layer: number of attention layers; capacity: tokens to reserve up front (the buffer grows
    when exceeded); key_valid: optional (batch, T_prompt) bool, False at left-padding positions.
    ``length`` tokens are committed; ``prepare`` / ``commit`` bracket one forward.
    """

    def __init__(self, n_layer: int, capacity: int = 64,
                 key_valid: torch.Tensor | None = None) -> None:
        if n_layer < 1 or capacity < 1:
            raise ValueError(f"need n_layer >= 1 and capacity >= 1, got {n_layer}, {capacity}")
        if key_valid is not None and (key_valid.dim() != 2 or key_valid.dtype != torch.bool):
            raise ValueError("key_valid must be a (batch, T) bool tensor, got "
                             f"{key_valid.dtype} {tuple(key_valid.shape)}")
        self.n_layer, self.capacity = n_layer, capacity
        self.key_valid = key_valid  # (batch, T_prompt) bool, or None when no row is padded
        self._buffers: list[list[torch.Tensor] | None] = [None] * n_layer
        self.length = 0  # committed tokens (every layer holds them)
        self._step: StepContext | None = None  # the prepared, not yet committed step
        self._stored: list[int] = [0] * n_layer  # new tokens each layer stored in that step

    @property
    def offset(self) -> int:
        """Tokens committed before the next step (the position of its first token)."""
        return self.length

    # ----------------------------------------------------------------- one step
    def prepare(self, input_ids: torch.Tensor) -> StepContext:
        """The context of a forward over ``input_ids`` (batch, t) after the committed tokens.

        Positions continue from ``length`` (counting real tokens only when rows are padded), and
        the mask hides the padding (None, plain causal, without padding).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"prepare expects (batch, t) token ids, got {tuple(input_ids.shape)}")
        (batch, t), device, start = input_ids.shape, input_ids.device, self.length
        if self.key_valid is None:
            ctx = StepContext(step_positions(batch, t, device, start), None, self)
        else:
            if self.key_valid.shape[0] != batch:
                raise ValueError(f"key_valid has {self.key_valid.shape[0]} rows, the step {batch}")
            valid = self.key_valid.to(device)
            if start + t > valid.shape[1]:  # tokens after the prompt are all real
                valid = torch.cat([valid, valid.new_ones(batch, start + t - valid.shape[1])], 1)
            valid = valid[:, :start + t]  # (batch, T)
            positions = (valid.long().cumsum(-1) - 1).clamp(min=0)[:, start:]
            ctx = StepContext(positions, padded_causal_mask(valid, t), self)
        self._step, self._stored = ctx, [0] * self.n_layer
        return ctx

    def observe_queries(self, layer_idx: int, q: torch.Tensor) -> None:
        """Not needed: this cache keeps every token."""

    def update(self, layer_idx: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Write ``(batch, t, ...)`` tensors after the committed tokens; return ``(batch, T, ...)``."""
        bufs = self._buffers[layer_idx] if 0 <= layer_idx < self.n_layer else None
        check_update(self.n_layer, layer_idx, tensors,
                     None if bufs is None else tuple(b.shape[2:] for b in bufs))
        if bufs is not None and bufs[0].shape[0] != tensors[0].shape[0]:
            raise ValueError(f"cache holds batch {bufs[0].shape[0]}, got {tensors[0].shape[0]}")
        length, t_new = self.length, tensors[0].shape[1]
        if bufs is None or length + t_new > bufs[0].shape[1]:
            bufs = self._grow(bufs, length, max(self.capacity, 2 * (length + t_new)), tensors)
            self._buffers[layer_idx] = bufs
        self._stored[layer_idx] = t_new
        return tuple(append_kv(b, length, t) for b, t in zip(bufs, tensors))

    def commit(self, ctx: StepContext) -> None:
        """Make the step's tokens part of the cache (every layer must have stored them)."""
        if ctx is not self._step:
            raise ValueError("commit the context the latest prepare() returned")
        t = ctx.positions.shape[1]
        missing = [i for i, n in enumerate(self._stored) if n != t]
        if missing:
            raise ValueError(f"layers {missing} did not store the step's {t} tokens: run the "
                             "model with this context before committing it")
        self.length += t
        self._step = None

    # ----------------------------------------------------------------- outside a step
    def truncate(self, length: int) -> None:
        """Forget every token from position ``length`` on (speculative decoding rolls back the
        keys and values of rejected draft tokens; chapter 09)."""
        if not 0 <= length <= self.length:
            raise ValueError(f"can truncate to 0..{self.length} tokens, got {length}")
        self.length, self._step = length, None

    @staticmethod
    def _grow(bufs: list[torch.Tensor] | None, length: int, capacity: int,
              like: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        new = [t.new_zeros((t.shape[0], capacity, *t.shape[2:])) for t in like]
        if bufs is not None:
            for dst, src in zip(new, bufs):
                dst[:, :length] = src[:, :length]
        return new

    def nbytes(self) -> int:
        """Bytes held in the cache buffers (reserved, not only used)."""
        return sum(b.numel() * b.element_size() for bufs in self._buffers if bufs for b in bufs)

    def used_bytes(self) -> int:
        """Bytes of the cached tokens themselves."""
        return sum(b[:, :self.length].numel() * b.element_size()
                   for bufs in self._buffers if bufs for b in bufs)

    def tensors(self, layer_idx: int) -> tuple[torch.Tensor, ...]:
        """The committed ``(batch, length, ...)`` tensors of one layer (views, no copy)."""
        bufs = self._buffers[layer_idx] or []
        return tuple(b[:, :self.length] for b in bufs)
