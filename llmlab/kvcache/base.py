"""The KV-cache protocol the model's attention calls, and the checks every cache shares.

Per layer, attention computes its new per-token tensors with the sequence on dim 1 — GQA caches
``k, v: (batch, t_new, n_kv_head, d_head)`` (after RoPE), MLA caches the latent
``c_kv: (batch, t_new, d_c)`` and the decoupled RoPE key ``k_rope: (batch, t_new, d_rope)`` — and
hands them to the cache:

- ``cache.update(layer_idx, *tensors_new)`` returns the full tensors ``(batch, T, ...)`` (past and
  new, same order);
- ``cache.attn_mask(t_new)`` returns a bool mask ``(batch, 1, t_new, T)`` (True = may attend), or
  None meaning plain causal attention with the queries at the last ``t_new`` positions;
- ``cache.offset`` is the number of tokens seen before this forward (the position of the first new
  token when the model is not given explicit ``positions``).

Caches hold nothing model-specific, so one protocol serves MHA, GQA, MQA and MLA: a cache stores
whatever tensors it is given. Taught in chapter 08 (solutions/08_kvcache).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class KVCache(Protocol):
    """What the attention layers of :class:`llmlab.model.GPT` call (see the module docstring)."""

    @property
    def offset(self) -> int: ...

    def update(self, layer_idx: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]: ...

    def attn_mask(self, t_new: int) -> torch.Tensor | None: ...


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
