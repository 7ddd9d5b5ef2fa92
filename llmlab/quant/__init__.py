"""Quantization and compression of LLM weights and activations.

Taught in chapter 07 (solutions/07_quant). :mod:`llmlab.quant.nf4` is QLoRA's 4-bit NormalFloat,
which chapter 05 uses to freeze base weights.
"""

from llmlab.quant.nf4 import (
    NF4_CODE,
    NF4Weight,
    double_dequantize,
    double_quantize,
    nf4_code_book,
    nf4_linear,
    nf4_table,
    pack_nibbles,
    round_to_code,
    to_nf4,
    unpack_nibbles,
)

__all__ = [
    "NF4_CODE",
    "NF4Weight",
    "double_dequantize",
    "double_quantize",
    "nf4_code_book",
    "nf4_linear",
    "nf4_table",
    "pack_nibbles",
    "round_to_code",
    "to_nf4",
    "unpack_nibbles",
]
