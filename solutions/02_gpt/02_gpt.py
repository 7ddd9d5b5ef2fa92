# %% [markdown]
# # 02 · A GPT from scratch, and pretraining it
#
# This chapter builds the model the rest of the book uses: a decoder-only transformer in the
# Llama style — RMSNorm, rotary position embeddings, grouped-query attention, a SwiGLU MLP —
# written piece by piece in `llmlab.nn` and `llmlab.model`, checked logit-for-logit against
# Hugging Face `transformers`, and pretrained on CPU by `llmlab.train` on real text that every
# machine has: the Python standard library.
#
# **You will learn to**
# 1. write every piece of a transformer yourself — RMSNorm, RoPE, causal attention with grouped
#    KV heads, the pre-norm block, the model's forward, cross-entropy — and check each against
#    `llmlab`;
# 2. write the optimizer, its schedule and the training loop (gradient accumulation, global-norm
#    clipping, evaluation, checkpoints that resume bit for bit);
# 3. pretrain *your* model with *your* code live, read its loss curve against a unigram baseline
#    and llmlab's book model, and sample with your own top-k/top-p sampler;
# 4. account for training memory (weights, gradients, Adam states, activations) and compute
#    (6·N·D), measure MFU on this machine, and run a small scaling sweep;
# 5. compare your model's config with GPT-2, Llama 3, Qwen2 and DeepSeek-V3.

# %% [markdown]
# **Budget:** ~1 min on 2 CPU cores · peak RAM ~1 GB. No GPU and no network needed.

# %% tags=["nbval-ignore-output"]
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from llmlab import grading
from llmlab_book import ch02_gpt as mistakes
from llmlab.utils import seed_all

seed_all(0)
# The models in this chapter are small: a second thread costs more in synchronisation than it
# saves, and one thread makes every number independent of your machine's core count.
torch.set_num_threads(1)
print(f"torch {torch.__version__} · {torch.get_num_threads()} thread")

# %% [markdown]
# ## 1 · The model in one picture
#
# A GPT maps a sequence of token ids to, at every position, a probability distribution over
# the next token:
#
# ```
# ids (batch, seq) ─► token embedding ─► x (batch, seq, d_model)
#                                        │
#            ┌───────────── n_layer × ───┤ pre-norm block
#            │  x = x + Attention(RMSNorm(x))    ◄ tokens exchange information (causally)
#            │  x = x + SwiGLU(RMSNorm(x))       ◄ each token is transformed on its own
#            └───────────────────────────┤
#                                        ▼
#                     RMSNorm ─► LM head (d_model → vocab) ─► logits (batch, seq, vocab)
# ```
#
# The vector `x` that flows down the middle is the **residual stream**: each sublayer reads a
# normalised copy of it and *adds* its result back. Training minimises the cross-entropy of the
# logits against the same sequence shifted by one token.
#
# GPT-2 (2019) and Llama (2023) differ only in the pieces, not the plan:
#
# | piece | GPT-2 | Llama / Qwen2 / this book |
# |---|---|---|
# | positions | learned vectors added to x | RoPE: rotate q and k by the position |
# | norm | LayerNorm (mean, variance, bias) | RMSNorm (scale only) |
# | MLP | GELU, 4·d_model | SwiGLU, ≈ 8/3·d_model |
# | KV heads | one per query head | shared by groups of query heads (GQA) |
#
# One `GPTConfig` expresses both (`GPTConfig.gpt2_style()`, `GPTConfig.llama_style()`), and
# `llmlab.model.from_hf` loads either family's Hugging Face weights. Here is the book's model —
# trained by `llmlab pretrain --preset book`, shipped with the repository, loaded in one call:

# %%
from llmlab.model import GPT, GPTConfig, load_book_model
from llmlab.model.counting import param_count

book, tok = load_book_model()
cfg = book.config
print(f"vocab {cfg.vocab_size} · context {cfg.block_size} · {cfg.n_layer} layers · d_model "
      f"{cfg.d_model} · {cfg.n_head} query heads sharing {cfg.n_kv_head} KV heads · d_ff {cfg.d_ff}")
for part, n in param_count(cfg).items():
    print(f"  {part:<20} {n:>10,}")

# %%
counts = param_count(cfg)
share = {part: counts[part] / counts["total"] for part in ("token_embedding", "attention", "mlp")}
print("shares of the parameters: " + " · ".join(f"{p} {s:.0%}" for p, s in share.items()))

# %% [markdown]
# The parameters live in a handful of matrices. The token embedding is tied (the same matrix is
# the LM head, so `lm_head` counts 0) and holds the share printed above; at this size it is a
# large slice of the model, next to the MLPs, while in a 7B model it is a few percent and the
# MLPs hold most of the weights (Llama 3 8B: 0.5 B of 8 B in the embedding, another 0.5 B in its
# untied LM head, 5.6 B in the MLPs).
# The text it reads is byte-level BPE from chapter 01, trained on the same corpus:

# %%
snippet = 'def greet(name):\n    """Say hello."""\n    return f"Hello, {name}!"\n'
ids = tok.encode(snippet)
print(len(snippet), "characters ->", len(ids), "tokens")
print(" | ".join(tok.decode([i]) for i in ids))

# %% [markdown]
# ## 2 · The pieces, one exercise each
#
# Each piece below is first explained, then asked for. `llmlab`'s own version of the piece is
# switched off while your answer runs under a check. Once a piece passes, the chapter builds
# with it — your blocks, forward, loss, optimizer step, schedule, training loop and sampler train
# and run the live model in section 4; skip any exercise and the chapter still runs, with
# `llmlab`'s piece in its place and a note saying so.
#
# ### RMSNorm
#
# A block's input can have any scale; the sublayers want unit scale. LayerNorm
# (Ba et al. 2016) subtracts the mean and divides by the standard deviation; **RMSNorm**
# (Zhang & Sennrich 2019, [arXiv:1910.07467](https://arxiv.org/abs/1910.07467)) skips the
# mean — cheaper, and just as good in practice:
#
# $$\operatorname{RMSNorm}(x) = \frac{x}{\sqrt{\tfrac{1}{d}\sum_i x_i^2 + \varepsilon}} \odot g .$$
#
# Llama computes it in float32 even when activations are bfloat16 and casts back before
# multiplying by the gain $g$: bfloat16 has float32's exponent range but only 8 bits of
# mantissa, so a sum of thousands of squares loses the small ones, and in float16 a square
# overflows once $|x| > 256$.

# %% [markdown]
# ### Exercise 2.1 — RMSNorm · 2 points · difficulty 1 · ~5 min
#
# `rms_norm_(x, weight, eps)` over the last dimension: `x (..., d)`, `weight (d,)` → `(..., d)`
# in `x`'s dtype. Compute in float32, normalise, cast back to `x.dtype`, then multiply by
# `weight`.
#
# <details><summary>Hint 1</summary>The mean of squares is over the last dimension only, and it
# must broadcast back against `x`.</details>

# %% solution="rmsnorm"
def rms_norm_(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last dim. x: (..., d), weight: (d,)."""
    ### BEGIN SOLUTION
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * y.to(x.dtype)
    ### END SOLUTION


# %% check="rmsnorm" points=1
from llmlab.nn import rms_norm

RMSNORM_TWINS = [torch.nn.functional.rms_norm]  # also blocks torch.rms_norm
grading.check_function(rms_norm_, rms_norm, [
    grading.Case(torch.randn(2, 5, 8), torch.ones(8), note="unit gain"),
    grading.Case(torch.randn(3, 16) * 10, torch.randn(16), note="large inputs, random gain"),
    grading.Case(torch.randn(2, 8) * 1e-3, torch.ones(8), 1e-4, note="tiny inputs, where eps matters"),
], block=RMSNORM_TWINS, mistakes=mistakes.CATALOGUE.mistakes("rmsnorm"),
   hint="the mean is over the last dimension only; eps goes inside the square root")

# %% hidden="rmsnorm" points=1
grading.check_function(rms_norm_, rms_norm, [
    grading.Case(torch.randn(2, 3, 4, 32), torch.randn(32), eps=1e-5, note="4-d input, eps=1e-5"),
    grading.Case(torch.zeros(2, 8), torch.ones(8), note="all zeros: eps keeps it finite"),
    grading.Case(torch.randn(4, 64).bfloat16(), torch.randn(64).bfloat16(), note="bfloat16"),
    grading.Case(torch.randn(3, 16) * 1e-2, torch.randn(16), 1e-3, note="small inputs, eps=1e-3"),
], atol=1e-2, rtol=1e-2, block=RMSNORM_TWINS, mistakes=mistakes.CATALOGUE.mistakes("rmsnorm"))

# %% [markdown]
# ### Rotary position embeddings (RoPE)
#
# Attention compares a query with keys by a dot product, which by itself ignores where tokens
# are. RoPE (Su et al. 2021, [arXiv:2104.09864](https://arxiv.org/abs/2104.09864)) rotates each
# pair of channels of a query or key at position $m$ by the angle $m\,\theta_i$, with
# $\theta_i = 10000^{-2i/d}$. A rotation by $m\theta$ dotted with a rotation by $n\theta$ depends
# only on $m-n$, so attention sees **relative** positions — with no parameters at all.
#
# For the pair $(a, b)$: $(a, b) \mapsto (a\cos m\theta_i - b\sin m\theta_i,\; a\sin m\theta_i + b\cos m\theta_i)$.
# *Which* channels pair up is a convention: the paper pairs neighbours $(x_{2i}, x_{2i+1})$;
# Hugging Face Llama pairs $(x_i, x_{i+d/2})$ — the "half" layout. The two are the same model
# up to a permutation of the rows of $W_q, W_k$ (`llmlab.nn.interleaved_to_half_permutation`).

# %%
from llmlab.nn import RotaryEmbedding

rope = RotaryEmbedding(d_head=32, layout="half")
q = torch.randn(1, 1, 1, 32)
k = torch.randn(1, 1, 1, 32)


def rope_score(m: int, n: int) -> float:
    cm, sm = rope(torch.tensor([[m]]))
    cn, sn = rope(torch.tensor([[n]]))
    return float((rope.rotate(q, cm, sm) * rope.rotate(k, cn, sn)).sum())


offsets = list(range(0, 64))
fig, ax = plt.subplots(figsize=(7, 2.8))
for start in (0, 100, 1000):
    ax.plot(offsets, [rope_score(start + o, start) for o in offsets], label=f"query at {start}+Δ, key at {start}")
ax.set_xlabel("relative distance Δ"), ax.set_ylabel("q·k after RoPE")
ax.set_title("RoPE: the score depends only on the distance (the three curves coincide)")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 2.2 — apply RoPE (half layout) · 2 points · difficulty 2 · ~10 min
#
# `apply_rope_(x, cos, sin)`: `x (batch, seq, heads, d_head)`, `cos, sin (batch, seq, d_head/2)`
# (the angles' cosines and sines, already computed). In the half layout channel $i$ pairs with
# channel $i + d/2$: rotate every such pair by its angle and return the result in the same layout.
#
# <details><summary>Hint 1</summary>Split `x` into its first and second halves along the last
# dimension; the rotated halves are combinations of both.</details>
# <details><summary>Hint 2</summary>`cos` and `sin` have no head axis: give them one so they
# broadcast over the heads.</details>

# %% solution="rope"
def apply_rope_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[i], x[i + d/2]). x: (b, s, h, d); cos, sin: (b, s, d/2) -> (b, s, h, d)."""
    ### BEGIN SOLUTION
    cos, sin = cos.unsqueeze(2).to(x.dtype), sin.unsqueeze(2).to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    ### END SOLUTION


# %% check="rope" points=1
from llmlab.nn import apply_rope, rope_cos_sin, rope_frequencies


def _angles(b: int, s: int, d: int, start: int = 0):
    return rope_cos_sin(torch.arange(start, start + s).expand(b, s), rope_frequencies(d))


grading.check_function(apply_rope_, apply_rope, [
    grading.Case(torch.randn(1, 4, 1, 8), *_angles(1, 4, 8), note="one head"),
    grading.Case(torch.randn(2, 6, 3, 16), *_angles(2, 6, 16, start=5), note="3 heads, positions 5..10"),
], mistakes=mistakes.CATALOGUE.mistakes("rope"), block=[RotaryEmbedding.rotate],
   hint="pair channel i with channel i + d/2 (not 2i with 2i+1); broadcast cos over heads")

# %% hidden="rope" points=1
grading.check_function(apply_rope_, apply_rope, [
    grading.Case(torch.randn(3, 5, 4, 64), *_angles(3, 5, 64, start=1000), note="far positions"),
    grading.Case(torch.randn(1, 1, 2, 2), *_angles(1, 1, 2, start=7), note="d_head = 2"),
], mistakes=mistakes.CATALOGUE.mistakes("rope"), block=[RotaryEmbedding.rotate])

# %% [markdown]
# ### Causal attention with grouped KV heads
#
# Each token's query $q$ scores every earlier token's key, the scores become weights by a
# softmax, and the output is the weighted sum of values (Vaswani et al. 2017,
# [arXiv:1706.03762](https://arxiv.org/abs/1706.03762)):
#
# $$\operatorname{Attn}(Q,K,V) = \operatorname{softmax}\!\Big(\frac{QK^\top}{\sqrt{d_\text{head}}} + M\Big)V,
# \qquad M_{ij} = \begin{cases}0 & j \le i\\ -\infty & j > i\end{cases}$$
#
# The mask $M$ makes it **causal**: position $i$ never sees the future, so one forward pass
# trains all positions at once. **Grouped-query attention** (Ainslie et al. 2023,
# [arXiv:2305.13245](https://arxiv.org/abs/2305.13245)) keeps fewer key/value heads than query
# heads: query head $h$ uses KV head $h \,/\!/\, (n_\text{head}/n_\text{kv})$. The book's model
# has 4 query heads sharing 2 KV heads, a 2× smaller KV cache (chapter 08). Here are its
# attention weights on a line of code (layer 0):

# %%
from llmlab.nn import causal_attention

line = tok.encode("for key, value in sorted(items.items()):")
x_line = torch.tensor([line])
captured = {}
handle = book.blocks[0].norm1.register_forward_hook(lambda m, i, o: captured.update(h=o))
with torch.no_grad():
    book(x_line)
handle.remove()
attn0 = book.blocks[0].attn
h = captured["h"]
b_, t_ = x_line.shape
qh = attn0.q_proj(h).view(b_, t_, cfg.n_head, cfg.d_head)
kh = attn0.k_proj(h).view(b_, t_, cfg.n_kv_head, cfg.d_head)
cos, sin = book.rope(torch.arange(t_).expand(1, t_))
qh, kh = book.rope.rotate(qh, cos, sin), book.rope.rotate(kh, cos, sin)
scores = (qh.transpose(1, 2) @ kh.transpose(1, 2).repeat_interleave(cfg.n_rep, 1).transpose(-2, -1))
weights = torch.softmax(scores / math.sqrt(cfg.d_head) + torch.triu(torch.full((t_, t_), -math.inf), 1), -1)
labels = [tok.decode([i]) for i in line]
fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
for hd, ax in zip((0, 1, cfg.n_head - 1), axes):
    ax.imshow(weights[0, hd].detach(), cmap="Blues")
    ax.set_title(f"head {hd} (KV head {hd // cfg.n_rep})", fontsize=9)
    ax.set_xticks(range(t_), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(t_), labels, fontsize=7)
plt.suptitle("causal attention weights of the book's model, layer 0 (rows: queries)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 2.3 — causal attention with grouped KV heads · 3 points · difficulty 2 · ~15 min
#
# `causal_attention_(q, k, v)`: `q (batch, n_head, seq, d_head)`, `k, v (batch, n_kv_head, seq,
# d_head)` with `n_head` a multiple of `n_kv_head` → `(batch, n_head, seq, d_head)`: the
# equation above, with query head $h$ reading KV head $h \,/\!/\, (n_\text{head}/n_\text{kv})$.
# Do not call `scaled_dot_product_attention`.
#
# <details><summary>Hint 1</summary>Make the KV heads as many as the query heads first. Query
# heads 0 and 1 share KV head 0 when the group is 2: which repeat gives that order?</details>
# <details><summary>Hint 2</summary>The mask is $-\infty$ strictly above the diagonal (key
# $j$ after query $i$); the diagonal itself is visible.</details>

# %% solution="attention"
def causal_attention_(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal softmax(q k^T / sqrt(d)) v with grouped KV heads. -> (batch, n_head, seq, d_head)."""
    ### BEGIN SOLUTION
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)
    v = v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    t = q.shape[2]
    future = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
    ### END SOLUTION


# %% check="attention" points=1
import llmlab.attention as llmlab_attention
from llmlab.attention.gqa import gqa_reference
from llmlab.nn import fast_causal_attention

# Every other attention that computes the same thing: llmlab's and torch's.
ATTENTION_TWINS = [fast_causal_attention, torch.nn.functional.scaled_dot_product_attention,
                   llmlab_attention.naive_attention, gqa_reference,
                   llmlab_attention.grouped_attention, llmlab_attention.flash_attention,
                   llmlab_attention.flash_attention_forward, llmlab_attention.sliding_window_reference]
ATTENTION_MISTAKES = mistakes.CATALOGUE.mistakes("attention")

grading.check_function(causal_attention_, causal_attention, [
    grading.Case(torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8),
                 note="multi-head: n_kv_head == n_head"),
    grading.Case(torch.randn(2, 6, 7, 16), torch.randn(2, 2, 7, 16), torch.randn(2, 2, 7, 16),
                 note="GQA: 6 query heads, 2 KV heads"),
], block=ATTENTION_TWINS,
   mistakes=ATTENTION_MISTAKES,
   hint="query head h uses KV head h // group; mask j > i; scale by 1/sqrt(d_head)")

# %% hidden="attention" points=2
grading.check_function(causal_attention_, causal_attention, [
    grading.Case(torch.randn(2, 4, 9, 8), torch.randn(2, 1, 9, 8), torch.randn(2, 1, 9, 8),
                 note="MQA: one KV head"),
    grading.Case(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4),
                 note="a single token"),
    grading.Case(torch.randn(1, 8, 33, 32) * 5, torch.randn(1, 4, 33, 32) * 5,
                 torch.randn(1, 4, 33, 32), note="large scores, 33 tokens"),
], block=ATTENTION_TWINS,
   mistakes=ATTENTION_MISTAKES)

# %% [markdown]
# `llmlab.nn.causal_attention` is this readable version; `fast_causal_attention` calls PyTorch's
# fused `scaled_dot_product_attention` (FlashAttention-style on CPU: it never stores the
# `(seq, seq)` matrix) and is tested to agree. The model uses the fast one.
#
# ### SwiGLU
#
# The MLP transforms each token independently. GPT-2 used $W_2\,\mathrm{GELU}(W_1x)$; Llama
# uses a **gated** unit (Shazeer 2020, [arXiv:2002.05202](https://arxiv.org/abs/2002.05202)):
#
# $$\operatorname{SwiGLU}(x) = W_\text{down}\big(\operatorname{silu}(W_\text{gate}x)\odot W_\text{up}x\big),\qquad \operatorname{silu}(z) = z\,\sigma(z).$$
#
# Three matrices instead of two, so $d_\text{ff} \approx \tfrac{8}{3}d_\text{model}$ keeps the
# FLOPs of a 4× GELU MLP. Shazeer reported lower perplexity at equal cost; "we offer no
# explanation … we attribute their success … to divine benevolence".

# %%
from llmlab.nn import swiglu

x_mlp = torch.randn(3, 8)
w_gate, w_up, w_down = torch.randn(20, 8), torch.randn(20, 8), torch.randn(8, 20)
by_hand = (torch.nn.functional.silu(x_mlp @ w_gate.T) * (x_mlp @ w_up.T)) @ w_down.T
print("llmlab.nn.swiglu matches the equation:", torch.allclose(swiglu(x_mlp, w_gate, w_up, w_down), by_hand,
                                                              atol=1e-5))

# %% [markdown]
# ### The pre-norm block
#
# A block is two residual updates: attention, then the MLP, each reading a normalised copy of
# the stream. Normalising the *input* of each sublayer (pre-norm, as in GPT-2 and Llama) rather
# than the sum (post-norm, the 2017 transformer) keeps a clean identity path from the loss to
# every layer, which is why deep pre-norm models train without delicate warmup (Xiong et al.
# 2020, [arXiv:2002.04745](https://arxiv.org/abs/2002.04745)).
#
# The block is built from **your** pieces. Each of your three functions so far is used from here
# on where it passes its check (llmlab's where it does not, with a note): `your_rms_norm` builds
# llmlab's `RMSNorm` layer computing with your `rms_norm_`; `your_attention` keeps llmlab's
# projections and KV-cache hooks (chapter 08) but rotates with your `apply_rope_` and attends
# with your `causal_attention_` (a cached decode step, whose queries are fewer than its keys,
# uses llmlab's kernel).

# %%
import types  # noqa: E402

from llmlab.nn import CausalSelfAttention, RMSNorm, SwiGLU  # noqa: E402

rms_norm_fn = grading.prefer_yours(rms_norm_, rms_norm, [grading.Case(torch.randn(3, 16), torch.randn(16))],
                                   name="rms_norm", block=RMSNORM_TWINS)
rope_fn = grading.prefer_yours(apply_rope_, apply_rope,
                               [grading.Case(torch.randn(2, 6, 3, 16), *_angles(2, 6, 16, 5))],
                               name="apply_rope", block=[RotaryEmbedding.rotate])
attention_fn = grading.prefer_yours(causal_attention_, causal_attention,
                                    [grading.Case(torch.randn(2, 6, 7, 16), torch.randn(2, 2, 7, 16),
                                                  torch.randn(2, 2, 7, 16))],
                                    name="causal_attention", block=ATTENTION_TWINS)


def _rms_norm_forward(self, x: torch.Tensor) -> torch.Tensor:
    return rms_norm_fn(x, self.weight, self.eps)


def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return rope_fn(x, cos, sin) if self.layout == "half" else apply_rope(x, cos, sin, self.layout)


def your_attend(q, k, v, mask=None):
    """The chosen `causal_attention`; a KV cache's offset mask goes to llmlab's fast kernel."""
    if mask is None and q.shape[-2] == k.shape[-2]:
        return attention_fn(q, k, v)
    return fast_causal_attention(q, k, v, mask)


def your_rms_norm(d: int, eps: float = 1e-6) -> RMSNorm:
    """llmlab's RMSNorm layer (its `weight`) computing with the chosen `rms_norm`."""
    layer = RMSNorm(d, eps)
    layer.forward = types.MethodType(_rms_norm_forward, layer)
    return layer


def your_attention(d_model: int, n_head: int, n_kv_head: int | None = None,
                   rope: RotaryEmbedding | None = None) -> CausalSelfAttention:
    """llmlab's projections and cache hooks around the chosen RoPE and attention."""
    if rope is not None:
        rope = RotaryEmbedding(rope.d_head, rope.base, rope.layout)
        rope.rotate = types.MethodType(_rotate, rope)
    attn = CausalSelfAttention(d_model, n_head, n_kv_head, rope=rope)
    attn.attend = your_attend
    return attn


# %% [markdown]
# ### Exercise 2.4 — a Llama-style block · 3 points · difficulty 2 · ~10 min
#
# Build `Block(config, rope)` from the layers above:
# `self.norm1 = your_rms_norm(d_model, norm_eps)`,
# `self.attn = your_attention(d_model, n_head, n_kv_head, rope=rope)`,
# `self.norm2 = your_rms_norm(d_model, norm_eps)`, `self.mlp = SwiGLU(d_model, d_ff)` (llmlab's
# SwiGLU, shown above) — these names, so the check can load the reference weights.
# `forward(x, ctx=None, layer_idx=0)` passes the last two arguments (the step context, below,
# and the layer's index) to `self.attn` and returns `x + attn(norm1(x))` followed by
# `+ mlp(norm2(·))`.
#
# <details><summary>Hint 1</summary>Two residual updates: the second one reads the stream
# *after* the first has been added.</details>

# %% solution="block"
class Block(nn.Module):
    """Pre-norm transformer block. forward: (batch, seq, d_model) -> (batch, seq, d_model)."""

    def __init__(self, config: GPTConfig, rope: RotaryEmbedding | None = None) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        self.norm1 = your_rms_norm(config.d_model, config.norm_eps)
        self.attn = your_attention(config.d_model, config.n_head, config.n_kv_head, rope=rope)
        self.norm2 = your_rms_norm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config.d_model, config.d_ff)
        ### END SOLUTION

    def forward(self, x: torch.Tensor, ctx=None, layer_idx: int = 0) -> torch.Tensor:
        ### BEGIN SOLUTION
        x = x + self.attn(self.norm1(x), ctx, layer_idx)
        return x + self.mlp(self.norm2(x))
        ### END SOLUTION


# %% check="block" points=1
from llmlab.nn import TransformerBlock

small = GPTConfig.llama_style(d_model=32, n_head=4, n_kv_head=2, d_ff=64)
grading.check_module(Block, TransformerBlock, init=dict(config=small, rope=RotaryEmbedding(8)),
                     inputs=[grading.Case(torch.randn(2, 6, 32), note="batch 2, 6 tokens")],
                     mistakes=mistakes.CATALOGUE.mistakes("block"),
                     hint="both sublayers add to x (residual); each reads a normalised copy")

# %% hidden="block" points=2
grading.check_module(Block, TransformerBlock,
                     init=dict(config=GPTConfig.llama_style(d_model=48, n_head=6, n_kv_head=3, d_ff=96),
                               rope=RotaryEmbedding(8)),
                     inputs=[grading.Case(torch.randn(1, 9, 48) * 3, note="6 heads / 3 KV heads"),
                             grading.Case(torch.randn(3, 1, 48), note="one token")],
                     mistakes=mistakes.CATALOGUE.mistakes("block"))

# %% [markdown]
# ### The whole forward
#
# The model is the embedding, the blocks, a final norm and the LM head. Each block needs the
# **positions** of its tokens (RoPE rotates by them): `0 … seq-1` for a fresh sequence, and,
# when a KV cache already holds tokens (chapter 08), the positions after them. A GPT-2-style
# config has no RoPE but a learned position embedding, added to the token embedding.
#
# What one forward needs besides the ids travels in one object, the **step context**
# `ctx` (`llmlab.nn.StepContext`): `ctx.positions (batch, seq)`, `ctx.mask` (None: plain causal
# attention), `ctx.cache` (a KV cache the attention layers write to) and `ctx.logits_at`
# (`(batch,)`: the one column per row whose logits are wanted, or None for all). A KV cache builds
# it (`cache.prepare(ids)`, chapter 08); `ctx=None` is a fresh sequence.
#
# ### Exercise 2.5 — `GPT.forward` · 3 points · difficulty 2 · ~15 min
#
# `gpt_forward_(model, idx, ctx=None)`: `idx (batch, seq)` → logits `(batch, seq, vocab)`, or
# `(batch, vocab)` when `ctx.logits_at` is given (the LM head then projects only those columns),
# using `model`'s modules: `tok_emb`, `pos_emb` (None for RoPE models), `blocks` (call block `i`
# as `block(x, ctx, i)`), `norm_f` and `lm_head`. The positions are `ctx.positions`, or
# `0 … seq-1` without a context.
#
# <details><summary>Hint 1</summary>`torch.arange(seq)` is one row of positions;
# `.expand(batch, seq)` gives every row without a copy.</details>
# <details><summary>Hint 2</summary>The final norm comes after the last block and before the
# LM head; the learned position embedding is looked up with the positions, not with the ids.
# </details>
# <details><summary>Hint 3</summary>`x[torch.arange(batch), ctx.logits_at]` picks one
# `(d_model,)` vector per row.</details>

# %% solution="gpt_forward"
def gpt_forward_(model: GPT, idx: torch.Tensor, ctx=None) -> torch.Tensor:
    """Logits of a GPT. idx: (batch, seq) long -> (batch, seq, vocab_size), or (batch, vocab_size)
    at ``ctx.logits_at``."""
    ### BEGIN SOLUTION
    b, t = idx.shape
    positions = torch.arange(t, device=idx.device).expand(b, t) if ctx is None else ctx.positions
    x = model.tok_emb(idx)
    if model.pos_emb is not None:
        x = x + model.pos_emb(positions)
    for i, block in enumerate(model.blocks):
        x = block(x, ctx, i)
    if ctx is not None and ctx.logits_at is not None:
        x = x[torch.arange(b, device=x.device), ctx.logits_at]
    return model.lm_head(model.norm_f(x))
    ### END SOLUTION


# %% check="gpt_forward" points=1
from llmlab.nn import StepContext  # noqa: E402


def _gpt(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.llama_style(vocab_size=64, block_size=32, d_model=32, n_layer=2, n_head=4,
                                     n_kv_head=2, d_ff=64).replace(**overrides)).eval()


def gpt_reference(model, idx, ctx=None):
    return model(idx, ctx)


GPT_MISTAKES = mistakes.CATALOGUE.mistakes("gpt_forward")
grading.check_function(gpt_forward_, gpt_reference, [
    grading.Case(_gpt(), torch.randint(0, 64, (2, 7)), note="a Llama-style model"),
    grading.Case(_gpt(1), torch.randint(0, 64, (1, 5)), StepContext(torch.tensor([[3, 4, 5, 6, 7]])),
                 note="positions given"),
    grading.Case(_gpt(3), torch.randint(0, 64, (2, 4)),
                 StepContext(torch.arange(4).expand(2, 4), logits_at=torch.tensor([3, 1])),
                 note="logits at one column per row"),
], block=[GPT.forward], mistakes=GPT_MISTAKES,
   hint="embedding → blocks (with the context) → pick ctx.logits_at → norm_f → lm_head")

# %% hidden="gpt_forward" points=2
from llmlab.kvcache import ContiguousKVCache  # noqa: E402  (the cache of chapter 08)

_m = _gpt(2)
_c1, _c2 = ContiguousKVCache(2), ContiguousKVCache(2)
_prefix = torch.randint(0, 64, (1, 6))
with torch.no_grad():
    for _c in (_c1, _c2):  # one cached step each: prepare, forward, commit
        _ctx = _c.prepare(_prefix)
        _m(_prefix, _ctx)
        _c.commit(_ctx)
grading.check_function(gpt_forward_, gpt_reference, [
    grading.Case(GPT(GPTConfig.gpt2_style(vocab_size=64, block_size=32, d_model=32, n_layer=2, n_head=4)).eval(),
                 torch.randint(0, 64, (2, 9)), note="GPT-2 style: learned positions"),
    grading.Case(_gpt(4, n_layer=3, tie_embeddings=False), torch.randint(0, 64, (3, 1)),
                 note="one token, untied head"),
    grading.Case(_gpt(5), torch.randint(0, 64, (3, 6)),
                 StepContext(torch.arange(6).expand(3, 6), logits_at=torch.tensor([5, 0, 2])),
                 note="logits at the last, the first and a middle column"),
], block=[GPT.forward], mistakes=GPT_MISTAKES)
with torch.no_grad():
    _next = torch.randint(0, 64, (1, 2))
    grading.check_value(gpt_forward_(_m, _next, _c1.prepare(_next)), _m(_next, _c2.prepare(_next)),
                        what="the logits after 6 cached tokens (the cache's step context)")

# %% [markdown]
# From here on the chapter builds its models from **your** block and **your** forward (where
# they pass): `your_gpt(config)` is llmlab's `GPT`, initialised the same way, with each block
# replaced by your `Block` carrying the same weights and `forward` replaced by `gpt_forward_`.
# Your block computes with your RMSNorm, RoPE and attention, so the model trained live below
# runs on the functions you wrote.

# %%
from llmlab.nn import TransformerBlock  # noqa: E402


torch.manual_seed(0)
_block_weights = TransformerBlock(small, RotaryEmbedding(small.d_head)).state_dict()


def _block_probe(cls):
    def run(config, x):
        blk = cls(config, RotaryEmbedding(config.d_head))
        blk.load_state_dict(_block_weights)
        return blk(x)
    return run


block_cls = grading.prefer_yours(Block, TransformerBlock, [grading.Case(small, torch.randn(2, 6, 32))],
                                 name="Block", probe=_block_probe)
forward_fn = grading.prefer_yours(gpt_forward_, gpt_reference,
                                  [grading.Case(_gpt(), torch.randint(0, 64, (2, 7)))], name="gpt_forward_")


class YourGPT(GPT):
    """llmlab's GPT with the blocks and the forward the chapter's exercises chose."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        for i, old in enumerate(self.blocks):
            new = block_cls(config, self.rope)
            new.load_state_dict(old.state_dict())
            self.blocks[i] = new

    def forward(self, idx, ctx=None):
        if forward_fn is gpt_reference:  # llmlab's forward (gpt_reference calls the model itself)
            return super().forward(idx, ctx)
        return forward_fn(self, idx, ctx)


def your_gpt(config: GPTConfig) -> GPT:
    return YourGPT(config)


with torch.no_grad():
    _probe_ids = torch.randint(0, 64, (1, 8))
    _yours = your_gpt(_gpt().config)
    _yours.load_state_dict(_gpt().state_dict())
    print("your_gpt == GPT on the same weights:", torch.allclose(_yours(_probe_ids), _gpt()(_probe_ids), atol=1e-5))

# %% [markdown]
# ### Cross-entropy, the pretraining loss
#
# For logits $z \in \mathbb{R}^V$ and the true next token $y$, the loss is
# $-\log \operatorname{softmax}(z)_y = \log\sum_j e^{z_j} - z_y$, averaged over positions — in
# **nats per token**. Computing $\log\sum_j e^{z_j}$ as $m + \log\sum_j e^{z_j - m}$ with
# $m=\max_j z_j$ never overflows. Two reference points: guessing uniformly costs $\ln V$
# ($\ln 4096 = 8.32$); predicting each token by its corpus frequency (a **unigram** model)
# costs its entropy. A language model earns its keep by how far below the unigram it goes.
# (`llmlab.nn.cross_entropy` is the readable version; training calls `fast_cross_entropy`,
# PyTorch's fused log-softmax kernels, tested to agree.)

# %% [markdown]
# ### Exercise 2.6 — predict: the loss before training · 2 points · difficulty 1 · ~3 min
#
# Predict first. A freshly initialised model (weights ~ N(0, 0.02)) produces logits close to 0
# at every position. What loss, in nats per token, do you expect from it on a vocabulary of
# `vocab_size` tokens? Return it as a function of `vocab_size`; the live training below prints
# the fresh model's measured loss next to your prediction.
#
# <details><summary>Hint 1</summary>Equal logits make the softmax uniform. What probability does
# the true token get?</details>

# %% solution="predict_init_loss"
def predict_initial_loss(vocab_size: int) -> float:
    """Expected cross-entropy (nats/token) of a model whose logits are all about equal."""
    ### BEGIN SOLUTION
    return math.log(vocab_size)
    ### END SOLUTION


# %% check="predict_init_loss" points=1
def uniform_loss_reference(vocab_size: int) -> float:
    """The loss of a uniform guess over the vocabulary, in nats."""
    return math.log(vocab_size)


grading.check_function(predict_initial_loss, uniform_loss_reference, [grading.Case(4096, note="V = 4,096")],
                       mistakes=mistakes.CATALOGUE.mistakes("predict_init_loss"), rtol=1e-3,
                       hint="uniform probabilities: the true token gets 1/V")

# %% hidden="predict_init_loss" points=1
grading.check_function(predict_initial_loss, uniform_loss_reference, [grading.Case(50_257, note="GPT-2's V"),
                                                        grading.Case(2, note="two tokens")], rtol=1e-3,
                       mistakes=mistakes.CATALOGUE.mistakes("predict_init_loss"))

# %% [markdown]
# ### Exercise 2.7 — cross-entropy · 2 points · difficulty 1 · ~10 min
#
# `cross_entropy_(logits, targets, ignore_index=-100)`: `logits (..., V)`, `targets (...)` long →
# the mean loss over positions whose target is not `ignore_index` (padding, or prompt tokens in
# fine-tuning). Compute in float32, stably (`torch.logsumexp` is allowed; `F.cross_entropy` is not).
#
# <details><summary>Hint 1</summary>Pick each position's target logit with `gather` on the last
# dimension. Ignored targets may be -100: replace them by a valid index before gathering, and
# leave them out of both the sum and the count.</details>

# %% solution="cross_entropy"
def cross_entropy_(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean -log softmax(logits)[target] over non-ignored positions. -> scalar."""
    ### BEGIN SOLUTION
    logits = logits.float()
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    nll = torch.logsumexp(logits, -1) - logits.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return (nll * keep).sum() / keep.sum().clamp(min=1)
    ### END SOLUTION


# %% check="cross_entropy" points=1
from llmlab.nn import cross_entropy, fast_cross_entropy

# torch's cross-entropy (the Python function and the kernel under it) computes the same thing
CE_TWINS = [fast_cross_entropy, torch.nn.functional.cross_entropy, torch._C._nn.cross_entropy_loss,
            torch.nn.functional.nll_loss]

grading.check_function(cross_entropy_, cross_entropy, [
    grading.Case(torch.randn(4, 10), torch.tensor([1, 0, 9, 3]), note="4 positions, V=10"),
    grading.Case(torch.randn(2, 3, 7) * 30, torch.randint(0, 7, (2, 3)), note="(batch, seq, V), large logits"),
    grading.Case(torch.randn(2, 4, 6), torch.tensor([[1, -100, 2, 3], [-100, -100, 0, 5]]),
                 note="ignored targets (-100)"),
], block=CE_TWINS, mistakes=mistakes.CATALOGUE.mistakes("cross_entropy"),
   hint="loss = logsumexp(logits) - logits[target]; average over positions")

# %% hidden="cross_entropy" points=1
_t = torch.randint(0, 50, (3, 8))
_t[0, :4] = -100
grading.check_function(cross_entropy_, cross_entropy, [
    grading.Case(torch.randn(3, 8, 50), _t, note="some targets ignored (-100)"),
    grading.Case(torch.randn(2, 5, 11).bfloat16(), torch.randint(0, 11, (2, 5)), note="bfloat16 logits"),
], block=CE_TWINS, mistakes=mistakes.CATALOGUE.mistakes("cross_entropy"))

# %% [markdown]
# ## 3 · Training: AdamW and the schedule
#
# **AdamW** (Kingma & Ba 2014, [arXiv:1412.6980](https://arxiv.org/abs/1412.6980); Loshchilov &
# Hutter 2017, [arXiv:1711.05101](https://arxiv.org/abs/1711.05101)) keeps, per weight, a running
# mean of gradients $m$ and of squared gradients $v$, and steps by their ratio — every weight
# gets its own step size. At step $t = 1, 2, \dots$ with gradient $g$:
#
# $$\begin{aligned}
# p &\leftarrow p - \eta\lambda p &&\text{(decoupled weight decay)}\\
# m &\leftarrow \beta_1 m + (1-\beta_1) g, \quad v \leftarrow \beta_2 v + (1-\beta_2) g^2\\
# p &\leftarrow p - \eta\,\frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \varepsilon}
# \end{aligned}$$
#
# The divisions by $1-\beta^t$ undo the bias of starting $m, v$ at zero. Note the memory: $m$
# and $v$ are two more fp32 copies of the model.

# %% [markdown]
# ### Exercise 2.8 — one AdamW step · 2 points · difficulty 2 · ~10 min
#
# `adamw_step_(p, grad, m, v, step, lr, betas, eps, weight_decay)` returns the new `(p, m, v)`
# (you may update in place and return them). `step` counts from 1.
#
# <details><summary>Hint 1</summary>Follow the three lines of the equation in order: the decay
# uses the weight *before* the Adam update.</details>
# <details><summary>Hint 2</summary>Bias correction divides copies of `m` and `v`; the stored
# moments stay uncorrected.</details>

# %% solution="adamw"
def adamw_step_(p, grad, m, v, step: int, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                weight_decay: float = 0.01):
    """One AdamW update. All tensors the same shape. -> (p, m, v)."""
    ### BEGIN SOLUTION
    beta1, beta2 = betas
    p = p * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    p = p - lr * m_hat / (v_hat.sqrt() + eps)
    return p, m, v
    ### END SOLUTION


# %% check="adamw" points=1
from llmlab.train import AdamW, adamw_step, adamw_step_foreach

ADAMW_TWINS = [adamw_step, adamw_step_foreach, AdamW, torch.optim.AdamW, torch.optim.Adam]


def adamw_reference(p, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    p, m, v = p.clone(), m.clone(), v.clone()
    adamw_step(p, grad, m, v, step, lr, betas, eps, weight_decay)
    return p, m, v


_z = torch.zeros(6)
grading.check_function(adamw_step_, adamw_reference, [
    grading.Case(torch.randn(6), torch.randn(6), _z, _z, 1, 1e-2, note="first step from zero moments"),
    grading.Case(torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4) * 0.1, torch.rand(3, 4) * 0.01,
                 7, 3e-3, (0.9, 0.95), 1e-8, 0.1, note="step 7, GPT betas, decay 0.1"),
], block=ADAMW_TWINS,
   mistakes=mistakes.CATALOGUE.mistakes("adamw"),
   hint="bias-correct m and v with 1 - beta**step; decay multiplies p by (1 - lr*wd)")

# %% hidden="adamw" points=1
grading.check_function(adamw_step_, adamw_reference, [
    grading.Case(torch.randn(5), torch.randn(5) * 1e-4, torch.zeros(5), torch.zeros(5), 1, 1.0,
                 weight_decay=0.0, note="tiny gradients: the first step is ~lr*sign(g)"),
    grading.Case(torch.randn(2, 2), torch.randn(2, 2), torch.randn(2, 2), torch.rand(2, 2), 1000, 1e-3,
                 (0.8, 0.99), 1e-6, 0.5, note="step 1000, other hyper-parameters"),
], block=ADAMW_TWINS, mistakes=mistakes.CATALOGUE.mistakes("adamw"))

# %% [markdown]
# `llmlab.train.AdamW` wraps this step in a `torch.optim.Optimizer` — applying it to all
# tensors at once with PyTorch's multi-tensor kernels, as `torch.optim.AdamW` does — and is
# tested to match `torch.optim.AdamW` to 1e-7 over several steps.
#
# ### Warmup, then cosine decay
#
# Adam's early steps are noisy (its $v$ is still a poor estimate), so the learning rate ramps
# up linearly for a few hundred steps, then decays along a half cosine to a floor of ~10% of
# the peak (GPT-3, Chinchilla, Llama). Decaying is what turns a plateau into a final drop in
# loss.

# %% [markdown]
# ### Exercise 2.9 — the learning-rate schedule · 2 points · difficulty 1 · ~5 min
#
# `lr_schedule_(step, max_lr, warmup_steps, total_steps, min_lr)`: for `step < warmup_steps`,
# `max_lr * step / warmup_steps`; for `step >= total_steps`, `min_lr`; in between
# `min_lr + (max_lr - min_lr) * 0.5 * (1 + cos(pi * progress))` with
# `progress = (step - warmup_steps) / (total_steps - warmup_steps)`.
#
# <details><summary>Hint 1</summary>Three cases, tested in the order the spec lists them; a
# schedule without warmup (`warmup_steps = 0`) starts at the peak.</details>

# %% solution="schedule"
def lr_schedule_(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Linear warmup from 0, then cosine decay to min_lr at total_steps."""
    ### BEGIN SOLUTION
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    ### END SOLUTION


# %% check="schedule" points=1
from llmlab.train import cosine_lr

grading.check_function(lr_schedule_, cosine_lr, [
    grading.Case(5, 1.0, 10, 100, 0.1, note="during warmup"),
    grading.Case(55, 1.0, 10, 100, 0.1, note="half-way through the decay"),
    grading.Case(100, 1.0, 10, 100, 0.1, note="the end"),
], mistakes=mistakes.CATALOGUE.mistakes("schedule"), hint="progress runs from 0 at the end of warmup to 1 at total_steps")

# %% hidden="schedule" points=1
grading.check_function(lr_schedule_, cosine_lr, [
    grading.Case(0, 3e-3, 0, 50, note="no warmup"),
    grading.Case(10, 3e-3, 10, 50, 3e-4, note="first step after warmup: the peak"),
    grading.Case(500, 3e-3, 10, 50, 3e-4, note="after the end: the floor"),
    grading.Case(3, 3e-3, 8, 50, 3e-4, note="mid-warmup"),
    grading.Case(30, 3e-3, 10, 50, 3e-4, note="mid-decay, with a floor"),
], mistakes=mistakes.CATALOGUE.mistakes("schedule"))

# %%
from llmlab.train import cosine_lr

steps_axis = np.arange(600)
plt.figure(figsize=(6, 2.5))
plt.plot(steps_axis, [cosine_lr(int(s), 2e-3, 40, 600, 2e-4) for s in steps_axis])
plt.xlabel("optimizer step"), plt.ylabel("learning rate")
plt.title("the book model's schedule: 40 warmup steps, cosine to 10%")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4 · Pretraining, live
#
# The data pipeline: the Python standard library's files (code, docstrings, comments), split
# into train and validation **by file** with a stable hash (`llmlab.data.split_of`), tokenized
# once into a flat array with `<|endoftext|>` between files (`llmlab.data.write_tokens`, a
# memory-mapped `uint16` file), and read in random windows of `seq_len + 1` tokens
# (`llmlab.data.random_windows`): inputs are the first `seq_len`, targets the last `seq_len`.
#
# A training step puts it together: sample a batch, forward, backward, **clip** the global
# gradient norm, AdamW step at the scheduled rate. Two refinements every real trainer has:
#
# - **Gradient accumulation.** A batch too big for memory runs as `n` micro-batches; each
#   micro-batch's loss is divided by `n` before `backward()`, so the gradients that add up in
#   `.grad` are those of the mean loss over the whole batch.
# - **Global-norm clipping** (Pascanu et al. 2013, [arXiv:1211.5063](https://arxiv.org/abs/1211.5063)):
#   treat all gradients as one vector $g$; if $\lVert g\rVert_2 > c$, scale every gradient by
#   $c / (\lVert g\rVert_2 + 10^{-6})$. The direction of the update is kept, only its length
#   shrinks, so one bad batch cannot throw the weights far.
#
# The data for the live run: a slice of the corpus, tokenized with the book's tokenizer. The run
# trains in fp32 so that the numbers printed below are the same on every CPU (bf16 rounds
# differently from fp32, and which one a machine picks depends on its hardware).

# %%
from llmlab.data import load_documents, random_windows

train_docs = load_documents(split="train")[:60]
val_docs = load_documents(split="val")[:8]
eot = tok.special_ids["<|endoftext|>"]


def tokenize(docs) -> np.ndarray:
    out = []
    for d in docs:
        out += tok.encode(d.text) + [eot]
    return np.array(out, dtype=np.uint16)


train_ids, val_ids = tokenize(train_docs), tokenize(val_docs)
print(f"{len(train_docs)} train files -> {len(train_ids):,} tokens; {len(val_docs)} val files -> {len(val_ids):,} tokens")
x_demo, y_demo = random_windows(train_ids, 2, 12, torch.Generator().manual_seed(0))
print("input :", repr(tok.decode(x_demo[0].tolist())))
print("target:", repr(tok.decode(y_demo[0].tolist())))

# %% [markdown]
# ### Initialisation: what step 0 should look like
#
# `GPT.__init__` (`llmlab/model/gpt.py`) initialises as GPT-2 does: every linear and embedding
# weight from $\mathcal N(0, 0.02^2)$ (`config.init_std`; with tied embeddings that matrix is
# also the LM head), the norms' gains at 1, and the two projections that *write into the
# residual stream* — attention's `o_proj` and the MLP's `down_proj` — with the standard deviation
# divided by $\sqrt{2\,n_\text{layer}}$: "we scale the weights of residual layers at
# initialization by a factor of $1/\sqrt N$ where $N$ is the number of residual layers"
# (Radford et al. 2019, *Language Models are Unsupervised Multitask Learners*, section 2.3).
# Each block adds two updates to the stream; if each has variance $\sigma^2$, after $L$ blocks
# the stream's variance has grown by $2L\sigma^2$. Scaling those weights by $1/\sqrt{2L}$ makes the
# total $\sigma^2$, whatever the depth. Two numbers tell a good initialisation at step 0: the
# loss is $\ln V$ (exercise 2.6: small logits, a near-uniform softmax), and the residual stream's
# scale does not grow with the layer index. Here is a fresh 16-layer model of the live run's width
# three ways: llmlab's scheme, the same without the residual scaling, and a naive
# $\mathcal N(0, 1)$ everywhere.

# %%
from llmlab.model.gpt import RESIDUAL_PROJECTIONS  # noqa: E402
from llmlab.nn import fast_cross_entropy  # noqa: E402

init_cfg = GPTConfig.llama_style(vocab_size=tok.vocab_size, block_size=64, d_model=64, n_layer=16, n_head=4,
                                 n_kv_head=2, d_ff=192)
seed_all(0)
fresh = GPT(init_cfg)
o_std = fresh.blocks[0].attn.o_proj.weight.std().item()
print(f"fresh GPT: q_proj std {fresh.blocks[0].attn.q_proj.weight.std():.4f} · o_proj std {o_std:.4f} "
      f"(0.02/sqrt(2·{init_cfg.n_layer}) = {init_cfg.init_std / math.sqrt(2 * init_cfg.n_layer):.4f}) · "
      f"norm gains {fresh.blocks[0].norm1.weight.mean():.0f}")


def initialised(std: float, residual_scaled: bool) -> GPT:
    """A fresh GPT(init_cfg) with every weight matrix ~ N(0, std²), the residual projections
    divided by sqrt(2 n_layer) when ``residual_scaled``; norm gains stay 1."""
    seed_all(0)
    model = GPT(init_cfg)
    for name, p in model.named_parameters():
        if p.dim() == 2:
            scaled = residual_scaled and any(name.endswith(r + ".weight") for r in RESIDUAL_PROJECTIONS)
            nn.init.normal_(p, 0.0, std / math.sqrt(2 * init_cfg.n_layer) if scaled else std)
    return model


x_init, y_init = random_windows(val_ids, 8, 64, torch.Generator().manual_seed(0))
schemes = {"llmlab / GPT-2: N(0, 0.02²), residual ÷ √(2L)": initialised(0.02, True),
           "N(0, 0.02²), no residual scaling": initialised(0.02, False),
           "naive N(0, 1)": initialised(1.0, False)}
init_loss, stream_std, logit_std = {}, {}, {}
for label, model in schemes.items():
    stds = []
    hooks = [blk.register_forward_hook(lambda mod, inp, out: stds.append(out.std().item())) for blk in model.blocks]
    with torch.no_grad():
        logits = model(x_init)
    init_loss[label], logit_std[label] = fast_cross_entropy(logits, y_init).item(), logits.std().item()
    for hk in hooks:
        hk.remove()
    stream_std[label] = stds

fig, ax = plt.subplots(figsize=(6.5, 2.8))
for label, stds in stream_std.items():
    ax.plot(range(1, init_cfg.n_layer + 1), stds, "o-", ms=3, label=f"{label} · loss {init_loss[label]:.2f}")
ax.set_yscale("log"), ax.set_xlabel("after block"), ax.set_ylabel("std of the residual stream")
ax.set_title(f"a fresh {init_cfg.n_layer}-layer model, three initialisations (ln V = {math.log(tok.vocab_size):.2f})")
ax.legend(fontsize=7)
plt.tight_layout()
plt.show()
good, unscaled, naive = schemes
growth = {label: s[-1] / s[0] for label, s in stream_std.items()}
assert abs(init_loss[good] - math.log(tok.vocab_size)) < 0.05, init_loss
assert init_loss[naive] > 2 * math.log(tok.vocab_size), init_loss
assert growth[unscaled] > 2 * growth[good], growth
for label, std in ((good, 0.02), (naive, 1.0)):
    assert abs(logit_std[label] / (std * math.sqrt(init_cfg.d_model)) - 1) < 0.2, logit_std
for label in schemes:
    print(f"{label:<48} loss at step 0 {init_loss[label]:6.2f} nats (ln V = {math.log(tok.vocab_size):.2f}) · "
          f"logits std {logit_std[label]:.2f} · stream std grows ×{growth[label]:.2f} from block 1 to "
          f"{init_cfg.n_layer}")
print(f"std·sqrt(d_model) = {0.02 * math.sqrt(init_cfg.d_model):.2f} for std 0.02, "
      f"{math.sqrt(init_cfg.d_model):.2f} for std 1")

# %% [markdown]
# The logits' standard deviation is the init's std times $\sqrt{d_\text{model}}$ (the final norm
# gives the stream unit scale, then each logit is a sum of $d_\text{model}$ products; the cell
# asserts it within 20%). With llmlab's scheme that is small, the softmax is nearly uniform and
# the loss sits on $\ln V$; without the $1/\sqrt{2L}$ scaling the stream grows block after
# block; with $\mathcal N(0,1)$ the model starts out confidently wrong, at a loss several times
# $\ln V$. A loss at step 0 far above $\ln V$ is the first sign of a broken initialisation.

# %% [markdown]
# ### Your pieces, wired for the loop
#
# The loop below is built from what you wrote wherever it passes: your blocks and forward build
# the model, your cross-entropy is `loss_fn`, your AdamW step drives the optimizer (wrapped in
# llmlab's `AdamW`, the `torch.optim.Optimizer` plumbing of param groups and state, runs your
# step function in place of its own arithmetic: `your_optimizer(model, config)`), your schedule
# is `schedule_fn`.

# %%
from llmlab.nn import cross_entropy  # noqa: E402
from llmlab.train import AdamW, TrainConfig, Trainer, cosine_lr, decay_groups, evaluate_loss, unigram_loss  # noqa: E402

_ce_cases = [grading.Case(torch.randn(3, 8, 50), torch.randint(0, 50, (3, 8)))]
loss_fn = grading.prefer_yours(cross_entropy_, cross_entropy, _ce_cases, name="cross_entropy_")
adamw_fn = grading.prefer_yours(adamw_step_, adamw_reference, [
    grading.Case(torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4) * 0.1, torch.rand(3, 4) * 0.01,
                 7, 3e-3, (0.9, 0.95), 1e-8, 0.1)], name="adamw_step_")
schedule_fn = grading.prefer_yours(lr_schedule_, cosine_lr, [grading.Case(5, 1.0, 10, 100, 0.1),
                                                            grading.Case(55, 1.0, 10, 100, 0.1)],
                                   name="lr_schedule_")


def your_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The chapter's AdamW (your step where it passes) over `decay_groups`, at `config`'s
    peak rate, betas, eps and weight decay."""
    return AdamW(decay_groups(model, config.weight_decay), lr=config.lr, betas=(config.beta1, config.beta2),
                 eps=config.eps, step_fn=None if adamw_fn is adamw_reference else adamw_fn)


# %% [markdown]
# ### Exercise 2.10 — capstone: the pretraining loop · 8 points · difficulty 3 · ~60 min
#
# Write the loop that pretrains a model and survives being stopped:
#
# ```python
# pretrain_(model, train_ids, val_ids, config: TrainConfig, stop_after: int | None = None) -> list[dict]
# ```
#
# **What it must equal.** For any `config` with `precision="fp32"`, your run is llmlab's
# `Trainer(model, train_ids, val_ids, config)` run with `fit()`: the same windows, the same
# updates, the same log — to fp32 rounding (the check compares the weights after the run and
# every logged number). So your loop honours the contract that `Trainer` does:
#
# - *Data.* Each optimizer step consumes `config.grad_accum` micro-batches, each one draw of
#   `random_windows(train_ids, config.batch_size, seq_len, generator)`, from one CPU
#   `torch.Generator` seeded with `config.seed` for the whole run; `seq_len` is `config.seq_len`,
#   or the model's `block_size` when that is None.
# - *Update.* One step's gradient is that of the mean `loss_fn` over its micro-batches, its global
#   L2 norm (all parameters as one vector) clipped to `config.grad_clip`, then one step of
#   `your_optimizer(model, config)`. The learning rate of the step taken after `s` completed
#   steps is `schedule_fn(s, config.lr, config.warmup_steps, config.max_steps,
#   config.lr * config.min_lr_ratio)`.
# - *Log* (the return value). After a step that brings the count to `s`: a row `{"step": s,
#   "loss": …, "grad_norm": …, "lr": …}` (Python floats: the step's mean loss, the norm before
#   clipping, the rate used) when `s` is a multiple of `log_every` or `s == max_steps`; then, when
#   `val_ids` is given and `eval_every > 0`, a row `{"step": s, "val_loss": …}` when `s` is a
#   multiple of `eval_every` or `s == max_steps`, with `val_loss =
#   evaluate_loss(model, val_ids, config.batch_size, seq_len, config.eval_batches)`.
#
# **Stopping and resuming.** `stop_after` (None: `max_steps`) stops the run once that many steps
# are done in all, as a job's time limit does; the schedule still runs to `max_steps`. When
# `config.checkpoint_path` is set, the run saves there every `checkpoint_every` steps (when
# > 0) and when `stop_after` stops it, atomically (`save_checkpoint` is allowed); and when that
# file exists as the run starts, the run continues from it. Invariant: a run stopped after any
# step and called again with the same arguments (on any model of the same config: a new
# process) ends with **bit-identical** weights, and returns the whole run's log, as a run never
# stopped.
#
# **Errors.** `ValueError` (saying what was expected and what came) for a precision other than
# `"fp32"` and for a `stop_after` outside `[0, max_steps]`.
#
# **Forbidden.** llmlab's `Trainer` (its methods), `accumulated_step`, `clip_grad_norm` and
# `torch.nn.utils.clip_grad_norm_`: the loop, the accumulation and the clipping are yours. Use
# the chapter's `loss_fn`, `schedule_fn` and `your_optimizer`, so the loop runs on your pieces.
#
# <details><summary>Hint 1 (the idea)</summary>A run is fully decided by its state: the weights,
# the optimizer's moments and step counts, the sampler's generator, the global RNG, the step
# count and the log so far. Whatever you leave out of the checkpoint, the resumed run gets wrong
# — and only after the stop, so test a stop in the middle.</details>
# <details><summary>Hint 2 (the structure)</summary>Set everything up as a fresh run would (the
# optimizer, the generator), then, if the checkpoint exists, overwrite that state from it; loop
# while fewer than the stop steps are done. `torch.optim.Optimizer` and `torch.Generator` both
# have a way to get and set their state.</details>
# <details><summary>Hint 3 (the key formulas)</summary>Each micro-batch's loss is divided by
# `grad_accum` before `backward()`; the clip factor is `min(1, grad_clip / (norm + 1e-6))`
# with `norm = sqrt(sum over parameters of |g|²)`, applied in place under `torch.no_grad()`.
# </details>

# %% solution="pretrain"
from pathlib import Path  # noqa: E402

from llmlab.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402


def pretrain_(model: nn.Module, train_ids: np.ndarray, val_ids: np.ndarray | None,
              config: TrainConfig, stop_after: int | None = None) -> list[dict]:
    """Pretrain ``model`` in place as llmlab's Trainer does; stop after ``stop_after`` steps and
    resume from ``config.checkpoint_path``. -> the run's log."""
    ### BEGIN SOLUTION
    c = config
    if c.precision != "fp32":
        raise ValueError(f"pretrain_ trains in fp32: expected precision='fp32', got {c.precision!r}")
    stop = c.max_steps if stop_after is None else stop_after
    if not 0 <= stop <= c.max_steps:
        raise ValueError(f"stop_after must be in [0, max_steps={c.max_steps}], got {stop_after}")
    seq_len = c.seq_len or model.config.block_size
    optimizer = your_optimizer(model, c)
    generator = torch.Generator().manual_seed(c.seed)
    step, log = 0, []
    path = Path(c.checkpoint_path) if c.checkpoint_path else None
    if path is not None and path.exists():
        state = load_checkpoint(path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step, log = state["step"], list(state["log"])
    model.train()
    while step < stop:
        lr = schedule_fn(step, c.lr, c.warmup_steps, c.max_steps, c.lr * c.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss = 0.0
        for _ in range(c.grad_accum):
            x, y = random_windows(train_ids, c.batch_size, seq_len, generator)
            micro = loss_fn(model(x), y) / c.grad_accum
            micro.backward()
            loss += micro.item()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = torch.sqrt(sum(g.float().pow(2).sum() for g in grads)).item()
        with torch.no_grad():
            for g in grads:
                g.mul_(min(1.0, c.grad_clip / (norm + 1e-6)))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % c.log_every == 0 or step == c.max_steps:
            log.append({"step": step, "loss": loss, "grad_norm": norm, "lr": lr})
        if val_ids is not None and c.eval_every and (step % c.eval_every == 0 or step == c.max_steps):
            log.append({"step": step, "val_loss": evaluate_loss(model, val_ids, c.batch_size, seq_len,
                                                                c.eval_batches)})
        if path is not None and ((c.checkpoint_every and step % c.checkpoint_every == 0) or
                                 (stop_after is not None and step == stop)):
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                             "step": step, "log": log}, path)
    return log
    ### END SOLUTION


# %% check="pretrain" points=3
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from llmlab.train import accumulated_step, clip_grad_norm  # noqa: E402

PRETRAIN_TWINS = [Trainer.fit, Trainer.train_step, Trainer.resume, accumulated_step, clip_grad_norm,
                  torch.nn.utils.clip_grad_norm_]
LOG_KEYS = ("step", "loss", "grad_norm", "lr", "val_loss")
_tiny_train = np.random.default_rng(0).integers(0, 64, 3000).astype(np.uint16)
_tiny_val = np.random.default_rng(1).integers(0, 64, 400).astype(np.uint16)


def pretrain_reference(model, train_ids, val_ids, config, stop_after=None):
    """llmlab's Trainer, stopped by ``until`` and resumed from the checkpoint the same way."""
    if config.precision != "fp32":
        raise ValueError(f"expected precision='fp32', got {config.precision!r}")
    trainer = Trainer(model, train_ids, val_ids, config, peak_flops=1.0)
    if config.checkpoint_path and Path(config.checkpoint_path).exists():
        trainer.resume(config.checkpoint_path)
    return trainer.fit(progress=False, until=stop_after)


def after_run(pretrain):
    """What a run produces: the log's numbers and the weights after it. With ``interrupt_at``
    the run is stopped there, then called again on a model of other weights (a new process)."""
    def run(seed, config, interrupt_at=None):
        with tempfile.TemporaryDirectory() as d:
            if interrupt_at is not None:
                config = config.replace(checkpoint_path=str(Path(d) / "ckpt.pt"))
                pretrain(_gpt(seed).train(), _tiny_train, _tiny_val, config, interrupt_at)
                torch.manual_seed(1234)  # another process: another global RNG state
                seed += 100
            model = _gpt(seed).train()
            log = pretrain(model, _tiny_train, _tiny_val, config)
        return [{k: r[k] for k in LOG_KEYS if k in r} for r in log], [p.detach().clone() for p in model.parameters()]
    return run


PRETRAIN_MISTAKES = {label: after_run(wrong) for label, wrong in mistakes.CATALOGUE.mistakes("pretrain").items()}
_tiny = TrainConfig(max_steps=4, batch_size=2, seq_len=8, grad_accum=2, lr=1e-2, warmup_steps=1,
                    log_every=1, eval_every=2, eval_batches=2, precision="fp32")
grading.check_function(after_run(pretrain_), after_run(pretrain_reference), [
    grading.Case(0, _tiny, note="4 steps of 2 micro-batches, evaluated every 2"),
    grading.Case(1, _tiny.replace(grad_clip=0.05), 2, note="stopped after 2 steps, then resumed (clipped to 0.05)"),
], name="pretrain_", block=PRETRAIN_TWINS, mistakes=PRETRAIN_MISTAKES,
   hint="compare your log row by row with the Trainer's: the first row that differs names the piece")

# %% hidden="pretrain" points=5
grading.check_function(after_run(pretrain_), after_run(pretrain_reference), [
    grading.Case(2, _tiny.replace(max_steps=5, grad_accum=3, warmup_steps=2, log_every=2, grad_clip=0.05),
                 note="3 micro-batches, logged every 2 steps"),
    grading.Case(3, _tiny.replace(max_steps=6, checkpoint_every=2, eval_every=3, grad_clip=0.05), 3,
                 note="checkpoints every 2 steps, stopped after 3"),
    grading.Case(4, _tiny.replace(max_steps=5, batch_size=3, seq_len=None, grad_clip=1e-4), 1,
                 note="stopped after 1 step, windows of block_size"),
    grading.Case(0, _tiny.replace(precision="auto"), note="a precision other than fp32"),
], name="pretrain_", block=PRETRAIN_TWINS, mistakes=PRETRAIN_MISTAKES)

# %% [markdown]
# ### Before a long run: overfit one batch
#
# The cheapest test of a whole training stack: take **one** small batch and train on it alone.
# A small model can memorise a few hundred tokens, so the loss must go to about 0 within a
# hundred or so steps (the cell asserts it). If it stalls, something between the data and the
# update is broken — targets not shifted, a mask that leaks or hides, a loss not averaged, an
# optimizer that does not step, gradients zeroed at the wrong time — and a long run would only
# have hidden it (Karpathy 2019, "A Recipe for Training Neural Networks": "overfit one batch").
# It runs here on *your* pieces, where they pass their checks: your blocks and forward
# (`your_gpt`), your cross-entropy (`loss_fn`) and your AdamW step (`your_optimizer`), with no
# weight decay and a constant learning rate.

# %% tags=["nbval-ignore-output"]
seed_all(0)
overfit_cfg = GPTConfig.llama_style(vocab_size=tok.vocab_size, block_size=32, d_model=64, n_layer=2, n_head=4,
                                    n_kv_head=2, d_ff=192)
one_model = your_gpt(overfit_cfg)
x_one, y_one = random_windows(train_ids, 4, 32, torch.Generator().manual_seed(3))
one_opt = your_optimizer(one_model, TrainConfig(lr=3e-3, weight_decay=0.0, precision="fp32"))
one_losses = []
for _ in tqdm(range(120), desc="one batch"):
    one_opt.zero_grad(set_to_none=True)
    loss = loss_fn(one_model(x_one), y_one)
    loss.backward()
    one_opt.step()
    one_losses.append(loss.item())

# %%
with torch.no_grad():
    one_final = loss_fn(one_model(x_one), y_one).item()
    one_other = loss_fn(one_model(x_init[:, :32]), y_init[:, :32]).item()
assert one_final < 0.05, f"one batch not memorised: loss {one_final:.3f} after 120 steps — look for a bug"
assert one_other > math.log(tok.vocab_size), one_other
fig, ax = plt.subplots(figsize=(6, 2.4))
ax.plot(one_losses)
ax.set_yscale("log"), ax.set_xlabel("step"), ax.set_ylabel("loss on the batch (nats)")
ax.set_title(f"{x_one.numel()} tokens, trained on alone")
plt.tight_layout()
plt.show()
print(f"{one_model.num_params():,} parameters, loss on the batch: {one_losses[0]:.2f} at step 0 -> "
      f"{one_final:.4f} after {len(one_losses)} steps; on other text: {one_other:.2f} nats, worse than the "
      f"uniform guess's ln V = {math.log(tok.vocab_size):.2f} (memorised, not learned)")

# %% [markdown]
# ### Your model, pretrained live by your loop
#
# The live run: a 2-layer model of the book's config family, 100 steps of 2 × 8 windows of 64
# tokens, warmup then cosine decay, evaluated every 50 steps — run by your `pretrain_` where it
# passes (on your model, loss, optimizer step and schedule), by llmlab's `Trainer` otherwise.

# %% tags=["nbval-ignore-output"]
from llmlab.model.counting import flops_per_token  # noqa: E402
from llmlab.train import mfu  # noqa: E402

pretrain_fn = grading.prefer_yours(pretrain_, pretrain_reference,
                                   [grading.Case(1, _tiny.replace(grad_clip=0.05), 2)],
                                   name="pretrain_", probe=after_run, block=PRETRAIN_TWINS)
seed_all(0)
live_cfg = GPTConfig.llama_style(vocab_size=tok.vocab_size, block_size=64, d_model=64, n_layer=2,
                                 n_head=4, n_kv_head=2, d_ff=192)
live = your_gpt(live_cfg)
live_train = TrainConfig(max_steps=100, batch_size=8, grad_accum=2, seq_len=64, lr=3e-3, warmup_steps=10,
                         min_lr_ratio=0.1, log_every=10, eval_every=50, eval_batches=8, precision="fp32")
initial_loss = evaluate_loss(live, val_ids, 8, 64, 8)
t0 = time.perf_counter()
live_log = [{"step": 0, "val_loss": initial_loss}] + pretrain_fn(live, train_ids, val_ids, live_train)
live_s = time.perf_counter() - t0
STEPS, SEQ = live_train.max_steps, live_train.seq_len
live_tokens_per_s = STEPS * live_train.grad_accum * live_train.batch_size * SEQ / live_s
live_flops_per_token = flops_per_token(live_cfg, SEQ)
print(f"{live.num_params():,} parameters, {STEPS} steps in {live_s:.1f} s")

# %%
baseline = unigram_loss(train_ids, val_ids, tok.vocab_size)
book_val = evaluate_loss(book, val_ids, 16, SEQ, 4)
tr_rows = [r for r in live_log if "loss" in r]
va_rows = [r for r in live_log if "val_loss" in r]
fig, ax = plt.subplots(figsize=(6.5, 3))
ax.plot([r["step"] for r in tr_rows], [r["loss"] for r in tr_rows], label="your model: train loss")
ax.plot([r["step"] for r in va_rows], [r["val_loss"] for r in va_rows], "o-", label="your model: val loss")
ax.axhline(baseline, color="gray", ls="--", label="unigram baseline")
ax.axhline(book_val, color="C2", ls="-.", label="llmlab's book model (val)")
ax.axhline(math.log(tok.vocab_size), color="gray", ls=":", label="uniform, ln V")
ax.set_xlabel("step"), ax.set_ylabel("nats / token"), ax.legend(fontsize=7)
ax.set_title("your 2-layer model, trained live by your code")
plt.tight_layout()
plt.show()
print(f"before training: measured {initial_loss:.1f} nats/token, your prediction "
      f"{float(grading.prefer_yours(predict_initial_loss, uniform_loss_reference, [grading.Case(64)], name='predict_initial_loss')(tok.vocab_size)):.1f}")
print(f"after {STEPS} steps: val {va_rows[-1]['val_loss']:.1f} · unigram {baseline:.1f} · "
      f"llmlab's book model {book_val:.1f} nats/token")

# %% [markdown]
# In seconds your model gets below the unigram baseline: it has started to learn which tokens
# follow which, not just which are frequent. llmlab's book model (the dash-dotted line) ran the
# same kind of loop for much longer on a larger model; its card, written by the training
# command, records the data, steps, wall time and numbers:

# %%
import json

from llmlab.model import BOOK_MODEL_DIR

summary = json.loads((BOOK_MODEL_DIR / "summary.json").read_text())
print(f"command      : {summary['command']}")
print(f"parameters   : {summary['params']:,}")
print(f"tokens       : {summary['tokens_trained']:,} in {summary['steps']} steps")
print(f"val loss     : {summary['val_loss']:.3f} nats/token (perplexity {summary['val_ppl']:.1f})")
print(f"unigram      : {summary['unigram_val_loss']:.3f}   uniform: {summary['uniform_val_loss']:.3f}")
print(f"wall time    : {summary['wall_time_s'] / 60:.1f} min on {summary['threads']} thread(s) "
      f"-> {summary['unigram_val_loss'] - summary['val_loss']:.1f} nats below the unigram baseline")
tokens_per_param = summary["tokens_trained"] / summary["params"]
print(f"tokens/param : {tokens_per_param:.2f} (Chinchilla's compute-optimal ratio is about 20)")

# %% [markdown]
# Section 5 teaches that a compute-optimal run sees about **20 tokens per parameter**, and the
# shipped model is sized by that rule: the compute budget was set to ~31 M tokens at this width
# (planned as a bit over an hour of two CPU cores; the card above prints the wall time the run
# really took), so the model has 1.6 M parameters. The stdlib alone has only
# 2.6 M tokens, so the training split adds the Python source of the pinned torch package (the
# card records its version, file count and hash): each token is seen less than twice. A bigger
# model in the same budget would see fewer tokens per parameter and end *worse* — section 5's
# sweep shows the same trade in miniature.

# %% [markdown]
# ### Perplexity, and bits per token
#
# A loss is often quoted as its **perplexity**: the exponential of the *mean* per-token
# cross-entropy over $N$ tokens,
#
# $$\operatorname{PPL} = \exp\Big(-\frac1N\sum_{t=1}^{N}\ln p(x_t \mid x_{<t})\Big) = e^{\,\text{loss in nats}} .$$
#
# It reads as a branching factor: a model with perplexity $k$ is as unsure as one choosing
# uniformly among $k$ tokens at every step — the uniform guess has loss $\ln V$ and perplexity
# exactly $V$. The same loss in base 2 is **bits per token**, $\text{loss}/\ln 2$, and
# $\operatorname{PPL} = 2^{\text{bits per token}}$. Both count per *token*, so they compare models
# that share a tokenizer; across tokenizers, divide by the bytes each token covers (bits per
# byte, chapter 01).

# %% [markdown]
# ### Exercise 2.11 — perplexity · 2 points · difficulty 1 · ~5 min
#
# `perplexity_(token_losses)`: `token_losses` holds per-token cross-entropies in nats, any shape
# → the perplexity of all of them together, as a 0-d float tensor.
#
# <details><summary>Hint 1 (the idea)</summary>Perplexity is a function of the mean loss, the
# number the training loop already prints.</details>
# <details><summary>Hint 2 (the structure)</summary>Average over every entry, whatever the
# shape; then undo the logarithm. Which average comes first matters: the mean of the
# exponentials is not the exponential of the mean.</details>
# <details><summary>Hint 3 (the key formula)</summary>The losses are natural logarithms, so
# undo them with $e^x$: `PPL = exp(mean(loss))`.</details>

# %% solution="perplexity"
def perplexity_(token_losses: torch.Tensor) -> torch.Tensor:
    """exp of the mean per-token cross-entropy (nats). token_losses: any shape -> 0-d tensor."""
    ### BEGIN SOLUTION
    return token_losses.mean().exp()
    ### END SOLUTION


# %% check="perplexity" points=1
def perplexity_reference(token_losses: torch.Tensor) -> torch.Tensor:
    """exp(mean) of the per-token losses."""
    return torch.exp(torch.mean(token_losses))


PPL_MISTAKES = mistakes.CATALOGUE.mistakes("perplexity")
grading.check_function(perplexity_, perplexity_reference, [
    grading.Case(torch.tensor([2.0, 0.5, 3.0, 1.0]), note="4 tokens"),
    grading.Case(torch.rand(2, 5) * 4, note="(batch, seq) of losses"),
], mistakes=PPL_MISTAKES, hint="average the losses first, then exponentiate (base e: they are nats)")

# %% hidden="perplexity" points=1
grading.check_function(perplexity_, perplexity_reference, [
    grading.Case(torch.full((3, 7), math.log(4096)), note="the uniform guess: PPL = V"),
    grading.Case(torch.rand(4, 16) * 6, note="64 tokens"),
    grading.Case(torch.tensor([0.0]), note="one token predicted with certainty"),
    grading.Case(torch.tensor([[0.1, 4.0], [2.5, 7.0]]), note="one badly predicted token"),
], mistakes=PPL_MISTAKES)

# %% [markdown]
# The numbers of this chapter in all three units, with your `perplexity_` where it passes. The
# per-token losses are recomputed over the validation windows `evaluate_loss` read for the book
# model above (their mean is asserted to be the `book_val` printed there); the unigram model's
# are $-\ln$ of each validation token's smoothed training frequency.

# %%
from llmlab.data import sequential_windows  # noqa: E402

ppl_fn = grading.prefer_yours(perplexity_, perplexity_reference, [grading.Case(torch.rand(2, 5) * 4)],
                              name="perplexity_")
with torch.no_grad():
    book_token_losses = torch.cat([fast_cross_entropy(book(x), y, reduction="none").flatten()
                                   for x, y in sequential_windows(val_ids, 16, SEQ, 4)])
assert abs(book_token_losses.mean().item() - book_val) < 1e-4, (book_token_losses.mean().item(), book_val)
_counts = np.bincount(train_ids.astype(np.int64), minlength=tok.vocab_size) + 1.0
unigram_token_losses = torch.from_numpy(-np.log(_counts / _counts.sum())[val_ids.astype(np.int64)])
assert abs(unigram_token_losses.mean().item() - baseline) < 1e-6
rows = {"uniform over V": torch.full((8,), math.log(tok.vocab_size)), "unigram": unigram_token_losses,
        "llmlab's book model": book_token_losses}
print(f"{'':22}{'nats/token':>11}{'bits/token':>11}{'perplexity':>11}")
for label, losses in rows.items():
    nats, ppl = losses.double().mean().item(), float(ppl_fn(losses))
    assert math.isclose(ppl, 2 ** (nats / math.log(2)), rel_tol=1e-4)
    print(f"{label:22}{nats:11.3f}{nats / math.log(2):11.3f}{ppl:11.1f}")
assert math.isclose(float(ppl_fn(rows["uniform over V"])), tok.vocab_size, rel_tol=1e-4)
assert math.isclose(summary["val_ppl"], math.exp(summary["val_loss"]), rel_tol=1e-4)
per_token_exp = book_token_losses.double().exp()
worst = per_token_exp.topk(len(per_token_exp) // 100).values.sum().item() / per_token_exp.sum().item()
assert per_token_exp.mean().item() > float(ppl_fn(book_token_losses))
print(f"the book model is as unsure as a uniform choice among {float(ppl_fn(book_token_losses)):.0f} of the "
      f"{tok.vocab_size:,} tokens. The mean of per-token exp(loss) would say {per_token_exp.mean().item():,.0f}: "
      f"exp is convex, and the worst-predicted 1% of tokens make {worst:.0%} of that average")

# %% [markdown]
# ### Sampling
#
# To generate, feed the text so far, take the last position's logits, divide by a
# **temperature**, optionally keep only the top-k tokens or the smallest set whose probability
# reaches top-p (Holtzman et al. 2019, [arXiv:1904.09751](https://arxiv.org/abs/1904.09751)),
# sample, append, repeat. `llmlab.model.generate` is llmlab's one decoding entry point: its
# knobs are the fields of a `SamplingParams` (`max_new_tokens`, `temperature` — 0 is greedy —
# `top_k`, `top_p`, `min_p`, `eos_token_id`, `seed`, named as in `transformers` and vLLM), and
# with `use_cache=False` it runs exactly this loop; by default it keeps a KV cache, the subject of
# chapter 08.
#
# ### Exercise 2.12 — sampling with temperature, top-k and top-p · 5 points · difficulty 3 · ~30 min
#
# Write `generate_(model, idx, max_new_tokens, temperature, top_k, top_p, generator)`:
# `idx (batch, seq)` → `(batch, seq + max_new_tokens)`. Each step feeds at most the last
# `model.config.block_size` tokens, takes the last position's logits (in float32), and
#
# - `temperature == 0`: picks the argmax (greedy);
# - otherwise divides the logits by the temperature, keeps only the `top_k` largest (when
#   `top_k > 0`) and then the **smallest set of most probable tokens whose probability reaches
#   `top_p`** (when `top_p < 1`; a token stays when the probability of the tokens ranked above it
#   is still below `top_p`), sets all others to $-\infty$, and draws one token per row with
#   `torch.multinomial(probs, 1, generator=generator)`. `top_k=0` and `top_p=1.0` are "off", as
#   in `transformers`.
#
# Do not call llmlab's `generate` or `filter_logits`. With the same generator seed your samples
# must be llmlab's, token for token.
#
# <details><summary>Hint 1 — idea</summary>Both filters decide, per row, which tokens survive
# from how the tokens rank; everything that does not survive becomes $-\infty$ before the
# softmax, so the draw renormalises over the survivors by itself.</details>
# <details><summary>Hint 2 — structure</summary>Top-k: the k-th largest logit of each row is a
# threshold (`torch.topk`). Top-p: rank the probabilities (`sort`, descending), decide in ranked
# order, then put the decision back in vocabulary order (`scatter`).</details>
# <details><summary>Hint 3 — key formula</summary>The mass *before* a ranked token is
# `cumsum - p`; keep it while that mass is below `top_p`. Apply top-p to what top-k left: softmax
# over the filtered logits, not the original ones.</details>

# %% solution="generate"
@torch.no_grad()
def generate_(model: nn.Module, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
              top_k: int = 0, top_p: float = 1.0,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample ``max_new_tokens`` tokens. idx: (batch, seq) -> (batch, seq + max_new_tokens)."""
    ### BEGIN SOLUTION
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.config.block_size:])[:, -1, :].float()
        if temperature == 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k > 0:
                kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if top_p < 1.0:
                probs, order = torch.sort(torch.softmax(logits, -1), dim=-1, descending=True)
                drop = probs.cumsum(-1) - probs >= top_p
                logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
        idx = torch.cat((idx, nxt), dim=1)
    return idx
    ### END SOLUTION


# %% check="generate" points=2
from llmlab.model import filter_logits, generate  # noqa: E402


def generate_reference(model, idx, n, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    return generate(model, idx, max_new_tokens=n, temperature=temperature, top_k=top_k,
                    top_p=top_p, generator=generator, use_cache=False)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


_prompt = torch.tensor([tok.encode("def ")])
grading.check_function(generate_, generate_reference, [
    grading.Case(book, _prompt, 8, 0.0, note="greedy (temperature 0)"),
    grading.Case(book, _prompt, 8, 0.8, 40, 1.0, _seeded(0), note="temperature 0.8, top-k 40"),
    grading.Case(book, _prompt, 8, 1.0, 0, 0.5, _seeded(1), note="top-p 0.5"),
], block=[generate, filter_logits], mistakes=mistakes.CATALOGUE.mistakes("generate"),
   hint="top-p keeps a token while the mass ranked above it is below p")

# %% hidden="generate" points=3
_long = torch.randint(0, cfg.vocab_size, (2, cfg.block_size - 2), generator=_seeded(5))
grading.check_function(generate_, generate_reference, [
    grading.Case(book, _long, 5, 1.0, 20, 0.9, _seeded(2), note="crossing block_size, top-k then top-p"),
    grading.Case(book, _prompt.expand(3, -1), 6, 1.3, 0, 0.3, _seeded(3), note="3 rows, top-p 0.3"),
    grading.Case(book, _prompt, 4, 0.7, 1, 1.0, _seeded(4), note="top-k 1 is greedy"),
], block=[generate, filter_logits], mistakes=mistakes.CATALOGUE.mistakes("generate"))

# %% [markdown]
# The samples below, and the widget, use your `generate_` when it passes:

# %%
sample_fn = grading.prefer_yours(generate_, generate_reference,
                                 [grading.Case(book, _prompt, 6, 1.0, 20, 0.9, _seeded(2))],
                                 name="generate_")

# %%

prompt = torch.tensor([tok.encode('def read_config(path):\n    """')])
out = sample_fn(book, prompt, 60, 0.8, 40, 1.0, torch.Generator().manual_seed(0))
print(tok.decode(out[0].tolist()))

# %% [markdown]
# Turn the knobs (live in JupyterLab): low temperature repeats the most likely continuation,
# high temperature wanders off into rare tokens.

# %% tags=["nbval-ignore-output"]
import ipywidgets as widgets


def sample_book(prompt: str = "class ", temperature: float = 0.8, top_k: int = 40, seed: int = 0) -> None:
    ids = torch.tensor([tok.encode(prompt)])
    out = sample_fn(book, ids, 50, temperature, top_k, 1.0, torch.Generator().manual_seed(seed))
    print(tok.decode(out[0].tolist()))


widgets.interact(sample_book, prompt="class ", temperature=widgets.FloatSlider(value=0.8, min=0.0, max=2.0, step=0.1),
                 top_k=widgets.IntSlider(value=40, min=0, max=200, step=10), seed=widgets.IntSlider(value=0, min=0, max=20));

# %% [markdown]
# ## 5 · Memory and compute
#
# ### Where training memory goes
#
# Per parameter, fp32 training with Adam holds the weight (4 bytes), its gradient (4) and two
# Adam moments (8): **16 bytes**. On top come the **activations** autograd keeps for the
# backward pass, which grow with batch × sequence × layers × width (Korthikanti et al. 2022,
# [arXiv:2205.05198](https://arxiv.org/abs/2205.05198)). `llmlab.model.counting.memory_estimate`
# counts them for this exact architecture; the test suite checks the count against the bytes
# autograd really saves (measured with `saved_tensors_hooks`). Check it yourself:

# %%
from llmlab.model.counting import memory_estimate, saved_activation_bytes

probe = GPT(GPTConfig.llama_style(vocab_size=512, block_size=64, d_model=64, n_layer=2, n_head=4, n_kv_head=2))
idx_probe = torch.randint(0, 512, (4, 64))
est = memory_estimate(probe.config, batch_size=4, seq_len=64)["activations"]
print(f"activations: estimated {est / 2**20:.2f} MiB, measured {saved_activation_bytes(probe, idx_probe, idx_probe) / 2**20:.2f} MiB")


def memory_bars(d_model: int = 128, n_layer: int = 6, batch_size: int = 16, seq_len: int = 512,
                bf16_activations: bool = False) -> None:
    c = cfg.replace(d_model=d_model, n_layer=n_layer, n_head=d_model // 32, n_kv_head=math.gcd(d_model // 32, 2),
                    d_head=None, d_ff=cfg.d_ff if d_model == cfg.d_model else None, block_size=seq_len)
    m = memory_estimate(c, batch_size, seq_len, act_bytes=2 if bf16_activations else 4)
    parts = ["weights", "grads", "optimizer", "activations"]
    fig, ax = plt.subplots(figsize=(6.5, 1.6))
    left = 0.0
    for part, color in zip(parts, ["C0", "C1", "C2", "C3"]):
        ax.barh(0, m[part] / 2**20, left=left, color=color, label=f"{part} {m[part] / 2**20:,.1f} MiB")
        left += m[part] / 2**20
    ax.set_yticks([]), ax.set_xlabel("MiB")
    ax.set_title(f"{param_count(c)['total'] / 1e6:.1f} M parameters · batch {batch_size} × {seq_len}")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.6), ncol=2)
    plt.show()


memory_bars()

# %% [markdown]
# Move the sliders: activations scale with batch × sequence and dominate small models; the
# 16 bytes/parameter dominate large ones at small batch. This is why large runs shard the
# optimizer states (ZeRO, FSDP, chapter 04) and recompute activations instead of storing them.

# %% tags=["nbval-ignore-output"]
widgets.interact(memory_bars, d_model=widgets.IntSlider(value=128, min=64, max=1024, step=32),
                 n_layer=widgets.IntSlider(value=6, min=1, max=32), batch_size=widgets.IntSlider(value=16, min=1, max=64),
                 seq_len=widgets.IntSlider(value=512, min=64, max=2048, step=64), bf16_activations=False);

# %% [markdown]
# ### Precision: bf16 where the hardware has it, fp32 where it does not
#
# Under `torch.autocast(device_type, dtype=torch.bfloat16)` every matmul runs in bfloat16 while
# the master weights, gradients and Adam moments stay fp32 (Micikevicius et al. 2017,
# [arXiv:1710.03740](https://arxiv.org/abs/1710.03740)). bfloat16 keeps fp32's exponent range,
# so unlike fp16 it needs no loss scaling. Whether it is *faster* depends on the hardware: GPUs
# since Ampere and CPUs with AMX or AVX-512-BF16 units (recent Xeons, AMD Zen 4) multiply bf16
# natively, several times faster than fp32; most laptops (AVX2 only, and Apple silicon as PyTorch
# sees it) do not, and PyTorch then converts every bf16 operand to fp32 inside the matmul —
# one to two orders of magnitude *slower* than plain fp32. So the Trainer's default is
# `precision="auto"`: `llmlab.train.resolve_precision` times a small matmul in both dtypes once
# and picks bf16 only where it clearly wins. Here is your machine:

# %% tags=["nbval-ignore-output"]
from llmlab.train import bf16_speedup, measure_matmul_peak, resolve_precision

# The peak is timed at 1024² in fp32 (the live run's precision). bf16 is timed at 256² and one
# thread, the probe `precision="auto"` uses: where bf16 is emulated, one 1024² bf16 matmul can
# take seconds to tens of seconds.
fp32_peak = measure_matmul_peak(torch.float32)
bf16_ratio = bf16_speedup()
print(f"1024² matmul here: fp32 {fp32_peak / 1e9:,.0f} GFLOP/s; a 256² bf16 matmul runs at "
      f"{bf16_ratio:.2g}× the fp32 speed")
print(f"precision='auto' trains in {resolve_precision('auto')} on this machine "
      f"(bf16 is chosen at ≥ 1.5×)")

# %% [markdown]
# ### Gradient accumulation
#
# **Gradient accumulation** runs `grad_accum` micro-batches and divides each loss by `grad_accum`: the summed gradients equal
# those of one batch `grad_accum` times larger, for the memory of one micro-batch:

# %%
from llmlab.nn import fast_cross_entropy


def accumulated_grads(x: torch.Tensor, y: torch.Tensor, grad_accum: int) -> list[torch.Tensor]:
    """Gradients of the mean loss over the batch, summed over ``grad_accum`` micro-batches."""
    seed_all(1)
    m = GPT(live_cfg)
    for xb, yb in zip(x.chunk(grad_accum), y.chunk(grad_accum)):
        (fast_cross_entropy(m(xb), yb) / grad_accum).backward()
    return [p.grad for p in m.parameters()]


x8, y8 = random_windows(train_ids, 8, 64, torch.Generator().manual_seed(1))
big, accumulated = accumulated_grads(x8, y8, 1), accumulated_grads(x8, y8, 2)
# Equal up to fp32 rounding: two half-batch sums are added in another order than one full sum.
rel = max((g - h).abs().max().item() for g, h in zip(big, accumulated)) / max(g.abs().max().item() for g in big)
assert rel < 1e-5, rel
print("one batch of 8 vs 2 × 4 accumulated: the gradients agree up to fp32 rounding "
      "(relative difference < 1e-5)")

# %% [markdown]
# ### Checkpoints that resume exactly
#
# A checkpoint holds everything that decides the future: weights, Adam moments and step
# counts, the data sampler's random state, the step. `save_checkpoint` writes it to a temporary
# file and renames it (atomic: a crash never leaves half a checkpoint). Here the run is your
# `pretrain_` where it passes (llmlab's `Trainer` otherwise): stopped after 3 of 6 steps, then
# called again on a model of other weights, as a new process would be. Resuming gives the same
# weights, bit for bit, as never stopping:

# %%
import tempfile
from pathlib import Path


def short_run(stop_after: int | None, path: Path) -> GPT:
    config = TrainConfig(max_steps=6, batch_size=4, seq_len=64, warmup_steps=1, precision="fp32",
                         checkpoint_path=None if stop_after is None else str(path))
    seed_all(2)
    m = your_gpt(live_cfg)
    pretrain_fn(m, train_ids, None, config, stop_after)
    if stop_after is None:
        return m
    seed_all(3)
    fresh = your_gpt(live_cfg)  # other weights, until the checkpoint is loaded
    pretrain_fn(fresh, train_ids, None, config)
    return fresh


with tempfile.TemporaryDirectory() as d:
    a, b = short_run(None, Path(d) / "c.pt"), short_run(3, Path(d) / "c.pt")
print("identical after resume:", all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())))

# %% [markdown]
# ### Compute: 6·N·D, and MFU measured here
#
# Each parameter does one multiply-add (2 FLOPs) per token in the forward pass and about twice
# that in the backward pass, so training costs **C ≈ 6·N·D** FLOPs for N parameters and D tokens
# (Kaplan et al. 2020, [arXiv:2001.08361](https://arxiv.org/abs/2001.08361)), plus attention's
# $12\,n_\text{layer}\,T\,d$ per token. **MFU** (model FLOPs utilisation, Chowdhery et al. 2022,
# [arXiv:2204.02311](https://arxiv.org/abs/2204.02311)) is the achieved model FLOP/s divided by
# the hardware's peak in the precision actually used; here the peak is *measured* with a large
# matmul in that precision (fp32 for the live run above).
#
# ### Exercise 2.13 — predict: the compute of a Chinchilla-optimal GPT-2 · 2 points · difficulty 1 · ~5 min
#
# Predict first. Train a 124 M-parameter model (GPT-2 small) compute-optimally, at 20 tokens
# per parameter. How many FLOPs does it cost by $C \approx 6ND$? Return the number (e.g.
# `1.2e15`); the cell after the check compares it with the book's model.
#
# <details><summary>Hint 1</summary>First D, from N and the ratio; then C.</details>

# %% solution="predict_flops"
def predict_chinchilla_flops() -> float:
    """6·N·D for N = 124e6 parameters trained on 20 tokens per parameter."""
    ### BEGIN SOLUTION
    n = 124e6
    return 6 * n * 20 * n
    ### END SOLUTION


# %% check="predict_flops" points=1
grading.check_function(predict_chinchilla_flops, lambda: 6 * 124e6 * 20 * 124e6,
                       [grading.Case(note="N = 124 M, D = 20 N")], rtol=0.02,
                       mistakes=mistakes.CATALOGUE.mistakes("predict_flops"),
                       hint="D = 20 × N tokens; C = 6 × N × D")

# %% hidden="predict_flops" points=1
grading.check_function(predict_chinchilla_flops, lambda: 1.845e18, [grading.Case(note="the FLOPs")],
                       rtol=0.02, mistakes=mistakes.CATALOGUE.mistakes("predict_flops"))

# %%
from llmlab.model.counting import training_flops  # noqa: E402

gpt2_flops = training_flops(124e6, 20 * 124e6)
print(f"GPT-2 small, Chinchilla-optimal: {gpt2_flops:.2e} FLOPs; the book's model used "
      f"{training_flops(summary['params'], summary['tokens_trained']):.1e} "
      f"({gpt2_flops / training_flops(summary['params'], summary['tokens_trained']):,.0f}× less)")

# %% tags=["nbval-ignore-output"]
from llmlab.model.counting import flops_per_token, training_flops

print(f"your live run (fp32): {live_tokens_per_s:,.0f} tokens/s × {live_flops_per_token / 1e6:.1f} MFLOP/token "
      f"= MFU {100 * mfu(live_tokens_per_s, live_flops_per_token, fp32_peak):.1f}% of the measured fp32 peak")
n_book, d_book = summary["params"], summary["tokens_trained"]
print(f"book model: 6·N·D = 6 × {n_book:,} × {d_book:,} = {training_flops(n_book, d_book):.2e} FLOPs; "
      f"with attention {flops_per_token(cfg) * d_book:.2e}; median MFU {100 * summary['median_mfu']:.1f}% "
      f"over {summary['wall_time_s'] / 60:.0f} min")

# %% [markdown]
# These MFUs are fractions of the fp32 matmul peak *measured on this CPU* (section 7), not of
# a datasheet peak, which is why a small model reaches a sizable share. What keeps it from 100%:
# its matrices are too small to keep the matmul units busy, and the element-wise work (norms,
# RoPE, softmax, the optimizer) is memory-bound. Large GPU runs reach 35–55% of the datasheet
# bf16 peak (Llama 3 405B: 38–43% across its three 8k–16k-GPU configurations).
#
# ### A small scaling sweep
#
# Chinchilla (Hoffmann et al. 2022, [arXiv:2203.15556](https://arxiv.org/abs/2203.15556)) asked:
# for a fixed compute budget C, what model size is best? One of its methods trains several
# sizes and takes, at each C, the lowest loss among them — the **envelope** of the training
# curves; it found N and D should grow equally (≈ 20 tokens per parameter). Here is that
# experiment in miniature: three widths, the same number of steps, loss against FLOPs spent.

# %% tags=["nbval-ignore-output"]
sweep = {}
for width in tqdm([32, 64, 128], desc="sweep"):
    seed_all(0)
    c = live_cfg.replace(d_model=width, n_head=4, n_kv_head=2, d_head=None, d_ff=None)
    m = GPT(c)
    t = Trainer(m, train_ids, None, TrainConfig(max_steps=40, batch_size=16, lr=3e-3, warmup_steps=4,
                                                 log_every=5, precision="auto"), peak_flops=1.0)
    log = t.fit(progress=False)
    n = m.num_params(non_embedding=True)
    sweep[width] = (n, [(r["tokens"] * flops_per_token(c, c.block_size), r["loss"]) for r in log if "loss" in r])

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.2))
for width, (n, pts) in sweep.items():
    ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"d_model {width} ({n / 1e3:.0f}k non-emb. params)")
ax.set_xscale("log"), ax.set_xlabel("training FLOPs (6ND + attention)"), ax.set_ylabel("train loss")
ax.set_title("same steps, three sizes: the lower envelope is the compute-optimal frontier")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# At the smallest budgets the smallest model is best (it takes more steps per FLOP); as compute
# grows, wider models overtake it. Chinchilla ran this over 400 models up to 16B parameters.
#
# ## 6 · How the industry does it
#
# The same block, at scale. Numbers from each model's paper and released `config.json`:
#
# | | GPT-2 small | Llama 3 8B | Qwen2 7B | DeepSeek-V3 | **this book** |
# |---|---|---|---|---|---|
# | layers × d_model | 12 × 768 | 32 × 4096 | 28 × 3584 | 61 × 7168 | 6 × 128 |
# | heads (query / KV) | 12 / 12 | 32 / 8 (GQA) | 28 / 4 (GQA) | 128, MLA (latent 512) | 4 / 2 (GQA) |
# | positions | learned, 1024 | RoPE θ=500k, 8k | RoPE θ=1M, 32k | RoPE (decoupled), 128k | RoPE θ=10k, 512 |
# | norm / MLP | LayerNorm / GELU 4× | RMSNorm / SwiGLU 14336 | RMSNorm / SwiGLU 18944 | RMSNorm / MoE: 1 shared + 8 of 256 routed experts | RMSNorm / SwiGLU 320 |
# | vocabulary | 50,257 | 128,256 | 151,646 | 129,280 | 4,096 |
# | parameters | 124 M | 8.0 B | 7.6 B | 671 B (37 B active) | 1.6 M |
# | training tokens | not published (WebText: ~40 GB of text) | 15 T | 7 T | 14.8 T | 31 M (20 per parameter) |
# | precision | fp32 | bf16 | bf16 | FP8 mixed | bf16 autocast (CPU) |
#
# Sources: Radford et al. 2019 (GPT-2); Grattafiori et al., "The Llama 3 Herd of Models",
# [arXiv:2407.21783](https://arxiv.org/abs/2407.21783); Yang et al., "Qwen2 Technical Report",
# [arXiv:2407.10671](https://arxiv.org/abs/2407.10671); DeepSeek-AI, "DeepSeek-V3 Technical
# Report", [arXiv:2412.19437](https://arxiv.org/abs/2412.19437). Qwen2 also adds biases to
# q, k, v; DeepSeek-V3's multi-head latent attention is chapter 03, its mixture of experts
# routes each token to 8 of 256 expert MLPs. Llama 3 405B trained on 3.8 × 10²⁵ FLOPs —
# 6·N·D with N = 405 B, D = 15.6 T — about 10¹¹ times this chapter's model.
#
# Where it breaks: past a few billion parameters, fp32 Adam states no longer fit one GPU
# (ZeRO/FSDP, chapter 04); bf16 training of very large models sees loss spikes, handled by
# restarting from a checkpoint with data skipped, lower learning rates and QK-norm; and MFU is
# won by fused kernels (FlashAttention, fused RMSNorm/RoPE) that this chapter replaces with
# readable PyTorch.
#
# `llmlab.model.from_hf` loads any of the GPT-2 and Llama-family checkpoints above (GQA
# included) into this chapter's `GPT`, and the test suite checks the logits against
# `transformers` to 1e-4.
#
# ## 7 · Summary and further reading
#
# - A GPT is embeddings, a stack of pre-norm blocks (attention to exchange information
#   causally, an MLP to transform each token) and an LM head; GPT-2 and Llama differ only in the
#   pieces: positions (learned vs RoPE), norm (LayerNorm vs RMSNorm), MLP (GELU vs SwiGLU) and
#   KV heads (MHA vs GQA).
# - Pretraining minimises next-token cross-entropy with AdamW, warmup + cosine decay, gradient
#   clipping, bf16 autocast where the hardware multiplies bf16 natively (fp32 elsewhere) and
#   gradient accumulation; a checkpoint with optimizer and sampler
#   state resumes exactly.
# - A loss of $\ell$ nats per token is $\ell/\ln 2$ bits per token and perplexity $e^{\ell}$ (the
#   exponential of the *mean*); GPT-2's initialisation (N(0, 0.02²), residual projections
#   ÷ $\sqrt{2L}$) starts the loss at $\ln V$ with a residual stream that does not grow with depth;
#   a stack that cannot overfit one batch has a bug.
# - Training memory is 16 bytes per parameter plus activations; compute is ≈ 6·N·D; MFU says
#   how much of the machine a run uses; compute-optimal models balance N and D.
#
# Papers: Vaswani et al., *Attention Is All You Need* ([1706.03762](https://arxiv.org/abs/1706.03762));
# Radford et al., *Language Models are Unsupervised Multitask Learners* (GPT-2, 2019);
# Touvron et al., *LLaMA* ([2302.13971](https://arxiv.org/abs/2302.13971)); Su et al., *RoFormer*
# ([2104.09864](https://arxiv.org/abs/2104.09864)); Zhang & Sennrich, *RMSNorm*
# ([1910.07467](https://arxiv.org/abs/1910.07467)); Shazeer, *GLU Variants Improve Transformer*
# ([2002.05202](https://arxiv.org/abs/2002.05202)); Ainslie et al., *GQA*
# ([2305.13245](https://arxiv.org/abs/2305.13245)); Loshchilov & Hutter, *Decoupled Weight Decay
# Regularization* ([1711.05101](https://arxiv.org/abs/1711.05101)); Kaplan et al., *Scaling Laws
# for Neural Language Models* ([2001.08361](https://arxiv.org/abs/2001.08361)); Hoffmann et al.,
# *Training Compute-Optimal Large Language Models* ([2203.15556](https://arxiv.org/abs/2203.15556));
# Korthikanti et al., *Reducing Activation Recomputation* ([2205.05198](https://arxiv.org/abs/2205.05198)).
#
# Next: chapter 03 replaces this chapter's attention with the variants production models use.
