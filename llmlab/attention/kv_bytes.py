"""KV-cache bytes per token for each attention variant, on the configs of real models.

Per token and layer a cache holds ``2 * n_kv_head * d_head`` numbers for MHA/GQA/MQA (a key and
a value per KV head) and ``kv_lora_rank + qk_rope_head_dim`` for MLA (the latent and the shared
RoPE key); sliding-window layers never hold more than ``window`` tokens. The general cache-size
calculator of chapter 08 (:mod:`llmlab.kvcache`) can build on :meth:`KVSpec.bytes_per_token`.
Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmlab.utils import reject_unknown_keys

KINDS = ("mha", "gqa", "mqa", "mla")


@reject_unknown_keys
@dataclass(frozen=True)
class KVSpec:
    """What one model caches. ``kind`` in ``KINDS``; MLA uses ``kv_lora_rank``/``rope_dim``."""

    name: str
    kind: str
    n_layer: int
    n_head: int
    n_kv_head: int = 0  # MHA/GQA/MQA
    d_head: int = 0  # MHA/GQA/MQA
    kv_lora_rank: int = 0  # MLA: d_c
    rope_dim: int = 0  # MLA: d_h^R
    window: int | None = None  # sliding-window layers cache at most this many tokens
    bytes_per_number: int = 2  # bf16
    source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {KINDS}")
        needed = ("kv_lora_rank", "rope_dim") if self.kind == "mla" else ("n_kv_head", "d_head")
        for name in ("n_layer", "n_head", *needed):
            if getattr(self, name) <= 0:
                raise ValueError(f"{self.kind} KVSpec {self.name!r} needs {name} > 0")

    @classmethod
    def from_dict(cls, d: dict) -> KVSpec:
        """Build from a dict, rejecting unknown keys by name."""
        return cls(**d)

    def numbers_per_token_per_layer(self) -> int:
        if self.kind == "mla":
            return self.kv_lora_rank + self.rope_dim
        return 2 * self.n_kv_head * self.d_head

    def bytes_per_token(self) -> int:
        """Bytes the cache grows by per token, all layers."""
        return self.n_layer * self.numbers_per_token_per_layer() * self.bytes_per_number

    def cached_tokens(self, seq_len: int) -> int:
        """Tokens actually held after ``seq_len`` tokens (capped by a sliding window)."""
        return seq_len if self.window is None else min(seq_len, self.window)


HF = "https://huggingface.co/{}/blob/main/config.json"

# Numbers copied from each model's config.json (the source field); caches in bf16.
REAL_CONFIGS: dict[str, KVSpec] = {
    "Llama 3 8B": KVSpec("Llama 3 8B", "gqa", n_layer=32, n_head=32, n_kv_head=8, d_head=128,
                         source=HF.format("meta-llama/Meta-Llama-3-8B")),
    "Mistral 7B": KVSpec("Mistral 7B", "gqa", n_layer=32, n_head=32, n_kv_head=8, d_head=128,
                         window=4096, source=HF.format("mistralai/Mistral-7B-v0.1")),
    "DeepSeek-V3": KVSpec("DeepSeek-V3", "mla", n_layer=61, n_head=128, kv_lora_rank=512,
                          rope_dim=64, source=HF.format("deepseek-ai/DeepSeek-V3")),
}


def variants_of(spec: KVSpec, d_head: int | None = None) -> dict[str, KVSpec]:
    """The same model re-imagined with each variant (same layers, heads, head size, window).

    For an MLA model ``d_head`` (the key size per head for MHA, e.g. 128 + 64 for DeepSeek-V3's
    ``qk_nope_head_dim + qk_rope_head_dim``) must be given.
    """
    d = d_head or spec.d_head
    if not d:
        raise ValueError(f"{spec.name}: give d_head to compare an MLA model with MHA/GQA/MQA")
    base = dict(name=spec.name, n_layer=spec.n_layer, n_head=spec.n_head, d_head=d,
                window=spec.window, bytes_per_number=spec.bytes_per_number)
    out = {"MHA": KVSpec(kind="mha", n_kv_head=spec.n_head, **base),
           "MQA": KVSpec(kind="mqa", n_kv_head=1, **base)}
    if spec.kind == "gqa":
        out["GQA"] = spec
    if spec.kind == "mla":
        out["MLA"] = spec
    return out
