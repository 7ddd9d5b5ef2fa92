"""LLM.int8(): int8 matmul with the outlier feature dimensions kept in float.

"LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale" (Dettmers et al., arXiv
2208.07339). Beyond ~6.7 B parameters a few hidden dimensions carry values of magnitude 20-60 in
almost every token; they wreck any int8 scale they share. The mixed-precision decomposition

    X W^T = X[:, O] W[:, O]^T  +  int8(X[:, ~O]) int8(W[:, ~O])^T

puts the columns O with any ``|x| > threshold`` (6.0 in the paper, ~0.1 % of the dimensions) in a
float matmul and the rest in an int8 vector-wise one (per-token x per-channel scales). As in
bitsandbytes, the weight is stored once in int8; its outlier columns are dequantized for the float
part. Taught in chapter 07 (solutions/07_quant).
"""

from __future__ import annotations

import torch

from llmlab.quant.w8a8 import w8a8_linear


def outlier_columns(x: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    """Feature dimensions with any |value| > threshold. x: (..., k) -> (k,) bool."""
    return (x.reshape(-1, x.shape[-1]).abs() > threshold).any(0)


def llm_int8_linear(x: torch.Tensor, w_codes: torch.Tensor, w_scale: torch.Tensor,
                    bias: torch.Tensor | None = None, threshold: float = 6.0) -> torch.Tensor:
    """x: (..., k) float, w_codes: (n, k) int8, w_scale: (n, 1) -> (..., n)."""
    cols = outlier_columns(x, threshold)
    x_regular = x.masked_fill(cols, 0)  # outliers no longer set the per-token scales
    y = w8a8_linear(x_regular, None, bias, "token", w_codes, w_scale)
    if cols.any():
        w_out = w_codes[:, cols].float() * w_scale.reshape(-1, 1).float()  # (n, |O|)
        y = y + (x[..., cols].float() @ w_out.t()).to(y.dtype)
    return y
