"""The contiguous KV cache: one pre-allocated ``(batch, capacity, ...)`` buffer per cached tensor.

Decoding token ``t`` needs the keys and values of tokens ``0..t``. They never change once computed
(causal attention: a token's K and V depend only on the tokens before it), so computing them once
and appending is exact — the cache turns each decode step from O(t) token computations into one.
This is the cache of Hugging Face ``transformers`` (``DynamicCache``/``StaticCache``) and of most
research code. Its weakness, measured in chapter 08: every row reserves room for the longest
sequence, so a batch of mixed lengths wastes memory — the problem paging solves
(:mod:`llmlab.kvcache.paged`).

Rows of a batch may be left-padded prompts of different lengths: ``key_valid`` marks the real
tokens of the prompt and :meth:`attn_mask` hides the padding. It lives beside the model because
:func:`llmlab.model.generate` decodes through it by default; chapter 08's other caches
(:mod:`llmlab.kvcache`) share its checks. Taught in chapter 08 (solutions/08_kvcache).
"""

from __future__ import annotations

import torch


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


def padded_causal_mask(key_valid: torch.Tensor, t_new: int) -> torch.Tensor:
    """Causal mask with the queries at the last ``t_new`` keys, minus invalid (padding) keys.

    key_valid: (batch, T) bool -> (batch, 1, t_new, T) bool. A query that would see no key (a
    padding query) is allowed to see every key instead, so softmax never sees an all-masked row;
    its output is never used.
    """
    batch, T = key_valid.shape
    if t_new > T:
        raise ValueError(f"t_new={t_new} queries but only T={T} keys")
    q_pos = torch.arange(T - t_new, T, device=key_valid.device)[:, None]  # (t_new, 1)
    k_pos = torch.arange(T, device=key_valid.device)[None, :]  # (1, T)
    mask = (k_pos <= q_pos)[None] & key_valid[:, None, :]  # (batch, t_new, T)
    empty = ~mask.any(-1, keepdim=True)
    return (mask | empty)[:, None]


class NoCache:
    """Stores nothing: the uncached forward of a left-padded batch, through the same protocol.

    ``update`` returns its tensors unchanged and ``attn_mask`` hides the padding keys, so the
    uncached baseline runs the very same model code as the cached runs it is compared with.
    key_valid: (batch, T) bool, False at padding.
    """

    def __init__(self, key_valid: torch.Tensor) -> None:
        self.key_valid = key_valid
        self.offset = 0

    def update(self, layer_idx: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tensors

    def attn_mask(self, t_new: int) -> torch.Tensor:
        return padded_causal_mask(self.key_valid, t_new)


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
        self._len = [0] * n_layer  # tokens stored per layer
        self._last_len = 0  # T returned by the latest update (what attn_mask masks)

    @property
    def offset(self) -> int:
        """Tokens cached before the current forward (layers update in order, so the minimum)."""
        return min(self._len)

    def update(self, layer_idx: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Append ``(batch, t_new, ...)`` tensors to a layer; return them ``(batch, T, ...)``."""
        bufs = self._buffers[layer_idx] if 0 <= layer_idx < self.n_layer else None
        check_update(self.n_layer, layer_idx, tensors,
                     None if bufs is None else tuple(b.shape[2:] for b in bufs))
        if bufs is not None and bufs[0].shape[0] != tensors[0].shape[0]:
            raise ValueError(f"cache holds batch {bufs[0].shape[0]}, got {tensors[0].shape[0]}")
        length, t_new = self._len[layer_idx], tensors[0].shape[1]
        if bufs is None or length + t_new > bufs[0].shape[1]:
            bufs = self._grow(bufs, length, max(self.capacity, 2 * (length + t_new)), tensors)
            self._buffers[layer_idx] = bufs
        self._len[layer_idx] = self._last_len = length + t_new
        return tuple(append_kv(b, length, t) for b, t in zip(bufs, tensors))

    def truncate(self, length: int) -> None:
        """Forget every token from position ``length`` on (speculative decoding rolls back the
        keys and values of rejected draft tokens; chapter 09)."""
        if not 0 <= length <= self.offset:
            raise ValueError(f"can truncate to 0..{self.offset} tokens, got {length}")
        self._len = [length] * self.n_layer

    @staticmethod
    def _grow(bufs: list[torch.Tensor] | None, length: int, capacity: int,
              like: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        new = [t.new_zeros((t.shape[0], capacity, *t.shape[2:])) for t in like]
        if bufs is not None:
            for dst, src in zip(new, bufs):
                dst[:, :length] = src[:, :length]
        return new

    def attn_mask(self, t_new: int) -> torch.Tensor | None:
        """None (plain causal) without padding, else (batch, 1, t_new, T) hiding the padding.

        Asked right after a layer's :meth:`update`, as the model's attention does; ``T`` is the
        length that update returned.
        """
        if self.key_valid is None:
            return None
        T = self._last_len
        valid = self.key_valid
        if T > valid.shape[1]:  # tokens after the prompt are all real
            valid = torch.cat([valid, valid.new_ones(valid.shape[0], T - valid.shape[1])], 1)
        return padded_causal_mask(valid[:, :T], t_new)

    def nbytes(self) -> int:
        """Bytes held in the cache buffers (reserved, not only used)."""
        return sum(b.numel() * b.element_size() for bufs in self._buffers if bufs for b in bufs)

    def used_bytes(self) -> int:
        """Bytes of the cached tokens themselves."""
        return sum(b[:, :n].numel() * b.element_size()
                   for bufs, n in zip(self._buffers, self._len) if bufs for b in bufs)
