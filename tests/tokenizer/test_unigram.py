"""Unigram LM: Viterbi (brute force and sentencepiece parity), sampling, EM training."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest

from llmlab.tokenizer import Unigram, from_sentencepiece, to_sentencepiece, train_unigram
from llmlab.tokenizer.unigram import _expected_counts, _to_logp, split_words, viterbi_segment


def segmentations(text: str, pieces: dict[str, float]):
    """Every way to cut ``text`` into pieces of the vocabulary."""
    for cuts in itertools.product([0, 1], repeat=len(text) - 1):
        parts, start = [], 0
        for i, c in enumerate(cuts, 1):
            if c:
                parts.append(text[start:i])
                start = i
        parts.append(text[start:])
        if all(p in pieces for p in parts):
            yield parts


@pytest.fixture(scope="module")
def toy() -> dict[str, float]:
    rng = random.Random(0)
    pieces = ["a", "b", "c", "ab", "bc", "abc", "ca", "cab", "bca", "aa", "cc"]
    return {p: -rng.uniform(1, 6) for p in pieces}


def test_viterbi_is_the_best_segmentation(toy):
    rng = random.Random(1)
    for _ in range(100):
        text = "".join(rng.choice("abc") for _ in range(rng.randint(1, 10)))
        best = max(sum(toy[p] for p in s) for s in segmentations(text, toy))
        got = viterbi_segment(text, toy)
        assert "".join(got) == text and sum(toy[p] for p in got) == pytest.approx(best)


def test_viterbi_unknown_character(toy):
    assert viterbi_segment("abxc", toy) == ["ab", "x", "c"]


def test_sampling_follows_the_distribution(toy):
    model = Unigram(toy)
    word = "abca"  # a single word: no "▁" in its pieces
    segs = list(segmentations(word, toy))
    z = sum(math.exp(sum(toy[p] for p in s)) for s in segs)
    rng = random.Random(0)
    draws = Counter(tuple(model.sample(word, alpha=1.0, rng=rng)[1:]) for _ in range(4000))
    # sample() works on "▁abca"; "▁" is an unknown piece of its own, which drops out above
    for s in segs:
        assert abs(draws[tuple(s)] / 4000 - math.exp(sum(toy[p] for p in s)) / z) < 0.03
    # a large alpha concentrates on the Viterbi segmentation
    best = sum(toy[p] for p in viterbi_segment(word, toy))
    assert sum(toy[p] for p in model.sample(word, alpha=50.0, rng=rng)[1:]) == best


def test_em_raises_likelihood(english):
    words = Counter(w for w in split_words(english[:20_000]))
    chars = Counter(c for w, f in words.items() for c in w for _ in range(f))
    subs = Counter(w[i:i + 3] for w in words for i in range(len(w) - 2))
    logp = _to_logp(Counter({**chars, **dict(subs.most_common(500))}))
    lls = []
    for _ in range(4):
        counts, ll = _expected_counts(words, logp, 8)
        lls.append(ll)
        logp = _to_logp(counts)
    assert all(b >= a - 1e-6 for a, b in zip(lls, lls[1:])) and lls[-1] > lls[0]


def test_train(english):
    model = train_unigram([english[:30_000]], 400)
    assert model.vocab_size == 400
    assert set(english[:30_000].replace(" ", "").replace("\n", "")) <= set(model.pieces)
    text = "Return the number of elements in the list."
    assert model.decode(model.encode(text)) == text
    assert len(model.tokenize(text)) < len(text) / 2
    with pytest.raises(ValueError, match="alphabet"):
        train_unigram([english[:30_000]], 5)


def assert_same_up_to_ties(theirs: list[str], ours: list[str], scores: dict[str, float]):
    """Equal pieces, or two segmentations whose scores tie (float rounding picks either)."""
    if theirs != ours:
        assert "".join(theirs) == "".join(ours)
        assert sum(map(scores.get, theirs)) == pytest.approx(sum(map(scores.get, ours)), abs=1e-4)


@pytest.mark.parity
def test_sentencepiece_viterbi_parity_our_pieces(english):
    spm = pytest.importorskip("sentencepiece")
    model = train_unigram([english[:30_000]], 500)
    sp = spm.SentencePieceProcessor(model_proto=to_sentencepiece(model))
    words = english.split()
    for i in range(0, 4000, 8):
        text = " ".join(words[i:i + 8])
        assert_same_up_to_ties(sp.encode_as_pieces(text), model.tokenize(text), model.pieces)
    assert from_sentencepiece(sp).pieces == pytest.approx(model.pieces, abs=1e-5)


@pytest.mark.parity
def test_sentencepiece_trained_model(tmp_path, english):
    spm = pytest.importorskip("sentencepiece")
    (tmp_path / "text.txt").write_text(english[:60_000])
    spm.SentencePieceTrainer.train(
        input=str(tmp_path / "text.txt"), model_prefix=str(tmp_path / "m"), vocab_size=600,
        model_type="unigram", normalization_rule_name="identity", minloglevel=2,
        character_coverage=1.0)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "m.model"))
    ours = from_sentencepiece(sp)
    words = english[60_000:].split()
    for i in range(0, 4000, 8):
        text = " ".join(words[i:i + 8])
        if all(c in ours.pieces for c in text.replace(" ", "")):
            assert_same_up_to_ties(sp.encode_as_pieces(text), ours.tokenize(text), ours.pieces)


def test_bad_input():
    with pytest.raises(ValueError, match="at least one piece"):
        Unigram({})
    with pytest.raises(ValueError, match="not in the vocab"):
        Unigram({"\u2581a": -1.0, "a": -2.0, "\u2581": -2.0}).encode("ab")
