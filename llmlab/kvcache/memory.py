"""How much memory a KV cache takes: per token, per request, per batch; and what layouts waste.

Bytes = batch × context × n_layer × (numbers per token and layer) × bytes per number, where a
token and layer hold ``2 · n_kv_head · d_head`` numbers for MHA/GQA/MQA and ``d_c + d_rope`` for
MLA. The per-token part is chapter 03's :class:`llmlab.attention.KVSpec` (with its published real
configs, ``REAL_CONFIGS``); this module builds a spec from a model config and adds batch, context
and the waste of contiguous pre-allocation vs paging ("Efficient Memory Management for Large
Language Model Serving with PagedAttention", arXiv 2309.06180, §3: reserved and internally
fragmented slots). Taught in chapter 08 (solutions/08_kvcache); used by chapter 09.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llmlab.attention.kv_bytes import KVSpec
from llmlab.kvcache.blocks import blocks_for


def _get(cfg: Any, *names: str) -> Any:
    for name in names:
        value = cfg.get(name) if isinstance(cfg, dict) else getattr(cfg, name, None)
        if value is not None:
            return value
    return None


def kv_spec(config: Any, name: str = "model", bytes_per_number: int = 2) -> KVSpec:
    """A :class:`KVSpec` from an ``llmlab`` ``GPTConfig`` or a Hugging Face config (object/dict).

    Reads GPT-2 names (``n_layer``, ``n_head``, ``n_embd``), Llama names
    (``num_hidden_layers``, ``num_key_value_heads``, ``head_dim``) and DeepSeek MLA names
    (``kv_lora_rank``, ``qk_rope_head_dim``).
    """
    if isinstance(config, KVSpec):
        return config
    n_layer = _get(config, "n_layer", "num_hidden_layers")
    n_head = _get(config, "n_head", "num_attention_heads")
    d_model = _get(config, "d_model", "n_embd", "hidden_size")
    if n_layer is None or n_head is None:
        raise ValueError(f"cannot read n_layer/n_head from {type(config).__name__}")
    if _get(config, "attention") == "mla" or _get(config, "kv_lora_rank") is not None:
        from llmlab.attention.mla import MLAConfig

        if _get(config, "attention") == "mla":
            mla = MLAConfig.from_config(config)
            rank, rope = mla.kv_lora_rank, mla.qk_rope_head_dim
        else:
            rank, rope = _get(config, "kv_lora_rank"), _get(config, "qk_rope_head_dim")
        return KVSpec(name, "mla", n_layer=n_layer, n_head=n_head, kv_lora_rank=rank,
                      rope_dim=rope, bytes_per_number=bytes_per_number)
    n_kv = _get(config, "n_kv_head", "num_key_value_heads") or n_head
    d_head = _get(config, "d_head", "head_dim") or d_model // n_head
    kind = "mha" if n_kv == n_head else "mqa" if n_kv == 1 else "gqa"
    return KVSpec(name, kind, n_layer=n_layer, n_head=n_head, n_kv_head=n_kv, d_head=d_head,
                  window=_get(config, "sliding_window"), bytes_per_number=bytes_per_number)


def kv_cache_bytes(config: Any, batch: int, context: int,
                   bytes_per_number: float | None = None) -> int:
    """KV-cache bytes for ``batch`` sequences of ``context`` tokens (a config or a KVSpec).

    ``bytes_per_number`` overrides the spec's (2 for bf16, 1 for int8, 0.5 for int4).
    """
    if batch < 0 or context < 0:
        raise ValueError(f"batch and context must be >= 0, got {batch}, {context}")
    spec = kv_spec(config)
    per_number = spec.bytes_per_number if bytes_per_number is None else bytes_per_number
    numbers = spec.n_layer * spec.numbers_per_token_per_layer()
    return int(batch * spec.cached_tokens(context) * numbers * per_number)


@dataclass(frozen=True)
class LayoutWaste:
    """Token slots used and reserved by a set of sequences under two layouts."""

    used: int  # tokens actually stored
    contiguous: int  # slots reserved when every sequence pre-allocates max_len
    paged: int  # slots reserved in blocks of block_size

    @property
    def contiguous_waste(self) -> float:
        return 1 - self.used / self.contiguous if self.contiguous else 0.0

    @property
    def paged_waste(self) -> float:
        return 1 - self.used / self.paged if self.paged else 0.0


def layout_waste(lengths: Sequence[int], max_len: int, block_size: int) -> LayoutWaste:
    """Slots for sequences of ``lengths`` tokens: contiguous reserves ``max_len`` each (the
    length a request *may* reach), paging reserves whole blocks of what they hold."""
    if any(n > max_len for n in lengths):
        raise ValueError(f"a length exceeds max_len={max_len}: {max(lengths)}")
    return LayoutWaste(used=sum(lengths), contiguous=len(lengths) * max_len,
                       paged=sum(blocks_for(n, block_size) for n in lengths) * block_size)


def mixed_lengths(n: int, max_len: int = 2048, seed: int = 0) -> list[int]:
    """Lengths (prompt + output tokens) of ``n`` requests of a mixed serving workload.

    Prompts and outputs are log-normal (medians ~150 tokens each, long tails: mostly short chats,
    some long documents), capped at ``max_len``; seeded, so every run sees the same workload.
    """
    rng = random.Random(seed)
    return [max(1, min(max_len, int(rng.lognormvariate(5.0, 1.0)) +
                       int(rng.lognormvariate(5.0, 0.8)))) for _ in range(n)]
