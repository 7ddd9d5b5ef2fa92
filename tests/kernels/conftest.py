"""Kernel tests run on CPU tensors under Triton's interpreter when there is no CUDA GPU."""

import os

import torch

if not torch.cuda.is_available():  # before any @triton.jit is defined
    os.environ.setdefault("TRITON_INTERPRET", "1")
