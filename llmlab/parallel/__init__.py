"""Parallel training on ``torch.distributed``: the pieces of chapter 04 (solutions/04_parallel).

One module per strategy, each tested equal to single-process training:

- processes — :func:`launch` (k ``gloo`` processes from a notebook or test; a failing rank fails
  the run with its traceback) and the ``torchrun`` entry point ``python -m llmlab.parallel.launch``;
- collectives from send/recv — :func:`ring_all_reduce`, :func:`ring_reduce_scatter`,
  :func:`ring_all_gather`, :func:`chain_broadcast`, with α-β costs :func:`ring_bytes`,
  :func:`ring_time`, on real (:class:`DistComm`) or simulated (:func:`run_threads`) ranks;
- data parallel — :class:`DDP` (gradient buckets, all-reduce overlapped with backward) over a
  :class:`DistGroup` (real processes) or a :class:`RingGroup` (simulated ranks);
- ZeRO — :class:`ZeroOptimizer` (stages 1, 2), :func:`zero3` / :class:`ShardedUnit` (stage 3),
  :func:`zero_memory`; the industry-shaped versions: :class:`ShardedOptimizer` (a
  ``torch.optim.Optimizer`` wrapping any optimizer class, as torch's
  ``ZeroRedundancyOptimizer``) and :func:`fully_shard` with a :class:`MixedPrecisionPolicy`
  (FSDP2's shape: parameters keep their names, fp32 master shards, bf16 compute);
- tensor parallel (Megatron) — ``f``/``g`` (:func:`f_op`, :func:`g_op`),
  :class:`ColumnParallelLinear`, :class:`RowParallelLinear`, :class:`VocabParallelEmbedding`,
  :func:`vocab_parallel_cross_entropy`, :class:`TensorParallelGPT` (with sequence parallelism);
- pipeline — :func:`gpipe_schedule`, :func:`one_f_one_b_schedule`, :func:`simulate`,
  :func:`bubble_fraction`, :func:`split_gpt`, :func:`run_schedule`;
- MoE — :class:`MoE` (top-k router, aux loss, capacity, shared experts; ``GPTConfig(mlp="moe")``
  with ``GPT(config, kinds=LAYER_KINDS)``),
  :class:`ExpertParallelMoE` (``all_to_all``);
- context parallel — :func:`ring_attention`, :func:`ulysses_attention`;
- activation recomputation — :func:`recompute_blocks`, :func:`saved_activation_bytes`;
- a 2-D mesh — :func:`make_mesh`; a cluster calculator — :func:`memory_per_gpu`,
  :func:`step_time`.
"""

from llmlab.parallel.calculator import (
    DEEPSEEK_V3,
    LLAMA3_70B,
    Hardware,
    ModelShape,
    Plan,
    activation_bytes_per_layer,
    memory_per_gpu,
    step_time,
)
from llmlab.parallel.collectives import (
    chain_broadcast,
    ring_all_gather,
    ring_all_reduce,
    ring_bytes,
    ring_reduce_scatter,
    ring_time,
)
from llmlab.parallel.comm import Comm, DistComm, ReplayComm, ThreadComm, run_replay, run_threads
from llmlab.parallel.context_parallel import (
    merge_step,
    partial_attention,
    ring_attention,
    ulysses_attention,
)
from llmlab.parallel.ddp import DDP, make_buckets
from llmlab.parallel.fsdp import MixedPrecisionPolicy, full_parameters, fully_shard
from llmlab.parallel.functional import all_gather_dim, all_to_all, reduce_scatter_dim, ring_shift
from llmlab.parallel.groups import DistGroup, Done, RingGroup
from llmlab.parallel.launch import launch, source_of
from llmlab.parallel.mesh import Mesh2D, make_mesh, mesh_ranks
from llmlab.parallel.moe import (
    LAYER_KINDS,
    ExpertParallelMoE,
    MoE,
    MoEConfig,
    capacity_mask,
    expert_capacity,
    load_balancing_loss,
    moe_aux_loss,
    top_k_route,
)
from llmlab.parallel.pipeline import (
    SCHEDULES,
    GPTStage,
    Slot,
    Step,
    bubble_formula,
    bubble_fraction,
    gpipe_schedule,
    one_f_one_b_schedule,
    peak_in_flight,
    run_schedule,
    simulate,
    split_gpt,
)
from llmlab.parallel.recompute import Recomputed, recompute_blocks, saved_activation_bytes
from llmlab.parallel.tensor_parallel import (
    ColumnParallelLinear,
    RowParallelLinear,
    TensorParallelGPT,
    TensorParallelRegion,
    VocabParallelEmbedding,
    f_op,
    g_op,
    parallel_sublayer,
    shard_linear,
    vocab_parallel_cross_entropy,
)
from llmlab.parallel.zero import GatherParams, ShardedUnit, ZeroOptimizer, zero3, zero_memory
from llmlab.parallel.zero_optim import ShardedOptimizer, partition_by_size

__all__ = [
    "DDP", "DEEPSEEK_V3", "LAYER_KINDS", "LLAMA3_70B", "SCHEDULES", "ColumnParallelLinear", "Comm",
    "DistComm", "DistGroup", "Done", "RingGroup", "source_of",
    "ExpertParallelMoE", "GPTStage", "GatherParams", "Hardware", "Mesh2D", "MixedPrecisionPolicy",
    "MoE", "MoEConfig", "ShardedOptimizer", "full_parameters", "fully_shard", "partition_by_size",
    "ModelShape", "Plan", "Recomputed", "RowParallelLinear", "ShardedUnit", "Slot", "Step",
    "ReplayComm", "TensorParallelGPT", "TensorParallelRegion", "ThreadComm", "VocabParallelEmbedding",
    "ZeroOptimizer", "activation_bytes_per_layer", "all_gather_dim", "all_to_all",
    "bubble_formula", "bubble_fraction", "capacity_mask", "chain_broadcast", "expert_capacity",
    "f_op", "g_op", "gpipe_schedule", "launch", "load_balancing_loss", "make_buckets",
    "make_mesh", "memory_per_gpu", "merge_step", "mesh_ranks", "moe_aux_loss",
    "one_f_one_b_schedule", "parallel_sublayer", "partial_attention", "peak_in_flight",
    "recompute_blocks", "reduce_scatter_dim", "ring_all_gather", "ring_all_reduce",
    "ring_attention", "ring_bytes", "ring_reduce_scatter", "ring_shift", "ring_time",
    "run_replay", "run_schedule", "run_threads", "saved_activation_bytes", "shard_linear", "simulate",
    "split_gpt", "step_time", "top_k_route", "ulysses_attention", "vocab_parallel_cross_entropy",
    "zero3", "zero_memory",
]
