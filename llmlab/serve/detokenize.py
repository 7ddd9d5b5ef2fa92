"""Streaming text out of a byte-level tokenizer: incremental detokenization and stop strings.

A byte-level BPE token is a run of *bytes*, not characters: "é" may be split across two tokens,
and decoding token by token would emit a broken character (or U+FFFD) in the middle of a stream.
:class:`IncrementalDetokenizer` keeps the bytes of an unfinished UTF-8 character until it is
complete (Python's incremental UTF-8 decoder), so every delta it emits is whole text; bytes that
can never become valid UTF-8 become U+FFFD, as ``Tokenizer.decode`` does.

A stop string may also span token boundaries ("\\n\\n" as "\\n" + "\\n"), so :class:`StopChecker`
holds back the tail of the text that could still be the start of a stop string, and never emits
text past a stop. This is what vLLM's and TGI's detokenizers do. Taught in chapter 09
(solutions/09_serve).
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class IncrementalDetokenizer:
    """``push(token_id) -> str``: the new complete text; ``flush()`` ends the stream."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self.tokenizer.decode_bytes([token_id]))

    def flush(self) -> str:
        """Whatever is left: an unfinished character at the end becomes U+FFFD."""
        return self._decoder.decode(b"", final=True)


def stop_holdback(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


class StopChecker:
    """Feed text deltas; get back what is safe to emit and whether a stop string was reached.

    ``push(delta) -> (text to emit, stopped)``. The emitted text never contains a stop string
    (OpenAI's convention: the stop string itself is not returned).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""  # text received but not emitted: it may begin a stop string

    def push(self, delta: str) -> tuple[str, bool]:
        text = self.pending + delta
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.pending = ""
            return text[:min(hits)], True
        keep = stop_holdback(text, self.stops)
        self.pending = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep], False

    def flush(self) -> str:
        """At the end of the stream (length or EOS) the held-back text is not a stop: emit it."""
        text, self.pending = self.pending, ""
        return text
