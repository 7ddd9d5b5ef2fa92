"""Prompt tuning: learn the embeddings of a few "virtual tokens" put in front of every input.

Lester et al., "The Power of Scale for Parameter-Efficient Prompt Tuning", arXiv:2104.08691.
The model is frozen; the only parameters are P soft-prompt vectors (P, d_model), initialised from
the embeddings of real tokens. The virtual tokens get their own ids ``vocab_size .. vocab_size+P-1``
that only :class:`PromptEmbedding` understands, so the model's forward, its positions and its KV
cache need no change: the prompt is just P more tokens at the start.
Taught in chapter 05 (solutions/05_peft).
"""

from __future__ import annotations

import torch
from torch import nn

from llmlab.peft.inject import freeze


class PromptEmbedding(nn.Module):
    """Token embedding that maps ids >= ``vocab_size`` to learned soft-prompt rows.

    idx: (...) long in [0, vocab_size + P) -> (..., d_model).
    """

    def __init__(self, tok_emb: nn.Module, prompt: torch.Tensor) -> None:
        super().__init__()
        self.tok_emb, self.vocab_size = tok_emb, tok_emb.weight.shape[0]
        self.prompt = nn.Parameter(prompt.detach().clone())  # (P, d_model)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        virtual = idx >= self.vocab_size
        x = self.tok_emb(torch.where(virtual, 0, idx))
        soft = self.prompt[(idx - self.vocab_size).clamp(0, self.prompt.shape[0] - 1)]
        return torch.where(virtual[..., None], soft.to(x.dtype), x)


class PromptTuning(nn.Module):
    """A frozen llmlab ``GPT`` with ``n_virtual`` learned prompt vectors in front of its input.

    forward(idx: (batch, seq)) -> logits (batch, seq, vocab) for the real tokens only.
    ``init_ids``: real token ids whose embeddings start the prompt (default: random ids).
    """

    def __init__(self, model: nn.Module, n_virtual: int = 8, init_ids: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if n_virtual < 1:
            raise ValueError(f"n_virtual must be >= 1, got {n_virtual}")
        freeze(model)
        emb = model.tok_emb
        V = emb.weight.shape[0]
        if init_ids is None:
            init_ids = torch.randint(0, V, (n_virtual,), generator=generator)
        if init_ids.shape != (n_virtual,):
            raise ValueError(f"init_ids must be ({n_virtual},), got {tuple(init_ids.shape)}")
        model.tok_emb = PromptEmbedding(emb, emb.weight[init_ids.to(emb.weight.device)])
        self.model, self.n_virtual = model, n_virtual

    def virtual_ids(self, batch: int, device: torch.device) -> torch.Tensor:
        """(batch, P) ids of the virtual tokens."""
        v = self.model.tok_emb.vocab_size
        return torch.arange(v, v + self.n_virtual, device=device).expand(batch, -1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        full = torch.cat([self.virtual_ids(idx.shape[0], idx.device), idx], 1)
        return self.model(full)[:, self.n_virtual:]

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self(idx)
        return nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                           ignore_index=-100)
