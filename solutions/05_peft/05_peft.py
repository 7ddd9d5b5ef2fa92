# %% [markdown]
# # 05 · Parameter-efficient fine-tuning
#
# Fine-tuning every weight of a 7-8 B model needs over 100 GB of accelerator memory, most of it
# optimizer state. Parameter-efficient fine-tuning (PEFT) freezes the pretrained model and trains
# a small add-on instead: a low-rank update (LoRA), a rescaling vector (IA3), a few virtual tokens
# (prompt and prefix tuning). This chapter builds the family in `llmlab.peft`, checks it against
# Hugging Face `peft`, and fine-tunes the book's model on a task it cannot do yet.
#
# **You will learn to**
# 1. count the memory of full fine-tuning and of each PEFT method, and predict it before measuring;
# 2. measure the low-rank hypothesis: the singular values of a real fine-tuning update;
# 3. implement LoRA (forward with scaling, merge/unmerge), DoRA, prefix tuning through the KV cache,
#    a multi-LoRA batched forward and GaLore's projected Adam step;
# 4. inject LoRA into a model by module-name patterns, as `peft` does, and save an adapter that
#    Hugging Face `peft` loads (the capstone: the rest of the chapter runs on it);
# 5. fine-tune the book's model with LoRA on a new task, measure what it learns and what it
#    forgets, and compare the whole family on the same task;
# 6. serve several adapters on one base model in one batch.

# %% [markdown]
# **Budget:** ~1 min on 2 CPU cores · peak RAM ~1 GB. No GPU and no network needed.

# %% tags=["nbval-ignore-output"]
import importlib.util
import json
import logging
import re
import tempfile
import time
import warnings
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

import llmlab.kvcache as kv
from llmlab import grading, peft
from llmlab.data import load_documents
from llmlab.model import GPT, GPTConfig, generate, load_book_model, to_hf
from llmlab.nn import Linear, StepContext
from llmlab.utils import seed_all
from llmlab_book.ch05_peft import CATALOGUE

HF_PEFT = bool(importlib.util.find_spec("peft") and importlib.util.find_spec("transformers"))
if HF_PEFT:  # Hugging Face's libraries, to load this chapter's adapter (`peft` here is llmlab's)
    logging.disable(logging.WARNING)  # their optional GPU kernels announce they are absent
    import peft as hf_peft
    import transformers
    logging.disable(logging.NOTSET)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)

seed_all(0)
torch.set_num_threads(1)  # small matmuls: one thread is as fast, and steadier
base_model, tok = load_book_model()
cfg = base_model.config
print(f"the book's model: {base_model.num_params() / 1e6:.2f} M parameters, {cfg.n_layer} layers, "
      f"d_model {cfg.d_model}, vocabulary {cfg.vocab_size}")


def fresh_model() -> nn.Module:
    """A new copy of the book's model (every method starts from the same pretrained weights)."""
    model, _ = load_book_model()
    return model


# %% [markdown]
# ## 1. Why full fine-tuning is expensive
#
# Training with Adam in mixed precision keeps, for **every trainable parameter**, a bf16 weight
# and gradient (2 + 2 bytes) and an fp32 master weight plus Adam's two moments (4 + 4 + 4): 16
# bytes (the ZeRO paper's accounting). A frozen parameter only needs its bf16 weight: 2 bytes.
# Activations come on top and depend on batch and sequence length.
#
# LoRA (Hu et al., 2021) freezes a weight $W \in \mathbb{R}^{d_\text{out}\times d_\text{in}}$ and
# learns $\Delta W = s\,BA$ with $B \in \mathbb{R}^{d_\text{out}\times r}$,
# $A \in \mathbb{R}^{r\times d_\text{in}}$, $r \ll d$ and $s = \alpha/r$:
#
# $$h = Wx + b + s\,B(Ax).$$
#
# It trains $r(d_\text{in} + d_\text{out})$ numbers per adapted matrix instead of
# $d_\text{in} d_\text{out}$. Before looking at the table, predict.

# %% [markdown]
# ### Exercise 5.1 — predict first: LoRA's trainable parameters · 2 points · difficulty 1 · ~5 min
#
# Write `lora_param_count(shapes, n_layer, r)`: the number of trainable parameters when LoRA of
# rank `r` adapts, in each of `n_layer` layers, the matrices whose `(out, in)` shapes are listed.
# Then predict (on paper) the count for Llama-3-8B (32 layers, `d_model` 4096, 8 KV heads of 128)
# with `r = 8` on `q_proj` (4096 → 4096) and `v_proj` (4096 → 1024) — the table below shows it.

# %% solution="lora_param_count"
def lora_param_count(shapes: list[tuple[int, int]], n_layer: int, r: int) -> int:
    """shapes: [(out, in), ...] of the adapted matrices of one layer -> trainable parameters."""
    ### BEGIN SOLUTION
    return n_layer * sum(r * (d_out + d_in) for d_out, d_in in shapes)
    ### END SOLUTION


# %% check="lora_param_count" points=1
def _lora_count_ref(shapes, n_layer, r):
    return n_layer * sum(r * (o + i) for o, i in shapes)


grading.check_function(lora_param_count, _lora_count_ref, block=[peft.trainable_params],
                       mistakes=CATALOGUE.mistakes("lora_param_count"), cases=[
    grading.Case([(4096, 4096), (1024, 4096)], 32, 8, note="Llama-3-8B, q and v, r = 8"),
    grading.Case([(192, 192)], 6, 1, note="one square matrix per layer, r = 1"),
], hint="A is (r, in) and B is (out, r): r·(in + out) per matrix, for every layer")

# %% hidden="lora_param_count" points=1
### BEGIN HIDDEN TESTS
llama = peft.REAL_CONFIGS["Llama-3-8B"]
shapes = [peft.linear_shapes(llama)[n] for n in peft.ALL_LINEAR]
grading.check_value(lora_param_count(shapes, 32, 16),
                    peft.trainable_params(llama, "lora", r=16), what="LoRA r=16 on all linears")
grading.check_function(lora_param_count, _lora_count_ref, mistakes=CATALOGUE.mistakes("lora_param_count"), cases=[
    grading.Case([], 4, 8, note="nothing adapted"),
    grading.Case([(14336, 4096), (4096, 14336)], 28, 64, note="MLP only, r = 64"),
])
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 5.2 — predict first: the memory of training state · 2 points · difficulty 1 · ~5 min
#
# With the accounting above (16 bytes per trainable parameter, 2 per frozen one, activations
# left out), write `training_state_bytes(n_frozen, n_trainable)`. Predict the GB for full
# fine-tuning of Llama-3-8B (8.03 B parameters, all trainable) and for LoRA r = 16 on all its
# linear layers (42 M trainable) before running the table.

# %% solution="training_state_bytes"
def training_state_bytes(n_frozen: int, n_trainable: int) -> int:
    """Bytes of weights + gradients + optimizer state (no activations)."""
    ### BEGIN SOLUTION
    return 2 * n_frozen + 16 * n_trainable
    ### END SOLUTION


# %% check="training_state_bytes" points=1
def _state_ref(n_frozen, n_trainable):
    return 2 * n_frozen + 16 * n_trainable


grading.check_function(training_state_bytes, _state_ref, mistakes=CATALOGUE.mistakes("training_state_bytes"), cases=[
    grading.Case(0, 8_030_261_248, note="full fine-tuning of Llama-3-8B"),
    grading.Case(8_030_261_248, 41_943_040, note="LoRA r = 16 on every linear layer"),
], hint="a trainable parameter: bf16 weight + bf16 grad + fp32 master + two fp32 Adam moments")

# %% hidden="training_state_bytes" points=1
### BEGIN HIDDEN TESTS
llama = peft.REAL_CONFIGS["Llama-3-8B"]
for method in ("full", "lora", "ia3"):
    m = peft.finetune_memory(llama, method)
    frozen = 0 if method == "full" else peft.trainable_params(llama, "full")
    grading.check_value(training_state_bytes(frozen, int(m["trainable"])),
                        m["weights"] + m["grads"] + m["optimizer"], what=f"{method} state bytes")
### END HIDDEN TESTS

# %% [markdown]
# `peft.finetune_memory` counts every method this chapter builds on real configs (activations for
# one 2048-token sequence, bf16, no gradient checkpointing):

# %%
def memory_table(name: str, methods=("full", "galore", "lora", "qlora", "dora", "ia3", "prefix")):
    c = peft.REAL_CONFIGS[name]
    print(f"{name}: {peft.trainable_params(c, 'full') / 1e9:.2f} B parameters")
    print(f"{'method':<8}{'trainable':>14}{'weights GB':>12}{'grads GB':>10}{'optim GB':>10}"
          f"{'activ. GB':>11}{'total GB':>10}")
    for m in methods:
        b = peft.finetune_memory(c, m, batch=1, seq=2048, r=16)
        print(f"{m:<8}{b['trainable']:>14,.0f}" + "".join(
            f"{b[k] / 1e9:>{w}.1f}" for k, w in (("weights", 12), ("grads", 10),
                                                  ("optimizer", 10), ("activations", 11),
                                                  ("total", 10))))


memory_table("Llama-3-8B")
memory_table("Qwen2-7B")

# %% [markdown]
# Full fine-tuning needs ~130 GB before activations: more than one 80 GB GPU. LoRA brings the
# weight-related memory down to the frozen bf16 copy (16 GB); QLoRA stores that copy in 4-bit
# NF4 (~5 GB). GaLore keeps training every weight but projects Adam's moments to rank 128.
# The activations are the same for every method: gradients must flow back through the frozen
# layers to reach the adapters (gradient checkpointing, not PEFT, is the cure for that term).
#
# ## 2. A task the book's model cannot do yet
#
# We build a small instruction task from the standard library the model was trained on: given a
# function signature, write the call with the arguments by name — `self`/`cls`, defaults and
# annotations dropped. Train and held-out examples come from the train and validation files of
# the corpus split, so no held-out function was seen in fine-tuning.

# %%
SIG = re.compile(r"^[ \t]*def ([a-z]\w*)\(([\w ,=.'\"]*)\)(?: -> [\w.]+)?:", re.M)


def signature_examples(split: str) -> list[tuple[str, str]]:
    """(prompt, answer) pairs from the functions of one corpus split (1-3 plain parameters)."""
    out = {}
    for doc in load_documents(split=split):
        for name, raw in SIG.findall(doc.text):
            params = [p.split("=")[0].strip() for p in raw.split(",") if p.strip()]
            params = [p for p in params if p not in ("self", "cls")]
            if 1 <= len(params) <= 3 and len(raw) < 50 and all(p.isidentifier() for p in params):
                out[(name, raw)] = (f"### Signature: def {name}({raw}):\n### Call:",
                                    f" {name}({', '.join(params)})\n")
    return sorted(out.values())


def encode(pairs: list[tuple[str, str]], T: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (n, T) and targets (n, T): next-token targets on the answer only, -100 elsewhere."""
    X, Y = [], []
    for prompt, answer in pairs:
        a, b = tok.encode(prompt), tok.encode(answer)
        ids, tgt = (a + b)[: T + 1], ([-100] * (len(a) - 1) + b)[:T]
        X.append(ids[:T] + [0] * (T - len(ids[:T])))
        Y.append(tgt + [-100] * (T - len(tgt)))
    return torch.tensor(X), torch.tensor(Y)


train_pairs, test_pairs = signature_examples("train"), signature_examples("val")
g = torch.Generator().manual_seed(0)
train_pairs = [train_pairs[i] for i in torch.randperm(len(train_pairs), generator=g)]
X_train, Y_train = encode(train_pairs[:1500])
X_test, Y_test = encode(test_pairs[:96])
print(f"{len(train_pairs)} training and {len(test_pairs)} held-out signatures, e.g.")
print(test_pairs[3][0] + test_pairs[3][1])

# %% [markdown]
# Three measures on held-out signatures: the **loss** on the answer tokens; **token accuracy** —
# the share of answer tokens the model predicts right (argmax of the next-token logits, given
# the correct tokens before it); and **exact match** — greedy decoding writes the whole answer
# correctly (equivalently: the argmax is right at every answer position, which one forward pass
# checks). We also watch the
# loss on the **pretraining validation set** (stdlib code the model was trained to predict), to
# see what fine-tuning makes it forget.

# %%
val_text = "\n".join(d.text for d in load_documents(split="val"))[:60_000]
val_ids = torch.tensor(tok.encode(val_text)[: 16 * 65]).view(16, 65)


@torch.no_grad()
def evaluate(model: nn.Module) -> dict[str, float]:
    """Task loss, token accuracy and exact match on held-out signatures; loss on pretraining
    validation text."""
    model.eval()
    logits = model(X_test)
    answer = Y_test != -100
    right = logits.argmax(-1) == Y_test
    exact = (right | ~answer).all(1).float().mean()
    token_acc = (right & answer).sum() / answer.sum()
    task = F.cross_entropy(logits.flatten(0, 1), Y_test.flatten(), ignore_index=-100)
    pre = F.cross_entropy(model(val_ids[:, :-1]).flatten(0, 1), val_ids[:, 1:].flatten())
    return {"task loss": task.item(), "token accuracy": token_acc.item(), "exact match": exact.item(),
            "pretrain loss": pre.item()}


def show(name: str, m: dict[str, float]) -> None:
    print(f"{name:<24} task loss {m['task loss']:.2f} · token accuracy "
          f"{100 * m['token accuracy']:.0f}% · exact match {100 * m['exact match']:.0f}%"
          f" · pretraining val loss {m['pretrain loss']:.3f}")


before = evaluate(base_model)
show("book model, no tuning", before)

# %% [markdown]
# The model has never seen this format: it continues with code, not the call. Now the training
# loop every method below shares: AdamW on the trainable parameters, batches of 8 examples,
# loss on the answer tokens only.

# %%
def finetune(model: nn.Module, steps: int = 60, lr: float = 3e-3, batch: int = 8,
             optimizer=None, desc: str = "fine-tune", data=None) -> float:
    """Train ``model`` on ``data`` = (ids, targets) (default: the signature task); returns seconds."""
    X, Y = data or (X_train, Y_train)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = optimizer or torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(1)
    model.train()
    start = time.perf_counter()
    for _ in tqdm(range(steps), desc=desc, leave=False):
        i = torch.randint(0, len(X), (batch,), generator=gen)
        loss = F.cross_entropy(model(X[i]).flatten(0, 1), Y[i].flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return time.perf_counter() - start


# %% [markdown]
# ## 3. The low-rank hypothesis, measured
#
# LoRA bets that the update fine-tuning needs has low "intrinsic rank" (Aghajanyan et al., 2020).
# Test it: fine-tune **every** weight of the book's model on the task, then take the SVD of the
# update $\Delta W = W_\text{tuned} - W_\text{pretrained}$ of each matrix. If most of
# $\|\Delta W\|_F^2 = \sum_i \sigma_i^2$ sits in a few singular values, a rank-$r$ update can
# carry it.

# %% [markdown]
# ### Exercise 5.3 — effective rank · 2 points · difficulty 1 · ~5 min
#
# Write `effective_rank(delta, energy)`: the smallest $k$ such that the top-$k$ singular values
# hold at least the fraction `energy` of $\sum_i \sigma_i^2$.

# %% solution="effective_rank"
def effective_rank(delta: torch.Tensor, energy: float = 0.9) -> int:
    """delta: (m, n) -> the number of singular values holding ``energy`` of the squared norm."""
    ### BEGIN SOLUTION
    s2 = torch.linalg.svdvals(delta.float()) ** 2
    frac = s2.cumsum(0) / s2.sum()
    return int((frac < energy - 1e-6).sum()) + 1
    ### END SOLUTION


# %% check="effective_rank" points=1
def _eff_rank_ref(delta, energy=0.9):
    s2 = torch.linalg.svdvals(delta.float()) ** 2
    return int((s2.cumsum(0) / s2.sum() < energy - 1e-6).sum()) + 1


g = torch.Generator().manual_seed(0)
grading.check_function(effective_rank, _eff_rank_ref, block=[torch.linalg.matrix_rank],
                       mistakes=CATALOGUE.mistakes("effective_rank"), cases=[
    grading.Case(torch.randn(8, 3, generator=g) @ torch.randn(3, 10, generator=g), 0.999,
                 note="an exactly rank-3 matrix"),
    grading.Case(torch.diag(torch.tensor([3.0, 2.0, 1.0])), 0.9, note="σ² = 9, 4, 1"),
], hint="square the singular values (energy is σ²), then a cumulative sum")

# %% hidden="effective_rank" points=1
### BEGIN HIDDEN TESTS
grading.check_function(effective_rank, _eff_rank_ref, mistakes=CATALOGUE.mistakes("effective_rank"), cases=[
    grading.Case(torch.eye(5), 0.5, note="flat spectrum"),
    grading.Case(torch.randn(20, 12, generator=g), 0.8, note="random (m > n)"),
    grading.Case(torch.diag(torch.tensor([1.0, 0.0, 0.0])), 0.99, note="rank one"),
])
### END HIDDEN TESTS

# %%
def use_learner(name: str, learner, reference, probe) -> object:
    """The learner's version when it reproduces llmlab's on ``probe`` (a function of one
    implementation returning a comparable value), else llmlab's, with a note saying which."""
    return grading.prefer_yours(learner, reference, [grading.Case()], name=name,
                                probe=lambda impl: (lambda: probe(impl)))


rank_of = use_learner("effective_rank", effective_rank, _eff_rank_ref,
                      lambda f: f(torch.diag(torch.tensor([4.0, 2.0, 1.0, 0.5])), 0.9))
full_model = fresh_model()
full_time = finetune(full_model, steps=30, lr=1e-3, desc="full fine-tuning")
full_metrics = evaluate(full_model)
show("full fine-tuning", full_metrics)

# %%
pre = dict(base_model.named_parameters())
spectra, ranks = {}, []
for name, p in full_model.named_parameters():
    if p.dim() == 2 and name.startswith("blocks."):
        delta = (p - pre[name]).detach()
        spectra[name] = torch.linalg.svdvals(delta)
        ranks.append((name, rank_of(delta, 0.9), min(delta.shape)))
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.5))
for name in ("blocks.0.attn.q_proj.weight", "blocks.3.attn.v_proj.weight",
             "blocks.5.mlp.down_proj.weight"):
    s2 = spectra[name] ** 2
    ax1.plot((s2.cumsum(0) / s2.sum()).numpy(), label=name.replace(".weight", ""))
ax1.axhline(0.9, color="gray", ls=":")
ax1.set_xlabel("number of singular values"), ax1.set_ylabel("fraction of ‖ΔW‖²")
ax1.set_title("energy of the full fine-tuning update"), ax1.legend(fontsize=8)
ax2.hist([r / d for _, r, d in ranks], bins=12)
ax2.set_xlabel("rank holding 90% of ‖ΔW‖² ÷ full rank"), ax2.set_ylabel("matrices")
ax2.set_title(f"all {len(ranks)} weight matrices of the blocks")
plt.tight_layout()
plt.show()
median_rank, full_rank = sorted(r for _, r, _ in ranks)[len(ranks) // 2], ranks[0][2]
share = median_rank / full_rank
print(f"median rank for 90% of the update: {median_rank} of {full_rank} ({100 * share:.0f}% of "
      f"the directions); {sum(r <= full_rank // 4 for _, r, _ in ranks)} of {len(ranks)} "
      f"matrices need at most a quarter of theirs")
assert share < 0.5, "the update should need well under half of the directions"

# %% [markdown]
# The update is far from full rank — the printed median rank is a fraction of the full one —
# but on this small model and short run it is not *tiny* either: 90% of it takes tens of
# directions, not a handful (the LoRA paper measured much lower ranks on GPT-3, whose
# matrices are 100× wider). Drag the slider to truncate every $\Delta W$ to rank $r$ and see how
# much of the fine-tuned behaviour survives.

# %% tags=["nbval-ignore-output"]
def truncated_update(r: int = 4) -> None:
    model = fresh_model()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in spectra:
                U, S, Vh = torch.linalg.svd(dict(full_model.named_parameters())[name] - p)
                p += (U[:, :r] * S[:r]) @ Vh[:r]
    show(f"rank-{r} truncation", evaluate(model))


widgets.interact(truncated_update, r=widgets.IntSlider(4, 1, 64, 1, continuous_update=False))

# %% [markdown]
# ## 4. LoRA, implemented
#
# ### Exercise 5.4 — the LoRA forward · 2 points · difficulty 1 · ~10 min
#
# Write `lora_linear(x, W, b, A, B, alpha, r, rslora=False)` $= xW^\top + b + s\,(xA^\top)B^\top$
# with $s = \alpha/r$, or $s = \alpha/\sqrt r$ for rsLoRA (Kalajdzievski, 2023). Never form
# $BA$: the two thin matmuls cost $r(d_\text{in} + d_\text{out})$ per token.

# %% solution="lora_linear"
def lora_linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, A: torch.Tensor,
                B: torch.Tensor, alpha: float, r: int, rslora: bool = False) -> torch.Tensor:
    """x: (..., in); W: (out, in); b: (out,) | None; A: (r, in); B: (out, r) -> (..., out)."""
    ### BEGIN SOLUTION
    s = alpha / r ** 0.5 if rslora else alpha / r
    y = x @ W.T + (0 if b is None else b)
    return y + s * ((x @ A.T) @ B.T)
    ### END SOLUTION


# %% check="lora_linear" points=1
def _lora_ref(x, W, b, A, B, alpha, r, rslora=False):
    return peft.lora_forward(x, W, b, A, B, peft.lora_scaling(r, alpha, rslora))


g = torch.Generator().manual_seed(0)
R = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
grading.check_function(lora_linear, _lora_ref, block=[peft.lora_forward, peft.LoRALinear],
                       mistakes=CATALOGUE.mistakes("lora_linear"), cases=[
    grading.Case(R(2, 5, 8), R(6, 8), R(6), R(2, 8), R(6, 2), 4.0, 2, note="s = alpha / r = 2"),
    grading.Case(R(3, 8), R(4, 8), None, R(4, 8), R(4, 4), 8.0, 4, note="no bias"),
    grading.Case(R(2, 8), R(4, 8), R(4), R(4, 8), R(4, 4), 8.0, 4, True, note="rsLoRA: s = 4"),
], hint="s = alpha / r; the update is (x Aᵀ) Bᵀ, added to x Wᵀ + b")

# %% hidden="lora_linear" points=1
### BEGIN HIDDEN TESTS
grading.check_function(lora_linear, _lora_ref, mistakes=CATALOGUE.mistakes("lora_linear"), cases=[
    grading.Case(R(2, 3, 8), R(6, 8), R(6), R(4, 8), R(6, 4), 16.0, 4, True, note="rsLoRA"),
    grading.Case(R(1, 16), R(16, 16), R(16), R(1, 16), R(16, 1), 1.0, 1, note="rank 1"),
])
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 5.5 — a LoRA layer that merges · 3 points · difficulty 2 · ~20 min
#
# Write `LoRALayer(base, r, alpha)` wrapping a frozen linear layer `base` (with `base.weight`
# `(out, in)` and `base.bias`): parameters `lora_A` `(r, in)` initialised with
# `nn.init.kaiming_uniform_(a=math.sqrt(5))` and `lora_B` `(out, r)` at **zero**; `forward(x)`
# as in 5.4; `merge()` adds $s\,BA$ into `base.weight` (in place, under `torch.no_grad()`) so the
# forward costs nothing extra, and `unmerge()` takes it out again. Keep a flag so a merged layer
# does not add the update twice. The fine-tune below uses your class when it passes.

# %% solution="lora_layer"
class LoRALayer(nn.Module):
    """base: a frozen linear layer; forward (..., in) -> (..., out)."""

    def __init__(self, base: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
                 use_rslora: bool = False) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        out_f, in_f = base.weight.shape
        self.base, self.scaling, self.merged = base, alpha / r, False
        self.lora_A = nn.Parameter(torch.empty(r, in_f))
        self.lora_B = nn.Parameter(torch.zeros(out_f, r))
        nn.init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)
        ### END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        y = self.base(x)
        return y if self.merged else y + self.scaling * (x @ self.lora_A.T) @ self.lora_B.T
        ### END SOLUTION

    @torch.no_grad()
    def merge(self) -> None:
        ### BEGIN SOLUTION
        if not self.merged:
            self.base.weight += self.scaling * self.lora_B @ self.lora_A
            self.merged = True
        ### END SOLUTION

    @torch.no_grad()
    def unmerge(self) -> None:
        ### BEGIN SOLUTION
        if self.merged:
            self.base.weight -= self.scaling * self.lora_B @ self.lora_A
            self.merged = False
        ### END SOLUTION


# %% check="lora_layer" points=1
def _lora_trace(cls, seed: int, r: int, alpha: float) -> list:
    """Build on a fresh base, give B values, and record forward / merge / unmerge."""
    torch.manual_seed(seed)
    base = Linear(12, 6)
    w0 = base.weight.detach().clone()
    layer = cls(base, r=r, alpha=alpha)
    x = torch.randn(3, 12)
    out = [layer(x).detach().clone()]  # B = 0: exactly the base layer
    with torch.no_grad():
        layer.lora_A.copy_(torch.randn(r, 12))
        layer.lora_B.copy_(torch.randn(6, r))
    out.append(layer(x).detach().clone())
    layer.merge()
    layer.merge()  # twice: must not add the update twice
    out += [layer(x).detach().clone(), base.weight.detach().clone()]
    layer.unmerge()
    out += [layer(x).detach().clone(), (base.weight - w0).abs().max().detach().reshape(1)]
    return out


_layer_mistakes = {k: (lambda *a, v=v: _lora_trace(v, *a))
                   for k, v in CATALOGUE.mistakes("lora_layer").items()}
grading.check_function(lambda *a: _lora_trace(LoRALayer, *a),
                       lambda *a: _lora_trace(peft.LoRALinear, *a), name="LoRALayer",
                       block=[peft.LoRALinear, peft.lora_forward], mistakes=_layer_mistakes, cases=[
    grading.Case(0, 4, 8.0, note="[init, adapted, merged, merged W, unmerged, |W - W0|]"),
], hint="merge: base.weight += s·B@A once (remember it is merged); forward then skips the update")

# %% hidden="lora_layer" points=2
### BEGIN HIDDEN TESTS
grading.check_function(lambda *a: _lora_trace(LoRALayer, *a),
                       lambda *a: _lora_trace(peft.LoRALinear, *a), name="LoRALayer",
                       mistakes=_layer_mistakes, cases=[
    grading.Case(1, 1, 1.0, note="rank 1"), grading.Case(2, 6, 3.0, note="rank 6, alpha 3"),
])
torch.manual_seed(0)
_layer = LoRALayer(Linear(12, 6), r=4)
grading.expect(bool((_layer.lora_B == 0).all()) and _layer.lora_A.abs().max() > 0,
               "lora_B must start at zero and lora_A random (Kaiming uniform)")
grading.expect(_layer.lora_A.abs().max() <= 1 / 12 ** 0.5 + 1e-6,
               "Kaiming-uniform with a = sqrt(5) keeps |A| <= 1/sqrt(in_features)")
### END HIDDEN TESTS

# %% [markdown]
# ### Exercise 5.6 — capstone: LoRA injection by name, and an adapter `peft` loads · 8 points · difficulty 3 · ~60 min
#
# A layer is not a fine-tuning method yet: the method is *which* layers get one, what stays
# frozen, how the update folds into the weights for serving, and a file other tools read. Write
# `LoRAModel`, the part of Hugging Face `peft` that `get_peft_model` with a `LoraConfig` runs,
# for the book's model. The contract:
#
# - **Which modules.** `target_modules` follows `peft`'s rules: a `str` is a regular
#   expression the *whole* module name must match; a list or tuple holds names or suffixes — a
#   module matches when its name equals an entry or ends with `"." + entry`. Only linear layers
#   (`torch.nn.Linear`, `llmlab.nn.Linear`) are adapted. When nothing matches, raise
#   `ValueError` naming the patterns (a typo would otherwise train nothing); likewise when `r`
#   is not a positive int or `alpha` is not positive.
# - **Wrapping.** Each matching layer `base` is replaced, in place inside `model`, by
#   `layer(base, r=r, alpha=alpha)` — your `LoRALayer` of 5.5, or any class with that
#   constructor, `lora_A`, `lora_B`, `merge()` and `unmerge()`. `self.model` is the model and
#   `self.targets` the adapted names, in `model.named_modules()` order; `forward` is the model's.
# - **Trainable.** Afterwards exactly the `lora_A` and `lora_B` tensors require gradients.
# - **Merge.** `merge()` folds every adapter into its weight: the logits do not change (to fp32
#   round-off) and merging twice is merging once; `unmerge()` gives back the base weights.
# - **peft's layout.** `peft_state_dict(hf_names)` returns detached copies keyed
#   `base_model.model.<HF module name>.lora_A.weight` `(r, in)` and `….lora_B.weight`
#   `(out, r)`, exactly the keys `peft.get_peft_model_state_dict` gives for the same targets on
#   the `transformers` export of the model (`hf_names`, from `peft.hf_module_names(config)`,
#   maps llmlab's module names to the HF ones). `save_pretrained(directory, hf_names)` creates
#   `directory` with `adapter_model.safetensors` (those tensors) and `adapter_config.json`
#   (`peft_type` `"LORA"`, `task_type` `"CAUSAL_LM"`, `r`, `lora_alpha` and `target_modules`:
#   the HF names adapted) — what `peft.PeftModel.from_pretrained` reads.
#   `load_pretrained(directory, hf_names)` loads such a directory into this model's adapters; a
#   directory that is not a LoRA adapter, a file whose keys are not exactly this model's, or a
#   tensor of another shape raises `ValueError` naming what came.
# - **Forbidden:** `llmlab.peft`'s `apply_lora`, `replace_modules`, `targets`, `name_matches`,
#   `merge`, `unmerge`, `to_peft_state_dict`, `from_peft_state_dict`, `save_peft_adapter`,
#   `load_peft_adapter` (the check blocks them). `safetensors.torch` and `json` are yours to use.
#
# The check builds a tiny Llama-style model, adapts it with `llmlab`'s `LoRALinear` as `layer`,
# and compares what was wrapped, what trains, the logits adapted, merged and unmerged, the base
# weights after unmerge, the peft tensors, and a save → load round trip. The rest of the
# chapter — the fine-tune table and the adapter loaded into `peft` — runs on your `LoRAModel`
# once it passes.
#
# <details><summary>Hint 1 (the idea)</summary>Find the names first, replace second: a module
# tree changed while <code>named_modules()</code> walks it is walked wrongly. A module is
# replaced by setting the attribute of its parent.</details>
#
# <details><summary>Hint 2 (the structure)</summary>Freeze the whole model before wrapping: the
# new adapter tensors are then the only ones that train. Keep <code>{name: wrapped layer}</code>;
# merge, unmerge and the state dict are loops over it. <code>name.rpartition(".")</code> splits a
# name into its parent's name and the attribute.</details>
#
# <details><summary>Hint 3 (the key formulas)</summary>A list entry <code>p</code> matches when
# <code>name == p or name.endswith("." + p)</code>; a string <code>s</code> when
# <code>re.fullmatch(s, name)</code>. A key is
# <code>f"base_model.model.{hf_names[name]}.lora_A.weight"</code>. Files:
# <code>safetensors.torch.save_file(tensors, path)</code> / <code>load_file(path)</code>,
# <code>json.dumps(config)</code>.</details>

# %% solution="lora_model"
class LoRAModel(nn.Module):
    """LoRA on every linear layer of ``model`` whose name matches ``target_modules``."""

    def __init__(self, model: nn.Module, target_modules: str | list[str] | tuple[str, ...],
                 r: int = 8, alpha: float = 16.0, layer: type = LoRALayer) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        def wanted(name: str) -> bool:
            if isinstance(target_modules, str):
                return re.fullmatch(target_modules, name) is not None
            return any(name == p or name.endswith("." + p) for p in target_modules)

        if not (isinstance(r, int) and r > 0) or not alpha > 0:
            raise ValueError(f"r must be a positive int and alpha positive, got r={r!r}, "
                             f"alpha={alpha!r}")
        self.model, self.r, self.alpha = model, r, alpha
        self.targets = [n for n, m in model.named_modules()
                        if n and isinstance(m, (nn.Linear, Linear)) and wanted(n)]
        if not self.targets:
            raise ValueError(f"no linear layer matches target_modules={target_modules!r}; "
                             f"names look like {[n for n, _ in model.named_modules() if n][:6]}")
        for p in model.parameters():
            p.requires_grad_(False)
        self.layers = {}
        for name in self.targets:
            parent, _, child = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            self.layers[name] = layer(getattr(owner, child), r=r, alpha=alpha)
            setattr(owner, child, self.layers[name])
        ### END SOLUTION

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def merge(self) -> None:
        ### BEGIN SOLUTION
        for m in self.layers.values():
            m.merge()
        ### END SOLUTION

    def unmerge(self) -> None:
        ### BEGIN SOLUTION
        for m in self.layers.values():
            m.unmerge()
        ### END SOLUTION

    def peft_state_dict(self, hf_names: dict[str, str]) -> dict[str, torch.Tensor]:
        ### BEGIN SOLUTION
        out = {}
        for name, m in self.layers.items():
            for part in ("lora_A", "lora_B"):
                out[f"base_model.model.{hf_names[name]}.{part}.weight"] = \
                    getattr(m, part).detach().clone()
        return out
        ### END SOLUTION

    def save_pretrained(self, directory: str | Path, hf_names: dict[str, str]) -> None:
        ### BEGIN SOLUTION
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous() for k, v in self.peft_state_dict(hf_names).items()}
        save_file(tensors, str(directory / "adapter_model.safetensors"))
        config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": self.r,
                  "lora_alpha": self.alpha, "target_modules": [hf_names[n] for n in self.targets]}
        (directory / "adapter_config.json").write_text(json.dumps(config))
        ### END SOLUTION

    def load_pretrained(self, directory: str | Path, hf_names: dict[str, str]) -> None:
        ### BEGIN SOLUTION
        config = json.loads((Path(directory) / "adapter_config.json").read_text())
        if config.get("peft_type") != "LORA":
            raise ValueError(f"not a LoRA adapter: peft_type {config.get('peft_type')!r}")
        state = load_file(str(Path(directory) / "adapter_model.safetensors"))
        mine = self.peft_state_dict(hf_names)
        missing, extra = sorted(set(mine) - set(state)), sorted(set(state) - set(mine))
        if missing or extra:
            raise ValueError(f"the adapter does not fit: missing {missing[:4]}, unexpected {extra[:4]}")
        for name, m in self.layers.items():
            for part in ("lora_A", "lora_B"):
                key, p = f"base_model.model.{hf_names[name]}.{part}.weight", getattr(m, part)
                if state[key].shape != p.shape:
                    raise ValueError(f"{key}: the model has {tuple(p.shape)}, the file "
                                     f"{tuple(state[key].shape)}")
                with torch.no_grad():
                    p.copy_(state[key])
        ### END SOLUTION


# %% check="lora_model" points=4
_inject_cfg = GPTConfig.llama_style(vocab_size=50, n_layer=2, n_head=4, n_kv_head=2, d_model=32,
                                    d_ff=48, block_size=32)
_inject_names = peft.hf_module_names(_inject_cfg)


class _RefLoRAModel(nn.Module):
    """The reference: llmlab.peft's pieces, with peft's matching rules."""

    def __init__(self, model, target_modules, r=8, alpha=16.0, layer=peft.LoRALinear):
        super().__init__()
        if not (isinstance(r, int) and r > 0) or not alpha > 0:
            raise ValueError(f"r={r!r}, alpha={alpha!r}")
        self.model, self.r, self.alpha = peft.freeze(model), r, alpha
        match = ((lambda n: re.fullmatch(target_modules, n) is not None)
                 if isinstance(target_modules, str) else
                 (lambda n: any(n == p or n.endswith("." + p) for p in target_modules)))
        self.targets = [n for n in peft.targets(model, [".*"]) if match(n)]
        if not self.targets:
            raise ValueError(f"nothing matches {target_modules!r}")
        peft.replace_modules(model, self.targets, lambda _, m: layer(m, r=r, alpha=alpha))

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def merge(self):
        peft.merge(self.model)

    def unmerge(self):
        peft.unmerge(self.model)

    def peft_state_dict(self, hf_names):
        return peft.to_peft_state_dict(self.model)

    def save_pretrained(self, directory, hf_names):
        peft.save_peft_adapter(self.model, directory, self.r, self.alpha)

    def load_pretrained(self, directory, hf_names):
        peft.load_peft_adapter(self.model, directory)


def _inject_trace(cls, seed: int, patterns, r: int, alpha: float) -> dict:
    """Adapt a tiny model with ``cls``; record what a LoRA injection must get right."""
    torch.manual_seed(seed)
    model = GPT(_inject_cfg).eval()
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randint(0, 50, (2, 6))
    adapted = cls(model, patterns, r=r, alpha=alpha, layer=peft.LoRALinear)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, peft.LoRALinear)]
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n in wrapped:  # adapters that change the output
            m = model.get_submodule(n)
            m.lora_A.copy_(0.3 * torch.randn(m.lora_A.shape, generator=g))
            m.lora_B.copy_(0.3 * torch.randn(m.lora_B.shape, generator=g))
        out = {"wrapped": wrapped,
               "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
               "logits adapted": adapted(x)}
        adapted.merge()
        adapted.merge()
        out["logits merged (merge called twice)"] = adapted(x)
        adapted.unmerge()
        out["logits unmerged"] = adapted(x)
        out["|W - W0| after unmerge"] = torch.stack(
            [(model.get_submodule(n).base.weight - w0[n + ".weight"]).abs().max() for n in wrapped])
    state = adapted.peft_state_dict(_inject_names)
    out["peft keys"] = sorted(state)
    out["peft tensors"] = [state[k] for k in sorted(state)]
    with tempfile.TemporaryDirectory() as d:
        adapted.save_pretrained(Path(d) / "adapter", _inject_names)
        config = json.loads((Path(d) / "adapter" / "adapter_config.json").read_text())
        out["adapter_config.json"] = {k: config.get(k) for k in ("peft_type", "task_type", "r",
                                                                  "lora_alpha")}
        out["adapter_config.json target_modules"] = sorted(config.get("target_modules") or [])
        torch.manual_seed(seed)
        again = cls(GPT(_inject_cfg).eval(), patterns, r=r, alpha=alpha, layer=peft.LoRALinear)
        again.load_pretrained(Path(d) / "adapter", _inject_names)
        with torch.no_grad():
            out["logits after save -> load"] = again(x)
    return out


_inject_mistakes = {k: (lambda *a, v=v: _inject_trace(v, *a))
                    for k, v in CATALOGUE.mistakes("lora_model").items()}
_inject_blocked = [peft.apply_lora, peft.replace_modules, peft.targets, peft.name_matches,
                   peft.merge, peft.unmerge, peft.to_peft_state_dict, peft.from_peft_state_dict,
                   peft.save_peft_adapter, peft.load_peft_adapter]
grading.check_function(
    lambda *a: _inject_trace(LoRAModel, *a), lambda *a: _inject_trace(_RefLoRAModel, *a),
    name="LoRAModel", block=_inject_blocked,
    mistakes=_inject_mistakes,
    cases=[grading.Case(0, ("q_proj", "v_proj"), 4, 8.0, note="suffixes: q and v of every block"),
           grading.Case(1, r"blocks\.1\.mlp\.\w+_proj", 2, 2.0,
                        note="a regex: the MLP of the second block")],
    hint="compare the entry that differs with the contract above; the hints below go from the "
         "idea to the formulas")

# %% hidden="lora_model" points=4
### BEGIN HIDDEN TESTS
grading.check_function(
    lambda *a: _inject_trace(LoRAModel, *a), lambda *a: _inject_trace(_RefLoRAModel, *a),
    name="LoRAModel", block=_inject_blocked, mistakes=_inject_mistakes, cases=[
        grading.Case(2, ["attn.o_proj", "blocks.0.mlp.down_proj"], 3, 6.0,
                     note="dotted suffixes and a full name"),
        grading.Case(3, r".*_proj", 1, 1.0, note="a regex matching every linear layer, rank 1"),
        grading.Case(4, r"blocks\.0\.attn\.q_proj|v_proj", 2, 4.0,
                     note="a regex matches the whole name: 'v_proj' alone is no full name"),
        grading.Case(4, "q_proj", 2, 4.0, note="a string is a regex: 'q_proj' matches no full name"),
        grading.Case(5, ["tok_emb", "norm1"], 2, 4.0, note="names of layers that are not linear"),
        grading.Case(6, ["q_proj"], 0, 4.0, note="r = 0 is not a rank"),
    ])
torch.manual_seed(6)
_lm = LoRAModel(GPT(_inject_cfg).eval(), ["k_proj"], r=2, alpha=4.0, layer=peft.LoRALinear)
with tempfile.TemporaryDirectory() as _d:
    _lm.save_pretrained(_d, _inject_names)
    _other = LoRAModel(GPT(_inject_cfg).eval(), ["v_proj"], r=2, alpha=4.0, layer=peft.LoRALinear)
    try:
        _other.load_pretrained(_d, _inject_names)
        _raised = False
    except ValueError:
        _raised = True
grading.expect(_raised, "load_pretrained must raise ValueError for an adapter of other modules")
if HF_PEFT:
    torch.manual_seed(7)
    _base = GPT(_inject_cfg).eval()
    _sd, _hf_cfg = to_hf(_base)
    _hf = transformers.AutoModelForCausalLM.from_config(_hf_cfg).eval()
    _hf.load_state_dict(_sd, strict=False)
    _pm = hf_peft.get_peft_model(_hf, hf_peft.LoraConfig(r=2, lora_alpha=4,
                                                        target_modules=["o_proj", "up_proj"]))
    _lm = LoRAModel(_base, ["o_proj", "up_proj"], r=2, alpha=4.0, layer=peft.LoRALinear)
    grading.check_value(sorted(_lm.peft_state_dict(_inject_names)),
                        sorted(hf_peft.get_peft_model_state_dict(_pm)),
                        what="the keys of peft_state_dict (peft's get_peft_model_state_dict)")
    with torch.no_grad():
        for _n, _p in _base.named_parameters():
            if _p.requires_grad:
                _p.copy_(0.2 * torch.randn(_p.shape))
    _x = torch.randint(0, 50, (2, 7))
    with tempfile.TemporaryDirectory() as _d:
        _lm.save_pretrained(_d, _inject_names)
        _hf2 = transformers.AutoModelForCausalLM.from_config(_hf_cfg).eval()
        _hf2.load_state_dict(_sd, strict=False)
        _loaded = hf_peft.PeftModel.from_pretrained(_hf2, _d).eval()
        with torch.no_grad():
            grading.check_value(_loaded(input_ids=_x).logits, _lm(_x), atol=1e-4,
                                what="logits of peft.PeftModel.from_pretrained on your directory")
### END HIDDEN TESTS


# %% [markdown]
# ## 5. Fine-tuning the book's model with LoRA
#
# Your `LoRAModel` (when it passes; `peft.apply_lora` otherwise) freezes the book's model and
# wraps its linear layers with your `LoRALayer` (when it passes): rank 8 on every linear layer
# of the blocks.

# %%
LoRA = use_learner("LoRALayer", LoRALayer, peft.LoRALinear,
                   lambda cls: _lora_trace(cls, 0, 4, 8.0)[2])
Injector = grading.prefer_yours(
    LoRAModel, _RefLoRAModel, [grading.Case(0, ("q_proj", "v_proj"), 4, 8.0)], name="LoRAModel",
    probe=lambda cls: (lambda *a: _inject_trace(cls, *a)), block=_inject_blocked)
seed_all(0)  # the same adapters whichever LoRAModel and LoRALayer run
lora = Injector(fresh_model(), peft.ALL_LINEAR, r=8, alpha=16.0, layer=LoRA)
lora_model = lora.model
n_train, n_total = peft.count_trainable(lora_model)
print(f"{len(lora.targets)} layers adapted, e.g. {lora.targets[:2]}")
print(f"trainable: {n_train:,} of {n_total:,} parameters ({100 * n_train / n_total:.1f}%)")
lora_time = finetune(lora_model, steps=40, lr=3e-3, desc="LoRA r=8")
lora_metrics = evaluate(lora_model)
show("book model, no tuning", before)
show("LoRA r=8", lora_metrics)
show("full fine-tuning", full_metrics)

# %% tags=["nbval-ignore-output"]
print(f"LoRA: {lora_time:.1f} s for 40 steps · full fine-tuning: {full_time:.1f} s for 30 steps")

# %% [markdown]
# Greedy decoding with the tuned model, on signatures it never saw (the adapter is merged first:
# the same function, no extra cost per token). Compare the measures above: 40 small steps lower
# the loss on the answers and raise the share of answer tokens predicted right; the line after
# the samples counts how many of them are exactly right:

# %%
lora.merge()
right = 0
for prompt, answer in test_pairs[:4]:
    ids = torch.tensor([tok.encode(prompt)])
    out = generate(lora_model, ids, max_new_tokens=12)
    said = tok.decode(out[0, ids.shape[1]:].tolist()).split("\n")[0]
    right += said.strip() == answer.strip()
    print(prompt.split("\n")[0], "->", said, f"(expected{answer.rstrip()})")
lora.unmerge()
print(f"{right} of 4 samples exactly right; held-out exact match "
      f"{100 * lora_metrics['exact match']:.0f}% after 40 steps (untuned: "
      f"{100 * before['exact match']:.0f}%)")

# %% [markdown]
# ### Rank sweep and forgetting
#
# Same task, same 40 steps, ranks 1, 8 and 32. The pretraining validation loss measures
# **forgetting**: how much worse the model predicts the stdlib code it was trained on. The LoRA
# paper reports that small ranks already match full fine-tuning; "LoRA Learns Less and Forgets
# Less" (Biderman et al., 2024) that LoRA also forgets less than full fine-tuning. The last
# line says which ranks do in this run.

# %% tags=["grading-skip", "nbval-ignore-output"]
seed_all(0)
sweep = {8: (n_train, lora_metrics)}
for r in (1, 32):
    m = peft.apply_lora(fresh_model(), peft.LoRAConfig(r=r, alpha=2 * r, target_modules=peft.ALL_LINEAR))
    finetune(m, steps=40, lr=3e-3, desc=f"LoRA r={r}")
    sweep[r] = (peft.count_trainable(m)[0], evaluate(m))
print(f"{'rank':>6}{'trainable':>11}{'task loss':>11}{'tok acc':>9}{'forgetting':>12}")
for r in sorted(sweep):
    n, m = sweep[r]
    print(f"{r:>6}{n:>11,}{m['task loss']:>11.2f}{100 * m['token accuracy']:>8.0f}%"
          f"{m['pretrain loss'] - before['pretrain loss']:>+12.3f}")
print(f"{'full':>6}{n_total:>11,}{full_metrics['task loss']:>11.2f}"
      f"{100 * full_metrics['token accuracy']:>8.0f}%"
      f"{full_metrics['pretrain loss'] - before['pretrain loss']:>+12.3f}")
# Training at this learning rate amplifies round-off, so the last digits depend on the CPU's
# BLAS; the claims hold everywhere: the small ranks forget less than full fine-tuning, and a
# small rank learns the task as well as full fine-tuning does.
forgetting = {r: m["pretrain loss"] - before["pretrain loss"] for r, (_, m) in sweep.items()}
full_forgetting = full_metrics["pretrain loss"] - before["pretrain loss"]
print("forgetting less than full fine-tuning: rank",
      ", ".join(str(r) for r in sorted(sweep) if forgetting[r] < full_forgetting))
assert max(forgetting[1], forgetting[8]) < full_forgetting, forgetting
assert min(sweep[1][1]["task loss"], sweep[8][1]["task loss"]) <= full_metrics["task loss"] + 0.05

# %% [markdown]
# ## 6. The family: DoRA, IA3, BitFit, prompt and prefix tuning, adapters, QLoRA, GaLore
#
# **DoRA** (Liu et al., 2024) splits each output row of $W$ into a magnitude and a direction,
# trains the magnitude $m$ directly and the direction through LoRA:
#
# $$W' = m \odot \frac{W + sBA}{\lVert W + sBA \rVert_c},\qquad m_0 = \lVert W\rVert_c,$$
#
# where $\lVert\cdot\rVert_c$ is the L2 norm of each row (over the inputs). As the paper (§4.3)
# and `peft` do, the norm is treated as a constant in the backward pass (`.detach()`).
#
# ### Exercise 5.7 — the DoRA forward · 2 points · difficulty 2 · ~15 min
#
# Write `dora_linear(x, W, b, A, B, m, s)` $= x W'^\top + b$ with the norm detached.

# %% solution="dora_linear"
def dora_linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, A: torch.Tensor,
                B: torch.Tensor, m: torch.Tensor, s: float) -> torch.Tensor:
    """x: (..., in); W: (out, in); A: (r, in); B: (out, r); m: (out,) -> (..., out)."""
    ### BEGIN SOLUTION
    V = W + s * B @ A
    W_prime = m[:, None] * V / V.norm(dim=1, keepdim=True).detach()
    return x @ W_prime.T + (0 if b is None else b)
    ### END SOLUTION


# %% check="dora_linear" points=1
grading.check_function(dora_linear, peft.dora_forward, block=[peft.DoRALinear],
                       mistakes=CATALOGUE.mistakes("dora_linear"), cases=[
    grading.Case(R(2, 8), R(4, 8), R(4), R(2, 8), R(4, 2), R(4).abs(), 2.0, note="small layer"),
    grading.Case(R(3, 2, 8), R(5, 8), None, R(3, 8), R(5, 3), torch.ones(5), 0.5, note="no bias"),
], hint="the norm is per output row: V.norm(dim=1), one number per row of W + sBA")

# %% hidden="dora_linear" points=1
### BEGIN HIDDEN TESTS
_A = R(2, 6).requires_grad_(True)
_args = (R(4, 6), R(3, 6), None, _A, R(3, 2), R(3).abs(), 1.5)
dora_linear(*_args).sum().backward()
_got = _A.grad.clone()
_grads = {}
for _label, _forward in [("expected", peft.dora_forward), *CATALOGUE.mistakes("dora_linear").items()]:
    _A.grad = None
    _forward(*_args).sum().backward()
    _grads[_label] = _A.grad.clone()
_expected = _grads.pop("expected")
grading.check_value(_got, _expected, what="the gradient of A", mistakes=_grads)
grading.check_function(dora_linear, peft.dora_forward, mistakes=CATALOGUE.mistakes("dora_linear"), cases=[
    grading.Case(R(1, 6), R(3, 6), R(3), torch.zeros(2, 6), R(3, 2), R(3).abs(), 1.0,
                 note="A = 0: only the magnitude changes W"),
])
### END HIDDEN TESTS

# %% [markdown]
# **Prefix tuning** (Li & Liang, 2021) learns, for every layer, $P$ extra keys and values that
# each real token can attend to; **P-tuning v2** (Liu et al., 2022) is the same without Li &
# Liang's MLP reparameterisation. Attention to the prefix is exactly attention to $P$ tokens
# already in the KV cache — so chapter 08's cache protocol is all it needs: a cache whose
# `update(layer, k, v)` returns the layer's prefix followed by the past and the new keys/values,
# and whose steps count the prefix so the real tokens take positions $P, P+1, \dots$
#
# ### Exercise 5.8 — prefix tuning through the KV cache · 4 points · difficulty 3 · ~30 min
#
# Write `PrefixCache(prefix, batch)` for a `prefix` `(n_layer, 2, P, n_kv_head, d_head)` (keys at
# index 0, values at 1), speaking the KV-cache protocol of chapter 08 (`llmlab.nn.context`). A
# forward is one step: `ctx = cache.prepare(ids)`, `model(ids, ctx)`, `cache.commit(ctx)`.
#
# - `prepare(input_ids (batch, t))` returns a `StepContext(positions, cache=self)`: the
#   positions of the `t` tokens after everything held, the prefix included; no mask (plain
#   causal: the prefix comes first, so every query sees it).
# - `update(layer_idx, k, v)`, called by each attention layer with `k, v`
#   `(batch, t, n_kv_head, d_head)`, returns that layer's keys and values so far
#   `(batch, P + past + t, ...)`; `observe_queries(layer_idx, q)` is part of the protocol too
#   (this cache needs nothing from it).
# - `commit(ctx)` makes the step's keys and values part of the cache; a step never committed
#   leaves it as it was.
#
# Gradients must flow from the model's output back into `prefix`. It must keep working when
# decoding continues one token at a time.
#
# <details><summary>Hint 1 (the idea)</summary>To every query, the prefix is simply the oldest
# part of the cache: attention needs nothing new, only a cache that starts non-empty and
# positions that know it.</details>
#
# <details><summary>Hint 2 (the structure)</summary>Hold, per layer, the keys and values so far
# (starting as the prefix, one copy per batch row without copying memory) and a count of the
# positions held. <code>update</code> builds the layer's new keys/values but only
# <code>commit</code> adopts them.</details>
#
# <details><summary>Hint 3 (the key formulas)</summary><code>prefix[l, 0].expand(batch, *prefix[l, 0].shape)</code>
# keeps the gradient path; <code>torch.cat([past, new], dim=1)</code>; positions
# <code>arange(held, held + t)</code>.</details>

# %% solution="prefix_cache"
class PrefixCache:
    """KV cache pre-filled with learned keys/values; prefix: (n_layer, 2, P, n_kv_head, d_head)."""

    def __init__(self, prefix: torch.Tensor, batch: int) -> None:
        ### BEGIN SOLUTION
        self.kv = [(layer[0].expand(batch, *layer[0].shape), layer[1].expand(batch, *layer[1].shape))
                   for layer in prefix]
        self.length = prefix.shape[2]
        self.pending = [None] * prefix.shape[0]
        ### END SOLUTION

    def prepare(self, input_ids: torch.Tensor) -> StepContext:
        ### BEGIN SOLUTION
        b, t = input_ids.shape
        positions = torch.arange(self.length, self.length + t, device=input_ids.device).expand(b, t)
        return StepContext(positions, cache=self)
        ### END SOLUTION

    def observe_queries(self, layer_idx: int, q: torch.Tensor) -> None:
        ### BEGIN SOLUTION
        pass
        ### END SOLUTION

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor):
        ### BEGIN SOLUTION
        past_k, past_v = self.kv[layer_idx]
        self.pending[layer_idx] = (torch.cat([past_k, k], 1), torch.cat([past_v, v], 1))
        return self.pending[layer_idx]
        ### END SOLUTION

    def commit(self, ctx: StepContext) -> None:
        ### BEGIN SOLUTION
        self.kv, self.pending = self.pending, [None] * len(self.kv)
        self.length += ctx.positions.shape[1]
        ### END SOLUTION


# %% check="prefix_cache" points=2
_tiny_cfg = GPTConfig.llama_style(vocab_size=50, n_layer=2, n_head=4, n_kv_head=2, d_model=32,
                                  block_size=64)


def _prefix_run(cache_cls, seed: int, P: int, decode: int) -> list:
    """Logits of a prompt and of `decode` greedy steps through the cache, and d(loss)/d(prefix)."""
    torch.manual_seed(seed)
    model = GPT(_tiny_cfg).eval()
    prefix = (torch.randn(2, 2, P, 2, 8) * 0.5).requires_grad_(True)
    idx = torch.randint(0, 50, (2, 5))
    cache = cache_cls(prefix, 2)
    ctx = cache.prepare(idx)
    logits = model(idx, ctx)
    cache.commit(ctx)
    out = [logits.detach().clone()]
    logits.square().mean().backward()
    out.append(prefix.grad.clone())
    with torch.no_grad():
        tok_ = logits[:, -1].argmax(-1)
        for _ in range(decode):
            ctx = cache.prepare(tok_[:, None])
            step = model(tok_[:, None], ctx)
            cache.commit(ctx)
            out.append(step.detach().clone())
            tok_ = step[:, -1].argmax(-1)
    return out


def _ref_prefix_cache(prefix, batch):
    return peft.prefill_cache(prefix, batch)


_prefix_mistakes = {k: (lambda *a, v=v: _prefix_run(v, *a))
                    for k, v in CATALOGUE.mistakes("prefix_cache").items()}


grading.check_function(lambda *a: _prefix_run(PrefixCache, *a),
                       lambda *a: _prefix_run(_ref_prefix_cache, *a), name="PrefixCache",
                       block=[peft.prefill_cache, peft.PrefixTuning, kv.ContiguousKVCache],
                       mistakes=_prefix_mistakes,
                       cases=[grading.Case(0, 3, 0, note="prefill: logits and prefix gradient"),
                              grading.Case(1, 2, 3, note="then three decode steps")],
                       hint="update concatenates along dim 1 after what the layer holds; "
                            "positions count the prefix, so the prompt takes P, P+1, ...")

# %% hidden="prefix_cache" points=2
### BEGIN HIDDEN TESTS
grading.check_function(lambda *a: _prefix_run(PrefixCache, *a),
                       lambda *a: _prefix_run(_ref_prefix_cache, *a), name="PrefixCache",
                       mistakes=_prefix_mistakes,
                       cases=[grading.Case(2, 1, 5, note="one virtual token, five decode steps"),
                              grading.Case(3, 6, 1, note="six virtual tokens")])
_c = PrefixCache(torch.zeros(2, 2, 4, 2, 8), 3)
grading.expect(_c.prepare(torch.zeros(3, 2, dtype=torch.long)).positions[0].tolist() == [4, 5],
               "the first step's positions must count the prefix: 4, 5 after 4 virtual tokens")
### END HIDDEN TESTS

# %% [markdown]
# `peft.PrefixTuning` holds the learned prefix and runs the model through such a cache. Started
# from the keys and values of real tokens (Li & Liang's initialisation), it is exactly the model
# reading those tokens first:

# %%
prefix_ids = torch.tensor(tok.encode("### Call:"))
demo = peft.PrefixTuning(fresh_model(), n_virtual=len(prefix_ids), init_ids=prefix_ids)
x = X_test[:2, :12]
ref = demo.model(torch.cat([prefix_ids.expand(2, -1), x], 1))[:, len(prefix_ids):]
assert torch.allclose(demo(x), ref, atol=1e-4)
print(f"prefix of {len(prefix_ids)} virtual tokens = reading them first; "
      f"{peft.count_trainable(demo)[0]:,} trainable numbers")

# %% [markdown]
# Now every method on the same task: same data, the same 20 steps, each with a learning rate in its
# usual range. Memory is what the training state of the book's model takes by the accounting of
# §1 (trainable parameters × 16 bytes + frozen ones × 2; QLoRA's frozen linears at 4.13 bits);
# **GaLore** (Zhao et al., 2024) trains every weight with Adam moments projected to rank 8, and
# **QLoRA** (Dettmers et al., 2023) is LoRA over chapter 07's NF4-frozen base.

# %% tags=["grading-skip"]
def galore_model():
    m = fresh_model()
    mats = [p for n, p in m.named_parameters() if p.dim() == 2 and n.startswith("blocks.")]
    rest = [p for p in m.parameters() if all(p is not q for q in mats)]
    opt = peft.GaLoreAdamW([{"params": mats, "rank": 8, "update_gap": 20, "scale": 1.0},
                            {"params": rest}], lr=1e-3)
    return m, opt


g = torch.Generator().manual_seed(2)  # initial prompts of prompt/prefix tuning
FAMILY = {  # name -> (build the model (and optimizer), learning rate)
    "BitFit": (lambda: peft.apply_bitfit(fresh_model()), 1e-2),
    "IA3": (lambda: peft.apply_ia3(fresh_model()), 3e-2),
    "prompt tuning (16)": (lambda: peft.PromptTuning(fresh_model(), 16, generator=g), 3e-2),
    "prefix tuning (16)": (lambda: peft.PrefixTuning(fresh_model(), 16, generator=g), 1e-2),
    "adapters (m=16)": (lambda: peft.apply_adapters(fresh_model(), 16), 3e-3),
    "DoRA r=8": (lambda: peft.apply_lora(fresh_model(), peft.LoRAConfig(
        r=8, target_modules=peft.ALL_LINEAR, use_dora=True)), 3e-3),
    "QLoRA r=8": (lambda: peft.apply_qlora(fresh_model(), peft.LoRAConfig(
        r=8, target_modules=peft.ALL_LINEAR)), 3e-3),
    "GaLore r=8": (galore_model, 1e-3),
}


def state_mb(model: nn.Module, galore_rank: int = 0) -> float:
    """MB of training state: 16 bytes per trainable parameter, 2 per frozen one, NF4 as stored;
    with GaLore, 8 (bf16 weight + grad) + 4 (fp32 master) per parameter + 4 per Adam number."""
    trainable, total = peft.count_trainable(model)  # NF4 weights are buffers, not parameters
    nf4 = sum(m.nbytes() for m in model.modules() if isinstance(m, peft.NF4Linear))
    if not galore_rank:
        return (2 * (total - trainable) + nf4 + 16 * trainable) / 1e6
    mats = [p.shape for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("blocks.")]
    moments = sum(peft.galore_state_numbers(*s, galore_rank) for s in mats)
    moments += 2 * (total - sum(s.numel() for s in mats))  # the rest keeps plain Adam
    return (12 * total + 4 * moments) / 1e6


rows = {"full fine-tuning (30 steps)": (n_total, 16 * n_total / 1e6, full_metrics, full_time / 30),
        "LoRA r=8 (40 steps)": (n_train, state_mb(lora_model), lora_metrics, lora_time / 40)}
for name, (build, lr) in FAMILY.items():
    built = build()
    model, opt = built if isinstance(built, tuple) else (built, None)
    seconds = finetune(model, steps=20, lr=lr, optimizer=opt, desc=name)
    rows[name] = (peft.count_trainable(model)[0], state_mb(model, 8 * name.startswith("GaLore")),
                  evaluate(model), seconds / 20)

# %% tags=["grading-skip"]
print(f"{'method':<28}{'trainable':>11}{'state MB':>10}{'task loss':>11}{'tok acc':>9}"
      f"{'forgetting':>12}")
for name, (n, mb, m, _) in rows.items():
    print(f"{name:<28}{n:>11,}{mb:>10.1f}{m['task loss']:>11.2f}{100 * m['token accuracy']:>8.0f}%"
          f"{m['pretrain loss'] - before['pretrain loss']:>+12.3f}")

# %% tags=["grading-skip", "nbval-ignore-output"]
for name, (_, _, _, seconds) in rows.items():
    print(f"{name:<28} {1e3 * seconds:6.0f} ms per step")

# %% [markdown]
# How to read it: *trainable* and *state MB* are what each method costs; *task loss* and *tok acc*
# what it learned in its few steps; *forgetting* what it cost the pretraining skill. A method
# that trains few numbers is not bound to learn least: the task is mostly about the output's
# format, which rescaling activations (IA3) or shifting them (BitFit) can reach; adding a few
# input vectors (prompt and prefix tuning) is the weakest lever at this scale — prompt tuning
# only matches fine-tuning from ~10 B parameters (Lester et al.). The ordering, from this run:

# %% tags=["grading-skip"]
best = sorted(rows, key=lambda k: rows[k][2]["task loss"])
print("lowest task loss first:", " > ".join(best))
virtual = ("prompt tuning (16)", "prefix tuning (16)")
print("the two virtual-token methods are the", "two worst" if set(best[-2:]) == set(virtual)
      else f"at ranks {sorted(best.index(v) + 1 for v in virtual)} of {len(best)}")

# %% [markdown]
# ### Exercise 5.9 — GaLore's projected Adam step · 4 points · difficulty 2 · ~20 min
#
# GaLore (Algorithm 1) keeps Adam's moments in a rank-$r$ projection of the gradient. For
# $W, G \in \mathbb{R}^{m\times n}$ with $m \le n$ and a projector $P \in \mathbb{R}^{m\times r}$
# (the top-$r$ left singular vectors of a recent gradient):
#
# $$R = P^\top G,\; M \leftarrow \beta_1 M + (1-\beta_1)R,\; V \leftarrow \beta_2 V + (1-\beta_2)R^2,$$
# $$N = \frac{M/(1-\beta_1^t)}{\sqrt{V/(1-\beta_2^t)} + \epsilon},\qquad W \leftarrow W - \eta\,\alpha\,P N.$$
#
# When $m > n$ project from the right instead: $P \in \mathbb{R}^{n\times r}$, $R = G P$, and the
# update is $N P^\top$. Write `galore_step(W, G, P, M, V, t, lr, betas, eps, scale)` returning
# the new `(W, M, V)` (do not modify the inputs).

# %% solution="galore_step"
def galore_step(W: torch.Tensor, G: torch.Tensor, P: torch.Tensor, M: torch.Tensor,
                V: torch.Tensor, t: int, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W, G: (m, n); P: (m, r) if m <= n else (n, r); M, V: projected shape -> (W, M, V)."""
    ### BEGIN SOLUTION
    left = W.shape[0] <= W.shape[1]
    R = P.T @ G if left else G @ P
    M = betas[0] * M + (1 - betas[0]) * R
    V = betas[1] * V + (1 - betas[1]) * R * R
    N = (M / (1 - betas[0] ** t)) / ((V / (1 - betas[1] ** t)).sqrt() + eps)
    return W - lr * scale * (P @ N if left else N @ P.T), M, V
    ### END SOLUTION


# %% check="galore_step" points=2
def _galore_ref(W, G, P, M, V, t, lr, betas=(0.9, 0.999), eps=1e-8, scale=1.0):
    W, M, V = W.clone(), M.clone(), V.clone()
    peft.galore_adam_step(W, G, P, M, V, t, lr, betas, eps, scale)
    return W, M, V


def _galore_case(m, n, r, t, note, scale=1.0):
    G = R(m, n)
    P = peft.galore_projector(G, r)
    shape = (r, n) if m <= n else (m, r)
    return grading.Case(R(m, n), G, P, R(*shape) * 0.1, R(*shape).abs() * 0.01, t, 0.01,
                        scale=scale, note=note)


grading.check_function(galore_step, _galore_ref, block=[peft.galore_adam_step, peft.GaLoreAdamW,
                                                        torch.optim.Adam, torch.optim.AdamW],
                       mistakes=CATALOGUE.mistakes("galore_step"),
                       cases=[_galore_case(4, 10, 2, 1, "m <= n: project from the left, step 1"),
                              _galore_case(6, 8, 3, 5, "step 5: bias corrections, scale 0.5",
                                           scale=0.5)],
                       hint="R = Pᵀ G has the moments' shape; map the Adam direction back with P N")

# %% hidden="galore_step" points=2
### BEGIN HIDDEN TESTS
grading.check_function(galore_step, _galore_ref, mistakes=CATALOGUE.mistakes("galore_step"), cases=[
    _galore_case(10, 4, 2, 3, "m > n: project from the right"),
    _galore_case(5, 5, 5, 2, "square, full rank", scale=0.25),
])
_W = R(4, 6)
_W0 = _W.clone()
galore_step(_W, R(4, 6), torch.eye(4)[:, :2], torch.zeros(2, 6), torch.zeros(2, 6), 1, 0.1)
grading.expect(torch.equal(_W, _W0), "galore_step must not modify W in place")
### END HIDDEN TESTS

# %% [markdown]
# ## 7. Serving many adapters on one base model
#
# An adapter is a few hundred kilobytes; the base model is shared. S-LoRA and Punica serve
# thousands of adapters from one GPU by batching requests for *different* adapters together:
# the base matmul $xW^\top$ is done once for the batch, then each row $b$ adds its own
# $s_i B_i A_i x_b$ with $i$ = the adapter of that row (a gathered batched matmul; Punica's SGMV
# kernel on a GPU).
#
# ### Exercise 5.10 — the multi-LoRA batched forward · 3 points · difficulty 2 · ~20 min
#
# Write `multi_lora(x, W, b, A, B, s, ids)` for `x` `(batch, seq, in)`, stacked adapters
# `A` `(n, r, in)`, `B` `(n, out, r)`, scalings `s` `(n,)` and `ids` `(batch,)`: row `b` uses
# adapter `ids[b]`, or no adapter when `ids[b] == -1`. Gather, do not loop over rows.

# %% solution="multi_lora"
def multi_lora(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, A: torch.Tensor,
               B: torch.Tensor, s: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """x: (batch, seq, in); A: (n, r, in); B: (n, out, r); s: (n,); ids: (batch,) -> (batch, seq, out)."""
    ### BEGIN SOLUTION
    y = x @ W.T + (0 if b is None else b)
    i = ids.clamp(min=0)
    h = torch.einsum("bti,bri->btr", x, A[i])
    delta = torch.einsum("btr,bor->bto", h, B[i])
    return y + (s[i] * (ids >= 0))[:, None, None] * delta
    ### END SOLUTION


# %% check="multi_lora" points=1
grading.check_function(multi_lora, peft.multi_lora_forward, block=[peft.MultiLoRALinear],
                       mistakes=CATALOGUE.mistakes("multi_lora"), cases=[
    grading.Case(R(3, 4, 8), R(6, 8), R(6), R(2, 2, 8), R(2, 6, 2), torch.tensor([2.0, 0.5]),
                 torch.tensor([1, 0, 1]), note="three rows, two adapters"),
    grading.Case(R(3, 2, 8), R(6, 8), R(6), R(2, 2, 8), R(2, 6, 2), torch.tensor([2.0, 0.5]),
                 torch.tensor([0, -1, 1]), note="the middle row without an adapter (-1)"),
], hint="A[ids] is (batch, r, in): one adapter per row; scale each row by s[ids]")

# %% hidden="multi_lora" points=2
### BEGIN HIDDEN TESTS
grading.check_function(multi_lora, peft.multi_lora_forward, mistakes=CATALOGUE.mistakes("multi_lora"), cases=[
    grading.Case(R(4, 2, 8), R(6, 8), None, R(3, 4, 8), R(3, 6, 4), torch.tensor([1.0, 2.0, 3.0]),
                 torch.tensor([-1, 2, -1, 0]), note="rows without an adapter (-1)"),
    grading.Case(R(1, 5, 8), R(6, 8), R(6), R(1, 1, 8), R(1, 6, 1), torch.tensor([4.0]),
                 torch.tensor([0]), note="one row"),
])
### END HIDDEN TESTS

# %% [markdown]
# A second adapter for a second task — writing the function's **name** from its signature —
# then one batch where each row picks its adapter (with your `multi_lora` when it passes):

# %%
name_pairs = [(p.replace("### Call:", "### Name:"), " " + a.strip().split("(")[0] + "\n")
              for p, a in train_pairs]
name_model = peft.apply_lora(fresh_model(), peft.LoRAConfig(r=4, alpha=8,
                                                            target_modules=("q_proj", "v_proj")))
finetune(name_model, steps=20, lr=5e-3, desc="LoRA for names", data=encode(name_pairs[:800]))
call_lora = peft.apply_lora(fresh_model(), peft.LoRAConfig(r=8, alpha=16,
                                                           target_modules=peft.ALL_LINEAR))
peft.load_adapter_state_dict(call_lora, {k: v for k, v in lora_model.state_dict().items()
                                         if k.endswith(("lora_A", "lora_B"))})
served = peft.apply_multi_lora(fresh_model(), [peft.adapter_state_dict(call_lora),
                                               peft.adapter_state_dict(name_model)], [2.0, 2.0])
kernel = use_learner("multi_lora", multi_lora, peft.multi_lora_forward, lambda f: f(
    torch.ones(2, 1, 3), torch.eye(3), None, torch.ones(2, 1, 3), torch.ones(2, 3, 1),
    torch.tensor([1.0, 2.0]), torch.tensor([1, -1])))
for layer in served.modules():
    if isinstance(layer, peft.MultiLoRALinear):
        layer.kernel = kernel

rows_ids = torch.tensor([0, 1, -1])  # call adapter, name adapter, base model
x = X_test[:3, :16]
with peft.adapter_ids(served, rows_ids), torch.no_grad():
    batched = served(x)
    alone = torch.stack([call_lora(x)[0], name_model(x)[1], base_model(x)[2]])
assert torch.allclose(batched, alone, atol=1e-4), "each row must equal its adapter alone"
print("one batch, three adapters: each row equals its adapter run alone")

test_sig = test_pairs[7][0]
prompts = [tok.encode(p) for p in (test_sig, test_sig.replace("### Call:", "### Name:"), test_sig)]
width = max(map(len, prompts))
batch = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
with peft.adapter_ids(served, rows_ids), torch.no_grad():
    out = generate(served, batch, max_new_tokens=10, attention_mask=mask)
print(test_sig.split("\n")[0])
for who, row in zip(["call adapter", "name adapter", "base model"], out):
    print(f"  {who:<13}->", tok.decode(row[width:].tolist()).split("\n")[0])

# %% [markdown]
# The adapters stay separate, small files. Your `LoRAModel.save_pretrained` writes the call
# adapter in `peft`'s layout — the weights file holds only the LoRA tensors:

# %%
hf_names = peft.hf_module_names(cfg)
adapter_dir = Path(tempfile.mkdtemp()) / "call-adapter"
lora.save_pretrained(adapter_dir, hf_names)
for file in sorted(adapter_dir.iterdir()):
    print(f"{file.name:<28}{file.stat().st_size / 1e3:>8.1f} kB")
n_base = n_total - n_train  # n_total counts the adapters too
print(f"the base model: {n_base:,} parameters, {4 * n_base / 1e6:.1f} MB in fp32")
settings = json.loads((adapter_dir / "adapter_config.json").read_text())
print({k: settings[k] for k in ("peft_type", "r", "lora_alpha")}, "·",
      len(settings["target_modules"]), "target modules, e.g.", settings["target_modules"][0])

# %% [markdown]
# Hugging Face `peft` reads that directory onto the `transformers` export of the book's model
# (`llmlab.model.to_hf`) — the same file a `vllm` or `transformers` user would load:

# %%
if HF_PEFT:
    sd, hf_cfg = to_hf(base_model)
    hf_model = transformers.AutoModelForCausalLM.from_config(hf_cfg).eval()
    hf_model.load_state_dict(sd, strict=False)
    tuned = hf_peft.PeftModel.from_pretrained(hf_model, adapter_dir).eval()
    with torch.no_grad():
        theirs, ours = tuned(input_ids=X_test).logits, lora_model(X_test)
    gap = (theirs - ours).abs().max().item()
    assert gap < 1e-3, f"peft's logits differ from llmlab's by {gap}"
    answer = Y_test != -100
    exact = ((theirs.argmax(-1) == Y_test) | ~answer).all(1).float().mean().item()
    n_layers = sum(isinstance(m, hf_peft.tuners.lora.LoraLayer) for m in tuned.modules())
    print(f"peft.PeftModel.from_pretrained: {n_layers} LoRA layers, logits within 1e-3 of "
          f"llmlab's; held-out exact match {100 * exact:.0f}% "
          f"(llmlab's: {100 * lora_metrics['exact match']:.0f}%)")
else:
    print("Hugging Face peft and transformers are not installed (pip install 'llmlab[parity]'); "
          "the directory above is what they would load")

# %% [markdown]
# ## 8. How the industry does it
#
# - **Hugging Face `peft`** is the reference library: LoRA (with rsLoRA, DoRA, PiSSA/LoftQ
#   initialisations), AdaLoRA, IA3, prompt/prefix/P-tuning, and more, on any `transformers`
#   model by `target_modules` name patterns. `llmlab.peft` is tested against it: same base and
#   adapter weights give the same logits and gradients for LoRA, rsLoRA, DoRA, IA3, prompt and
#   prefix tuning and the AdaLoRA forward, and adapters move both ways
#   (`tests/peft/test_peft_parity.py`). ([docs](https://huggingface.co/docs/peft))
# - **QLoRA** fine-tuned a 65 B model on one 48 GB GPU: NF4 base weights with double
#   quantization (~4.13 bits per weight), bf16 LoRA on every linear layer, and *paged optimizers*
#   (optimizer states in CUDA unified memory, paged to the CPU when a long batch spikes memory).
#   Its Guanaco models reached 99.3% of ChatGPT's level on the Vicuna benchmark after 24 hours
#   on one GPU. ([paper](https://arxiv.org/abs/2305.14314))
# - **Unsloth** rewrites the LoRA/QLoRA backward passes as hand-derived Triton kernels and
#   reports ~2× faster training with ~70% less memory than `peft` + FlashAttention 2.
#   **LLaMA-Factory** wraps `peft`, QLoRA, DoRA, GaLore, LoRA+ and more behind one config for
#   100+ models. ([Unsloth](https://github.com/unslothai/unsloth),
#   [LLaMA-Factory](https://arxiv.org/abs/2403.13372))
# - **Serving:** S-LoRA keeps thousands of adapters in a unified paged memory with the KV cache
#   and batches requests across adapters (up to 4× the throughput of vLLM with naive adapter
#   swapping); Punica's SGMV kernel does the gathered batched matmul; vLLM and TGI ship
#   multi-LoRA serving. ([S-LoRA](https://arxiv.org/abs/2311.03285),
#   [Punica](https://arxiv.org/abs/2310.18547))
# - **Where it breaks:** LoRA learns less than full fine-tuning on tasks far from pretraining
#   (code, math with much data) and forgets less ([Biderman et al.](https://arxiv.org/abs/2405.09673));
#   merged adapters cannot be switched per request; prompt tuning only matches fine-tuning at
#   ~10 B parameters and above (Lester et al.); QLoRA's dequantization makes each step slower
#   than bf16 LoRA.

# %% [markdown]
# ## Summary
#
# - Full fine-tuning pays 16 bytes per parameter in training state; PEFT freezes the base (2
#   bytes, or ~0.5 with NF4) and trains a small add-on, but activations stay.
# - A real fine-tuning update of the book's model is low-rank: a few singular values hold most
#   of it — the bet LoRA makes with $h = Wx + s\,BAx$, $B_0 = 0$, $s = \alpha/r$ ($\alpha/\sqrt r$
#   for rsLoRA). Merging folds $sBA$ into $W$: no inference cost.
# - DoRA adds a per-row magnitude; IA3 rescales activations; BitFit trains biases; prompt and
#   prefix tuning learn virtual tokens (the prefix lives in the KV cache); adapters insert
#   bottleneck MLPs; GaLore trains every weight with low-rank optimizer state; QLoRA puts LoRA on
#   a 4-bit base.
# - Many adapters share one base model in one batch: gather each row's $A_i, B_i$.
#
# ## Further reading
#
# - Hu et al., [LoRA: Low-Rank Adaptation of Large Language Models](https://arxiv.org/abs/2106.09685) (2021)
# - Aghajanyan et al., [Intrinsic Dimensionality Explains the Effectiveness of Language Model Fine-Tuning](https://arxiv.org/abs/2012.13255) (2020)
# - Dettmers et al., [QLoRA](https://arxiv.org/abs/2305.14314) (2023)
# - Liu et al., [DoRA](https://arxiv.org/abs/2402.09353) (2024); Kalajdzievski, [rsLoRA](https://arxiv.org/abs/2312.03732) (2023); Hayou et al., [LoRA+](https://arxiv.org/abs/2402.12354) (2024)
# - Zhang et al., [AdaLoRA](https://arxiv.org/abs/2303.10512) (2023); Liu et al., [(IA)³](https://arxiv.org/abs/2205.05638) (2022); Ben Zaken et al., [BitFit](https://arxiv.org/abs/2106.10199) (2021)
# - Lester et al., [Prompt Tuning](https://arxiv.org/abs/2104.08691) (2021); Li & Liang, [Prefix-Tuning](https://arxiv.org/abs/2101.00190) (2021); Liu et al., [P-Tuning v2](https://arxiv.org/abs/2110.07602) (2022); Houlsby et al., [Adapters](https://arxiv.org/abs/1902.00751) (2019)
# - Zhao et al., [GaLore](https://arxiv.org/abs/2403.03507) (2024); Sheng et al., [S-LoRA](https://arxiv.org/abs/2311.03285) (2023); Biderman et al., [LoRA Learns Less and Forgets Less](https://arxiv.org/abs/2405.09673) (2024)
