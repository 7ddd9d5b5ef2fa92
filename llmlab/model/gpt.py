"""``GPT``: token (+ position) embeddings, a stack of pre-norm blocks, a final norm, an LM head.

One class serves GPT-2-style and Llama-style configs (see ``GPTConfig``). Initialisation follows
GPT-2: N(0, 0.02) everywhere, and the projections that write into the residual stream
(``o_proj``, the MLP's output) scaled by 1/sqrt(2 n_layer) so the stream's variance does not
grow with depth (Radford et al. 2019, section 2.3). Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llmlab.model.config import GPTConfig
from llmlab.nn import (
    BASE_KINDS,
    Embedding,
    LayerKinds,
    Linear,
    RotaryEmbedding,
    StepContext,
    TransformerBlock,
    fast_cross_entropy,
)
from llmlab.nn.block import make_norm

# Names of the linear layers that write into the residual stream (scaled init).
RESIDUAL_PROJECTIONS = ("o_proj", "mlp.proj", "mlp.down_proj")


class GPT(nn.Module):
    """Decoder-only transformer language model.

    forward(idx: (batch, seq) long, ctx: StepContext | None) -> logits (batch, seq, vocab_size),
    or (batch, vocab_size) at ``ctx.logits_at``. Without a context the step is one fresh causal
    sequence (positions ``0 .. seq-1``, no cache); a KV cache's ``prepare()`` builds the context
    of its next step (:mod:`llmlab.nn.context`). ``kinds`` builds the attention and MLP layers
    the config names (:mod:`llmlab.nn.kinds`; e.g. ``llmlab.attention.LAYER_KINDS`` for MLA).
    """

    def __init__(self, config: GPTConfig, kinds: LayerKinds = BASE_KINDS) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise ValueError(f"GPT expects a GPTConfig, got {type(config).__name__}")
        self.config = c = config
        self.tok_emb = Embedding(c.vocab_size, c.d_model)
        self.pos_emb = Embedding(c.block_size, c.d_model) if c.position == "learned" else None
        self.rope = (
            RotaryEmbedding(c.d_head, c.rope_base, c.rope_layout, max_seq_len=c.block_size,
                            scaling=c.rope_scaling)
            if c.position == "rope" else None
        )
        self.blocks = nn.ModuleList(TransformerBlock(c, self.rope, kinds) for _ in range(c.n_layer))
        self.norm_f = make_norm(c.norm, c.d_model, c.norm_eps, c.bias)
        self.lm_head = Linear(c.d_model, c.vocab_size, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if any(name.endswith(r + ".weight") for r in RESIDUAL_PROJECTIONS):
                nn.init.normal_(p, mean=0.0, std=c.init_std / math.sqrt(2 * c.n_layer))
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight  # one matrix reads and writes tokens

    def _init_weights(self, module: nn.Module) -> None:
        """N(0, init_std) for linear and embedding weights, zero biases; norms keep 1/0."""
        if isinstance(module, (Linear, Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, ctx: StepContext | None = None) -> torch.Tensor:
        """Logits (b, t, vocab_size); with ``ctx.logits_at`` (b,) column indices only those
        (b, vocab_size) — a server needs one position per row, and projecting only those onto the
        vocabulary skips the LM head for the rest (``transformers``' ``logits_to_keep``)."""
        if idx.dim() != 2:
            raise ValueError(f"GPT expects idx (batch, seq) of token ids, got {tuple(idx.shape)}")
        b, t = idx.shape
        if ctx is None:
            ctx = StepContext.causal(b, t, idx.device)
        elif not torch.compiler.is_compiling():
            ctx.check(b, t)
        x = self.tok_emb(idx)  # (b, t, d_model)
        if self.pos_emb is not None:
            if not torch.compiler.is_compiling() and int(ctx.positions.max()) >= self.config.block_size:
                raise ValueError(
                    f"position {int(ctx.positions.max())} >= block_size {self.config.block_size} "
                    "(learned position embeddings cannot extrapolate)"
                )
            x = x + self.pos_emb(ctx.positions)
        for i, block in enumerate(self.blocks):
            x = block(x, ctx, i)
        if ctx.logits_at is not None:
            x = x[torch.arange(b, device=x.device), ctx.logits_at]  # (b, d_model)
        return self.lm_head(self.norm_f(x))  # (b, t, vocab_size) or (b, vocab_size)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats). idx, targets: (batch, seq) -> scalar."""
        return fast_cross_entropy(self(idx), targets)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once). ``non_embedding`` drops token/position tables
        (Kaplan et al.'s N, arXiv:2001.08361) — but keeps an untied LM head."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if self.pos_emb is not None:
                n -= self.pos_emb.weight.numel()
        return n
