"""A cluster calculator: memory per GPU and step time of a training plan, with the formulas.

Memory per GPU (bytes), mixed precision (bf16 weights and gradients, fp32 Adam: K = 12):

- model states: ZeRO's formulas (:func:`llmlab.parallel.zero.zero_memory`) on the Ψ / (tp·pp)
  parameters a GPU owns (÷ ep for the experts of an MoE);
- activations (Korthikanti et al., arXiv:2205.05198, eq. 1–2, per layer, micro-batch b,
  sequence s, width h, a heads): ``s·b·h·(34 + 5·a·s/h)`` without recomputation, divided by t
  with tensor + sequence parallelism; ``34·s·b·h / t`` with selective recomputation;
  ``2·s·b·h`` (the block input) with full recomputation. With 1F1B, stage 0 holds
  ``min(p, m)`` micro-batches of its L/p layers.

Step time (seconds): compute ``6·N_active·tokens / (GPUs · peak · MFU)`` (8 instead of 6 with
full recomputation), stretched by the pipeline bubble ``(m + p − 1) / m``, plus the α-β time of
the data-parallel gradient all-reduce (×1.5 for ZeRO-3; not overlapped: an upper bound) and
of the 4 tensor-parallel all-reduces per layer and micro-batch. Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmlab.parallel.collectives import ring_time
from llmlab.parallel.zero import zero_memory
from llmlab.utils import reject_unknown_keys


@reject_unknown_keys
@dataclass(frozen=True)
class ModelShape:
    """What the calculator needs of a model (``n_active`` < ``n_params`` for an MoE)."""

    name: str
    n_params: float
    n_layer: int
    d_model: int
    n_head: int
    n_active: float | None = None

    @property
    def active(self) -> float:
        return self.n_active or self.n_params


# Llama 3 70B: 80 layers, d 8192, 64 heads (arXiv:2407.21783, table 3); DeepSeek-V3: 671B total,
# 37B active, 61 layers, d 7168, 128 heads (arXiv:2412.19437, section 4.2).
LLAMA3_70B = ModelShape("Llama-3-70B", 70.6e9, 80, 8192, 64)
DEEPSEEK_V3 = ModelShape("DeepSeek-V3", 671e9, 61, 7168, 128, n_active=37e9)


@reject_unknown_keys
@dataclass(frozen=True)
class Hardware:
    """One GPU and its links: bf16 dense peak FLOP/s, achieved MFU, bytes/s inside a node
    (NVLink) and across nodes (per GPU), latency α. Defaults: an H100 SXM node with 400 Gb/s
    InfiniBand per GPU."""

    name: str = "H100"
    memory: float = 80e9
    peak_flops: float = 989e12
    mfu: float = 0.40
    intra_bw: float = 450e9
    inter_bw: float = 50e9
    alpha: float = 5e-6


@reject_unknown_keys
@dataclass(frozen=True)
class Plan:
    """A parallel layout and batch: dp·tp·pp GPUs (ep splits experts inside dp)."""

    dp: int = 1
    tp: int = 1
    pp: int = 1
    ep: int = 1
    zero: int = 1
    micro_batch: int = 1
    n_micro: int = 1
    seq_len: int = 4096
    recompute: str = "selective"  # "none", "selective" or "full"

    @property
    def n_gpus(self) -> int:
        return self.dp * self.tp * self.pp


def activation_bytes_per_layer(m: ModelShape, plan: Plan) -> float:
    """Korthikanti et al. eq. 1–2 (with sequence parallelism when tp > 1)."""
    s, b, h, a, t = plan.seq_len, plan.micro_batch, m.d_model, m.n_head, plan.tp
    if plan.recompute == "full":
        return 2 * s * b * h / t
    if plan.recompute == "selective":
        return 34 * s * b * h / t
    if plan.recompute == "none":
        return s * b * h * (34 + 5 * a * s / h) / t
    raise ValueError(f"recompute must be 'none', 'selective' or 'full', got {plan.recompute!r}")


def memory_per_gpu(m: ModelShape, plan: Plan) -> dict[str, float]:
    """Bytes on the busiest GPU (pipeline stage 0): model states, activations, total."""
    psi = m.n_params / (plan.tp * plan.pp * plan.ep)
    states = zero_memory(psi, plan.dp, plan.zero)
    in_flight = min(plan.pp, plan.n_micro)
    acts = activation_bytes_per_layer(m, plan) * (m.n_layer / plan.pp) * in_flight
    return {"model_states": states, "activations": acts, "total": states + acts}


def step_time(m: ModelShape, plan: Plan, hw: Hardware = Hardware()) -> dict[str, float]:
    """Seconds per optimizer step: compute (with bubble), DP and TP communication, total."""
    tokens = plan.dp * plan.micro_batch * plan.n_micro * plan.seq_len
    flops_per_token = (8 if plan.recompute == "full" else 6) * m.active
    compute = flops_per_token * tokens / (plan.n_gpus * hw.peak_flops * hw.mfu)
    pipeline = compute * (plan.n_micro + plan.pp - 1) / plan.n_micro
    grad_bytes = 2 * m.n_params / (plan.tp * plan.pp * plan.ep)
    dp_comm = ring_time("all_reduce", grad_bytes, plan.dp, hw.alpha, 1 / hw.inter_bw)
    if plan.zero == 3:  # parameters gathered in forward and again in backward: 1.5x
        dp_comm *= 1.5
    act = 2 * plan.micro_batch * plan.seq_len * m.d_model
    tp_comm = (4 * m.n_layer / plan.pp * plan.n_micro
               * ring_time("all_reduce", act, plan.tp, hw.alpha, 1 / hw.intra_bw))
    return {"compute": compute, "bubble": pipeline - compute, "dp_comm": dp_comm,
            "tp_comm": tp_comm, "total": pipeline + dp_comm + tp_comm, "tokens": tokens}
