"""The BPE Tokenizer: round trips, the naive encoder, streaming, special tokens, save/load."""

from __future__ import annotations

import random

import pytest

from llmlab.tokenizer import Tokenizer, train_bpe
from llmlab.tokenizer.bpe_basics import bpe_encode
from llmlab.tokenizer.pretokenize import pretokenize
from tests.tokenizer.conftest import DIVERSE, EOT


def test_round_trip(trained, corpus):
    for text in [*DIVERSE, *corpus]:
        assert trained.decode(trained.encode(text)) == text


def test_encode_equals_naive_merge_ranks(trained, corpus):
    merges = {(trained.token_to_id[a], trained.token_to_id[b]): trained.token_to_id[a + b]
              for a, b in trained.merges}
    for text in [*DIVERSE, *corpus]:
        text = text.replace(EOT, "")
        expected = [i for p in pretokenize(text, trained.pattern)
                    for i in bpe_encode(p.encode(), merges)]
        assert trained.encode(text) == expected


def test_compresses(trained, english):
    ids = trained.encode(english)
    assert len(english.encode()) / len(ids) > 2.5  # 1,000 tokens: well above 1 byte per token


def test_special_tokens(trained):
    eot = trained.special_ids[EOT]
    assert eot == trained.vocab_size - 1
    assert trained.encode(f"a{EOT}{EOT}b") == [*trained.encode("a"), eot, eot,
                                                *trained.encode("b")]
    assert eot not in trained.encode("<|endoftext|")  # incomplete: ordinary text


def test_overlapping_special_tokens_longest_first():
    vocab, merges = train_bpe(["hello world"], 260)
    tok = Tokenizer(vocab, merges, ["<|a|>", "<|a|><|a|>", "<|a"])
    double, single, prefix = (tok.special_ids[t] for t in ("<|a|><|a|>", "<|a|>", "<|a"))
    assert tok.encode("<|a|><|a|>") == [double]
    assert tok.encode("<|a|><|a|><|a|>") == [double, single]
    assert tok.encode("<|ax") == [prefix, tok.encode("x")[0]]
    assert tok.decode(tok.encode("x<|a|><|a|>y")) == "x<|a|><|a|>y"


def test_decode_invalid_utf8_is_replaced(trained):
    ids = trained.encode("é")  # two bytes; its first byte alone is invalid UTF-8
    first = trained.token_to_id[b"\xc3"]
    assert trained.decode([first]) == "\ufffd"
    assert trained.decode([first, *ids]) == "\ufffdé"
    with pytest.raises(ValueError, match="unknown token id"):
        trained.decode([trained.vocab_size + 5])


@pytest.mark.parametrize("how", ["lines", "random", "chars"])
def test_encode_iterable_equals_encode(trained, corpus, how):
    text = f"{EOT}".join([*corpus, *DIVERSE])[:40_000]
    rng = random.Random(0)
    if how == "lines":
        pieces = text.splitlines(keepends=True)
    elif how == "chars":
        pieces = list(text[:5000])
        text = text[:5000]
    else:
        cuts = sorted(rng.sample(range(len(text)), 2000))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
    stream = trained.encode_iterable(iter(pieces))
    assert list(stream) == trained.encode(text)


def test_encode_iterable_is_lazy(trained):
    def endless():
        while True:
            yield "the quick brown fox jumps over the lazy dog. "

    stream = trained.encode_iterable(endless())
    first = [next(stream) for _ in range(1000)]
    assert trained.decode(first).startswith("the quick brown fox")


def test_cache_is_bounded(corpus):
    vocab, merges = train_bpe(corpus, 400)
    tok = Tokenizer(vocab, merges, cache_size=50)
    uncached = Tokenizer(vocab, merges, cache_size=0)
    text = "".join(corpus)
    assert tok.encode(text) == uncached.encode(text)
    assert len(tok._cache) <= 50


def test_save_load(trained, tmp_path, corpus):
    path = tmp_path / "tok.json"
    trained.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.vocab == trained.vocab and loaded.merges == trained.merges
    assert loaded.special_tokens == trained.special_tokens and loaded.pattern == trained.pattern
    assert loaded.encode(corpus[0]) == trained.encode(corpus[0])
    (tmp_path / "other.json").write_text('{"model": {}}')
    with pytest.raises(ValueError, match="not an llmlab BPE"):
        Tokenizer.load(tmp_path / "other.json")


def test_bad_vocab():
    with pytest.raises(ValueError, match="single bytes"):
        Tokenizer({0: b"a"}, [])
    vocab = {i: bytes([i]) for i in range(256)}
    with pytest.raises(ValueError, match="must all be in vocab"):
        Tokenizer(vocab, [(b"a", b"b")])
    with pytest.raises(TypeError):
        Tokenizer(vocab, []).encode(b"bytes")
