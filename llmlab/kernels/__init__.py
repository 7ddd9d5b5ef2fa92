"""Triton kernels for the hot spots of training and inference, each equal to its PyTorch reference.

- :func:`rms_norm` — fused RMSNorm, forward and backward (one row per program);
- :func:`softmax` and :func:`cross_entropy` — fused row softmax, and softmax + cross-entropy
  forward and backward without materialising the probabilities in the forward;
- :func:`flash_attention` — FlashAttention-2 forward and backward ("FlashAttention-2: Faster
  Attention with Better Parallelism and Work Partitioning", Dao, arXiv 2307.08691): the same tile
  loop as :func:`llmlab.attention.flash_attention_forward`, one program per query tile.

On a machine without a CUDA GPU, Triton's interpreter (``TRITON_INTERPRET=1``) runs the kernels on
CPU tensors — slowly, but exactly, which is how the tests and chapter 03 run them; importing this
package on such a machine sets ``TRITON_INTERPRET=1`` (unless already set) *before* the kernels are
defined. On a GPU they compile. :func:`use_kernels` swaps them into a ``GPT``'s RMSNorm and
attention layers (used by the GPU benchmarks). Taught in chapter 03 (solutions/03_attention).
"""

from __future__ import annotations

import os

import torch

INTERPRETED = not torch.cuda.is_available()
if INTERPRETED:  # must precede triton.jit: the interpreter is chosen when a kernel is defined
    os.environ.setdefault("TRITON_INTERPRET", "1")

from llmlab.kernels.cross_entropy import cross_entropy, softmax  # noqa: E402
from llmlab.kernels.flash import flash_attention, flash_attention_forward  # noqa: E402
from llmlab.kernels.patch import use_kernels  # noqa: E402
from llmlab.kernels.rmsnorm import rms_norm  # noqa: E402

__all__ = [
    "INTERPRETED",
    "cross_entropy",
    "flash_attention",
    "flash_attention_forward",
    "rms_norm",
    "softmax",
    "use_kernels",
]
