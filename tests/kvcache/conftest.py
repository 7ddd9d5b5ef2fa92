"""Fixtures of the KV-cache tests: tiny random models (GQA Llama, MHA GPT-2) and prompts."""

from __future__ import annotations

import pytest
import torch

from llmlab.attention import LAYER_KINDS
from llmlab.model.config import GPTConfig
from llmlab.model.gpt import GPT

VOCAB = 101


def tiny_model(style: str, seed: int = 0, **overrides) -> GPT:
    """A 2-layer random model: "llama" (RoPE, GQA 4 query / 2 KV heads) or "gpt2" (MHA)."""
    torch.manual_seed(seed)
    base = dict(vocab_size=VOCAB, n_layer=2, n_head=4, d_model=64, block_size=160)
    if style == "llama":
        cfg = GPTConfig.llama_style(**{**base, "n_kv_head": 2, **overrides})
    else:
        cfg = GPTConfig.gpt2_style(**{**base, **overrides})
    return GPT(cfg, kinds=LAYER_KINDS).eval()  # MLA available too


def ragged(lengths=(9, 3, 14, 6), seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


def left_pad(prompts: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ids (batch, T) left-padded with ``pad``, attention_mask (batch, T) 1 = real."""
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


@pytest.fixture(params=["llama", "gpt2"])
def model(request) -> GPT:
    return tiny_model(request.param)


@pytest.fixture
def make_model():
    return tiny_model


@pytest.fixture
def ragged_prompts() -> list[list[int]]:
    return ragged()


@pytest.fixture
def pad_left():
    return left_pad


@pytest.fixture
def vocab() -> int:
    return VOCAB
