"""The shipped book model: loads in one call, has the promised architecture and size, and its
card's validation loss reproduces from the files in the repository."""

import json

import pytest
import torch

from llmlab.model import BOOK_MODEL_DIR, load_book_model

SUMMARY = BOOK_MODEL_DIR / "summary.json"


@pytest.fixture(scope="module")
def book():
    return load_book_model()


def test_architecture_size_and_files(book):
    model, tok = book
    c = model.config
    assert (c.position, c.norm, c.mlp, c.attention) == ("rope", "rmsnorm", "swiglu", "gqa")
    assert 1 < c.n_kv_head < c.n_head  # real grouped KV heads for chapters 03 and 08
    assert tok.vocab_size == c.vocab_size
    total = sum(p.stat().st_size for p in BOOK_MODEL_DIR.iterdir())
    assert total <= 20 * 2**20
    for name in ("MODEL_CARD.md", "train_log.jsonl", "config.json", "tokenizer.json"):
        assert (BOOK_MODEL_DIR / name).exists()


def test_card_numbers_are_consistent(book):
    s = json.loads(SUMMARY.read_text())
    model, _ = book
    assert s["params"] == model.num_params()
    assert s["val_loss"] < s["unigram_val_loss"] - 1.5  # far below the unigram baseline
    card = (BOOK_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"{s['val_loss']:.3f}" in card and s["command"] in card
    assert s["command"] == "llmlab pretrain --preset book"


@pytest.mark.slow
def test_val_loss_reproduces_from_the_shipped_weights(book, tmp_path):
    """Re-tokenize the validation split with the shipped tokenizer and re-evaluate."""
    from llmlab.data import load_documents, write_tokens
    from llmlab.train import evaluate_loss

    s = json.loads(SUMMARY.read_text())
    model, tok = book
    docs = load_documents(split="val")
    eot = tok.special_ids["<|endoftext|>"]
    val = write_tokens((d.text for d in docs), tok.encode, tmp_path / "val.bin", tok.vocab_size,
                       eot, progress=False)
    assert len(val) == s["data"]["val"]["tokens"]
    batches = s["val_eval_tokens"] // (s["train_config"]["batch_size"] * model.config.block_size)
    loss = evaluate_loss(model, val, s["train_config"]["batch_size"], model.config.block_size,
                         batches, "fp32")
    assert loss == pytest.approx(s["val_loss"], abs=2e-3)


def test_samples_look_like_python(book):
    model, tok = book
    from llmlab.model import generate

    prompt = "def read(self, path"
    out = generate(model, torch.tensor([tok.encode(prompt)]), max_new_tokens=30)
    text = tok.decode(out[0].tolist())[len(prompt):]
    assert "):\n" in text and '"""' in text  # closes the signature, opens a docstring
