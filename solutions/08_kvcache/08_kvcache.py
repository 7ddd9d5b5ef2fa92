# %% [markdown]
# # 08 · The KV cache
#
# A language model writes one token at a time, and every new token attends to all the tokens
# before it. Recomputing their keys and values at every step would make generation quadratic;
# keeping them — the **KV cache** — makes each step linear, and turns the memory the cache needs
# into the resource that limits how many requests a server can run at once. This chapter builds
# the caches that production inference engines use, in `llmlab.kvcache`, and measures them on
# the book's model.
#
# **You will learn to**
# 1. explain why decoding is memory-bound and derive the cache from the attention equation;
# 2. write the cache update and one cached attention step, and check greedy decoding with a
#    cache against decoding without one (and against Hugging Face `transformers`);
# 3. measure the memory of a cache per token and per request, and the memory contiguous
#    pre-allocation wastes on a mixed workload;
# 4. page the cache like virtual memory (vLLM's PagedAttention): block pool, block tables,
#    copy-on-write forks, a typed out-of-blocks error; and share prompt prefixes by hash;
# 5. shrink the cache by evicting tokens (StreamingLLM, H2O) or quantizing them (int8, KIVI),
#    and measure what each costs in perplexity.

# %% [markdown]
# **Budget:** ~0.5 min on 2 CPU cores · peak RAM ~0.5 GB. No GPU and no network needed.

# %% tags=["nbval-ignore-output"]
import time
from collections import deque
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display
from tqdm.auto import tqdm

import llmlab.kvcache as kv
from llmlab import grading
from llmlab.attention import REAL_CONFIGS
from llmlab.data import load_documents
from llmlab.kvcache.blocks import replay
from llmlab.model import load_book_model
from llmlab.utils import seed_all

seed_all(0)
torch.set_num_threads(1)  # a small model decodes fastest on one thread: ops are too small to split
model, tokenizer = load_book_model()
model.eval()
cfg = model.config
print(f"the book's model: {model.num_params() / 1e6:.2f} M parameters, {cfg.n_layer} layers, "
      f"{cfg.n_head} query heads, {cfg.n_kv_head} KV heads of {cfg.d_head}, context {cfg.block_size}")

# %% [markdown]
# ## 1. Why decoding is memory-bound
#
# Generating has two phases. **Prefill** runs the whole prompt through the model in one
# forward pass: many tokens, big matrix multiplications, the CPU or GPU busy computing.
# **Decode** then produces one token per forward pass. Each decode step still has to read
# *every weight* of the model (and, as we will see, the whole cache) from memory, but does only
# about 2 FLOPs per weight per sequence in the batch. Its *arithmetic intensity* — FLOPs per
# byte moved — is therefore about
#
# $$\frac{2 N \cdot B}{2N\ \text{bytes of bf16 weights}} \approx B \ \text{FLOP/byte}$$
#
# for $N$ parameters and batch $B$. An H100 computes ~990 TFLOP/s (bf16, dense) but reads its
# memory at ~3.35 TB/s: it needs ~300 FLOPs per byte to be compute-bound. At batch 1 decode uses
# well under 1% of the chip's arithmetic; the time is spent waiting for memory. Two consequences
# run through this chapter and the next: (1) never move a byte twice — cache what can be cached;
# (2) batch many sequences per step — which needs memory for *their* caches.
#
# You can see it on this CPU: one forward over 1 new token and one over 32 new tokens cost
# nearly the same time, because both stream the same weights.

# %% tags=["nbval-ignore-output"]
def forward_ms(t_new: int, repeat: int = 5) -> float:
    idx = torch.randint(0, cfg.vocab_size, (1, t_new))
    with torch.no_grad():
        model(idx)
        start = time.perf_counter()
        for _ in range(repeat):
            model(idx)
    return (time.perf_counter() - start) / repeat * 1e3


for t_new in (1, 8, 32):
    ms = forward_ms(t_new)
    print(f"{t_new:3d} tokens per forward: {ms:6.2f} ms  ({ms / t_new:6.3f} ms per token)")

# %% [markdown]
# ## 2. The cache, derived from the attention equation
#
# With causal attention, the output for the token at position $t$ is
#
# $$o_t = \sum_{j \le t} \operatorname{softmax}_j\!\Big(\frac{q_t \cdot k_j}{\sqrt{d}}\Big)\, v_j,
# \qquad q_t = W_Q x_t,\quad k_j = W_K x_j,\quad v_j = W_V x_j .$$
#
# $k_j$ and $v_j$ depend only on $x_j$, and $x_j$ (the layer's input at position $j$) depends
# only on tokens $\le j$. So when token $t+1$ arrives, **nothing about positions $\le t$
# changes**: their keys and values can be computed once and kept. A decode step then computes
# $q, k, v$ for the one new token, *appends* $k, v$ to the cache, and attends from $q$ to all
# cached keys:
#
# | | per step, without cache | per step, with cache |
# |---|---|---|
# | tokens through the MLPs and projections | $t$ | 1 |
# | attention score products | $t^2$ | $t$ |
# | memory kept | — | $2 \cdot n_\text{layer} \cdot n_\text{kv heads} \cdot d_\text{head}$ numbers per token |
#
# Greedy decoding with the cache must therefore give **exactly** the same tokens as without it.
# With RoPE, keys are cached *after* rotation (a key's rotation depends only on its own
# position). With grouped-query attention (GQA) only the `n_kv_head` shared heads are cached;
# with MLA (chapter 03) only a small latent vector per token.
#
# `llmlab`'s attention layers talk to a cache through three calls:
# `cache.update(layer, k_new, v_new)` returns past+new, `cache.attn_mask(t_new)` gives the
# mask (or `None` for plain causal), and `cache.offset` is the position of the first new token.

# %% [markdown]
# ### Exercise 8.1 — the cache update · 2 points · difficulty 1 · ~5 min
#
# A contiguous cache pre-allocates a buffer `(batch, capacity, n_kv_head, d_head)` per layer
# and fills it from the left. Write `append_kv(buffer, length, new)`: write `new`
# `(batch, t_new, ...)` into `buffer` right after the first `length` tokens, **in place**, and
# return the filled part `buffer[:, :length + t_new]` (a view, no copy of the past). Raise
# `ValueError` if it does not fit.

# %% solution="append_kv"
def append_kv(buffer: torch.Tensor, length: int, new: torch.Tensor) -> torch.Tensor:
    """buffer: (batch, capacity, ...), new: (batch, t_new, ...) -> (batch, length + t_new, ...)."""
    ### BEGIN SOLUTION
    t_new = new.shape[1]
    if length + t_new > buffer.shape[1]:
        raise ValueError(f"buffer holds {buffer.shape[1]} tokens, cannot append {t_new}")
    buffer[:, length:length + t_new] = new
    return buffer[:, :length + t_new]
    ### END SOLUTION


# %% check="append_kv" points=1
def _buffer(*shape: int) -> torch.Tensor:
    return torch.arange(torch.Size(shape).numel(), dtype=torch.float).reshape(shape)


APPEND_TWINS = [kv.ContiguousKVCache]
grading.check_function(append_kv, kv.append_kv, block=APPEND_TWINS, cases=[
    grading.Case(torch.zeros(1, 4, 2, 3), 0, _buffer(1, 1, 2, 3), note="first token"),
    grading.Case(_buffer(2, 6, 1, 2), 3, -_buffer(2, 2, 1, 2), note="append after 3 tokens"),
], hint="write new into buffer[:, length:length + t_new] and return buffer[:, :length + t_new]")

# %% hidden="append_kv" points=1
buf = torch.zeros(2, 5, 3)
out = append_kv(buf, 1, torch.ones(2, 2, 3))
grading.expect(out.data_ptr() == buf.data_ptr() and bool(buf[:, 1:3].eq(1).all()),
               "append_kv must write into the buffer in place and return a view of it")
grading.check_function(append_kv, kv.append_kv, block=APPEND_TWINS, cases=[
    grading.Case(_buffer(3, 8, 2, 2), 0, _buffer(3, 8, 2, 2), note="fill the whole buffer"),
    grading.Case(torch.zeros(1, 3, 4), 2, _buffer(1, 1, 4), note="a latent cache (MLA)"),
])
try:
    append_kv(torch.zeros(1, 2, 3), 2, torch.ones(1, 1, 3))
    grading.expect(False, "appending past the capacity must raise ValueError")
except ValueError:
    pass

# %% [markdown]
# ### Exercise 8.2 — one cached attention step · 3 points · difficulty 2 · ~15 min
#
# Decode attention: one new query per sequence attends to all its cached keys. Write
# `decode_attention(q, k, v, lengths)` with
#
# - `q`: `(batch, n_head, d)` — the new token's queries,
# - `k, v`: `(batch, T, n_kv_head, d)` — the cache *including* the new token,
# - `lengths`: `(batch,)` or `None` — how many of the `T` keys of each row are real (the rest is
#   padding from batching sequences of different lengths),
#
# returning `(batch, n_head, d)` = $\operatorname{softmax}(q K^\top/\sqrt{d})\,V$ per head.
# Grouped-query attention: query head `h` uses KV head `h // (n_head // n_kv_head)`.

# %% solution="decode_attention"
def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     lengths: torch.Tensor | None = None) -> torch.Tensor:
    """q: (batch, n_head, d); k, v: (batch, T, n_kv_head, d); lengths: (batch,) -> (batch, n_head, d)."""
    ### BEGIN SOLUTION
    n_rep = q.shape[1] // k.shape[2]
    k = k.repeat_interleave(n_rep, dim=2)  # (batch, T, n_head, d)
    v = v.repeat_interleave(n_rep, dim=2)
    scores = torch.einsum("bhd,bthd->bht", q, k) / q.shape[-1] ** 0.5
    if lengths is not None:
        pad = torch.arange(k.shape[1])[None, :] >= lengths[:, None]  # (batch, T)
        scores = scores.masked_fill(pad[:, None, :], float("-inf"))
    return torch.einsum("bht,bthd->bhd", scores.softmax(-1), v)
    ### END SOLUTION


# %% check="decode_attention" points=1
import llmlab.attention as llmlab_attention
import llmlab.nn

# one query against the cache is still attention: every ready-made attention is blocked
DECODE_TWINS = [kv.paged_attention, torch.nn.functional.scaled_dot_product_attention,
                llmlab_attention.naive_attention, llmlab_attention.grouped_attention,
                llmlab_attention.flash_decode, llmlab_attention.flash_attention,
                llmlab.nn.causal_attention, llmlab.nn.fast_causal_attention]
g = torch.Generator().manual_seed(0)
grading.check_function(decode_attention, kv.decode_attention, block=DECODE_TWINS, cases=[
    grading.Case(torch.randn(1, 2, 4, generator=g), torch.randn(1, 5, 2, 4, generator=g),
                 torch.randn(1, 5, 2, 4, generator=g), note="multi-head, one sequence"),
    grading.Case(torch.randn(2, 4, 8, generator=g), torch.randn(2, 6, 2, 8, generator=g),
                 torch.randn(2, 6, 2, 8, generator=g), note="GQA: 4 query heads, 2 KV heads"),
], hint="scale by 1/sqrt(d); with GQA, query head h reads KV head h // (n_head // n_kv_head)")

# %% hidden="decode_attention" points=2
g = torch.Generator().manual_seed(1)
grading.check_function(decode_attention, kv.decode_attention, block=DECODE_TWINS, cases=[
    grading.Case(torch.randn(3, 4, 8, generator=g), torch.randn(3, 7, 2, 8, generator=g),
                 torch.randn(3, 7, 2, 8, generator=g), torch.tensor([7, 3, 1]),
                 note="padded rows: lengths 7, 3, 1"),
    grading.Case(torch.randn(2, 6, 4, generator=g), torch.randn(2, 5, 1, 4, generator=g),
                 torch.randn(2, 5, 1, 4, generator=g), note="MQA: one KV head"),
], hint="mask keys at positions >= lengths[b] with -inf before the softmax")

# %% [markdown]
# ## 3. Cached generation, checked token for token
#
# `kv.generate` prefills the prompt, then feeds back one token at a time through a
# `ContiguousKVCache`; `use_cache=False` recomputes the whole sequence every step. The test
# suite also checks that it reproduces Hugging Face `transformers.generate` token for token on
# GPT-2 and Llama weights (`tests/kvcache/test_generate.py`).

# %%
prompt = "def fibonacci(n):\n    "
idx = torch.tensor([tokenizer.encode(prompt)])
cached = kv.generate(model, idx, 48)
uncached = kv.generate(model, idx, 48, use_cache=False)
print("identical tokens:", torch.equal(cached, uncached))
print(tokenizer.decode(cached[0].tolist()))

# %% [markdown]
# Now the speed-up as the sequence grows. The loop below *is* generation, written out: without
# a cache the whole sequence goes through the model at every step; with one, only the newest
# token. We time every step.

# %%
@torch.no_grad()
def step_times(n_new: int, use_cache: bool) -> list[float]:
    x = torch.tensor([tokenizer.encode("import os\n")])
    cache = kv.ContiguousKVCache(cfg.n_layer) if use_cache else None
    times = []
    for _ in tqdm(range(n_new), desc="cached" if use_cache else "uncached", leave=False):
        start = time.perf_counter()
        logits = model(x, None, cache)  # (1, t, vocab): t = 1 with a cache
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        times.append(time.perf_counter() - start)
        x = nxt if use_cache else torch.cat([x, nxt], 1)
    return times


n_new = cfg.block_size - 16  # as long as the model's context allows
with_cache, without_cache = step_times(n_new, True), step_times(n_new, False)

# %% tags=["nbval-ignore-output"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.5))
steps = range(1, n_new + 1)
ax1.plot(steps, [t * 1e3 for t in without_cache], label="no cache: whole sequence")
ax1.plot(steps, [t * 1e3 for t in with_cache], label="KV cache: one token")
ax1.set_xlabel("decode step"), ax1.set_ylabel("ms per step"), ax1.legend()
ax1.set_title("time per decode step")
cum = lambda ts: torch.tensor(ts).cumsum(0)  # noqa: E731
ax2.plot(steps, cum(without_cache) / cum(with_cache))
ax2.set_xlabel("tokens generated"), ax2.set_ylabel("speed-up (×)")
ax2.set_title("cached ÷ uncached throughput")
plt.tight_layout()
plt.show()
print(f"speed-up after {n_new} tokens: {sum(without_cache) / sum(with_cache):.1f}×")

# %% [markdown]
# Without a cache each step costs more than the last (the whole sequence is recomputed); with
# one the cost stays nearly flat, so the speed-up grows with length. On a big model on a GPU
# the flat line is set by memory bandwidth: reading the weights plus a cache that grows by one
# token per step.
#
# ## 4. How much memory the cache takes
#
# Per token and layer the cache holds a key and a value per KV head:
#
# $$\text{bytes} = B \cdot T \cdot n_\text{layer} \cdot 2 \cdot n_\text{kv} \cdot d_\text{head}
# \cdot \text{bytes per number}$$
#
# (MLA: $d_c + d_\text{rope}$ instead of $2 n_\text{kv} d_\text{head}$.)
# `kv.kv_cache_bytes(config, batch, context)` computes it for an `llmlab` config, a Hugging
# Face config or a chapter-03 `KVSpec`:

# %%
gpt2_small = {"n_layer": 12, "n_head": 12, "n_embd": 768}  # GPT-2 124M config.json
rows = [("book's model (fp32)", kv.kv_spec(cfg, bytes_per_number=4)),
        ("GPT-2 small (MHA)", kv.kv_spec(gpt2_small))] + list(REAL_CONFIGS.items())
print(f"{'model':<22}{'kind':>5}{'KiB/token':>11}{'GiB @ 4k ctx':>14}{'GiB, 32 × 4k':>14}")
for name, spec in rows:
    per_token = kv.kv_cache_bytes(spec, 1, 1)
    print(f"{name:<22}{spec.kind:>5}{per_token / 1024:>11.1f}"
          f"{kv.kv_cache_bytes(spec, 1, 4096) / 2**30:>14.2f}"
          f"{kv.kv_cache_bytes(spec, 32, 4096) / 2**30:>14.1f}")

# %% [markdown]
# A batch of 32 requests at 4k tokens needs 16 GiB of cache on Llama 3 8B (bf16) — as much as
# its weights. GQA (8 KV heads instead of 32) already cut this by 4×; MLA caches DeepSeek-V3's
# 61 layers in about half of Llama 3 8B's per-token bytes. Mistral's sliding window caps the
# cache at 4096 tokens however long the context grows.
#
# ## 5. Fragmentation: contiguous pre-allocation vs paging
#
# A contiguous cache must reserve, per request, room for the longest sequence it *may* reach,
# because it cannot grow in place next to its neighbours. Requests differ wildly in length, so
# most of that room is never used. vLLM measured that earlier systems used only 20–38% of their
# KV memory for actual tokens. **Paging** stores a sequence in fixed-size blocks anywhere in a
# shared pool, like virtual memory: a sequence wastes at most one partly filled block.
#
# Below: 512 requests of a mixed workload (lengths log-normal, median ~350 tokens, capped at
# 2048), contiguous reservation of 2048 tokens each vs paging with several block sizes.

# %%
lengths = kv.mixed_lengths(512, max_len=2048)
block_sizes = [1, 4, 8, 16, 32, 64, 128, 256]
waste = [kv.layout_waste(lengths, 2048, b) for b in block_sizes]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.5))
ax1.hist(lengths, bins=40)
ax1.set_xlabel("request length (tokens)"), ax1.set_ylabel("requests")
ax1.set_title("a mixed workload: 512 requests")
ax2.plot(block_sizes, [100 * w.paged_waste for w in waste], "o-", label="paged")
ax2.axhline(100 * waste[0].contiguous_waste, color="C3", ls="--", label="contiguous (2048 each)")
ax2.set_xscale("log", base=2)
ax2.set_xlabel("block size (tokens)"), ax2.set_ylabel("% of reserved KV memory wasted")
ax2.set_title("wasted KV memory"), ax2.legend()
plt.tight_layout()
plt.show()
w16 = waste[block_sizes.index(16)]
print(f"contiguous wastes {100 * w16.contiguous_waste:.1f}% · paged (16-token blocks) wastes "
      f"{100 * w16.paged_waste:.1f}% · {w16.contiguous / w16.paged:.1f}× more requests fit")

# %% [markdown]
# ## 6. The paged cache
#
# `kv.PagedKVCache(n_layer, num_blocks, block_size)` keeps, per layer, a pool of
# `num_blocks × block_size` token slots and, per sequence, a **block table**: the list of its
# blocks in order. Token $j$ of a sequence lives in slot
# `table[j // block_size] * block_size + j % block_size`. Before each forward a scheduler calls
# `prepare(...)` to reserve the slots of the new tokens — raising `kv.OutOfBlocksError` *before*
# anything is written, so it can preempt a request and retry — then each layer's `update`
# scatters the new keys and values into their slots and gathers every row's sequence through its
# block table. Rows may be at different lengths: the cache supplies positions and the mask.
#
# The same four prompts, of lengths 9, 3, 14 and 6, through a paged cache and a padded
# contiguous batch give the same tokens:

# %%
prompts = [tokenizer.encode(t) for t in ["import sys\n", "x", "class Cache:\n    def ", "# a"]]
paged = kv.PagedKVCache(cfg.n_layer, num_blocks=64, block_size=8)
out_paged = kv.generate_paged(model, prompts, 24, paged)
width = max(map(len, prompts))
ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])  # left-padded
mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
out_contiguous = kv.generate(model, ids, 24, attention_mask=mask)[:, width:].tolist()
print("paged == contiguous:", out_paged == out_contiguous)

# %% [markdown]
# ### Exercise 8.3 — block allocation with a free list · 3 points · difficulty 2 · ~15 min
#
# The pool hands out block ids from a **free list** and counts references, because sequences
# can share blocks. Complete `FreeListAllocator`:
#
# - `allocate(n)`: take `n` blocks from the *head* of `self.free`, set their refcount to 1,
#   return their ids in order. If fewer than `n` are free, raise
#   `kv.OutOfBlocksError(needed=n, free=<free count>)` and change nothing.
# - `release(block)`: drop one reference; when it reaches 0, append the block to the *tail* of
#   `self.free`. Releasing a free block is a bug: raise `ValueError`.
#
# `share` (a second sequence takes a reference) is given.

# %% solution="allocator"
class FreeListAllocator:
    """Block ids 0..num_blocks-1; a block is free exactly when its refcount is 0."""

    def __init__(self, num_blocks: int) -> None:
        self.refcount = [0] * num_blocks
        self.free = deque(range(num_blocks))  # head: next block to hand out

    @property
    def num_free(self) -> int:
        return len(self.free)

    def share(self, block: int) -> None:
        if self.refcount[block] == 0:
            self.free.remove(block)
        self.refcount[block] += 1

    def allocate(self, n: int) -> list[int]:
        ### BEGIN SOLUTION
        if n > len(self.free):
            raise kv.OutOfBlocksError(n, len(self.free))
        blocks = [self.free.popleft() for _ in range(n)]
        for b in blocks:
            self.refcount[b] = 1
        return blocks
        ### END SOLUTION

    def release(self, block: int) -> None:
        ### BEGIN SOLUTION
        if self.refcount[block] <= 0:
            raise ValueError(f"block {block} is already free")
        self.refcount[block] -= 1
        if not self.refcount[block]:  # the last owner let go
            self.free.append(block)
        ### END SOLUTION


# %% check="allocator" points=1
def _trace(allocator_cls, ops):
    return replay(allocator_cls, 4, ops)


grading.check_function(lambda ops: _trace(FreeListAllocator, ops),
                       lambda ops: _trace(kv.BlockAllocator, ops), block=[kv.BlockAllocator],
                       name="FreeListAllocator", cases=[
    grading.Case([("allocate", 2), ("allocate", 1)], note="allocate from the head"),
    grading.Case([("allocate", 3), ("release", 1), ("allocate", 2)],
                 note="a released block goes to the tail"),
], hint="each trace entry is (what the call returned, num_free after it)")

# %% hidden="allocator" points=2
grading.check_function(lambda ops: _trace(FreeListAllocator, ops),
                       lambda ops: _trace(kv.BlockAllocator, ops), block=[kv.BlockAllocator],
                       name="FreeListAllocator", cases=[
    grading.Case([("allocate", 3), ("allocate", 2), ("allocate", 1)],
                 note="out of blocks: raise kv.OutOfBlocksError(n, free), allocate nothing"),
    grading.Case([("allocate", 2), ("share", 0), ("release", 0), ("allocate", 3),
                  ("release", 0), ("allocate", 3)], note="a shared block is freed by its last owner"),
])
a = FreeListAllocator(2)
try:
    a.release(0)
    grading.expect(False, "releasing a free block must raise ValueError")
except ValueError:
    pass

# %% [markdown]
# ### Watch the block tables
#
# Requests arrive, grow by a token per step, and finish; the pool (32 blocks of 4 tokens) is
# shared by all of them. Each cell below is one block, coloured by the sequence that owns it
# (`s3` = sequence 3) with how many of its 4 slots are filled; the title lists the block tables. The frames come from a real
# `PagedKVCache` run. Press ▶ (or drag the slider): blocks of finished requests return to the
# free list and are immediately reused by new ones — in any order, which contiguous allocation
# could never do.

# %%
def simulate_block_tables(n_steps: int = 40, num_blocks: int = 32, block_size: int = 4,
                          seed: int = 0) -> list[dict]:
    """Snapshots {seq: (blocks, length)} of a PagedKVCache serving random requests."""
    gen = torch.Generator().manual_seed(seed)
    cache = kv.PagedKVCache(1, num_blocks, block_size)
    remaining, frames, next_id = {}, [], 0
    for _ in range(n_steps):
        if torch.rand(1, generator=gen) < 0.5:  # a new request with a 2..10-token prompt
            cache.add_sequence(next_id)
            remaining[next_id] = int(torch.randint(3, 20, (1,), generator=gen))
            n_new = {next_id: int(torch.randint(2, 11, (1,), generator=gen))}
            next_id += 1
        else:
            n_new = {}
        cache.set_batch(list(remaining))
        try:
            cache.prepare([n_new.get(s, 1) for s in remaining])
        except kv.OutOfBlocksError:  # the scheduler's move: preempt the newest request
            cache.free(max(remaining))
            remaining.pop(max(remaining))
            cache.set_batch(list(remaining))
            cache.prepare([1] * len(remaining))
        kv_new = torch.zeros(len(remaining), max([1, *n_new.values()]), 1, 1)
        cache.update(0, kv_new, kv_new)
        for s in list(remaining):
            remaining[s] -= 1
            if remaining[s] == 0:
                cache.free(s)
                del remaining[s]
        frames.append({s: (list(t), cache.lengths[s]) for s, t in cache.tables.items()})
    return frames


frames = simulate_block_tables()
cmap = plt.get_cmap("tab20")


def draw_frame(step: int, ax=None, num_blocks: int = 32, block_size: int = 4) -> None:
    show = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 2.4))
    owner = {}
    for s, (blocks, length) in frames[step].items():
        for i, b in enumerate(blocks):
            owner[b] = (s, min(block_size, length - i * block_size))
    for b in range(num_blocks):
        r, c = divmod(b, 16)
        s, fill = owner.get(b, (None, 0))
        ax.add_patch(plt.Rectangle((c, -r), 0.92, 0.92, color=cmap(s % 20) if s is not None
                                   else "0.92"))
        ax.text(c + 0.46, -r + 0.46, f"s{s}\n{fill}/{block_size}" if s is not None else "",
                ha="center", va="center", fontsize=7)
    ax.set_xlim(0, 16), ax.set_ylim(-1, 1), ax.axis("off")
    tables = "   ".join(f"seq {s}: {blocks}" for s, (blocks, _) in frames[step].items())
    ax.set_title(f"step {step}: {len(owner)}/{num_blocks} blocks used\n{tables}", fontsize=8)
    if show:
        plt.show()


fig, axes = plt.subplots(3, 1, figsize=(9, 6.5))
for ax, step in zip(axes, (8, 20, 36)):
    draw_frame(step, ax)
plt.tight_layout()
plt.show()

# %% tags=["nbval-ignore-output"]
play = widgets.Play(min=0, max=len(frames) - 1, interval=600)
slider = widgets.IntSlider(min=0, max=len(frames) - 1, description="step")
widgets.jslink((play, "value"), (slider, "value"))
display(widgets.HBox([play, slider]), widgets.interactive_output(draw_frame, {"step": slider}))

# %% [markdown]
# ### Copy-on-write: parallel sampling shares the prompt
#
# Sampling several continuations of one prompt (`n > 1` in an API, or beam search) forks a
# sequence: the child gets a copy of the parent's *block table* and every block's refcount goes
# up — no key or value is copied. Only when a sequence writes into a block someone else still
# holds does the cache copy that one block (copy-on-write).

# %%
fork_cache = kv.PagedKVCache(cfg.n_layer, num_blocks=64, block_size=8)
prompt_ids = tokenizer.encode("def parse(text):\n    ")
fork_cache.add_sequence("parent")
fork_cache.set_batch(["parent"])
fork_cache.prepare(tokens=[prompt_ids])
with torch.no_grad():
    last = model(torch.tensor([prompt_ids]), fork_cache.positions(), fork_cache)[:, -1]
for i in range(3):
    fork_cache.fork("parent", f"sample {i}")
print("blocks used after 3 forks:", fork_cache.used_blocks(), "(the prompt's, shared 4 ways)")
samples = ["parent"] + [f"sample {i}" for i in range(3)]
fork_cache.set_batch(samples)
sample = kv.make_sampler(do_sample=True, temperature=0.8, top_k=40,
                         generator=torch.Generator().manual_seed(0))
tok = sample(last)[:, None].expand(4, 1).clone()
outs = [[] for _ in samples]
with torch.no_grad():
    for _ in range(16):
        fork_cache.prepare(1)
        logits = model(tok, fork_cache.positions(), fork_cache)[:, -1]
        tok = sample(logits)[:, None]
        for o, t in zip(outs, tok[:, 0].tolist()):
            o.append(t)
print("blocks used after 16 sampled tokens each:", fork_cache.used_blocks())
for s, o in zip(samples, outs):
    print(f"{s:>9}: {tokenizer.decode(prompt_ids + o)!r}")

# %% [markdown]
# ## 7. Prefix caching: compute a shared prompt once
#
# Chat requests often start with the same system prompt; agents resend a growing history.
# **Prefix caching** names each *full* block by a hash chained over the previous block's hash
# and its own tokens, $h_i = H(h_{i-1}, \text{tokens}_i)$, so equal hashes mean equal *whole
# prefixes* (the same tokens after a different prefix have different keys and values).
# A new request looks up its blocks' hashes and reuses the longest cached run: those tokens are
# not recomputed. Blocks no request holds stay cached in the free list and are evicted least
# recently used first when the pool needs them.

# %% [markdown]
# ### Exercise 8.4 — the prefix hash chain · 2 points · difficulty 1 · ~10 min
#
# Write `prefix_block_hashes(tokens, block_size)`: the chained hashes of the *full* blocks of
# `tokens`, in order, using `kv.hash_block(prev_hash, block_tokens)` (with `prev_hash=None` for
# the first block). A trailing partial block gets no hash.

# %% solution="prefix_hashes"
def prefix_block_hashes(tokens: list[int], block_size: int) -> list[bytes]:
    """-> [h_0, h_1, ...] with h_i = kv.hash_block(h_{i-1}, tokens of block i)."""
    ### BEGIN SOLUTION
    hashes, prev = [], None
    for start in range(0, len(tokens) - block_size + 1, block_size):
        prev = kv.hash_block(prev, tokens[start:start + block_size])
        hashes.append(prev)
    return hashes
    ### END SOLUTION


# %% check="prefix_hashes" points=1
grading.check_function(prefix_block_hashes, kv.prefix_block_hashes, cases=[
    grading.Case([1, 2, 3, 4, 5, 6], 3, note="two full blocks"),
    grading.Case([7, 8, 9, 10, 11], 2, note="a partial last block gets no hash"),
], hint="chain: pass the previous block's hash into kv.hash_block for the next block")

# %% hidden="prefix_hashes" points=1
grading.check_function(prefix_block_hashes, kv.prefix_block_hashes, cases=[
    grading.Case([5, 5], 4, note="shorter than one block: no hashes"),
    grading.Case(list(range(16)), 4, note="exactly four blocks"),
    grading.Case([3, 1, 2, 3, 1, 2], 3, note="equal blocks after different prefixes differ"),
])

# %% [markdown]
# A workload of 8 questions behind one shared system prompt, with and without prefix caching.
# Outputs must be identical; with caching, the system prompt's full blocks are computed once.

# %%
system = ("You are a careful assistant for Python programmers. Answer with short, correct code "
          "and explain edge cases. Prefer the standard library. ")
questions = ["read a file", "sort a dict", "parse json", "time a loop", "walk a tree",
             "zip two lists", "format a date", "retry on error"]
requests = [tokenizer.encode(system + q + ":\n") for q in questions]


def serve(prefix_caching: bool) -> tuple[list[list[int]], kv.PagedKVCache, float]:
    cache = kv.PagedKVCache(cfg.n_layer, num_blocks=256, block_size=8,
                            prefix_caching=prefix_caching)
    start, outs = time.perf_counter(), []
    for i, r in enumerate(tqdm(requests, desc="requests", leave=False)):  # one after another
        outs += kv.generate_paged(model, [r], 8, cache, seq_ids=[i])
    return outs, cache, time.perf_counter() - start


plain_out, _, plain_s = serve(False)
prefix_out, prefix_cache, prefix_s = serve(True)
stats = prefix_cache.allocator.stats
prompt_tokens = sum(map(len, requests))
print("same outputs:", plain_out == prefix_out)
print(f"prompt tokens: {prompt_tokens} · computed with prefix caching: "
      f"{prompt_tokens - stats.hits * 8} · block hit rate {stats.hit_rate:.0%}")

# %% tags=["nbval-ignore-output"]
print(f"wall time: {plain_s:.2f} s without, {prefix_s:.2f} s with prefix caching")

# %% [markdown]
# ## 8. Smaller caches: eviction and quantization
#
# When memory runs out, a cache can keep fewer tokens or fewer bits per token.
#
# - **StreamingLLM** keeps the first few tokens ("attention sinks": softmax parks attention on
#   them, and dropping them derails the model) plus a window of recent tokens.
# - **H2O** keeps the recent window plus the "heavy hitters": per KV head, the older tokens that
#   have received the most attention so far.
# - **int8 per token** stores each key and value vector with its own scale and zero point.
# - **KIVI** quantizes keys *per channel* (key outliers live in fixed channels) and values *per
#   token*, in groups of tokens, keeping the newest tokens in full precision.
#
# We feed held-out text the model never trained on (validation files of the stdlib corpus) one
# token at a time, so the cache policy applies at every step, and compare each cache with the
# full one: perplexity on the text, the KL divergence of its next-token distribution from the
# full cache's, and how often its top token is the same.

# %%
val_text = "\n".join(d.text for d in load_documents(split="val")[:20])
n_eval = min(192, cfg.block_size)
val_ids = torch.tensor(tokenizer.encode(val_text)[: 4 * n_eval]).view(4, n_eval)
L = cfg.n_layer


@torch.no_grad()
def next_token_logprobs(cache) -> torch.Tensor:
    """(4, n_eval - 1, vocab) log-probabilities of each next token, fed one at a time."""
    steps = [model(val_ids[:, t:t + 1], None, cache)[:, -1] for t in range(n_eval - 1)]
    return torch.stack(steps, 1).log_softmax(-1)


full = next_token_logprobs(kv.ContiguousKVCache(L))


def compare(logp: torch.Tensor) -> dict[str, float]:
    """Perplexity on the text, KL(full cache || this cache) per token, top-1 agreement."""
    nll = -logp.gather(-1, val_ids[:, 1:, None]).mean()
    kl = (full.exp() * (full - logp)).sum(-1).mean()
    agree = (logp.argmax(-1) == full.argmax(-1)).float().mean()
    return {"ppl": float(nll.exp()), "kl": float(kl), "agree": float(agree)}


full_ppl = compare(full)["ppl"]
budgets = [16, 32, 64]
policies = {
    "window only": lambda b: kv.SinkWindowCache(L, n_sink=0, window=b),
    "StreamingLLM (4 sinks)": lambda b: kv.SinkWindowCache(L, n_sink=4, window=b - 4),
    "H2O (half heavy)": lambda b: kv.HeavyHitterCache(L, n_heavy=b // 2, n_recent=b // 2),
}
eviction = {name: [compare(next_token_logprobs(make(b))) for b in tqdm(budgets, desc=name,
                                                                         leave=False)]
            for name, make in policies.items()}

# %% [markdown]
# ### Exercise 8.5 — a KIVI quantizer · 3 points · difficulty 2 · ~15 min
#
# Asymmetric min-max quantization with `bits` bits along one axis:
# $\text{scale} = (\max - \min)/(2^\text{bits} - 1)$,
# $q = \operatorname{round}((x - \min)/\text{scale})$ clamped to $[0, 2^\text{bits} - 1]$, and
# back: $\hat x = q \cdot \text{scale} + \min$. Write `kivi_quantize(k, v, bits)` for one group of
# tokens `k, v: (batch, tokens, n_kv_head, d)` returning `(k_hat, v_hat)`: **keys per channel**
# (min/max over the token axis, dim 1), **values per token** (over the channel axis, dim -1).
# Clamp the scale to at least `1e-8` so constant inputs do not divide by zero.

# %% solution="kivi"
def kivi_quantize(k: torch.Tensor, v: torch.Tensor,
                  bits: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """k, v: (batch, tokens, n_kv_head, d) -> fake-quantized (k_hat, v_hat), same shapes."""
    ### BEGIN SOLUTION
    def fake_quant(x: torch.Tensor, dim: int) -> torch.Tensor:
        lo, hi = x.amin(dim, keepdim=True), x.amax(dim, keepdim=True)
        scale = ((hi - lo) / (2 ** bits - 1)).clamp(min=1e-8)
        return ((x - lo) / scale).round().clamp(0, 2 ** bits - 1) * scale + lo

    return fake_quant(k, 1), fake_quant(v, -1)
    ### END SOLUTION


# %% check="kivi" points=1
g = torch.Generator().manual_seed(0)
KIVI_TWINS = [kv.quantize, kv.QuantizedKVCache]  # kivi_quantize is quantize along two axes
grading.check_function(kivi_quantize, kv.kivi_quantize, block=KIVI_TWINS, cases=[
    grading.Case(torch.randn(1, 8, 2, 4, generator=g), torch.randn(1, 8, 2, 4, generator=g), 4,
                 note="4 bits"),
    grading.Case(torch.randn(2, 16, 1, 8, generator=g), torch.randn(2, 16, 1, 8, generator=g),
                 2, note="2 bits"),
], hint="keys: amin/amax over dim 1 (tokens); values: over dim -1 (channels); keepdim=True")

# %% hidden="kivi" points=2
g = torch.Generator().manual_seed(1)
grading.check_function(kivi_quantize, kv.kivi_quantize, block=KIVI_TWINS, cases=[
    grading.Case(torch.randn(2, 32, 2, 16, generator=g) * 5, torch.randn(2, 32, 2, 16, generator=g),
                 8, note="8 bits, large keys"),
    grading.Case(torch.ones(1, 4, 1, 4), torch.zeros(1, 4, 1, 4), 4,
                 note="constant inputs: the scale must not be zero"),
])

# %% [markdown]
# Now the quantized caches, by bits per cached number: codes plus their fp16 scales and zeros,
# counted from what the cache really stores. (KIVI also keeps the newest, not yet grouped,
# tokens in full precision: fewer than one group whatever the context, so not counted here.)

# %%
quant = {
    "int8 per token": lambda: kv.QuantizedKVCache.int8(L),
    "int4 per token (K and V)": lambda: kv.QuantizedKVCache(L, (4, 4), ("token", "token"), 1),
    "KIVI 4-bit": lambda: kv.QuantizedKVCache.kivi(L, bits=4, group_size=16),
    "KIVI 2-bit": lambda: kv.QuantizedKVCache.kivi(L, bits=2, group_size=16),
}
quantized = {}
for name, make in tqdm(quant.items(), desc="quantized caches", leave=False):
    cache = make()
    result = compare(next_token_logprobs(cache))
    numbers = 4 * cache.quantized_tokens() * L * 2 * cfg.n_kv_head * cfg.d_head
    quantized[name] = {**result, "bits": 8 * cache.nbytes(residual=False) / numbers}

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
for name, results in eviction.items():
    ax1.plot(budgets, [r["ppl"] for r in results], "o-", label=name)
ax1.axhline(full_ppl, color="k", ls="--", label=f"full cache ({n_eval} tokens)")
ax1.set_xscale("log", base=2), ax1.set_xlabel("cache budget (tokens kept)")
ax1.set_ylabel("perplexity"), ax1.set_title("eviction"), ax1.legend(fontsize=8)
for i, (name, r) in enumerate(quantized.items()):
    ax2.scatter(r["bits"], r["kl"], color=f"C{i}", label=name, s=40)
ax2.set_yscale("log")
ax2.set_xlabel("bits per cached number (codes + fp16 scales)")
ax2.set_ylabel("KL(full cache ‖ quantized), nats")
ax2.set_title("quantization (full cache: 32 bits, KL 0)"), ax2.legend(fontsize=8)
plt.tight_layout()
plt.show()
# Printed at the precision fp32 sums in another order (another CPU's kernels) still agree on: a KL
# below 1e-4 nats is a difference of nearly equal log-probabilities, i.e. rounding.
def kl_text(kl: float) -> str:
    return "< 1e-4" if kl < 1e-4 else f"{kl:.3g}"


print(f"{'cache':<34}{'perplexity':>11}{'KL nats':>10}{'top-1 agree':>13}")
print(f"{'full':<34}{full_ppl:>11.1f}{0:>10}{1:>13.1%}")
rows = [(f"{n}, budget {b}", r) for n, rs in eviction.items() for b, r in zip(budgets, rs)]
for label, r in rows + [(f"{n} ({r['bits']:.1f} bits)", r) for n, r in quantized.items()]:
    print(f"{label:<34}{r['ppl']:>11.1f}{kl_text(r['kl']):>10}{r['agree']:>13.1%}")

# %% [markdown]
# What to read here, on the book's model. Its full cache never holds more than 256 tokens, so
# every budget above drops real context. Sinks take part of the budget away from the recent
# window; they pay off when a model parks attention on its first tokens — a habit the
# StreamingLLM paper found in models trained on long contexts, which a 256-token model has had
# little reason to form (compare the two window curves). H2O spends half its budget on older
# tokens that drew attention so far; on this text the plain window, which spends every slot on
# recent tokens, is hard to beat. Quantization costs far less than eviction: int8 is nearly
# exact at under a third of the memory, and at 4 bits KIVI's per-channel keys cut the KL of
# per-token keys by almost an order of magnitude — the ranking the KL column shows far more
# sharply than perplexity can.
#
# ## 9. Benchmarks
#
# `python -m bench.bench_kvcache` measures decode throughput with and without the cache and
# against `transformers.generate` on the same weights, and the memory contiguous allocation
# wastes on a mixed workload (numbers from the last run on this machine):

# %%
bench_md = Path(kv.__file__).parents[2] / "bench" / "results" / "kvcache.md"  # the repository's
display(Markdown(bench_md.read_text() if bench_md.exists() else
                 "_run `python -m bench.bench_kvcache --size full` to produce the table_"))

# %% [markdown]
# ## 10. How the industry does it
#
# - **vLLM** introduced PagedAttention: 16-token blocks, block tables, copy-on-write for parallel
#   sampling and beam search. Its paper reports that earlier systems stored tokens in only
#   20.4–38.2% of their KV memory, that paging leaves under 4% unused, and 2–4× the throughput
#   of FasterTransformer and Orca at the same latency. Its automatic prefix caching hashes full
#   blocks with their prefix and evicts unreferenced blocks LRU, as `kv.PagedKVCache` does.
#   ([paper](https://arxiv.org/abs/2309.06180), [docs](https://docs.vllm.ai/en/latest/design/prefix_caching.html))
# - **SGLang** keeps the cached prefixes in a radix tree over token ids (RadixAttention), so
#   any shared prefix, not just whole blocks, is found and reused, with LRU eviction of leaves
#   and a cache-aware scheduler; up to 6.4× throughput on workloads with shared prefixes.
#   ([paper](https://arxiv.org/abs/2312.07104))
# - **Hugging Face `transformers`** uses a contiguous cache (`DynamicCache` grows by
#   concatenation, `StaticCache` pre-allocates for `torch.compile`), plus quantized and
#   sink caches; TensorRT-LLM and FlashInfer implement paged KV kernels on GPUs.
# - **Where it breaks:** paging adds an indirection per block to the attention kernel (vLLM's
#   kernel was ~20–26% slower than a contiguous one in isolation, more than paid back by
#   batching); prefix caching only helps when prefixes repeat *exactly*; eviction loses
#   information a later question may need (StreamingLLM cannot recall evicted text); 2-bit
#   caches need kernels that dequantize on the fly to turn memory saved into speed.
# - **Numbers:** StreamingLLM ran stable language modelling over 4 million tokens and up to
#   22.2× faster than a recomputed sliding window; H2O with 20% heavy hitters raised throughput
#   up to 29× over offloading systems; KIVI-2 cut peak memory 2.6× and allowed up to 4× larger
#   batches.

# %% [markdown]
# ## Summary
#
# - Decoding reads every weight for a few FLOPs: it is memory-bound, so the KV cache — computing
#   each key and value once — is the first optimisation, and exact: greedy outputs are identical.
# - The cache costs $2 \cdot n_\text{layer} \cdot n_\text{kv} \cdot d_\text{head}$ numbers per
#   token; GQA and MLA shrink it, and at serving batch sizes it rivals the weights.
# - Contiguous pre-allocation wastes most of that memory on mixed lengths; paging with small
#   blocks wastes almost none, lets sequences share blocks (forks, prefixes) and gives the
#   scheduler a typed out-of-blocks signal to preempt on — chapter 09 builds the server on it.
# - Eviction (sinks + window, heavy hitters) and quantization (int8, KIVI) trade a little
#   perplexity for a much smaller cache.
#
# ## Further reading
#
# - Kwon et al., *Efficient Memory Management for Large Language Model Serving with
#   PagedAttention* (vLLM), 2023. [arXiv:2309.06180](https://arxiv.org/abs/2309.06180)
# - Zheng et al., *SGLang: Efficient Execution of Structured Language Model Programs*
#   (RadixAttention), 2023. [arXiv:2312.07104](https://arxiv.org/abs/2312.07104)
# - Pope et al., *Efficiently Scaling Transformer Inference*, 2022 (why decoding is
#   memory-bound). [arXiv:2211.05102](https://arxiv.org/abs/2211.05102)
# - Xiao et al., *Efficient Streaming Language Models with Attention Sinks*, 2023.
#   [arXiv:2309.17453](https://arxiv.org/abs/2309.17453)
# - Zhang et al., *H2O: Heavy-Hitter Oracle for Efficient Generative Inference of Large Language
#   Models*, 2023. [arXiv:2306.14048](https://arxiv.org/abs/2306.14048)
# - Liu et al., *KIVI: A Tuning-Free Asymmetric 2bit Quantization for KV Cache*, 2024.
#   [arXiv:2402.02750](https://arxiv.org/abs/2402.02750)
# - Ainslie et al., *GQA*, 2023 [arXiv:2305.13245](https://arxiv.org/abs/2305.13245); DeepSeek-AI,
#   *DeepSeek-V2* (MLA), 2024 [arXiv:2405.04434](https://arxiv.org/abs/2405.04434).
