"""Parity: identical ids to tiktoken, HF tokenizers and transformers' GPT-2 files (offline)."""

from __future__ import annotations

import pytest

from llmlab.tokenizer import GPT2_PATTERN
from llmlab.tokenizer.interop import (
    from_hf,
    from_tiktoken,
    load_gpt2_files,
    save_gpt2_files,
    to_hf,
    to_tiktoken,
)
from tests.tokenizer.conftest import DIVERSE, EOT

pytestmark = pytest.mark.parity


def texts(corpus: list[str]) -> list[str]:
    return [*DIVERSE, *corpus]


def test_tiktoken_same_ids(trained, corpus):
    pytest.importorskip("tiktoken")
    enc = to_tiktoken(trained)
    for text in texts(corpus):
        assert enc.encode(text, allowed_special="all") == trained.encode(text)
        assert enc.decode(trained.encode(text)) == text


def test_from_tiktoken_recovers_merges(trained, corpus):
    pytest.importorskip("tiktoken")
    back = from_tiktoken(to_tiktoken(trained))
    assert back.merges == trained.merges and back.vocab == trained.vocab
    assert back.special_ids == trained.special_ids and back.pattern == trained.pattern


def test_hf_same_ids(trained, corpus):
    pytest.importorskip("tokenizers")
    hf = to_hf(trained)
    for text in texts(corpus):
        assert hf.encode(text).ids == trained.encode(text)
        assert hf.decode(trained.encode(text), skip_special_tokens=False) == text
    back = from_hf(hf)
    assert back.vocab == trained.vocab and back.merges == trained.merges
    assert back.pattern == trained.pattern


def test_hf_trained_merges(tmp_path, corpus):
    """Merges learned by HF's own trainer encode the same through llmlab and through HF."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(corpus, trainer)
    hf.save(str(tmp_path / "tokenizer.json"))
    ours = from_hf(tmp_path / "tokenizer.json")
    assert ours.pattern == GPT2_PATTERN and ours.vocab_size == hf.get_vocab_size()
    for text in texts(corpus):
        assert ours.encode(text) == hf.encode(text).ids


def test_gpt2_files_with_transformers(trained, tmp_path, corpus):
    transformers = pytest.importorskip("transformers")
    if trained.pattern != GPT2_PATTERN:
        pytest.skip("GPT-2 files imply GPT-2's pattern")
    vocab_json, merges_txt = save_gpt2_files(trained, tmp_path)
    ref = transformers.GPT2Tokenizer(str(vocab_json), str(merges_txt))
    ours = load_gpt2_files(vocab_json, merges_txt)
    assert ours.vocab == trained.vocab and ours.merges == trained.merges
    assert ours.special_ids == trained.special_ids
    for text in texts(corpus):
        assert ours.encode(text) == ref.encode(text) == trained.encode(text)


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="not BPE"):
        from_hf({"model": {"type": "WordPiece"}})
    (tmp_path / "v.json").write_text('{"\\u0000": 0}')
    (tmp_path / "m.txt").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="bytes_to_unicode"):
        load_gpt2_files(tmp_path / "v.json", tmp_path / "m.txt")
