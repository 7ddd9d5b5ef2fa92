# %% [markdown]
# # 06 · Alignment: SFT, reward models, PPO, DPO and GRPO
#
# A pretrained model continues text. An assistant answers, prefers good answers to bad ones,
# and gets verifiable things right. This chapter walks the post-training pipeline that turns one
# into the other — supervised fine-tuning, preference data and a reward model, reinforcement
# learning with PPO, the shortcut DPO takes, and GRPO as used for reasoning models — in
# `llmlab.align`, and runs each stage on the book's model.
#
# **You will learn to**
# 1. format chat data, train only on the assistant's tokens, and pack examples without letting
#    them attend to each other;
# 2. train a Bradley–Terry reward model and measure its accuracy on held-out pairs;
# 3. derive the policy gradient, add a baseline, and build PPO (KL-penalised reward, GAE,
#    clipping) for a language model;
# 4. derive DPO from the KL-regularised RLHF objective and write its loss;
# 5. build GRPO yourself — completion log-probs, group rollouts through the KV cache, the
#    loss with its k3 KL — and run the chapter's GRPO on your trainer;
# 6. see what the KL coefficient β trades, and watch a policy exploit an imperfect reward.

# %% [markdown]
# **Budget:** ~2 min on 2 CPU cores (at most 3) · peak RAM ~1 GB. No GPU and no network needed.

# %% tags=["nbval-ignore-output"]
import copy
import math

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import llmlab.align as al
from llmlab import grading
from llmlab.data import load_documents
from llmlab.model import GPT, GPTConfig, SamplingParams, generate, load_book_model
from llmlab.nn import StepContext
from llmlab.tokenizer import apply_chat_template
from llmlab.utils import seed_all

seed_all(0)
torch.set_num_threads(1)  # the book's model is small: its ops run fastest unsplit, on one thread
base, tok = load_book_model()
EOS = tok.special_ids["<|endoftext|>"]
print(f"the book's model: {base.num_params() / 1e6:.2f} M parameters, vocabulary {tok.vocab_size}")

# %% [markdown]
# The book's model was pretrained on the Python standard library (chapter 02). It has never seen
# a conversation, so the "assistant" we build is a small code assistant, and the RL tasks are
# about code. Everything below runs on it; the runs are short (seconds), so the effects are
# small but measured.
#
# ## 1. Supervised fine-tuning: chat format, assistant-only loss, packing
#
# SFT is next-token prediction on demonstrations, with two twists. **The format**: chapter 01's
# ChatML template wraps every turn in `<|im_start|>role\n … <|im_end|>`; the base model's
# tokenizer lacks those two tokens, so `al.add_chat_tokens` appends them and grows the embedding
# (new rows start at the mean embedding). **The mask**: the loss is computed only where the
# *assistant* wrote — its replies and the `<|im_end|>` that ends them (so it learns to stop) —
# never on the system prompt or the user's words, which the model should condition on, not
# imitate:
#
# $$\mathcal L_\text{SFT} = -\frac{1}{\sum_t m_t}\sum_t m_t \log \pi_\theta(x_{t+1}\mid x_{\le t}),
# \qquad m_t = 1 \text{ iff } x_{t+1} \text{ is an assistant token.}$$

# %%
model, chat_tok = al.add_chat_tokens(copy.deepcopy(base), tok)
CONVS = [
    [{"role": "user", "content": "Length of a list?"}, {"role": "assistant", "content": "len(items)"}],
    [{"role": "user", "content": "Largest value?"}, {"role": "assistant", "content": "max(values)"}],
    [{"role": "system", "content": "Answer with code."}, {"role": "user", "content": "Sort it."},
     {"role": "assistant", "content": "sorted(items)"}],
    [{"role": "user", "content": "Sum of a list?"}, {"role": "assistant", "content": "sum(items)"},
     {"role": "user", "content": "And the mean?"}, {"role": "assistant", "content": "sum(items) / len(items)"}],
]
enc = apply_chat_template(chat_tok, CONVS[3])
print("tokens:", len(enc.ids), "· trained on:", sum(enc.assistant_mask))
print("".join(f"[{chat_tok.decode([i])}]" if m else chat_tok.decode([i])
              for i, m in zip(enc.ids, enc.assistant_mask)).replace("\n", "⏎"))

# %% [markdown]
# The bracketed tokens are the ones with a loss. The labels are the *next* token, so with
# `mask[t]` = 1 on assistant tokens, `labels[t] = ids[t+1]` where `mask[t+1]` is 1 and -100
# (ignored) elsewhere, and the last position has no next token.
#
# ### Exercise 6.1 — assistant-only labels · 2 points · difficulty 1 · ~5 min
#
# Write `sft_labels(ids, assistant_mask)`: two equal-length lists of ints in, one list of labels
# out (same length): `labels[t] = ids[t+1]` if `assistant_mask[t+1] == 1`, else `-100`; the last
# label is `-100`. Lists of different lengths raise `ValueError`.
#
# <details><summary>Hint 1</summary>Loop over t from 0 to len(ids) - 2 and look one token ahead.</details>
# <details><summary>Hint 2</summary>Do not forget the final -100: the last token predicts nothing.</details>

# %% solution="sft_labels"
def sft_labels(ids: list[int], assistant_mask: list[int]) -> list[int]:
    """ids, assistant_mask: length T -> labels: length T (-100 where no loss)."""
    ### BEGIN SOLUTION
    if len(ids) != len(assistant_mask):
        raise ValueError(f"ids has {len(ids)} tokens but assistant_mask {len(assistant_mask)}")
    return [ids[t + 1] if assistant_mask[t + 1] else -100 for t in range(len(ids) - 1)] + [-100]
    ### END SOLUTION


# %% check="sft_labels" points=1
from llmlab_book.ch06_align import CATALOGUE


def _ref_sft_labels(ids, assistant_mask):
    if len(ids) != len(assistant_mask):
        raise ValueError("lengths differ")
    return [ids[t + 1] if assistant_mask[t + 1] else -100 for t in range(len(ids) - 1)] + [-100]


grading.check_function(sft_labels, _ref_sft_labels, cases=[
    grading.Case([5, 6, 7, 8], [0, 0, 1, 1], note="reply at the end"),
    grading.Case(enc.ids, enc.assistant_mask, note="a two-turn ChatML conversation"),
], block=[al.sft_example], mistakes=CATALOGUE.mistakes("sft_labels"),
    hint="the label at t is the token at t+1, kept only if t+1 is an assistant token")

# %% hidden="sft_labels" points=1
### BEGIN HIDDEN TESTS
grading.check_function(sft_labels, _ref_sft_labels, cases=[
    grading.Case([1, 2], [0, 0], note="no assistant tokens: nothing is trained"),
    grading.Case([1, 2, 3, 4, 5], [1, 1, 0, 1, 0], note="mask starting at 0 and gaps"),
    grading.Case(*[apply_chat_template(chat_tok, CONVS[2]).ids, apply_chat_template(chat_tok, CONVS[2]).assistant_mask],
                 note="with a system prompt"),
    grading.Case([1, 2, 3], [0, 1], note="lists of different lengths"),
], block=[al.sft_example], mistakes=CATALOGUE.mistakes("sft_labels"))
### END HIDDEN TESTS

# %% [markdown]
# **Packing.** Chat examples are short; padding each to the longest wastes compute. Packing
# concatenates several into one row — but then a plain causal mask lets example 2 attend to
# example 1, and positions keep counting across the boundary. Correct packing (Krell et al.
# 2021) uses a **block-diagonal causal mask** and **restarts positions** at every document, so
# each example is computed exactly as if it were alone. `llmlab`'s GPT takes a per-step context,
# `llmlab.nn.StepContext(positions, mask)`, whose mask the attention layers use;
# `al.packed_context(packed)` builds it from a packed batch.
#
# ### Exercise 6.2 — the packed-documents mask · 2 points · difficulty 2 · ~10 min
#
# Write `document_mask(doc_ids)`: `doc_ids` `(batch, T)` long (document index of each token,
# -1 for padding) → bool `(batch, 1, T, T)`, True where query `i` may attend to key `j`: `j <= i`
# and same document. (Padding tokens then see only padding, which is harmless.) `doc_ids` that
# is not 2-D raises `ValueError`.
#
# <details><summary>Hint 1 (the idea)</summary>Two conditions, each a (T, T) comparison: "same document" and "not in the future".</details>
# <details><summary>Hint 2 (the structure)</summary>Broadcast doc_ids[:, :, None] against doc_ids[:, None, :]; AND with a lower-triangular matrix; add the head axis.</details>

# %% solution="document_mask"
def document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """doc_ids: (batch, T) -> (batch, 1, T, T) bool, True = may attend."""
    ### BEGIN SOLUTION
    if doc_ids.dim() != 2:
        raise ValueError(f"doc_ids must be (batch, T), got shape {tuple(doc_ids.shape)}")
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return ((doc_ids[:, :, None] == doc_ids[:, None, :]) & causal)[:, None]
    ### END SOLUTION


# %% check="document_mask" points=1
def _ref_document_mask(doc_ids):
    if doc_ids.dim() != 2:
        raise ValueError("doc_ids must be (batch, T)")
    return al.document_causal_mask(doc_ids)


grading.check_function(document_mask, _ref_document_mask, cases=[
    grading.Case(torch.tensor([[0, 0, 1, 1, 1]]), note="two documents"),
    grading.Case(torch.tensor([[0, 0, 0, -1], [0, 1, 2, 2]]), note="padding and three documents"),
], block=[torch.block_diag, al.document_causal_mask], mistakes=CATALOGUE.mistakes("document_mask"),
    hint="a token sees earlier tokens of its own document only")

# %% hidden="document_mask" points=1
### BEGIN HIDDEN TESTS
grading.check_function(document_mask, _ref_document_mask, cases=[
    grading.Case(torch.zeros(2, 6, dtype=torch.long), note="one document: plain causal"),
    grading.Case(torch.arange(5)[None], note="every token its own document: the diagonal"),
    grading.Case(torch.zeros(5, dtype=torch.long), note="a 1-D doc_ids"),
], block=[torch.block_diag, al.document_causal_mask], mistakes=CATALOGUE.mistakes("document_mask"))
### END HIDDEN TESTS

# %% [markdown]
# Now pack the four conversations into one row, and check that each document's logits are the
# logits it gets alone — and that the naive causal mask would have leaked. The cell uses your
# `document_mask` when it agrees with `llmlab`'s (`use_yours` below), `llmlab`'s otherwise.

# %%
def use_yours(fn, ref, *args):
    """Your function's result when it runs and matches llmlab's reference here; else llmlab's."""
    want = ref(*args)
    try:
        got = fn(*args)
        if torch.is_tensor(got) and got.shape == want.shape and torch.equal(got, want):
            print(f"using your {fn.__name__}")
            return got
    except Exception:  # an unfinished exercise must not stop the chapter
        pass
    print(f"using llmlab's {ref.__name__} (your {fn.__name__} is not passing yet)")
    return want


examples = [al.sft_example(chat_tok, c) for c in CONVS]
packed = al.pack_examples(examples, sum(len(i) for i, _ in examples), pad_id=EOS)
print("row of", packed.ids.shape[1], "tokens; documents", packed.doc_ids[0].unique().tolist(),
      "; positions restart:", packed.positions[0, :12].tolist(), "…")
model.eval()
with torch.no_grad():
    ctx = StepContext(packed.positions, use_yours(document_mask, al.document_causal_mask, packed.doc_ids))
    with_mask = model(packed.ids, ctx)
    naive = model(packed.ids)
    at, worst_ok, worst_leak = 0, 0.0, 0.0
    for ids, _ in examples:
        alone = model(torch.tensor([ids]))[0]
        worst_ok = max(worst_ok, float((with_mask[0, at:at + len(ids)] - alone).abs().max()))
        worst_leak = max(worst_leak, float((naive[0, at:at + len(ids)] - alone).abs().max()))
        at += len(ids)
assert worst_ok < 1e-3 < worst_leak
print(f"max |logit difference| vs. each document alone: packed with mask < 1e-3; "
      f"naive causal mask {worst_leak:.1f}")

# %% [markdown]
# A few steps of SFT on the packed row. (Four conversations are a demonstration of the
# mechanics, not a dataset: the loss falls because the model memorises them.)

# %%
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
sft_losses = []
for step in tqdm(range(15), desc="SFT"):
    loss = al.packed_sft_loss(model, packed)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sft_losses.append(loss.item())
print(f"SFT loss on assistant tokens: {sft_losses[0]:.2f} -> {sft_losses[-1]:.2f} nats")

# %% [markdown]
# ## 2. Preference data and the reward model
#
# Demonstrations are expensive and cap the model at the demonstrator. Comparisons are cheaper:
# show two responses $y_w \succ y_l$ to a prompt $x$ and record which is better. The
# **Bradley–Terry** model says a scalar reward $r$ explains the choices,
#
# $$P(y_w \succ y_l \mid x) = \sigma\big(r(x, y_w) - r(x, y_l)\big),\qquad
# \mathcal L_\text{RM} = -\log\sigma\big(r(x,y_w) - r(x,y_l)\big),$$
#
# and a **reward model** — the LM trunk with a linear head that reads the last token — is fit by
# maximum likelihood (InstructGPT, §3.5). Only differences matter: adding a constant to $r$
# changes nothing.
#
# Our preference data: a window of real standard-library code as the prompt; its true
# continuation (chosen) against the same tokens shuffled (rejected). A good reward model of
# "plausible code" must order them.

# %%
texts = [d.text for d in load_documents()[:40]]
pairs = al.code_preference_pairs(tok, texts, 320, prompt_len=12, response_len=6, seed=0)
train_pairs, held_out = pairs[:256], pairs[256:]
p, c, r = held_out[0]
print("prompt:  ", repr(tok.decode(p)))
print("chosen:  ", repr(tok.decode(c)))
print("rejected:", repr(tok.decode(r)))

# %% [markdown]
# ### Exercise 6.3 — predict first: the Bradley–Terry loss · 2 points · difficulty 1 · ~3 min
#
# Before the reward model trains: a freshly initialised head outputs the same reward for every
# sequence. What is the loss of one pair then, in nats (3 decimals)? And what is it when the reward
# model scores the chosen response 2 higher than the rejected one? Return both, computed by hand
# (no torch).

# %% solution="predict_bt"
def predict_bt() -> tuple[float, float]:
    """(loss at equal rewards, loss at a margin of 2), in nats."""
    ### BEGIN SOLUTION
    return math.log(2), math.log(1 + math.exp(-2))
    ### END SOLUTION


# %% check="predict_bt" points=1
bt_margins = torch.tensor([0.0, 2.0])  # r_chosen - r_rejected: equal rewards, then a margin of 2
grading.check_prediction(predict_bt, tuple((-F.logsigmoid(bt_margins)).tolist()),
                         what="(loss at equal rewards, loss at a margin of 2)", atol=2e-3, rtol=0,
                         mistakes=CATALOGUE.mistakes("predict_bt"),
                         hint="return two losses in nats; the loss of a pair is -log sigmoid(margin)")

# %% hidden="predict_bt" points=1
### BEGIN HIDDEN TESTS
grading.check_function(predict_bt, lambda: (math.log(2), math.log1p(math.exp(-2))),
                       cases=[grading.Case(note="your two losses")], atol=2e-3, rtol=0,
                       mistakes=CATALOGUE.mistakes("predict_bt"), hint="-log sigmoid(d) = log(1 + exp(-d))")
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 6.4 — the Bradley–Terry loss · 2 points · difficulty 1 · ~5 min
#
# Write `bt_loss(r_chosen, r_rejected)`: `(batch,)` rewards → the mean of
# $-\log\sigma(r_w - r_l)$, computed stably (it must not overflow for a difference of ±100).
# Rewards of different shapes raise `ValueError` (no broadcasting).
#
# <details><summary>Hint 1 (the idea)</summary>log(sigmoid(x)) computed in two steps is -inf for x = -100: sigmoid underflows to 0 first.</details>
# <details><summary>Hint 2 (the key formula)</summary>-log sigmoid(x) = softplus(-x), which torch computes stably.</details>

# %% solution="bt_loss"
def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """(batch,), (batch,) -> scalar mean of -log sigmoid(r_chosen - r_rejected)."""
    ### BEGIN SOLUTION
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"r_chosen {tuple(r_chosen.shape)} and r_rejected {tuple(r_rejected.shape)} differ")
    return F.softplus(r_rejected - r_chosen).mean()
    ### END SOLUTION


# %% check="bt_loss" points=1
def _ref_bt_loss(r_chosen, r_rejected):
    if r_chosen.shape != r_rejected.shape:
        raise ValueError("shapes differ")
    return al.bradley_terry_loss(r_chosen, r_rejected)


grading.check_function(bt_loss, _ref_bt_loss, cases=[
    grading.Case(torch.tensor([1.0, 0.5]), torch.tensor([0.0, 1.0]), note="one right, one wrong"),
    grading.Case(torch.tensor([100.0]), torch.tensor([-100.0]), note="stability: a huge margin"),
    grading.Case(torch.tensor([-100.0, 0.0]), torch.tensor([100.0, 0.0]), note="stability: a huge wrong margin"),
], block=[al.bradley_terry_loss], mistakes=CATALOGUE.mistakes("bt_loss"),
    hint="the loss is -log sigmoid(difference), averaged")

# %% hidden="bt_loss" points=1
### BEGIN HIDDEN TESTS
grading.check_function(bt_loss, _ref_bt_loss, cases=[
    grading.Case(torch.tensor([-60.0, 3.0]), torch.tensor([60.0, -3.0]), note="a huge wrong margin"),
    grading.Case(torch.randn(7), torch.randn(7), note="random"),
    grading.Case(torch.zeros(3), torch.zeros(1), note="shapes that would broadcast"),
], block=[al.bradley_terry_loss], mistakes=CATALOGUE.mistakes("bt_loss"))
### END HIDDEN TESTS

# %% [markdown]
# Train the reward model (the book model's trunk plus a zero-initialised head) for a few dozen
# steps and measure held-out accuracy — the fraction of unseen pairs ordered correctly.

# %%
def held_out_accuracy(rm) -> float:
    rc = al.reward_scores(rm, [p + c for p, c, _ in held_out], EOS)
    rr = al.reward_scores(rm, [p + r for p, _, r in held_out], EOS)
    return al.preference_accuracy(rc, rr)


torch.manual_seed(0)
rm = al.ScalarHeadModel(base)
acc_before = held_out_accuracy(rm)
rm_losses = al.train_reward_model(rm, [p + c for p, c, _ in train_pairs], [p + r for p, _, r in train_pairs],
                                  EOS, steps=30, batch_size=16, lr=3e-4, progress=tqdm)
print(f"held-out accuracy: {acc_before:.2f} before -> {held_out_accuracy(rm):.2f} after "
      f"({len(held_out)} pairs); loss {rm_losses[0]:.2f} -> {rm_losses[-1]:.2f}; "
      f"a {base.num_params() / 1e6:.2f} M-parameter trunk, {len(rm_losses)} steps")

# %% [markdown]
# (Before training every score is equal, and a tie counts as wrong: accuracy 0.) Judging
# whether six tokens are shuffled from one number at the last position is not easy for a
# trunk this small (its size is printed above) after 30 steps; production reward models reach roughly 65–75% on human
# preference data, where labellers themselves agree about as often.
#
# ## 3. Policy gradients: a bandit, REINFORCE and a baseline
#
# Reinforcement learning maximises $J(\theta) = \mathbb E_{y\sim\pi_\theta}[R(y)]$. The reward
# is not differentiable, but the **score-function** identity moves the gradient onto the policy:
#
# $$\nabla_\theta J = \mathbb E_{y\sim\pi_\theta}\big[(R(y) - b)\,\nabla_\theta \log\pi_\theta(y)\big]$$
#
# for any baseline $b$ that does not depend on $y$ (its term has expectation 0). A language model
# is a policy whose action is a whole sequence; the simplest case is a **bandit**: one step,
# $K$ arms. Here are 5 arms with rewards 0, 0.2, …, 0.8 plus noise, and REINFORCE with and
# without the mean reward as baseline.

# %%
def bandit_run(baseline: bool, steps: int = 150, batch: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8]) + 5.0  # a large common offset: what baselines remove
    logits = torch.zeros(5, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=0.05)
    history, grad_var = [], []
    for _ in range(steps):
        probs = logits.softmax(0)
        a = torch.multinomial(probs.detach(), batch, replacement=True, generator=g)
        r = means[a] + 0.5 * torch.randn(batch, generator=g)
        lp = probs.log()[a]
        b = r.mean() if baseline else 0.0
        grads = torch.stack([torch.autograd.grad(-(r[i] - b) * lp[i], logits, retain_graph=True)[0]
                             for i in range(batch)])
        grad_var.append(float(grads.var(0).sum()))
        loss = al.reinforce_loss(lp, r, b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float((probs.detach() * (means - 5.0)).sum()))
    return history, sum(grad_var) / len(grad_var)


no_base, var_no = bandit_run(False)
with_base, var_b = bandit_run(True)
print(f"expected reward after 150 steps: {no_base[-1]:.2f} without a baseline, {with_base[-1]:.2f} with one "
      f"(best arm 0.80); variance of the per-sample gradient {var_no:.1f} vs {var_b:.2f} "
      f"({var_no / var_b:.0f}x smaller with the baseline)")
# what the prose below says: neither run is near the best arm yet, they end close to each other,
# and the baseline's gain is in the variance
assert max(no_base[-1], with_base[-1]) < 0.7 and abs(no_base[-1] - with_base[-1]) < 0.1 and var_no > 10 * var_b

# %% [markdown]
# Same expected gradient, far less variance (the ratio is printed above): with every reward near
# 5, the unbaselined estimate pushes *every* sampled arm up, and only the small differences
# between pushes carry signal. After 150 steps neither run is near the best arm (0.80), and they
# end close to each other: on this bandit the baseline's benefit shows in the variance, not yet
# in the mean. On a language model, where one sample is one sequence and the batch is small,
# that variance is the difference between learning and not.
#
# ## 4. PPO for language models
#
# RLHF (Ziegler et al. 2019; InstructGPT) optimises the reward model's score while staying close
# to the SFT model $\pi_\text{ref}$:
#
# $$\max_\pi\ \mathbb E_{x,\,y\sim\pi}\big[r(x,y)\big] - \beta\,\mathrm{KL}\big(\pi(\cdot|x)\,\|\,\pi_\text{ref}(\cdot|x)\big).$$
#
# PPO treats every generated token as an action. Per token the reward is
# $r_t = -\beta(\log\pi(y_t) - \log\pi_\text{ref}(y_t))$, plus the sequence score on the last
# token. A **value model** $V$ (the trunk plus a scalar head) predicts the return, and
# **GAE** (Schulman et al. 2015) blends its TD errors $\delta_t = r_t + \gamma V_{t+1} - V_t$
# into an advantage,
#
# $$\hat A_t = \sum_{l\ge 0}(\gamma\lambda)^l\,\delta_{t+l} \;=\; \delta_t + \gamma\lambda \hat A_{t+1},$$
#
# ($\lambda=0$: one-step TD, low variance, biased by $V$; $\lambda=1$: Monte-Carlo return minus
# $V$). Advantages are then **whitened** (zero mean, unit variance over the batch).
#
# ### Exercise 6.5 — GAE · 3 points · difficulty 3 · ~25 min
#
# Write `gae_advantages(rewards, values, mask, gamma, lam)` → `(advantages, returns)`.
#
# - **Shapes:** `rewards`, `values`, `mask` all `(batch, T)`; `mask` is float, 1 on real tokens,
#   and its ones are a prefix of each row (rows have different lengths). Both outputs `(batch, T)`.
# - **Invariants:** an episode ends at its row's last real token: nothing after it (value or
#   reward) may influence any advantage, and the value after the end is 0; positions after the
#   end get advantage 0; `returns = advantages + values` with the values after the end counted as 0.
#   With `lam = 1` the advantage is the discounted return minus the value; with `lam = 0` it is the
#   one-step TD error.
# - **Errors:** inputs of different shapes raise `ValueError`.
# - **Forbidden:** `llmlab.align.gae`.
#
# <details><summary>Hint 1 (the idea)</summary>The formula above is a recursion backwards in time: each advantage is known once the next one is.</details>
# <details><summary>Hint 2 (the structure)</summary>Clear what lies after each row's end first; then a single backward pass over t computes every row at once, carrying one running quantity.</details>
# <details><summary>Hint 3 (the key formula)</summary>delta_t = r_t + gamma V_{t+1} - V_t (V_{t+1} = 0 past the last column); A_t = delta_t + gamma lam A_{t+1}.</details>

# %% solution="gae_advantages"
def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                   gamma: float = 1.0, lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards, values, mask: (batch, T) -> (advantages, returns), each (batch, T)."""
    ### BEGIN SOLUTION
    if not rewards.shape == values.shape == mask.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask "
                         f"{tuple(mask.shape)} must all be (batch, T)")
    values, rewards = values * mask, rewards * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(running)
        running = rewards[:, t] + gamma * next_v - values[:, t] + gamma * lam * running
        adv[:, t] = running
    return adv, adv + values
    ### END SOLUTION


# %% check="gae_advantages" points=2
_g = torch.Generator().manual_seed(1)
_mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]])
grading.check_function(gae_advantages, al.gae, cases=[
    grading.Case(torch.tensor([[0.0, 0, 0, 1]]), torch.zeros(1, 4), torch.ones(1, 4), 1.0, 1.0,
                 note="a single final reward, no value: the return"),
    grading.Case(torch.randn(2, 4, generator=_g), torch.randn(2, 4, generator=_g), _mask, 0.9, 0.8,
                 note="two rows of different lengths"),
], block=[al.gae], mistakes=CATALOGUE.mistakes("gae_advantages"),
    hint="A_t = delta_t + gamma * lam * A_{t+1}; the value after the last real token is 0")

# %% hidden="gae_advantages" points=1
### BEGIN HIDDEN TESTS
grading.check_function(gae_advantages, al.gae, cases=[
    grading.Case(torch.randn(3, 6, generator=_g), torch.randn(3, 6, generator=_g),
                 torch.tensor([[1.0] * 6, [1.0] * 3 + [0.0] * 3, [1.0] + [0.0] * 5]), 1.0, 0.0,
                 note="lambda = 0: one-step TD errors"),
    grading.Case(torch.randn(2, 5, generator=_g), torch.randn(2, 5, generator=_g), torch.ones(2, 5), 0.99, 0.95),
    grading.Case(torch.zeros(2, 5), torch.zeros(2, 4), torch.ones(2, 5), 1.0, 0.95, note="shapes that disagree"),
], block=[al.gae], mistakes=CATALOGUE.mistakes("gae_advantages"))
### END HIDDEN TESTS

# %% [markdown]
# **The clipped objective.** Each batch of rollouts is reused for a few gradient steps, so the
# policy drifts from the one that sampled. PPO (Schulman et al. 2017) weighs by the ratio
# $\rho_t = \pi_\theta(y_t)/\pi_\text{old}(y_t)$ and removes the incentive to move it beyond
# $1\pm\epsilon$:
#
# $$\mathcal L^\text{CLIP} = \mathbb E_t\big[\max\big(-\hat A_t\rho_t,\ -\hat A_t\,\mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon)\big)\big].$$
#
# ### Exercise 6.6 — the PPO clipped policy loss · 3 points · difficulty 2 · ~10 min
#
# Write `ppo_clip_loss(log_probs, old_log_probs, advantages, mask, clip)`: all `(batch, T)` → the
# masked mean (over real tokens of the whole batch) of the expression above. A mask that keeps
# no token has no mean: raise `ValueError` (as `llmlab.align` does), never return NaN.
#
# <details><summary>Hint 1 (the idea)</summary>The ratio comes from the two log-probs; the loss is the pessimistic of two per-token terms.</details>
# <details><summary>Hint 2 (the key formula)</summary>ratio = exp(log_probs - old_log_probs); per token max(-A ratio, -A clamp(ratio, 1 - clip, 1 + clip)); then sum over kept tokens / their count.</details>

# %% solution="ppo_clip_loss"
def ppo_clip_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor,
                  mask: torch.Tensor, clip: float = 0.2) -> torch.Tensor:
    """All (batch, T) -> scalar clipped surrogate loss."""
    ### BEGIN SOLUTION
    if not bool(mask.bool().any()):
        raise ValueError("mask keeps no token: the loss has no mean")
    ratio = torch.exp(log_probs - old_log_probs)
    per_token = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip))
    return (per_token * mask).sum() / mask.sum()
    ### END SOLUTION


# %% check="ppo_clip_loss" points=2
def _ref_ppo_clip(*args):
    return al.ppo_policy_loss(*args)[0]


_lp, _old = torch.randn(2, 5, generator=_g) * 0.3, torch.randn(2, 5, generator=_g) * 0.3
_adv, _m = torch.randn(2, 5, generator=_g), torch.tensor([[1.0] * 5, [1.0] * 2 + [0.0] * 3])
grading.check_function(ppo_clip_loss, _ref_ppo_clip, cases=[
    grading.Case(_lp, _lp, _adv, torch.ones(2, 5), 0.2, note="on-policy: ratio 1, loss = -mean(A)"),
    grading.Case(_lp, _old, _adv, _m, 0.2, note="off-policy with a mask: some ratios clip"),
], block=[al.ppo_policy_loss, al.ppo_token_losses], mistakes=CATALOGUE.mistakes("ppo_clip_loss"),
    hint="max(-A * ratio, -A * clamp(ratio, 1 - clip, 1 + clip)), masked mean")

# %% hidden="ppo_clip_loss" points=1
### BEGIN HIDDEN TESTS
grading.check_function(ppo_clip_loss, _ref_ppo_clip, cases=[
    grading.Case(_lp * 3, _old, _adv, _m, 0.1, note="far off-policy, tight clip"),
    grading.Case(_lp, _old, -_adv.abs(), torch.ones(2, 5), 0.3, note="negative advantages"),
    grading.Case(_lp, _old, _adv, torch.zeros(2, 5), 0.2, note="a mask that keeps no token"),
], block=[al.ppo_policy_loss, al.ppo_token_losses], mistakes=CATALOGUE.mistakes("ppo_clip_loss"))
### END HIDDEN TESTS

# %% [markdown]
# Now `al.PPOTrainer` puts it together: sample 16 completions of 8 tokens, score them, compute
# log-probs under the policy and the frozen reference, values, KL-penalised rewards, GAE,
# whitened advantages, and two epochs of clipped policy + clipped value updates. The task is a
# **verifiable reward**: after `def name(self):` the completion's first line must be a
# well-formed `return <expression>` (checked with Python's own parser).

# %% tags=["grading-skip"]
PROMPTS = ["def get(self):\n        ", "def size(x):\n    ", "def name(self):\n        ",
           "def value(self):\n        "]
prompt_ids = torch.tensor([tok.encode(p)[-6:] for p in PROMPTS])
true_reward = al.text_reward(al.return_statement_reward, tok)

torch.manual_seed(0)
PPO_LR, PPO_STEPS = 3e-4, 12
ppo = al.PPOTrainer(copy.deepcopy(base), al.PPOConfig(max_new_tokens=8, lr=PPO_LR, init_kl_coef=0.02), eos_token_id=EOS)
ppo_log = [ppo.step(prompt_ids.repeat(4, 1), true_reward) for _ in tqdm(range(PPO_STEPS), desc="PPO")]
print("mean reward per step:", " ".join(f"{s['score']:.2f}" for s in ppo_log))

# %% [markdown]
# The reward starts near zero (a `return` line is rare after a bare signature) and rises once a
# few successes are sampled. PPO needs a lot here — a value model learned from scratch, a
# sparse reward, four models in memory (policy, reference, value, and in RLHF a reward model) —
# which is what the next two methods remove.
#
# ## 5. DPO: the RLHF objective, solved in closed form
#
# The KL-regularised objective above has an exact maximiser for each prompt (Rafailov et al.
# 2023, eq. 4):
#
# $$\pi^*(y\mid x) = \frac{1}{Z(x)}\,\pi_\text{ref}(y\mid x)\,\exp\!\big(r(x,y)/\beta\big).$$
#
# Solve it for the reward, $r(x,y) = \beta\log\frac{\pi^*(y|x)}{\pi_\text{ref}(y|x)} + \beta\log Z(x)$,
# and put that into the Bradley–Terry likelihood: $Z(x)$ cancels in the difference, leaving a
# loss on log-probabilities alone, with no reward model and no sampling:
#
# $$\mathcal L_\text{DPO} = -\log\sigma\Big(\beta\Big[\log\frac{\pi_\theta(y_w)}{\pi_\text{ref}(y_w)} -
# \log\frac{\pi_\theta(y_l)}{\pi_\text{ref}(y_l)}\Big]\Big).$$
#
# $\beta\log\frac{\pi_\theta}{\pi_\text{ref}}$ is the **implicit reward**; β sets how far the policy
# may move for a given preference strength.
#
# ### Exercise 6.7 — predict first: what β does · 2 points · difficulty 1 · ~5 min
#
# One prompt, two answers; $\pi_\text{ref}$ = (0.5, 0.5), rewards $r$ = (1, 0). Using the formula
# for $\pi^*$, predict the optimal probability of answer 1 for β = 0.5 and for β = 2 (3 decimals).

# %% solution="predict_beta"
def predict_beta() -> tuple[float, float]:
    """(pi*(answer 1) at beta = 0.5, at beta = 2)."""
    ### BEGIN SOLUTION
    return 1 / (1 + math.exp(-1 / 0.5)), 1 / (1 + math.exp(-1 / 2))
    ### END SOLUTION


# %% check="predict_beta" points=1
beta_rewards, beta_ref = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])
grading.check_prediction(
    predict_beta, tuple(float(torch.softmax(beta_ref.log() + beta_rewards / b, 0)[0]) for b in (0.5, 2.0)),
    what="(pi*(answer 1) at beta 0.5, at beta 2)", atol=2e-3, rtol=0, mistakes=CATALOGUE.mistakes("predict_beta"),
    hint="return two probabilities of answer 1; a larger beta stays closer to the reference's 0.5")

# %% hidden="predict_beta" points=1
### BEGIN HIDDEN TESTS
grading.check_function(predict_beta, lambda: (1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-0.5))),
                       cases=[grading.Case(note="your two probabilities")], atol=2e-3, rtol=0,
                       mistakes=CATALOGUE.mistakes("predict_beta"),
                       hint="pi* is proportional to 0.5 * exp(r / beta); normalise over the two answers")
### END HIDDEN TESTS

# %% [markdown]
# Small β: nearly greedy on the reward. Large β: stay near the reference.
#
# ### Exercise 6.8 — the DPO loss · 3 points · difficulty 2 · ~10 min
#
# Write `dpo(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)`: summed response
# log-probs, each `(batch,)` → the mean DPO loss (a scalar).
#
# <details><summary>Hint 1 (the idea)</summary>The loss is the Bradley–Terry loss of exercise 6.4 with the implicit rewards in place of a reward model's.</details>
# <details><summary>Hint 2 (the key formula)</summary>h = beta * ((chosen - ref chosen) - (rejected - ref rejected)); loss = mean of -logsigmoid(h), computed stably.</details>

# %% solution="dpo"
def dpo(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
        ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """(batch,) x 4 -> scalar mean DPO loss."""
    ### BEGIN SOLUTION
    h = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(h).mean()
    ### END SOLUTION


# %% check="dpo" points=2
def _ref_dpo(pc, pr, rc, rr, beta=0.1):
    return al.dpo_loss(pc, pr, rc, rr, beta)[0].mean()


_lps = [-torch.rand(4, generator=_g) * 30 for _ in range(4)]
grading.check_function(dpo, _ref_dpo, cases=[
    grading.Case(*[x.clone() for x in _lps], 0.1, note="random log-probs, beta 0.1"),
    grading.Case(_lps[0], _lps[1], _lps[0], _lps[1], 0.5, note="policy = reference: loss log 2"),
], block=[al.dpo_loss, al.simpo_loss, al.ipo_loss], mistakes=CATALOGUE.mistakes("dpo"),
    hint="-logsigmoid(beta * (chosen log-ratio - rejected log-ratio))")

# %% hidden="dpo" points=1
### BEGIN HIDDEN TESTS
grading.check_function(dpo, _ref_dpo, cases=[
    grading.Case(_lps[1], _lps[0], _lps[2], _lps[3], 2.0, note="large beta"),
    grading.Case(torch.tensor([-500.0]), torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-500.0]), 1.0,
                 note="stability: a huge wrong margin"),
], block=[al.dpo_loss], mistakes=CATALOGUE.mistakes("dpo"))
### END HIDDEN TESTS

# %% [markdown]
# A DPO run on the code preference pairs of section 2, against a frozen copy of the book model.
# We log the implicit reward margin on held-out pairs and the **win rate** — the fraction of
# held-out pairs whose chosen response gets the larger implicit reward.

# %%
torch.manual_seed(0)
dpo_hist = al.train_dpo(copy.deepcopy(base).train(), train_pairs, held_out[:16], EOS, steps=10, beta=0.1,
                        lr=1e-4, batch_size=8, progress=tqdm)
print(f"held-out margin {dpo_hist[0]['eval_margin']:.3f} -> {dpo_hist[-1]['eval_margin']:.3f}; "
      f"win rate {dpo_hist[0]['win_rate']:.2f} -> {dpo_hist[-1]['win_rate']:.2f}")

# %% [markdown]
# The relatives, all in `llmlab.align` and tested equal to `trl`'s losses on the same
# log-probabilities: **cDPO** (label smoothing ε: labels flipped with probability ε),
# **robust DPO** (unbiased under that noise), **IPO** (a squared loss that does not push the
# margin to infinity), **SimPO** (no reference: length-normalised log-probs and a margin γ),
# **ORPO** (SFT loss plus an odds-ratio term, no reference), **KTO** (unpaired good/bad labels
# with a prospect-theory value function). One batch, every loss:

# %%
pc, pr, rc_, rr_ = (x.clone() for x in _lps)
lens = torch.full((4,), 12.0)
table = {
    "DPO (β=0.1)": al.dpo_loss(pc, pr, rc_, rr_, 0.1)[0].mean(),
    "cDPO (ε=0.1)": al.dpo_loss(pc, pr, rc_, rr_, 0.1, label_smoothing=0.1)[0].mean(),
    "robust DPO (ε=0.1)": al.dpo_loss(pc, pr, rc_, rr_, 0.1, 0.1, "robust")[0].mean(),
    "IPO (τ=0.1)": al.ipo_loss(pc, pr, rc_, rr_, lens, lens, 0.1).mean(),
    "SimPO (β=2, γ=0.5)": al.simpo_loss(pc / lens, pr / lens).mean(),
    "ORPO odds-ratio term (λ=0.1)": -al.orpo_odds_ratio_term(pc / lens, pr / lens).mean(),
    "KTO (all desirable)": al.kto_loss(pc, rc_, torch.ones(4, dtype=torch.bool), torch.tensor(0.0)).mean(),
}
for name, v in table.items():
    print(f"{name:30s} {float(v):8.4f}")

# %% [markdown]
# ## 6. GRPO: PPO without a critic
#
# DeepSeekMath's GRPO (Shao et al. 2024), used for DeepSeek-R1, drops the value model: sample a
# **group** of $G$ completions per prompt and use the group as the baseline,
#
# $$\hat A_i = \frac{r_i - \mathrm{mean}(r_{1..G})}{\mathrm{std}(r_{1..G}) + \varepsilon},$$
#
# the same advantage for every token of completion $i$. The loss is PPO's clipped surrogate plus
# a KL penalty to the reference, estimated per token with **k3** (Schulman 2020):
# with $\rho = \pi_\text{ref}(y_t)/\pi_\theta(y_t)$, $\;k_3 = \rho - \log\rho - 1 \ge 0$, unbiased
# for $\mathrm{KL}(\pi_\theta\|\pi_\text{ref})$ and lower-variance than $k_1 = -\log\rho$.
# How token losses are averaged matters:
#
# | variant | reduction of per-token losses $\ell_{i,t}$ | effect |
# |---|---|---|
# | GRPO | $\frac1G\sum_i \frac1{|y_i|}\sum_t \ell_{i,t}$ | long wrong answers are penalised less per token (length bias) |
# | DAPO | $\frac{1}{\sum_i |y_i|}\sum_{i,t}\ell_{i,t}$ | every token weighs the same; clip-higher $\epsilon_\text{high} > \epsilon_\text{low}$ |
# | Dr. GRPO | $\frac{1}{G\,L_\text{max}}\sum_{i,t}\ell_{i,t}$, no std scaling | unbiased; constant normaliser |

# %% [markdown]
# You now write GRPO from the ground up: three pieces — the log-probs of a completion, the loss
# (k3 included), the group rollouts — then the trainer that assembles them; the chapter's GRPO
# runs, here and in section 8, use your trainer once it passes.
#
# ### Exercise 6.9 — log-probs of a completion · 3 points · difficulty 2 · ~15 min
#
# Every policy-gradient method scores the sampled tokens under a model: one forward pass over
# prompt + completion, and for each completion token the log-probability the model gave it *one
# position earlier*. Write `completion_log_probs(model, ids, prompt_len, mask)`:
#
# - **Inputs:** `model` maps `(batch, L)` token ids to `(batch, L, vocab)` logits (the book's
#   GPT); `ids` `(batch, P + C)` — prompt then completion; `prompt_len` = P; `mask` `(batch, C)`
#   float, 1 on completion tokens that count.
# - **Output:** `(batch, C)`: entry `t` is $\log \pi(\text{ids}[:, P+t] \mid \text{ids}[:, :P+t])$
#   where `mask` is 1, and exactly 0 where it is 0. Differentiable with respect to the model's
#   weights; one forward pass.
# - **Errors:** `ValueError` when `prompt_len` is not in `[1, P + C - 1]` or `mask` is not `(batch, C)`.
# - **Forbidden:** `llmlab.align`'s log-prob helpers and `F.cross_entropy`.
#
# <details><summary>Hint 1 (the idea)</summary>The logits at position i predict token i + 1: which positions' logits predict the completion?</details>
# <details><summary>Hint 2 (the structure)</summary>Run the model on all ids but the last; keep the last C positions; normalise over the vocabulary in log space; pick each target token's entry.</details>
# <details><summary>Hint 3 (the key formula)</summary>log_softmax(logits[:, P-1:], -1).gather(-1, ids[:, P:, None]).squeeze(-1), then zero where mask is 0 (with torch.where: a masked -inf times 0 is NaN).</details>

# %% solution="completion_log_probs"
def completion_log_probs(model: torch.nn.Module, ids: torch.Tensor, prompt_len: int,
                         mask: torch.Tensor) -> torch.Tensor:
    """ids: (batch, P + C), mask: (batch, C) -> (batch, C) log-probs of the completion tokens, 0 where masked."""
    ### BEGIN SOLUTION
    if not 1 <= prompt_len < ids.shape[1]:
        raise ValueError(f"prompt_len must be in [1, {ids.shape[1] - 1}], got {prompt_len}")
    C = ids.shape[1] - prompt_len
    if tuple(mask.shape) != (ids.shape[0], C):
        raise ValueError(f"mask must be (batch, C) = {(ids.shape[0], C)}, got {tuple(mask.shape)}")
    logits = model(ids[:, :-1])[:, prompt_len - 1:]
    taken = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, prompt_len:, None]).squeeze(-1)
    return torch.where(mask.bool(), taken, torch.zeros_like(taken))
    ### END SOLUTION


# %% check="completion_log_probs" points=2
def _ref_completion_log_probs(model, ids, prompt_len, mask):
    if not 1 <= prompt_len < ids.shape[1] or tuple(mask.shape) != (ids.shape[0], ids.shape[1] - prompt_len):
        raise ValueError("bad prompt_len or mask")
    lp = al.completion_log_probs(model, al.Rollout(ids, prompt_len, mask))
    return torch.where(mask.bool(), lp, torch.zeros_like(lp))


def _tiny_gpt(seed: int = 0, vocab: int = 8) -> GPT:
    """A one-layer GPT of a few thousand weights, for checks that run a model."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=32, n_layer=1, n_head=2, d_model=16))


_cg = torch.Generator().manual_seed(6)
_cids = torch.randint(0, 8, (3, 9), generator=_cg)
_cmask = torch.tensor([[1.0] * 5, [1.0] * 2 + [0.0] * 3, [1.0] * 4 + [0.0]])
grading.check_function(completion_log_probs, _ref_completion_log_probs, cases=[
    grading.Case(_tiny_gpt(), _cids, 4, torch.ones(3, 5), note="prompt of 4, completions of 5"),
    grading.Case(_tiny_gpt(1), _cids, 4, _cmask, note="completions that end early: masked"),
    grading.Case(_tiny_gpt(), _cids, 0, torch.ones(3, 9), note="prompt_len 0 is invalid"),
], block=[al.completion_log_probs, al.token_log_probs, al.get_response_log_probs, F.cross_entropy],
    mistakes=CATALOGUE.mistakes("completion_log_probs"),
    hint="the logits at position i predict token i + 1; zero the masked entries")

# %% hidden="completion_log_probs" points=1
### BEGIN HIDDEN TESTS
grading.check_function(completion_log_probs, _ref_completion_log_probs, cases=[
    grading.Case(_tiny_gpt(2, 16), torch.randint(0, 16, (2, 7), generator=_cg), 1,
                 torch.tensor([[1.0] * 6, [1.0] * 3 + [0.0] * 3]), note="a prompt of one token"),
    grading.Case(_tiny_gpt(3), _cids, 8, torch.tensor([[1.0], [0.0], [1.0]]), note="a completion of one token"),
    grading.Case(_tiny_gpt(), _cids, 4, torch.ones(3, 4), note="a mask of the wrong length"),
], block=[al.completion_log_probs, al.token_log_probs, al.get_response_log_probs, F.cross_entropy],
    mistakes=CATALOGUE.mistakes("completion_log_probs"))
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 6.10 — group advantages and the GRPO loss · 4 points · difficulty 2 · ~20 min
#
# Predict first: rewards `[1, 0, 0, 0]` in one group. Work out their advantages by hand
# (unbiased std, ε ignored) before you write code — the check prints them.
#
# Write `grpo_objective(log_probs, old_log_probs, ref_log_probs, rewards, mask, group_size, beta, eps)`
# → the scalar GRPO loss of the table's first row, with the k3 term above:
#
# - **Shapes:** `log_probs`, `old_log_probs`, `ref_log_probs`, `mask`: `(B, T)`; `rewards`
#   `(B,)`, in groups of `group_size` *consecutive* rows (one group per prompt).
# - **Definitions:** the advantage of a row is its reward standardised within its group, with
#   the group's unbiased std plus $10^{-4}$ in the denominator; the policy term is PPO's clipped
#   surrogate with range `eps`, the ratio taken against `old_log_probs`; `beta` weighs k3 to the
#   reference; a sequence's loss is the mean of its kept tokens, and the batch's the mean over
#   sequences (a sequence with no kept token counts 0, as in `trl`).
# - **Errors:** `ValueError` when `rewards` is not 1-D with a multiple of `group_size` entries,
#   or when `mask` keeps no token at all.
# - **Forbidden:** `llmlab.align`'s GRPO, advantage and KL functions.
#
# <details><summary>Hint 1 (the idea)</summary>Everything is per token except the advantage, which is per sequence and comes from the group.</details>
# <details><summary>Hint 2 (the structure)</summary>Reshape the rewards to (groups, group_size) for the statistics; broadcast each sequence's advantage over its tokens as (B, 1).</details>
# <details><summary>Hint 3 (the key formula)</summary>per token: -min(ratio A, clamp(ratio, 1 - eps, 1 + eps) A) + beta (exp(ref - lp) - (ref - lp) - 1); sequence mean (per_token * mask).sum(-1) / mask.sum(-1).</details>

# %% solution="grpo_objective"
def grpo_objective(log_probs: torch.Tensor, old_log_probs: torch.Tensor, ref_log_probs: torch.Tensor,
                   rewards: torch.Tensor, mask: torch.Tensor, group_size: int, beta: float = 0.04,
                   eps: float = 0.2) -> torch.Tensor:
    """(B, T) x 3, rewards (B,), mask (B, T) -> scalar GRPO loss."""
    ### BEGIN SOLUTION
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, "
                         f"got shape {tuple(rewards.shape)}")
    if not bool(mask.bool().any()):
        raise ValueError("mask keeps no token: the loss has no mean")
    g = rewards.view(-1, group_size)
    adv = ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).reshape(-1, 1)
    ratio = torch.exp(log_probs - old_log_probs)
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - eps, 1 + eps) * adv)
    log_rho = ref_log_probs - log_probs
    per_token = per_token + beta * (torch.exp(log_rho) - log_rho - 1)
    return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    ### END SOLUTION


# %% check="grpo_objective" points=3
def _ref_grpo(lp, old, ref, rewards, mask, group_size, beta=0.04, eps=0.2):
    adv = al.group_advantages(rewards, group_size)
    return al.grpo_loss(lp, old, adv, mask, "grpo", beta, ref, eps)[0]


print("advantages of [1, 0, 0, 0]:", [round(v, 3) for v in al.group_advantages(torch.tensor([1.0, 0, 0, 0]), 4).tolist()])
_B, _T = 8, 5
_gm = torch.ones(_B, _T)
_gm[::2, 3:] = 0
_glp = -torch.rand(_B, _T, generator=_g) * 2
_gold = _glp + 0.3 * torch.randn(_B, _T, generator=_g)
_gref = _glp + 0.3 * torch.randn(_B, _T, generator=_g)
_grew = torch.tensor([1.0, 0, 0, 1, 0.5, 0.5, 0, 1])
grading.check_function(grpo_objective, _ref_grpo, cases=[
    grading.Case(_glp, _glp.clone(), _glp.clone(), _grew, torch.ones(_B, _T), 4, 0.0, note="on-policy, no KL"),
    grading.Case(_glp, _gold, _gref, _grew, _gm, 4, 0.04, note="off-policy, KL, unequal lengths"),
], block=[al.grpo_loss, al.grpo_token_losses, al.group_advantages, al.kl_estimate],
    mistakes=CATALOGUE.mistakes("grpo_objective"),
    hint="advantages per group with the unbiased std; then per-sequence token means, then the mean")

# %% hidden="grpo_objective" points=1
### BEGIN HIDDEN TESTS
grading.check_function(grpo_objective, _ref_grpo, cases=[
    grading.Case(_glp, _gold, _gref, _grew, _gm, 2, 0.1, 0.1, note="groups of 2, tight clip"),
    grading.Case(_glp, _gold, _gref, _grew, _gm, 8, 0.0, 0.3, note="one group of 8"),
    grading.Case(_glp, _gold, _gref, _grew, _gm * (torch.arange(_B) != 2)[:, None], 4, 0.04, 0.2,
                 note="one completion with no kept token"),
    grading.Case(_glp, _gold, _gref, _grew, _gm, 3, 0.04, 0.2, note="8 rewards in groups of 3"),
    grading.Case(_glp, _gold, _gref, _grew, torch.zeros(_B, _T), 4, 0.04, 0.2, note="a mask that keeps no token"),
], block=[al.grpo_loss, al.grpo_token_losses, al.group_advantages, al.kl_estimate],
    mistakes=CATALOGUE.mistakes("grpo_objective"))
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 6.11 — group rollouts through the KV cache · 3 points · difficulty 2 · ~15 min
#
# GRPO samples a *group* of completions per prompt. Write
# `group_rollout(model, prompt_ids, group_size, params, generator)` → `(ids, mask)`:
#
# - **Inputs:** `prompt_ids` `(n, P)`; `params` a `SamplingParams` (its `max_new_tokens` = C,
#   `temperature`, `eos_token_id`); `generator` the `torch.Generator` every draw uses.
# - **Outputs:** `ids` `(n · group_size, P + C)`: rows `i·G … i·G + G − 1` continue prompt `i`;
#   `mask` `(n · group_size, C)` float: 1 on completion tokens up to **and including** a row's
#   first `eos_token_id` (the model must learn to stop), 0 after it. Every row has exactly C
#   completion columns: after its end a row holds `eos_token_id` (also when every row stops early).
#   With `eos_token_id=None` every completion token counts.
# - **Invariants:** sampling is `llmlab.model.generate` (it decodes through the KV cache) on the
#   repeated prompts with `params`, `generator` and `pad_token_id` = the end token, so the same
#   generator state gives the same tokens as llmlab's rollout; the model's train/eval mode is
#   unchanged on return.
# - **Errors:** `ValueError` when `prompt_ids` is not 2-D or `group_size < 1`.
# - **Forbidden:** `llmlab.align.sample_rollout`, `llmlab.align.completion_mask`.
#
# <details><summary>Hint 1 (the idea)</summary>A group is the same prompt several times; the sampler's randomness makes the members differ. Where a row stops is where its first end token is.</details>
# <details><summary>Hint 2 (the structure)</summary>Repeat each prompt in place (not the whole batch), generate in eval mode, pad to C columns, then build the mask from the completion's end tokens.</details>
# <details><summary>Hint 3 (the key formula)</summary>is_eos = (completion == eos).int(); a position is after the end when is_eos.cumsum(1) - is_eos > 0.</details>

# %% solution="group_rollout"
def group_rollout(model: torch.nn.Module, prompt_ids: torch.Tensor, group_size: int,
                  params: SamplingParams, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """prompt_ids: (n, P) -> ids (n * group_size, P + C), mask (n * group_size, C) float."""
    ### BEGIN SOLUTION
    if prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must be (n, P), got shape {tuple(prompt_ids.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    eos = params.eos_token_id
    prompts = prompt_ids.repeat_interleave(group_size, dim=0)
    was_training = model.training
    model.eval()
    ids = generate(model, prompts, params, generator=generator, pad_token_id=0 if eos is None else eos)
    model.train(was_training)
    P, C = prompts.shape[1], params.max_new_tokens
    if ids.shape[1] < P + C:  # every row stopped early
        ids = torch.cat([ids, torch.full((ids.shape[0], P + C - ids.shape[1]), eos)], 1)
    completion = ids[:, P:]
    if eos is None:
        return ids, torch.ones(completion.shape)
    is_eos = (completion == eos).int()
    return ids, ((is_eos.cumsum(1) - is_eos) == 0).float()
    ### END SOLUTION


# %% check="group_rollout" points=2
def _ref_group_rollout(model, prompt_ids, group_size, params, generator=None):
    if prompt_ids.dim() != 2 or group_size < 1:
        raise ValueError("bad prompt_ids or group_size")
    ro = al.sample_rollout(model, prompt_ids.repeat_interleave(group_size, dim=0), params, generator=generator)
    return ro.ids, ro.mask


_rp = torch.tensor([[1, 2, 3], [4, 5, 6]])
grading.check_function(group_rollout, _ref_group_rollout, cases=[
    grading.Case(_tiny_gpt(), _rp, 3, SamplingParams(max_new_tokens=6, temperature=1.0, eos_token_id=0),
                 torch.Generator().manual_seed(0), note="2 prompts x groups of 3, some rows end early"),
    grading.Case(_tiny_gpt(), _rp[:1], 4, SamplingParams(max_new_tokens=4, temperature=1.0),
                 torch.Generator().manual_seed(1), note="no end token"),
    grading.Case(_tiny_gpt(), _rp[0], 2, SamplingParams(max_new_tokens=4, temperature=1.0),
                 torch.Generator().manual_seed(1), note="1-D prompts are invalid"),
], block=[al.sample_rollout, al.completion_mask], mistakes=CATALOGUE.mistakes("group_rollout"),
    hint="repeat each prompt group_size times in place; the mask keeps the first end token")

# %% hidden="group_rollout" points=1
### BEGIN HIDDEN TESTS
grading.check_function(group_rollout, _ref_group_rollout, cases=[
    grading.Case(_tiny_gpt(4), _rp, 4, SamplingParams(max_new_tokens=5, temperature=1.0, eos_token_id=3,
                                                      logit_bias={3: 50.0}),
                 torch.Generator().manual_seed(2), note="every row stops at its first token"),
    grading.Case(_tiny_gpt(5), torch.tensor([[7, 1], [2, 2], [5, 0]]), 2,
                 SamplingParams(max_new_tokens=7, temperature=0.7, eos_token_id=1),
                 torch.Generator().manual_seed(3), note="3 prompts, temperature 0.7"),
], block=[al.sample_rollout, al.completion_mask], mistakes=CATALOGUE.mistakes("group_rollout"))
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 6.12 — capstone: the GRPO trainer · 8 points · difficulty 3 · ~60 min
#
# Assemble GRPO from your pieces: `group_rollout` (6.11), `completion_log_probs` (6.9) and
# `grpo_objective` (6.10). Write the class `GRPOTrainer(policy, config, eos_token_id=None, seed=0)`
# with `step(prompt_ids, reward_fn) -> dict`, a drop-in for `llmlab.align.GRPOTrainer`: the
# chapter's GRPO runs below use yours once it passes.
#
# - **Construction:** `policy` a GPT that the trainer updates in place; `config` an
#   `al.GRPOConfig` (`group_size`, `max_new_tokens`, `temperature`, `lr`, `num_iterations` = μ
#   policy updates per batch of rollouts, `beta`, `eps_low`). Keep a frozen reference: the policy
#   as it was at construction. Optimiser `torch.optim.AdamW(policy.parameters(), lr=config.lr,
#   weight_decay=0.0)`; draws from `torch.Generator().manual_seed(seed)`.
# - **One `step`:** samples `group_size` completions of each prompt of `prompt_ids` `(n, P)` at
#   the config's temperature and length, ending at `eos_token_id`; scores them with
#   `reward_fn(al.Rollout(ids, P, mask))` → `(n · group_size,)` rewards; then makes `num_iterations`
#   updates on that one batch, each on the GRPO loss with clip range `eps_low` and KL weight `beta`,
#   whose ratio is taken against the policy **that sampled the batch** — so the first update is
#   on-policy and later ones are not. Each update clips the gradient's global norm to 1.0.
# - **Returns** `{"reward": mean reward, "loss": the last update's loss, "kl": the mean k3 KL to
#   the reference over kept tokens, under the policy of the last update (before its step)}`, as floats.
# - **Equal to llmlab's:** on the same seed, policy and prompts, the weights after a step agree with
#   `llmlab.align.GRPOTrainer`'s.
# - **Errors:** `ValueError` for a config this trainer does not implement (`loss_type` other than
#   `"grpo"`, `scale_rewards=False`, `eps_high` not None), `group_size < 2` or `num_iterations < 1`,
#   and for rewards that are not `(n · group_size,)`.
# - **Forbidden:** `llmlab.align.GRPOTrainer`, `grpo_loss`, `sample_rollout`, `completion_log_probs`,
#   `group_advantages`, `kl_estimate`.
#
# <details><summary>Hint 1 (the idea)</summary>Three models' views of one batch: the policy being trained, the policy that sampled (fixed for the whole step), and the reference (fixed for the whole run). Which ones need gradients?</details>
# <details><summary>Hint 2 (the structure)</summary>Sample and score once; compute the sampler's and the reference's log-probs once, without gradients; then loop μ times over: log-probs with gradients, loss, backward, clip, optimiser step.</details>
# <details><summary>Hint 3 (the key formula)</summary>The frozen reference is copy.deepcopy(policy).eval().requires_grad_(False) made in __init__; the loss is grpo_objective(lp, old_lp, ref_lp, rewards, mask, G, beta, eps_low); clipping is torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0).</details>

# %% solution="grpo_trainer"
class GRPOTrainer:
    """GRPO with a frozen reference, from group_rollout, completion_log_probs and grpo_objective."""

    def __init__(self, policy: torch.nn.Module, config: al.GRPOConfig, eos_token_id: int | None = None,
                 seed: int = 0) -> None:
        ### BEGIN SOLUTION
        if config.loss_type != "grpo" or not config.scale_rewards or config.eps_high is not None:
            raise ValueError(f"this trainer implements loss_type='grpo' with std scaling and one clip range, got "
                             f"loss_type={config.loss_type!r}, scale_rewards={config.scale_rewards}, "
                             f"eps_high={config.eps_high}")
        if config.group_size < 2 or config.num_iterations < 1:
            raise ValueError(f"need group_size >= 2 and num_iterations >= 1, got {config.group_size} "
                             f"and {config.num_iterations}")
        self.policy, self.cfg = policy, config
        self.ref = copy.deepcopy(policy).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(policy.parameters(), lr=config.lr, weight_decay=0.0)
        self.gen = torch.Generator().manual_seed(seed)
        self.params = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                                     eos_token_id=eos_token_id)
        ### END SOLUTION

    def step(self, prompt_ids: torch.Tensor, reward_fn) -> dict[str, float]:
        """prompt_ids: (n, P); reward_fn(al.Rollout) -> (n * group_size,). -> {"reward", "loss", "kl"}."""
        ### BEGIN SOLUTION
        c, P = self.cfg, prompt_ids.shape[1]
        ids, mask = group_rollout(self.policy, prompt_ids, c.group_size, self.params, self.gen)
        with torch.no_grad():
            rewards = reward_fn(al.Rollout(ids, P, mask)).float()
            if tuple(rewards.shape) != (ids.shape[0],):
                raise ValueError(f"reward_fn must return ({ids.shape[0]},) rewards, got {tuple(rewards.shape)}")
            old_lp = completion_log_probs(self.policy, ids, P, mask)
            ref_lp = completion_log_probs(self.ref, ids, P, mask)
        for _ in range(c.num_iterations):
            lp = completion_log_probs(self.policy, ids, P, mask)
            loss = grpo_objective(lp, old_lp, ref_lp, rewards, mask, c.group_size, c.beta, c.eps_low)
            self.opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            self.opt.step()
        log_rho = ref_lp - lp.detach()
        kl = ((torch.exp(log_rho) - log_rho - 1) * mask).sum() / mask.sum()
        return {"reward": float(rewards.mean()), "loss": float(loss.detach()), "kl": float(kl)}
        ### END SOLUTION


# %% check="grpo_trainer" points=5
def _parity_reward(rollout: al.Rollout) -> torch.Tensor:
    """Share of a completion's kept tokens whose parity matches its prompt's first token's."""
    same = (rollout.completion % 2 == rollout.ids[:, :1] % 2).float()
    return (same * rollout.mask).sum(1) / rollout.mask.sum(1)


def _grpo_probe(trainer_cls):
    """A trainer class -> f(config, steps, seed): that many steps on a tiny GPT; the logs and the weights."""
    def run(config: dict, steps: int, seed: int):
        policy = _tiny_gpt(seed)
        prompts = torch.randint(1, 8, (2, 3), generator=torch.Generator().manual_seed(seed))
        trainer = trainer_cls(policy, al.GRPOConfig(**config), eos_token_id=0, seed=seed)
        log = [trainer.step(prompts, _parity_reward) for _ in range(steps)]
        return {"reward, loss, kl per step": torch.tensor([[s["reward"], s["loss"], s["kl"]] for s in log]),
                "weights after the steps": {k: v.detach().clone() for k, v in policy.state_dict().items()}}
    return run


class _GRPOTrainerChecked(al.GRPOTrainer):
    """llmlab's trainer, refusing the configurations the exercise's trainer need not implement."""

    def __init__(self, policy, config, eos_token_id=None, seed=0):
        if config.loss_type != "grpo" or not config.scale_rewards or config.eps_high is not None \
                or config.group_size < 2 or config.num_iterations < 1:
            raise ValueError(f"not a configuration of the exercise: {config}")
        super().__init__(policy, config, eos_token_id, seed)


_GRPO_BLOCK = [al.GRPOTrainer, al.grpo_loss, al.grpo_token_losses, al.sample_rollout, al.completion_log_probs,
               al.group_advantages, al.kl_estimate]
_GRPO_CASES = [
    grading.Case(dict(group_size=4, max_new_tokens=5, lr=1e-2, num_iterations=2, beta=0.04), 2, 0,
                 note="2 steps, 2 updates per batch, KL 0.04"),
    grading.Case(dict(group_size=4, loss_type="dapo"), 1, 0, note="a loss type it does not implement"),
]
grading.check_function(_grpo_probe(GRPOTrainer), _grpo_probe(_GRPOTrainerChecked), cases=_GRPO_CASES,
                       name="GRPOTrainer", block=_GRPO_BLOCK, atol=1e-4,
                       mistakes={k: _grpo_probe(v) for k, v in CATALOGUE.mistakes("grpo_trainer").items()},
                       hint="the ratio is against the policy that sampled the batch; the reference is frozen at construction")

# %% hidden="grpo_trainer" points=3
### BEGIN HIDDEN TESTS
grading.check_function(_grpo_probe(GRPOTrainer), _grpo_probe(_GRPOTrainerChecked), cases=[
    grading.Case(dict(group_size=3, max_new_tokens=4, lr=5e-3, num_iterations=3, beta=0.1, eps_low=0.1,
                      temperature=0.8), 2, 1, note="3 updates per batch, tight clip"),
    grading.Case(dict(group_size=2, max_new_tokens=6, lr=1e-2, num_iterations=1, beta=0.0), 2, 2,
                 note="on-policy, no KL"),
    grading.Case(dict(group_size=1), 1, 0, note="a group of 1 has no baseline"),
], name="GRPOTrainer", block=_GRPO_BLOCK, atol=1e-4,
    mistakes={k: _grpo_probe(v) for k, v in CATALOGUE.mistakes("grpo_trainer").items()})
### END HIDDEN TESTS

# %% [markdown]
# The same verifiable task as PPO, with GRPO: 2 prompts × groups of 8, one update per batch — on
# your trainer once it passes the check above (the note says which one runs).

# %% tags=["nbval-ignore-output"]
Trainer = grading.prefer_yours(GRPOTrainer, _GRPOTrainerChecked, _GRPO_CASES[:1], name="GRPOTrainer",
                               probe=_grpo_probe, block=_GRPO_BLOCK, atol=1e-4)


def grpo_run(reward_fn, steps: int, beta: float = 0.0, lr: float = 1e-3, seed: int = 0, desc="GRPO",
             max_new_tokens: int = 6):
    torch.manual_seed(seed)
    tr = Trainer(copy.deepcopy(base), al.GRPOConfig(group_size=8, max_new_tokens=max_new_tokens, lr=lr, beta=beta),
                 eos_token_id=EOS, seed=seed)
    return tr, [tr.step(prompt_ids[:2], reward_fn) for _ in tqdm(range(steps), desc=desc)]


grpo, grpo_log = grpo_run(true_reward, 12)
grpo_rewards = [s["reward"] for s in grpo_log]
print("mean reward per step:", " ".join(f"{r:.2f}" for r in grpo_rewards))
first, last = sum(grpo_rewards[:3]) / 3, sum(grpo_rewards[-3:]) / 3
print(f"mean of the first 3 steps {first:.2f} -> of the last 3 {last:.2f}")
assert last > first  # the reward rises

# %% [markdown]
# PPO logs the KL of whole sequences with the k1 estimator (the log-ratio summed over a
# completion, as its per-token penalty uses it); GRPO logs k3 averaged per token. They measure
# different quantities, so they get their own axes.

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
axes[0].plot([s["score"] for s in ppo_log], "o-", label="PPO")
axes[0].plot(grpo_rewards, "s-", label="GRPO")
axes[0].set(title="verifiable reward (return statement)", xlabel="step", ylabel="mean reward")
axes[0].legend()
axes[1].plot([s["kl"] for s in ppo_log], "o-", color="C0")
axes[1].set(title="PPO: sequence KL (k1)", xlabel="step", ylabel="nats per sequence")
axes[2].plot([s["kl"] for s in grpo_log], "s-", color="C1")
axes[2].set(title="GRPO: per-token KL (k3)", xlabel="step", ylabel="nats per token")
axes[3].plot(sft_losses, label="SFT loss")
axes[3].plot(rm_losses, label="reward-model loss")
axes[3].plot([h["loss"] for h in dpo_hist], label="DPO loss")
axes[3].set(title="losses", xlabel="step")
axes[3].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 7. What the KL coefficient buys: a sweep
#
# The bandit is where β can be seen exactly: for a policy over 5 answers, the KL-regularised
# objective $\mathbb E_\pi[r] - \beta\,\mathrm{KL}(\pi\|\pi_\text{ref})$ has the closed-form
# optimum $\pi^*\propto\pi_\text{ref}e^{r/\beta}$. We also *train* toward it with the exact
# gradient, to show optimisation finds the same point. Each β gives one (KL, reward) point; the
# curve is the frontier every RLHF run moves along.

# %%
R = torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8])
PREF = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05])  # the reference prefers the worst answers


def optimum(beta: float) -> torch.Tensor:
    return torch.softmax(PREF.log() + R / beta, 0)


def trained(beta: float, steps: int = 300) -> torch.Tensor:
    logits = PREF.log().clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=0.05)
    for _ in range(steps):
        pi = logits.softmax(0)
        objective = (pi * R).sum() - beta * (pi * (pi.log() - PREF.log())).sum()
        opt.zero_grad()
        (-objective).backward()
        opt.step()
    return logits.detach().softmax(0)


def kl(p: torch.Tensor) -> float:
    return float((p * (p / PREF).log()).sum())


betas = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
print(f"{'beta':>6} {'KL':>7} {'reward':>7} {'trained reward':>15}")
for b in betas:
    p, q = optimum(b), trained(b)
    assert abs(float((p - q).abs().max())) < 1e-2
    print(f"{b:6.2f} {kl(p):7.3f} {float((p * R).sum()):7.3f} {float((q * R).sum()):15.3f}")

# %% tags=["nbval-ignore-output"]
def show_beta(beta: float = 0.2):
    fig, ax = plt.subplots(1, 2, figsize=(9, 3))
    ax[0].bar(range(5), PREF, alpha=0.5, label="reference")
    ax[0].bar(range(5), optimum(beta), alpha=0.5, label=f"optimal at β={beta:.2f}")
    ax[0].set(xlabel="answer (reward 0 … 0.8)", ylabel="probability")
    ax[0].legend()
    ax[1].plot([kl(optimum(b)) for b in betas], [float((optimum(b) * R).sum()) for b in betas], "o-")
    ax[1].plot([kl(optimum(beta))], [float((optimum(beta) * R).sum())], "r*", ms=14)
    ax[1].set(xlabel="KL(π‖π_ref)", ylabel="expected reward", title="the reward–KL frontier")
    fig.tight_layout()
    plt.show()


widgets.interact(show_beta, beta=widgets.FloatLogSlider(value=0.2, base=10, min=-2, max=0.5, step=0.1))

# %% [markdown]
# ## 8. Reward hacking: an imperfect reward, exploited
#
# A learned or hand-written reward is a proxy. Optimise it hard enough and the policy finds where
# it disagrees with what was meant (Gao et al. 2022 measured this for reward models). Here the
# proxy is a careless checker: it counts the word `return` (up to 4). The true reward is the
# parser check from before. GRPO on the proxy, β = 0:

# %% tags=["nbval-ignore-output"]
proxy = al.text_reward(al.keyword_reward, tok)
torch.manual_seed(0)
hacker = Trainer(copy.deepcopy(base), al.GRPOConfig(group_size=8, max_new_tokens=8, lr=1e-3, beta=0.0),
                 eos_token_id=EOS)
hack_log, gen = [], torch.Generator().manual_seed(1)
for _ in tqdm(range(12), desc="GRPO on the proxy"):
    st = hacker.step(prompt_ids[:2], proxy)
    ro = al.sample_rollout(hacker.policy, prompt_ids.repeat(4, 1), max_new_tokens=8, temperature=1.0,
                           eos_token_id=EOS, generator=gen)
    hack_log.append((st["reward"], float(true_reward(ro).mean())))
print("proxy reward:", " ".join(f"{p:.2f}" for p, _ in hack_log))
print("true reward: ", " ".join(f"{t:.2f}" for _, t in hack_log))
print("samples:", al.decode_completions(ro, tok)[:3])
proxy_first, proxy_last = hack_log[0][0], hack_log[-1][0]
true_first, true_last = hack_log[0][1], hack_log[-1][1]
print(f"proxy {proxy_first:.2f} -> {proxy_last:.2f}; true {true_first:.2f} -> {true_last:.2f}")
assert proxy_last > proxy_first and true_last < true_first  # what the prose below says

# %%
plt.figure(figsize=(5, 3))
plt.plot([p for p, _ in hack_log], "o-", label="proxy: count of 'return'")
plt.plot([t for _, t in hack_log], "s-", label="true: a well-formed return line")
plt.xlabel("step")
plt.ylabel("mean reward")
plt.title("reward hacking")
plt.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The proxy rises while the true reward falls (both printed above): the policy learns to repeat
# the keyword, and the well-formed `return` lines it sometimes wrote at first, which the parser
# accepts, disappear. The defences the industry uses are the knobs of this
# chapter: a KL penalty (β) that keeps the policy near the reference, rewards that are checked
# (unit tests, parsers, exact answers) rather than guessed, reward-model ensembles, and
# stopping early by a held-out gold measure.
#
# ## 9. How the industry does it
#
# - **InstructGPT** (Ouyang et al. 2022): SFT on ~13k demonstrations, a 6B reward model on ~33k
#   prompts ranked K=4–9 at a time, PPO with a per-token KL penalty (β = 0.02) and a pretraining
#   loss mix ("PPO-ptx"). 1.3B InstructGPT was preferred to 175B GPT-3.
# - **Llama 2** (Touvron et al. 2023): two reward models (helpfulness, safety) with a margin
#   term in the Bradley–Terry loss, rejection sampling then PPO; **Llama 3** (2024) replaced PPO
#   by rounds of rejection sampling + SFT + DPO, citing stability and scale.
# - **DeepSeek-R1** (2025): GRPO with rule-based, verifiable rewards (answer correctness,
#   format), groups of 16, no value model; "R1-Zero" from the base model with RL alone.
#   DAPO and Dr. GRPO then fixed GRPO's length bias and entropy collapse.
# - **Libraries**: Hugging Face `trl` (SFT, DPO and relatives, GRPO, RLOO, KTO trainers — the
#   losses here are tested equal to its), OpenRLHF (Ray + vLLM, PPO at 70B scale), verl
#   (ByteDance's hybrid controller for PPO/GRPO with vLLM/SGLang rollouts). In all of them the
#   rollout (generation) dominates the wall time, which is why they put an inference engine
#   (chapters 08–09) inside the training loop.
# - **Where it breaks**: reward hacking and over-optimisation (longer answers, sycophancy),
#   PPO's instability and memory (four models), DPO's over-confident likelihood drift (both
#   chosen and rejected log-probs fall), and GRPO's zero-variance groups (all right or all
#   wrong: no signal — DAPO filters them).
#
# ## Summary
#
# - SFT is next-token loss on the assistant's tokens only; packing needs a document mask and
#   position resets, or examples leak into each other.
# - A reward model turns comparisons into a scalar via Bradley–Terry; only differences matter.
# - Policy gradients need a baseline; PPO adds GAE, a value model, clipping and a KL penalty.
# - DPO is the RLHF objective solved in closed form: a classification loss on log-ratios.
# - GRPO replaces the critic by the group mean; how tokens are averaged changes what is learned.
# - β trades reward for distance to the reference, and a proxy reward optimised without it gets
#   hacked.
#
# ## Further reading
#
# - Ouyang et al., *Training language models to follow instructions with human feedback*, 2022. [arXiv:2203.02155](https://arxiv.org/abs/2203.02155)
# - Ziegler et al., *Fine-Tuning Language Models from Human Preferences*, 2019. [arXiv:1909.08593](https://arxiv.org/abs/1909.08593)
# - Schulman et al., *Proximal Policy Optimization Algorithms*, 2017. [arXiv:1707.06347](https://arxiv.org/abs/1707.06347); *GAE*, 2015. [arXiv:1506.02438](https://arxiv.org/abs/1506.02438)
# - Rafailov et al., *Direct Preference Optimization*, 2023. [arXiv:2305.18290](https://arxiv.org/abs/2305.18290)
# - Azar et al., *A General Theoretical Paradigm to Understand Learning from Human Preferences* (IPO), 2023. [arXiv:2310.12036](https://arxiv.org/abs/2310.12036)
# - Meng et al., *SimPO*, 2024. [arXiv:2405.14734](https://arxiv.org/abs/2405.14734); Hong et al., *ORPO*, 2024. [arXiv:2403.07691](https://arxiv.org/abs/2403.07691); Ethayarajh et al., *KTO*, 2024. [arXiv:2402.01306](https://arxiv.org/abs/2402.01306)
# - Shao et al., *DeepSeekMath* (GRPO), 2024. [arXiv:2402.03300](https://arxiv.org/abs/2402.03300); DeepSeek-AI, *DeepSeek-R1*, 2025. [arXiv:2501.12948](https://arxiv.org/abs/2501.12948)
# - Yu et al., *DAPO*, 2025. [arXiv:2503.14476](https://arxiv.org/abs/2503.14476); Liu et al., *Understanding R1-Zero-Like Training* (Dr. GRPO), 2025. [arXiv:2503.20783](https://arxiv.org/abs/2503.20783)
# - Gao et al., *Scaling Laws for Reward Model Overoptimization*, 2022. [arXiv:2210.10760](https://arxiv.org/abs/2210.10760)
# - Schulman, *Approximating KL Divergence*, 2020. [blog](http://joschu.net/blog/kl-approx.html)
# - Krell et al., *Efficient Sequence Packing without Cross-contamination*, 2021. [arXiv:2107.02027](https://arxiv.org/abs/2107.02027)
