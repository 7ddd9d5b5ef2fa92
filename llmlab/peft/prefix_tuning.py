"""Prefix tuning and P-tuning v2: learned keys and values in front of every layer's attention.

- Li & Liang, "Prefix-Tuning: Optimizing Continuous Prompts for Generation", arXiv:2101.00190:
  every layer attends to P extra positions whose keys and values are trained (the model is
  frozen). Training them directly is unstable, so the paper reparameterises them through an MLP
  (``projection_dim``), dropped after training.
- Liu et al., "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning Universally Across
  Scales and Tasks", arXiv:2110.07602: the same deep prompts without the MLP (the default here).

The prefix reaches the model through the KV cache (chapter 08, :mod:`llmlab.nn.context`): a
``ContiguousKVCache`` is pre-filled with the learned (post-RoPE) keys and values of every layer
and committed, so the model runs unchanged, its positions start at P, and decoding continues in
the same cache.
This is also how ``peft`` feeds prefixes (as ``past_key_values``). Taught in chapter 05
(solutions/05_peft).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.model import ContiguousKVCache, SamplingParams, decode_loop
from llmlab.model.generate import cached_step, sampling_params
from llmlab.nn.context import StepContext, step_positions
from llmlab.peft.inject import freeze


class _Recorder:
    """A KV cache that stores nothing and records what each layer hands it (a model's real keys
    and values)."""

    def __init__(self) -> None:
        self.kv: dict[int, tuple[torch.Tensor, ...]] = {}

    def observe_queries(self, layer_idx: int, q: torch.Tensor) -> None:
        """Not needed."""

    def update(self, layer_idx: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.kv[layer_idx] = tensors
        return tensors


def prefill_cache(prefix: torch.Tensor, batch: int, capacity: int = 64) -> ContiguousKVCache:
    """A ContiguousKVCache holding ``prefix`` for every row of a batch.

    prefix: (n_layer, 2, P, n_kv_head, d_head) keys and values -> cache with offset P
    (gradients flow from the cache back to ``prefix``).
    """
    if prefix.dim() != 5 or prefix.shape[1] != 2:
        raise ValueError("prefix must be (n_layer, 2, P, n_kv_head, d_head), got "
                         f"{tuple(prefix.shape)}")
    cache = ContiguousKVCache(prefix.shape[0], capacity=max(capacity, prefix.shape[2]))
    ctx = cache.prepare(torch.zeros(batch, prefix.shape[2], dtype=torch.long, device=prefix.device))
    for layer, (k, v) in enumerate(prefix):  # the step a forward over the prefix would store
        cache.update(layer, k.expand(batch, *k.shape), v.expand(batch, *v.shape))
    cache.commit(ctx)
    return cache


class PrefixTuning(nn.Module):
    """A frozen llmlab ``GPT`` (GQA attention) with ``n_virtual`` learned keys/values per layer.

    forward(idx: (batch, seq)) -> logits (batch, seq, vocab). ``projection_dim`` > 0 trains the
    prefix through Li & Liang's MLP reparameterisation (``peft``'s ``prefix_projection``);
    ``init_ids`` start the prefix from the keys/values the model computes for real tokens.
    """

    def __init__(self, model: nn.Module, n_virtual: int = 8, projection_dim: int = 0,
                 init_ids: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        c = model.config
        if c.attention != "gqa":
            raise ValueError(f"prefix tuning needs GQA/MHA attention, got {c.attention!r}")
        if n_virtual < 1:
            raise ValueError(f"n_virtual must be >= 1, got {n_virtual}")
        freeze(model)
        self.model, self.n_virtual = model, n_virtual
        self.shape = (c.n_layer, 2, n_virtual, c.n_kv_head, c.d_head)
        if projection_dim:
            self.embedding = nn.Embedding(n_virtual, c.d_model)
            self.mlp = nn.Sequential(nn.Linear(c.d_model, projection_dim), nn.Tanh(),
                                     nn.Linear(projection_dim, torch.Size(self.shape).numel()
                                               // n_virtual))
            return
        if init_ids is None:
            init_ids = torch.randint(0, c.vocab_size, (n_virtual,), generator=generator)
        self.prefix = nn.Parameter(self.kv_of(init_ids))

    @torch.no_grad()
    def kv_of(self, ids: torch.Tensor) -> torch.Tensor:
        """The model's own keys/values for ``ids`` (P,): (n_layer, 2, P, n_kv_head, d_head)."""
        rec, ids = _Recorder(), ids[None].to(next(self.model.parameters()).device)
        self.model(ids, StepContext(step_positions(1, ids.shape[1], ids.device), cache=rec))
        return torch.stack([torch.stack([k[0], v[0]]) for k, v in
                            (rec.kv[i] for i in range(self.shape[0]))])

    def prefix_kv(self) -> torch.Tensor:
        """(n_layer, 2, P, n_kv_head, d_head): the learned keys and values."""
        if hasattr(self, "prefix"):
            return self.prefix
        flat = self.mlp(self.embedding.weight)  # (P, n_layer * 2 * n_kv_head * d_head)
        L, _, P, H, D = self.shape
        return flat.view(P, L, 2, H, D).permute(1, 2, 0, 3, 4)

    def make_cache(self, batch: int, capacity: int = 64) -> ContiguousKVCache:
        """A cache pre-filled with the prefix; the model continues from position P."""
        return prefill_cache(self.prefix_kv(), batch, capacity + self.n_virtual)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        cache = self.make_cache(idx.shape[0], idx.shape[1])
        return self.model(idx, cache.prepare(idx))  # never committed: the prefix stays alone

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self(idx).flatten(0, 1).float(), targets.flatten(),
                                           ignore_index=-100)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, params: SamplingParams | None = None,
                 **sampling) -> torch.Tensor:
        """:func:`llmlab.model.generate` (its parameters) with the prefix in the cache.
        (batch, T) -> (batch, T + n)."""
        params = sampling_params(params, sampling)
        cache = self.make_cache(idx.shape[0], idx.shape[1] + params.max_new_tokens)
        first = cached_step(self.model, cache, idx)
        new = decode_loop(first, lambda tok: cached_step(self.model, cache, tok[:, None]), params)
        return torch.cat([idx, new], 1)
