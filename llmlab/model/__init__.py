"""The GPT model of chapter 02: config, model, counting, Hugging Face interop, the book's model.

Taught in chapter 02 (solutions/02_gpt).
"""

from llmlab.model.book import BOOK_MODEL_DIR, load_book_model
from llmlab.model.config import GPTConfig
from llmlab.model.generate import generate
from llmlab.model.gpt import GPT
from llmlab.model.hf import config_from_hf, from_hf, to_hf
from llmlab.model.io import load_model, save_model

__all__ = [
    "BOOK_MODEL_DIR",
    "GPT",
    "GPTConfig",
    "config_from_hf",
    "from_hf",
    "generate",
    "load_book_model",
    "load_model",
    "save_model",
    "to_hf",
]
