"""Saving and loading llmlab models: ``config.json`` + ``model.safetensors`` in one folder.

Tied embeddings are stored once (safetensors refuses shared tensors); loading re-ties them.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from llmlab.model.config import GPTConfig
from llmlab.model.gpt import GPT
from llmlab.nn.kinds import BASE_KINDS, LayerKinds


def save_model(model: GPT, directory: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (weights cast to ``dtype``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_embeddings:
        sd.pop("lm_head.weight", None)
    save_file(sd, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    return directory


def load_model(directory: str | Path, dtype: torch.dtype = torch.float32,
               kinds: LayerKinds = BASE_KINDS) -> GPT:
    """Inverse of ``save_model``: a ``GPT`` in eval mode (``kinds``: see :class:`GPT`)."""
    directory = Path(directory)
    config = GPTConfig.from_dict(json.loads((directory / "config.json").read_text()))
    model = GPT(config, kinds)
    sd = {k: v.to(dtype) for k, v in load_file(str(directory / "model.safetensors")).items()}
    if config.tie_embeddings:
        sd["lm_head.weight"] = sd["tok_emb.weight"]
    model.load_state_dict(sd, strict=True)
    if config.tie_embeddings:
        model.lm_head.weight = model.tok_emb.weight
    return model.to(dtype).eval()
