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

import importlib
import os
import sys

import torch

from llmlab.utils import missing_extra

if _missing := missing_extra(("triton",), "kernels", "llmlab.kernels (Triton, on Linux)"):
    raise ImportError(_missing)


def _use_interpreter() -> None:
    """Run kernels under Triton's interpreter. It is chosen when a kernel is *defined*; torch may
    have imported ``triton.language`` already (its library functions, ``tl.sum``, ``tl.max``,
    then defined for compilation), in which case those are defined again for the interpreter."""
    os.environ.setdefault("TRITON_INTERPRET", "1")
    if os.environ["TRITON_INTERPRET"] != "1" or "triton.language" not in sys.modules:
        return
    import triton.language as tl

    if type(tl.sum).__name__ == "JITFunction":
        importlib.reload(tl.standard)
        importlib.reload(tl)


INTERPRETED = not torch.cuda.is_available()
if INTERPRETED:  # must precede our @triton.jit definitions
    _use_interpreter()

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
