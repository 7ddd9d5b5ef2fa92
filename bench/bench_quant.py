"""Quantization benchmark: perplexity and size per method, quantize time, QuantLinear throughput.

1. The book's model quantized by RTN, GPTQ and AWQ (int4 and int3, groups of 64), W8A8,
   SmoothQuant and LLM.int8(), and by optimum-quanto's int8/int4 weight quantization (its
   min/max round-to-nearest; Hugging Face's reference library): perplexity on held-out text, KL
   from the float model, model size, and the time each method takes to quantize (calibration:
   the training split). No reference GPTQ or AWQ runs on CPU: torchao's GPTQ asserts a CUDA
   device and optimum-quanto has no GPTQ/AWQ, so GPTQ and AWQ times are compared with quanto's
   round-to-nearest time (``÷ quanto int4``), the floor any calibration-based method pays over.
2. Matmul throughput of ``QuantLinear`` (int4 and int8 weights, dequantized per call) against
   fp32 and bf16 ``torch.nn.Linear`` and torchao's int8 weight-only linear, at batch 1 (decode)
   and batch 64 (prefill), reported as ratios.

    python -m bench.bench_quant --size full    # ~5 min of CPU (1 thread)
    python -m bench.bench_quant --size tiny    # seconds
"""

from __future__ import annotations

import copy
import json
import time

import torch

from bench.common import markdown_table, measure, parse_args, parser, write_results
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
    smoothquant_model,
    w8a8_model,
)

SIZES = {"tiny": {"eval": 256, "seq": 256, "calib": (2, 128),
                  "methods": ["RTN int4", "GPTQ int4", "quanto int4"], "dim": 256, "repeat": 3},
         "full": {"eval": 8192, "seq": 512, "calib": (16, 256),
                  "methods": ["RTN int4", "GPTQ int4", "AWQ int4", "RTN int3", "GPTQ int3", "AWQ int3",
                              "quanto int8", "quanto int4", "W8A8", "SmoothQuant W8A8", "LLM.int8() W8A8"],
                  "dim": 2048, "repeat": 20}}
REFERENCE = "quanto int4"


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
    return [{**r, f"÷ {REFERENCE} s": r["quantize s"] / ref} for r in rows]


def throughput_rows(size: dict) -> list[dict]:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    d = size["dim"]
    torch.manual_seed(0)
    lin = torch.nn.Linear(d, d, bias=False)
    bf16 = copy.deepcopy(lin).to(torch.bfloat16)
    ao = copy.deepcopy(lin)
    quantize_(ao, Int8WeightOnlyConfig())
    layers = {"QuantLinear int4 g64": QuantLinear.from_weight(lin.weight, None, 4, 64),
              "QuantLinear int8 g64": QuantLinear.from_weight(lin.weight, None, 8, 64)}
    rows = []
    for batch in (1, 64):
        x = torch.randn(batch, d)
        with torch.no_grad():
            t = {"fp32": measure(lambda x=x: lin(x), size["repeat"]),
                 "bf16": measure(lambda x=x: bf16(x.bfloat16()), size["repeat"]),
                 "torchao int8 weight-only": measure(lambda x=x: ao(x), size["repeat"])}
            for name, layer in layers.items():
                t[name] = measure(lambda layer=layer, x=x: layer(x), size["repeat"])
        for name in layers:
            rows.append({"measure": f"{name} matmul, {d}x{d}, batch {batch}",
                         "llmlab s": t[name], "÷ fp32": t[name] / t["fp32"],
                         "÷ bf16": t[name] / t["bf16"],
                         "÷ torchao int8": t[name] / t["torchao int8 weight-only"]})
    return rows


def main() -> None:
    args = parse_args(parser(__doc__.splitlines()[0], threads=True))
    size = SIZES[args.size]
    methods, speed = method_rows(size), throughput_rows(size)
    path = write_results("quant", speed, args.out, title="QuantLinear matmul time (lower is faster)",
                         notes="QuantLinear dequantizes its weight on every call (no fused kernel on "
                               "CPU), so ratios above 1 are that overhead.", size=args.size)
    data = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({**data, "methods": methods}, indent=2))
    path.write_text("\n".join([
        "### Quantization methods on the book's model", "", markdown_table(methods), "",
        "llmlab's int4/int3 methods: groups of 64 with fp16 scales and uint8 zeros; quanto int4: "
        "its default groups of 128 with fp32 scales and shifts; the tied embedding stays fp32. KL: "
        "mean per-token KL(float || quantized). No reference GPTQ/AWQ runs on CPU (torchao's GPTQ "
        "asserts a CUDA device; optimum-quanto has none), so quantize times are compared with "
        f"quanto's round-to-nearest ({REFERENCE}).", "", path.read_text()]))
    print(path.read_text())


if __name__ == "__main__":
    main()
