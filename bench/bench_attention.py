"""Attention benchmark: naive vs FlashAttention (pure PyTorch) vs ``scaled_dot_product_attention``.

1. Forward + backward of causal attention (batch 1, fp32, d_head 64) at growing sequence
   lengths: wall time (interleaved, median) and peak tensor memory
   (:func:`llmlab.attention.peak_memory`). Speed-ups (naive or SDPA time ÷ llmlab flash time,
   > 1 = llmlab faster) and memory flash ÷ naive.
2. KV-cache bytes per token of each attention variant on real configs
   (:data:`llmlab.attention.REAL_CONFIGS`).

With ``--device cuda``: forward + backward of causal attention in bf16 (batch 4, 16 heads,
d_head 64) at 1k-8k tokens — llmlab's Triton FlashAttention-2 (:mod:`llmlab.kernels`) vs
``scaled_dot_product_attention`` — and peak CUDA memory; results in ``attention_cuda``.
Timings: medians of interleaved repeats after a warm-up, with the spread.

    python -m bench.bench_attention --size full    # up to 8k tokens, a few minutes on 2 cores
    python -m bench.bench_attention --size tiny    # seconds
    python -m bench.bench_attention --device cuda  # Triton flash vs SDPA on a GPU
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from bench.common import (
    interleaved,
    markdown_table,
    parser,
    require_device,
    speedup,
    speedup_label,
    write_results,
)
from llmlab.attention import (
    REAL_CONFIGS,
    flash_attention,
    naive_attention,
    peak_memory,
    variants_of,
)

SIZES = {  # sequence lengths, heads, timing repeats, flash tile size
    "tiny": dict(seqs=[128, 256], heads=2, repeat=3, block=64),
    "full": dict(seqs=[512, 1024, 2048, 4096, 8192], heads=2, repeat=3, block=256),
}
GPU_SIZES = {
    "tiny": dict(seqs=[512, 1024], batch=2, heads=8, repeat=5),
    "full": dict(seqs=[1024, 2048, 4096, 8192], batch=4, heads=16, repeat=20),
}
MIB = 2**20


def implementations(block: int) -> dict:
    return {
        "naive": lambda q, k, v: naive_attention(q, k, v, causal=True),
        "flash": lambda q, k, v: flash_attention(q, k, v, causal=True, block_q=block,
                                                 block_k=block),
        "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    }


def forward_backward(fn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    q.grad = k.grad = v.grad = None
    fn(q, k, v).sum().backward()


def attention_rows(size: dict) -> list[dict]:
    impls, rows = implementations(size["block"]), []
    for seq in size["seqs"]:
        g = torch.Generator().manual_seed(seq)
        q, k, v = (torch.randn(1, size["heads"], seq, 64, generator=g).requires_grad_()
                   for _ in range(3))
        if seq == size["seqs"][0]:  # same numbers before comparing costs
            with torch.no_grad():
                ref = impls["naive"](q, k, v)
                for name in ("flash", "sdpa"):
                    assert torch.allclose(impls[name](q, k, v), ref, atol=1e-4), name
        runs = {n: partial(forward_backward, fn, q, k, v) for n, fn in impls.items()}
        mem = {n: peak_memory(run)[1] / MIB for n, run in runs.items()}  # also a warm-up
        stats = interleaved(runs, size["repeat"], warmup=0)  # peak_memory was the warm-up
        ms = {n: 1000 * st["median"] for n, st in stats.items()}
        rows.append({
            "seq": seq,
            "naive ms": ms["naive"], "flash ms": ms["flash"], "SDPA ms": ms["sdpa"],
            "naive MiB": mem["naive"], "flash MiB": mem["flash"], "SDPA MiB": mem["sdpa"],
            "memory flash ÷ naive": mem["flash"] / mem["naive"],
            "speed-up of flash vs naive (>1 = flash faster)": speedup(ms["flash"], ms["naive"],
                                                                       "time"),
            speedup_label("SDPA"): speedup(ms["flash"], ms["sdpa"], "time"),
            "max spread": max(st["spread"] for st in stats.values()),
        })
    return rows


def gpu_rows(size: dict, device: torch.device) -> list[dict]:
    """Triton FlashAttention-2 vs SDPA, bf16 forward + backward, peak CUDA memory."""
    from llmlab.kernels import flash_attention as triton_flash

    impls = {"triton": lambda q, k, v: triton_flash(q, k, v, causal=True),
             "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)}
    rows = []
    for seq in size["seqs"]:
        g = torch.Generator().manual_seed(seq)
        q, k, v = (torch.randn(size["batch"], size["heads"], seq, 64, generator=g)
                   .to(device, torch.bfloat16).requires_grad_() for _ in range(3))
        with torch.no_grad():
            diff = (impls["triton"](q, k, v).float() - impls["sdpa"](q, k, v).float()).abs().max()
        assert diff < 2e-2, f"Triton flash and SDPA differ by {diff:.3g} at seq {seq}"
        runs = {n: partial(forward_backward, fn, q, k, v) for n, fn in impls.items()}
        mem = {}
        for n, run in runs.items():
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run()
            torch.cuda.synchronize()
            mem[n] = (torch.cuda.max_memory_allocated() - base) / MIB
        stats = interleaved(runs, size["repeat"], warmup=2, device=device)
        ms = {n: 1000 * st["median"] for n, st in stats.items()}
        rows.append({"seq": seq, "Triton flash ms": ms["triton"], "SDPA ms": ms["sdpa"],
                     speedup_label("SDPA"): speedup(ms["triton"], ms["sdpa"], "time"),
                     "Triton MiB": mem["triton"], "SDPA MiB": mem["sdpa"],
                     "max spread": max(st["spread"] for st in stats.values())})
    return rows


def kv_rows() -> list[dict]:
    rows = []
    for name, spec in REAL_CONFIGS.items():
        # DeepSeek-V3 as MHA: 192-dim keys + 128-dim values per head = 2 x 160 numbers
        for variant, s in variants_of(spec, d_head=spec.d_head or 160).items():
            rows.append({"model": name, "variant": variant + (" (actual)" if variant ==
                                                               spec.kind.upper() else ""),
                         "KiB / token": s.bytes_per_token() / 1024,
                         "GiB at 32k tokens": s.cached_tokens(32768) * s.bytes_per_token() / 2**30,
                         "config": spec.source})
    return rows


def flash_vs_naive(rows: list[dict]) -> str:
    """What this run says of flash's time against naive attention's, in words."""
    faster = [r["seq"] for r in rows if r["flash ms"] < r["naive ms"]]
    if not faster:
        return "in this run it is slower than naive attention at every length (it trades time for memory)."
    if len(faster) == len(rows):
        return ("in this run it is also faster than naive attention at every length: its tiles stay "
                "in the CPU's caches, naive's seq × seq matrices do not.")
    return (f"in this run it is faster than naive attention at {', '.join(map(str, faster))} tokens "
            "and slower elsewhere.")


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.split("\n\n")[0]).parse_args(argv)
    device = require_device(args.device)
    if device.type == "cuda":
        size = GPU_SIZES[args.size]
        notes = (f"Causal attention, forward + backward, bf16, batch {size['batch']}, "
                 f"{size['heads']} heads, d_head 64, on one GPU; median of {size['repeat']} "
                 "interleaved runs after 2 warm-up runs. Memory: peak CUDA bytes allocated "
                 "during the call.")
        path = write_results("attention_cuda", gpu_rows(size, device), args.out,
                             title="Attention on a GPU: Triton FlashAttention-2 vs SDPA",
                             notes=notes, size=args.size)
        print(path.read_text())
        return
    size = SIZES[args.size]
    rows = attention_rows(size)
    notes = (f"Causal attention, forward + backward, batch 1, {size['heads']} heads, d_head 64, "
             f"fp32; flash tiles {size['block']}x{size['block']}. Memory: peak bytes of live "
             f"tensors allocated during the call. Times: median of {size['repeat']} interleaved "
             "repeats (max spread = the largest (max - min) / median of the row). "
             f"llmlab's flash is a pure-PyTorch loop over tiles; {flash_vs_naive(rows)} "
             "SDPA is PyTorch's fused kernel.\n\n"
             "**KV cache per token (bf16)** — `llmlab.attention.REAL_CONFIGS`:\n\n"
             + markdown_table(kv_rows()))
    path = write_results("attention", rows, args.out, title="Attention: naive vs flash vs SDPA",
                         notes=notes, size=args.size)
    print(path.read_text())


if __name__ == "__main__":
    main()
