"""Token arrays on disk: tokenize a corpus once into a flat ``uint16``/``uint32`` memmap.

The whole training set becomes one array of ids with an end-of-text id between documents
(as GPT-2's OpenWebText preprocessing does); training then reads random windows straight from
the memory-mapped file, so a corpus larger than RAM costs nothing to "load".
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def write_tokens(
    texts: Iterable[str],
    encode,
    path: str | Path,
    vocab_size: int,
    eot_id: int | None = None,
    progress: bool = True,
    total: int | None = None,
) -> np.memmap:
    """Encode each text, join with ``eot_id``, write ``path`` (+ ``path.json`` metadata).

    ``encode``: str -> list[int]. Returns the array memory-mapped read-only: (n_tokens,).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab_size)
    n = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        for text in tqdm(texts, total=total, desc=f"tokenizing {path.name}", disable=not progress):
            ids = encode(text) + ([eot_id] if eot_id is not None else [])
            arr = np.asarray(ids, dtype=np.int64)
            if arr.size and (arr.max() >= vocab_size or arr.min() < 0):
                raise ValueError(f"token id {int(arr.max())} outside vocab of {vocab_size}")
            f.write(arr.astype(dtype).tobytes())
            n += arr.size
    tmp.replace(path)
    meta = {"dtype": dtype.name, "n_tokens": n, "vocab_size": vocab_size, "eot_id": eot_id}
    Path(str(path) + ".json").write_text(json.dumps(meta, indent=2) + "\n")
    return read_tokens(path)


def read_tokens(path: str | Path) -> np.memmap:
    """Memory-map a token file written by ``write_tokens``: (n_tokens,) read-only."""
    meta = json.loads(Path(str(path) + ".json").read_text())
    return np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["n_tokens"],))
