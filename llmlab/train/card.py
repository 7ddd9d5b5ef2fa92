"""The model card written next to a pretrained checkpoint: what it is, what it saw, how long it
took, how good it is, and what it writes (Mitchell et al., "Model Cards for Model Reporting",
arXiv:1810.03993). Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

from pathlib import Path


def _loss_curve(out_dir: Path, log: list[dict]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in log if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in log if "val_loss" in r]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(5, 3), dpi=100)
    ax.plot(*zip(*train), label="train loss", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "loss_curve.png")
    plt.close(fig)
    return "loss_curve.png"


def _data_text(d: dict) -> str:
    tr, va = d["train"], d["val"]
    packages = tr.get("packages", {})
    extra = "".join(f" and the Python source of the `{p}` package ({v})" for p, v in packages.items())
    text = (f"The source code and docstrings of the Python {tr['python']} standard library{extra} "
            f"(offline on every machine; tests left out), split by file with a stable hash: train "
            f"{tr['files']:,} files, {tr['chars']:,} characters, {tr.get('tokens', 0):,} tokens; "
            f"validation {va['files']} files, {va.get('tokens', 0):,} tokens. Corpus sha256: train "
            f"`{tr['sha256'][:16]}…`, val `{va['sha256'][:16]}…`.")
    if packages:
        text += ("\n\nThe tokenizer is trained on the standard library's train split alone, and "
                 "validation is the standard library's validation split alone, so tokenizer and "
                 "losses compare with models trained on the standard library only; the packages "
                 "add training text.")
    return text


def write_model_card(out_dir: Path, s: dict, log: list[dict]) -> Path:
    """Write ``MODEL_CARD.md`` (and ``loss_curve.png``) from a pretraining summary."""
    c, t, d = s["model_config"], s["train_config"], s["data"]
    curve = _loss_curve(out_dir, log)
    samples = "\n\n".join(f"```python\n{x}\n```" for x in s["samples"])
    tps = f"{s['median_tokens_per_s']:,.0f}" if s["median_tokens_per_s"] else "n/a"
    mfu = f"{100 * s['median_mfu']:.1f}%" if s["median_mfu"] else "n/a"
    # Cards written before "auto" existed record only the configured precision.
    trained_in = s.get("precision", t["precision"])
    precision = "bf16 autocast with fp32 master weights" if trained_in == "bf16" else "fp32 throughout"
    text = f"""# llmlab book model ({s['preset']})

A small Llama-style GPT pretrained by llmlab itself, from scratch, on CPU. It is the model
chapters 03–09 fine-tune, align, quantize, cache and serve. Load it with

```python
from llmlab.model import load_book_model
model, tokenizer = load_book_model()
```

Reproduce it with `{s['command']}`. The run is seeded; it repeats bit for bit with the same
llmlab code, Python standard library, torch version and thread count, and otherwise to within
about 0.001 nats of validation loss.

## Architecture

| | |
|---|---|
| parameters | {s['params']:,} ({s['non_embedding_params']:,} non-embedding) |
| layers × d_model | {c['n_layer']} × {c['d_model']} |
| attention | GQA: {c['n_head']} query heads share {c['n_kv_head']} KV heads, d_head {c['d_head']} |
| positions | RoPE ({c['rope_layout']} layout, base {c['rope_base']:g}) |
| norm / MLP | {c['norm']} / {c['mlp']} (d_ff {c['d_ff']}) |
| context | {c['block_size']} tokens |
| vocabulary | {c['vocab_size']} byte-level BPE ids (llmlab.tokenizer, `<|endoftext|>` last) |
| embeddings | {'tied' if c['tie_embeddings'] else 'untied'} input/output |

## Data

{_data_text(d)}

## Training

{s['steps']} AdamW steps (β = ({t['beta1']}, {t['beta2']}), weight decay {t['weight_decay']},
clip {t['grad_clip']}), batch {t['batch_size']} × {c['block_size']} tokens, peak lr {t['lr']}
with {t['warmup_steps']} warmup steps and cosine decay to {t['min_lr_ratio']}× — {s['tokens_trained']:,}
tokens in total ({s['tokens_trained'] / s['params']:.1f} tokens per parameter; Chinchilla's
compute-optimal ratio is about 20), {precision}. Wall time **{s['wall_time_s'] / 60:.1f} min**
on {s['threads']} thread(s) of a shared 2-core CPU ({s['machine']}, torch {s['torch']}):
median {tps} tokens/s, MFU {mfu} of the measured {trained_in} matmul peak.

## Evaluation

| validation loss (nats/token) | value |
|---|---|
| **this model** | **{s['val_loss']:.3f}** (perplexity {s['val_ppl']:.1f}) |
| unigram baseline (train frequencies) | {s['unigram_val_loss']:.3f} |
| uniform guess, ln({c['vocab_size']}) | {s['uniform_val_loss']:.3f} |

Measured on the first {s['val_eval_tokens']:,} validation tokens (fp32). The curve's validation
points use the first {t['eval_batches'] * t['batch_size'] * c['block_size']:,} of them (the
evaluation during training), so they differ from this number by how hard those first files are.
{f'![loss curve]({curve})' if curve else ''}

## Samples (temperature 0.8, top-k 40, seed 0)

{samples}

## Limitations

{s['params'] / 1e6:.1f} M parameters trained for {s['wall_time_s'] / 60:.0f} minutes on a CPU: it has learned
Python's surface — indentation, keywords, docstring style, common identifiers — not program
semantics. It is a teaching
artefact, not a code assistant.
"""
    path = out_dir / "MODEL_CARD.md"
    path.write_text(text)
    return path
