"""``Linear`` and ``Embedding``: the two parameterised lookups every transformer is made of.

Weights follow PyTorch's layout (``Linear.weight`` is ``(out_features, in_features)``) so
state dicts move between llmlab, ``torch.nn`` and Hugging Face without transposes (GPT-2's
``Conv1D`` is the exception; ``llmlab.model.hf`` transposes it). Initialisation is left to
the model (``GPT._init_weights``), which knows the scaled-residual rule.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    """y = x W^T + b.  x: (..., in_features) -> (..., out_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))  # (out, in)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        bound = 1.0 / math.sqrt(in_features)  # torch.nn.Linear's default scale
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear expected input (..., {self.in_features}), got {tuple(x.shape)}"
            )
        # F.linear is exactly x @ W.T + b in one fused call (and autocasts to bf16).
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, bias={self.bias is not None}"


class Embedding(nn.Module):
    """Row lookup: ``weight[idx]`` — the same as ``one_hot(idx) @ weight`` without the matmul.

    idx: (...) long in [0, num_embeddings) -> (..., embedding_dim).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = nn.Parameter(torch.randn(num_embeddings, embedding_dim))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"Embedding expects integer ids, got dtype {idx.dtype}")
        # The range check reads the ids (a device sync, a graph break): it runs eagerly and is
        # left out of a torch.compile graph, where F.embedding's own bounds check still fires.
        if not torch.compiler.is_compiling() and idx.numel() and (
                int(idx.max()) >= self.num_embeddings or int(idx.min()) < 0):
            raise ValueError(
                f"Embedding: ids must be in [0, {self.num_embeddings}), got range "
                f"[{int(idx.min())}, {int(idx.max())}]"
            )
        return F.embedding(idx, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
