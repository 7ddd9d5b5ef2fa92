"""WordPiece, BERT's tokenizer: greedy longest-match-first encoding with ``##`` continuations,
and training that merges the pair with the highest likelihood gain.

Encoding (Devlin et al. 2018, "BERT", arXiv:1810.04805; Wu et al. 2016, "Google's Neural Machine
Translation System", arXiv:1609.08144): split on whitespace and punctuation like BERT's basic
tokenizer, then take the longest vocabulary entry at the start of the word, then the longest
``##``-prefixed entry at the rest, and so on; a word with any unmatchable rest becomes ``[UNK]``.

Training (Schuster & Nakajima 2012, "Japanese and Korean Voice Search"): start from characters
(non-initial ones prefixed with ``##``) and repeatedly merge the pair maximising
``count(ab) / (count(a) * count(b))`` — the merge that raises the corpus likelihood most under a
unigram model, which prefers pairs whose parts are rare on their own. Leaves out: lower-casing
and accent stripping (BERT's normalizer), Chinese-character splitting.
Taught in chapter 01 (solutions/01_tokenization).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import regex

from llmlab.tokenizer.bpe_basics import merge_pair

# BERT's punctuation: ASCII symbols and every Unicode P* character; each is a word of its own
_BERT_SPLIT = regex.compile(r"[^\s\p{P}!-/:-@\[-`{-~]+|[\p{P}!-/:-@\[-`{-~]")


def bert_pretokenize(text: str) -> list[str]:
    """Split on whitespace and punctuation as BERT's ``BertPreTokenizer`` does."""
    return _BERT_SPLIT.findall(text)


def wordpiece_word(word: str, vocab: set[str] | dict[str, int], unk: str = "[UNK]",
                   prefix: str = "##", max_chars: int = 100) -> list[str]:
    """Greedy longest-match-first pieces of one word: ``"unaffable" -> ["una", "##ff", "##able"]``
    for a vocab holding those. Returns ``[unk]`` when some rest of the word matches nothing, or
    when the word is longer than ``max_chars``."""
    if len(word) > max_chars:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                break
            end -= 1
        if end == start:
            return [unk]
        start = end
    return pieces


class WordPiece:
    """A WordPiece tokenizer over ``vocab`` (token -> id), BERT-style pre-tokenization."""

    def __init__(self, vocab: dict[str, int], unk_token: str = "[UNK]", prefix: str = "##",
                 max_chars: int = 100) -> None:
        if unk_token not in vocab:
            raise ValueError(f"unk_token {unk_token!r} is not in the vocab")
        self.vocab, self.unk_token, self.prefix, self.max_chars = vocab, unk_token, prefix, max_chars
        self.id_to_token = {i: t for t, i in vocab.items()}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        return [p for w in bert_pretokenize(text)
                for p in wordpiece_word(w, self.vocab, self.unk_token, self.prefix,
                                        self.max_chars)]

    def encode(self, text: str) -> list[int]:
        return [self.vocab[t] for t in self.tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Tokens joined by spaces, ``##`` pieces glued to the previous one (lossy, like BERT)."""
        out = ""
        for i in ids:
            tok = self.id_to_token[i]
            out += tok[len(self.prefix):] if tok.startswith(self.prefix) else " " + tok
        return out.strip()


def train_wordpiece(texts: Iterable[str], vocab_size: int,
                    special_tokens: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
                    prefix: str = "##") -> WordPiece:
    """Learn a WordPiece vocabulary of ``vocab_size`` tokens (special tokens first, then the
    alphabet, then merges by likelihood gain ``count(ab) / (count(a) count(b))``)."""
    word_counts = Counter(w for t in texts for w in bert_pretokenize(t))
    words = [[w[0], *(prefix + c for c in w[1:])] for w in word_counts]
    freqs = list(word_counts.values())
    vocab = list(dict.fromkeys([*special_tokens, *sorted({p for w in words for p in w})]))
    if vocab_size < len(vocab):
        raise ValueError(f"vocab_size={vocab_size} is smaller than the special tokens plus the "
                         f"alphabet ({len(vocab)})")
    unit: Counter[str] = Counter()
    pairs: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, (w, f) in enumerate(zip(words, freqs)):
        _count(w, f, i, unit, pairs, where)
    while len(vocab) < vocab_size and pairs:
        a, b = max(pairs, key=lambda p: (pairs[p] / (unit[p[0]] * unit[p[1]]), p))
        new = a + b[len(prefix):]
        vocab.append(new)
        for i in where.pop((a, b)):
            w = words[i]
            _count(w, -freqs[i], i, unit, pairs, where)
            words[i] = merge_pair(w, (a, b), new)
            _count(words[i], freqs[i], i, unit, pairs, where)
        pairs = +pairs  # drop pairs whose count fell to zero
    return WordPiece({t: i for i, t in enumerate(vocab)}, unk_token=special_tokens[1],
                     prefix=prefix)


def _count(word: list[str], f: int, i: int, unit: Counter, pairs: Counter, where: dict) -> None:
    for p in word:
        unit[p] += f
    for pair in zip(word, word[1:]):
        pairs[pair] += f
        if f > 0:
            where[pair].add(i)
