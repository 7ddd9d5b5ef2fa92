"""The GPT model of chapter 02: config, model, counting, Hugging Face interop, the book's model,
and decoding — one ``SamplingParams``, one logits pipeline, one ``generate``.

- ``load(spec)`` -> (model, tokenizer) for ``"book"``, ``"book-chat"``, a Hugging Face directory or a hub id;
  ``resolve()`` reads the ``LLMLAB_MODEL`` / ``LLMLAB_DEVICE`` switch (:mod:`llmlab.model.spec`).

- ``generate(model, ids, params, **overrides)`` is the one entry point; it decodes through a
  ``ContiguousKVCache`` by default (``use_cache=False``: chapter 02's recomputing loop).
- ``decode_loop`` is its loop, which ``llmlab.kvcache.generate_paged`` and prefix tuning run
  with their own caches; ``process_logits``/``next_token`` are the pipeline every other decoding
  path (the serving engine, speculative decoding) calls per token.

Taught in chapter 02 (solutions/02_gpt); the cache in chapter 08 (solutions/08_kvcache).
"""

from llmlab.model.book import (
    BOOK_CHAT_MODEL_DIR,
    BOOK_MODEL_DIR,
    load_book_chat_model,
    load_book_model,
)
from llmlab.model.cache import ContiguousKVCache
from llmlab.model.config import GPTConfig
from llmlab.model.generate import decode_loop, generate
from llmlab.model.gpt import GPT
from llmlab.model.hf import config_from_hf, from_hf, hf_model_type, to_hf
from llmlab.model.io import load_model, save_model
from llmlab.model.sampling import (
    SamplingParams,
    apply_penalties,
    filter_logits,
    next_token,
    process_logits,
    sample_from,
)
from llmlab.model.spec import load, load_hf_directory, resolve

__all__ = [
    "BOOK_CHAT_MODEL_DIR",
    "BOOK_MODEL_DIR",
    "GPT",
    "ContiguousKVCache",
    "GPTConfig",
    "SamplingParams",
    "apply_penalties",
    "config_from_hf",
    "decode_loop",
    "filter_logits",
    "from_hf",
    "generate",
    "hf_model_type",
    "load",
    "load_book_chat_model",
    "load_book_model",
    "load_hf_directory",
    "load_model",
    "next_token",
    "process_logits",
    "resolve",
    "sample_from",
    "save_model",
    "to_hf",
]
