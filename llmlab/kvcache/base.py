"""The KV-cache protocol every cache of this package implements, and the checks they share.

The seam itself lives with the model (:mod:`llmlab.nn.context`): a forward takes a
:class:`~llmlab.nn.StepContext` (positions, mask, cache, which columns need logits) that the
cache's ``prepare(...)`` builds, and the cache's owner calls ``commit(ctx)`` after the forward.
During the forward each attention layer calls ``ctx.cache.observe_queries(layer_idx, q)`` and
``ctx.cache.update(layer_idx, *new)`` (:class:`KVCache`), handing over its new per-token tensors
with the sequence on dim 1 — GQA caches ``k, v: (batch, t, n_kv_head, d_head)`` after RoPE, MLA
the latent ``c_kv: (batch, t, d_c)`` and the decoupled RoPE key ``k_rope: (batch, t, d_rope)`` —
and gets back the full ``(batch, T, ...)`` tensors to attend to. Caches hold nothing
model-specific, so one protocol serves MHA, GQA, MQA and MLA.

Row caches (contiguous, evicting, quantized) implement :class:`DecodeCache`:
``prepare(input_ids)`` and ``commit(ctx)``, so :func:`llmlab.model.generate` decodes through any
of them. The paged cache's rows are scheduled sequences: its ``prepare(seq_ids, tokens=...)``
names them. Taught in chapter 08 (solutions/08_kvcache).
"""

from __future__ import annotations

from llmlab.model.cache import check_update
from llmlab.nn.attention import padded_causal_mask
from llmlab.nn.context import DecodeCache, KVCache, StepContext, step_positions

__all__ = ["DecodeCache", "KVCache", "StepContext", "check_update", "padded_causal_mask",
           "step_positions"]
