"""Quantization and compression: number formats, weight-only PTQ (RTN, GPTQ, AWQ), weight and
activation quantization (LLM.int8(), SmoothQuant, Hadamard rotations, W8A8 integer matmul), packed
``QuantLinear`` layers, QAT, pruning (magnitude, Wanda, SparseGPT, 2:4), distillation, low rank.

Taught in chapter 07 (solutions/07_quant). :mod:`llmlab.quant.nf4` is QLoRA's 4-bit NormalFloat,
which chapter 05 uses to freeze base weights.
"""

from llmlab.quant.awq import awq_quantize_model, awq_search
from llmlab.quant.calibrate import (
    block_names,
    calibration_batch,
    collect_inputs,
    corpus_tokens,
    hessian,
    logit_kl,
    perplexity,
)
from llmlab.quant.distill import DistillTrainer, distill_loss
from llmlab.quant.formats import (
    E2M1,
    E4M3,
    E5M2,
    FORMATS,
    FloatFormat,
    QuantizedTensor,
    absmax_quantize,
    fake_fp8,
    fake_mx,
    fake_quantize,
    float_grid,
    fp8_quantize,
    int_grid,
    minmax_dequantize,
    minmax_quantize,
    mx_dequantize,
    mx_quantize,
    quant_params,
    quantize,
    quantize_codes,
    round_to_float,
    zeropoint_quantize,
)
from llmlab.quant.gptq import gptq_quantize, gptq_quantize_model, inverse_hessian_factor, obs_sweep
from llmlab.quant.hadamard import hadamard_matrix, random_hadamard, rotate
from llmlab.quant.linear import (
    QuantLinear,
    block_linears,
    model_nbytes,
    pack_int4,
    quantize_model,
    replace_module,
    rtn_quantize_model,
    set_fused,
    unpack_int4,
)
from llmlab.quant.llm_int8 import llm_int8_linear, outlier_columns
from llmlab.quant.lowrank import LowRankLinear, lowrank_model, relative_error, svd_factors
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
from llmlab.quant.outliers import inject_outliers, kurtosis, outlier_ratio
from llmlab.quant.prune import nm_mask, prune_model, sparsity_of, unstructured_mask, wanda_score
from llmlab.quant.qat import QATLinear, convert_qat, fake_quant_ste, prepare_qat
from llmlab.quant.smoothquant import (
    fold_scales,
    input_groups,
    smoothquant_model,
    smoothquant_scales,
    w8a8_model,
)
from llmlab.quant.sparsegpt import sparsegpt_model, sparsegpt_prune
from llmlab.quant.w8a8 import fake_w8a8_linear, int8_matmul, quantize_int8, w8a8_linear

__all__ = [
    "E2M1", "E4M3", "E5M2", "FORMATS", "NF4_CODE",
    "DistillTrainer", "FloatFormat", "LowRankLinear", "NF4Weight", "QATLinear", "QuantLinear",
    "QuantizedTensor",
    "absmax_quantize", "awq_quantize_model", "awq_search", "block_linears", "block_names",
    "calibration_batch", "collect_inputs", "convert_qat", "corpus_tokens", "distill_loss",
    "double_dequantize", "double_quantize", "fake_fp8", "fake_mx", "fake_quant_ste",
    "fake_quantize", "fake_w8a8_linear", "float_grid", "fold_scales", "fp8_quantize",
    "gptq_quantize", "gptq_quantize_model", "hadamard_matrix", "hessian", "inject_outliers",
    "input_groups", "int8_matmul", "int_grid", "inverse_hessian_factor", "kurtosis",
    "llm_int8_linear", "logit_kl", "lowrank_model", "minmax_dequantize", "minmax_quantize", "model_nbytes",
    "mx_dequantize", "mx_quantize",
    "nf4_code_book", "nf4_linear", "nf4_table", "nm_mask", "obs_sweep", "outlier_columns",
    "outlier_ratio", "pack_int4", "pack_nibbles", "perplexity", "prepare_qat", "prune_model",
    "quant_params", "quantize", "quantize_codes", "quantize_int8", "quantize_model",
    "random_hadamard", "relative_error", "replace_module", "rotate", "round_to_code",
    "round_to_float", "rtn_quantize_model", "set_fused", "smoothquant_model", "smoothquant_scales",
    "sparsegpt_model", "sparsegpt_prune", "sparsity_of", "svd_factors", "to_nf4", "unpack_int4",
    "unpack_nibbles", "unstructured_mask", "w8a8_linear", "w8a8_model", "wanda_score",
    "zeropoint_quantize",
]
