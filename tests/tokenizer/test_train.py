"""BPE training: the fast trainer learns exactly the naive trainer's merges."""

from __future__ import annotations

import pytest

from llmlab.tokenizer import GPT2_PATTERN, GPT4_PATTERN, train_bpe
from llmlab.tokenizer.bpe_basics import count_pairs, merge_pair, train_bpe_naive
from llmlab.tokenizer.pretokenize import count_pretokens, pretokenize, safe_cuts

EOT = "<|endoftext|>"


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN], ids=["gpt2", "gpt4"])
def test_fast_equals_naive(pattern, english, code, chinese):
    for text in (english[:20_000], code[:20_000], chinese):
        fast = train_bpe([text], 700, pattern=pattern)
        naive = train_bpe_naive(text, 700, pattern=pattern)
        assert fast[1] == naive[1]
        assert fast[0] == naive[0]


def test_tie_break_lexicographically_greatest():
    # every pair occurs once: (b"c", b"d") is the greatest, then (b"b", b"cd")
    _, merges = train_bpe(["abcd"], 258)
    assert merges == [(b"c", b"d"), (b"b", b"cd")]
    # counts beat the tie-break
    _, merges = train_bpe(["ab ab ab zz"], 257)
    assert merges == [(b"a", b"b")]


def test_special_tokens_never_merged_and_last():
    text = f"a{EOT}b{EOT}" * 50 + "the cat sat on the mat " * 20
    vocab, merges = train_bpe([text], 300, [EOT, "<|pad|>"])
    n = len(vocab)  # fewer than 300: this text runs out of pairs
    assert sorted(vocab) == list(range(n)) and 256 < n < 300
    assert vocab[n - 2] == EOT.encode() and vocab[n - 1] == b"<|pad|>"
    learned = {a + b for a, b in merges}
    assert not any(b"<|" in t or b"|>" in t for t in learned)
    assert b"ab" not in learned and b"ba" not in learned  # never merged across a special token


def test_merges_stay_within_pretokens(english):
    _, merges = train_bpe([english], 600)
    for a, b in merges:  # every merged token is a single GPT-2 pre-token (or a piece of one)
        assert len(pretokenize((a + b).decode("utf-8", "replace"), GPT2_PATTERN)) <= 1 or \
            (a + b).strip() == b""


def test_documents_from_file_equal_documents_from_text(tmp_path, code):
    path = tmp_path / "corpus.txt"
    path.write_text(code[:30_000], encoding="utf-8")
    assert train_bpe(path, 500) == train_bpe(str(path), 500) == train_bpe([code[:30_000]], 500)


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN], ids=["gpt2", "gpt4"])
def test_parallel_counting_equals_serial(pattern, corpus):
    docs = [d + EOT for d in corpus] * 2
    serial = count_pretokens(docs, pattern, [EOT], num_workers=1)
    parallel = count_pretokens(docs, pattern, [EOT], num_workers=2, parallel_above=1000)
    assert parallel == serial


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN], ids=["gpt2", "gpt4"])
def test_safe_cuts_keep_pretokens(pattern, corpus):
    from tests.tokenizer.conftest import DIVERSE
    for text in [*corpus, "".join(DIVERSE)]:
        chunks = safe_cuts(text, 37)
        assert "".join(chunks) == text and len(chunks) > 1
        assert [p for c in chunks for p in pretokenize(c, pattern)] == pretokenize(text, pattern)


def test_bad_input():
    with pytest.raises(ValueError, match="too small"):
        train_bpe(["abc"], 257, ["<a>", "<b>"])
    with pytest.raises(FileNotFoundError, match="list of documents"):
        train_bpe("just some text, not a path", 300)
    with pytest.raises(TypeError):
        train_bpe(b"bytes", 300)


def test_basics():
    assert count_pairs([1, 2, 1, 2, 3]) == {(1, 2): 2, (2, 1): 1, (2, 3): 1}
    assert count_pairs([1, 1], {(1, 1): 2}, 3) == {(1, 1): 5}
    assert merge_pair([5, 5, 5], (5, 5), 9) == [9, 5]
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 7) == [7, 3, 7]
