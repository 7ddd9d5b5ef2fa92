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

from llmlab.model.cache import NoCache, check_update, padded_causal_mask

__all__ = ["KVCache", "NoCache", "check_update", "padded_causal_mask"]


@runtime_checkable
class KVCache(Protocol):
    """What the attention layers of :class:`llmlab.model.GPT` call (see the module docstring)."""

    @property
    def offset(self) -> int: ...

    def update(self, layer_idx: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]: ...

    def attn_mask(self, t_new: int) -> torch.Tensor | None: ...
