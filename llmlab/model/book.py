"""The book's model: the checkpoint chapter 02 pretrains and every later chapter loads.

``load_book_model()`` returns ``(GPT, Tokenizer)`` from ``llmlab/model/assets/book/``, which
``llmlab pretrain --preset book`` writes (see its ``MODEL_CARD.md``). ``load_book_chat_model()``
returns the same model after supervised fine-tuning, from ``llmlab/model/assets/book-chat/``,
which ``python -m llmlab.align.book_chat`` writes; its weights are checked against the sha256
its ``summary.json`` records.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llmlab.data.downloads import sha256_file
from llmlab.model.gpt import GPT
from llmlab.model.io import load_model

BOOK_MODEL_DIR = Path(__file__).parent / "assets" / "book"
BOOK_CHAT_MODEL_DIR = Path(__file__).parent / "assets" / "book-chat"


def load_book_model(directory: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """(model in eval mode, tokenizer) of the shipped book model (or of ``directory``)."""
    from llmlab.tokenizer import Tokenizer  # chapter 01

    directory = Path(directory) if directory else BOOK_MODEL_DIR
    if not (directory / "model.safetensors").exists():
        raise FileNotFoundError(
            f"no model at {directory}; train it with `llmlab pretrain --preset book`"
        )
    model: GPT = load_model(directory, dtype)
    return model, Tokenizer.load(directory / "tokenizer.json")


def load_book_chat_model(directory: str | Path | None = None, dtype: torch.dtype = torch.float32):
    """(model in eval mode, tokenizer with the ChatML special tokens) of the shipped
    ``book-chat`` (or of ``directory``). Raises ``ValueError`` when ``model.safetensors`` is not
    the file ``summary.json``'s ``weights_sha256`` names (a damaged or edited asset)."""
    directory = Path(directory) if directory else BOOK_CHAT_MODEL_DIR
    weights, summary = directory / "model.safetensors", directory / "summary.json"
    if not weights.exists() or not summary.exists():
        raise FileNotFoundError(f"no book-chat model at {directory}; train it with "
                                "`python -m llmlab.align.book_chat --out <folder>`")
    want = json.loads(summary.read_text(encoding="utf-8")).get("weights_sha256")
    if not want:
        raise ValueError(f"{summary} records no weights_sha256: {directory} is not a book-chat "
                         "folder written by `python -m llmlab.align.book_chat`")
    got = sha256_file(weights)
    if got != want:
        raise ValueError(f"{weights} has sha256 {got[:16]}…, but {summary.name} records "
                         f"{want[:16]}…: the asset is damaged or was replaced without its card")
    return load_book_model(directory, dtype)
