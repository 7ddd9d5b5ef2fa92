"""Mixture of experts: a top-k router, a load-balancing loss, capacity, shared experts, and
expert parallelism over ``all_to_all``.

- Sparsely-gated MoE: Shazeer et al., arXiv:1701.06538. Each token goes to the k experts with
  the highest router scores; the output is the gate-weighted sum of those experts' outputs
  (gates = softmax over the chosen k logits, as Mixtral does, arXiv:2401.04088).
- Load-balancing loss (Switch Transformer, Fedus et al., arXiv:2101.03961, eq. 4):
  ``aux = E · Σ_i f_i · P_i`` with f_i the share of routed slots that chose expert i and P_i the
  mean router probability of expert i; it is 1 when the load is uniform.
- Capacity factor (GShard, Lepikhin et al., arXiv:2006.16668): expert i takes at most
  ``ceil(cf · T · k / E)`` tokens; the rest are dropped (their slot contributes 0; the residual
  stream carries them). ``capacity_factor=None`` is dropless.
- Shared experts (DeepSeekMoE, Dai et al., arXiv:2401.06066): an MLP every token passes through,
  besides the routed ones.
- Expert parallelism (GShard; DeepSeek-V3, arXiv:2412.19437): rank r holds experts
  [r·E/N, (r+1)·E/N); tokens travel to their experts' ranks with one ``all_to_all`` and come
  back with another.

``GPTConfig(mlp="moe", mlp_options=dict(n_experts=8, top_k=2))`` builds MoE blocks with this
module's layer kinds: ``GPT(config, kinds=LAYER_KINDS)`` (:mod:`llmlab.nn.kinds`). Taught in
chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from llmlab.nn import Linear, SwiGLU
from llmlab.nn.kinds import BASE_KINDS
from llmlab.parallel.functional import all_to_all
from llmlab.utils import reject_unknown_keys


@reject_unknown_keys
@dataclass
class MoEConfig:
    """Routed experts, top-k, shared experts, capacity (None = dropless), expert width."""

    n_experts: int = 8
    top_k: int = 2
    n_shared: int = 0
    capacity_factor: float | None = None
    d_expert: int | None = None  # default: the config's d_ff

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"need 1 <= top_k <= n_experts, got top_k={self.top_k}, "
                             f"n_experts={self.n_experts}")
        if self.capacity_factor is not None and self.capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be positive or None, got "
                             f"{self.capacity_factor}")


def top_k_route(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits: (T, E) -> gates (T, k) (softmax over the chosen k), experts (T, k) long."""
    top, experts = logits.topk(k, dim=-1)
    return torch.softmax(top.float(), dim=-1).to(logits.dtype), experts


def load_balancing_loss(logits: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Switch's aux loss ``E · Σ f_i P_i``. logits: (T, E), experts: (T, k) -> scalar (1.0 when
    balanced). f_i: share of the T·k routed slots on expert i (no gradient); P_i: mean softmax
    probability of expert i (carries the gradient to the router)."""
    n_exp = logits.shape[-1]
    f = torch.bincount(experts.reshape(-1), minlength=n_exp).to(logits.dtype) / experts.numel()
    p = torch.softmax(logits.float(), dim=-1).mean(0).to(logits.dtype)
    return n_exp * (f * p).sum()


def expert_capacity(n_tokens: int, n_experts: int, k: int, factor: float) -> int:
    """``ceil(factor · n_tokens · k / n_experts)``: slots per expert."""
    return math.ceil(factor * n_tokens * k / n_experts)


def capacity_mask(experts: torch.Tensor, n_experts: int, capacity: int | None) -> torch.Tensor:
    """Bool (T, k): which routed slots fit. Slots queue per expert in token order (choice 0 of
    every token before choice 1, as GShard); those past ``capacity`` are dropped."""
    if capacity is None:
        return torch.ones_like(experts, dtype=torch.bool)
    order = experts.t().reshape(-1)  # (k·T,): all first choices, then all second choices
    onehot = F.one_hot(order, n_experts)
    position = (onehot.cumsum(0) * onehot).sum(-1) - 1  # place in its expert's queue
    return (position < capacity).view(experts.shape[1], -1).t()


class MoE(nn.Module):
    """Routed SwiGLU experts (+ optional shared experts). x: (batch, seq, d) -> (batch, seq, d).

    After each forward: ``aux_loss`` (scalar, Switch's loss) and ``expert_load`` ((E,) tokens
    routed to each expert, before capacity) and ``dropped`` (slots over capacity).
    """

    def __init__(self, d_model: int, d_expert: int, cfg: MoEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.router = Linear(d_model, cfg.n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(d_model, d_expert) for _ in range(cfg.n_experts))
        self.shared = SwiGLU(d_model, d_expert * cfg.n_shared) if cfg.n_shared else None
        self.aux_loss = torch.zeros(())
        self.expert_load = torch.zeros(cfg.n_experts, dtype=torch.long)
        self.dropped = 0

    @classmethod
    def from_config(cls, config) -> MoE:
        """Build from a ``GPTConfig`` whose ``mlp_options`` hold ``MoEConfig`` fields."""
        known = {f.name for f in fields(MoEConfig)}
        unknown = sorted(set(config.mlp_options) - known)
        if unknown:
            raise ValueError(f"unknown MoE option(s) {unknown}; known: {sorted(known)}")
        cfg = MoEConfig(**config.mlp_options)
        return cls(config.d_model, cfg.d_expert or config.d_ff, cfg)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (T, d) -> gates (T, k) (zero where dropped), experts (T, k); sets the stats."""
        logits = self.router(x)  # (T, E)
        gates, experts = top_k_route(logits, self.cfg.top_k)
        cap = (None if self.cfg.capacity_factor is None else
               expert_capacity(x.shape[0], self.cfg.n_experts, self.cfg.top_k,
                               self.cfg.capacity_factor))
        keep = capacity_mask(experts, self.cfg.n_experts, cap)
        self.aux_loss = load_balancing_loss(logits, experts)
        self.expert_load = torch.bincount(experts.reshape(-1), minlength=self.cfg.n_experts)
        self.dropped = int((~keep).sum())
        return gates * keep, experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (T, d)
        gates, experts = self.route(x)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where(experts == e)
            if tok.numel():
                y = y.index_add(0, tok, gates[tok, slot, None] * expert(x[tok]))
        if self.shared is not None:
            y = y + self.shared(x)
        return y.view(shape)


def moe_aux_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the load-balancing losses of every MoE layer's last forward."""
    losses = [m.aux_loss for m in model.modules() if isinstance(m, MoE)]
    return torch.stack(losses).sum() if losses else torch.zeros(())


class ExpertParallelMoE(nn.Module):
    """An MoE whose experts are split over ``group``: rank r runs experts
    [r·E/N, (r+1)·E/N) for the tokens of every rank. Router and shared experts are replicated.
    Same forward as ``MoE`` on each rank's own tokens (dropless or with a per-rank capacity).
    x: (batch, seq, d) -> (batch, seq, d)."""

    def __init__(self, moe: MoE, group=None) -> None:
        super().__init__()
        self.group, self.moe = group, moe
        n, rank = dist.get_world_size(group), dist.get_rank(group)
        n_exp = moe.cfg.n_experts
        if n_exp % n:
            raise ValueError(f"n_experts ({n_exp}) must be divisible by the expert-parallel "
                             f"size {n}")
        self.per_rank = n_exp // n
        self.first = rank * self.per_rank
        # Only this rank's experts stay; the others live on their ranks.
        moe.experts = nn.ModuleList(moe.experts[self.first:self.first + self.per_rank])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, n = x.shape, dist.get_world_size(self.group)
        x = x.reshape(-1, shape[-1])
        gates, experts = self.moe.route(x)
        tok, slot = torch.where(gates.new_ones(gates.shape, dtype=torch.bool))
        order = experts[tok, slot].argsort(stable=True)  # group the slots by expert = by rank
        tok, slot = tok[order], slot[order]
        dest_expert = experts[tok, slot]
        send = torch.bincount(dest_expert // self.per_rank, minlength=n)
        recv = torch.empty_like(send)
        dist.all_to_all_single(recv, send, group=self.group)  # how many slots come from whom
        send, recv = send.tolist(), recv.tolist()
        x_in = all_to_all(x[tok], recv, send, self.group)  # (slots here, d)
        e_in = torch.empty(sum(recv), dtype=torch.long)
        dist.all_to_all_single(e_in, dest_expert.contiguous(), recv, send, group=self.group)
        out = torch.zeros_like(x_in)
        for j, expert in enumerate(self.moe.experts):
            rows = torch.where(e_in == self.first + j)[0]
            if rows.numel():
                out = out.index_add(0, rows, expert(x_in[rows]))
        back = all_to_all(out, send, recv, self.group)  # results return to their tokens' rank
        y = torch.zeros_like(x).index_add(0, tok, gates[tok, slot, None] * back)
        if self.moe.shared is not None:
            y = y + self.moe.shared(x)
        return y.view(shape)


LAYER_KINDS = BASE_KINDS.with_mlp("moe", MoE.from_config)  # GPT(config, kinds=LAYER_KINDS)
