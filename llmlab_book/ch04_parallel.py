"""Chapter 04 (solutions/04_parallel): the catalogue of plausible wrong answers.

Each variant is one slip a learner makes in an otherwise right answer, written as the answer
cell would be (see :mod:`llmlab_book.catalogue` for the format); the chapter's checks name them
and ``tests/platform/test_catalogue.py`` grades every one.
"""

from __future__ import annotations

import contextlib
import math

import torch
from safetensors import safe_open

from llmlab.model.book import BOOK_MODEL_DIR
from llmlab.parallel.ddp import make_buckets  # the notebook's own make_buckets stands here
from llmlab.train.optim import adamw_step
from llmlab_book.catalogue import Catalogue, Mistake

with safe_open(str(BOOK_MODEL_DIR / "model.safetensors"), "pt") as _f:  # the notebook's N_PARAMS
    N_PARAMS = sum(math.prod(_f.get_slice(k).get_shape()) for k in _f.keys())

# ------------------------------------------------------------------ 4.1 ring all-reduce


def all_reduce_send_everything(x, comm):
    """Every rank sends its whole x to every other rank: a correct sum, N−1 times the buffer."""
    r, n = comm.rank, comm.world_size
    out = x.clone()
    for k in range(1, n):
        incoming = torch.empty_like(x)
        comm.sendrecv(x, (r + k) % n, incoming, (r - k) % n)
        out += incoming
    return out


def all_reduce_gather_adds(x, comm):
    """The all-gather phase adds the incoming chunk, as the reduce-scatter does."""
    r, n = comm.rank, comm.world_size
    buf = x.clone()
    chunks = list(torch.tensor_split(buf, n))
    for phase in range(2):
        for s in range(n - 1):
            send, recv = (r - s - 1 + phase) % n, (r - s - 2 + phase) % n
            incoming = torch.empty_like(chunks[recv])
            comm.sendrecv(chunks[send], (r + 1) % n, incoming, (r - 1) % n)
            chunks[recv] += incoming
    return buf


def all_reduce_no_gather(x, comm):
    """Only the reduce-scatter: rank r holds the full sum of its own chunk, partial sums elsewhere."""
    r, n = comm.rank, comm.world_size
    buf = x.clone()
    chunks = list(torch.tensor_split(buf, n))
    for s in range(n - 1):
        send, recv = (r - s - 1) % n, (r - s - 2) % n
        incoming = torch.empty_like(chunks[recv])
        comm.sendrecv(chunks[send], (r + 1) % n, incoming, (r - 1) % n)
        chunks[recv] += incoming
    return buf


# ------------------------------------------------------------------ 4.2 predict: bytes per rank


def bytes_without_ring_factor():
    """The whole buffer twice, 2n: the (N−1)/N factor forgotten."""
    return 2 * N_PARAMS * 4


def bytes_in_elements():
    """Elements, not bytes: the 4 bytes of an fp32 gradient forgotten."""
    return 2 * 7 / 8 * N_PARAMS


def bytes_one_pass():
    """(N−1)/N · n: the reduce-scatter counted, the all-gather forgotten."""
    return 7 / 8 * N_PARAMS * 4


# ------------------------------------------------------------------ 4.3 gradient buckets


def buckets_hard_cap(params, bucket_bytes):
    """The cap as a hard limit: a bucket is closed before a parameter would take it over the cap."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    buckets, size = [[]], 0
    for p in params:
        b = p.numel() * p.element_size()
        if buckets[-1] and size + b > bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append(p)
        size += b
    return [b for b in buckets if b]


def buckets_in_elements(params, bucket_bytes):
    """Sizes counted in elements (numel), not bytes."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    buckets, size = [[]], 0
    for p in params:
        if size >= bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append(p)
        size += p.numel()
    return [b for b in buckets if b]


# ------------------------------------------------------------------ 4.4 the DDP capstone


class _DDPParts(torch.nn.Module):
    """A right DDP, in parts a variant below changes one of."""

    def __init__(self, module, group, bucket_bytes=1 << 20):
        super().__init__()
        self.module, self.group = module, group
        self.broadcast_all()
        params = [p for p in module.parameters() if p.requires_grad]
        self.buckets = make_buckets(params[::-1], bucket_bytes)
        self.bucket_of = {p: i for i, bucket in enumerate(self.buckets) for p in bucket}
        self.missing = [len(b) for b in self.buckets]
        self.started = {}
        self.syncing = True
        for p in params:
            p.register_post_accumulate_grad_hook(self.grad_ready)

    def broadcast_all(self):
        with torch.no_grad():
            for t in [*self.module.parameters(), *self.module.buffers()]:
                self.group.broadcast(t, 0)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        self.syncing = False
        try:
            yield
        finally:
            self.syncing = True

    def grad_ready(self, p):
        if not self.syncing:
            return
        i = self.bucket_of[p]
        self.missing[i] -= 1
        if self.missing[i] == 0:
            self.start(i)

    def start(self, i):
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.buckets[i]]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.started[i] = (flat, self.group.all_reduce(flat))

    def average(self, flat):
        return flat / self.group.world_size

    def finish_gradient_sync(self):
        for i in range(len(self.buckets)):
            if i not in self.started:
                self.start(i)
        for i, (flat, handle) in self.started.items():
            handle.wait()
            flat = self.average(flat)
            offset = 0
            for p in self.buckets[i]:
                p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
                offset += p.numel()
        self.missing = [len(b) for b in self.buckets]
        self.started = {}


class DDPSum(_DDPParts):
    """The all-reduced gradients never divided by the world size."""

    def average(self, flat):
        return flat


class DDPNoBroadcast(_DDPParts):
    """No broadcast at construction: every rank trains from its own initial weights."""

    def broadcast_all(self):
        pass


class DDPNoOverlap(_DDPParts):
    """No hooks: every bucket all-reduced in finish_gradient_sync, after backward."""

    def grad_ready(self, p):
        pass


# ------------------------------------------------------------------ 4.5 one ZeRO-1 step


def zero1_sum_of_grads(param, grads, m, v, step, lr):
    """The sum of the ranks' gradients, not their mean."""
    n = len(grads)
    s = param.numel() // n
    new = param.clone()
    for r in range(n):
        adamw_step(new[r * s:(r + 1) * s], sum(gr[r * s:(r + 1) * s] for gr in grads), m[r], v[r],
                   step, lr)
    return new


def zero1_local_grad(param, grads, m, v, step, lr):
    """Each rank steps its slice with its own local gradient: no reduce-scatter."""
    n = len(grads)
    s = param.numel() // n
    new = param.clone()
    for r in range(n):
        adamw_step(new[r * s:(r + 1) * s], grads[r][r * s:(r + 1) * s].clone(), m[r], v[r], step, lr)
    return new


# ------------------------------------------------------------------ 4.6 predict: ZeRO-3 memory


def zero3_gb_stage1():
    """ZeRO-1's formula: only the optimizer states divided by N."""
    return (2 + 2) * 7.5e9 / 1e9 + 12 * 7.5e9 / 64 / 1e9


def zero3_gb_states_only():
    """Only the optimizer states, K Ψ / N: the bf16 weights and gradients forgotten."""
    return 12 * 7.5e9 / 64 / 1e9


# ------------------------------------------------------------------ 4.7 tensor-parallel MLP


def tp_mlp_exact_gelu(x, w_fc, w_proj, n):
    """The exact GELU: the spec asks for approximate="tanh", as GPT-2's MLP uses."""
    return [torch.nn.functional.gelu(x @ a.T) @ b.T for a, b in zip(w_fc.chunk(n, 0), w_proj.chunk(n, 1))]


def tp_mlp_summed(x, w_fc, w_proj, n):
    """Every rank returns the summed output (g already applied), not its own partial."""
    full = torch.nn.functional.gelu(x @ w_fc.T, approximate="tanh") @ w_proj.T
    return [full.clone() for _ in range(n)]


# ------------------------------------------------------------------ 4.8 the ring-attention merge


def merge_averaged(out_a, lse_a, out_b, lse_b):
    """The two outputs averaged, their log-sum-exps ignored as weights."""
    return (out_a + out_b) / 2, torch.logaddexp(lse_a, lse_b)


def merge_max_lse(out_a, lse_a, out_b, lse_b):
    """The larger of the two log-sum-exps as the merged one (a max, not a log-sum-exp)."""
    lse = torch.maximum(lse_a, lse_b)
    return torch.exp(lse_a - lse)[..., None] * out_a + torch.exp(lse_b - lse)[..., None] * out_b, lse


# ------------------------------------------------------------------ 4.9 the 1F1B schedule


def one_f_one_b_long_warmup(p, m):
    """p − s warm-up forwards on stage s instead of p − s − 1."""
    if p < 1 or m < 1:
        raise ValueError(f"need p >= 1 and m >= 1, got {p}, {m}")
    out = []
    for s in range(p):
        warm = min(p - s, m)
        steps = [("F", i) for i in range(warm)]
        f, b = warm, 0
        while f < m:
            steps += [("F", f), ("B", b)]
            f, b = f + 1, b + 1
        out.append(steps + [("B", i) for i in range(b, m)])
    return out


def one_f_one_b_gpipe(p, m):
    """GPipe's order: every forward, then every backward."""
    if p < 1 or m < 1:
        raise ValueError(f"need p >= 1 and m >= 1, got {p}, {m}")
    return [[("F", i) for i in range(m)] + [("B", i) for i in range(m)] for _ in range(p)]


# ------------------------------------------------------------------ 4.10 predict: the bubble


def bubble_over_useful_time():
    """(p − 1)/m: the idle time over the useful time, not over the whole step."""
    return 3 / 8


def bubble_p_idle():
    """p/(m + p − 1): p idle slots per stage instead of p − 1."""
    return 4 / 11


# ------------------------------------------------------------------ 4.11 top-k routing


def route_gates_not_renormalised(logits, k):
    """Gates: the softmax over all E logits, read at the top k (not renormalised over the k)."""
    probs = torch.softmax(logits, dim=-1)
    top, experts = logits.topk(k, dim=-1)
    e = logits.shape[-1]
    f = torch.bincount(experts.flatten(), minlength=e).float() / experts.numel()
    return probs.gather(-1, experts), experts, e * (f * probs.mean(0)).sum()


def route_f_over_tokens(logits, k):
    """f_i counted over the T tokens instead of the T·k routed slots."""
    top, experts = logits.topk(k, dim=-1)
    e = logits.shape[-1]
    f = torch.bincount(experts.flatten(), minlength=e).float() / logits.shape[0]
    return torch.softmax(top, dim=-1), experts, e * (f * torch.softmax(logits, dim=-1).mean(0)).sum()


CATALOGUE = Catalogue({
    "ring_all_reduce": [
        Mistake("every rank sends its whole x to every other rank (a gather, not the ring): "
                "N−1 times the buffer", all_reduce_send_everything),
        Mistake("the all-gather phase adds the incoming chunk instead of copying it",
                all_reduce_gather_adds),
        Mistake("only the reduce-scatter: each rank holds the full sum of its own chunk only",
                all_reduce_no_gather),
    ],
    "predict_bytes": [
        Mistake("the whole buffer twice, 2n: the (N−1)/N factor forgotten", bytes_without_ring_factor),
        Mistake("elements, not bytes: the 4 bytes of an fp32 gradient forgotten", bytes_in_elements),
        Mistake("(N−1)/N of the buffer: the reduce-scatter counted, the all-gather forgotten",
                bytes_one_pass),
    ],
    "make_buckets": [
        Mistake("the cap as a hard limit: a bucket closed before a parameter would take it over "
                "the cap", buckets_hard_cap),
        Mistake("bucket sizes counted in elements (numel), not bytes", buckets_in_elements),
    ],
    "ddp": [
        Mistake("a sum over ranks, not the mean: the all-reduced gradients never divided by the "
                "world size", DDPSum),
        Mistake("no broadcast at construction: every rank trains from its own initial weights",
                DDPNoBroadcast),
        Mistake("no overlap: every bucket all-reduced in finish_gradient_sync, none during "
                "backward", DDPNoOverlap),
    ],
    "zero1_step": [
        Mistake("the sum of the ranks' gradients, not their mean", zero1_sum_of_grads),
        Mistake("each rank steps its slice with its own local gradient: no reduce-scatter",
                zero1_local_grad),
    ],
    "predict_zero3": [
        Mistake("ZeRO-1's formula: only the optimizer states divided by N", zero3_gb_stage1),
        Mistake("only the optimizer states, K Ψ / N: the bf16 weights and gradients forgotten",
                zero3_gb_states_only),
    ],
    "tp_mlp": [
        Mistake("the exact GELU: the spec asks for approximate=\"tanh\", as GPT-2's MLP uses",
                tp_mlp_exact_gelu),
        Mistake("every rank returns the summed output (g already applied), not its own partial",
                tp_mlp_summed),
    ],
    "merge": [
        Mistake("the two outputs averaged, their log-sum-exps ignored as weights", merge_averaged),
        Mistake("the larger of the two log-sum-exps as the merged one (a max, not a log-sum-exp)",
                merge_max_lse),
    ],
    "one_f_one_b": [
        Mistake("p − s warm-up forwards on stage s instead of p − s − 1", one_f_one_b_long_warmup),
        Mistake("GPipe's order: every forward, then every backward", one_f_one_b_gpipe),
    ],
    "predict_bubble": [
        Mistake("(p − 1)/m: the idle time over the useful time, not over the whole step",
                bubble_over_useful_time),
        Mistake("p/(m + p − 1): p idle slots per stage instead of p − 1", bubble_p_idle),
    ],
    "route": [
        Mistake("gates: the softmax over all E logits read at the top k, not renormalised over "
                "the k", route_gates_not_renormalised),
        Mistake("f_i counted over the T tokens instead of the T·k routed slots", route_f_over_tokens),
    ],
})
