"""Pre-tokenization: special tokens split out first, then a regex cuts text into pre-tokens.

BPE merges are learned and applied *within* pre-tokens only, so " dog", " dog." and "dog!" share
the token " dog" instead of learning one token per punctuation variant (Radford et al. 2019,
"Language Models are Unsupervised Multitask Learners", section 2.2).

Also here: :func:`safe_cuts`, positions where a long text can be cut into chunks whose
pre-tokens are exactly the pre-tokens of the whole text. Training counts chunks in parallel and
``Tokenizer.encode_iterable`` streams with them. Taught in chapter 01 (solutions/01_tokenization).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections import Counter
from collections.abc import Iterable, Iterator

import regex

#: GPT-2's pre-tokenization pattern (openai/gpt-2 ``encoder.py``; tiktoken ``r50k_base``).
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
#: GPT-4's pattern (tiktoken ``cl100k_base``): case-insensitive contractions, digits in runs of
#: at most three, a letter run may take one leading non-letter, punctuation keeps its newlines.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)

# A cut before a space that follows a non-space, or after a lone newline between two
# non-spaces. Under GPT2_PATTERN and GPT4_PATTERN no pre-token crosses such a position and no
# lookahead near it changes when the text after it is removed (tests/tokenizer/test_pretokenize.py
# checks this on real text). Custom patterns must keep that property to use parallel counting
# or streaming.
_CUT = regex.compile(r"(?<=\S)(?= )|(?<=\S\n)(?=\S)")
_CUT_LAST = regex.compile(r"(?r)(?<=\S)(?= )|(?<=\S\n)(?=\S)")


def special_regex(special_tokens: Iterable[str]) -> regex.Pattern | None:
    """A regex matching any special token, the longest first where tokens overlap."""
    tokens = sorted(set(special_tokens), key=lambda t: (-len(t), t))
    if not tokens:
        return None
    return regex.compile("|".join(regex.escape(t) for t in tokens))


def split_special(text: str, special: regex.Pattern | None) -> Iterator[tuple[str, bool]]:
    """Yield ``(piece, is_special)``: the text between special tokens, and the tokens."""
    if special is None:
        if text:
            yield text, False
        return
    start = 0
    for m in special.finditer(text):
        if m.start() > start:
            yield text[start:m.start()], False
        yield m.group(), True
        start = m.end()
    if start < len(text):
        yield text[start:], False


def pretokenize(text: str, pattern: str | regex.Pattern) -> list[str]:
    """Cut ``text`` (no special tokens in it) into pre-tokens."""
    return regex.findall(pattern, text)


def safe_cuts(text: str, every: int) -> list[str]:
    """Cut ``text`` into chunks of about ``every`` characters at safe positions (see ``_CUT``)."""
    chunks, start = [], 0
    while len(text) - start > every:
        m = _CUT.search(text, start + every)
        if m is None:
            break
        chunks.append(text[start:m.start()])
        start = m.start()
    chunks.append(text[start:])
    return chunks


def last_safe_cut(text: str, end: int) -> int:
    """The last safe cut position in ``text[:end]``, or 0 when there is none."""
    m = _CUT_LAST.search(text, 0, max(end, 0))
    return m.start() if m else 0


def _count(args: tuple[list[str], str]) -> Counter[str]:
    texts, pattern = args
    pat = regex.compile(pattern)
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(pat.findall(text))
    return counts


def _batches(texts: list[str], n: int) -> list[list[str]]:
    """Split ``texts`` into ``n`` lists of roughly equal total length (order kept)."""
    total = sum(map(len, texts))
    out: list[list[str]] = [[]]
    size = 0
    for t in texts:
        if size >= total / n * len(out) and len(out) < n:
            out.append([])
        out[-1].append(t)
        size += len(t)
    return out


def count_pretokens(docs: Iterable[str], pattern: str, special_tokens: Iterable[str] = (),
                    num_workers: int = 0, parallel_above: int = 2_000_000) -> Counter[str]:
    """Count pre-tokens over ``docs``, special tokens removed (they are never merged).

    With more than ``parallel_above`` characters and ``num_workers != 1`` the text is cut at
    special tokens and safe positions into chunks counted by a pool of processes
    (``num_workers=0`` means one per CPU core).
    """
    special = special_regex(special_tokens)
    pieces = [p for d in docs for p, is_sp in split_special(d, special) if not is_sp]
    total = sum(map(len, pieces))
    workers = num_workers or (mp.cpu_count() or 1)
    if workers == 1 or total <= parallel_above:
        return _count((pieces, pattern))
    every = max(total // (workers * 8), 100_000)
    chunks = [c for p in pieces for c in (safe_cuts(p, every) if len(p) > every else [p])]
    jobs = [(b, pattern) for b in _batches(chunks, workers * 4)]
    method = "fork" if sys.platform == "linux" else "spawn"
    counts: Counter[str] = Counter()
    with mp.get_context(method).Pool(workers) as pool:
        for c in pool.imap_unordered(_count, jobs):
            counts.update(c)
    return counts
