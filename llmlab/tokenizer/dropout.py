"""BPE-dropout: encode with each applicable merge skipped at random, so the model sees many
segmentations of the same word (Provilkov, Emelianenko & Voita 2020, "BPE-Dropout: Simple and
Effective Subword Regularization", arXiv:1910.13267).

At every step of the merge loop, each adjacent pair that has a merge is kept with probability
``1 - p``; the kept pair with the lowest rank is merged; the loop ends when no pair is kept.
``p = 0`` is ordinary BPE, ``p = 1`` leaves single bytes. Used at training time only.
Taught in chapter 01 (solutions/01_tokenization).
"""

from __future__ import annotations

import random

from llmlab.tokenizer.bpe import Tokenizer
from llmlab.tokenizer.pretokenize import split_special


def _merge_with_dropout(tok: Tokenizer, ids: list[int], p: float, rng: random.Random
                        ) -> list[int]:
    ranks = tok._ranks
    while len(ids) > 1:
        best, at = None, -1
        for i, pair in enumerate(zip(ids, ids[1:])):
            r = ranks.get(pair)
            if r is not None and rng.random() >= p and (best is None or r[0] < best[0]):
                best, at = r, i
        if best is None:
            break
        ids = [*ids[:at], best[1], *ids[at + 2:]]
    return ids


def encode_with_dropout(tok: Tokenizer, text: str, p: float,
                        rng: random.Random | None = None) -> list[int]:
    """Ids of ``text`` under BPE-dropout with drop probability ``p`` (decodes to ``text``)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability p={p} must be in [0, 1]")
    rng = rng or random.Random()
    out: list[int] = []
    for piece, is_special in split_special(text, tok._special):
        if is_special:
            out.append(tok.special_ids[piece])
            continue
        for word in tok._pat.findall(piece):
            out += _merge_with_dropout(tok, [tok._byte_ids[b] for b in word.encode()], p, rng)
    return out
