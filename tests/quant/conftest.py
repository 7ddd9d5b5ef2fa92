"""Fixtures of the quantization tests: the book's model (plain and with injected outliers),
calibration and evaluation tokens, and a tiny random model."""

from __future__ import annotations

import copy

import pytest
import torch

from llmlab.model import load_book_model
from llmlab.model.config import GPTConfig
from llmlab.model.gpt import GPT
from llmlab.quant import calibration_batch, corpus_tokens, inject_outliers


@pytest.fixture(scope="session")
def book():
    torch.set_num_threads(1)
    model, tok = load_book_model()
    return model, tok


@pytest.fixture(scope="session")
def calib(book):
    return calibration_batch(book[1], n_seq=8, seq_len=128, seed=0)


@pytest.fixture(scope="session")
def eval_ids(book):
    return torch.from_numpy(corpus_tokens(book[1], "val", 2 * 256)).view(2, 256)


@pytest.fixture(scope="session")
def outlier_book(book):
    model = copy.deepcopy(book[0])
    inject_outliers(model, n_channels=2, factor=30.0)
    return model


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig.llama_style(vocab_size=101, n_layer=2, n_head=4, n_kv_head=2, d_model=64,
                                block_size=64)
    return GPT(cfg).eval()
