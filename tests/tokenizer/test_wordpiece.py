"""WordPiece: longest-match-first encoding (parity with HF tokenizers) and training."""

from __future__ import annotations

from collections import Counter

import pytest

from llmlab.tokenizer import WordPiece, train_wordpiece
from llmlab.tokenizer.wordpiece import bert_pretokenize, wordpiece_word
from tests.tokenizer.conftest import DIVERSE


def test_longest_match_first():
    vocab = {"un", "una", "##ff", "##f", "##able", "##a", "[UNK]"}
    assert wordpiece_word("unaffable", vocab) == ["una", "##ff", "##able"]
    assert wordpiece_word("unx", vocab) == ["[UNK]"]  # any unmatched rest: the whole word
    assert wordpiece_word("un" * 60, vocab) == ["[UNK]"]  # longer than max_chars
    assert wordpiece_word("a", vocab | {"a"}) == ["a"]


def test_bert_pretokenize():
    assert bert_pretokenize("Hello, world! it's $5.00 — ok_go") == [
        "Hello", ",", "world", "!", "it", "'", "s", "$", "5", ".", "00", "—", "ok", "_", "go"]


def naive_wordpiece_merges(text: str, n: int) -> list[str]:
    """Recount everything after every merge; pick the best count(ab) / (count(a) count(b))."""
    words = Counter(bert_pretokenize(text))
    seg = {w: [w[0], *("##" + c for c in w[1:])] for w in words}
    learned = []
    for _ in range(n):
        unit, pairs = Counter(), Counter()
        for w, f in words.items():
            for p in seg[w]:
                unit[p] += f
            for pair in zip(seg[w], seg[w][1:]):
                pairs[pair] += f
        a, b = max(pairs, key=lambda p: (pairs[p] / (unit[p[0]] * unit[p[1]]), p))
        new = a + b[2:]
        learned.append(new)
        for w in words:
            out, i = [], 0
            while i < len(seg[w]):
                if seg[w][i:i + 2] == [a, b]:
                    out.append(new)
                    i += 2
                else:
                    out.append(seg[w][i])
                    i += 1
            seg[w] = out
    return learned


def test_training_equals_naive(english):
    text = english[:20_000]
    wp = train_wordpiece([text], 800)
    alphabet = 5 + len({c for w in bert_pretokenize(text)
                        for c in (w[0], *("##" + x for x in w[1:]))})
    learned = list(wp.vocab)[alphabet:]
    assert wp.vocab_size == 800 and list(wp.vocab)[:2] == ["[PAD]", "[UNK]"]
    assert learned == naive_wordpiece_merges(text, len(learned))
    tokens = wp.tokenize(text)
    assert len(tokens) < 0.9 * len(text.replace(" ", ""))  # it compresses, a little
    with pytest.raises(ValueError, match="alphabet"):
        train_wordpiece([text], 10)


@pytest.mark.parity
def test_hf_wordpiece_same_ids(english, code, chinese):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers

    wp = train_wordpiece([english, code, chinese], 2000)
    hf = tokenizers.Tokenizer(models.WordPiece(wp.vocab, unk_token="[UNK]",
                                               max_input_chars_per_word=100))
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    for text in [*DIVERSE, english, code, chinese]:
        assert wp.encode(text) == hf.encode(text, add_special_tokens=False).ids


@pytest.mark.parity
def test_hf_trained_vocab(english):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.train_from_iterator([english], trainers.WordPieceTrainer(
        vocab_size=1000, special_tokens=["[UNK]"], show_progress=False))
    ours = WordPiece(hf.get_vocab())
    for text in [*DIVERSE, english]:
        assert ours.encode(text) == hf.encode(text).ids


def test_bad_vocab():
    with pytest.raises(ValueError, match="unk_token"):
        WordPiece({"a": 0})
