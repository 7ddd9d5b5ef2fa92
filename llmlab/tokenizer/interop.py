"""Moving a BPE tokenizer between llmlab, tiktoken, Hugging Face ``tokenizers`` and GPT-2's
``vocab.json`` + ``merges.txt`` — all offline, nothing downloaded.

- tiktoken stores no merges, only ``mergeable_ranks`` (bytes -> rank, the rank is the id) and
  merges the adjacent pair whose *concatenation* has the lowest rank; merges are recovered by
  re-running that rule on each token with only lower ranks allowed (as HF's converters do).
- HF and GPT-2 files store tokens as text through GPT-2's ``bytes_to_unicode`` table, which maps
  each byte to a printable character (space -> "Ġ", newline -> "Ċ").

tiktoken and tokenizers are imported only inside the functions that need them.
Taught in chapter 01 (solutions/01_tokenization).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from llmlab.tokenizer.bpe import Tokenizer
from llmlab.tokenizer.pretokenize import GPT2_PATTERN


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (openai/gpt-2 ``encoder.py``)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _to_str(b: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[x] for x in b)


def _to_bytes(s: str) -> bytes:
    inverse = {c: b for b, c in bytes_to_unicode().items()}
    try:
        return bytes(inverse[c] for c in s)
    except KeyError as e:
        raise ValueError(f"{s!r} is not a byte-level token (character {e.args[0]!r} is not in "
                         "GPT-2's bytes_to_unicode table)") from None


# ---- tiktoken --------------------------------------------------------------------------------

def to_tiktoken(tok: Tokenizer, name: str = "llmlab") -> Any:
    """A ``tiktoken.Encoding`` with the same ids (ranks are ids; merges follow id order)."""
    import tiktoken

    special = set(tok.special_ids.values())
    ranks = {b: i for i, b in tok.vocab.items() if i not in special}
    return tiktoken.Encoding(name, pat_str=tok.pattern, mergeable_ranks=ranks,
                             special_tokens=dict(tok.special_ids))


def _split_by_ranks(token: bytes, ranks: dict[bytes, int], below: int) -> list[bytes]:
    """tiktoken's rule on one token, using only ranks < ``below``."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < below and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


def from_tiktoken(enc: Any) -> Tokenizer:
    """A :class:`Tokenizer` from a ``tiktoken.Encoding`` (merges recovered from ranks)."""
    ranks: dict[bytes, int] = enc._mergeable_ranks
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            parts = _split_by_ranks(token, ranks, rank)
            if len(parts) != 2:
                raise ValueError(f"token {token!r} (rank {rank}) is not one merge of lower-rank "
                                 "tokens; this encoding is not a BPE")
            merges.append((parts[0], parts[1]))
    vocab = {r: b for b, r in ranks.items()}
    vocab.update({i: s.encode() for s, i in enc._special_tokens.items()})
    return Tokenizer(vocab, merges, list(enc._special_tokens), pattern=enc._pat_str)


# ---- Hugging Face tokenizers ------------------------------------------------------------------

def to_hf(tok: Tokenizer) -> Any:
    """A ``tokenizers.Tokenizer`` (byte-level BPE) that gives the same ids."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    special = set(tok.special_ids.values())
    vocab = {_to_str(b): i for i, b in tok.vocab.items() if i not in special}
    merges = [(_to_str(a), _to_str(b)) for a, b in tok.merges]
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(tok.pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    hf.decoder = decoders.ByteLevel()
    for t, i in sorted(tok.special_ids.items(), key=lambda kv: kv[1]):
        hf.add_special_tokens([AddedToken(t, normalized=False, special=True)])
        if hf.token_to_id(t) != i:
            raise ValueError(f"special token {t!r} has id {i}, but HF appends it as "
                             f"{hf.token_to_id(t)}; special ids must come after the vocab")
    return hf


def from_hf(source: Any) -> Tokenizer:
    """A :class:`Tokenizer` from a byte-level BPE ``tokenizers.Tokenizer``, a ``tokenizer.json``
    path, or its parsed dict."""
    if isinstance(source, (str, os.PathLike)):
        d = json.loads(Path(source).read_text(encoding="utf-8"))
    elif isinstance(source, dict):
        d = source
    else:
        d = json.loads(source.to_str())
    model = d["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"from_hf: model type {model.get('type')!r} is not BPE")
    special = {t["content"]: t["id"] for t in d.get("added_tokens", []) if t.get("special")}
    vocab = {i: _to_bytes(s) for s, i in model["vocab"].items() if s not in special}
    vocab.update({i: s.encode() for s, i in special.items()})
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    merges = [(_to_bytes(a), _to_bytes(b)) for a, b in merges]
    return Tokenizer(vocab, merges, list(special), pattern=_hf_pattern(d.get("pre_tokenizer")))


def _hf_pattern(pre: dict | None) -> str:
    """The regex a byte-level HF pre-tokenizer splits with (GPT-2's for plain ByteLevel)."""
    steps = pre.get("pretokenizers", [pre]) if pre else []
    for step in steps:
        if step.get("type") == "Split":
            return step["pattern"].get("Regex") or step["pattern"]["String"]
    if any(s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps):
        return GPT2_PATTERN
    raise ValueError("from_hf: no byte-level pre-tokenizer (Split or ByteLevel) found")


# ---- GPT-2 files -------------------------------------------------------------------------------

def load_gpt2_files(vocab_json: str | os.PathLike, merges_txt: str | os.PathLike,
                    special_tokens: list[str] | None = None) -> Tokenizer:
    """A :class:`Tokenizer` from GPT-2-format ``vocab.json`` and ``merges.txt`` (as released by
    OpenAI and used by HF ``GPT2Tokenizer``). ``special_tokens`` defaults to ``<|endoftext|>``
    when the vocab has it."""
    vocab_str: dict[str, int] = json.loads(Path(vocab_json).read_text(encoding="utf-8"))
    if special_tokens is None:
        special_tokens = [t for t in ("<|endoftext|>",) if t in vocab_str]
    vocab = {i: (s.encode() if s in special_tokens else _to_bytes(s)) for s, i in vocab_str.items()}
    merges = []
    for line in Path(merges_txt).read_text(encoding="utf-8").splitlines():
        if line.startswith("#version") or not line.strip():
            continue
        a, b = line.split(" ")
        merges.append((_to_bytes(a), _to_bytes(b)))
    return Tokenizer(vocab, merges, special_tokens, pattern=GPT2_PATTERN)


def save_gpt2_files(tok: Tokenizer, directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` in GPT-2's format; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    special = {i: t for t, i in tok.special_ids.items()}
    vocab = {special.get(i) or _to_str(b): i for i, b in sorted(tok.vocab.items())}
    vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{_to_str(a)} {_to_str(b)}" for a, b in tok.merges)]
    merges_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vocab_path, merges_path
