# %% [markdown]
# # 00 · How this book works
#
# This book builds the industrial LLM stack one layer at a time — tokenizer, model, training,
# attention, parallelism, fine-tuning, alignment, quantization, KV cache, serving — and every
# layer is implemented for real in one Python package, `llmlab`, that you can read, run and
# test against the libraries the industry uses (tiktoken, Hugging Face `transformers`, `peft`,
# `trl`, PyTorch DDP/FSDP, vLLM's ideas).
#
# **You will learn to**
# 1. run the book on a laptop CPU and find your way around a chapter;
# 2. solve a graded exercise and read the instant feedback it gives;
# 3. grade a whole chapter yourself, exactly as an instructor's autograder would;
# 4. write three tensor idioms every later chapter leans on: a numerically stable softmax,
#    splitting a model dimension into heads, and a masked mean.

# %% [markdown]
# **Budget:** ~0.5 min on 2 CPU cores · peak RAM ~0.5 GB. No GPU and no network needed.

# %% [markdown]
# ## Setup
#
# From a clone of the repository, two commands do everything:
#
# ```bash
# make lab    # creates .venv (CPU PyTorch first, then llmlab) and opens JupyterLab on chapters/
# make test   # runs the whole test suite: unit, parity, notebooks, release and grading
# ```
#
# `make lab` is headless-friendly: `make lab HOST=0.0.0.0 PORT=8888 BROWSER=no`.
# The cell below checks your environment: the versions, how many CPU threads PyTorch uses,
# and whether your CPU has fast bfloat16 matrix units (many recent x86 CPUs do).

# %% tags=["nbval-ignore-output"]
import platform

import torch

import llmlab
from llmlab import grading
from llmlab.utils import seed_all

seed_all(0)
print(f"llmlab {llmlab.__version__} · torch {torch.__version__} · Python {platform.python_version()}")
print(f"CPU threads used by torch: {torch.get_num_threads()} · CUDA available: {torch.cuda.is_available()}")

# %% [markdown]
# ## How a chapter is laid out
#
# Every chapter follows the same order, so you always know where you are:
#
# | part | what it gives you |
# |---|---|
# | objectives and budget | what you will be able to do, and the minutes/RAM it costs on 2 CPU cores |
# | ideas | the math, with figures, before any code asks anything of you |
# | demonstrations | `llmlab` running on real data |
# | **exercises** | graded pieces you implement yourself |
# | experiments | something you measure: a plot or a table you produce |
# | how the industry does it | which systems use the idea, with numbers and sources |
# | summary and further reading | the papers, with links |
#
# Chapters import `llmlab`; nothing is hidden in the notebook. When a chapter teaches a
# component, the component's docstring in `llmlab` names the chapter.
#
# The table below is read from the chapter notebooks themselves (their budget line):

# %%
from pathlib import Path

from llmlab.chapters import list_chapters

book_chapters = list_chapters(Path(".."))
width = max(len(ch.title) for ch in book_chapters)
for ch in book_chapters:
    print(f"{ch.number:02d}  {ch.title:<{width}}  ~{ch.minutes:g} min · ~{ch.ram_gb:g} GB RAM")

# %% [markdown]
# ## The ideas: why a *stable* softmax
#
# Models turn scores ("logits") $z \in \mathbb{R}^n$ into probabilities with the softmax
#
# $$\operatorname{softmax}(z)_i = \frac{e^{z_i}}{\sum_{j} e^{z_j}} = \frac{e^{z_i - m}}{\sum_j e^{z_j - m}}\quad\text{for any } m .$$
#
# The two forms are equal, but only the second survives large logits: in float32,
# $e^{89} \approx 4.5\times10^{38}$ already overflows to `inf`, and `inf/inf` is `NaN`.
# Choosing $m = \max_j z_j$ makes every exponent $\le 0$, so nothing overflows and the largest
# term is exactly 1. A *temperature* $T$ divides the logits first: $\operatorname{softmax}(z/T)$
# is sharper for $T<1$ and flatter for $T>1$ — the knob every sampler exposes.

# %%
import matplotlib.pyplot as plt

from llmlab_book.ch00_intro import stable_softmax

logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
fig, ax = plt.subplots(figsize=(7, 3))
for i, T in enumerate([0.5, 1.0, 2.0]):
    p = stable_softmax(logits / T)
    ax.bar(torch.arange(5) + (i - 1) * 0.27, p, width=0.27, label=f"T = {T}")
ax.set_xlabel("token"), ax.set_ylabel("probability"), ax.legend()
ax.set_title("softmax(z / T): lower temperature sharpens the distribution")
plt.tight_layout()
plt.show()

# %% [markdown]
# Turn the knob yourself (the widget runs live in JupyterLab):

# %% tags=["nbval-ignore-output"]
import ipywidgets as widgets


def show_temperature(T: float = 1.0) -> None:
    p = stable_softmax(logits / T)
    print("  ".join(f"{x:.3f}" for x in p.tolist()), f"   entropy = {-(p * p.log()).sum():.3f} nats")


widgets.interact(show_temperature, T=widgets.FloatSlider(value=1.0, min=0.05, max=5.0, step=0.05));

# %% [markdown]
# ## How an exercise works
#
# Each exercise has four cells:
#
# 1. a description with **points, difficulty (1–3) and a time estimate**;
# 2. an **answer cell**: a function with its signature and docstring, and the line
#    `raise NotImplementedError()` that you replace with your code;
# 3. a **check cell** that runs your function on a few cases against `llmlab`'s own
#    implementation and tells you, in words, what is wrong — which case, which shape, what was
#    expected, and a hint;
# 4. a **hidden test cell** you do not see: the grader adds it back and runs more cases.
#
# While your code runs under a check, `llmlab`'s implementation of the same piece is switched
# off, so calling it cannot pass. If you are stuck, skip the exercise: every later cell uses
# `llmlab`'s implementation, so the rest of the chapter still runs.
#
# Here is the kind of message a check prints (this is `grading.explain`, which the checks use),
# for an answer that forgot to subtract the max:

# %%
def naive_softmax(x: torch.Tensor) -> torch.Tensor:
    return x.exp() / x.exp().sum(-1, keepdim=True)


big = torch.tensor([[1000.0, 999.0, 0.0]])
print(grading.explain(naive_softmax(big), stable_softmax(big)))

# %% [markdown]
# ### Exercise 0.1 — a numerically stable softmax · 2 points · difficulty 1 · ~5 min
#
# Implement `softmax(x, dim)` along dimension `dim` without ever overflowing: subtract the
# maximum along `dim` (keep the dimension so it broadcasts), exponentiate, normalise.
# Use only elementary torch operations (`torch.softmax` would defeat the purpose).

# %% solution="softmax"
def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Numerically stable softmax of ``x`` along ``dim``; same shape as ``x``."""
    ### BEGIN SOLUTION
    z = x - x.amax(dim=dim, keepdim=True)
    e = z.exp()
    return e / e.sum(dim=dim, keepdim=True)
    ### END SOLUTION


# %% check="softmax" points=1
import llmlab.nn.functional
from llmlab_book.ch00_intro import CATALOGUE

# Everything that computes a softmax is blocked while your answer runs (torch.softmax also blocks
# its namesakes, such as the method x.softmax and torch.nn.functional.softmax).
SOFTMAX_TWINS = [torch.softmax, llmlab.nn.functional.softmax]
grading.check_function(softmax, stable_softmax, [
    grading.Case(torch.tensor([1.0, 2.0, 3.0]), note="a vector"),
    grading.Case(torch.randn(4, 7), note="a batch of rows"),
    grading.Case(torch.tensor([[1000.0, 999.0, 0.0]]), note="huge logits"),
    grading.Case(torch.randn(3, 2), dim=0, note="along dim 0"),
], block=SOFTMAX_TWINS, mistakes=CATALOGUE.mistakes("softmax"),
   hint="subtract x.amax(dim, keepdim=True) before exp")

# %% hidden="softmax" points=1
grading.check_function(softmax, stable_softmax, [
    grading.Case(torch.randn(3, 5, 6), dim=1, note="softmax over a middle dimension"),
    grading.Case(torch.tensor([-1e4, -1e4 + 1.0]), note="hugely negative logits"),
    grading.Case(torch.randn(2, 4, dtype=torch.float64) * 50, dim=0, note="float64, dim=0"),
], block=SOFTMAX_TWINS, mistakes=CATALOGUE.mistakes("softmax"))

# %% [markdown]
# ### Exercise 0.2 — split a model dimension into heads · 2 points · difficulty 1 · ~5 min
#
# Attention splits each token's vector of size `d_model = n_heads * d_head` into `n_heads`
# vectors and moves the head axis in front of the sequence axis:
# `(batch, seq, n_heads * d_head) -> (batch, n_heads, seq, d_head)`.
# Head `h` owns the features `h*d_head … (h+1)*d_head - 1`. Use `einops.rearrange` with named
# axes (`"b s (h d) -> b h s d"`) or `view` + `transpose`. Raise `ValueError` if `d_model` is not
# divisible by `n_heads`.

# %% solution="split_heads"
from einops import rearrange


def split_heads_(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(batch, seq, n_heads * d_head) -> (batch, n_heads, seq, d_head)."""
    ### BEGIN SOLUTION
    if x.shape[-1] % n_heads:
        raise ValueError(f"d_model={x.shape[-1]} is not divisible by n_heads={n_heads}")
    return rearrange(x, "b s (h d) -> b h s d", h=n_heads)
    ### END SOLUTION


# %% check="split_heads" points=1
from llmlab_book.ch00_intro import split_heads

grading.check_function(split_heads_, split_heads, [
    grading.Case(torch.arange(24.0).reshape(1, 3, 8), 2, note="1 sequence of 3 tokens, 2 heads"),
    grading.Case(torch.randn(2, 5, 12), 4, note="batch of 2, 4 heads"),
    grading.Case(torch.randn(1, 2, 10), 4, note="d_model = 10, 4 heads: raises ValueError"),
], mistakes=CATALOGUE.mistakes("split_heads"),
   hint="the head axis is the *outer* factor of d_model: '(h d)', not '(d h)'")

# %% hidden="split_heads" points=1
grading.check_function(split_heads_, split_heads, [
    grading.Case(torch.randn(2, 3, 12), 3, note="3 heads of 4"),
    grading.Case(torch.randn(1, 4, 6), 2, note="2 heads of 3"),
    grading.Case(torch.randn(3, 1, 6), 6, note="d_head = 1"),
    grading.Case(torch.randn(2, 4, 8), 1, note="one head"),
    grading.Case(torch.randn(1, 2, 10), 3, note="d_model = 10, 3 heads: raises ValueError"),
], mistakes=CATALOGUE.mistakes("split_heads"))

# %% [markdown]
# ### Exercise 0.3 — a masked mean · 2 points · difficulty 2 · ~10 min
#
# Batches pad sequences to one length; a boolean `mask (batch, seq)` says which positions are
# real. Return the mean over the sequence of the real positions only:
# `x (batch, seq, d), mask (batch, seq) -> (batch, d)`. A row whose mask is all False must give
# zeros, not `NaN` (clamp the count to at least 1).

# %% solution="masked_mean"
def masked_mean_(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over seq where mask is True. x: (batch, seq, d), mask: (batch, seq) -> (batch, d)."""
    ### BEGIN SOLUTION
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
    ### END SOLUTION


# %% check="masked_mean" points=1
from llmlab_book.ch00_intro import masked_mean

grading.check_function(masked_mean_, masked_mean, [
    grading.Case(torch.ones(1, 3, 2), torch.tensor([[True, True, False]]), note="ones"),
    grading.Case(torch.randn(2, 4, 3), torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]).bool(), note="ragged"),
    grading.Case(torch.randn(2, 2, 3), torch.tensor([[True, False], [False, False]]), note="a row with nothing kept"),
], mistakes=CATALOGUE.mistakes("masked_mean"),
   hint="divide by the number of True positions per row, not by seq")

# %% hidden="masked_mean" points=1
grading.check_function(masked_mean_, masked_mean, [
    grading.Case(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool), note="all masked: zeros, not NaN"),
    grading.Case(torch.randn(3, 5, 1, dtype=torch.float64), torch.rand(3, 5) > 0.3, note="float64"),
], mistakes=CATALOGUE.mistakes("masked_mean"))

# %% [markdown]
# ## Grading yourself
#
# Save the notebook, then from a terminal in the repository:
#
# ```bash
# llmlab grade chapters/00_intro/00_intro.ipynb          # a table: points per exercise + feedback
# llmlab grade chapters/00_intro/00_intro.ipynb --json   # the same, machine-readable
# llmlab grade --all chapters/                           # every chapter
# ```
#
# The grader is [nbgrader](https://nbgrader.readthedocs.io), the tool instructors use: it takes
# your answer cells, restores every other cell from the authored notebook (so an edited or
# deleted test does not count), adds the hidden tests back, runs everything in a fresh kernel
# and scores each test cell. An infinite loop, a crash or a giant print costs only the exercise
# it happens in. Instructors run the same thing over a class with nbgrader's course directory;
# see the README.

# %% [markdown]
# ## Experiment: what the stable softmax buys
#
# Where does the naive formula break? Sweep the scale of random logits and count the rows that
# come out with a `NaN`, in float32 and in bfloat16 (the format most training runs in).

# %%
from tqdm.auto import tqdm

scales = [1, 10, 30, 60, 80, 90, 100, 300, 1000]
rows = []
for s in tqdm(scales, desc="logit scale"):
    z = torch.randn(1000, 50, generator=torch.Generator().manual_seed(0)) * s
    row = [s]
    for dtype in (torch.float32, torch.bfloat16):
        zz = z.to(dtype)
        row.append(naive_softmax(zz).isnan().any(-1).float().mean().item())
        row.append(stable_softmax(zz).isnan().any(-1).float().mean().item())
    rows.append(row)
print(f"{'scale':>6} | {'fp32 naive':>10} {'fp32 stable':>11} | {'bf16 naive':>10} {'bf16 stable':>11}")
for s, a, b, c, d in rows:
    print(f"{s:>6} | {a:>10.1%} {b:>11.1%} | {c:>10.1%} {d:>11.1%}")
assert all(b == 0 and d == 0 for _, _, b, _, d in rows), "the stable softmax never gives NaN"
first_nan = next(s for s, a, *_ in rows if a > 0)
all_nan = next(s for s, a, *_ in rows if a == 1)
print(f"naive, float32: the first NaN rows at scale {first_nan}, every row NaN from scale {all_nan}")

# %% [markdown]
# Once the largest logit of a row passes about 89, `exp` overflows float32 — and bfloat16, which
# has float32's exponent range — and the naive formula returns `NaN` for that row; the line
# under the table says from which scale that happens to some rows and to every row. The stable
# one never does (the cell asserts it).
#
# ## How the industry does it
#
# - **Softmax.** Every framework's softmax subtracts the max (PyTorch's `torch.softmax`, the
#   fused GPU kernels in FlashAttention, which also keep a *running* max — chapter 03).
# - **Heads.** Hugging Face `transformers` implements the head split with `view` + `transpose`;
#   research code (e.g. ARENA, nanoGPT forks) often uses `einops`. Same memory layout, same cost.
# - **Masked means.** Loss functions average over real tokens only: `transformers` uses an
#   ignore index of `-100` in the labels, which is the same masked mean in disguise.
# - **Autograding.** nbgrader is the standard for Jupyter courses (UC Berkeley Data 8 uses
#   Otter-Grader, built on the same ideas).
#
# ## Summary and further reading
#
# - A chapter: ideas → demonstrations → graded exercises → experiments → industry → reading.
# - Checks explain failures in words; `llmlab grade` scores a notebook as an instructor would.
# - Subtract the max before `exp`; split heads as `(h d)`; average only over real positions.
#
# Reading: J. Bridle, *Probabilistic interpretation of feedforward classification network
# outputs* (1990) — the softmax; A. Rogozhnikov, [*Einops: Clear and Reliable Tensor
# Manipulations with Einstein-like Notation*](https://openreview.net/forum?id=oapKSVM2bcj)
# (ICLR 2022); [nbgrader documentation](https://nbgrader.readthedocs.io).
