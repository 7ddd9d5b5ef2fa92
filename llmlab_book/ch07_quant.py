"""Chapter 07 (solutions/07_quant): the catalogue of plausible wrong answers.

Each variant is one slip a learner makes in an otherwise right answer, written as the answer
cell would be (see :mod:`llmlab_book.catalogue` for the format); the chapter's checks name them
and ``tests/platform/test_catalogue.py`` grades every one. The predictions of 7.1 read
``n_block_weights``, which the chapter's notebook defines (the check rebinds them to it).
"""

from __future__ import annotations

import torch

import llmlab.quant as Q
from llmlab_book.catalogue import Catalogue, Mistake

n_block_weights = 0  # the notebook's value stands here (see the module's doc)

# ------------------------------------------------------------------ 7.1 predict the model's size


def predicted_sizes_without_scales():
    """int4 counted as half a byte per weight, the groups' scales and zeros forgotten."""
    n = n_block_weights
    return {"fp32": n * 4 / 1e6, "bf16": n * 2 / 1e6, "int4_g64": n / 2 / 1e6}


def predicted_sizes_scale_only():
    """Each group's fp16 scale counted, its uint8 zero point forgotten."""
    n = n_block_weights
    return {"fp32": n * 4 / 1e6, "bf16": n * 2 / 1e6, "int4_g64": (n / 2 + n / 64 * 2) / 1e6}


# ------------------------------------------------------------------ 7.2 predict decode speed


def predicted_decode_without_scales():
    """int4 read at exactly 4 bits per weight: the scales' half bit forgotten."""
    return {"bf16": 3.35e12 / 14e9, "int4": 3.35e12 / (7e9 * 4 / 8)}


def predicted_decode_bf16_as_fp32():
    """bf16 weights counted at 4 bytes each, as if they were fp32."""
    return {"bf16": 3.35e12 / 28e9, "int4": 3.35e12 / (7e9 * 4.5 / 8)}


# ------------------------------------------------------------------ 7.3 absmax


def absmax_scale_from_mean(x, bits=8):
    """The scale from the mean of |x| instead of its max (codes then clamp at the ends)."""
    scale = (x.abs().mean().float() / (2 ** (bits - 1) - 1)).clamp(min=1e-12)
    codes = torch.round(x.float() / scale).clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return codes.to(torch.int32), scale


def absmax_over_2_pow_b_minus_1(x, bits=8):
    """The scale max|x| / 2^(b-1) instead of / (2^(b-1) - 1): the top code is never used."""
    scale = (x.abs().max().float() / 2 ** (bits - 1)).clamp(min=1e-12)
    codes = torch.round(x.float() / scale).clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return codes.to(torch.int32), scale


def absmax_truncating(x, bits=8):
    """Codes truncated toward zero (a cast to int) instead of rounded."""
    scale = (x.abs().max().float() / (2 ** (bits - 1) - 1)).clamp(min=1e-12)
    return (x.float() / scale).to(torch.int32), scale


# ------------------------------------------------------------------ 7.4 zero point


def zeropoint_2_pow_b_levels(x, bits=8):
    """The scale (hi - lo) / 2^b instead of / (2^b - 1): the zero point off by one step."""
    lo, hi = x.min().float().clamp(max=0), x.max().float().clamp(min=0)
    scale = ((hi - lo) / 2 ** bits).clamp(min=1e-12)
    zero = torch.round(-lo / scale)
    codes = (torch.round(x.float() / scale) + zero).clamp(0, 2 ** bits - 1)
    return codes.to(torch.int32), scale, zero


def zeropoint_range_without_zero(x, bits=8):
    """The range [min x, max x] not widened to contain 0, so 0.0 has no exact code."""
    lo, hi = x.min().float(), x.max().float()
    scale = ((hi - lo) / (2 ** bits - 1)).clamp(min=1e-12)
    zero = torch.round(-lo / scale)
    codes = (torch.round(x.float() / scale) + zero).clamp(0, 2 ** bits - 1)
    return codes.to(torch.int32), scale, zero


def zeropoint_unrounded_zero(x, bits=8):
    """The zero point -lo / scale left unrounded: not an integer code."""
    lo, hi = x.min().float().clamp(max=0), x.max().float().clamp(min=0)
    scale = ((hi - lo) / (2 ** bits - 1)).clamp(min=1e-12)
    zero = -lo / scale
    codes = (torch.round(x.float() / scale) + zero).clamp(0, 2 ** bits - 1)
    return codes.to(torch.int32), scale, zero


# ------------------------------------------------------------------ 7.5 int4 packing


def pack_int4_low_first(codes):
    """Column 2j in the low nibble and 2j + 1 in the high one: the nibbles swapped."""
    c = codes.to(torch.uint8)
    return c[:, 0::2] | (c[:, 1::2] << 4)


def pack_int4_halves(codes):
    """Column j packed with column j + cols/2 (the two halves) instead of its neighbour."""
    c = codes.to(torch.uint8)
    half = c.shape[1] // 2
    return (c[:, :half] << 4) | c[:, half:]


# ------------------------------------------------------------------ 7.6 NF4


def nf4_tensor_absmax(w, block_size=64):
    """Every block normalized by the absmax of the whole tensor, not its own."""
    blocks = w.float().reshape(-1, block_size)
    absmax = blocks.abs().amax(1)
    normed = blocks / blocks.abs().max()
    codes = (normed.unsqueeze(-1) - Q.nf4_table()).abs().argmin(-1)
    return codes.reshape(-1).to(torch.uint8), absmax


def nf4_round_up(w, block_size=64):
    """The first code at or above the value (a sorted search) instead of the nearest code."""
    blocks = w.float().reshape(-1, block_size)
    absmax = blocks.abs().amax(1)
    normed = (blocks / absmax.unsqueeze(1)).contiguous()
    codes = torch.searchsorted(Q.nf4_table().contiguous(), normed).clamp(max=15)
    return codes.reshape(-1).to(torch.uint8), absmax


# ------------------------------------------------------------------ 7.7 the GPTQ column loop


def _gptq_sweep(W, H, bits, propagate=True, fp16=True, divide=True):
    W = W.float().clone()
    scale, zero = Q.quant_params(W.unsqueeze(1), bits, False)
    scale, zero = (scale.half().float() if fp16 else scale)[:, 0, 0], zero[:, 0, 0]
    H = H.double().clone()
    H += 0.01 * torch.diag(H).mean() * torch.eye(H.shape[0], dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()
    for j in range(W.shape[1]):
        w = W[:, j]
        q = (Q.quantize_codes(w, scale, zero, bits, False) - zero) * scale
        if propagate:
            e = (w - q) / U[j, j] if divide else w - q
            W[:, j:] -= e.unsqueeze(1) * U[j, j:].unsqueeze(0)
        W[:, j] = q
    return W


def gptq_columns_without_propagation(W, H, bits=4):
    """Each column rounded without moving its error onto the later columns (plain RTN)."""
    return _gptq_sweep(W, H, bits, propagate=False)


def gptq_columns_fp32_scales(W, H, bits=4):
    """Scales left in fp32: QuantLinear stores them in fp16, so codes must be rounded against the
    fp16 scale."""
    return _gptq_sweep(W, H, bits, fp16=False)


def gptq_columns_undivided_error(W, H, bits=4):
    """The error w - q spread without dividing it by U[j, j]."""
    return _gptq_sweep(W, H, bits, divide=False)


# ------------------------------------------------------------------ 7.8 AWQ's scale search


def _awq(x, w, bits, group_size, n_grid, stat="mean", normalize=True, on_outputs=True):
    y = x @ w.T
    act = x.abs().mean(0) if stat == "mean" else x.abs().amax(0)
    best_err, best_s, best_alpha = float("inf"), None, 0.0
    for k in range(n_grid):
        alpha = k / n_grid
        s = act.pow(alpha).clamp(min=1e-4)
        if normalize:
            s = s / (s.max() * s.min()).sqrt()
        w_hat = Q.fake_quantize(w * s, bits, False, "group", group_size) / s
        err = ((x @ w_hat.T - y) if on_outputs else (w_hat - w)).pow(2).mean().item()
        if err < best_err:
            best_err, best_s, best_alpha = err, s, alpha
    return best_s, best_alpha


def awq_max_activation(x, w, bits=4, group_size=64, n_grid=20):
    """The activation statistic max |x| over tokens instead of the mean |x|."""
    return _awq(x, w, bits, group_size, n_grid, stat="max")


def awq_unnormalized(x, w, bits=4, group_size=64, n_grid=20):
    """s not normalized by sqrt(max s * min s)."""
    return _awq(x, w, bits, group_size, n_grid, normalize=False)


def awq_weight_error(x, w, bits=4, group_size=64, n_grid=20):
    """The error measured on the weights, not on the layer's outputs x W^T."""
    return _awq(x, w, bits, group_size, n_grid, on_outputs=False)


# ------------------------------------------------------------------ 7.10 the SmoothQuant scale


def smooth_scale_alpha_swapped(x_absmax, w, alpha=0.5):
    """The exponents swapped: x_max^(1 - alpha) / w_max^alpha."""
    w_absmax = w.abs().amax(0).clamp(min=1e-5)
    return (x_absmax.clamp(min=1e-5).pow(1 - alpha) / w_absmax.pow(alpha)).clamp(min=1e-5)


def smooth_scale_w_max_of_matrix(x_absmax, w, alpha=0.5):
    """max |w| over the whole matrix (one number) instead of per input channel."""
    w_absmax = w.abs().max().clamp(min=1e-5)
    return (x_absmax.clamp(min=1e-5).pow(alpha) / w_absmax.pow(1 - alpha)).clamp(min=1e-5)


def smooth_scale_unclamped(x_absmax, w, alpha=0.5):
    """No clamp: a zero weight column divides by zero."""
    return x_absmax.pow(alpha) / w.abs().amax(0).pow(1 - alpha)


# ------------------------------------------------------------------ 7.11 the straight-through estimator


def ste_no_straight_through(w, bits=4, group_size=64):
    """The fake-quantized weight returned as is: rounding's zero gradient reaches w."""
    return Q.fake_quantize(w, bits, False, "group", group_size)


def ste_symmetric(w, bits=4, group_size=64):
    """Symmetric (absmax) fake quantization instead of the asymmetric one asked for."""
    q = Q.fake_quantize(w, bits, True, "group", group_size)
    return w + (q - w).detach()


# ------------------------------------------------------------------ 7.12 Wanda


def wanda_whole_matrix(w, x, sparsity=0.5):
    """The lowest scores of the whole matrix dropped, not the lowest of each row."""
    score = (w.abs() * x.norm(dim=0)).flatten()
    k = int(w.shape[1] * sparsity) * w.shape[0]
    drop = score.topk(k, largest=False).indices
    return w.flatten().scatter(0, drop, 0.0).view_as(w)


def wanda_magnitude(w, x, sparsity=0.5):
    """The score |W| alone (magnitude pruning): the inputs' norms ignored."""
    k = int(w.shape[1] * sparsity)
    drop = w.abs().topk(k, dim=1, largest=False).indices
    return w.scatter(1, drop, 0.0)


# ------------------------------------------------------------------ 7.9 capstone: GPTQ over a model


def _gptq_layer(W, H, bits, group_size, act_order, propagate=True, live_groups=True):
    out_f, n = W.shape
    gs = group_size if group_size > 0 else n
    if n % gs:
        raise ValueError(f"group_size {gs} must divide in_features {n}")
    W = W.float().clone()
    dead = torch.diag(H) == 0
    W[:, dead] = 0
    H = H.double().clone()
    H[dead, dead] = 1
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(n)
    H = H[perm][:, perm]
    H += 0.01 * torch.diag(H).mean() * torch.eye(n, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True).float()
    scale, zero = torch.empty(out_f, n // gs), torch.empty(out_f, n // gs)
    static = act_order or gs == n or not live_groups
    for g in range(n // gs if static else 0):
        s, z = Q.quant_params(W[:, g * gs:(g + 1) * gs].unsqueeze(1), bits, False)
        scale[:, g], zero[:, g] = s.half().float()[:, 0, 0], z[:, 0, 0]
    W = W[:, perm]
    for j in range(n):
        g = int(perm[j]) // gs
        if not static and int(perm[j]) % gs == 0:
            s, z = Q.quant_params(W[:, j:j + gs].unsqueeze(1), bits, False)
            scale[:, g], zero[:, g] = s.half().float()[:, 0, 0], z[:, 0, 0]
        w = W[:, j]
        q = (Q.quantize_codes(w, scale[:, g], zero[:, g], bits, False) - zero[:, g]) * scale[:, g]
        if propagate:
            W[:, j:] -= ((w - q) / U[j, j]).unsqueeze(1) * U[j, j:].unsqueeze(0)
        W[:, j] = q
    W = W[:, torch.argsort(perm)]
    codes = Q.quantize_codes(W.view(out_f, -1, gs), scale.unsqueeze(-1), zero.unsqueeze(-1), bits, False)
    return codes.reshape(out_f, n), scale, zero


def _gptq_whole(model, calib, bits, group_size, act_order, propagate=True, live_groups=True,
                float_inputs=False):
    if calib.dim() != 2 or calib.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"calib must be (n_seq, seq_len) token ids, got {tuple(calib.shape)} {calib.dtype}")
    names = [n for n in Q.block_linears(model)]
    inputs = {}

    def record(which):
        found = {n: [] for n in which}
        hooks = [model.get_submodule(n).register_forward_hook(
            lambda mod, args, out, n=n: found[n].append(
                args[0].detach().reshape(-1, args[0].shape[-1]).float()))
            for n in which]
        try:
            with torch.no_grad():
                model(calib)
        finally:
            for h in hooks:
                h.remove()
        return {n: torch.cat(v) for n, v in found.items()}

    if float_inputs:
        inputs = record(names)
    for i in range(len(model.blocks)):
        block = [n for n in names if n.startswith(f"blocks.{i}.")]
        if not float_inputs:
            inputs = record(block)
        for name in block:
            lin = model.get_submodule(name)
            codes, scale, zero = _gptq_layer(lin.weight.detach(), Q.hessian(inputs[name]), bits,
                                             group_size, act_order, propagate, live_groups)
            Q.replace_module(model, name, Q.QuantLinear.from_weight(
                lin.weight, lin.bias, bits, group_size, codes=codes, scale=scale, zero=zero))
    return model


def gptq_model_without_propagation(model, calib, bits=4, group_size=64, act_order=True):
    """Each layer rounded column by column without moving the error onto later columns (RTN)."""
    return _gptq_whole(model, calib, bits, group_size, act_order, propagate=False)


def gptq_model_float_inputs(model, calib, bits=4, group_size=64, act_order=True):
    """Every layer calibrated on the float model's inputs, not on those the quantized blocks
    before it produce."""
    return _gptq_whole(model, calib, bits, group_size, act_order, float_inputs=True)


def gptq_model_static_groups(model, calib, bits=4, group_size=64, act_order=True):
    """Without act-order, group scales taken from the original weights, not from the columns the
    sweep has updated."""
    return _gptq_whole(model, calib, bits, group_size, act_order, live_groups=False)


CATALOGUE = Catalogue({
    "predict_sizes": [
        Mistake("int4 counted at half a byte per weight, without the groups' scales and zeros",
                predicted_sizes_without_scales),
        Mistake("each group's fp16 scale counted but not its uint8 zero point", predicted_sizes_scale_only),
    ],
    "predict_decode": [
        Mistake("int4 read at 4 bits per weight, without the scales' half bit",
                predicted_decode_without_scales),
        Mistake("bf16 counted at 4 bytes per weight (fp32's size)", predicted_decode_bf16_as_fp32),
    ],
    "absmax": [
        Mistake("the scale from the mean of |x| instead of its max", absmax_scale_from_mean),
        Mistake("the scale max|x| / 2^(b-1) instead of max|x| / (2^(b-1) - 1)", absmax_over_2_pow_b_minus_1),
        Mistake("codes truncated toward zero instead of rounded", absmax_truncating),
    ],
    "zeropoint": [
        Mistake("the scale (hi - lo) / 2^b instead of (hi - lo) / (2^b - 1)", zeropoint_2_pow_b_levels),
        Mistake("the range not widened to contain 0 (lo = min x, hi = max x)", zeropoint_range_without_zero),
        Mistake("the zero point not rounded to an integer code", zeropoint_unrounded_zero),
    ],
    "pack_int4": [
        Mistake("the nibbles swapped: column 2j in the low nibble", pack_int4_low_first),
        Mistake("column j packed with column j + cols/2 instead of its neighbour", pack_int4_halves),
    ],
    "nf4": [
        Mistake("blocks normalized by the whole tensor's absmax, not their own", nf4_tensor_absmax),
        Mistake("the first code at or above the value instead of the nearest code", nf4_round_up),
    ],
    "gptq": [
        Mistake("each column rounded without spreading its error onto the later columns",
                gptq_columns_without_propagation),
        Mistake("scales left in fp32: round them to fp16 (scale.half().float()) before quantizing",
                gptq_columns_fp32_scales),
        Mistake("the error w - q spread without dividing it by U[j, j]", gptq_columns_undivided_error),
    ],
    "awq": [
        Mistake("the activation statistic max |x| instead of the mean |x| over tokens", awq_max_activation),
        Mistake("s not normalized by sqrt(max s * min s)", awq_unnormalized),
        Mistake("the error measured on the weights instead of the outputs x W^T", awq_weight_error),
    ],
    "gptq_model": [
        Mistake("the rounding errors not propagated to the later columns (RTN per column)",
                gptq_model_without_propagation),
        Mistake("every layer calibrated on the float model's inputs, not on those of the quantized "
                "blocks before it", gptq_model_float_inputs),
        Mistake("without act-order, group parameters from the original weights instead of the "
                "updated columns", gptq_model_static_groups),
    ],
    "smooth": [
        Mistake("the exponents swapped: x_max^(1 - alpha) / w_max^alpha", smooth_scale_alpha_swapped),
        Mistake("max |w| over the whole matrix instead of per input channel", smooth_scale_w_max_of_matrix),
        Mistake("no clamp at 1e-5: a zero weight column divides by zero", smooth_scale_unclamped,
                hidden=True),
    ],
    "ste": [
        Mistake("no straight-through: rounding's zero gradient reaches w", ste_no_straight_through),
        Mistake("symmetric fake quantization instead of the asymmetric one", ste_symmetric),
    ],
    "wanda": [
        Mistake("the lowest scores of the whole matrix pruned instead of the lowest in each row",
                wanda_whole_matrix),
        Mistake("the weights' magnitude alone, without the inputs' norms", wanda_magnitude),
    ],
})
