"""Model benchmark: training throughput (tokens/s) and MFU of llmlab's GPT vs ``transformers``.

For each family — GPT-2 style (``GPT2LMHeadModel``) and Llama style with grouped KV heads
(``LlamaForCausalLM``) — a random ``transformers`` model and llmlab's ``GPT`` holding the same
weights (``llmlab.model.from_hf``) each run full training steps on the same batches: forward
under bf16 autocast (on the device's type), cross-entropy, backward, gradient clipping
(``torch.nn.utils.clip_grad_norm_``) and ``torch.optim.AdamW(foreach=True)`` — the *same*
optimizer and clipping code for both, so the ratio measures the models. Steps are timed in
alternation after warm-up steps; the table reports the median over the repeats and the spread
((max - min) / median). MFU uses the bf16 matmul peak measured in the same run.

Modes: ``eager`` always; ``compiled`` (``torch.compile``, fullgraph for llmlab) with
``--compile`` on a CPU and by default on a GPU, where llmlab also runs with its Triton kernels
(``llmlab.kernels.use_kernels``).

    python -m bench.bench_model --size full                  # the book model's shape, CPU
    python -m bench.bench_model --size tiny                  # seconds
    python -m bench.bench_model --device cuda --size full    # GPT-2-small shape on a GPU
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.common import (
    interleaved,
    parser,
    require_device,
    speedup,
    speedup_label,
    write_results,
)
from llmlab.model import from_hf
from llmlab.model.counting import flops_per_token
from llmlab.nn import fast_cross_entropy
from llmlab.train import decay_groups, measure_matmul_peak

SIZES = {  # width, depth, heads, kv heads, vocab, batch, seq, timed steps, warm-up steps
    "tiny": dict(d=64, layers=2, heads=4, kv=2, vocab=512, batch=4, seq=64, steps=3, warmup=1),
    "full": dict(d=192, layers=6, heads=6, kv=2, vocab=4096, batch=8, seq=256, steps=10,
                 warmup=2),
}
GPU_SIZES = {  # GPT-2 small (124M) shape for "full"
    "tiny": dict(d=256, layers=4, heads=4, kv=2, vocab=8192, batch=8, seq=512, steps=5, warmup=3),
    "full": dict(d=768, layers=12, heads=12, kv=4, vocab=50304, batch=16, seq=1024, steps=20,
                 warmup=5),
}


def hf_models(s: dict):
    """Random GPT-2 and Llama (GQA) models of the size ``s``."""
    import transformers

    torch.manual_seed(0)
    gpt2 = transformers.GPT2Config(vocab_size=s["vocab"], n_positions=s["seq"], n_embd=s["d"],
                                   n_layer=s["layers"], n_head=s["heads"], bos_token_id=0,
                                   eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                                   attn_pdrop=0.0)
    llama = transformers.LlamaConfig(vocab_size=s["vocab"], max_position_embeddings=s["seq"],
                                     hidden_size=s["d"], intermediate_size=int(8 / 3 * s["d"]),
                                     num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                                     num_key_value_heads=s["kv"], tie_word_embeddings=True,
                                     bos_token_id=0, eos_token_id=0)
    return {"GPT-2 style (GPT2LMHeadModel)": transformers.GPT2LMHeadModel(gpt2),
            "Llama style, GQA (LlamaForCausalLM)": transformers.LlamaForCausalLM(llama)}


def train_step_fn(model, batches, forward, device: torch.device):
    """A closure running one training step on the next batch (cycling), the same recipe for every
    model: bf16 autocast, loss, backward, clip, ``torch.optim.AdamW(foreach=True)``."""
    optimizer = torch.optim.AdamW(decay_groups(model, 0.1), lr=1e-4, foreach=True)
    state = {"i": 0}

    def step():
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = forward(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def runs_for(hf, s: dict, device: torch.device, modes: list[str]) -> tuple[dict, object]:
    """name -> step closure, for llmlab and transformers in each mode."""
    ours = from_hf(hf).to(device).train()
    hf = hf.to(device).train()
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        ids = torch.randint(0, s["vocab"], (s["batch"], s["seq"] + 1), generator=g).to(device)
        batches.append((ids[:, :-1], ids[:, 1:]))
    runs = {}
    for mode in modes:
        compiled = mode == "compiled"
        m_ours = torch.compile(ours, fullgraph=True) if compiled else ours
        m_hf = torch.compile(hf) if compiled else hf
        runs[f"llmlab {mode}"] = train_step_fn(
            ours, batches, lambda x, y, m=m_ours: fast_cross_entropy(m(x), y), device)
        runs[f"transformers {mode}"] = train_step_fn(
            hf, batches, lambda x, y, m=m_hf: F.cross_entropy(
                m(input_ids=x).logits.float().flatten(0, 1), y.flatten()), device)
    if device.type == "cuda":  # llmlab with its Triton RMSNorm and flash attention
        from llmlab.kernels import use_kernels

        fused = use_kernels(from_hf(hf).to(device).train())
        runs["llmlab + Triton kernels eager"] = train_step_fn(
            fused, batches, lambda x, y: fast_cross_entropy(fused(x), y), device)
    return runs, ours


def bench_family(name: str, hf, s: dict, peak: float, device: torch.device,
                 modes: list[str]) -> list[dict]:
    runs, ours = runs_for(hf, s, device, modes)
    stats = interleaved(runs, s["steps"], warmup=s["warmup"], device=device)
    tokens = s["batch"] * s["seq"]
    fpt = flops_per_token(ours.config, s["seq"])
    rows = []
    for run, st in stats.items():
        mode = run.split(" ", 1)[1]
        peer = stats.get(f"transformers {mode}") or stats["transformers eager"]
        tps = tokens / st["median"]
        rows.append({"model": name, "run": run, "params": ours.num_params(),
                     "tokens/s (median)": round(tps),
                     "spread": st["spread"],
                     speedup_label("transformers, same mode"): speedup(st["median"], peer["median"], "time"),
                     "MFU": tps * fpt / peak})
    return rows


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile'd models on a CPU (minutes of compilation)")
    args = p.parse_args(argv)
    device = require_device(args.device)
    gpu = device.type == "cuda"
    s = (GPU_SIZES if gpu else SIZES)[args.size]
    modes = ["eager", "compiled"] if gpu or args.compile else ["eager"]
    peak = measure_matmul_peak(torch.bfloat16, n=8192 if gpu else 1024, device=device)
    rows = [r for name, hf in hf_models(s).items()
            for r in bench_family(name, hf, s, peak, device, modes)]
    notes = (f"One training step = forward (bf16 autocast on {device.type}) + loss + backward + "
             f"clip + `torch.optim.AdamW(foreach=True)` on a batch of {s['batch']} × {s['seq']} "
             f"tokens; same weights, batches, optimizer and clipping code for both libraries, "
             f"timed alternately after {s['warmup']} warm-up steps; median of {s['steps']} steps, "
             "spread = (max - min) / median. speed-up > 1 means llmlab is faster. MFU = "
             "tokens/s × model FLOPs per token (6N + attention) ÷ measured bf16 matmul peak "
             f"({peak / 1e12:,.2f} TFLOP/s).")
    name = "model_cuda" if gpu else "model"
    path = write_results(name, rows, args.out, title="Training throughput: llmlab GPT vs "
                         f"transformers ({device.type})", notes=notes, size=args.size)
    print(path.read_text())


if __name__ == "__main__":
    main()
