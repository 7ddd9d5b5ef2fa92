"""Pipeline parallelism: GPipe and 1F1B schedules as plain Python, and an executor that runs them.

The model is cut into p stages (consecutive blocks), one per rank; the batch into m
micro-batches. A schedule says, for each stage, the order of forward (F) and backward (B)
micro-batch steps.

- **GPipe** (Huang et al., arXiv:1811.06965): all m forwards, then all m backwards. Every stage
  holds the activations of all m micro-batches at the peak.
- **1F1B** (PipeDream-Flush; Narayanan et al., "Memory-Efficient Pipeline-Parallel DNN
  Training", arXiv:2006.09503; Megatron-LM, arXiv:2104.04473 section 2.2): stage s runs
  p − s − 1 warm-up forwards, then alternates one forward and one backward, then drains.
  Same bubble, but at most p − s micro-batches in flight.

Both leave the pipeline idle for a fraction (p − 1) / (m + p − 1) of the step (the bubble):
:func:`simulate` computes the timeline from per-step costs and :func:`bubble_fraction` measures
it. :func:`run_schedule` executes a schedule on real processes with ``torch.distributed``
point-to-point messages. Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from llmlab.nn.context import StepContext


@dataclass(frozen=True)
class Step:
    """One entry of a schedule: ``op`` "F" or "B" on micro-batch ``mb``."""

    op: str
    mb: int


def _check(n_stages: int, n_micro: int) -> None:
    if n_stages < 1 or n_micro < 1:
        raise ValueError(f"need n_stages >= 1 and n_micro >= 1, got {n_stages}, {n_micro}")


def gpipe_schedule(n_stages: int, n_micro: int) -> list[list[Step]]:
    """Per stage: all forwards F0 … F(m−1), then all backwards B0 … B(m−1)."""
    _check(n_stages, n_micro)
    return [[Step("F", i) for i in range(n_micro)] + [Step("B", i) for i in range(n_micro)]
            for _ in range(n_stages)]


def one_f_one_b_schedule(n_stages: int, n_micro: int) -> list[list[Step]]:
    """Per stage s: min(p − s − 1, m) warm-up forwards, then (F, B) pairs, then the remaining B."""
    _check(n_stages, n_micro)
    out = []
    for s in range(n_stages):
        warm = min(n_stages - s - 1, n_micro)
        steps = [Step("F", i) for i in range(warm)]
        f, b = warm, 0
        while f < n_micro:
            steps += [Step("F", f), Step("B", b)]
            f, b = f + 1, b + 1
        steps += [Step("B", i) for i in range(b, n_micro)]
        out.append(steps)
    return out


SCHEDULES = {"gpipe": gpipe_schedule, "1f1b": one_f_one_b_schedule}


@dataclass(frozen=True)
class Slot:
    """A step placed on the timeline: stage, step, start and end time."""

    stage: int
    step: Step
    start: float
    end: float


def simulate(schedule: list[list[Step]], t_f: float = 1.0, t_b: float = 2.0) -> list[Slot]:
    """Place every step as early as its dependencies allow.

    F(s, i) needs F(s−1, i); B(s, i) needs B(s+1, i) (and, on the last stage, F(s, i)); a stage
    runs its steps one at a time in schedule order. Raises ValueError on a deadlocked schedule.
    """
    p = len(schedule)
    done: dict[tuple[int, str, int], float] = {}
    pos, free = [0] * p, [0.0] * p
    slots: list[Slot] = []
    while any(pos[s] < len(schedule[s]) for s in range(p)):
        progressed = False
        for s in range(p):
            if pos[s] == len(schedule[s]):
                continue
            st = schedule[s][pos[s]]
            dep = ((s - 1, "F", st.mb) if st.op == "F" and s > 0 else
                   (s + 1, "B", st.mb) if st.op == "B" and s < p - 1 else None)
            if dep is not None and dep not in done:
                continue
            start = max(free[s], done.get(dep, 0.0) if dep else 0.0)
            end = start + (t_f if st.op == "F" else t_b)
            done[(s, st.op, st.mb)] = free[s] = end
            slots.append(Slot(s, st, start, end))
            pos[s] += 1
            progressed = True
        if not progressed:
            raise ValueError("the schedule deadlocks: every stage waits for a step not run yet")
    return slots


def bubble_fraction(slots: list[Slot]) -> float:
    """Idle share of (stages × makespan): 1 − busy / (p · (last end − first start))."""
    p = 1 + max(s.stage for s in slots)
    span = max(s.end for s in slots) - min(s.start for s in slots)
    return 1.0 - sum(s.end - s.start for s in slots) / (p * span)


def bubble_formula(n_stages: int, n_micro: int) -> float:
    """The theoretical bubble (p − 1) / (m + p − 1)."""
    return (n_stages - 1) / (n_micro + n_stages - 1)


def peak_in_flight(steps: list[Step]) -> int:
    """Most micro-batches whose activations one stage holds at once (forwarded, not backwarded)."""
    live = peak = 0
    for st in steps:
        live += 1 if st.op == "F" else -1
        peak = max(peak, live)
    return peak


class GPTStage(nn.Module):
    """Blocks ``[first, last)`` of an llmlab ``GPT`` (plus the embedding on stage 0, and the
    final norm and head on the last stage). x: ids (batch, seq) on stage 0, else hidden states
    (batch, seq, d_model) -> hidden states, or logits on the last stage."""

    def __init__(self, model: nn.Module, first: int, last: int) -> None:
        super().__init__()
        self.is_first, self.is_last = first == 0, last == len(model.blocks)
        if self.is_first and self.is_last:
            raise ValueError("a stage holding every block is not a pipeline")
        if model.config.tie_embeddings:
            raise ValueError("pipeline stages need untied embeddings (tie_embeddings=False): the "
                             "first and last stage would share the token matrix")
        self.tok_emb = model.tok_emb if self.is_first else None
        self.pos_emb = model.pos_emb if self.is_first else None
        self.blocks = nn.ModuleList(model.blocks[first:last])
        self.norm_f = model.norm_f if self.is_last else None
        self.lm_head = model.lm_head if self.is_last else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = StepContext.causal(x.shape[0], x.shape[1], x.device)  # one fresh sequence per row
        if self.is_first:
            x = self.tok_emb(x)
            if self.pos_emb is not None:
                x = x + self.pos_emb(ctx.positions)
        for i, block in enumerate(self.blocks):
            x = block(x, ctx, i)
        return self.lm_head(self.norm_f(x)) if self.is_last else x


def split_gpt(model: nn.Module, n_stages: int) -> list[GPTStage]:
    """Cut a GPT into ``n_stages`` stages of consecutive blocks (as even as possible)."""
    n = len(model.blocks)
    if not 1 < n_stages <= n:
        raise ValueError(f"n_stages must be in [2, n_layer={n}], got {n_stages}")
    cuts = [round(i * n / n_stages) for i in range(n_stages + 1)]
    return [GPTStage(model, cuts[i], cuts[i + 1]) for i in range(n_stages)]


def run_schedule(stage: GPTStage, steps: list[Step], inputs: list[torch.Tensor],
                 targets: list[torch.Tensor], loss_fn, hidden_shape: tuple[int, ...],
                 group=None) -> dict:
    """Execute this rank's ``steps``; rank r of ``group`` is stage r.

    inputs/targets: the m micro-batches (used by the first / last stage); hidden_shape: the
    (micro_batch, seq, d_model) activation sent between stages. Gradients accumulate in the
    stage's parameters as for one backward of the mean loss over micro-batches. Returns
    {"loss": mean loss (last stage) or None, "timeline": [(op, mb, start, end)]} with times
    from ``time.perf_counter()`` (one monotonic clock for every process of a machine).
    """
    rank = dist.get_rank(group)
    peer = (lambda r: dist.get_global_rank(group, r)) if group is not None else (lambda r: r)
    m = len(inputs)
    saved: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}
    sends, losses, timeline = [], [], []
    for st in steps:
        start = time.perf_counter()
        if st.op == "F":
            if stage.is_first:
                x = inputs[st.mb]
            else:
                x = torch.empty(hidden_shape)
                dist.recv(x, peer(rank - 1), group=group)
                x.requires_grad_(True)
                start = time.perf_counter()  # waiting for the input is bubble, not work
            y = stage(x)
            if stage.is_last:
                y = loss_fn(y, targets[st.mb]) / m
                losses.append(y.detach())
            else:
                sends.append(dist.isend(y.detach().contiguous(), peer(rank + 1), group=group))
            saved[st.mb] = (x, y)
        else:
            x, y = saved.pop(st.mb)
            if stage.is_last:
                y.backward()
            else:
                g = torch.empty(hidden_shape)
                dist.recv(g, peer(rank + 1), group=group)
                start = time.perf_counter()
                y.backward(g)
            if not stage.is_first:
                sends.append(dist.isend(x.grad.contiguous(), peer(rank - 1), group=group))
        timeline.append((st.op, st.mb, start, time.perf_counter()))
    for w in sends:
        w.wait()
    return {"loss": float(sum(losses)) if losses else None, "timeline": timeline}
