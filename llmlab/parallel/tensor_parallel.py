"""Megatron-LM tensor parallelism: split each layer's matrices across ranks.

Shoeybi et al., "Megatron-LM: Training Multi-Billion Parameter Language Models Using Model
Parallelism", arXiv:1909.08053, section 3. An MLP ``Y = act(X A) B`` splits A by columns and B
by rows: rank r computes ``act(X A_r) B_r`` with no communication, and the partial outputs are
summed. Two conjugate operators mark the region (figure 3):

- ``f``: forward identity (X is already on every rank), backward all-reduce (each rank's
  dX covers its columns only);
- ``g``: forward all-reduce (sum the partial outputs), backward identity.

Attention splits the same way by heads: q/k/v projections column-parallel (whole heads per
rank), the output projection row-parallel. The vocabulary splits the embedding table by rows
(each rank looks up the ids in its range, zeros elsewhere, then ``g``) and the LM head by
vocabulary, with a cross-entropy that never gathers the logits (section 3, last paragraph):
one all-reduce for the max, one for the sum of exponentials, one for the target logit.

Per block: 2 all-reduces of (batch, seq, d_model) in forward, 2 in backward.
Taught in chapter 04 (solutions/04_parallel).
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from llmlab.nn import CausalSelfAttention, Embedding, Linear, StepContext
from llmlab.parallel.functional import all_gather_dim, reduce_scatter_dim


class CopyToTensorParallel(torch.autograd.Function):
    """Megatron's ``f``: identity forward, all-reduce of the gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class ReduceFromTensorParallel(torch.autograd.Function):
    """Megatron's ``g``: all-reduce (sum) forward, identity backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        x = x.contiguous().clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def f_op(x: torch.Tensor, group=None) -> torch.Tensor:
    """``f``: x (...) -> x; its gradient is summed over the tensor-parallel ranks."""
    return CopyToTensorParallel.apply(x, group)


def g_op(x: torch.Tensor, group=None) -> torch.Tensor:
    """``g``: partial sums (...) -> their sum over the tensor-parallel ranks."""
    return ReduceFromTensorParallel.apply(x, group)


def shard_linear(linear: Linear, dim: int, rank: int, n: int, bias: bool = True) -> Linear:
    """This rank's block of a dense ``Linear``: ``dim=0`` splits the outputs (column-parallel,
    weight rows), ``dim=1`` the inputs (row-parallel, weight columns; the bias is kept only
    where ``bias`` is True, so the reduced sum adds it once)."""
    out_f, in_f = linear.weight.shape
    size = (out_f, in_f)[dim]
    if size % n:
        raise ValueError(f"cannot split {size} features over {n} ranks")
    w = linear.weight.detach().chunk(n, dim)[rank]
    has_bias = linear.bias is not None and (dim == 0 or bias)
    shard = Linear(w.shape[1], w.shape[0], bias=has_bias)
    with torch.no_grad():
        shard.weight.copy_(w)
        if has_bias:
            shard.bias.copy_(linear.bias.chunk(n)[rank] if dim == 0 else linear.bias)
    return shard


class ColumnParallelLinear(nn.Module):
    """``f`` then this rank's output columns: x (..., in) -> (..., out / N)."""

    def __init__(self, linear: Linear, group=None) -> None:
        super().__init__()
        self.group = group
        self.local = shard_linear(linear, 0, dist.get_rank(group), dist.get_world_size(group))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local(f_op(x, self.group))


class RowParallelLinear(nn.Module):
    """This rank's input rows then ``g``: x_local (..., in / N) -> (..., out), summed."""

    def __init__(self, linear: Linear, group=None) -> None:
        super().__init__()
        self.group = group
        rank = dist.get_rank(group)
        self.local = shard_linear(linear, 1, rank, dist.get_world_size(group), bias=rank == 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return g_op(self.local(x), self.group)


class TensorParallelRegion(nn.Module):
    """``g(module(f(x), *rest))``: one f/g pair around a column→row-parallel sublayer.

    With ``sequence_parallel`` (Korthikanti et al., "Reducing Activation Recomputation in Large
    Transformer Models", arXiv:2205.05198, section 4.2.2) x arrives split along the sequence
    (batch, seq / N, d): ``f`` becomes an all-gather along seq and ``g`` a reduce-scatter, the
    same bytes as one all-reduce, and everything outside the region (norms, residuals) holds
    only seq / N positions.
    """

    def __init__(self, module: nn.Module, group=None, sequence_parallel: bool = False) -> None:
        super().__init__()
        self.module, self.group, self.sp = module, group, sequence_parallel

    def forward(self, x: torch.Tensor, *rest):
        if self.sp:
            return reduce_scatter_dim(self.module(all_gather_dim(x, 1, self.group), *rest), 1,
                                      self.group)
        return g_op(self.module(f_op(x, self.group), *rest), self.group)


_COLUMN = ("q_proj", "k_proj", "v_proj", "fc", "gate_proj", "up_proj")
_ROW = ("o_proj", "proj", "down_proj")


def parallel_sublayer(module: nn.Module, group=None,
                      sequence_parallel: bool = False) -> TensorParallelRegion:
    """A tensor-parallel copy of an attention or MLP sublayer (heads / hidden units split)."""
    rank, n = dist.get_rank(group), dist.get_world_size(group)
    local = copy.deepcopy(module)
    if isinstance(local, CausalSelfAttention):
        if local.n_kv_head % n:
            raise ValueError(f"n_kv_head ({local.n_kv_head}) must be divisible by the "
                             f"tensor-parallel size {n}")
        local.n_head, local.n_kv_head = local.n_head // n, local.n_kv_head // n
    for name in _COLUMN + _ROW:
        if isinstance(getattr(local, name, None), Linear):
            dim = 0 if name in _COLUMN else 1
            setattr(local, name, shard_linear(getattr(local, name), dim, rank, n, bias=rank == 0))
    return TensorParallelRegion(local, group, sequence_parallel)


class VocabParallelEmbedding(nn.Module):
    """Rows [r·V/N, (r+1)·V/N) of the table; ids elsewhere give 0; ``g`` sums the ranks.
    idx: (...) long -> (..., d)."""

    def __init__(self, embedding: Embedding, group=None, sequence_parallel: bool = False) -> None:
        super().__init__()
        self.group, self.sp = group, sequence_parallel
        rank, n = dist.get_rank(group), dist.get_world_size(group)
        v = embedding.num_embeddings
        if v % n:
            raise ValueError(f"vocab_size {v} must be divisible by the tensor-parallel size {n}")
        self.start, self.end = rank * v // n, (rank + 1) * v // n
        self.weight = nn.Parameter(embedding.weight.detach()[self.start:self.end].clone())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        outside = (idx < self.start) | (idx >= self.end)
        local = F.embedding((idx - self.start).masked_fill(outside, 0), self.weight)
        local = local.masked_fill(outside[..., None], 0.0)
        return reduce_scatter_dim(local, 1, self.group) if self.sp else g_op(local, self.group)


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, start, group):
        logits = logits.float()
        m = logits.amax(-1)
        dist.all_reduce(m, op=dist.ReduceOp.MAX, group=group)
        z = logits - m[..., None]
        exp = z.exp()
        total = exp.sum(-1)
        dist.all_reduce(total, group=group)
        local_t = targets - start
        inside = (local_t >= 0) & (local_t < logits.shape[-1])
        picked = z.gather(-1, local_t.clamp(0, logits.shape[-1] - 1)[..., None])[..., 0]
        picked = picked.masked_fill(~inside, 0.0)
        dist.all_reduce(picked, group=group)
        ctx.save_for_backward(exp / total[..., None], local_t, inside)
        return (total.log() - picked).mean()

    @staticmethod
    def backward(ctx, grad):
        softmax, local_t, inside = ctx.saved_tensors
        g = softmax.clone()  # d loss / d logits = softmax - one_hot(target), per token
        idx = local_t.clamp(0, g.shape[-1] - 1)[..., None]
        g.scatter_add_(-1, idx, -inside[..., None].to(g.dtype))
        return g * grad / local_t.numel(), None, None, None


def vocab_parallel_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, start: int,
                                 group=None) -> torch.Tensor:
    """Mean cross-entropy from vocabulary-sharded logits without gathering them.

    logits: (batch, seq, V / N) — this rank's columns [start, start + V/N); targets:
    (batch, seq) global ids -> scalar, equal to ``F.cross_entropy`` on the full logits.
    """
    return _VocabParallelCrossEntropy.apply(logits, targets, start, group)


class _ParallelHead(nn.Module):
    """``f`` then this rank's vocabulary rows of the LM head: (..., d) -> (..., V / N)."""

    def __init__(self, weight: nn.Parameter, group=None, sequence_parallel: bool = False) -> None:
        super().__init__()
        self.weight, self.group, self.sp = weight, group, sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = all_gather_dim(x, 1, self.group) if self.sp else f_op(x, self.group)
        return F.linear(x, self.weight)


class TensorParallelGPT(nn.Module):
    """A tensor-parallel copy of an llmlab ``GPT`` (dense weights from ``model``, every rank
    holding its shards). ``forward(idx)`` -> this rank's logits (batch, seq, V / N);
    ``loss(idx, targets)`` equals the dense ``model.loss``. ``sequence_parallel`` splits the
    residual stream along the sequence between the regions (seq must divide by N)."""

    def __init__(self, model: nn.Module, group=None, sequence_parallel: bool = False) -> None:
        super().__init__()
        self.group = group
        self.model = m = copy.deepcopy(model)
        sp = sequence_parallel
        emb = VocabParallelEmbedding(model.tok_emb, group, sp)
        self.vocab_start = emb.start
        head_weight = (emb.weight if model.config.tie_embeddings else
                       VocabParallelEmbedding(Embedding(*model.lm_head.weight.shape), group).weight)
        if not model.config.tie_embeddings:
            with torch.no_grad():
                head_weight.copy_(model.lm_head.weight[emb.start:emb.end])
        if sp and model.config.position == "learned":
            raise ValueError("sequence_parallel here needs RoPE (learned positions are added "
                             "after the embedding's reduce-scatter)")
        m.tok_emb, m.lm_head = emb, _ParallelHead(head_weight, group, sp)
        for block in m.blocks:
            block.attn = parallel_sublayer(block.attn, group, sp)
            block.mlp = parallel_sublayer(block.mlp, group, sp)

    def forward(self, idx: torch.Tensor, ctx: StepContext | None = None) -> torch.Tensor:
        return self.model(idx, ctx)

    def sync_replicated_grads(self) -> None:
        """With sequence parallelism each rank's norm weights saw seq / N positions: sum their
        gradients over the ranks (Megatron does the same). A no-op without it."""
        if not self.model.lm_head.sp:
            return
        sharded = {id(p) for m in self.model.modules()
                   if isinstance(m, (TensorParallelRegion, VocabParallelEmbedding, _ParallelHead))
                   for p in m.parameters()}
        for p in self.model.parameters():
            if id(p) not in sharded and p.grad is not None:
                dist.all_reduce(p.grad, group=self.group)

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return vocab_parallel_cross_entropy(self(idx), targets, self.vocab_start, self.group)
