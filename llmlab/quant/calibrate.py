"""Calibration data, per-layer input statistics, and perplexity on held-out text.

Post-training methods (GPTQ, AWQ, SmoothQuant, Wanda, SparseGPT) look at what each linear layer
receives on a few hundred calibration sequences: the inputs ``X`` (tokens, in) themselves, their
per-channel magnitudes, or the Hessian of the layer-wise squared error ``H = 2 X^T X``. Calibration
text comes from the training split, evaluation text from the validation split of the book's corpus.
Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from llmlab.data import load_documents
from llmlab.quant.linear import block_linears
from llmlab.train.trainer import evaluate_loss


def corpus_tokens(tokenizer, split: str, n_tokens: int, n_docs: int = 40, seed: int = 0) -> np.ndarray:
    """The first ``n_tokens`` of ``n_docs`` documents of the stdlib corpus (shuffled with ``seed``,
    concatenated) -> (n_tokens,) int64. Raises ValueError when the documents are too short."""
    docs = load_documents(split=split)
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed)).tolist()
    ids: list[int] = []
    for i in order[:n_docs]:
        ids += tokenizer.encode(docs[i].text)
        if len(ids) >= n_tokens:
            return np.asarray(ids[:n_tokens], dtype=np.int64)
    raise ValueError(f"{n_docs} {split} documents hold {len(ids)} tokens, fewer than {n_tokens}")


def calibration_batch(tokenizer, n_seq: int = 16, seq_len: int = 128, seed: int = 0) -> torch.Tensor:
    """(n_seq, seq_len) token ids from the training split."""
    return torch.from_numpy(corpus_tokens(tokenizer, "train", n_seq * seq_len, seed=seed)).view(n_seq, -1)


def perplexity(model: nn.Module, tokens: np.ndarray, seq_len: int = 256, batch_size: int = 8) -> float:
    """exp(mean next-token loss) over consecutive windows of ``tokens`` (fp32)."""
    return math.exp(evaluate_loss(model, tokens, batch_size, seq_len))


@torch.no_grad()
def collect_inputs(model: nn.Module, ids: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Run ``model(ids)`` and record the input of each named sub-module -> {name: (tokens, in)}."""
    found: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    hooks = []
    for name in names:
        def hook(module, args, out, name=name):
            found[name].append(args[0].detach().reshape(-1, args[0].shape[-1]).float())
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        model(ids)
    finally:
        for h in hooks:
            h.remove()
    return {n: torch.cat(v) for n, v in found.items()}


def hessian(x: torch.Tensor) -> torch.Tensor:
    """GPTQ's H = 2 X^T X / n for inputs x: (n, in) -> (in, in) float32 (the 1/n keeps it O(1))."""
    x = x.float()
    return 2 * x.t() @ x / x.shape[0]


def block_names(model: nn.Module, i: int) -> list[str]:
    """Names of the linear layers of block ``i``, in the order data flows through them."""
    return [n for n in block_linears(model) if n.startswith(f"blocks.{i}.")]


@torch.no_grad()
def logit_kl(reference: nn.Module, model: nn.Module, ids: torch.Tensor) -> float:
    """Mean per-token KL(p_reference || p_model) of next-token distributions (nats), the
    quantization-quality metric llama.cpp reports next to perplexity. ids: (batch, seq)."""
    logp_ref = torch.log_softmax(reference(ids).float(), -1)
    logp = torch.log_softmax(model(ids).float(), -1)
    return (logp_ref.exp() * (logp_ref - logp)).sum(-1).mean().item()
