"""Model benchmark: training throughput (tokens/s) and MFU of llmlab's GPT vs ``transformers``.

For each family — GPT-2 style (``GPT2LMHeadModel``) and Llama style with grouped KV heads
(``LlamaForCausalLM``) — a random ``transformers`` model and llmlab's ``GPT`` holding the same
weights (``llmlab.model.from_hf``) each run full training steps on the same batches: forward
under bf16 autocast, cross-entropy, backward, gradient clipping, AdamW (llmlab's own optimizer
for llmlab, ``torch.optim.AdamW`` for transformers). Steps are timed in alternation so load on
the shared machine hits both alike; the best of N steps is reported. MFU uses the bf16 matmul
peak measured in the same run.

    python -m bench.bench_model --size full    # the book model's shape; ~2 min on 2 cores
    python -m bench.bench_model --size tiny    # seconds
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.common import measure, parser, write_results
from llmlab.model import from_hf
from llmlab.model.counting import flops_per_token
from llmlab.nn import fast_cross_entropy
from llmlab.train import AdamW, clip_grad_norm, decay_groups, measure_matmul_peak

SIZES = {  # width, depth, heads, kv heads, vocab, batch, seq, timed steps
    "tiny": dict(d=64, layers=2, heads=4, kv=2, vocab=512, batch=4, seq=64, steps=2),
    "full": dict(d=192, layers=6, heads=6, kv=2, vocab=4096, batch=8, seq=256, steps=8),
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


def train_step_fn(model, optimizer, batches, logits_of, loss_fn):
    """A closure running one training step on the next batch (cycling)."""
    state = {"i": 0}

    def step():
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = logits_of(model, x)
        loss = loss_fn(logits, y)
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def hf_loss(logits, y):
    return F.cross_entropy(logits.float().flatten(0, 1), y.flatten())


def bench_family(name: str, hf, s: dict, peak: float) -> dict:
    ours = from_hf(hf).train()
    hf.train()
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(4):
        ids = torch.randint(0, s["vocab"], (s["batch"], s["seq"] + 1), generator=g)
        batches.append((ids[:, :-1], ids[:, 1:]))
    runs = {
        "llmlab": train_step_fn(ours, AdamW(decay_groups(ours, 0.1), lr=1e-4), batches,
                                lambda m, x: m(x), fast_cross_entropy),
        "transformers": train_step_fn(hf, torch.optim.AdamW(decay_groups(hf, 0.1), lr=1e-4),
                                      batches, lambda m, x: m(input_ids=x).logits, hf_loss),
    }
    for fn in runs.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(s["steps"]):
        for k, fn in runs.items():
            times[k].append(measure(fn, repeat=1, warmup=0))
    tokens = s["batch"] * s["seq"]
    tps = {k: tokens / min(v) for k, v in times.items()}  # best of N: least disturbed by load
    fpt = flops_per_token(ours.config, s["seq"])
    return {"model": name, "params": ours.num_params(),
            "llmlab tokens/s": round(tps["llmlab"]), "transformers tokens/s": round(tps["transformers"]),
            "llmlab ÷ transformers": tps["llmlab"] / tps["transformers"],
            "llmlab MFU": tps["llmlab"] * fpt / peak,
            "transformers MFU": tps["transformers"] * fpt / peak}


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    s = SIZES[args.size]
    peak = measure_matmul_peak(torch.bfloat16)
    rows = [bench_family(name, hf, s, peak) for name, hf in hf_models(s).items()]
    notes = (f"One training step = forward (bf16 autocast) + loss + backward + clip + AdamW on a "
             f"batch of {s['batch']} × {s['seq']} tokens; same weights and batches for both, "
             f"timed alternately, best of {s['steps']}. MFU = tokens/s × model FLOPs per token "
             f"(6N + attention) ÷ measured bf16 matmul peak ({peak / 1e9:,.0f} GFLOP/s).")
    path = write_results("model", rows, args.out, title="Training throughput: llmlab GPT vs "
                         "transformers", notes=notes, size=args.size)
    print(path.read_text())


if __name__ == "__main__":
    main()
