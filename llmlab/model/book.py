"""The book's model: the checkpoint chapter 02 pretrains and every later chapter loads.

``load_book_model()`` returns ``(GPT, Tokenizer)`` from ``llmlab/model/assets/book/``, which
``llmlab pretrain --preset book`` writes (see its ``MODEL_CARD.md``).
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmlab.model.gpt import GPT
from llmlab.model.io import load_model

BOOK_MODEL_DIR = Path(__file__).parent / "assets" / "book"


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
