"""One switch for which model a chapter runs on: ``load(spec)`` and ``resolve()``.

``spec`` is ``"book"`` (the shipped book model, :func:`llmlab.model.load_book_model`),
``"book-chat"`` (it after supervised fine-tuning, :func:`llmlab.model.load_book_chat_model`;
ChatML, rendered by :func:`llmlab.tokenizer.apply_chat_template`), a local
Hugging Face directory (``config.json`` + safetensors weights + ``tokenizer.json``), or a hub id
such as ``"Qwen/Qwen3-0.6B"``, found in the Hugging Face cache (``HF_HUB_CACHE``, default
``~/.cache/huggingface/hub``) and fetched into it only when the machine is online. Weights go
through :func:`llmlab.model.from_hf` (GPT-2, Llama 1–3.x, Mistral, Qwen2/2.5, Qwen3), the
tokenizer through :func:`llmlab.tokenizer.from_hf`, which keeps the checkpoint's chat template.
``resolve()`` reads ``LLMLAB_MODEL`` and ``LLMLAB_DEVICE`` so every chapter has the same switch.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from llmlab.model.book import load_book_chat_model, load_book_model
from llmlab.model.gpt import GPT
from llmlab.model.hf import from_hf

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
_TRUE = ("1", "true", "yes", "on")
_HUB_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer.json",
              "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]


def resolve(spec: str | None = None, device: str | torch.device | None = None
            ) -> tuple[str, torch.device]:
    """``(spec, device)``: the arguments when given, else ``$LLMLAB_MODEL`` (default
    ``"book"``) and ``$LLMLAB_DEVICE`` (default ``"cuda"`` when available, else ``"cpu"``)."""
    spec = spec or os.environ.get("LLMLAB_MODEL") or "book"
    name = device or os.environ.get("LLMLAB_DEVICE") or (
        "cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} (argument or LLMLAB_DEVICE) is not a torch device; "
                         "expected e.g. 'cpu', 'cuda' or 'cuda:1'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but this torch has no CUDA device "
                         f"(torch {torch.__version__}); use LLMLAB_DEVICE=cpu")
    return spec, dev


def load(spec: str | os.PathLike, *, device: str | torch.device | None = None,
         dtype: torch.dtype | None = None) -> tuple[GPT, Any]:
    """``(model in eval mode, llmlab Tokenizer)`` for ``spec`` on ``device`` (default: see
    ``resolve``) in ``dtype`` (default fp32). Raises ``ValueError`` for a spec that names
    nothing loadable, ``FileNotFoundError`` for a hub id neither cached nor downloadable."""
    _, dev = resolve("book", device)
    dtype = dtype or torch.float32
    text = os.fspath(spec)
    if text == "book":
        model, tok = load_book_model(dtype=dtype)
    elif text == "book-chat":
        model, tok = load_book_chat_model(dtype=dtype)
    elif Path(text).expanduser().is_dir():
        model, tok = load_hf_directory(Path(text).expanduser(), dtype)
    elif _HUB_ID.match(text):
        model, tok = load_hf_directory(hub_snapshot(text), dtype)
    else:
        raise ValueError(f"model spec {text!r} is neither 'book', 'book-chat', an existing "
                         "directory nor a "
                         "hub id like 'Qwen/Qwen3-0.6B'")
    return model.to(dev).eval(), tok


def load_hf_directory(directory: str | os.PathLike, dtype: torch.dtype = torch.float32
                      ) -> tuple[GPT, Any]:
    """Model and tokenizer of a Hugging Face checkpoint directory (``save_pretrained``'s
    layout: ``config.json``, ``model.safetensors`` or its shards, ``tokenizer.json``)."""
    from llmlab.tokenizer import from_hf as tokenizer_from_hf  # chapter 01

    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.exists():
        raise ValueError(f"{directory} has no config.json: not a Hugging Face model directory")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    model = from_hf(_read_weights(directory), config).to(dtype)
    if not (directory / "tokenizer.json").exists():
        raise ValueError(f"{directory} has no tokenizer.json (a fast tokenizer); llmlab reads "
                         "byte-level BPE tokenizers from it")
    try:
        tok = tokenizer_from_hf(directory / "tokenizer.json")
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"{directory / 'tokenizer.json'}: {error}. llmlab's tokenizer reads byte-level BPE "
            "(GPT-2, Llama 3, SmolLM, Qwen); SentencePiece-style BPE (Llama 1/2, TinyLlama, "
            "Mistral 7B) is not supported — the weights alone load with llmlab.model.from_hf"
        ) from error
    tok.chat_template = _chat_template(directory)
    return model, tok


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / "model.safetensors").exists():
        shards = ["model.safetensors"]
    else:
        raise ValueError(f"{directory} has no model.safetensors (nor a sharded index); convert "
                         "other formats with transformers' save_pretrained(safe_serialization)")
    sd: dict[str, torch.Tensor] = {}
    for shard in shards:
        sd |= load_file(str(directory / shard))
    return sd


def _chat_template(directory: Path) -> str | None:
    """The Jinja chat template: ``chat_template.jinja`` or ``tokenizer_config.json``'s key."""
    if (directory / "chat_template.jinja").exists():
        return (directory / "chat_template.jinja").read_text(encoding="utf-8")
    config = directory / "tokenizer_config.json"
    if config.exists():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        return template if isinstance(template, str) else None
    return None


def hub_cache_dir() -> Path:
    """Where ``huggingface_hub`` keeps models: ``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or
    ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path("~/.cache/huggingface")
    return Path(home).expanduser() / "hub"


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in _TRUE
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_snapshot(repo_id: str) -> Path:
    """The local directory of hub model ``repo_id``: the cached snapshot, else (online) a fresh
    download into the cache. Offline and not cached: ``FileNotFoundError`` saying how to fetch."""
    try:
        import huggingface_hub
    except ImportError:
        raise ImportError(f"loading the hub id {repo_id!r} needs huggingface_hub: "
                          "pip install huggingface_hub") from None
    cache = hub_cache_dir()
    fetch = (f"fetch it on a machine with a network: `hf download {repo_id}` (or "
             f"huggingface_hub.snapshot_download({repo_id!r})), with HF_HUB_CACHE={cache}; "
             "or pass a local directory")
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, cache_dir=cache,
                                                      local_files_only=True))
    except Exception as cached_error:  # LocalEntryNotFoundError, across huggingface_hub versions
        if _offline():
            raise FileNotFoundError(f"{repo_id!r} is not in the Hugging Face cache {cache} and "
                                    f"the hub is offline (HF_HUB_OFFLINE); {fetch}"
                                    ) from cached_error
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, cache_dir=cache,
                                                      allow_patterns=_HUB_FILES))
    except Exception as error:  # no network, unknown repo, gated model
        raise FileNotFoundError(f"{repo_id!r} is not in the Hugging Face cache {cache} and could "
                                f"not be downloaded ({type(error).__name__}: {error}); {fetch}"
                                ) from error
