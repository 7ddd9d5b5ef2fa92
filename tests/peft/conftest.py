"""Fixtures of the PEFT tests: tiny random llmlab models (Llama-style GQA, GPT-2-style)."""

from __future__ import annotations

import pytest
import torch

from llmlab.model.config import GPTConfig
from llmlab.model.gpt import GPT

VOCAB = 97


def tiny_model(style: str = "llama", seed: int = 0, **overrides) -> GPT:
    """A 2-layer random model: "llama" (RoPE, 4 query / 2 KV heads, SwiGLU) or "gpt2" (MHA, GELU)."""
    torch.manual_seed(seed)
    base = dict(vocab_size=VOCAB, n_layer=2, n_head=4, d_model=32, block_size=64)
    if style == "llama":
        cfg = GPTConfig.llama_style(**{**base, "n_kv_head": 2, "d_ff": 48, **overrides})
    else:
        cfg = GPTConfig.gpt2_style(**{**base, **overrides})
    return GPT(cfg).eval()


def ids(batch: int = 2, seq: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def randomize(model: torch.nn.Module, seed: int = 3, std: float = 0.2) -> None:
    """Give every trainable tensor random values (adapters start as no-ops; tests need them not to)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(params=["llama", "gpt2"])
def model(request) -> GPT:
    return tiny_model(request.param)
