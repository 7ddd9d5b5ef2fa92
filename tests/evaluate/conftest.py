"""A tiny random Llama-style model and a small BPE tokenizer trained here, for fast tests."""

from __future__ import annotations

import pytest
import torch

from llmlab.model import GPT, GPTConfig
from llmlab.tokenizer import Tokenizer, train_bpe

TEXT = ("def add(a, b):\n    return a + b\n\nclass Point:\n    x = 0\n    y = 1\n\n"
        "import os\nprint(os.path.join('a', 'b'))\n# a comment about the code\n") * 4


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    vocab, merges = train_bpe([TEXT], 300, ["<|endoftext|>"], num_workers=1)
    return Tokenizer(vocab, merges, ["<|endoftext|>"])


@pytest.fixture(scope="session")
def model(tokenizer) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig.llama_style(vocab_size=tokenizer.vocab_size, block_size=32, d_model=32,
                                n_layer=2, n_head=4, n_kv_head=2, d_ff=64, tie_embeddings=True)
    return GPT(cfg).eval()
