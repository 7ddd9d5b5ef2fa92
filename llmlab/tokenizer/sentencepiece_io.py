"""Unigram models to and from SentencePiece (Kudo & Richardson 2018, arXiv:1808.06226).

``to_sentencepiece`` writes a SentencePiece ``ModelProto`` by hand (the protobuf wire format is
a few lines; no protobuf package needed): ``<unk>``, ``<s>``, ``</s>`` at ids 0-2, then the
pieces with their scores, an identity normalizer, and SentencePiece's whitespace rules
(dummy prefix, "▁" for spaces) that :func:`llmlab.tokenizer.unigram.normalize` mirrors.
Taught in chapter 01 (solutions/01_tokenization).
"""

from __future__ import annotations

import struct
from typing import Any

from llmlab.tokenizer.unigram import Unigram

_NORMAL, _UNKNOWN, _CONTROL = 1, 2, 3
_UNIGRAM = 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _bytes(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def _int(number: int, value: int) -> bytes:
    return _field(number, 0, _varint(value))


def _piece(piece: str, score: float, kind: int) -> bytes:
    return _bytes(1, _bytes(1, piece.encode()) + _field(2, 5, struct.pack("<f", score))
                  + _int(3, kind))


def to_sentencepiece(model: Unigram) -> bytes:
    """A serialized SentencePiece model; load it with
    ``sentencepiece.SentencePieceProcessor(model_proto=...)``. Piece ``i`` gets id ``i + 3``."""
    pieces = [_piece("<unk>", 0.0, _UNKNOWN), _piece("<s>", 0.0, _CONTROL),
              _piece("</s>", 0.0, _CONTROL)]
    pieces += [_piece(p, s, _NORMAL) for p, s in model.pieces.items()]
    trainer = _int(3, _UNIGRAM) + _int(4, len(pieces))
    normalizer = (_bytes(1, b"identity") + _int(3, 1) + _int(4, 1) + _int(5, 1))
    return b"".join(pieces) + _bytes(2, trainer) + _bytes(3, normalizer)


def from_sentencepiece(sp: Any) -> Unigram:
    """A :class:`Unigram` with the normal pieces and scores of a ``SentencePieceProcessor``."""
    pieces = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())
              if not (sp.is_unknown(i) or sp.is_control(i) or sp.is_unused(i))}
    return Unigram(pieces)
