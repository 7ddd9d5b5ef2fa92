# %% [markdown]
# # 11 · Evaluation: what a number about a model means
#
# Every chapter so far reported a loss, an accuracy or a win rate. This one asks what such a
# number measures, how precisely, and whether the model saw the test before. It builds
# `llmlab.evaluate` — log-likelihood scoring with the conventions of EleutherAI's
# lm-evaluation-harness (the test suite checks that `lm-eval` prints the same numbers), HumanEval's
# pass@k with programs executed under limits, contamination tests, and the statistics that decide
# whether a difference is real — and ends with one leaderboard of the book's own models: the
# pretrained model of chapter 02 and what chapters 05–08 did to it.
#
# **You will learn to**
# 1. measure perplexity and **bits per byte** (comparable across tokenizers) per domain, and
#    score documents longer than the context with rolling windows;
# 2. turn a task into log-likelihood requests and score multiple choice by `acc` and the
#    length-normalised `acc_norm`, zero- and few-shot, and see how much the choice of shots moves
#    the score;
# 3. generate with stop sequences, execute the programs under limits, and estimate pass@k without
#    bias; see how temperature trades pass@1 for pass@k;
# 4. detect contamination — n-gram overlap with the training data, and Min-K% probability, a
#    membership test that needs only the model — see how a mismatched held-out set fools it, and
#    calibrate it against a text's intrinsic difficulty (zlib, a reference model, Min-K%++);
# 5. put confidence intervals on every score, compare two models on the same items, and count the
#    items a difference needs; expose a judge's position bias; test the whole context window;
# 6. write the evaluator itself — batched log-likelihood with the token/character alignment done
#    right — and run the book's leaderboard on it.

# %% [markdown]
# **Budget:** ~3 min on 2 CPU cores · peak RAM ~2 GB. No GPU and no network needed. (Measured
# with the AVX2 settings on a shared 2-core Xeon: 2.1 min of CPU, 1.9 GB peak, training the LoRA
# and DPO variants from an empty cache.)

# %% tags=["nbval-ignore-output"]
import json
import math
import os
import statistics as stats_module

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display
from tqdm.auto import tqdm

import llmlab.evaluate as ev
from llmlab import grading
from llmlab.data import load_documents
from llmlab.evaluate.tasks import function_texts
from llmlab_book import ch11_eval as wrong
from llmlab.model import BOOK_MODEL_DIR, load_book_model
from llmlab.utils import seed_all

MODEL = os.environ.get("LLMLAB_MODEL", "book")    # the demos' model; graded cells keep the book's
DEVICE = os.environ.get("LLMLAB_DEVICE", "cpu")
FULL = False  # True: 100 samples per problem for pass@k, full LoRA/DPO training (minutes more)
seed_all(0)
torch.set_num_threads(1)  # the book's model is fastest on one thread: its ops are too small to split
book, book_tok = load_book_model()  # graded cells use these
tok = book_tok
book_card = json.loads((BOOK_MODEL_DIR / "summary.json").read_text())  # the model card's numbers
if MODEL == "book":
    model = book.to(DEVICE)
else:  # a Hugging Face checkpoint on disk (llmlab.model.from_hf) with its own tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmlab.model import from_hf

    model = from_hf(AutoModelForCausalLM.from_pretrained(MODEL)).eval().to(DEVICE)
    tok = AutoTokenizer.from_pretrained(MODEL)
    tok.encode = lambda text, _enc=tok.encode: _enc(text, add_special_tokens=False)
suite = ev.load_suite()
heldout, train_items = suite["return_mc"]["heldout"], suite["return_mc"]["train"]
cfg = book.config
print(f"the book's model: {book.num_params() / 1e6:.2f} M parameters, context {cfg.block_size} tokens; "
      f"the suite: {len(heldout)} held-out and {len(train_items)} training-split items, built from "
      f"Python {suite['corpus']['train']['python']}'s standard library and torch's source")

# %% [markdown]
# ## 1. Likelihood: perplexity and bits per byte
#
# A language model assigns a probability to every text: $p(x) = \prod_t p(x_t \mid x_{<t})$.
# Its average negative log-likelihood per token is the training loss; **perplexity** is its
# exponential, $\mathrm{PPL} = \exp\big(-\tfrac{1}{T}\sum_t \log p(x_t\mid x_{<t})\big)$ — "as
# unsure as a uniform choice among PPL tokens". But the number of tokens $T$ depends on the
# tokenizer: a tokenizer with longer tokens has fewer, harder predictions, and a higher
# per-token perplexity for the *same* model quality. Dividing the total log-likelihood by the
# text's **bytes** instead gives a number any two models can share:
#
# $$\text{bits per byte} = \frac{-\sum_t \log_2 p(x_t\mid x_{<t})}{\text{UTF-8 bytes}}
#   = \frac{T}{B}\cdot\frac{\ln \mathrm{PPL}}{\ln 2}.$$
#
# It is what the Pile (Gao et al., 2020) and lm-eval's `bits_per_byte` report; gzip achieves
# about 2 bits per byte on source code, so a model below that has learned more than repetition.
#
# ### Exercise 11.1 — predict first: bits per byte · 2 points · difficulty 1 · ~5 min
#
# The book's model card reports a validation loss of **3.536 nats per token** on the held-out
# standard library, and its tokenizer averages about **3.75 bytes per token** on that text. What
# is its bits per byte? Write the conversion as a function of the two numbers and work out the
# model's value before the next cell measures it.
#
# <details><summary>Hint 1</summary>Nats per token → bits per token → bits per byte.</details>

# %% solution="predict_bpb"
def predict_bits_per_byte(nats_per_token: float, bytes_per_token: float) -> float:
    """Bits per byte of a model with this loss (nats per token) on text with this many bytes per token."""
    ### BEGIN SOLUTION
    return nats_per_token / math.log(2) / bytes_per_token
    ### END SOLUTION


# %% check="predict_bpb" points=1
def bpb_reference(nats_per_token: float, bytes_per_token: float) -> float:
    """llmlab's bits per byte of 1,000 bytes of text that cost this many nats per token."""
    n_tokens = 1000 / bytes_per_token
    return ev.LikelihoodStats(-nats_per_token * n_tokens, round(n_tokens), 1000, 1).bits_per_byte


grading.check_function(predict_bits_per_byte, bpb_reference,
                       [grading.Case(3.536, 3.75, note="3.536 nats per token, 3.75 bytes per token")],
                       mistakes=wrong.BITS_PER_BYTE, rtol=1e-3,
                       hint="a nat is 1/ln 2 bits; a token is bytes_per_token bytes")

# %% hidden="predict_bpb" points=1
grading.check_function(predict_bits_per_byte, bpb_reference, [
    grading.Case(2.0, 4.0, note="2 nats per token, 4 bytes per token"),
    grading.Case(math.log(2), 1.0, note="one bit per one-byte token"),
], mistakes=wrong.BITS_PER_BYTE, rtol=1e-3)

# %% [markdown]
# Now measured, per domain: held-out Python files, the English prose of held-out docstrings,
# and Chinese prose (a language the model never saw; the tokenizer falls back to bytes). The
# token perplexity and the bits per byte can rank domains differently: Chinese costs many
# tokens per character, so each token is easy to predict while each byte is not.

# %%
def clip_bytes(text: str, n: int) -> str:
    return text.encode("utf-8")[:n].decode("utf-8", errors="ignore")


domains = {name: [clip_bytes(t, 16_000) for t in texts[:2]] for name, texts in suite["domains"].items()}
per_domain = ev.domain_likelihood(model, tok, domains)
for name, s in per_domain.items():
    print(f"{name:<20} {s.bits_per_byte:5.2f} bits/byte · token perplexity {s.token_perplexity:7.1f} · "
          f"{s.n_bytes / s.n_tokens:4.2f} bytes/token")
code_bpb = per_domain["python code"].bits_per_byte
card_loss = book_card["val_loss"]
assert round(card_loss, 3) == 3.536, card_loss  # the numbers the exercise quotes
assert 3.5 < per_domain["python code"].n_bytes / per_domain["python code"].n_tokens < 4.0
predict_bpb = grading.prefer_yours(predict_bits_per_byte, bpb_reference, [grading.Case(3.0, 4.0)],
                                   name="predict_bits_per_byte")
code = per_domain["python code"]
print(f"predicted from the card's loss and this text's {code.n_bytes / code.n_tokens:.2f} bytes per token: "
      f"{predict_bpb(card_loss, code.n_bytes / code.n_tokens):.2f} bits per byte; measured on held-out "
      f"code: {code_bpb:.2f}")

# %% [markdown]
# ### Documents longer than the context
#
# The model reads 512 tokens at a time. A longer document is cut into windows so that every
# token is predicted exactly once: the first from a prefix token (end-of-text), the next ones
# from up to 512 earlier tokens. How many earlier tokens a window keeps, `context_len`, is a
# trade: with 1 the windows are disjoint (lm-eval's default: the fewest forwards, but the first
# tokens of each window see almost nothing); with more, each window predicts fewer new tokens,
# sees more context, and costs more forwards.
#
# ### Exercise 11.2 — rolling windows · 4 points · difficulty 3 · ~30 min
#
# Write `rolling_windows_(tokens, prefix_id, max_seq_len, context_len)` returning a list of
# `(context, predicted)` pairs of token lists such that
#
# - concatenating every `predicted` gives `tokens` exactly (each token predicted once, in order);
# - the first pair's context is `[prefix_id]`; every later context is taken from `tokens`;
# - `context + predicted` of every pair is exactly the last `max_seq_len + 1` tokens the model
#   would see for it (shorter only when the document is): the model reads all but the last;
# - every window after the first predicts `max_seq_len - context_len + 1` tokens (the last one
#   possibly fewer), and `1 <= context_len <= max_seq_len` (otherwise `ValueError`);
# - an empty `tokens` gives `[]`.
#
# This is lm-eval's `get_rolling_token_windows` followed by `make_disjoint_window`; do not call
# `ev.rolling_windows`.
#
# <details><summary>Hint 1</summary>Track how many tokens are predicted so far; each step
# predicts a fixed number of new ones, except the first and the last.</details>
# <details><summary>Hint 2</summary>For a window whose predicted tokens end at `end` (exclusive),
# the model's input is the `max_seq_len` tokens ending just before `end`; the context is that
# input minus the predicted tokens' overlap.</details>
# <details><summary>Hint 3</summary>`window = tokens[end - max_seq_len - 1 : end - 1]`, predicting
# `n` tokens: `context = window[: len(window) - (n - 1)]`.</details>

# %% solution="rolling"
def rolling_windows_(tokens: list[int], prefix_id: int, max_seq_len: int,
                     context_len: int = 1) -> list[tuple[list[int], list[int]]]:
    """(context, predicted) windows that predict every token of ``tokens`` once."""
    ### BEGIN SOLUTION
    if not 1 <= context_len <= max_seq_len:
        raise ValueError(f"need 1 <= context_len <= max_seq_len, got {context_len}")
    tokens = list(tokens)
    if not tokens:
        return []
    first = min(max_seq_len, len(tokens))
    out = [([prefix_id], tokens[:first])]
    predicted, step = first, max_seq_len - context_len + 1
    while predicted < len(tokens):
        n = min(step, len(tokens) - predicted)
        end = predicted + n
        window = tokens[end - max_seq_len - 1:end - 1]
        out.append((window[:len(window) - (n - 1)], tokens[end - n:end]))
        predicted = end
    return out
    ### END SOLUTION


# %% check="rolling" points=2
def rolling_reference(tokens, prefix_id, max_seq_len, context_len=1):
    return list(ev.rolling_windows(tokens, prefix_id, max_seq_len, context_len))


grading.check_function(rolling_windows_, rolling_reference, [
    grading.Case(list(range(10, 30)), 0, 8, 1, note="20 tokens, windows of 8, disjoint"),
    grading.Case(list(range(10, 30)), 0, 8, 4, note="context_len 4: windows overlap"),
    grading.Case(list(range(10, 15)), 0, 8, 1, note="shorter than one window"),
], block=[ev.rolling_windows], mistakes=wrong.ROLLING,
   hint="every token predicted once; each window's context + predicted is max_seq_len + 1 tokens")

# %% hidden="rolling" points=2
grading.check_function(rolling_windows_, rolling_reference, [
    grading.Case(list(range(100, 177)), 7, 16, 16, note="context_len = max_seq_len: one token a window"),
    grading.Case(list(range(100, 177)), 7, 16, 5, note="a last window shorter than the others"),
    grading.Case([], 7, 16, 1, note="an empty document"),
    grading.Case(list(range(3, 20)), 1, 17, 1, note="exactly one window"),
], block=[ev.rolling_windows], mistakes=wrong.ROLLING)

# %% [markdown]
# The windows go through the same scorer as everything else in this chapter. On a held-out file
# about three windows long, more context per window lowers bits per byte and costs forwards:

# %%
rolling = grading.prefer_yours(rolling_windows_, rolling_reference,
                               [grading.Case(list(range(40)), 0, 8, 3)], name="rolling_windows_")
long_doc = clip_bytes(suite["domains"]["python code"][0], 5_000)
doc_ids = tok.encode(long_doc)
context_sweep = {}
for context_len in tqdm([1, 128, 256, 448], desc="context per window", leave=False):
    windows = rolling(doc_ids, ev.prefix_token_id(tok), cfg.block_size, context_len)
    scores = ev.score_tokens(model, windows, batch_size=8)
    context_sweep[context_len] = (-sum(s.logprob for s in scores) / len(long_doc.encode()) / math.log(2),
                                  len(windows))
for c, (bpb, n) in context_sweep.items():
    print(f"context_len {c:>3}: {bpb:.3f} bits per byte with {n:>2} forwards of up to {cfg.block_size} tokens")
assert context_sweep[448][0] < context_sweep[1][0], "more context should help on real code"

# %% [markdown]
# ## 2. Multiple choice by log-likelihood
#
# Most benchmarks (MMLU, HellaSwag, ARC, C-Eval and CMMLU in their log-likelihood form) are
# multiple choice. The harness does not let the model *write* an answer; it scores each choice as
# a continuation of the prompt and picks the most likely. The book's suite has one such task,
# built offline from its corpus: a Python function up to its final `return`, and four candidate
# return expressions — its own and three from other functions. Held-out items come from files
# the model never trained on. One item:

# %%
item = heldout[3]
print(item.query[-400:])
for i, c in enumerate(item.choices):
    print(f"  {'*' if i == item.gold else ' '} ({i}) return {c}")

# %% [markdown]
# Two scores come out of the same log-likelihoods:
#
# - `acc`: the choice with the highest $\log p(c \mid \text{prompt})$ is the gold one;
# - `acc_norm`: the highest $\log p(c \mid \text{prompt}) / \text{len}(c)$, with the length in
#   **characters of the choice** (without the leading space) — lm-eval's definition — so that a
#   long answer does not lose merely for having more tokens to pay for.
#
# ### Exercise 11.3 — acc and acc_norm · 2 points · difficulty 1 · ~10 min
#
# Write `mc_decision_(logprobs, choices, gold) -> (acc, acc_norm)` for one item: two ints, 0 or
# 1. Ties go to the first choice (as `argmax` does). Do not call `ev.mc_decision`.

# %% solution="mc_decision"
def mc_decision_(logprobs: list[float], choices: list[str], gold: int) -> tuple[int, int]:
    """(acc, acc_norm) of one item from its choices' log-likelihoods."""
    ### BEGIN SOLUTION
    best = max(range(len(choices)), key=lambda i: (logprobs[i], -i))
    best_norm = max(range(len(choices)), key=lambda i: (logprobs[i] / len(choices[i]), -i))
    return int(best == gold), int(best_norm == gold)
    ### END SOLUTION


# %% check="mc_decision" points=1
grading.check_function(mc_decision_, ev.mc_decision, [
    grading.Case([-12.0, -5.0], ["a_long_answer", "ab"], 0, note="long gold: acc wrong, acc_norm right"),
    grading.Case([-1.0, -5.0, -3.0], ["x", "yy", "z"], 0, note="a short, likely gold"),
    grading.Case([-3.9, -4.0, -7.6], ["x", "abcd", "abcdefgh"], 1, note="the delimiter is not part of the length"),
    grading.Case([-2.0, -5.0], ["a", "bcd"], 1, note="per character, the longer choice wins"),
], block=[ev.mc_decision], mistakes=wrong.MC, hint="acc_norm divides by len(choice), in characters")

# %% hidden="mc_decision" points=1
grading.check_function(mc_decision_, ev.mc_decision, [
    grading.Case([-8.0, -8.0], ["ab", "cd"], 1, note="a tie goes to the first choice"),
    grading.Case([-9.0, -2.0, -30.0, -4.0], ["a.b", "0", "self.items[key]", "None"], 2,
                 note="four choices, gold the longest"),
    grading.Case([-4.0, -7.5, -9.0], ["ab", "abcd", "a"], 1, note="per character, the middle choice"),
], block=[ev.mc_decision], mistakes=wrong.MC)

# %%
decide = grading.prefer_yours(mc_decision_, ev.mc_decision, [grading.Case([-3.0, -2.0], ["aaa", "b"], 0)],
                              name="mc_decision_")
N_ITEMS = 96
zero_shot = ev.evaluate_mc(model, tok, heldout[:N_ITEMS], progress=lambda it: tqdm(it, desc="zero-shot", leave=False))
decisions = [decide(lp, i.choices, i.gold) for lp, i in zip(zero_shot.logprobs, heldout[:N_ITEMS])]
acc0 = sum(d[0] for d in decisions) / N_ITEMS
acc_norm0 = sum(d[1] for d in decisions) / N_ITEMS
print(f"{N_ITEMS} held-out items, zero-shot: acc {acc0:.2f}, acc_norm {acc_norm0:.2f} (chance 0.25)")
gold_len = np.mean([len(i.choices[i.gold]) for i in heldout[:N_ITEMS]])
other_len = np.mean([len(c) for i in heldout[:N_ITEMS] for j, c in enumerate(i.choices) if j != i.gold])
print(f"gold answers average {gold_len:.1f} characters, wrong ones {other_len:.1f}: "
      f"acc {'penalises' if gold_len > other_len else 'favours'} the gold answers for their length")

# %% [markdown]
# ### Few-shot, and how much the shots matter
#
# A $k$-shot prompt starts with $k$ solved examples (query, space, gold answer, blank line). On a
# small model the examples mostly teach the *format*; which examples are drawn can move the score
# as much as $k$ does (Zhao et al., 2021). Three draws of $k$ shots from the training split:

# %%
FEW_ITEMS, SEEDS = 32, (0, 1, 2)
shots_scores = {0: [ev.evaluate_mc(model, tok, heldout[:FEW_ITEMS]).mean_acc_norm]}
for k in tqdm((1, 2), desc="k shots", leave=False):
    runs = ev.fewshot_spread(model, tok, heldout[:FEW_ITEMS], train_items, k, SEEDS)
    shots_scores[k] = [r.mean_acc_norm for r in runs]
fig, ax = plt.subplots(figsize=(5, 3))
for k, accs in shots_scores.items():
    ax.scatter([k] * len(accs), accs, color="C0")
ax.set_xlabel("shots k"), ax.set_ylabel(f"acc_norm on {FEW_ITEMS} items"), ax.set_xticks(list(shots_scores))
ax.set_title("few-shot: one dot per draw of the shots")
plt.tight_layout()
plt.show()
spread = {k: max(v) - min(v) for k, v in shots_scores.items() if len(v) > 1}
print("spread across draws:", ", ".join(f"k={k}: {s:.3f}" for k, s in spread.items()))

# %% [markdown]
# ## 3. Generation, execution and pass@k
#
# For code, the industry's measure is whether a generated program *runs and passes tests*
# (HumanEval, MBPP, LiveCodeBench). Three pieces: generate until a **stop sequence** (the start of
# the next top-level statement), **execute** the candidate with its tests in a separate process
# under limits, and estimate **pass@k**.
#
# ### Exercise 11.4 — stop sequences · 2 points · difficulty 1 · ~10 min
#
# Write `truncate_at_stop_(text, stop)`: `text` up to (not including) the *earliest* occurrence in
# the text of any of the strings in `stop`; all of `text` when none occurs. Empty stop strings are
# ignored. Do not call `ev.truncate_at_stop`.

# %% solution="stops"
def truncate_at_stop_(text: str, stop: list[str]) -> str:
    """``text`` cut at the earliest stop sequence."""
    ### BEGIN SOLUTION
    cut = len(text)
    for s in stop:
        i = text.find(s) if s else -1
        if 0 <= i < cut:
            cut = i
    return text[:cut]
    ### END SOLUTION


# %% check="stops" points=1
grading.check_function(truncate_at_stop_, ev.truncate_at_stop, [
    grading.Case(" a + b\ndef g():", ["\ndef ", "\nclass "], note="one stop"),
    grading.Case(" x\n\nclass A:\ndef f", ["\ndef ", "\nclass "], note="the earlier of two"),
    grading.Case(" x + 1", ["\n"], note="no stop: everything"),
], block=[ev.truncate_at_stop], mistakes=wrong.STOPS, hint="the earliest position in the text wins")

# %% hidden="stops" points=1
grading.check_function(truncate_at_stop_, ev.truncate_at_stop, [
    grading.Case("abc\n#x\nprint(1)", ["\nprint(", "\n#"], note="the second stop comes first"),
    grading.Case("\ndef at once", ["\ndef "], note="a stop at position 0"),
    grading.Case("abc", ["", "z"], note="an empty stop string is ignored"),
], block=[ev.truncate_at_stop], mistakes=wrong.STOPS)

# %% [markdown]
# **pass@k** is the probability that at least one of $k$ samples passes. Drawing exactly $k$
# samples per problem is a noisy estimate; Chen et al. (2021) draw $n \ge k$, count the $c$ that
# pass, and average $1 - \binom{n-c}{k} / \binom{n}{k}$: the chance that a random $k$-subset of
# the $n$ holds at least one passing sample.
#
# ### Exercise 11.5 — unbiased pass@k · 2 points · difficulty 2 · ~15 min
#
# Write `pass_at_k_(n, c, k)` for one problem ($0 \le c \le n$, $1 \le k \le n$). It must stay
# accurate for $n$ in the thousands (no overflow, no `inf / inf`). Do not call `ev.pass_at_k` or
# `ev.estimate_pass_at_k`.
#
# <details><summary>Hint 1</summary>If fewer than $k$ samples fail, every $k$-subset holds a
# pass.</details>
# <details><summary>Hint 2</summary>$\binom{n-c}{k}/\binom{n}{k}$ is a product of $k$ (or $c$)
# ratios, each below 1.</details>

# %% solution="passk"
def pass_at_k_(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c pass."""
    ### BEGIN SOLUTION
    if n - c < k:
        return 1.0
    fail_all = 1.0
    for i in range(n - c + 1, n + 1):
        fail_all *= 1.0 - k / i
    return 1.0 - fail_all
    ### END SOLUTION


# %% check="passk" points=1
grading.check_function(pass_at_k_, ev.pass_at_k, [
    grading.Case(10, 3, 1, note="pass@1 = c/n"),
    grading.Case(10, 3, 5, note="pass@5 of 10 samples, 3 correct"),
    grading.Case(5, 4, 2, note="fewer than k failures: 1"),
], block=[ev.pass_at_k, ev.estimate_pass_at_k], mistakes=wrong.PASS_AT_K,
   hint="1 - C(n-c, k) / C(n, k), computed as a product")

# %% hidden="passk" points=1
grading.check_function(pass_at_k_, ev.pass_at_k, [
    grading.Case(200, 7, 10, note="HumanEval's n = 200"),
    grading.Case(2000, 13, 100, note="large n: no overflow"),
    grading.Case(20, 0, 5, note="no passing sample"),
    grading.Case(7, 7, 7, note="all pass"),
], block=[ev.pass_at_k, ev.estimate_pass_at_k], mistakes=wrong.PASS_AT_K)

# %% [markdown]
# The problems are small HumanEval-style functions (`ev.PROBLEMS`), each a signature and
# docstring ending where `return` starts, with `assert` tests. Every candidate runs in a fresh
# interpreter with the limits of `llmlab.limits` — the same piece the grader's sandbox
# uses — and a timeout:

# %%
print(ev.PROBLEMS[0].prompt + ev.PROBLEMS[0].solution)
for program in ["while True: pass", "import shutil; shutil.rmtree('/')", "x = bytearray(8 * 1024 ** 3)"]:
    print(f"{program:<38} -> {ev.run_program(program, timeout=2).status}")

# %% [markdown]
# The book's model was trained on library code, not on short exercises; its pass rate on them is
# low, so we sample many completions (one batch per problem), and run each distinct completion
# once (all in one limited process, `ev.run_programs`). Temperature matters more for pass@10 than
# for pass@1: near-greedy sampling repeats its one best guess, hotter sampling spreads over more
# programs (more chances among ten), until it is too hot for either.

# %% tags=["grading-skip", "nbval-ignore-output"]
passk = grading.prefer_yours(pass_at_k_, ev.pass_at_k, [grading.Case(20, 3, 5)], name="pass_at_k_")
cut = grading.prefer_yours(truncate_at_stop_, ev.truncate_at_stop, [grading.Case("a\nb\n#", ["#", "\n"])],
                           name="truncate_at_stop_")
N_SAMPLES, TEMPERATURES = (100 if FULL else 16), (0.2, 0.6, 1.0)
verdicts: dict[tuple[str, str], bool] = {}  # (problem, completion) -> passed


def execute_new(samples: dict) -> None:
    """Run every (problem, completion) not yet judged: all in one limited process, each with its
    own timeout (``ev.run_programs``); a pass is confirmed in a fresh process of its own."""
    todo = sorted({(p.name, t) for p, texts in samples.items() for t in texts} - verdicts.keys())
    problem = {p.name: p for p in samples}
    programs = [problem[n].prompt + t + "\n\n" + problem[n].tests for n, t in todo]
    for key, program, result in zip(todo, programs, ev.run_programs(programs, timeout=1)):
        verdicts[key] = result.passed and ev.run_program(program, timeout=3).passed


pass_table = {}
for temp in tqdm(TEMPERATURES, desc="temperature", leave=False):
    samples = {p: [cut(text, ["\n"]) for text in ev.generate_until(model, tok, p.prompt, stop=(), max_new_tokens=10,
                                                                  temperature=temp, n=N_SAMPLES, seed=1)]
               for p in ev.PROBLEMS}
    execute_new(samples)
    counts = [sum(verdicts[p.name, t] for t in texts) for p, texts in samples.items()]
    pass_table[temp] = {k: float(np.mean([passk(N_SAMPLES, c, k) for c in counts])) for k in (1, 10)}
solved = sorted({name for (name, _), ok in verdicts.items() if ok})
for temp, row in pass_table.items():
    print(f"T={temp}: pass@1 {row[1]:.3f} · pass@10 {row[10]:.3f}")
print(f"{len(verdicts)} distinct programs executed; problems ever solved: {', '.join(solved) or 'none'}")
best1 = max(pass_table, key=lambda t: pass_table[t][1])
best10 = max(pass_table, key=lambda t: pass_table[t][10])
print(f"pass@1 is highest at T={best1}, pass@10 at T={best10}"
      + (": a hotter sampler trades pass@1 for pass@10" if best10 > best1 else ""))

# %% [markdown]
# ## 4. Contamination: did the model see the test?
#
# A benchmark item that sits in the training data measures memory, not skill. Two ways to find
# out. **With the training data:** look for long shared n-grams (GPT-3 flagged an item when any
# 13-gram of words occurred in training). The suite records, for each held-out item, the fraction
# of its 13-grams found anywhere in the training corpus — the same function can live in two files:

# %%
overlap = np.array(suite["heldout_overlap"])
flagged = overlap[:N_ITEMS] > 0.5
print(f"{flagged.mean():.0%} of the first {N_ITEMS} held-out items share most of their 13-grams with "
      f"the training data ({(overlap > 0.5).mean():.0%} of all {len(overlap)})")
if flagged.any() and (~flagged).any():
    acc_flagged = np.mean(zero_shot.acc_norm[:N_ITEMS], where=flagged)
    acc_clean = np.mean(zero_shot.acc_norm[:N_ITEMS], where=~flagged)
    print(f"acc_norm on the overlapping items {acc_flagged:.2f}, on the clean ones {acc_clean:.2f}")
seen = ev.evaluate_mc(model, tok, train_items[:N_ITEMS])
gap = seen.mean_acc_norm - zero_shot.mean_acc_norm
print(f"and on {N_ITEMS} items from *training* files: acc_norm {seen.mean_acc_norm:.2f} "
      f"(held-out: {zero_shot.mean_acc_norm:.2f}): "
      + ("the training files score higher, a sign of memory" if gap > 0.05 else
         f"no advantage for the seen files ({gap:+.2f}): a {book.num_params() / 1e6:.1f} M-parameter "
         "model has memorised little of them"))

# %% [markdown]
# **Without the training data**, from the model alone: **Min-K% probability** (Shi et al., 2023)
# averages the log-probabilities of the $k$ % of a text's tokens the model found least likely. A
# text seen in training has fewer surprising tokens. Its quality is the **AUROC**: the chance that
# a random training function scores above a random held-out one (0.5: no signal, 0: a perfect
# signal the wrong way round). A membership test is only as good as its two sets are alike in
# everything but membership (Duan et al., 2024, found most published ones were not).
#
# ### Exercise 11.6 — Min-K% probability · 2 points · difficulty 1 · ~10 min
#
# Write `min_k_prob_(token_lp, k)`: the mean of the $\lceil k \cdot T\rceil$ lowest of the $T$
# values of `token_lp` (a 1-D tensor), as a Python float. Do not call `ev.min_k_prob`.

# %% solution="min_k"
def min_k_prob_(token_lp: torch.Tensor, k: float = 0.2) -> float:
    """Mean of the lowest ceil(k*T) token log-probabilities."""
    ### BEGIN SOLUTION
    m = math.ceil(k * token_lp.numel())
    return float(token_lp.double().sort().values[:m].mean())
    ### END SOLUTION


# %% check="min_k" points=1
grading.check_function(min_k_prob_, ev.min_k_prob, [
    grading.Case(torch.tensor([-1.0, -5.0, -2.0, -0.5, -3.0]), 0.4, note="the two lowest of five"),
    grading.Case(torch.tensor([-1.0, -5.0, -2.0, -0.5, -3.0]), 0.3, note="ceil(1.5) = 2"),
], block=[ev.min_k_prob], mistakes=wrong.MIN_K, hint="sort ascending, keep ceil(k*T), average")

# %% hidden="min_k" points=1
g = torch.Generator().manual_seed(0)
grading.check_function(min_k_prob_, ev.min_k_prob, [
    grading.Case(-torch.rand(37, generator=g) * 8, 0.2, note="37 tokens, k = 20 %"),
    grading.Case(torch.tensor([-2.0]), 0.1, note="one token"),
    grading.Case(-torch.rand(10, generator=g), 1.0, note="k = 100 %: the mean"),
], block=[ev.min_k_prob], mistakes=wrong.MIN_K)

# %%
min_k = grading.prefer_yours(min_k_prob_, ev.min_k_prob, [grading.Case(torch.tensor([-1.0, -4.0, -2.0]), 0.5)],
                             name="min_k_prob_")
N_FN = 60
# the suite's own extractor on the standard library's held-out files: a function's exact provenance
stdlib_val = set(function_texts([d.text for d in load_documents(split="val")]))
members = suite["functions"]["members"][:N_FN]  # all from the standard library's training files
nonmembers_all = suite["functions"]["nonmembers"][:N_FN]  # held-out files of the stdlib *and* of torch
nonmembers_std = [f for f in suite["functions"]["nonmembers"] if f in stdlib_val][:N_FN]  # like for like
candidates = dict.fromkeys(members + nonmembers_all + nonmembers_std)
fn_stats = {f: ev.text_token_stats(model, tok, f)  # log p; mean and spread of log p over the vocabulary
            for f in tqdm(candidates, desc="functions", leave=False)}
min_k_scores = {name: [min_k(fn_stats[f].logprob, 0.2) for f in texts]
                for name, texts in (("members", members), ("all", nonmembers_all), ("std", nonmembers_std))}
auc_mixed = ev.auroc(min_k_scores["members"], min_k_scores["all"])
auc_min_k = ev.auroc(min_k_scores["members"], min_k_scores["std"])
n_std = sum(f in stdlib_val for f in nonmembers_all)
print(f"held-out functions as drawn: {n_std} of {N_FN} from the standard library, {N_FN - n_std} from torch's "
      f"held-out files; Min-20% AUROC {auc_mixed:.2f}")
print(f"standard library against standard library ({N_FN} training, {len(nonmembers_std)} held-out functions): "
      f"Min-20% AUROC {auc_min_k:.2f}"
      + (" — below 0.5: the training functions look *less* familiar" if auc_min_k < 0.5 else ""))

# %% [markdown]
# Min-K% ranks texts by how likely the model finds them, so it also ranks them by how **easy**
# they are: a short function of common idioms is likely under any model, seen or not. Two sets
# that differ in difficulty differ in Min-K% whatever their membership. The fix is to
# **calibrate** — compare the model's likelihood with a baseline for the same text:
#
# - **zlib ratio** (Carlini et al., 2021): the loss divided by the zlib-compressed length of the
#   text in bytes; compressible text is easy for everyone.
# - **reference model** (same paper): the target's loss minus a *reference* model's loss on the
#   same tokens. Both find easy code easy; only the target saw the members. Ours is a token
#   bigram model (`ev.BigramReference`) counted on the standard library's training files that
#   hold no candidate function: it knows which tokens and pairs are common in Python, and has
#   never seen a candidate.
# - **Min-K%++** (Zhang et al., 2024): each token's $\log p(x_t)$ standardised by the model's own
#   next-token distribution at that position, $(\log p(x_t) - \mu_t)/\sigma_t$ with
#   $\mu_t = \mathbb{E}_{z\sim p}[\log p(z)]$ and $\sigma_t^2 = \mathrm{Var}_{z\sim p}[\log p(z)]$, then the
#   Min-K% mean: training makes a seen token stand out from the alternatives at its position.
#
# Every score is oriented so that higher means "member"; the interval is a 90 % bootstrap over
# both sets, and "separates" below means the whole interval lies above 0.5.

# %%
reference = ev.fit_reference(tok, ev.reference_corpus([d.text for d in load_documents(split="train")],
                                                      suite["functions"]["members"]), model.config.vocab_size)
ref_loss, signals = {}, {}
for f in fn_stats:
    ref_lp = reference.token_logprobs(ev.text_ids(tok, f, model.config.block_size))
    ref_loss[f] = -float(ref_lp.mean())
    signals[f] = {**ev.membership_scores(fn_stats[f], f, ref_lp), "Min-20%": min_k(fn_stats[f].logprob, 0.2)}
SIGNALS = {"loss": "−loss (mean log p)", "Min-20%": "Min-20% prob (yours)", "zlib ratio": "−loss / zlib bytes",
           "reference": "−(loss − bigram reference's loss)", "Min-20%++": "Min-20%++ (standardised log p)"}
nonmembers_torch = [f for f in nonmembers_all if f not in stdlib_val]
auc = {name: {side: ev.auroc_interval([signals[f][name] for f in members], [signals[f][name] for f in texts])
              for side, texts in (("std", nonmembers_std), ("all", nonmembers_all))} for name in SIGNALS}
display(Markdown("| signal (higher = member) | AUROC, stdlib vs stdlib [90 % interval] | AUROC, held-out as drawn |\n"
                 "|---|---|---|\n" + "\n".join(
                     f"| {label} | {auc[n]['std'].estimate:.2f} [{auc[n]['std'].low:.2f}, {auc[n]['std'].high:.2f}] "
                     f"| {auc[n]['all'].estimate:.2f} |" for n, label in SIGNALS.items())))


def names(signal_names):
    return ", ".join(SIGNALS[n].split(" (")[0] for n in signal_names)


separating = [n for n in SIGNALS if auc[n]["std"].low > 0.5]
reversed_ = [n for n in SIGNALS if auc[n]["std"].high < 0.5]
chance = [n for n in SIGNALS if n not in separating and n not in reversed_]
best = max(SIGNALS, key=lambda n: auc[n]["std"].estimate)
print(f"like for like ({N_FN} training against {len(nonmembers_std)} held-out standard-library functions): "
      + (f"{names(separating)} separate{'s' if len(separating) == 1 else ''} them, the whole interval above 0.5; "
         if separating else f"no signal separates them (the best, {names([best])}, reaches "
                            f"{auc[best]['std'].estimate:.2f} and its interval holds 0.5); ")
      + (f"{names(chance)} cannot be told from chance (interval holds 0.5)" if chance else "")
      + (f"; {names(reversed_)} point the wrong way" if reversed_ else ""))


def mean_of(values, texts):
    return float(np.mean([values[f] for f in texts]))


tgt_loss = {f: -s["loss"] for f, s in signals.items()}
groups = (("training", members), ("held-out stdlib", nonmembers_std), ("held-out torch", nonmembers_torch))
print("mean loss, nats per token — " + "; ".join(
    f"{g}: book model {mean_of(tgt_loss, t):.2f}, bigram reference {mean_of(ref_loss, t):.2f}" for g, t in groups))
easier_std = mean_of(ref_loss, nonmembers_std) < mean_of(ref_loss, members)
print(f"the two like-for-like sets differ in intrinsic difficulty: the reference, which saw neither, finds the "
      f"held-out functions {'easier' if easier_std else 'harder'} by "
      f"{abs(mean_of(ref_loss, members) - mean_of(ref_loss, nonmembers_std)):.2f} nats per token; the raw loss "
      f"scores {auc['loss']['std'].estimate:.2f}, the reference-calibrated loss {auc['reference']['std'].estimate:.2f}"
      + (" — dividing out difficulty is what exposes membership" if "reference" in separating
         and "loss" not in separating else ""))
torch_easier = mean_of(tgt_loss, nonmembers_torch) < mean_of(tgt_loss, members)
shift = {n: auc[n]["all"].estimate - auc[n]["std"].estimate for n in SIGNALS}
steady = min(SIGNALS, key=lambda n: abs(shift[n]))
print(f"against the held-out set as drawn, torch's functions are {'easier' if torch_easier else 'harder'} for the "
      f"book model than its own training functions ({mean_of(tgt_loss, nonmembers_torch):.2f} against "
      f"{mean_of(tgt_loss, members):.2f} nats per token; it trained on torch's other files), and mixing them in "
      "moves each AUROC: " + ", ".join(f"{names([n])} {shift[n]:+.2f}" for n in SIGNALS)
      + f"; {names([steady])} moves least"
      + (": it compares each token with the model's own alternatives at that position, so a text that is easy "
         "throughout does not look familiar" if steady == "Min-20%++" else "")
      + ". The reference was counted on the standard library only: it cannot know torch's code is easy for the model")


# %% [markdown]
# ## 5. Is a difference real? Intervals, paired tests, sample sizes
#
# A score over $n$ items is a sample mean; for 0/1 outcomes its standard error is
# $\sqrt{p(1-p)/n}$ — about ±0.05 at $n = 100$ for 95 %. The **bootstrap** estimates the same
# without a formula, for any statistic: resample the items *with replacement*, recompute, and
# take percentiles of the resampled statistics.
#
# ### Exercise 11.7 — a bootstrap interval · 3 points · difficulty 2 · ~20 min
#
# Write `bootstrap_mean_ci_(values, n_resamples, confidence, rng)` returning `(low, high)`, the
# percentile bootstrap interval of the mean. Draw all resamples at once as
# `rng.integers(0, n, (n_resamples, n))` — the draw `scipy.stats.bootstrap` makes, so the check
# can compare with it on the same generator — and use `np.percentile`'s default interpolation.
# Do not call `ev.bootstrap_ci` or `scipy.stats.bootstrap`.

# %% solution="bootstrap"
def bootstrap_mean_ci_(values, n_resamples: int, confidence: float,
                       rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    ### BEGIN SOLUTION
    x = np.asarray(values, dtype=float)
    means = x[rng.integers(0, len(x), (n_resamples, len(x)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    return float(np.percentile(means, 100 * alpha)), float(np.percentile(means, 100 * (1 - alpha)))
    ### END SOLUTION


# %% check="bootstrap" points=1
def bootstrap_reference(values, n_resamples, confidence, rng):
    ci = ev.bootstrap_ci(values, n_resamples=n_resamples, confidence=confidence, rng=rng)
    return ci.low, ci.high


grading.check_function(bootstrap_mean_ci_, bootstrap_reference, [
    grading.Case([1, 0, 1, 1, 0, 1, 0, 1, 1, 1], 500, 0.95, np.random.default_rng(0), note="ten 0/1 outcomes"),
    grading.Case(list(np.linspace(0, 1, 30)), 1000, 0.9, np.random.default_rng(1), note="90 %"),
], block=[ev.bootstrap_ci], mistakes=wrong.BOOTSTRAP, atol=1e-12,
   hint="indices with replacement, means per resample, percentiles at (1-c)/2 and 1-(1-c)/2")

# %% hidden="bootstrap" points=2
import scipy.stats  # noqa: E402


def scipy_reference(values, n_resamples, confidence, rng):
    res = scipy.stats.bootstrap((np.asarray(values, float),), np.mean, n_resamples=n_resamples,
                                confidence_level=confidence, method="percentile", vectorized=False,
                                random_state=rng)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


grading.check_function(bootstrap_mean_ci_, scipy_reference, [
    grading.Case(list(np.random.default_rng(5).binomial(1, 0.3, 80)), 2000, 0.95, np.random.default_rng(7),
                 note="80 items: the same as scipy.stats.bootstrap"),
    grading.Case([0.5, 2.0, -1.0, 3.5], 300, 0.8, np.random.default_rng(3), note="4 values, 80 %"),
], block=[ev.bootstrap_ci, scipy.stats.bootstrap], mistakes=wrong.BOOTSTRAP, atol=1e-12)

# %% [markdown]
# Two models scored on the **same** items should be compared on their per-item differences: the
# items' shared difficulty cancels, and the interval shrinks. The question "how many items do I
# need?" then has an answer: for a paired test at significance $\alpha$ and power $1-\beta$,
#
# $$ n = \left(\frac{(z_{1-\alpha/2} + z_{1-\beta})\,\sigma_d}{\delta}\right)^2 $$
#
# where $\sigma_d$ is the standard deviation of the per-item difference and $\delta$ the true
# mean difference (Miller, 2024).
#
# ### Exercise 11.8 — predict first: items for a 3-point difference · 2 points · difficulty 2 · ~10 min
#
# Two models differ by $\delta = 0.03$ in accuracy; their per-item differences have
# $\sigma_d = 0.5$. How many items does a two-sided paired test at $\alpha = 0.05$ need to detect it
# with 80 % power? Return the number (round up).

# %% solution="predict_items"
def predict_items() -> int:
    """Items for delta = 0.03, sigma_d = 0.5, alpha = 0.05 (two-sided), power 0.8."""
    ### BEGIN SOLUTION
    z = stats_module.NormalDist().inv_cdf(0.975) + stats_module.NormalDist().inv_cdf(0.8)
    return math.ceil((z * 0.5 / 0.03) ** 2)
    ### END SOLUTION


# %% check="predict_items" points=1
grading.check_function(predict_items, lambda: ev.items_needed(0.03, 0.5), [grading.Case(note="the item count")],
                       rtol=0.01, mistakes=wrong.ITEMS_NEEDED,
                       hint="z for a two-sided 5 % test is 1.96, for 80 % power 0.84")

# %% hidden="predict_items" points=1
grading.check_function(predict_items, lambda: 2181, [grading.Case(note="items")], rtol=0.01)

# %% [markdown]
# On the book's model: the held-out task's interval, and a paired comparison of `acc_norm` with
# `acc` — on the same items, their difference is decided by the few items where they disagree
# (McNemar's test reads only those):

# %%
bootstrap = grading.prefer_yours(bootstrap_mean_ci_, bootstrap_reference,
                                 [grading.Case([1, 0, 1, 1], 200, 0.95, np.random.default_rng(0))],
                                 name="bootstrap_mean_ci_", atol=1e-12)
lo, hi = bootstrap(zero_shot.acc_norm, 2000, 0.95, np.random.default_rng(0))
print(f"acc_norm {zero_shot.mean_acc_norm:.3f}, 95% interval [{lo:.3f}, {hi:.3f}] over {N_ITEMS} items")
diff = ev.paired_bootstrap(zero_shot.acc_norm, zero_shot.acc, n_resamples=2000)
p_value = ev.mcnemar_exact(zero_shot.acc_norm, zero_shot.acc)
sd_d = float(np.std(np.array(zero_shot.acc_norm) - np.array(zero_shot.acc), ddof=1))
print(f"acc_norm - acc = {diff.estimate:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}], McNemar p = {p_value:.2g}; "
      f"σ_d = {sd_d:.2f}, so a 0.03 difference would need {ev.items_needed(0.03, sd_d)} items")

# %% tags=["nbval-ignore-output"]
def interval_width(n_items: int = 100, accuracy: float = 0.6):
    """The 95 % bootstrap interval of an accuracy, for a number of items you choose."""
    outcomes = np.random.default_rng(0).random(n_items) < accuracy
    ci = ev.bootstrap_ci(outcomes.astype(float), n_resamples=1000)
    print(f"{n_items} items at accuracy ~{accuracy:.2f}: ±{(ci.high - ci.low) / 2:.3f}")


widgets.interact(interval_width, n_items=widgets.IntSlider(100, 20, 5000, 20),
                 accuracy=widgets.FloatSlider(value=0.6, min=0.05, max=0.95, step=0.05))

# %% [markdown]
# ## 6. Judges and long context
#
# **LLM-as-a-judge** asks a model which of two answers is better (MT-Bench, Chatbot Arena's
# auto-evaluators, AlpacaEval). Judges prefer answers for their *position*, length and style; the
# standard check is to judge each pair twice with the order swapped. Here the judge is the book's
# model, asked in its own language (Python comments) which return statement fits, and its verdict
# is $\log p(\text{" A"}) - \log p(\text{" B"})$:

# %%
pair_items = heldout[:30]
pairs = [(i.query, i.choices[i.gold], i.choices[(i.gold + 1) % 4]) for i in pair_items]
print(ev.judge_prompt(*pairs[0])[-160:])
good_first = ev.judge_margins(model, tok, [ev.judge_prompt(q, g, b) for q, g, b in pairs])
good_second = ev.judge_margins(model, tok, [ev.judge_prompt(q, b, g) for q, g, b in pairs])

# %% [markdown]
# ### Exercise 11.9 — position bias · 3 points · difficulty 2 · ~15 min
#
# From the judge's margins on $n$ pairs — `good_first[i]` with the good answer as A, `good_second[i]`
# with it as B (a margin > 0 means the judge says "A") — return `(first_rate, consistency)`:
# the fraction of all $2n$ verdicts that say "A", and the fraction of pairs on which the judge
# picks the *same answer* in both orders. Do not call `ev.position_bias`.

# %% solution="judge"
def position_bias_(good_first: list[float], good_second: list[float]) -> tuple[float, float]:
    """(rate of "A" over both orders, fraction of pairs judged consistently)."""
    ### BEGIN SOLUTION
    n = len(good_first)
    says_a = sum(m > 0 for m in good_first) + sum(m > 0 for m in good_second)
    same_answer = sum((a > 0) == (b <= 0) for a, b in zip(good_first, good_second))
    return says_a / (2 * n), same_answer / n
    ### END SOLUTION


# %% check="judge" points=1
def bias_reference(good_first, good_second):
    margins = iter(list(good_first) + list(good_second))

    def scorer(model, tokenizer, requests):  # replays the margins as a judge's log-likelihoods
        out = []
        for _ in range(len(requests) // 2):
            m = next(margins)
            out += [ev.Loglikelihood(m, False, 1), ev.Loglikelihood(0.0, False, 1)]
        return out
    b = ev.position_bias(None, None, [("q", "g", "b")] * len(good_first), scorer=scorer)
    return b.first_rate, b.consistency


grading.check_function(position_bias_, bias_reference, [
    grading.Case([1.0, 2.0, 0.5], [3.0, 1.0, 0.2], note="a judge that always says A"),
    grading.Case([1.0, -2.0, 0.5], [-3.0, -1.0, 0.2], note="mostly consistent"),
], block=[ev.position_bias, ev.judge_margins], mistakes=wrong.JUDGE,
   hint="consistent: A in the first order and B in the second, or B then A")

# %% hidden="judge" points=2
grading.check_function(position_bias_, bias_reference, [
    grading.Case([-1.0, -2.0], [-1.0, -0.5], note="always B"),
    grading.Case([0.3, -0.1, 2.0, -4.0], [-0.2, -0.3, 1.0, -1.0], note="a mix: A more often first"),
    grading.Case([0.0], [0.0], note="a margin of 0 is B"),
], block=[ev.position_bias, ev.judge_margins], mistakes=wrong.JUDGE)

# %%
bias = grading.prefer_yours(position_bias_, bias_reference, [grading.Case([1.0, -1.0], [2.0, -1.0])],
                            name="position_bias_")
first_rate, consistency = bias(good_first, good_second)
acc_first = np.mean([m > 0 for m in good_first])
acc_second = np.mean([m <= 0 for m in good_second])
print(f"the book model as a judge: says 'A' {first_rate:.0%} of the time, consistent on {consistency:.0%} "
      f"of pairs; right {acc_first:.0%} when the good answer is A, {acc_second:.0%} when it is B")
print(f"(as a multiple-choice scorer on the same items it gets acc_norm "
      f"{np.mean(zero_shot.acc_norm[:len(pair_items)]):.0%}: reading an answer off a prompt is a "
      "different skill)")

# %% [markdown]
# **Long context.** A model with a 512-token window may still not *use* all of it. A needle test
# plants a fact — `SECRET = "<word>"` — at a relative depth of a held-out file that fills the
# window, and asks for it at the end (`assert SECRET ==`, four words to choose from). A copy test
# shows a random token sequence twice: the second copy is predictable only by looking back.

# %% tags=["grading-skip"]
WORDS = ["apple", "river", "stone", "cloud", "maple", "tiger", "ocean", "ember", "lotus", "cedar",
         "pearl", "frost"]
haystack = suite["domains"]["python code"][1]
rng = np.random.default_rng(0)
depths = [0.0, 0.25, 0.5, 0.75, 1.0]
needle_acc = []
for depth in tqdm(depths, desc="needle depth", leave=False):
    items = []
    for j in range(8):
        words_ = list(rng.choice(WORDS, 4, replace=False))
        items.append(ev.needle_item(haystack, words_[0], words_[1:], depth, tok, cfg.block_size - 16, seed=j))
    needle_acc.append(ev.evaluate_mc(model, tok, items, batch_size=8).mean_acc)
first_copy, second_copy = ev.copy_logprobs(model, 200, range(300, 4000), seed=0)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3))
ax1.plot(depths, needle_acc, marker="o")
ax1.axhline(0.25, color="grey", ls=":", label="chance")
ax1.set_xlabel("needle depth (0 = start of the window)"), ax1.set_ylabel("accuracy"), ax1.legend()
ax1.set_title(f"needle in {cfg.block_size - 16} tokens")
ax2.plot(-first_copy.numpy(), label="first copy", alpha=0.7)
ax2.plot(-second_copy.numpy(), label="second copy (200 tokens later)", alpha=0.7)
ax2.set_xlabel("position in the copy"), ax2.set_ylabel("loss (nats)"), ax2.legend()
ax2.set_title("copying a random sequence")
plt.tight_layout()
plt.show()
print("needle accuracy by depth:", ", ".join(f"{d:.2f}: {a:.2f}" for d, a in zip(depths, needle_acc)))
print(f"copy test: mean loss {-first_copy.mean():.2f} nats on the first copy, {-second_copy.mean():.2f} "
      "on the second")

# %% [markdown]
# ## 7. The evaluator, and the book's leaderboard
#
# Everything above rests on one function: the log-likelihood of a continuation given a context,
# for many requests at once. Getting it right is subtle, because characters and tokens do not
# line up:
#
# - **Whitespace belongs to the next word.** BPE tokenizers attach a space to the token after it,
#   so a context ending in a space is scored as if the space began the continuation.
# - **The continuation's tokens are not its own tokenization.** Tokenize `context + continuation`
#   together and take the tokens after the context's; tokenized alone, the join can split
#   differently.
# - **Logits predict the next token**: the score of token $t$ comes from position $t-1$.
# - **An empty context** becomes one prefix token (end-of-text), so the first token is scored.
# - **Too long** inputs keep their last `max_length` tokens.
#
# ### Exercise 11.10 — capstone: the evaluator · 8 points · difficulty 3 · ~60 min
#
# Write `loglikelihood_(model, tokenizer, requests, batch_size=16, max_length=None)` returning, for
# each `ev.Request(context, continuation)` in order, a tuple `(logprob, is_greedy)`: the summed
# natural-log probability of the continuation's tokens, and whether each of them is the argmax at
# its position. The contract is lm-evaluation-harness's (the test suite checks `llmlab.evaluate`
# against `lm-eval` itself):
#
# - tokens come from `tokenizer.encode`; the prefix token is `ev.prefix_token_id(tokenizer)`;
#   `max_length` defaults to `model.config.block_size`;
# - the five rules above; the model sees at most `max_length` tokens, and
#   `model(ids)` on `(batch, seq)` returns logits `(batch, seq, vocab)`;
# - requests are scored in batches of at most `batch_size` rows (right-padded; a causal model's
#   logits at real positions do not see the padding), and the answers match scoring one request
#   at a time to 1e-4;
# - a request whose continuation has no tokens is a `ValueError`.
#
# Do not call `ev.loglikelihood`, `ev.score_tokens` or `ev.encode_pair`.
#
# <details><summary>Hint 1</summary>First turn every request into (context ids, continuation
# ids); then batch token lists; scoring does not need the text any more.</details>
# <details><summary>Hint 2</summary>The model's input is `(context + continuation)[-(max_length + 1):][:-1]`;
# the continuation's log-probabilities sit at the last `len(continuation)` positions of that
# input.</details>
# <details><summary>Hint 3</summary>`log_softmax(-1)`, then `gather` the continuation tokens;
# `is_greedy` compares the same positions' `argmax` with them.</details>

# %% solution="loglikelihood"
@torch.no_grad()
def loglikelihood_(model, tokenizer, requests: list, batch_size: int = 16,
                   max_length: int | None = None) -> list[tuple[float, bool]]:
    """(log p(continuation | context), is_greedy) for each request, lm-eval's conventions."""
    ### BEGIN SOLUTION
    max_length = max_length or model.config.block_size
    prefix = ev.prefix_token_id(tokenizer)
    pairs = []
    for r in requests:
        context, continuation = r.context, r.continuation
        if context == "":
            ctx, cont = [prefix], tokenizer.encode(continuation)
        else:
            n_spaces = len(context) - len(context.rstrip())
            if n_spaces:
                context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
            whole, ctx = tokenizer.encode(context + continuation), tokenizer.encode(context)
            cont = whole[len(ctx):]
        if not cont:
            raise ValueError(f"the continuation {r.continuation!r} has no tokens")
        pairs.append(((ctx + cont)[-(max_length + 1):][:-1], cont))
    device = next(model.parameters()).device
    results: list[tuple[float, bool]] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        width = max(len(ids) for ids, _ in chunk)
        batch = torch.zeros(len(chunk), width, dtype=torch.long, device=device)
        for row, (ids, _) in enumerate(chunk):
            batch[row, :len(ids)] = torch.tensor(ids, device=device)
        logp = model(batch).float().log_softmax(-1)
        for row, (ids, cont) in enumerate(chunk):
            span = logp[row, len(ids) - len(cont):len(ids)]
            target = torch.tensor(cont, device=device)
            token_lp = span.gather(-1, target[:, None]).squeeze(-1)
            results.append((float(token_lp.sum()), bool((span.argmax(-1) == target).all())))
    return results
    ### END SOLUTION


# %% check="loglikelihood" points=4
def loglikelihood_reference(model, tokenizer, requests, batch_size=16, max_length=None):
    return [(r.logprob, r.is_greedy) for r in ev.loglikelihood(model, tokenizer, requests, batch_size, max_length)]


def _as_tuples(fn):
    return lambda *a, **k: [(r.logprob, r.is_greedy) for r in fn(*a, **k)]


LL_MISTAKES = {label: _as_tuples(f) for label, f in wrong.LOGLIKELIHOOD.items()}
LL_BLOCK = [ev.loglikelihood, ev.score_tokens, ev.encode_pair]
R = ev.Request
grading.check_function(loglikelihood_, loglikelihood_reference, [
    grading.Case(book, book_tok, [R("def add(a, b):\n    return", " a + b"), R("import", " os")], note="two requests"),
    grading.Case(book, book_tok, [R("x = 1\nif x == ", "1:"), R("for i in ", "range(3):")],
                 note="the context ends with a space"),
    grading.Case(book, book_tok, [R("", "import os")], note="an empty context"),
], block=LL_BLOCK, mistakes=LL_MISTAKES, atol=1e-4, rtol=1e-4,
   hint="split the joint encoding; move trailing spaces; position t-1 predicts token t")

# %% hidden="loglikelihood" points=4
_long = "value = compute(value)\n" * 120  # far more than 512 tokens
grading.check_function(loglikelihood_, loglikelihood_reference, [
    grading.Case(book, book_tok, [R(heldout[i].query, " " + c) for i in range(2) for c in heldout[i].choices],
                 3, note="eight choices in batches of 3"),
    grading.Case(book, book_tok, [R(_long, " value")], note="a context longer than the window"),
    grading.Case(book, book_tok, [R(_long[:300], " x"), R("", "def"), R("a =", " 1")], 2, 64,
                 note="max_length 64"),
], block=LL_BLOCK, mistakes=LL_MISTAKES, atol=1e-4, rtol=1e-4)

# %% [markdown]
# From here on, your evaluator scores the book's leaderboard (if it passes). The variants are what
# the book did to its model: a LoRA fine-tune on the training split's answers (chapter 05), DPO
# toward the right answer (06), 4-bit weights by round-to-nearest and by GPTQ (07), and a 2-bit
# KIVI KV cache (08). The two trained variants are trained here with fewer steps than the full
# leaderboard's (`llmlab eval --leaderboard` or `python -m bench.bench_leaderboard`: 80 LoRA and 30
# DPO steps on all 400 training-split items, or `FULL = True`), and cached under
# `$LLMLAB_CACHE/evaluate` for the next run.

# %% tags=["grading-skip", "nbval-ignore-output"]
evaluator = grading.prefer_yours(loglikelihood_, loglikelihood_reference,
                                 [grading.Case(book, book_tok, [R("def f():\n    return", " 1"), R("import ", "os")], 2)],
                                 name="loglikelihood_", atol=1e-4)


def scorer(model_, tokenizer, requests, batch_size=16, progress=None):
    """The evaluator in the shape llmlab.evaluate's tasks call."""
    return [ev.Loglikelihood(lp, greedy, 0)
            for lp, greedy in evaluator(model_, tokenizer, requests, batch_size)]


from llmlab.evaluate.leaderboard import SuiteConfig, book_variants, leaderboard, table_rows  # noqa: E402

variants = book_variants(book, book_tok, suite, train_steps=(80, 30) if FULL else (30, 12),
                         n_train=None if FULL else 96)
config = SuiteConfig(n_items=48, n_docs=2, n_resamples=1000)
rows = leaderboard(variants, book_tok, suite, config, scorer=scorer,
                   progress=lambda it: tqdm(it, desc="leaderboard", leave=False))
display(Markdown(ev.markdown_table(rows)))

# %% [markdown]
# Read the paired column: on a few dozen items the intervals of single scores are wide, and the
# paired difference from the base model is the narrower test. The full table (more items and
# documents, `python -m bench.bench_leaderboard`, in the book's benchmarks page) narrows them.

# %% tags=["grading-skip", "nbval-ignore-output"]
base_row = rows[0]
for r in rows[1:]:
    d = r.delta_acc_norm
    verdict = "better" if d.low > 0 else "worse" if d.high < 0 else "not distinguishable"
    print(f"{r.name:<34} Δ acc_norm {d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}] -> {verdict}; "
          f"bits per byte {r.bits_per_byte.estimate:.3f} (base {base_row.bits_per_byte.estimate:.3f})")
half = np.mean([(r.acc_norm.high - r.acc_norm.low) / 2 for r in rows])
moved = [r.name for r in rows[1:] if r.delta_acc_norm.low > 0 or r.delta_acc_norm.high < 0]
costlier = [r.name for r in rows[1:] if r.bits_per_byte.estimate > base_row.bits_per_byte.estimate]
print(f"on {config.n_items} items an acc_norm interval is ±{half:.2f} wide; variants whose acc_norm moved "
      f"beyond doubt: {', '.join(moved) or 'none'}; variants with more bits per byte than the base: "
      f"{len(costlier)} of {len(rows) - 1}")

# %% [markdown]
# The full leaderboard, produced by `python -m bench.bench_leaderboard` (also `llmlab eval --leaderboard`):

# %% tags=["nbval-ignore-output"]
from pathlib import Path  # noqa: E402

board = Path("../../bench/results/leaderboard.md")
display(Markdown(board.read_text() if board.exists() else "(run `python -m bench.bench_leaderboard`)"))

# %% [markdown]
# ## 8. How the industry does it
#
# - **EleutherAI's lm-evaluation-harness** (`lm-eval`) runs most open leaderboards (Hugging Face's
#   Open LLM Leaderboard used it): tasks as YAML, the log-likelihood conventions of this chapter,
#   `acc`/`acc_norm`, `bits_per_byte`, few-shot sampling with a fixed seed. `tests/evaluate/
#   test_lm_eval_parity.py` runs it offline on the book's model exported with `to_hf` and gets the
#   same numbers as `llmlab.evaluate`. **OpenCompass** (Shanghai AI Lab) covers C-Eval, CMMLU and
#   long-context suites such as LVEval with the same two modes (perplexity-style and generation);
#   **HELM** (Stanford) reports many metrics per scenario.
# - **Code**: HumanEval and MBPP report pass@1 with $n$ = 20–200 samples and the unbiased estimator;
#   execution happens in containers or gVisor sandboxes, never in the evaluator's process.
#   LiveCodeBench uses problems published after a model's training cut-off to avoid contamination.
# - **Contamination** reports are now part of model cards (GPT-4, Llama 2 and 3 publish n-gram
#   overlap analyses and "clean subset" scores); Min-K% and its successors are used when the
#   training data are private.
# - **Statistics**: Anthropic's "Adding Error Bars to Evals" (Miller, 2024) recommends clustered
#   standard errors, paired differences and power analysis — what section 5 did.
# - **Judges**: MT-Bench and AlpacaEval 2 (length-controlled) judge with strong models, swap
#   positions and correct for length; Chatbot Arena replaces the judge with human pairwise votes and
#   a Bradley–Terry model (chapter 06's reward model is the same estimator).
# - **Long context**: RULER and LongBench test far beyond the needle; a model can pass the needle
#   at every depth and still fail multi-hop retrieval.
#
# ## Summary
#
# - Likelihood metrics need a unit: bits per byte compares across tokenizers; rolling windows
#   score documents longer than the context, with a context-vs-cost trade.
# - Multiple choice by log-likelihood is two metrics: `acc` and `acc_norm` can disagree by many
#   points on the same log-likelihoods; few-shot scores move with the choice of shots.
# - pass@k needs many samples and the unbiased estimator; programs run in a separate process
#   under limits.
# - A held-out split, n-gram overlap and a membership signal tell whether a score measures memory; a
#   membership signal must be calibrated for difficulty, and its two sets alike in all but membership.
# - Every score is a sample: give its interval, compare models paired on the same items, and count
#   the items a difference needs before believing it.
#
# ## Further reading
#
# - Gao et al., *The Language Model Evaluation Harness* ([arXiv:2405.14782](https://arxiv.org/abs/2405.14782)); Biderman et al., *Lessons from the Trenches on Reproducible Evaluation of Language Models* (same paper).
# - Chen et al., *Evaluating Large Language Models Trained on Code* (HumanEval, pass@k) ([arXiv:2107.03374](https://arxiv.org/abs/2107.03374)).
# - Shi et al., *Detecting Pretraining Data from Large Language Models* (Min-K%) ([arXiv:2310.16789](https://arxiv.org/abs/2310.16789)); Carlini et al., *Extracting Training Data from Large Language Models* (zlib and reference-model calibration) ([arXiv:2012.07805](https://arxiv.org/abs/2012.07805)); Zhang et al., *Min-K%++: Improved Baseline for Detecting Pre-Training Data from Large Language Models* ([arXiv:2404.02936](https://arxiv.org/abs/2404.02936)); Duan et al., *Do Membership Inference Attacks Work on Large Language Models?* ([arXiv:2402.07841](https://arxiv.org/abs/2402.07841)).
# - Brown et al., *Language Models are Few-Shot Learners*, appendix C on contamination ([arXiv:2005.14165](https://arxiv.org/abs/2005.14165)).
# - Miller, *Adding Error Bars to Evals* ([arXiv:2411.00640](https://arxiv.org/abs/2411.00640)).
# - Zheng et al., *Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena* ([arXiv:2306.05685](https://arxiv.org/abs/2306.05685)).
# - Zhao et al., *Calibrate Before Use* ([arXiv:2102.09690](https://arxiv.org/abs/2102.09690)); Hsieh et al., *RULER* ([arXiv:2404.06654](https://arxiv.org/abs/2404.06654)).
