# %% [markdown]
# # 09 · Serving: an inference engine and an OpenAI-compatible server
#
# Chapter 08 built the paged KV cache. This chapter puts it to work: many users send requests at
# once, each wants its first token fast and the rest at a steady pace, and the hardware should
# stay busy. That is the job of an **inference engine** (vLLM, SGLang, TensorRT-LLM, TGI,
# llama.cpp's server) and of the HTTP server in front of it. We build both in `llmlab.serve` and
# end the book by serving the book's model to the official `openai` Python client.
#
# **You will learn to**
# 1. turn logits into tokens the way an API does: temperature, top-k, top-p, min-p, penalties,
#    seeds, stop strings across token boundaries, and text that never breaks a UTF-8 character;
# 2. explain why **continuous batching** beats static batching, and write the scheduler's step:
#    admission by free KV blocks, chunked prefill under a token budget, preemption by recompute;
# 3. reuse a shared system prompt through the prefix cache, and serve many LoRA adapters from one
#    batch;
# 4. derive why speculative decoding's rejection sampling leaves the output distribution exactly
#    unchanged, and measure its speed-up;
# 5. constrain outputs to a regular expression with a token-level automaton;
# 6. serve it all over HTTP (SSE streaming, errors, metrics) and load-test it with latency
#    percentiles and goodput.

# %% [markdown]
# **Budget:** ~1 min on 2 CPU cores · peak RAM ~1 GB. No GPU and no network needed (the server listens on 127.0.0.1 only).

# %% tags=["nbval-ignore-output"]
import copy
import json
import math
import re
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import openai
import torch
from tqdm.auto import tqdm

import llmlab.serve as serve
from llmlab import grading, peft
from llmlab.grading.compare import explain
from llmlab.kvcache import PagedKVCache
from llmlab.model import generate, load, load_book_model
from llmlab.serve.scheduler import Scheduler, Status
from llmlab.serve.server import create_app, serve_in_thread
from llmlab.utils import seed_all
from llmlab_book.ch09_serve import CATALOGUE

seed_all(0)
torch.set_num_threads(1)  # the book's model decodes fastest on one thread
model, tokenizer = load_book_model()
cfg = model.config
EOS = tokenizer.special_ids["<|endoftext|>"]
print(f"the book's model: {model.num_params() / 1e6:.2f} M parameters, context {cfg.block_size}, "
      f"vocabulary {cfg.vocab_size}")


def use_learner(name: str, fn, ref, probe) -> object:
    """The learner's ``fn`` when it agrees with llmlab's on ``probe``, else llmlab's (with a note)."""
    try:
        if explain(probe(fn), probe(ref), 1e-5, 1e-4) is None:
            print(f"using your {name}")
            return fn
    except Exception:  # noqa: BLE001 — an unfinished exercise falls back
        pass
    print(f"using llmlab's {name} (yours is not passing yet)")
    return ref


# %% [markdown]
# ## 1. From logits to a token
#
# An API request carries more than a prompt: `temperature`, `top_p`, `stop`, `seed`,
# `presence_penalty`, `logit_bias`, `logprobs`… Each is a small transformation of the model's
# next-token logits $z \in \mathbb{R}^V$, applied in a fixed order
# (`serve.process_logits`):
#
# 1. **logit bias** $z_i \mathrel{+}= b_i$ (OpenAI's `logit_bias`, e.g. $-100$ bans a token);
# 2. **penalties**: repetition (CTRL: divide a positive logit of a token already seen by $r$,
#    multiply a negative one), presence and frequency (OpenAI: $z_i \mathrel{-}= \alpha_p
#    [c_i>0] + \alpha_f c_i$ with $c_i$ the count of token $i$ in the output so far);
# 3. **temperature** $z / T$ ($T=0$ means greedy: take the argmax);
# 4. **filters**: top-k keeps the $k$ largest; **top-p** (nucleus) keeps the smallest set of most
#    likely tokens whose probability reaches $p$; **min-p** keeps tokens with
#    $p_i \ge p_\min \cdot \max_j p_j$ — a threshold that adapts to how confident the model is.
#
# The test suite checks these against Hugging Face `transformers`' logits processors on the same
# logits. A **per-request seed** gives each request its own random generator, so its sample does
# not depend on which other requests share its batch.

# %% [markdown]
# ### Exercise 9.1 — top-p and min-p filtering · 3 points · difficulty 2 · ~15 min
#
# Write `filter_top_p_min_p(logits, top_p, min_p)` for `logits` of shape `(..., vocab)`: set to
# `-inf` every logit that top-p (when `top_p < 1`) **or** min-p (when `min_p > 0`) drops, and
# return the new tensor (do not modify the input). Top-p: sort descending, and drop a token when
# the probability mass of the tokens *before* it already reaches `top_p` (so the most likely
# token always survives). Min-p: drop tokens whose probability is below `min_p` times the largest
# probability. Apply top-p first, then min-p on what is left.
#
# <details><summary>Hint 1</summary>
# <code>torch.sort(..., descending=True)</code> returns the order; <code>scatter</code> puts a
# mask computed in sorted order back in vocabulary order.</details>
# <details><summary>Hint 2</summary>
# "mass before this token" is the cumulative sum minus the token's own probability.</details>

# %% solution="top_p_min_p"
def filter_top_p_min_p(logits: torch.Tensor, top_p: float = 1.0, min_p: float = 0.0) -> torch.Tensor:
    """logits: (..., vocab) -> (..., vocab) with the dropped entries set to -inf."""
    ### BEGIN SOLUTION
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    if min_p > 0.0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, -math.inf)
    return logits
    ### END SOLUTION


# %% check="top_p_min_p" points=1
def ref_top_p_min_p(logits, top_p=1.0, min_p=0.0):
    return serve.filter_logits(logits, 0, top_p, min_p)


g = torch.Generator().manual_seed(0)
grading.check_function(filter_top_p_min_p, ref_top_p_min_p, cases=[
    grading.Case(torch.tensor([[2.0, 1.0, 0.5, -1.0]]), 0.8, note="top-p on 4 tokens"),
    grading.Case(torch.tensor([[2.0, 1.0, 0.5, -1.0]]), 1.0, 0.3, note="min-p only"),
    grading.Case(torch.randn(3, 20, generator=g), 0.9, 0.05, note="both, a batch of 3"),
], block=[serve.filter_logits], mistakes=CATALOGUE.mistakes("top_p_min_p"),
   hint="keep a token while the mass *before* it is < top_p; min-p compares with min_p * p_max")

# %% hidden="top_p_min_p" points=2
g = torch.Generator().manual_seed(1)
grading.check_function(filter_top_p_min_p, ref_top_p_min_p, cases=[
    grading.Case(torch.randn(2, 50, generator=g) * 4, 0.01, note="tiny top_p keeps only the best"),
    grading.Case(torch.randn(5, 30, generator=g), 0.5, 0.2, note="both filters"),
    grading.Case(torch.randn(2, 3, 40, generator=g), 0.95, note="3-d input"),
    grading.Case(torch.randn(4, 10, generator=g), 1.0, 1.0, note="min_p = 1 keeps only the max"),
], block=[serve.filter_logits], mistakes=CATALOGUE.mistakes("top_p_min_p"))
x = torch.randn(2, 10)
x0 = x.clone()
filter_top_p_min_p(x, 0.5, 0.1)
grading.expect(torch.equal(x, x0), "filter_top_p_min_p must not modify its input in place")

# %% [markdown]
# ### Exercise 9.2 — predict first: how many tokens survive? · 2 points · difficulty 1 · ~5 min
#
# The next-token probabilities, sorted, are $[0.40, 0.25, 0.15, 0.10, 0.06, 0.04]$. **Before
# running anything**, work out how many tokens survive top-p with $p = 0.75$ alone, and how many
# survive min-p with $p_\min = 0.2$ alone. Return them as a tuple.

# %% solution="predict_survivors"
def predict_survivors() -> tuple[int, int]:
    """(tokens kept by top_p = 0.75, tokens kept by min_p = 0.2)."""
    ### BEGIN SOLUTION
    return 3, 4
    ### END SOLUTION


# %% check="predict_survivors" points=1
probs6 = torch.tensor([0.40, 0.25, 0.15, 0.10, 0.06, 0.04])
kept = serve.filter_logits(probs6.log()[None], 0, 0.75)
kept_minp = serve.filter_logits(probs6.log()[None], 0, 1.0, 0.2)
survivors = (int(torch.isfinite(kept).sum()), int(torch.isfinite(kept_minp).sum()))
grading.check_prediction(predict_survivors, mistakes=CATALOGUE.mistakes("predict_survivors"),
                         expected=survivors, what="(top-p survivors, min-p survivors)",
                         hint="top-p keeps the smallest prefix whose mass reaches p; min-p keeps "
                              "tokens with at least p_min times the top probability")

# %% hidden="predict_survivors" points=1
grading.check_prediction(predict_survivors, mistakes=CATALOGUE.mistakes("predict_survivors"),
                         expected=survivors, what="(top-p survivors, min-p survivors)",
                         hint="top-p: 0.40 + 0.25 = 0.65 < 0.75, so the third token still enters; "
                         "min-p: the threshold is 0.2 × 0.40")

# %% [markdown]
# The demo: the filters on the book's model, on a prompt where it is unsure. Turn the knobs.

# %% tags=["nbval-ignore-output"]
top_p_fn = use_learner("filter_top_p_min_p", filter_top_p_min_p, ref_top_p_min_p,
                       lambda f: f(torch.randn(3, 40, generator=torch.Generator().manual_seed(2)),
                                   0.8, 0.1))
print("survivors of top_p=0.75, min_p=0.2 on the example:",
      int(torch.isfinite(top_p_fn(probs6.log()[None], 0.75)).sum()),
      int(torch.isfinite(top_p_fn(probs6.log()[None], 1.0, 0.2)).sum()))
with torch.no_grad():
    demo_logits = model(torch.tensor([tokenizer.encode("import ")]))[0, -1]


def show_filters(temperature=1.0, top_p=0.9, min_p=0.05):
    kept = top_p_fn(demo_logits[None] / temperature, top_p, min_p)[0]
    probs = kept.softmax(-1)
    best = probs.topk(12)
    plt.figure(figsize=(8, 2.8))
    plt.bar([repr(tokenizer.decode([i]))[1:-1] for i in best.indices.tolist()], best.values)
    plt.xticks(rotation=45, ha="right")
    plt.ylabel("probability")
    plt.title(f"next token after 'import ': {int(torch.isfinite(kept).sum())} tokens survive")
    plt.tight_layout()
    plt.show()


widgets.interact(show_filters, temperature=(0.2, 2.0, 0.1), top_p=(0.05, 1.0, 0.05),
                 min_p=(0.0, 0.5, 0.01));

# %% [markdown]
# ## 2. Streaming text: whole characters, and stop strings across tokens
#
# A byte-level BPE token is a run of **bytes**. "é" is two bytes in UTF-8 and may be split
# across two tokens; decoding each token on its own would stream a broken character.
# `serve.IncrementalDetokenizer` keeps the bytes of an unfinished character until it completes
# (Python's incremental UTF-8 decoder):

# %%
text = "naïve café → 日本 🙂"
ids = tokenizer.encode(text)
detok = serve.IncrementalDetokenizer(tokenizer)
print("token by token:", [tokenizer.decode([t]) for t in ids])
print("incremental:   ", [detok.push(t) for t in ids] + [detok.flush()])

# %% [markdown]
# A **stop string** can span tokens too: `"\n\n"` often arrives as `"\n"` then `"\n"`, and
# `"END"` as `"E"`, `"ND"`. A streaming server must not send text that might turn out to be the
# beginning of a stop string — it holds back the longest tail of the text that is a *proper
# prefix* of some stop string, and sends it only once it is clear it is not.
#
# ### Exercise 9.3 — stop strings across token boundaries · 3 points · difficulty 2 · ~15 min
#
# Write `stop_step(pending, delta, stops)`: `pending` is text held back so far, `delta` the new
# text. Return `(emit, pending, stopped)`:
# - if some stop string occurs in `pending + delta`: emit the text before the **earliest**
#   occurrence, `pending = ""`, `stopped = True`;
# - else: hold back the longest suffix that is a proper prefix of some stop string, emit the
#   rest, `stopped = False`.
#
# <details><summary>Hint 1</summary>
# A proper prefix of "END" is "", "E" or "EN": try lengths from <code>len(stop) - 1</code> down.
# </details>

# %% solution="stop_step"
def stop_step(pending: str, delta: str, stops: list[str]) -> tuple[str, str, bool]:
    """-> (text to emit now, text held back, whether a stop string was reached)."""
    ### BEGIN SOLUTION
    text = pending + delta
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    if hits:
        return text[:min(hits)], "", True
    keep = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), keep, -1):
            if text.endswith(stop[:k]):
                keep = k
                break
    return text[:len(text) - keep], text[len(text) - keep:], False
    ### END SOLUTION


# %% check="stop_step" points=1
def ref_stop_step(pending, delta, stops):
    chk = serve.StopChecker(stops)
    chk.pending = pending
    emit, stopped = chk.push(delta)
    return emit, chk.pending, stopped


grading.check_function(stop_step, ref_stop_step, cases=[
    grading.Case("", "hello", ["END"], note="no stop in sight"),
    grading.Case("", "helloE", ["END"], note="hold back a possible start"),
    grading.Case("E", "ND!", ["END"], note="the stop completes across tokens"),
    grading.Case("", "a###b\n\n", ["\n\n", "###"], note="two stop strings"),
], block=[serve.StopChecker, serve.stop_holdback], mistakes=CATALOGUE.mistakes("stop_step"),
   hint="search pending + delta, not only delta")

# %% hidden="stop_step" points=2
grading.check_function(stop_step, ref_stop_step, cases=[
    grading.Case("EN", "o", ["END"], note="a false alarm: release the held text"),
    grading.Case("", "a\n", ["\n\n", "###"], note="two stop strings"),
    grading.Case("", "x###y\n\nz", ["\n\n", "###"], note="the earliest occurrence wins"),
    grading.Case("", "abcab", ["abd", "bca"], note="the longest held-back suffix"),
    grading.Case("", "", ["END"], note="an empty delta"),
    grading.Case("#", "##x", ["\n\n", "###"], note="a stop string begun in the held-back text"),
], block=[serve.StopChecker, serve.stop_holdback], mistakes=CATALOGUE.mistakes("stop_step"))

# %% [markdown]
# The engine streams through exactly this. Below, a stream whose stop string `"\n\n"` arrives
# split: your `stop_step` (or llmlab's) never emits the newlines.

# %%
step_fn = use_learner("stop_step", stop_step, ref_stop_step,
                      lambda f: [f("E", "ND!", ["END"]), f("", "abcab", ["abd", "bca"])])
pending, sent = "", []
for delta in ["def f():", "\n", "    return 1", "\n", "\n", "def g():"]:
    emit, pending, stopped = step_fn(pending, delta, ["\n\n"])
    sent.append(emit)
    if stopped:
        break
print(sent, "stopped:", stopped)

# %% [markdown]
# ## 3. Static vs continuous batching
#
# Decoding is memory-bound (chapter 08): a forward over 16 sequences costs little more than over
# one, so a server batches. **Static batching** (what `model.generate` on a padded batch does)
# starts a batch together and ends it when its *longest* member ends: rows that finished early
# sit idle, and new requests wait for the whole batch. **Continuous batching** (Orca, OSDI 2022)
# schedules at the granularity of one *iteration*: after every forward, finished sequences leave
# and waiting ones join.
#
# ### Exercise 9.4 — predict first: idle rows of a static batch · 2 points · difficulty 1 · ~5 min
#
# Four requests generate 12, 3, 7 and 30 tokens, in one static batch of 4 (one token per row per
# decode step). How many decode steps does the batch take, and what fraction of the row-steps
# produce nothing? Return `(steps, idle_fraction)`.

# %% solution="predict_static"
def predict_static() -> tuple[int, float]:
    """(decode steps of the static batch, fraction of row-steps that are idle)."""
    ### BEGIN SOLUTION
    return 30, 1 - (12 + 3 + 7 + 30) / (4 * 30)
    ### END SOLUTION


# %% check="predict_static" points=1
out_lens = [12, 3, 7, 30]
static_answer = (max(out_lens), 1 - sum(out_lens) / (4 * max(out_lens)))
grading.check_prediction(predict_static, mistakes=CATALOGUE.mistakes("predict_static"),
                         expected=static_answer, what="(steps, idle fraction)", atol=1e-3,
                         hint="return (steps, idle_fraction): a tuple of two numbers")

# %% hidden="predict_static" points=1
grading.check_prediction(predict_static, mistakes=CATALOGUE.mistakes("predict_static"),
                         expected=static_answer, what="(steps, idle fraction)", atol=1e-3,
                    hint="the batch runs until its longest row is done; count row-steps 4 × steps")

# %% [markdown]
# Now the real thing on the book's model: 12 requests with mixed output lengths arrive at once,
# at most 4 rows per step. Static: batches of 4 in arrival order. Continuous: llmlab's engine.
# We count steps (iterations: the unit of time on a memory-bound machine) and draw each
# request's life.

# %%
rng = torch.Generator().manual_seed(0)
work_prompts = ["import os\n", "def main():\n", "class Stack:\n", "# utilities\n"] * 3
work_lens = torch.randint(4, 40, (12,), generator=rng).tolist()


def static_timeline(lens, batch):
    spans, t = [], 0
    for start in range(0, len(lens), batch):
        group = lens[start:start + batch]
        spans += [(t, t + n) for n in group]  # a row works for n steps …
        t += max(group)  # … but the batch holds its slot until the longest is done
    return spans, t


def continuous_timeline(prompts, lens, max_seqs, make=None):
    config = serve.EngineConfig(max_num_seqs=max_seqs)
    engine = make(config) if make else serve.LLMEngine(model, tokenizer, config)
    ids = [engine.add_request(p, serve.SamplingParams(max_new_tokens=n, temperature=0, ignore_eos=True))
           for p, n in zip(prompts, lens)]
    first, last, step = {}, {}, 0
    with tqdm(total=sum(lens), desc="continuous batching", leave=False) as bar:
        while engine.has_unfinished():
            for out in engine.step():
                first.setdefault(out.request_id, step)
                last[out.request_id] = step + 1
                bar.update(1)
            step += 1
    return [(first[i], last[i]) for i in ids], step


static_spans, static_steps = static_timeline(work_lens, 4)
cont_spans, cont_steps = continuous_timeline(work_prompts, work_lens, 4)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), sharey=True)
for ax, spans, steps, title in [(axes[0], static_spans, static_steps, "static batching"),
                                (axes[1], cont_spans, cont_steps, "continuous batching")]:
    for r, (a, b) in enumerate(spans):
        ax.barh(r, b - a, left=a, color=f"C{r % 4}")
    ax.set_title(f"{title}: {steps} steps")
    ax.set_xlabel("step")
axes[0].set_ylabel("request")
plt.tight_layout()
plt.show()
print(f"{sum(work_lens)} tokens: static needs {static_steps} decode steps, continuous "
      f"{cont_steps} (prefill included) — {static_steps / cont_steps:.2f}× fewer")

# %% [markdown]
# ## 4. The scheduler, step by step
#
# `serve.Scheduler` is plain Python (it talks to the paged cache only through `add_sequence`,
# `blocks_needed`, `free` and `num_free_blocks`), so every decision can be traced. One step:
#
# 1. **running** sequences, oldest first, each get their next tokens — 1 when decoding, a chunk
#    while prefilling — within the **token budget** (`max_num_batched_tokens`). When the pool
#    cannot hold them, the *newest* running sequence is **preempted**: its blocks are freed, it
#    goes back to the front of the queue, and later it is **recomputed** from its prompt plus the
#    tokens it already produced (vLLM's default; the alternative swaps blocks to CPU memory);
# 2. if nothing was preempted, **waiting** sequences are admitted first-come-first-served while
#    the budget, `max_num_seqs` and the free blocks allow. Admission takes prefix-cache hits
#    first (`kv.add_sequence` returns how many prompt tokens are cached), and stops at the first
#    request that does not fit — no overtaking, so a long prompt cannot starve.
#
# Chunked prefill (Sarathi-Serve) is what lets a forward mix one long prompt's chunk with many
# decode tokens: decode latency stays flat while prompts arrive.
#
# ### Exercise 9.5 — the scheduler's step · 5 points · difficulty 3 · ~40 min
#
# Write `schedule_step(sched)`: one step of `sched` (a `Scheduler`), returning
# `serve.ScheduledBatch(rows, preempted, admitted)` with `rows` a list of
# `(sequence, n_tokens)` — the tokens of each sequence the next forward computes.
#
# **What you may use.** `sched.running` (a list, oldest first), `sched.waiting` (a deque, next
# first), `sched.config.max_num_batched_tokens` and `max_num_seqs`; the cache only through
# `sched.kv.num_free_blocks`, `sched.kv.blocks_needed(seq_id, n)` (new blocks `n` more tokens
# take), `sched.kv.add_sequence(seq_id, tokens)` (gives a sequence its table, reusing cached
# prompt blocks; returns how many tokens were cached) and `sched.kv.free(seq_id)`. A `Sequence`
# has `tokens`, `num_computed`, `num_uncomputed`, `num_cached`, `status` (`Status.RUNNING`,
# `Status.WAITING`) and `num_preemptions`.
#
# **The contract** (your step is compared with llmlab's, trace for trace, on whole workloads run
# by `serve.simulate`):
# - **Budget.** The rows hold at most `max_num_batched_tokens` tokens in all; a row gets all its
#   uncomputed tokens or, when the budget has less left, what is left (chunked prefill). Blocks
#   are allocated only at the forward, so the blocks all the rows need together never exceed
#   `num_free_blocks`.
# - **Priority.** Running sequences come first, oldest first. Waiting ones are admitted only in a
#   step that preempted nothing, in queue order, while fewer than `max_num_seqs` run; the first
#   one that does not fit ends admission (no overtaking).
# - **Preemption by recompute.** When a running sequence's row does not fit, the newest running
#   sequence that has no row yet this step is preempted — possibly that sequence itself, which
#   then gets no row and ends the walk — until the row fits. A preempted sequence holds no
#   blocks, has nothing computed, is waiting, has its preemption counted, and is the next in the
#   queue.
# - **Admission.** An admitted sequence runs (last in `running`), with the prompt tokens the
#   prefix cache holds counted as computed (`num_computed` and `num_cached`); a waiting sequence
#   that does not fit leaves the cache, and itself, as they were.
# - **Forbidden:** `Scheduler.schedule` (the check blocks it).
#
# <details><summary>Hint 1 (the idea)</summary>Two passes, one over the running sequences and
# one over the queue, sharing two running totals: the budget left and the blocks reserved so
# far. "Fits" means <em>reserved + needed ≤ free</em>.</details>
#
# <details><summary>Hint 2 (the structure)</summary>Walk a copy of <code>running</code> from the
# front, so that its back holds the newest sequences not visited yet: they are the victims. An
# inner loop preempts while the current row does not fit and the current sequence still
# runs.</details>
#
# <details><summary>Hint 3 (the key detail)</summary>A waiting sequence's need depends on its
# cache hits, so call <code>add_sequence</code> before <code>blocks_needed</code>, and undo it
# (<code>free</code>, <code>num_computed = 0</code>) when it does not fit.</details>

# %% solution="schedule_step"
def schedule_step(sched: Scheduler) -> serve.ScheduledBatch:
    """One continuous-batching step: rows for running sequences, preemption, then admission."""
    ### BEGIN SOLUTION
    budget, reserved = sched.config.max_num_batched_tokens, 0
    rows, preempted, admitted = [], [], []
    queue = list(sched.running)
    while queue and budget > 0:
        seq = queue.pop(0)
        n = min(seq.num_uncomputed, budget)
        need = sched.kv.blocks_needed(seq.seq_id, n)
        while reserved + need > sched.kv.num_free_blocks and seq in sched.running:
            victim = queue.pop() if queue else seq
            sched.running.remove(victim)
            sched.kv.free(victim.seq_id)
            victim.num_computed, victim.status = 0, Status.WAITING
            victim.num_preemptions += 1
            sched.waiting.appendleft(victim)
            preempted.append(victim)
        if seq not in sched.running:
            break
        rows.append((seq, n))
        reserved += need
        budget -= n
    while (not preempted and sched.waiting and budget > 0
           and len(sched.running) < sched.config.max_num_seqs):
        seq = sched.waiting[0]
        seq.num_computed = seq.num_cached = sched.kv.add_sequence(seq.seq_id, seq.tokens)
        n = min(seq.num_uncomputed, budget)
        need = sched.kv.blocks_needed(seq.seq_id, n)
        if reserved + need > sched.kv.num_free_blocks:
            sched.kv.free(seq.seq_id)
            seq.num_computed = 0
            break
        sched.waiting.popleft()
        seq.status = Status.RUNNING
        sched.running.append(seq)
        admitted.append(seq)
        rows.append((seq, n))
        reserved += need
        budget -= n
    return serve.ScheduledBatch(rows, preempted, admitted)
    ### END SOLUTION


# %% check="schedule_step" points=2
def trace_with(step):
    return lambda requests, **kw: serve.simulate(requests, schedule_fn=step, **kw)


_schedule_mistakes = {k: trace_with(v) for k, v in CATALOGUE.mistakes("schedule_step").items()}


grading.check_function(trace_with(schedule_step), trace_with(Scheduler.schedule), cases=[
    grading.Case([(0, 5, 3), (0, 3, 2)], num_blocks=16, budget=32, note="two short requests"),
    grading.Case([(0, 20, 2), (0, 4, 4)], num_blocks=32, budget=8, note="chunked prefill"),
    grading.Case([(0, 12, 2), (0, 8, 2), (0, 1, 2)], num_blocks=4, budget=64,
                 note="admission waits for free blocks, first come first served"),
    grading.Case([(0, 1, 7), (0, 2, 5), (2, 1, 3)], num_blocks=4, budget=64,
                 note="the pool runs out: a preemption"),
], block=[Scheduler.schedule], name="schedule_step", mistakes=_schedule_mistakes,
   hint="compare the trace step by step: rows (id, tokens), admitted, preempted, free blocks")

# %% hidden="schedule_step" points=3
grading.check_function(trace_with(schedule_step), trace_with(Scheduler.schedule), cases=[
    grading.Case([(0, 4, 8), (0, 4, 8)], num_blocks=3, budget=64, note="preemption by recompute"),
    grading.Case([(0, 8, 4), (1, 3, 7), (2, 5, 7)], num_blocks=6, budget=64,
                 note="the newest running sequence is the victim"),
    grading.Case([(0, 10, 5), (0, 30, 3), (2, 6, 8), (3, 12, 4)], num_blocks=10, budget=12,
                 note="arrivals, chunks and preemption together"),
    grading.Case([(0, 6, 2)] * 5, num_blocks=32, budget=64, max_num_seqs=2, note="max_num_seqs"),
    grading.Case([(0, 14, 1), (1, 13, 2), (2, 15, 2)], num_blocks=16, budget=64, prefix_caching=True,
                 shared_prefix=12, note="prefix-cache hits at admission"),
], block=[Scheduler.schedule], name="schedule_step", mistakes=_schedule_mistakes)

# %% [markdown]
# A workload that overflows a tiny pool — 10 KV blocks of 4 tokens — traced step by step. Slide
# through the steps: which requests run and with how many tokens, who waits, who was preempted.

# %%
scheduler_step = use_learner("schedule_step", schedule_step, Scheduler.schedule,
                             lambda f: serve.simulate([(0, 10, 5), (0, 30, 3), (2, 6, 8)],
                                                      num_blocks=10, budget=12, schedule_fn=f))
tiny_workload = [(0, 10, 5), (0, 30, 3), (2, 6, 8), (3, 12, 4), (5, 3, 6)]
tiny_trace = serve.simulate(tiny_workload, num_blocks=10, block_size=4, budget=12,
                            schedule_fn=scheduler_step)
fig, ax = plt.subplots(figsize=(9, 2.6))
ax.step(range(len(tiny_trace)), [10 - t["free_blocks"] for t in tiny_trace], where="post",
        label="KV blocks used (of 10)")
ax.bar(range(len(tiny_trace)), [sum(n for _, n in t["rows"]) for t in tiny_trace], alpha=0.3,
       color="C1", label="tokens in the forward (budget 12)")
for i, t in enumerate(tiny_trace):
    if t["preempted"]:
        ax.axvline(i, color="C3", ls="--")
ax.set_xlabel("step"), ax.legend(loc="upper right", fontsize=8)
ax.set_title("a tiny pool: red dashes are preemptions")
plt.tight_layout()
plt.show()
print(f"{len(tiny_trace)} steps, {sum(len(t['preempted']) for t in tiny_trace)} preemption(s)")


# %% tags=["nbval-ignore-output"]
def show_step(step=0):
    t = tiny_trace[step]
    rows = ", ".join(f"r{i}: {n} tok" for i, n in t["rows"]) or "—"
    print(f"step {step}: forward = [{rows}]")
    print(f"  admitted {t['admitted']}  preempted {t['preempted']}")
    print(f"  waiting {t['waiting']}  running {t['running']}  free blocks {t['free_blocks']}")


widgets.interact(show_step, step=(0, len(tiny_trace) - 1));

# %% [markdown]
# ### Exercise 9.6 — predict first: the chunked-prefill budget · 2 points · difficulty 1 · ~5 min
#
# The token budget is 64 per forward. Eight sequences are decoding (one token each per step) and
# a 300-token prompt arrives; blocks are plentiful and nothing else waits. Including the step it
# is admitted in, **how many forwards until its first token is sampled?** Return an integer.

# %% solution="predict_chunks"
def predict_chunks() -> int:
    """Forwards until the 300-token prompt's first token (budget 64, 8 decoding)."""
    ### BEGIN SOLUTION
    return math.ceil(300 / (64 - 8))
    ### END SOLUTION


# %% check="predict_chunks" points=1
chunk_trace = serve.simulate([(0, 2, 40)] * 8 + [(3, 300, 1)], num_blocks=256, block_size=16,
                             budget=64, max_num_seqs=16)
first_step = next(i for i, t in enumerate(chunk_trace) if 8 in t["admitted"])
last_step = next(i for i, t in enumerate(chunk_trace) if 8 not in t["running"] and i > first_step)
grading.check_prediction(predict_chunks, mistakes=CATALOGUE.mistakes("predict_chunks"),
                         expected=last_step - first_step + 1, what="forwards",
                         hint="return an integer number of forwards")

# %% hidden="predict_chunks" points=1
grading.check_prediction(predict_chunks, mistakes=CATALOGUE.mistakes("predict_chunks"),
                         expected=last_step - first_step + 1, what="forwards",
                    hint="each forward has 64 - 8 tokens left for the prompt's chunk")

# %% [markdown]
# The same situation in the simulator: the prompt's chunks fill what the decode tokens leave.

# %%
chunk_trace = serve.simulate([(0, 2, 40)] * 8 + [(3, 300, 1)], num_blocks=256, block_size=16,
                             budget=64, max_num_seqs=16)
for i, t in enumerate(chunk_trace[3:10], start=3):
    print(f"step {i}: decode tokens {sum(n for r, n in t['rows'] if r != 8):2d}, "
          f"prompt chunk {dict(t['rows']).get(8, 0):3d}")

# %% [markdown]
# ## 5. The engine: your step, on the paged cache
#
# `serve.LLMEngine` is the thin tensor layer beside the scheduler (nano-vllm's split of
# `Scheduler` and `ModelRunner`): per step it asks the scheduler for rows, reserves their slots
# in the `PagedKVCache`, runs the model once over the right-padded rows (each with its own
# positions and mask), samples a token for every row whose prompt is complete, streams text, and
# retires the requests that are done. The KV cache only *stores* what would be recomputed, so
# greedy outputs must equal running each request alone — even when requests arrive mid-run, are
# chunked, preempted and recomputed. You now write that step from your own pieces.
#
# ### Exercise 9.7 — capstone: the engine's step · 8 points · difficulty 3 · ~60 min
#
# Write `engine_step(engine, schedule, top_p_min_p, stop_step)`: one step of continuous batching
# on `engine` (a `serve.LLMEngine`; your function replaces its `step`), made of the pieces passed
# in — a scheduler `schedule(scheduler) -> ScheduledBatch` (your 9.5), a filter
# `top_p_min_p(logits, top_p, min_p)` (your 9.1) and `stop_step(pending, delta, stops)` (your
# 9.3). Return a list of `serve.RequestOutput(request_id, token_ids, text, finished,
# finish_reason)`: one per request that received a token this step, in the order of the batch's
# rows, `token_ids` that one token, `text` the text it releases now; `[]` when nothing was
# scheduled.
#
# **What the engine holds.**
# - `engine.scheduler` (`finish(seq)` retires a sequence), `engine.cache` (the `PagedKVCache`),
#   `engine.model`, `engine.device`, `engine.eos_id`, `engine.max_model_len`, `engine.tokenizer`;
# - `engine.requests[seq_id]`: a `Request` with `seq`, `request_id`, `params` (a
#   `SamplingParams`: `temperature`, `top_p`, `min_p`, `max_new_tokens`, `stop`,
#   `stop_token_ids`, `eos_token_id`, `ignore_eos`), `generator` (its seeded `torch.Generator`
#   or `None`), `detok` (`push(token) -> str`, `flush() -> str`: whole characters only),
#   `stop.pending` (the text held back so far), `text` and `finish_reason`;
# - the model↔cache seam of chapter 08: `ctx = engine.cache.prepare(seq_ids, tokens=chunks,
#   device=engine.device, last_logits=True)` makes room for each row's chunk of new tokens,
#   `engine.model(ids, ctx)` on the right-padded `(rows, width)` ids returns `(rows, vocab)`
#   logits at each row's last new token, and `engine.cache.commit(ctx)` records the step.
#
# **The contract.**
# - **One forward** per step, over every scheduled row, without gradients. A row whose
#   sequence still has uncomputed tokens after its chunk receives no token.
# - **Sampling.** Temperature 0 is greedy: the argmax of the logits. Otherwise the token is
#   `torch.multinomial(probs, 1, generator=request.generator)`, `probs` the distribution your
#   `top_p_min_p` leaves of the logits divided by the temperature — so a seeded request draws the
#   same tokens whatever shares its batch.
# - **Stopping.** A request finishes with `"stop"` on its EOS token (`params.eos_token_id`, else
#   `engine.eos_id`; never with `ignore_eos`), on a token of `stop_token_ids`, or when its text
#   reaches a stop string; with `"length"` once it has `max_new_tokens` output tokens or fills
#   the model's context. Every sampled token joins the sequence's output; an EOS or stop token
#   adds no text.
# - **Text.** A request's `text` is the concatenation of its outputs' texts. Text that may begin
#   a stop string is held back (`stop_step`); a stop string and what follows it are never sent;
#   when a request ends otherwise, everything still held back — by the detokenizer or the stop
#   check — is sent, up to a stop string it completes.
# - **Accounting.** No request is lost: each ends with its `finish_reason` and leaves
#   `engine.requests`; a finished sequence's KV blocks go back to the pool exactly once, in the
#   step it finishes; an idle engine has every block free.
# - **Equivalence.** Your step's outputs equal `LLMEngine.step`'s, step for step — hence greedy
#   outputs equal decoding each request alone, whatever the arrivals, chunks and preemptions.
# - **Forbidden:** `LLMEngine.step` and its helpers, `serve.process_logits`, `next_token` (the
#   check blocks them).
#
# The check runs a few requests arriving at different steps through your step on the book's
# model (llmlab's scheduler, filter and stop check passed in), and compares every step's outputs,
# the free blocks after each step, the texts and finish reasons with llmlab's engine, and greedy
# outputs with decoding alone. The chapter's continuous-batching runs below then run on your
# engine with your scheduler, filter and stop check, once they pass.
#
# <details><summary>Hint 1 (the idea)</summary>The scheduler has already decided everything
# about <em>which</em> tokens; the step makes it real in three parts: one tensor batch through
# the model and the cache, then, row by row, a token and its text, then the bookkeeping of the
# requests that ended.</details>
#
# <details><summary>Hint 2 (the structure)</summary>A row's chunk is
# <code>seq.tokens[seq.num_computed:seq.num_computed + n]</code>; after the forward it is
# computed, so <code>seq.num_computed += n</code>, and the row samples only if nothing is left
# uncomputed. Decide the finish in a fixed order: the EOS and stop tokens (no text), then the
# text through <code>stop_step</code> (keep its <code>pending</code> in
# <code>request.stop.pending</code>), then the length. <code>engine.scheduler.finish(seq)</code>
# frees the blocks; take the request out of <code>engine.requests</code> too.</details>
#
# <details><summary>Hint 3 (the key detail)</summary>When a request ends without a stop string,
# push <code>request.detok.flush()</code> through <code>stop_step</code> once more and append what
# it still holds back, unless that push reached a stop string. Pad the chunks with any id (0):
# the cache's mask never lets a real token see the padding.</details>

# %% solution="engine_step"
def engine_step(engine: serve.LLMEngine, schedule, top_p_min_p, stop_step) -> list[serve.RequestOutput]:
    """One continuous-batching step: schedule, one forward over the paged cache, sample, stop."""
    ### BEGIN SOLUTION
    batch = schedule(engine.scheduler)
    if not batch.rows:
        return []
    engine.num_steps += 1
    chunks = [seq.tokens[seq.num_computed:seq.num_computed + n] for seq, n in batch.rows]
    ctx = engine.cache.prepare([seq.seq_id for seq, _ in batch.rows], tokens=chunks,
                               device=engine.device, last_logits=True)
    width = max(len(c) for c in chunks)
    ids = torch.tensor([c + [0] * (width - len(c)) for c in chunks], device=engine.device)
    with torch.no_grad():
        logits = engine.model(ids, ctx).float()  # (rows, vocab) at each row's last new token
    engine.cache.commit(ctx)
    outputs = []
    for row, (seq, n) in enumerate(batch.rows):
        seq.num_computed += n
        if seq.num_uncomputed > 0:  # a prefill chunk: the prompt is not complete yet
            continue
        req = engine.requests[seq.seq_id]
        p = req.params
        if p.temperature == 0:
            token = int(logits[row].argmax())
        else:
            probs = top_p_min_p(logits[row] / p.temperature, p.top_p, p.min_p).softmax(-1)
            token = int(torch.multinomial(probs, 1, generator=req.generator))
        seq.output.append(token)
        eos = engine.eos_id if p.eos_token_id is None else p.eos_token_id
        text, reason, hit = "", None, False
        if (token == eos and not p.ignore_eos) or token in p.stop_token_ids:
            reason = "stop"
        else:
            text, req.stop.pending, hit = stop_step(req.stop.pending, req.detok.push(token), p.stop)
            if hit:
                reason = "stop"
            elif len(seq.output) >= p.max_new_tokens or len(seq.tokens) >= engine.max_model_len:
                reason = "length"
        if reason is not None:
            if not hit:  # what was held back was no stop string after all
                tail, rest, hit = stop_step(req.stop.pending, req.detok.flush(), p.stop)
                text += tail + ("" if hit else rest)
                req.stop.pending = ""
            req.finish_reason = reason
            engine.scheduler.finish(seq)  # its blocks go back to the pool, once
            del engine.requests[req.request_id]
        req.text += text
        outputs.append(serve.RequestOutput(req.request_id, [token], text, reason is not None, reason))
    return outputs
    ### END SOLUTION


# %% check="engine_step" points=3
def ref_engine_step(engine, schedule, top_p_min_p, stop_step):
    return serve.LLMEngine.step(engine)


_solo_outputs: dict = {}


def solo_greedy(prompt: str, n: int) -> list[int]:
    """The first ``n`` greedy tokens of ``prompt`` decoded alone: no engine, no batch, no cache
    (every step recomputes the whole sequence)."""
    if (prompt, n) not in _solo_outputs:
        ids = tokenizer.encode(prompt)
        with torch.no_grad():
            for _ in range(n):
                ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
        _solo_outputs[prompt, n] = ids[len(ids) - n:]
    return _solo_outputs[prompt, n]


def serve_trace(step, workload, num_blocks=64, block_size=4, budget=32, max_num_seqs=4) -> dict:
    """Run ``workload`` — ``(arrival step, prompt, SamplingParams fields)`` per request — through
    an engine whose step is ``step`` (with llmlab's scheduler, filter and stop check); record
    what the contract says."""
    eng = serve.LLMEngine(model, tokenizer, serve.EngineConfig(
        num_blocks=num_blocks, block_size=block_size, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=budget, prefix_caching=False))
    reqs, steps, free = {}, [], []
    for t in range(80):
        for i, (arrival, prompt, fields) in enumerate(workload):
            if arrival == t:
                rid = eng.add_request(prompt, serve.SamplingParams(**fields), request_id=f"r{i}")
                reqs[rid] = eng.requests[rid]
        if t > max(a for a, _, _ in workload) and not eng.has_unfinished():
            break
        outs = step(eng, Scheduler.schedule, ref_top_p_min_p, ref_stop_step)
        steps.append([(o.request_id, o.token_ids, o.text, o.finished, o.finish_reason) for o in outs])
        free.append(eng.cache.num_free_blocks)
    return {"outputs of each step (id, tokens, text, finished, reason)": steps,
            "free KV blocks after each step": free,
            "texts": {r: q.text for r, q in reqs.items()},
            "finish reasons": {r: q.finish_reason for r, q in reqs.items()},
            "requests left in engine.requests": sorted(eng.requests),
            "free KV blocks when idle": eng.cache.num_free_blocks,
            "greedy outputs equal to decoding alone": {
                r: q.seq.output == solo_greedy(workload[int(r[1:])][1],
                                               q.params.max_new_tokens)[:len(q.seq.output)]
                for r, q in reqs.items() if workload[int(r[1:])][2].get("temperature") == 0}}


def greedy_fields(n, **more):
    return dict(max_new_tokens=n, temperature=0, **more)


_engine_blocked = [serve.LLMEngine.step, serve.LLMEngine._append, serve.LLMEngine._forward,
                   serve.process_logits, serve.next_token]
_engine_mistakes = {k: (lambda *a, v=v: serve_trace(v, *a))
                    for k, v in CATALOGUE.mistakes("engine_step").items()}
grading.check_function(
    lambda *a: serve_trace(engine_step, *a), lambda *a: serve_trace(ref_engine_step, *a),
    name="engine_step", block=_engine_blocked, mistakes=_engine_mistakes, cases=[
        grading.Case([(0, "import os\n", greedy_fields(10, stop=["s\nimp"])),
                      (1, "def main():\n", greedy_fields(6)),
                      (3, "class Stack:\n", greedy_fields(9, stop=["zz", "Autocast"]))],
                     note="arrivals at steps 0, 1 and 3; stop strings across tokens"),
        grading.Case([(0, "import os\n", dict(max_new_tokens=10, temperature=0.7, top_p=0.9,
                                              min_p=0.05, seed=1)),
                      (0, "# utilities\n", greedy_fields(8)),
                      (2, "def f(x):\n", dict(max_new_tokens=8, temperature=1.3, top_p=0.8,
                                              seed=7))],
                     12, 4, 6, 2, note="seeded sampling; a tiny pool, a budget of 6, 2 rows"),
    ],
    hint="compare the first entry that differs with the contract above; the hints go from the "
         "idea to the key detail")

# %% hidden="engine_step" points=5
### BEGIN HIDDEN TESTS
grading.check_function(
    lambda *a: serve_trace(engine_step, *a), lambda *a: serve_trace(ref_engine_step, *a),
    name="engine_step", block=_engine_blocked, mistakes=_engine_mistakes, cases=[
        grading.Case([(0, "def main():\n", greedy_fields(8, eos_token_id=10)),
                      (0, "def main():\n", greedy_fields(5, eos_token_id=10, ignore_eos=True)),
                      (1, "import os\n", greedy_fields(8, stop_token_ids=[605])),
                      (1, "class Stack:\n", greedy_fields(6))],
                     note="an EOS token, ignore_eos, a stop token"),
        grading.Case([(0, "import os\n", greedy_fields(12)),
                      (1, "# Copyright 2001 Python Software Foundation\n" * 2, greedy_fields(4)),
                      (2, "def main():\n", greedy_fields(10)),
                      (4, "class Stack:\n", greedy_fields(8))],
                     10, 4, 8, 3, note="chunked prefill beside decoding; preemption in 10 blocks"),
        grading.Case([(0, "for i in range(10):\n", greedy_fields(12, stop=["_default_", "(\n"])),
                      (0, "class Stack:\n", greedy_fields(5, stop=["Autoc"])),
                      (3, "def add(a, b):\n", dict(max_new_tokens=9, temperature=0.9, min_p=0.1,
                                                   seed=3, stop=["):"]))],
                     note="held-back text released at the end; two stop strings; min-p"),
        grading.Case([(t, "import os\n", dict(max_new_tokens=3, temperature=1.0, seed=t))
                      for t in range(5)], 16, 4, 16, 2, note="one request per step, two rows"),
    ])
### END HIDDEN TESTS

# %% [markdown]
# Your engine from here on: your step, with your scheduler, filter and stop check where they
# pass (llmlab's where they do not). First a pool so small that preemption happens: greedy
# outputs must equal each request decoded alone, and seeded samples must equal llmlab's engine.

# %%
EngineStep = grading.prefer_yours(
    engine_step, ref_engine_step,
    [grading.Case([(0, "import os\n", greedy_fields(6, stop=["s\nimp"])),
                   (1, "def f(x):\n", dict(max_new_tokens=6, temperature=1.3, top_p=0.8, seed=7))],
                  10, 4, 6, 2)],
    name="engine_step", probe=lambda f: (lambda *a: serve_trace(f, *a)), block=_engine_blocked)


def book_engine(config: serve.EngineConfig | None = None) -> serve.LLMEngine:
    """An engine whose step is yours (when passing), built from your earlier pieces; the times a
    server reports (to the first token, per output token) are taken around your step."""
    eng = serve.LLMEngine(model, tokenizer, config)

    def step() -> list[serve.RequestOutput]:
        live = dict(eng.requests)
        outputs = EngineStep(eng, scheduler_step, top_p_fn, step_fn)
        now = time.perf_counter()
        for out in outputs:
            req = live[out.request_id]
            req.first_token_time = req.first_token_time or now
            if out.finished:
                req.finish_time = now
                out.latency = req.latency()
        return outputs

    eng.step = step
    return eng


config = serve.EngineConfig(num_blocks=20, block_size=4, max_num_batched_tokens=16, max_num_seqs=4)
greedy = serve.SamplingParams(max_new_tokens=20, temperature=0, ignore_eos=True)
batch_prompts = ["def fibonacci(n):\n    ", "import os\n", "class Foo:\n    def __init__(self",
                 "# Copyright 2001 Python Software Foundation\n" * 3]
done = book_engine(config).generate(batch_prompts, greedy)
for p, r in zip(batch_prompts, done):
    print(f"equal to solo: {r.seq.output == solo_greedy(p, 20)}  preemptions: "
          f"{r.seq.num_preemptions}  {r.text[:40]!r}")
sampled = serve.SamplingParams(max_new_tokens=20, temperature=0.8, top_p=0.9, min_p=0.05, seed=0)
mine = [r.text for r in book_engine(config).generate(batch_prompts, sampled)]
ours = [r.text for r in serve.LLMEngine(model, tokenizer, config).generate(batch_prompts, sampled)]
print("seeded samples equal to llmlab's engine:", mine == ours)

# %% [markdown]
# And the continuous-batching run of section 3, now on your engine: the same 12 requests, at most
# 4 rows per step. Continuous batching never changes *what* is generated, only *when*: the step
# count and every request's span must be the ones llmlab's engine gave.

# %%
my_spans, my_steps = continuous_timeline(work_prompts, work_lens, 4, make=book_engine)
print(f"your engine: {my_steps} steps for {sum(work_lens)} tokens (static batching: "
      f"{static_steps}); the same timeline as llmlab's engine: {my_spans == cont_spans}")

# %% [markdown]
# ## 6. Prefix caching on a shared system prompt
#
# Chat requests usually start with the same system prompt. With `prefix_caching=True`
# (chapter 08's hash chain) its full blocks are computed once and reused by every later request.
# The engine counts, per request, how many prompt tokens it found in the cache:

# %%
system = ("You are a careful assistant for Python programmers. Answer with short, correct code "
          "and explain edge cases. Prefer the standard library.\n")
questions = ["read a file", "sort a dict", "parse json", "time a loop", "walk a tree", "retry"]
computed = {}
for caching in (False, True):
    eng = serve.LLMEngine(model, tokenizer, serve.EngineConfig(prefix_caching=caching))
    reqs = [eng.generate([system + q + ":\n"], serve.SamplingParams(max_new_tokens=4, temperature=0))[0]
            for q in questions]
    prompt_tokens = sum(len(r.seq.prompt) for r in reqs)
    computed[caching] = prompt_tokens - sum(r.seq.num_cached for r in reqs)
    print(f"prefix caching {caching!s:5}: {computed[caching]} of {prompt_tokens} prompt tokens computed")
print(f"prefill work saved: {1 - computed[True] / computed[False]:.0%}")

# %% [markdown]
# ### Handing prefilled blocks to another worker (prefill/decode disaggregation)
#
# The prefix cache is also the door through which KV blocks computed *elsewhere* enter:
# DistServe and Mooncake run prefill and decode on different machines and ship the blocks.
# `PagedKVCache.export_blocks` reads a prefilled sequence's full blocks;
# `import_blocks` stores them in another cache as prefix-cache entries, so the decode engine's
# admission finds them and computes only the prompt's last partial block.
# `serve.disaggregated_generate` does this across two processes (tested in
# `tests/serve/test_disagg.py`); here both sides live in this process to save the start-up time:

# %%
long_prompt = tokenizer.encode(system + "Write a function that reads a CSV file:\n")
prefill_side = PagedKVCache(cfg.n_layer, 32, 16)
prefill_side.add_sequence("p", long_prompt)
ctx = prefill_side.prepare(["p"], tokens=[long_prompt])  # the step: rows, positions, slots
with torch.no_grad():
    model(torch.tensor([long_prompt]), ctx)
prefill_side.commit(ctx)
handed_tokens, handed_kv = prefill_side.export_blocks("p")
decode_side = serve.LLMEngine(model, tokenizer, serve.EngineConfig(block_size=16))
decode_side.cache.import_blocks(handed_tokens, handed_kv)
handed = decode_side.generate([long_prompt], serve.SamplingParams(max_new_tokens=12, temperature=0))[0]
alone = serve.LLMEngine(model, tokenizer).generate([long_prompt],
                                                   serve.SamplingParams(max_new_tokens=12, temperature=0))[0]
n_bytes = sum(t.numel() * t.element_size() for layer in handed_kv for t in layer)
print(f"prompt {len(long_prompt)} tokens: {len(handed_tokens)} handed over in "
      f"{len(handed_tokens) // 16} blocks ({n_bytes / 1024:.0f} KiB), "
      f"{len(long_prompt) - handed.seq.num_cached} computed by the decode side; "
      f"same output as one engine: {handed.seq.output == alone.seq.output}")
print(f"at 25 GB/s the transfer would take {n_bytes / 25e9 * 1e6:.1f} µs "
      f"({n_bytes / len(handed_tokens) / 1024:.0f} KiB per token for this model)")

# %% [markdown]
# ### Many LoRA adapters, one batch
#
# A service that fine-tunes one LoRA per customer (chapter 05) cannot afford one model copy per
# adapter. S-LoRA (Sheng et al., arXiv:2311.03285) and Punica (Chen et al., arXiv:2310.18547)
# keep one base model and stack the adapters: every row of a batch shares the base matmul
# $xW^\top$ and adds its own $s_i B_i A_i x$. `LLMEngine.load_adapters` turns the model's
# linear layers into chapter 05's `peft.MultiLoRALinear`; a request names its adapter
# (`add_request(..., adapter=name)`, or `"model": "book:name"` over HTTP), and its prefix-cache
# blocks are salted with that name, since the same tokens have other keys and values under
# another adapter. Two adapters with seeded random weights (stand-ins for trained ones) and the
# base model, mixed in one batch:

# %%
def random_adapter(targets: tuple[str, ...], seed: int) -> torch.nn.Module:
    """The book's model with a rank-4 LoRA on ``targets`` whose weights are seeded noise."""
    lora = peft.apply_lora(copy.deepcopy(model), peft.LoRAConfig(r=4, alpha=8,
                                                                 target_modules=targets))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return lora.eval()


loras = {"sql": random_adapter(("q_proj", "v_proj"), 0),
         "poem": random_adapter(("v_proj", "down_proj"), 1)}
multi = serve.LLMEngine(copy.deepcopy(model), tokenizer)
multi.load_adapters({n: peft.adapter_state_dict(m) for n, m in loras.items()},
                    {n: 2.0 for n in loras})
plan = [("def main():\n", a) for a in (None, "sql", "poem")]
lora_reqs = [multi.requests[multi.add_request(p, greedy, adapter=a)] for p, a in plan]
while multi.has_unfinished():
    multi.step()
print(f"{len(plan)} requests on {len(loras)} adapters and the base model: {multi.num_steps} steps")
for (p, a), r in zip(plan, lora_reqs):
    alone = serve.LLMEngine(loras[a] if a else model, tokenizer).generate([p], greedy)[0]
    print(f"adapter {a or '(none)':6}: equal to that model alone: "
          f"{r.seq.output == alone.seq.output}  {r.text[:32]!r}")

# %% [markdown]
# ## 7. Speculative decoding
#
# Decoding one token costs a whole forward of reading the weights; verifying $k$ proposed tokens
# costs nearly the same forward. So let a cheap **drafter** propose $x_1..x_k$ (probabilities
# $q_i$), score all of them with one target forward ($p_1..p_{k+1}$), and keep as many as is
# *correct*. "Correct" must mean: the output is distributed exactly as the target's own samples.
# Leviathan et al. (2023) and Chen et al. (2023) showed the rule:
#
# - accept $x_i$ with probability $\min\big(1, p_i(x_i) / q_i(x_i)\big)$;
# - at the first rejection, sample from the **residual** $r(x) = \dfrac{\max(0, p(x) - q(x))}
#   {\sum_y \max(0, p(y) - q(y))}$ and stop;
# - if all $k$ are accepted, sample a bonus token from $p_{k+1}$.
#
# **Why it is exact.** For one position, $P(\text{emit } x) = q(x)\min(1, p(x)/q(x)) +
# P(\text{reject})\, r(x)$. The first term is $\min(q(x), p(x))$. $P(\text{reject}) = 1 -
# \sum_y \min(q(y), p(y)) = \sum_y \max(0, p(y) - q(y))$, which is exactly $r$'s normalizer, so the
# second term is $\max(0, p(x) - q(x))$. Their sum: $\min(p, q) + \max(0, p - q) = p(x)$. ∎
#
# Greedy decoding is the case $p$ = one-hot on the argmax: accept while the draft equals the
# target's argmax — identical output to plain greedy, with fewer forwards.
#
# ### Exercise 9.8 — the acceptance rule · 4 points · difficulty 3 · ~30 min
#
# Write `accept_draft(p, q, draft, u)`: `p` `(k+1, vocab)` target probabilities, `q` `(k, vocab)`
# draft probabilities **or `None`** for a deterministic drafter (then $q_i$ is one-hot on
# `draft[i]`), `draft` a list of $k$ token ids, `u` `(k,)` uniforms. Accept draft $i$ when
# `u[i] * q_i(x_i) <= p_i(x_i)`. Return `(n_accepted, dist)` where `dist` `(vocab,)` is the
# normalized residual at the first rejection — or `p[i]` itself if the residual is all zeros —
# or `p[k]` when every draft is accepted.
#
# <details><summary>Hint 1</summary>
# Comparing <code>u * q &lt;= p</code> instead of <code>u &lt;= p / q</code> avoids dividing by
# zero.</details>
# <details><summary>Hint 2</summary>
# With a one-hot q, the residual is p with the draft token's probability removed.</details>

# %% solution="accept_draft"
def accept_draft(p: torch.Tensor, q: torch.Tensor | None, draft: list[int],
                 u: torch.Tensor) -> tuple[int, torch.Tensor]:
    """-> (number of accepted drafts, the distribution to sample the next token from)."""
    ### BEGIN SOLUTION
    for i, x in enumerate(draft):
        q_i = torch.zeros_like(p[i]) if q is None else q[i]
        if q is None:
            q_i[x] = 1.0
        if u[i] * q_i[x] <= p[i, x]:
            continue
        residual = (p[i] - q_i).clamp(min=0)
        if float(residual.sum()) <= 0:
            return i, p[i]
        return i, residual / residual.sum()
    return len(draft), p[len(draft)]
    ### END SOLUTION


# %% check="accept_draft" points=2
p3 = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
q2 = torch.tensor([[0.2, 0.6, 0.2], [0.4, 0.4, 0.2]])
grading.check_function(accept_draft, serve.accept_draft, cases=[
    grading.Case(p3, q2, [0, 1], torch.tensor([0.9, 0.9]), note="p >= q: both accepted"),
    grading.Case(p3, q2, [1, 1], torch.tensor([0.7, 0.1]), note="rejected at the first draft"),
    grading.Case(p3, None, [0, 2], torch.tensor([0.4, 0.5]), note="deterministic draft (q one-hot)"),
], block=[serve.rejection_sample, serve.greedy_verify], mistakes=CATALOGUE.mistakes("accept_draft"),
   hint="the residual is max(0, p - q) normalized; with q None, q is one-hot on the draft")

# %% hidden="accept_draft" points=2
g = torch.Generator().manual_seed(3)
pp = torch.softmax(torch.randn(4, 6, generator=g), -1)
qq = torch.softmax(torch.randn(3, 6, generator=g), -1)
grading.check_function(accept_draft, serve.accept_draft, cases=[
    grading.Case(pp, qq, [1, 2, 3], torch.rand(3, generator=g), note="random p, q"),
    grading.Case(pp, qq, [0, 0, 0], torch.zeros(3), note="u = 0 accepts everything"),
    grading.Case(pp[:1], None, [], torch.zeros(0), note="k = 0: sample from p[0]"),
    grading.Case(pp[:2], pp[:1], [4], torch.tensor([0.99]), note="q == p: never rejected"),
    grading.Case(torch.tensor([[0.0, 1.0], [0.5, 0.5]]), None, [0], torch.tensor([0.5]),
                 note="p(x) = 0: the residual is the rest of p"),
], block=[serve.rejection_sample, serve.greedy_verify], mistakes=CATALOGUE.mistakes("accept_draft"))

# %% [markdown]
# **Check it statistically.** A 5-token vocabulary, random $p$ and $q$: draft from $q$, verify
# with the rule, and histogram the first emitted token. It must follow $p$, not $q$ (a
# chi-square statistic far below the 0.1% critical value, 18.5 for 4 degrees of freedom).

# %%
accept_fn = use_learner("accept_draft", accept_draft, serve.accept_draft,
                        lambda f: f(p3, q2, [1, 1], torch.tensor([0.7, 0.1])))
g = torch.Generator().manual_seed(0)
p_t = torch.softmax(torch.randn(2, 5, generator=g) * 1.5, -1)
q_t = torch.softmax(torch.randn(1, 5, generator=g) * 1.5, -1)
counts = torch.zeros(5)
for _ in tqdm(range(4000), desc="draft and verify", leave=False):
    x = int(torch.multinomial(q_t[0], 1, generator=g))
    n, dist = accept_fn(p_t, q_t, [x], torch.rand(1, generator=g))
    counts[x if n else int(torch.multinomial(dist, 1, generator=g))] += 1
chi2 = float(((counts - 4000 * p_t[0]) ** 2 / (4000 * p_t[0])).sum())
fig, ax = plt.subplots(figsize=(7, 2.6))
ax.bar(torch.arange(5) - 0.25, p_t[0], 0.25, label="target p")
ax.bar(torch.arange(5), q_t[0], 0.25, label="draft q")
ax.bar(torch.arange(5) + 0.25, counts / 4000, 0.25, label="emitted (4000 runs)")
ax.legend(), ax.set_xlabel("token")
plt.tight_layout()
plt.show()
print(f"chi-square vs p: {'below' if chi2 < 18.5 else 'ABOVE'} the 0.1% critical value 18.5")

# %% [markdown]
# **Measured on the book's model.** Two drafters: *prompt lookup* (copy what followed the last
# earlier occurrence of the recent n-gram — free, and good on code, which repeats itself) and an
# *early-exit* draft (the target's own first 3 of 6 layers plus its head; a distilled small model
# would do better). Greedy, so the output must equal plain greedy decoding:

# %%
code = ("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"
        "def mul(a, b):\n    return a * b\n\n\ndef div(a, b):\n")
prompt_ids = tokenizer.encode(code)
plain = generate(model, torch.tensor([prompt_ids]), max_new_tokens=48)[0, len(prompt_ids):].tolist()
drafters = {"prompt lookup (n=3)": serve.NgramDrafter(3),
            "early exit (3 layers)": serve.ModelDrafter(serve.early_exit_model(model, 3),
                                                        serve.SamplingParams(temperature=0))}
spec_stats = {}
for name, drafter in drafters.items():
    out, stats = serve.speculative_generate(model, prompt_ids, drafter, k=4, max_new_tokens=48)
    spec_stats[name] = stats
    print(f"{name:22s} equal to greedy: {out == plain}  acceptance {stats.acceptance_rate:.2f}"
          f"  tokens per target forward {stats.tokens_per_forward:.2f}")

# %% tags=["nbval-ignore-output"]
t0 = time.perf_counter()
generate(model, torch.tensor([prompt_ids]), max_new_tokens=48)
t_plain = time.perf_counter() - t0
for name, drafter in drafters.items():
    t0 = time.perf_counter()
    serve.speculative_generate(model, prompt_ids, drafter, k=4, max_new_tokens=48)
    print(f"{name:22s} speed-up over plain greedy: {t_plain / (time.perf_counter() - t0):.2f}×")

# %% [markdown]
# The speed-up follows from tokens per forward *and* the drafter's cost: prompt lookup costs
# almost nothing, while the early-exit draft costs half a target forward per proposed token and
# is rarely right — on this CPU it is slower than plain decoding. Production systems use a
# distilled draft (or EAGLE/Medusa heads) that agrees with the target 60–80% of the time.
#
# ## 8. Constrained decoding: every output parses
#
# To force JSON or any format, mask the logits so that only tokens that keep the output a prefix
# of *some* string of the language can be sampled, and allow end-of-sequence only where the
# output is complete (Outlines: Willard & Louf, 2023). `serve.regex_to_dfa` compiles a regular
# expression to a DFA over **bytes** (Thompson's NFA, then the subset construction), keeps the
# *live* states (from which an accepting state is reachable), and `serve.TokenAutomaton` walks
# every token's bytes from each state to build the mask — once per state, cached.
#
# ### Exercise 9.9 — the regex-to-token mask · 3 points · difficulty 2 · ~15 min
#
# Write `token_mask(dfa, state, token_bytes)`: for each token (a `bytes` string), the DFA state
# after reading all its bytes from `state`, or `None` when some byte has no transition
# (`dfa.trans[s].get(b)` is `None`) or leads to a state not in `dfa.live`. An empty token
# (special tokens) is `None`.

# %% solution="token_mask"
def token_mask(dfa: serve.DFA, state: int, token_bytes: list[bytes]) -> list[int | None]:
    """-> per token, the state after it, or None if it is not allowed."""
    ### BEGIN SOLUTION
    out = []
    for tb in token_bytes:
        s = state if tb else None
        for b in tb:
            s = dfa.trans[s].get(b)
            if s is None or s not in dfa.live:
                s = None
                break
        out.append(s)
    return out
    ### END SOLUTION


# %% check="token_mask" points=1
dfa_yes = serve.regex_to_dfa("(yes|no)")
grading.check_function(token_mask, serve.token_mask, cases=[
    grading.Case(dfa_yes, dfa_yes.start, [b"y", b"yes", b"n", b"x", b"ye", b"yess"],
                 note="(yes|no) from the start"),
    grading.Case(dfa_yes, dfa_yes.walk(dfa_yes.start, b"y"), [b"e", b"es", b"s", b""],
                 note="after 'y'; an empty token"),
], block=[serve.DFA.walk], mistakes=CATALOGUE.mistakes("token_mask"),
   hint="walk every byte; a missing or dead transition disallows the token")

# %% hidden="token_mask" points=2
dfa_num = serve.regex_to_dfa(r"\d{1,3}\.\d{2}")
vocab_sample = [tokenizer.vocab[i] for i in range(0, len(tokenizer.vocab) - 1, 7)]
grading.check_function(token_mask, serve.token_mask, cases=[
    grading.Case(dfa_num, dfa_num.start, vocab_sample, note="numbers over a real vocabulary"),
    grading.Case(dfa_num, dfa_num.walk(dfa_num.start, b"12"), vocab_sample, note="after '12'"),
    grading.Case(serve.regex_to_dfa("ab*c"), 0, [b"abbb", b"abbbcx", b"abc", b"ac", b"b", b""],
                 note="a token that passes the end is dead"),
], block=[serve.DFA.walk], mistakes=CATALOGUE.mistakes("token_mask"))

# %% [markdown]
# The engine applies the mask before sampling (`SamplingParams(regex=...)`; the server accepts
# vLLM's `guided_regex`). Sampling at temperature 1 from a model that has never seen JSON —
# every output still parses:

# %%
mask_fn = use_learner("token_mask", token_mask, serve.token_mask,
                      lambda f: f(dfa_yes, dfa_yes.start, [b"y", b"yes", b"x"]))
serve.structured.token_mask = mask_fn  # the engine's automaton now calls your function
pattern = r'\{"name": "[a-z]{1,10}", "line": (0|[1-9]\d{0,3}), "ok": (true|false)\}'
eng = serve.LLMEngine(model, tokenizer)
rids = [eng.add_request("record = ", serve.SamplingParams(max_new_tokens=60, temperature=1.0, seed=seed,
                                                          regex=pattern)) for seed in range(5)]
outs = [eng.requests[i] for i in rids]
while eng.has_unfinished():
    eng.step()
for r in outs:
    print(r.text, "| parses:", bool(re.fullmatch(pattern, r.text)) and isinstance(json.loads(r.text), dict))
serve.structured.token_mask = serve.token_mask

# %% [markdown]
# ## 9. The server: an OpenAI-compatible API
#
# `llmlab serve --model book` starts a FastAPI/uvicorn app with `/v1/models`,
# `/v1/completions`, `/v1/chat/completions` (both streaming as Server-Sent Events), `/health` and
# `/metrics` (Prometheus text). One background task owns the engine and runs each step in a
# worker thread; each request gets a queue of outputs; a client that disconnects mid-stream has
# its request aborted and its KV blocks freed at once. Bad input gets a 4xx with OpenAI's error
# body, which the `openai` client turns into typed exceptions.
#
# A streamed response is a sequence of SSE events, each `data: <json>` followed by a blank line,
# and a final `data: [DONE]`:
#
# ### Exercise 9.10 — the SSE event formatter · 2 points · difficulty 1 · ~5 min
#
# Write `sse_event(data)`: a dict becomes compact JSON (`separators=(",", ":")`), a string is
# sent as is; return `"data: " + payload + "\n\n"`.

# %% solution="sse_event"
def sse_event(data: dict | str) -> str:
    """One Server-Sent Event carrying ``data``."""
    ### BEGIN SOLUTION
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n"
    ### END SOLUTION


# %% check="sse_event" points=1
grading.check_function(sse_event, serve.sse_event, cases=[
    grading.Case({"choices": [{"text": "hi"}]}, note="a chunk"),
    grading.Case("[DONE]", note="the end of the stream"),
], mistakes=CATALOGUE.mistakes("sse_event"), hint="each event ends with a blank line: two newlines")

# %% hidden="sse_event" points=1
grading.check_function(sse_event, serve.sse_event, cases=[
    grading.Case({"text": "a\nb", "x": None}, note="a newline inside the JSON stays escaped"),
    grading.Case({"text": "é"}, note="non-ASCII"),
], mistakes=CATALOGUE.mistakes("sse_event"))

# %% [markdown]
# Start the server on a free port of 127.0.0.1 in a background thread — on your engine: your
# step with your scheduler, filter and stop check, where they pass — and talk to it with the
# official client:

# %% tags=["nbval-ignore-output"]
engine = book_engine(serve.EngineConfig(num_blocks=128, block_size=16))
server = serve_in_thread(create_app(engine, "book"))
url = server.__enter__()
client = openai.OpenAI(base_url=url + "/v1", api_key="not-needed", max_retries=0, timeout=30)
print("serving at", url, "· models:", [m.id for m in client.models.list().data])

# %%
r = client.completions.create(model="book", prompt="def read_config(path):\n", max_tokens=24,
                              temperature=0)
print(repr(r.choices[0].text), r.choices[0].finish_reason, r.usage.completion_tokens, "tokens")
stream = client.chat.completions.create(
    model="book", messages=[{"role": "system", "content": "You write Python."},
                            {"role": "user", "content": "Sort a list."}],
    max_tokens=16, temperature=0, stream=True)
print("streamed:", [c.choices[0].delta.content for c in stream])
try:
    client.completions.create(model="book", prompt="x", temperature=7)
except openai.BadRequestError as err:
    print("400:", err.body)
try:
    client.completions.create(model="gpt-4", prompt="x")
except openai.NotFoundError as err:
    print("404:", err.body["code"])

# %% [markdown]
# The completion reads like the code it was trained on; the streamed chat reply does not. The
# book's model is a *base* model: it has never seen a conversation, so the chat template's role
# markers are just unfamiliar tokens to it, and it answers by repeating pieces of them. The
# server did its job (the template, the streaming, the stop); what a chat endpoint needs from the
# model is supervised fine-tuning on conversations, chapter 06's first step.
#
# `book-chat` is that step done: the same weights after chapter 06's SFT on questions built from
# the standard library (its card, `llmlab/model/assets/book-chat/MODEL_CARD.md`, gives the recipe
# and its held-out score; `llmlab serve --model book-chat` serves it). Its chat template is
# ChatML, with `<|im_start|>` and `<|im_end|>` as real special tokens. Ask it for a function:

# %% tags=["nbval-ignore-output"]
chat_model, chat_tok = load("book-chat", device="cpu")
chat_engine = serve.LLMEngine(chat_model, chat_tok, serve.EngineConfig(num_blocks=64, block_size=16))
with serve_in_thread(create_app(chat_engine, "book-chat")) as chat_url:
    chat_client = openai.OpenAI(base_url=chat_url + "/v1", api_key="not-needed", max_retries=0,
                                timeout=30)
    ask = "Write a function `read_config(path)` that read the configuration file at path."
    reply = chat_client.chat.completions.create(
        model="book-chat", messages=[{"role": "user", "content": ask}], max_tokens=24,
        temperature=0)
print(repr(reply.choices[0].message.content), reply.choices[0].finish_reason)
assert "def read_config(path):" in reply.choices[0].message.content

# %% [markdown]
# A 1.6 M-parameter model can follow the format, not write the body: the `def` line it was asked
# for comes back, and what follows is Python-shaped. The rest of this chapter serves
# completions, which a base model does well.
#
# ## 10. A load test: throughput, latency percentiles, goodput
#
# Users arrive at random: a **Poisson process** (exponential gaps). For each streaming request
# we measure the **time to first token** (TTFT: queueing + prefill) and the **time per output
# token** (TPOT: the decode pace). Throughput alone hides queueing; **goodput** (DistServe)
# counts only requests that met a service-level objective, e.g. TTFT ≤ 1 s and TPOT ≤ 0.2 s.
# A tiny, bounded load (24 requests) on the loopback:

# %% tags=["nbval-ignore-output"]
load_prompts = [system + q + ":\n" for q in questions] + ["import os\n", "class Tree:\n"]
rows = []
for rate in tqdm([4.0, 16.0], desc="load test", leave=False):
    rep = serve.load_test(url, load_prompts, num_requests=12, rate=rate, output_lens=(8, 24),
                          slo_ttft=1.0, slo_tpot=0.2, seed=0)
    rows.append((rate, rep))
    print(f"rate {rate:4.0f}/s: {rep.throughput:6.1f} tok/s · TTFT p50 {rep.ttft_ms['p50']:6.1f} ms "
          f"p99 {rep.ttft_ms['p99']:6.1f} ms · TPOT p50 {rep.tpot_ms['p50']:5.1f} ms · goodput "
          f"{rep.goodput:.2f} req/s ({rep.slo_attainment:.0%} met the SLO) · failed {rep.failed}")
metrics = [ln for ln in __import__("httpx").get(url + "/metrics").text.splitlines()
           if ln.startswith(("llmlab_num", "llmlab_kv", "llmlab_time_to_first_token_seconds_count"))]
print("\n".join(metrics))
server.__exit__(None, None, None)  # graceful stop: the port is released
print("server stopped")

# %% [markdown]
# At a higher arrival rate, requests queue: TTFT grows first (waiting for admission and prefill),
# while TPOT grows with the batch size (a bigger batch makes each forward a little slower). That
# is the trade-off every serving system tunes: bigger batches buy throughput with latency.
#
# ## How the industry does it
#
# - **vLLM** (Kwon et al., SOSP 2023) introduced PagedAttention and the scheduler this chapter
#   follows: iteration-level batching, admission by free blocks, recompute (or swap) preemption;
#   its v1 engine unifies prefill and decode under one token budget with chunked prefill and
#   automatic prefix caching by block hashes. It reports 2–4× the throughput of earlier systems
#   at the same latency.
# - **SGLang** (Zheng et al., 2024) keeps cached prefixes in a radix tree (RadixAttention) and
#   schedules to maximize prefix reuse; its compressed finite-state machines make constrained
#   JSON decoding faster by jumping over forced tokens.
# - **TensorRT-LLM** (NVIDIA) calls continuous batching "in-flight batching" and compiles the
#   model into fused CUDA kernels; **TGI** (Hugging Face) and **llama.cpp's server** expose the
#   same OpenAI-style API with continuous batching and speculative decoding.
# - **Orca** (Yu et al., OSDI 2022) first showed iteration-level scheduling (up to 36.9× the
#   throughput of FasterTransformer at equal latency); **Sarathi-Serve** (Agrawal et al., OSDI
#   2024) showed chunked prefill removes the decode stalls long prompts cause.
# - **Disaggregation**: DistServe (Zhong et al., OSDI 2024) and Mooncake (Kimi, 2024) run prefill
#   and decode on different GPUs and ship the KV blocks between them, so each phase meets its own
#   SLO; DistServe reports up to 7.4× more requests within the SLO. llmlab's
#   `serve.disaggregated_generate` hands full blocks from a prefill process to the decode engine
#   (section 6), with the network cost simulated as bytes / bandwidth.
# - **Speculative decoding** ships in all of them: draft models, Medusa/EAGLE heads, and prompt
#   lookup (n-gram) for code and editing workloads, typically 2–3× faster decoding at batch 1;
#   the gain shrinks as batches grow, because a busy GPU has less idle compute to spend on
#   verification.
# - **Multi-LoRA**: vLLM, SGLang and LoRAX serve hundreds of adapters on one base model with
#   Punica/S-LoRA-style gathered kernels (SGMV/BGMV), paging adapter weights in and out of GPU
#   memory like KV blocks; vLLM salts its prefix-cache hashes with the adapter id, as here.
# - **Structured output**: Outlines (regex/JSON-schema FSMs), XGrammar (context-free grammars
#   with a byte-level pushdown automaton, the default in vLLM and SGLang) and llguidance.
# - Where it breaks: the mask must be computed for every step of every constrained request
#   (hence caching per state); preemption by recompute wastes work under memory pressure; prefix
#   caching only helps when prompts share *exact* token prefixes (a changed timestamp at the top
#   of a system prompt defeats it).
#
# ## Summary
#
# - Sampling is a pipeline on the logits: bias, penalties, temperature, top-k/top-p/min-p, a
#   per-request seed; streaming must hold back incomplete UTF-8 characters and possible starts of
#   stop strings.
# - Continuous batching lets requests join and leave after every forward; the scheduler admits by
#   free KV blocks, mixes prefill chunks and decode tokens under a token budget, preempts the
#   newest sequence when blocks run out, and never changes greedy outputs.
# - Prefix caching skips recomputing shared prompts; speculative decoding trades cheap drafts for
#   fewer target forwards without changing the output distribution; a DFA over bytes, lifted to
#   tokens, guarantees every constrained output parses.
# - An OpenAI-compatible server is the engine behind a queue per request, SSE streaming, OpenAI
#   error bodies and Prometheus metrics; a load test reports TTFT/TPOT percentiles and goodput.
#
# ## Further reading
#
# - Kwon et al., [Efficient Memory Management for LLM Serving with PagedAttention](https://arxiv.org/abs/2309.06180) (2023)
# - Yu et al., [Orca: A Distributed Serving System for Transformer-Based Generative Models](https://www.usenix.org/conference/osdi22/presentation/yu) (OSDI 2022)
# - Agrawal et al., [Taming Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve](https://arxiv.org/abs/2403.02310) (2024)
# - Leviathan et al., [Fast Inference from Transformers via Speculative Decoding](https://arxiv.org/abs/2211.17192) (2023);
#   Chen et al., [Accelerating LLM Decoding with Speculative Sampling](https://arxiv.org/abs/2302.01318) (2023)
# - Willard & Louf, [Efficient Guided Generation for Large Language Models](https://arxiv.org/abs/2307.09702) (2023)
# - Zheng et al., [SGLang: Efficient Execution of Structured Language Model Programs](https://arxiv.org/abs/2312.07104) (2024)
# - Zhong et al., [DistServe: Disaggregating Prefill and Decoding](https://arxiv.org/abs/2401.09670) (2024)
# - Nguyen et al., [Min-p Sampling](https://arxiv.org/abs/2407.01082) (2024); Holtzman et al., [The Curious Case of Neural Text Degeneration](https://arxiv.org/abs/1904.09751) (2019)
