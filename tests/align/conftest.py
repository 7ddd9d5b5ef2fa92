"""Shared fixtures for llmlab.align tests: the book model and tokenizer, tiny random HF models."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def book():
    from llmlab.model import load_book_model

    return load_book_model()


@pytest.fixture(scope="session")
def hf_tok(book):
    import transformers

    from llmlab.tokenizer import to_hf

    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=to_hf(book[1]), eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="session")
def hf_model(hf_tok):
    """A tiny random Llama, offline."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(hf_tok), hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    return transformers.LlamaForCausalLM(cfg)
