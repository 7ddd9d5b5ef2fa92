"""Chapter 05 (solutions/05_peft): the catalogue of plausible wrong answers.

Each variant is one slip a learner makes in an otherwise right answer, written as the answer
cell would be (see :mod:`llmlab_book.catalogue` for the format); the chapter's checks name them
and ``tests/platform/test_catalogue.py`` grades every one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llmlab.nn import Linear, StepContext
from llmlab.peft import LoRALinear as LoRALayer  # the notebook's own LoRALayer stands here
from llmlab_book.catalogue import Catalogue, Mistake

# ------------------------------------------------------------------ 5.1 LoRA's trainable parameters


def lora_count_without_b(shapes, n_layer, r):
    """Only A, (r, in), counted: B's (out, r) forgotten."""
    return n_layer * sum(r * d_in for _, d_in in shapes)


def lora_count_one_layer(shapes, n_layer, r):
    """The adapted matrices of one layer, not of every layer."""
    return sum(r * (d_out + d_in) for d_out, d_in in shapes)


# ------------------------------------------------------------------ 5.2 the memory of training state


def state_bytes_fp32_frozen(n_frozen, n_trainable):
    """Frozen weights kept in fp32 (4 bytes) instead of bf16 (2)."""
    return 4 * n_frozen + 16 * n_trainable


def state_bytes_without_master(n_frozen, n_trainable):
    """No fp32 master copy: 12 bytes per trainable parameter instead of 16."""
    return 2 * n_frozen + 12 * n_trainable


# ------------------------------------------------------------------ 5.3 effective rank


def effective_rank_of_sigma(delta, energy=0.9):
    """The energy counted on the singular values, not their squares."""
    s = torch.linalg.svdvals(delta.float())
    return int((s.cumsum(0) / s.sum() < energy - 1e-6).sum()) + 1


def effective_rank_one_short(delta, energy=0.9):
    """The number of singular values *below* the energy: one short of the k that reaches it."""
    s2 = torch.linalg.svdvals(delta.float()) ** 2
    return max(int((s2.cumsum(0) / s2.sum() < energy - 1e-6).sum()), 1)


# ------------------------------------------------------------------ 5.4 the LoRA forward


def lora_linear_r_over_alpha(x, W, b, A, B, alpha, r, rslora=False):
    """The scaling upside down: r / alpha."""
    s = r ** 0.5 / alpha if rslora else r / alpha
    return x @ W.T + (0 if b is None else b) + s * ((x @ A.T) @ B.T)


def lora_linear_rslora_times_sqrt(x, W, b, A, B, alpha, r, rslora=False):
    """rsLoRA's scaling as alpha · √r instead of alpha / √r."""
    s = alpha * r ** 0.5 if rslora else alpha / r
    return x @ W.T + (0 if b is None else b) + s * ((x @ A.T) @ B.T)


# ------------------------------------------------------------------ 5.5 a LoRA layer that merges


class _LoRALayerBase(nn.Module):
    def __init__(self, base, r=8, alpha=16.0, dropout=0.0, use_rslora=False):
        super().__init__()
        out_f, in_f = base.weight.shape
        self.base, self.scaling, self.merged = base, alpha / r, False
        self.lora_A = nn.Parameter(torch.empty(r, in_f))
        self.lora_B = nn.Parameter(torch.zeros(out_f, r))
        nn.init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)

    def forward(self, x):
        y = self.base(x)
        return y if self.merged else y + self.scaling * (x @ self.lora_A.T) @ self.lora_B.T

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.base.weight -= self.scaling * self.lora_B @ self.lora_A
            self.merged = False


class LoRALayerMergingTwice(_LoRALayerBase):
    """merge() without a flag check: a second merge adds s·BA again."""

    @torch.no_grad()
    def merge(self):
        self.base.weight += self.scaling * self.lora_B @ self.lora_A
        self.merged = True


class LoRALayerAddingAfterMerge(_LoRALayerBase):
    """forward still adds the update after merge(): the update counted twice."""

    def forward(self, x):
        return self.base(x) + self.scaling * (x @ self.lora_A.T) @ self.lora_B.T

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.base.weight += self.scaling * self.lora_B @ self.lora_A
            self.merged = True


# ------------------------------------------------------------------ 5.6 capstone: LoRA injection


class _LoRAModelBase(nn.Module):
    """A right injection with one overridable step per method (the variants change one)."""

    def __init__(self, model, target_modules, r=8, alpha=16.0, layer=LoRALayer):
        super().__init__()
        if not (isinstance(r, int) and r > 0) or not alpha > 0:
            raise ValueError(f"r must be a positive int and alpha positive, got {r!r}, {alpha!r}")
        self.model, self.r, self.alpha = model, r, alpha
        self.targets = [n for n, m in model.named_modules()
                        if n and isinstance(m, (nn.Linear, Linear)) and self._matches(n, target_modules)]
        if not self.targets:
            raise ValueError(f"no linear layer matches target_modules={target_modules!r}")
        self._freeze(model)
        self.layers = {}
        for name in self.targets:
            parent, _, child = name.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            self.layers[name] = self._wrap(getattr(owner, child), layer, r, alpha)
            setattr(owner, child, self.layers[name])

    def _matches(self, name, patterns):
        if isinstance(patterns, str):
            return re.fullmatch(patterns, name) is not None
        return any(name == p or name.endswith("." + p) for p in patterns)

    def _freeze(self, model):
        for p in model.parameters():
            p.requires_grad_(False)

    def _wrap(self, base, layer, r, alpha):
        return layer(base, r=r, alpha=alpha)

    def _key(self, hf_name, part):
        return f"base_model.model.{hf_name}.{part}.weight"

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def merge(self):
        for m in self.layers.values():
            m.merge()

    def unmerge(self):
        for m in self.layers.values():
            m.unmerge()

    def peft_state_dict(self, hf_names):
        return {self._key(hf_names[n], part): getattr(m, part).detach().clone()
                for n, m in self.layers.items() for part in ("lora_A", "lora_B")}

    def save_pretrained(self, directory, hf_names):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.peft_state_dict(hf_names).items()},
                  str(directory / "adapter_model.safetensors"))
        config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": self.r,
                  "lora_alpha": self.alpha, "target_modules": [hf_names[n] for n in self.targets]}
        (directory / "adapter_config.json").write_text(json.dumps(config))

    def load_pretrained(self, directory, hf_names):
        state = load_file(str(Path(directory) / "adapter_model.safetensors"))
        mine = self.peft_state_dict(hf_names)
        if set(mine) != set(state):
            raise ValueError(f"the adapter does not fit: {sorted(set(mine) ^ set(state))[:4]}")
        for n, m in self.layers.items():
            for part in ("lora_A", "lora_B"):
                with torch.no_grad():
                    getattr(m, part).copy_(state[self._key(hf_names[n], part)])


class LoRAModelFreezingOnlyTargets(_LoRAModelBase):
    """Only the adapted layers' base weights frozen: embeddings, norms and the rest still train."""

    def _freeze(self, model):
        for name in self.targets:
            for p in model.get_submodule(name).parameters():
                p.requires_grad_(False)


class LoRAModelKeysWithoutWeight(_LoRAModelBase):
    """llmlab's names in the file (`….lora_A`), not peft's (`….lora_A.weight`)."""

    def _key(self, hf_name, part):
        return f"base_model.model.{hf_name}.{part}"


class LoRAModelSearchingRegex(_LoRAModelBase):
    """A string pattern searched anywhere in the name (re.search), not matched against all of it."""

    def _matches(self, name, patterns):
        if isinstance(patterns, str):
            return re.search(patterns, name) is not None
        return any(name == p or name.endswith("." + p) for p in patterns)


# ------------------------------------------------------------------ 5.7 the DoRA forward


def dora_norm_over_columns(x, W, b, A, B, m, s):
    """The norm of each column (dim=0) instead of each output row."""
    V = W + s * B @ A
    return x @ (m[:, None] * V / V.norm(dim=0, keepdim=True).detach()).T + (0 if b is None else b)


def dora_norm_of_w_only(x, W, b, A, B, m, s):
    """The direction normalised by the norm of W alone, not of W + sBA."""
    V = W + s * B @ A
    return x @ (m[:, None] * V / W.norm(dim=1, keepdim=True).detach()).T + (0 if b is None else b)


def dora_norm_not_detached(x, W, b, A, B, m, s):
    """The norm left in the graph: gradients flow through ‖W + sBA‖."""
    V = W + s * B @ A
    return x @ (m[:, None] * V / V.norm(dim=1, keepdim=True)).T + (0 if b is None else b)


# ------------------------------------------------------------------ 5.8 prefix tuning via the KV cache


class _PrefixCacheBase:
    def __init__(self, prefix, batch):
        self.kv = [(layer[0].expand(batch, *layer[0].shape), layer[1].expand(batch, *layer[1].shape))
                   for layer in prefix]
        self.length = prefix.shape[2]
        self.start = prefix.shape[2]
        self.pending = [None] * prefix.shape[0]

    def prepare(self, input_ids):
        b, t = input_ids.shape
        positions = torch.arange(self.length, self.length + t).expand(b, t)
        return StepContext(positions, cache=self)

    def observe_queries(self, layer_idx, q):
        pass

    def update(self, layer_idx, k, v):
        past_k, past_v = self.kv[layer_idx]
        self.pending[layer_idx] = (torch.cat([past_k, k], 1), torch.cat([past_v, v], 1))
        return self.pending[layer_idx]

    def commit(self, ctx):
        self.kv, self.pending = self.pending, [None] * len(self.kv)
        self.length += ctx.positions.shape[1]


class PrefixCachePositionsFromZero(_PrefixCacheBase):
    """Positions that do not count the prefix: the prompt takes 0, 1, … instead of P, P+1, …"""

    def prepare(self, input_ids):
        b, t = input_ids.shape
        first = self.length - self.start
        return StepContext(torch.arange(first, first + t).expand(b, t), cache=self)


class PrefixCacheNeverStoring(_PrefixCacheBase):
    """commit() counts the step but keeps only the prefix: decoding forgets the prompt."""

    def commit(self, ctx):
        self.pending = [None] * len(self.kv)
        self.length += ctx.positions.shape[1]


# ------------------------------------------------------------------ 5.9 GaLore's projected Adam step


def galore_step_without_bias_correction(W, G, P, M, V, t, lr, betas=(0.9, 0.999), eps=1e-8,
                                        scale=1.0):
    """Adam's moments used without dividing by 1 - β^t."""
    left = W.shape[0] <= W.shape[1]
    R = P.T @ G if left else G @ P
    M = betas[0] * M + (1 - betas[0]) * R
    V = betas[1] * V + (1 - betas[1]) * R * R
    N = M / (V.sqrt() + eps)
    return W - lr * scale * (P @ N if left else N @ P.T), M, V


def galore_step_without_scale(W, G, P, M, V, t, lr, betas=(0.9, 0.999), eps=1e-8, scale=1.0):
    """The update without GaLore's scale α."""
    left = W.shape[0] <= W.shape[1]
    R = P.T @ G if left else G @ P
    M = betas[0] * M + (1 - betas[0]) * R
    V = betas[1] * V + (1 - betas[1]) * R * R
    N = (M / (1 - betas[0] ** t)) / ((V / (1 - betas[1] ** t)).sqrt() + eps)
    return W - lr * (P @ N if left else N @ P.T), M, V


# ------------------------------------------------------------------ 5.10 the multi-LoRA forward


def multi_lora_minus_one_as_last(x, W, b, A, B, s, ids):
    """ids of -1 used as indices: those rows get the last adapter instead of none."""
    y = x @ W.T + (0 if b is None else b)
    h = torch.einsum("bti,bri->btr", x, A[ids])
    return y + s[ids][:, None, None] * torch.einsum("btr,bor->bto", h, B[ids])


def multi_lora_unscaled(x, W, b, A, B, s, ids):
    """Each row's update added without its adapter's scaling s."""
    y = x @ W.T + (0 if b is None else b)
    i = ids.clamp(min=0)
    h = torch.einsum("bti,bri->btr", x, A[i])
    return y + (ids >= 0).to(x.dtype)[:, None, None] * torch.einsum("btr,bor->bto", h, B[i])


CATALOGUE = Catalogue({
    "lora_param_count": [
        Mistake("counting A only, (r, in), and forgetting B, (out, r)", lora_count_without_b),
        Mistake("the matrices of one layer, not of every layer", lora_count_one_layer),
    ],
    "training_state_bytes": [
        Mistake("frozen weights at 4 bytes (fp32) instead of 2 (bf16)", state_bytes_fp32_frozen),
        Mistake("12 bytes per trainable parameter: the fp32 master copy forgotten",
                state_bytes_without_master),
    ],
    "effective_rank": [
        Mistake("the energy of the singular values, not of their squares", effective_rank_of_sigma),
        Mistake("one short: the count of singular values below the energy, not the k that "
                "reaches it", effective_rank_one_short),
    ],
    "lora_linear": [
        Mistake("the scaling upside down: r / alpha", lora_linear_r_over_alpha),
        Mistake("rsLoRA scaled by alpha · √r instead of alpha / √r", lora_linear_rslora_times_sqrt),
    ],
    "lora_layer": [
        Mistake("merging twice adds s·BA twice (no merged flag checked)", LoRALayerMergingTwice),
        Mistake("forward still adds the update after merge: counted twice",
                LoRALayerAddingAfterMerge),
    ],
    "lora_model": [
        Mistake("only the adapted layers frozen: embeddings, norms and the rest still train",
                LoRAModelFreezingOnlyTargets),
        Mistake("keys without `.weight`: llmlab's `lora_A`, not peft's `lora_A.weight`",
                LoRAModelKeysWithoutWeight),
        Mistake("a string pattern searched (re.search) instead of matched against the whole name",
                LoRAModelSearchingRegex, hidden=True),
    ],
    "dora_linear": [
        Mistake("the norm of each column (dim=0) instead of each output row", dora_norm_over_columns),
        Mistake("normalised by the norm of W alone, not of W + sBA", dora_norm_of_w_only),
        Mistake("the norm not detached: gradients flow through ‖W + sBA‖", dora_norm_not_detached,
                hidden=True),
    ],
    "prefix_cache": [
        Mistake("positions that do not count the prefix (the prompt at 0, 1, … instead of P, P+1, …)",
                PrefixCachePositionsFromZero),
        Mistake("commit keeps only the prefix: decoding forgets the prompt", PrefixCacheNeverStoring),
    ],
    "galore_step": [
        Mistake("Adam's moments without bias correction (1 - β^t)", galore_step_without_bias_correction),
        Mistake("the update without GaLore's scale α", galore_step_without_scale),
    ],
    "multi_lora": [
        Mistake("rows with id -1 get the last adapter (A[-1]) instead of none",
                multi_lora_minus_one_as_last),
        Mistake("each row's update without its adapter's scaling s", multi_lora_unscaled),
    ],
})

__all__ = ["CATALOGUE"]
