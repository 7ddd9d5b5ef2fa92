"""KV-cache benchmark: decode throughput cached vs uncached vs ``transformers``, and memory waste.

1. Decode tokens/s of llmlab's cached greedy generation, its uncached baseline (recompute the
   whole sequence each step) and Hugging Face ``transformers`` ``generate`` (its own KV cache) on
   the same random Llama-style weights and lengths, at batch 1 and 8. Reported as speed-ups
   (> 1 = llmlab faster).
2. KV memory reserved for a mixed-length workload by static preallocation (every request
   reserves the maximum length up front, as a static cache does) vs paging (a real
   ``PagedKVCache`` run, blocks of 16 tokens).

Timings: warm-up, then repeats in alternation; the median is reported with the spread
((max - min) / median).

    python -m bench.bench_kvcache --size full    # ~2 min of CPU (1 thread), the book model's shape
    python -m bench.bench_kvcache --size tiny    # seconds
    python -m bench.bench_kvcache --device cuda  # decode on a GPU (writes kvcache_cuda)
"""

from __future__ import annotations

from functools import partial

import torch

from bench.common import (
    interleaved,
    parse_args,
    parser,
    ratio_columns,
    require_device,
    write_results,
)
from llmlab.attention import REAL_CONFIGS
from llmlab.kvcache import PagedKVCache, kv_cache_bytes, layout_waste, mixed_lengths
from llmlab.model import from_hf, generate

SIZES = {  # model width/depth, prompt length, new tokens, timing repeats, workload requests
    "tiny": dict(d_model=64, n_layer=2, prompt=8, new=32, repeat=3, requests=64),
    "full": dict(d_model=192, n_layer=6, prompt=16, new=256, repeat=7, requests=512),
}


def hf_and_ours(d_model: int, n_layer: int):
    """A random ``LlamaForCausalLM`` and llmlab's ``GPT`` holding the same weights."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=2048, hidden_size=d_model,
                                   intermediate_size=int(8 / 3 * d_model), num_hidden_layers=n_layer,
                                   num_attention_heads=d_model // 32, num_key_value_heads=2,
                                   max_position_embeddings=1024)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    return hf, from_hf(hf).eval()


def row(measure_name: str, ours: float, peer: float, unit: str, spread: str = "") -> dict:
    return {"measure": measure_name, "llmlab": f"{ours:.4g} {unit}", "peer": f"{peer:.4g} {unit}",
            **ratio_columns(ours, peer, unit), "spread (llmlab / peer)": spread or "—"}


def decode_rows(size: dict, device: torch.device) -> list[dict]:
    hf, ours = hf_and_ours(size["d_model"], size["n_layer"])
    hf, ours = hf.to(device), ours.to(device)
    rows, new = [], size["new"]
    for batch in (1, 8):
        g = torch.Generator().manual_seed(1)
        idx = torch.randint(0, 2048, (batch, size["prompt"]), generator=g).to(device)
        runs = {"cached": partial(generate, ours, idx, max_new_tokens=new),
                "uncached": partial(generate, ours, idx, max_new_tokens=new, use_cache=False),
                "transformers": partial(hf_generate, hf, idx, new)}
        assert torch.equal(runs["cached"](), runs["transformers"]())  # same tokens
        stats = interleaved(runs, size["repeat"], device=device)
        tps = {k: batch * new / st["median"] for k, st in stats.items()}
        sp = {k: f"{st['spread']:.2f}" for k, st in stats.items()}
        rows.append(row(f"decode tok/s, batch {batch}, {new} new: cached vs uncached (llmlab)",
                        tps["cached"], tps["uncached"], "tok/s", f"{sp['cached']} / {sp['uncached']}"))
        rows.append(row(f"decode tok/s, batch {batch}, {new} new: llmlab vs transformers "
                        "generate", tps["cached"], tps["transformers"], "tok/s",
                        f"{sp['cached']} / {sp['transformers']}"))
    return rows


@torch.no_grad()
def hf_generate(hf, idx: torch.Tensor, new: int) -> torch.Tensor:
    return hf.generate(idx, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                       pad_token_id=0)


def paged_blocks_used(lengths: list[int], block_size: int = 16) -> int:
    """Blocks a real PagedKVCache holds after storing every request (1 layer, tiny heads)."""
    total_blocks = sum(-(-n // block_size) for n in lengths)
    cache = PagedKVCache(n_layer=1, num_blocks=total_blocks, block_size=block_size)
    for i in range(len(lengths)):
        cache.add_sequence(i)
    ctx = cache.prepare(list(range(len(lengths))), lengths)
    kv = torch.zeros(len(lengths), max(lengths), 1, 2)
    ctx.cache.update(0, kv, kv)  # what the one layer stores
    cache.commit(ctx)
    return cache.used_blocks()


def memory_rows(size: dict) -> list[dict]:
    lengths = mixed_lengths(size["requests"], max_len=2048)
    block, max_len = 16, 2048
    waste = layout_waste(lengths, max_len=max_len, block_size=block)
    assert paged_blocks_used(lengths, block) * block == waste.paged  # the real cache agrees
    per_token = kv_cache_bytes(REAL_CONFIGS["Llama 3 8B"], 1, 1)
    gib = lambda tokens: tokens * per_token / 2 ** 30  # noqa: E731
    name = f"{len(lengths)} mixed requests, Llama 3 8B bf16"
    return [row(f"KV memory reserved, {name}: paged vs static preallocation", gib(waste.paged),
                gib(waste.contiguous), "GiB"),
            row(f"KV memory wasted, {name}: paged vs static preallocation",
                gib(waste.paged - waste.used), gib(waste.contiguous - waste.used), "GiB")]


def main() -> None:
    args = parse_args(parser(__doc__.splitlines()[0], threads=True))
    device = require_device(args.device)
    size = SIZES[args.size]
    rows = decode_rows(size, device) + memory_rows(size)
    notes = (f"Decode on {device.type}: greedy, fp32, random Llama-style weights "
             f"(d_model {size['d_model']}, {size['n_layer']} layers, GQA), prompt "
             f"{size['prompt']} tokens; all three produce the same tokens; median of "
             f"{size['repeat']} interleaved runs after a warm-up, spread = (max - min) / median. "
             "Memory: request lengths log-normal (median ~350 tokens, capped at 2048); static "
             "preallocation reserves 2048 per request, paging blocks of 16.")
    name = "kvcache_cuda" if device.type == "cuda" else "kvcache"
    path = write_results(name, rows, args.out, title="KV cache", notes=notes, size=args.size)
    print(path.read_text())


if __name__ == "__main__":
    main()
