"""The whole pretraining pipeline behind ``llmlab pretrain --preset NAME``:

corpus (Python stdlib, split by file, plus the preset's extra packages' source for training) →
BPE tokenizer (chapter 01) trained on the stdlib train split →
token memmaps → ``Trainer`` (bf16 autocast, AdamW, warmup+cosine, clipping, checkpoints) →
final validation loss vs the unigram baseline → samples → a folder with ``model.safetensors``,
``config.json``, ``tokenizer.json``, ``train_log.jsonl``, ``summary.json`` and ``MODEL_CARD.md``.
Re-running with the same preset resumes from the last checkpoint in the work folder.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import json
import math
import platform
import time
import warnings
from pathlib import Path

import torch

from llmlab.data.corpus import corpus_manifest, load_documents, package_documents
from llmlab.data.downloads import cache_dir
from llmlab.data.tokens import read_tokens, write_tokens
from llmlab.model.generate import generate
from llmlab.model.gpt import GPT
from llmlab.model.io import save_model
from llmlab.train.baselines import uniform_loss, unigram_loss
from llmlab.train.card import write_model_card
from llmlab.train.presets import Preset, get_preset
from llmlab.train.trainer import Trainer, evaluate_loss
from llmlab.utils import seed_all

EOT = "<|endoftext|>"


def prepare_data(preset: Preset, workdir: Path, progress: bool = True):
    """Tokenizer and train/val token memmaps for a preset (cached in ``workdir``)."""
    from llmlab.tokenizer import Tokenizer, train_bpe  # chapter 01

    tok_docs = load_documents(split="train")[: preset.max_train_files]  # the tokenizer's corpus
    train_docs = tok_docs + [d for p in preset.extra_train_packages
                             for d in package_documents(p, split="train")]
    val_docs = load_documents(split="val")[: preset.max_val_files]
    manifest = {"train": corpus_manifest(train_docs, preset.extra_train_packages),
                "val": corpus_manifest(val_docs)}
    check_corpus(preset, manifest)
    tok_path = workdir / "tokenizer.json"
    stamp = workdir / "manifest.json"
    if stamp.exists() and tok_path.exists():
        cached = json.loads(stamp.read_text())
        if {k: {f: x for f, x in v.items() if f != "tokens"} for k, v in cached.items()} \
                == manifest:
            return (Tokenizer.load(tok_path), read_tokens(workdir / "train.bin"),
                    read_tokens(workdir / "val.bin"), cached)
    workdir.mkdir(parents=True, exist_ok=True)
    vocab, merges = train_bpe([d.text for d in tok_docs], preset.model.vocab_size, [EOT],
                              num_workers=1)
    tok = Tokenizer(vocab, merges, [EOT])
    tok.save(tok_path)
    eot = tok.special_ids[EOT]
    v = preset.model.vocab_size
    train = write_tokens((d.text for d in train_docs), tok.encode, workdir / "train.bin", v,
                         eot, progress, total=len(train_docs))
    val = write_tokens((d.text for d in val_docs), tok.encode, workdir / "val.bin", v, eot,
                       progress, total=len(val_docs))
    manifest["train"]["tokens"], manifest["val"]["tokens"] = len(train), len(val)
    stamp.write_text(json.dumps(manifest, indent=2) + "\n")
    return tok, train, val, manifest


class CorpusMismatch(UserWarning):
    """The corpus on this machine is not the one a preset's shipped model was trained on."""


def check_corpus(preset: Preset, manifest: dict) -> bool:
    """Compare a run's corpus with the one the preset records; warn, saying how to get the exact
    corpus, when they differ. Returns whether they match (True when the preset records none).

    The standard library comes from the shipped snapshot, so only the extra packages' source can
    differ: a CUDA or another version's build of torch ships other Python files than the
    ``2.13.0+cpu`` build the book model read."""
    if preset.corpus_sha256 is None:
        return True
    bad = [k for k, sha in preset.corpus_sha256.items() if manifest[k]["sha256"] != sha]
    if not bad:
        return True
    packages = ", ".join(f"{p} {v}" for p, v in manifest["train"].get("packages", {}).items())
    warnings.warn(
        f"the {'/'.join(bad)} corpus differs from the one preset {preset.name!r} was trained on "
        f"(sha256 {manifest[bad[0]]['sha256'][:12]}…, expected {preset.corpus_sha256[bad[0]][:12]}…). "
        f"Its training text includes the Python source of {packages}; "
        "the book model read torch 2.13.0+cpu. For the exact corpus, train in a venv with "
        "`pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu`; otherwise "
        "the run is valid but its numbers differ from the shipped model card's.",
        CorpusMismatch, stacklevel=2)
    return False


def _samples(model: GPT, tok, preset: Preset) -> list[str]:
    g = torch.Generator().manual_seed(0)
    out = []
    for prompt in preset.sample_prompts:
        idx = torch.tensor([tok.encode(prompt)], device=next(model.parameters()).device)
        ids = generate(model.eval(), idx, max_new_tokens=preset.sample_tokens, temperature=0.8,
                       top_k=40, generator=g)
        out.append(tok.decode(ids[0].tolist()))
    return out


def pretrain(preset_name: str, out_dir: str | Path, workdir: str | Path | None = None,
             progress: bool = True, max_steps: int | None = None,
             threads: int | None = None, device: str = "cpu") -> dict:
    """Run a preset end to end; returns the summary written to ``out_dir/summary.json``.

    ``device`` ("cpu", "cuda", "cuda:1", ...) is where the model trains; the data sampler and
    the checkpoint stay on the CPU, so a run resumes on any device."""
    preset = get_preset(preset_name)
    out_dir = Path(out_dir)
    workdir = Path(workdir) if workdir else cache_dir() / "pretrain" / preset.name
    threads = threads or preset.threads
    torch.set_num_threads(threads)
    seed_all(preset.train.seed)
    tok, train_tokens, val_tokens, manifest = prepare_data(preset, workdir, progress)
    if tok.vocab_size != preset.model.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} ids, model expects "
                         f"{preset.model.vocab_size}")
    train_cfg = preset.train.replace(checkpoint_path=str(workdir / "checkpoint.pt"),
                                     max_steps=max_steps or preset.train.max_steps)
    model = GPT(preset.model).to(device)
    trainer = Trainer(model, train_tokens, val_tokens, train_cfg)
    ckpt = Path(train_cfg.checkpoint_path)
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state["config"] == train_cfg.to_dict():
            trainer.load_state_dict(state)
    wall_before = trainer.log[-1].get("wall_s", 0.0) if trainer.log else 0.0
    t0 = time.perf_counter()
    trainer.fit(progress=progress)
    wall = wall_before + time.perf_counter() - t0
    trainer.log.append({"step": trainer.step, "wall_s": wall})
    trainer.save(ckpt)

    seq = model.config.block_size
    val_loss = evaluate_loss(model, val_tokens, train_cfg.batch_size, seq,
                             preset.final_eval_batches, "fp32")
    n_eval = min(preset.final_eval_batches * train_cfg.batch_size, (len(val_tokens) - 1) // seq)
    eval_slice = val_tokens[1: n_eval * seq + 1]  # the targets evaluate_loss scored
    train_rows = [r for r in trainer.log if "tokens_per_s" in r]
    summary = {
        "preset": preset.name,
        "command": f"llmlab pretrain --preset {preset.name}",
        "params": model.num_params(),
        "non_embedding_params": model.num_params(non_embedding=True),
        "steps": trainer.step,
        "tokens_trained": trainer.step * train_cfg.batch_size * train_cfg.grad_accum * seq,
        "wall_time_s": round(wall, 1),
        "threads": threads,
        "precision": trainer.precision,  # what "auto" resolved to on this machine
        "device": str(device),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "median_tokens_per_s": sorted(r["tokens_per_s"] for r in train_rows)[len(train_rows) // 2]
        if train_rows else None,
        "median_mfu": sorted(r["mfu"] for r in train_rows)[len(train_rows) // 2]
        if train_rows else None,
        "val_loss": val_loss,
        "val_ppl": math.exp(val_loss),
        "val_eval_tokens": int(len(eval_slice)),
        "unigram_val_loss": unigram_loss(train_tokens, eval_slice, tok.vocab_size),
        "uniform_val_loss": uniform_loss(tok.vocab_size),
        "data": manifest,
        "model_config": model.config.to_dict(),
        "train_config": {k: v for k, v in train_cfg.to_dict().items() if k != "checkpoint_path"},
    }
    summary["samples"] = _samples(model, tok, preset)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(model, out_dir)
    tok.save(out_dir / "tokenizer.json")
    with open(out_dir / "train_log.jsonl", "w") as f:
        for row in trainer.log:
            f.write(json.dumps(row) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_model_card(out_dir, summary, trainer.log)
    return summary
