"""Quantization benchmark: perplexity and size per method, quantize time, QuantLinear throughput.

1. The book's model quantized by RTN, GPTQ and AWQ (int4 and int3, groups of 64), W8A8,
   SmoothQuant and LLM.int8(), and by optimum-quanto's int8/int4 weight quantization (its
   min/max round-to-nearest; Hugging Face's reference library): perplexity on held-out text, KL
   from the float model, model size, and the time each method takes to quantize (calibration:
   the training split). No reference GPTQ or AWQ runs on CPU: torchao's GPTQ asserts a CUDA
   device and optimum-quanto has no GPTQ/AWQ, so GPTQ and AWQ times are compared with quanto's
   round-to-nearest time (``÷ quanto int4``), the floor any calibration-based method pays over.
2. Decode matmul time of ``QuantLinear`` (int8 per channel, int4 groups of 128) at batch 1 on a
   4096x4096 layer: the fused kernel (:mod:`llmlab.quant.fused`) and the dequantize-then-matmul
   reference, against fp32 ``torch.nn.Linear`` and torchao's int8 weight-only linear (eager,
   compiled, compiled with freezing), with torch's packed int8/int4 CPU kernels measured as the
   candidates the fused kernel was chosen over. Speed-ups are peer time ÷ llmlab time.

    python -m bench.bench_quant --size full    # ~8 min of CPU (1 thread)
    python -m bench.bench_quant --size tiny    # seconds
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable

import torch

from bench.common import (
    interleaved,
    markdown_table,
    parse_args,
    parser,
    speedup,
    speedup_label,
    write_results,
)
from llmlab.model import load_book_model
from llmlab.quant import (
    QuantLinear,
    awq_quantize_model,
    calibration_batch,
    corpus_tokens,
    gptq_quantize_model,
    logit_kl,
    model_nbytes,
    perplexity,
    quantize_model,
    rtn_quantize_model,
    set_fused,
    smoothquant_model,
    w8a8_model,
)

SIZES = {"tiny": {"eval": 256, "seq": 256, "calib": (2, 128),
                  "methods": ["RTN int4", "GPTQ int4", "quanto int4"], "dim": 256, "repeat": 5,
                  "torchao": ("eager", "compiled")},
         "full": {"eval": 8192, "seq": 512, "calib": (16, 256),
                  "methods": ["RTN int4", "GPTQ int4", "AWQ int4", "RTN int3", "GPTQ int3", "AWQ int3",
                              "quanto int8", "quanto int4", "W8A8", "SmoothQuant W8A8", "LLM.int8() W8A8"],
                  "dim": 4096, "repeat": 30,
                  "torchao": ("eager", "compiled", "compiled + freezing")}}
REFERENCE = "quanto int4"
SPEEDUP_FP32 = speedup_label("fp32 nn.Linear")
BF16 = "llmlab int4 g128, bf16 input (torch packed int4 kernel)"
QUANTIZE_SPEEDUP = speedup_label(REFERENCE)


def quanto_model(model: torch.nn.Module, qtype) -> torch.nn.Module:
    """Every block linear -> optimum-quanto's ``QLinear`` with ``qtype`` weights (in place)."""
    from optimum.quanto import freeze, quantize

    def make(name: str, lin: torch.nn.Module) -> torch.nn.Module:
        wrap = torch.nn.Sequential(torch.nn.Linear(lin.in_features, lin.out_features, bias=False))
        wrap[0].weight.data.copy_(lin.weight.detach())
        quantize(wrap, weights=qtype)
        freeze(wrap)
        return wrap[0]
    return quantize_model(model, make)


def quanto_nbytes(model: torch.nn.Module) -> int:
    """Bytes of a model whose linears hold quanto tensors (their packed data, scales and shifts)."""
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        inner = t.__tensor_flatten__()[0] if hasattr(t, "__tensor_flatten__") else []
        parts = [getattr(t, k) for k in inner] or [t]
        parts = [p._data if hasattr(p, "_data") else p for p in parts]  # a PackedTensor's bytes
        total += sum(p.numel() * p.element_size() for p in parts)
    return total


def method_rows(size: dict) -> list[dict]:
    model, tok = load_book_model()
    tokens = corpus_tokens(tok, "val", size["eval"] + 1)
    ids = torch.from_numpy(tokens[:size["eval"]]).view(-1, size["seq"])
    calib = calibration_batch(tok, *size["calib"])
    from optimum.quanto import qint4, qint8

    methods = {}
    for bits in (4, 3):
        methods[f"RTN int{bits}"] = lambda m, b=bits: rtn_quantize_model(m, b, 64)
        methods[f"GPTQ int{bits}"] = lambda m, b=bits: gptq_quantize_model(m, calib, b, 64)
        methods[f"AWQ int{bits}"] = lambda m, b=bits: awq_quantize_model(m, calib, b, 64)
    methods.update({"quanto int8": lambda m: quanto_model(m, qint8),
                    "quanto int4": lambda m: quanto_model(m, qint4),
                    "W8A8": lambda m: w8a8_model(m),
                    "SmoothQuant W8A8": lambda m: w8a8_model(smoothquant_model(m, calib)),
                    "LLM.int8() W8A8": lambda m: w8a8_model(m, outlier_threshold=6.0)})
    fp_ppl, fp_mb = perplexity(model, tokens, seq_len=size["seq"]), model_nbytes(model) / 1e6
    rows = [{"method": "float32", "perplexity": fp_ppl, "KL vs float": 0.0, "size MB": fp_mb,
             "size ratio": 1.0, "quantize s": 0.0}]
    for name in size["methods"]:
        start = time.perf_counter()
        q = methods[name](copy.deepcopy(model))
        secs = time.perf_counter() - start
        mb = (quanto_nbytes if name.startswith("quanto") else model_nbytes)(q) / 1e6
        rows.append({"method": name, "perplexity": perplexity(q, tokens, seq_len=size["seq"]),
                     "KL vs float": logit_kl(model, q, ids), "size MB": mb, "size ratio": mb / fp_mb,
                     "quantize s": secs})
    ref = next(r["quantize s"] for r in rows if r["method"] == REFERENCE)
    return [{**r, QUANTIZE_SPEEDUP: speedup(r["quantize s"], ref, "time")
             if r["method"] != "float32" and not r["method"].startswith("quanto") else "—"}
            for r in rows]


def aten_int4(layer: QuantLinear, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch's packed int4 CPU kernel on ``layer``'s codes: its layout dequantizes
    (q - 8) * scale + zero, so zero = (8 - z) * s gives llmlab's (q - z) * s."""
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(layer.codes().to(torch.int32), 1)
    s = layer.scales.float()
    sz = torch.stack([s.t(), ((8 - layer.zeros.float()) * s).t()], -1).contiguous().to(dtype)
    return lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(
        x.to(dtype), packed, layer.group_size, sz).float()


def aten_int8(layer: QuantLinear) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch's int8 weight-only CPU kernel (one scale per output channel, symmetric): llmlab's
    per-channel zero point is added back as a rank-1 correction."""
    w = (layer.qweight.to(torch.int16) - 128).to(torch.int8)
    s = layer.scales.float().squeeze(-1)
    shift = (128 - layer.zeros.float().squeeze(-1)) * s
    return lambda x: torch.ops.aten._weight_int8pack_mm(x, w, s) + x.sum(-1, keepdim=True) * shift


def torchao_int8(lin: torch.nn.Module, how: str) -> torch.nn.Module:
    """torchao's int8 weight-only linear: eager, compiled, or compiled with freezing (torchao's
    CPU recipe, which constant-folds the dequantized weight back to fp32)."""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    ao = copy.deepcopy(lin)
    quantize_(ao, Int8WeightOnlyConfig())
    if how == "eager":
        return ao
    if how == "compiled":
        return torch.compile(ao)
    with torch._inductor.config.patch(freezing=True):
        frozen = torch.compile(ao, mode="max-autotune-no-cudagraphs")
        frozen(torch.randn(1, lin.in_features))  # compile (and freeze) now, under the patch
    return frozen


def throughput_rows(size: dict) -> tuple[list[dict], list[dict]]:
    """Decode matmul times: llmlab's fused and reference paths against fp32 ``nn.Linear`` and
    torchao's int8 weight-only linear (interleaved, medians), plus torch's packed CPU kernels
    that were measured as candidates for the fast path."""
    d, batch = size["dim"], 1
    torch.manual_seed(0)
    lin = torch.nn.Linear(d, d, bias=False)
    layers = {"int8 per channel": QuantLinear.from_weight(lin.weight, None, 8, 0),
              "int4 g128": QuantLinear.from_weight(lin.weight, None, 4, min(128, d))}
    x = torch.randn(batch, d)
    with torch.no_grad():
        for layer in layers.values():
            set_fused(layer)(x)  # compile the fused kernel's batch-1 bucket
        ao = {how: torchao_int8(lin, how) for how in size["torchao"]}
        runs = {"fp32 nn.Linear": lambda: lin(x)}
        runs.update({f"torchao int8 weight-only, {how}": lambda m=m: m(x) for how, m in ao.items()})
        xb = x.bfloat16()
        for name, layer in layers.items():
            runs[f"llmlab {name}, fused"] = lambda q=layer: q(x)
            runs[f"llmlab {name}, reference"] = lambda q=layer: q.forward_reference(x)
        runs[BF16] = lambda q=layers["int4 g128"]: q(xb)
        cand = {"torch _weight_int8pack_mm (fp32 input)": aten_int8(layers["int8 per channel"]),
                "torch _weight_int4pack_mm_for_cpu (fp32 input)":
                    aten_int4(layers["int4 g128"], torch.float32)}
        runs.update({k: lambda f=f: f(x) for k, f in cand.items()})
        stats = interleaved(runs, size["repeat"], warmup=3)
        refs = {name: layer.forward_reference(x) for name, layer in layers.items()}
        err = {f"llmlab {name}, fused": (layer(x) - refs[name]).abs().max().item()
               for name, layer in layers.items()}
        err[BF16] = (layers["int4 g128"](xb).float() - refs["int4 g128"]).abs().max().item()
        err.update({k: (f(x) - refs["int8 per channel" if "int8" in k else "int4 g128"])
                    .abs().max().item() for k, f in cand.items()})
    ms = {k: v["median"] * 1e3 for k, v in stats.items()}
    peer = min((k for k in ms if k.startswith("torchao") and "freezing" not in k), key=ms.get)
    rows = []
    for k in [k for k in ms if k.startswith("llmlab")]:
        vs_fp32, vs_ao = speedup(ms[k], ms["fp32 nn.Linear"], "time"), speedup(ms[k], ms[peer], "time")
        rows.append({"measure": f"{k.replace('llmlab', 'QuantLinear')}, {d}x{d}, batch {batch}",
                     "llmlab ms": ms[k], "spread": stats[k]["spread"],
                     SPEEDUP_FP32: vs_fp32, speedup_label(peer): vs_ao,
                     "max abs error vs reference": err.get(k, 0.0),
                     "target (≥3× fp32, >1× torchao) met": "—" if k.endswith("reference") else
                     ("yes" if vs_fp32 >= 3 and vs_ao > 1 else "no")})
    others = [{"measure": f"{k}, {d}x{d}, batch {batch}", "ms": ms[k],
               "spread": stats[k]["spread"],
               "max abs error vs llmlab reference": err.get(k, "—")}
              for k in ms if not k.startswith("llmlab")]
    return rows, others


def main() -> None:
    args = parse_args(parser(__doc__.splitlines()[0], threads=True))
    size = SIZES[args.size]
    methods = method_rows(size)
    speed, others = throughput_rows(size)
    peer = next(k for k in speed[0] if k.startswith("speed-up vs torchao"))
    path = write_results(
        "quant", speed, args.out,
        title=f"QuantLinear decode matmul: {SPEEDUP_FP32}; {peer}",
        notes=("Fused: `QuantLinear.fused` (llmlab.quant.fused), the dequantize-in-the-reduction "
               "kernel compiled by torch.compile (inductor C++); reference: dequantize the whole "
               "weight, then one matmul. Times are medians of interleaved, warmed repeats. "
               "Peers and the packed torch kernels measured as candidates for the fast path "
               "on fp32 inputs (both slower than the fused kernel; torch's packed int4 kernel on bf16 "
               "inputs is the last llmlab row: it is what a 4-bit QuantLinear uses for bf16 "
               "inputs, and its error includes rounding the input and output to bf16):\n\n"
               + markdown_table(others) + "\n\ntorchao compiled + freezing constant-folds the "
               "dequantized weight into an fp32 matmul (no longer int8 in memory), so the peer "
               "column uses the fastest torchao variant that keeps int8 weights."),
        size=args.size)
    data = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps(
        {**data, "candidates": others, "methods": methods}, indent=2))
    path.write_text("\n".join([
        f"### Quantization methods on the book's model ({QUANTIZE_SPEEDUP} for quantize time)",
        "", markdown_table(methods), "",
        "llmlab's int4/int3 methods: groups of 64 with fp16 scales and uint8 zeros; quanto int4: "
        "its default groups of 128 with fp32 scales and shifts; the tied embedding stays fp32. KL: "
        "mean per-token KL(float || quantized). No reference GPTQ/AWQ runs on CPU (torchao's GPTQ "
        "asserts a CUDA device; optimum-quanto has none), so quantize times are compared with "
        f"quanto's round-to-nearest ({REFERENCE}): {REFERENCE} seconds ÷ the method's seconds, "
        "so GPTQ/AWQ rows below 1 are the calibration they pay for.", "", path.read_text()]))
    print(path.read_text())


if __name__ == "__main__":
    main()
