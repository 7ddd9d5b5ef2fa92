"""The byte-level BPE tokenizer: encode, decode, stream, save and load.

Encoding follows GPT-2 (Radford et al. 2019): special tokens are matched first (the longest
first where they overlap), the rest is cut into pre-tokens by a regex, and each pre-token's UTF-8
bytes are merged by repeatedly applying the lowest-ranked merge among its adjacent pairs — what
tiktoken and Hugging Face ``tokenizers`` do, so ids match theirs for the same merges. A bounded
per-pre-token cache makes repeated words free. Taught in chapter 01 (solutions/01_tokenization).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import regex

from llmlab.tokenizer.pretokenize import GPT2_PATTERN, last_safe_cut, special_regex, split_special

_FORMAT = "llmlab-bpe"


class Tokenizer:
    """Byte-level BPE tokenizer built from a vocabulary and an ordered list of merges.

    Args:
        vocab: id -> bytes. Must contain all 256 single bytes and the result of every merge.
        merges: ``(left, right)`` byte strings, earliest (highest priority) first.
        special_tokens: strings matched before pre-tokenization; ids are taken from ``vocab``
            when the token's bytes are there, otherwise appended.
        pattern: the pre-tokenization regex.
        cache_size: pre-tokens remembered (cleared when full, so memory stays bounded).

    ``chat_template`` is the Jinja chat template of a Hugging Face checkpoint's tokenizer (set by
    :func:`llmlab.model.load`; render it with :func:`llmlab.tokenizer.render_chat_template`),
    None for the book's tokenizers, which use ChatML (:func:`llmlab.tokenizer.apply_chat_template`).
    """

    def __init__(self, vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]],
                 special_tokens: list[str] | None = None, pattern: str = GPT2_PATTERN,
                 cache_size: int = 100_000) -> None:
        self.vocab = dict(vocab)
        self.merges = [(bytes(a), bytes(b)) for a, b in merges]
        self.pattern = pattern
        self.special_tokens = list(dict.fromkeys(special_tokens or []))
        self._pat = regex.compile(pattern)
        self.token_to_id = {b: i for i, b in self.vocab.items()}
        missing = [bytes([i]) for i in range(256) if bytes([i]) not in self.token_to_id]
        if missing:
            raise ValueError(f"vocab lacks {len(missing)} single bytes, e.g. {missing[0]!r}; "
                             "a byte-level BPE vocab must contain all 256")
        self.special_ids: dict[str, int] = {}
        for tok in self.special_tokens:
            b = tok.encode("utf-8")
            if b not in self.token_to_id:
                new_id = max(self.vocab) + 1
                self.vocab[new_id], self.token_to_id[b] = b, new_id
            self.special_ids[tok] = self.token_to_id[b]
        self._special = special_regex(self.special_tokens)
        self._byte_ids = [self.token_to_id[bytes([i])] for i in range(256)]
        # (left id, right id) -> (rank, merged id): the merge table encode() applies
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b) in enumerate(self.merges):
            ids = (self.token_to_id.get(a), self.token_to_id.get(b), self.token_to_id.get(a + b))
            if None in ids:
                raise ValueError(f"merge {rank} {(a, b)!r}: its parts and result must all be "
                                 "in vocab")
            self._ranks.setdefault((ids[0], ids[1]), (rank, ids[2]))
        self._cache: dict[str, list[int]] = {}
        self._cache_size = cache_size
        self.chat_template: str | None = None

    @property
    def vocab_size(self) -> int:
        """Number of ids (merges + 256 bytes + special tokens)."""
        return len(self.vocab)

    def _merge(self, ids: list[int]) -> list[int]:
        """Apply merges to one pre-token's ids, lowest rank first, until none applies."""
        ranks = self._ranks
        while len(ids) > 1:
            best = None
            for pair in zip(ids, ids[1:]):
                r = ranks.get(pair)
                if r is not None and (best is None or r[0] < best[0]):
                    best, best_pair = r, pair
            if best is None:
                break
            a, b = best_pair
            out, i, n = [], 0, len(ids)
            while i < n:
                if i + 1 < n and ids[i] == a and ids[i + 1] == b:
                    out.append(best[1])
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        cache, byte_ids = self._cache, self._byte_ids
        for piece in self._pat.findall(text):
            ids = cache.get(piece)
            if ids is None:
                ids = self._merge([byte_ids[b] for b in piece.encode("utf-8")])
                if len(cache) >= self._cache_size:
                    cache.clear()
                cache[piece] = ids
            out.extend(ids)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens in it map to their ids."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        out: list[int] = []
        for piece, is_special in split_special(text, self._special):
            if is_special:
                out.append(self.special_ids[piece])
            else:
                self._encode_ordinary(piece, out)
        return out

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """Stream ids for a text given in pieces (e.g. the lines of a file), lazily and in
        bounded memory; the ids equal ``encode("".join(iterable))``.

        Text is held back only up to the last position where no pre-token or special token can
        cross (see :func:`llmlab.tokenizer.pretokenize.last_safe_cut`).
        """
        hold = max((len(t) for t in self.special_tokens), default=1) - 1
        buf = ""
        for chunk in iterable:
            buf += chunk
            cut = self._stream_cut(buf, len(buf) - hold)
            if cut:
                yield from self.encode(buf[:cut])
                buf = buf[cut:]
        if buf:
            yield from self.encode(buf)

    def _stream_cut(self, buf: str, end: int) -> int:
        """Last safe cut before ``end`` that is not inside a special token."""
        cut = last_safe_cut(buf, end)
        while cut and self._special is not None:
            lo = max(0, cut - len(max(self.special_tokens, key=len)))
            inside = [m for m in self._special.finditer(buf, lo) if m.start() < cut < m.end()]
            if not inside:
                break
            cut = last_safe_cut(buf, inside[0].start())
        return cut

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes the ids stand for."""
        try:
            return b"".join(self.vocab[i] for i in ids)
        except KeyError as e:
            raise ValueError(f"decode: unknown token id {e.args[0]} (vocab has ids "
                             f"0..{max(self.vocab)})") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; bytes that are not valid UTF-8 become U+FFFD (never raises on them)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ---- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format": _FORMAT, "version": 1, "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            "vocab": {str(i): b.hex() for i, b in sorted(self.vocab.items())},
            "merges": [[a.hex(), b.hex()] for a, b in self.merges],
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (bytes as hex, so any vocabulary round-trips)."""
        Path(path).write_text(json.dumps(self.to_dict()), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a tokenizer written by :meth:`save`."""
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        if d.get("format") != _FORMAT:
            raise ValueError(f"{path}: not an llmlab BPE tokenizer file (format="
                             f"{d.get('format')!r}); for GPT-2 files use load_gpt2_files, for "
                             "tokenizer.json use from_hf")
        vocab = {int(i): bytes.fromhex(h) for i, h in d["vocab"].items()}
        merges = [(bytes.fromhex(a), bytes.fromhex(b)) for a, b in d["merges"]]
        return cls(vocab, merges, d["special_tokens"], d["pattern"])

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={self.special_tokens})")
