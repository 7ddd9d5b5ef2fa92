"""A leaderboard of the book's own models: one suite, every variant, intervals on every score.

The variants are what the book's chapters do to its model — a LoRA fine-tune (chapter 05,
``llmlab.peft``), DPO alignment (06, ``llmlab.align``), 4-bit weights by RTN and GPTQ (07,
``llmlab.quant``) and a 2-bit KIVI KV cache (08, ``llmlab.kvcache``) — each built in seconds to
minutes, seeded, and the trained ones cached under ``$LLMLAB_CACHE/evaluate``. The suite: the
held-out return-statement task (acc, acc_norm) and the mean bits per byte of held-out code
files, each with a 95 % bootstrap interval over items (files for bits per byte), and the paired
difference of acc_norm against the base model on the same items.
Taught in chapter 11 (solutions/11_eval); ``python -m bench.bench_leaderboard`` writes the book's
table.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from llmlab.evaluate.likelihood import encode_pair, loglikelihood, prefix_token_id
from llmlab.evaluate.multiple_choice import MCItem, MCResult, evaluate_mc
from llmlab.evaluate.perplexity import document_likelihood
from llmlab.evaluate.statistics import Interval, bootstrap_ci, paired_bootstrap
from llmlab.utils import reject_unknown_keys


@reject_unknown_keys
@dataclass(frozen=True)
class SuiteConfig:
    """What the leaderboard measures, and on how much data."""

    n_items: int = 200          # held-out return-statement items
    n_docs: int = 6             # held-out code files for bits per byte (their mean; >= 2)
    n_resamples: int = 2000     # bootstrap resamples
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_items < 2 or self.n_docs < 2:
            raise ValueError(f"an interval needs >= 2 items and >= 2 documents, got "
                             f"n_items={self.n_items}, n_docs={self.n_docs}")


@dataclass(frozen=True)
class Row:
    """One model's scores."""

    name: str
    chapter: str
    acc: Interval
    acc_norm: Interval
    bits_per_byte: Interval
    delta_acc_norm: Interval | None  # paired, against the first row


def evaluate_suite(model: torch.nn.Module, tokenizer, suite: dict, config: SuiteConfig,
                   scorer: Callable = loglikelihood, batch_size: int = 16,
                   progress: Callable | None = None) -> tuple[MCResult, list[float]]:
    """Per-item outcomes of the multiple-choice task and per-document bits per byte."""
    items = suite["return_mc"]["heldout"][:config.n_items]
    mc = evaluate_mc(model, tokenizer, items, scorer=scorer, batch_size=batch_size,
                     progress=progress)
    bpb = [document_likelihood(model, tokenizer, t, batch_size=batch_size).bits_per_byte
           for t in suite["domains"]["python code"][:config.n_docs]]
    return mc, bpb


def leaderboard(models: Sequence[tuple[str, str, torch.nn.Module, int]], tokenizer, suite: dict,
                config: SuiteConfig = SuiteConfig(), scorer: Callable = loglikelihood,
                progress: Callable | None = None) -> list[Row]:
    """Rows for ``(name, chapter, model, batch_size)``; the first model is the baseline."""
    rows, base = [], None
    for name, chapter, model, batch_size in models:
        mc, bpb = evaluate_suite(model, tokenizer, suite, config, scorer, batch_size, progress)
        ci = dict(n_resamples=config.n_resamples, rng=config.seed)
        delta = None if base is None else paired_bootstrap(mc.acc_norm, base.acc_norm, **ci)
        base = base or mc
        rows.append(Row(name, chapter, bootstrap_ci(mc.acc, **ci), bootstrap_ci(mc.acc_norm, **ci),
                        bootstrap_ci(bpb, **ci), delta))
    return rows


def markdown_table(rows: Sequence[Row]) -> str:
    """The leaderboard as a markdown table."""
    cols = table_rows(rows)
    lines = ["| " + " | ".join(cols[0]) + " |", "|" + "---|" * len(cols[0])]
    return "\n".join(lines + ["| " + " | ".join(r.values()) + " |" for r in cols])


def rows_to_json(rows: Sequence[Row]) -> list[dict]:
    return [asdict(r) for r in rows]


# ------------------------------------------------------------------ the variants


class KVCompressedModel(torch.nn.Module):
    """The model reading its keys and values through a compressing cache (chapter 08): every
    forward starts a fresh cache from ``make_cache()`` and runs the whole input through it."""

    def __init__(self, model: torch.nn.Module, make_cache: Callable[[], object]) -> None:
        super().__init__()
        self.model, self.make_cache, self.config = model, make_cache, model.config

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        cache = self.make_cache()
        ctx = cache.prepare(idx)  # the step's context: positions, mask, the cache itself
        logits = self.model(idx, ctx)
        cache.commit(ctx)
        return logits


def answer_examples(tokenizer, items: Sequence[MCItem]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids) of each item's gold choice, as the scorer splits them."""
    eot = prefix_token_id(tokenizer)
    return [encode_pair(tokenizer, i.query, " " + i.choices[i.gold], eot) for i in items]


def lora_finetune(model: torch.nn.Module, tokenizer, items: Sequence[MCItem], steps: int = 80,
                  batch_size: int = 8, lr: float = 3e-3, rank: int = 8, seed: int = 0) -> torch.nn.Module:
    """LoRA on every linear layer, trained on the answers of ``items`` (loss on answer tokens
    only), merged back into plain weights. Returns a new model."""
    from llmlab import peft

    torch.manual_seed(seed)
    m = peft.apply_lora(copy.deepcopy(model), peft.LoRAConfig(r=rank, alpha=2 * rank,
                                                                target_modules=peft.ALL_LINEAR))
    data = answer_examples(tokenizer, items)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    block = model.config.block_size
    m.train()
    for _ in range(steps):
        batch = [data[i] for i in torch.randint(len(data), (batch_size,), generator=g).tolist()]
        seqs = [(p + a)[-block - 1:] for p, a in batch]
        width = max(map(len, seqs)) - 1
        x = torch.zeros(len(seqs), width, dtype=torch.long)
        y = torch.full((len(seqs), width), -100)
        for r, ((_, a), s) in enumerate(zip(batch, seqs)):
            x[r, :len(s) - 1] = torch.tensor(s[:-1])
            y[r, len(s) - 1 - len(a):len(s) - 1] = torch.tensor(a)
        loss = F.cross_entropy(m(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return peft.merge_and_unload(m.eval())


def dpo_align(model: torch.nn.Module, tokenizer, items: Sequence[MCItem], steps: int = 30,
              beta: float = 0.1, lr: float = 1e-4, seed: int = 0) -> torch.nn.Module:
    """DPO (chapter 06) on preference pairs: the gold return expression chosen over a wrong one."""
    from llmlab import align

    eot = prefix_token_id(tokenizer)
    pairs = []
    for i, item in enumerate(items):
        bad = item.choices[(item.gold + 1 + i % (len(item.choices) - 1)) % len(item.choices)]
        prompt, good = encode_pair(tokenizer, item.query, " " + item.choices[item.gold], eot)
        _, worse = encode_pair(tokenizer, item.query, " " + bad, eot)
        keep = model.config.block_size - max(len(good), len(worse))
        pairs.append((prompt[-keep:], good, worse))
    policy = copy.deepcopy(model).train()
    align.train_dpo(policy, pairs[:-16], pairs[-16:], eot, steps=steps, beta=beta, lr=lr,
                    batch_size=8, seed=seed)
    return policy.eval()


def cached(name: str, recipe: dict, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``build()`` once per recipe; later calls load it from ``$LLMLAB_CACHE/evaluate``."""
    from llmlab.data.downloads import cache_dir
    from llmlab.model import load_model, save_model

    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_dir() / "evaluate" / f"{name}-{key}"
    if (folder / "model.safetensors").exists():
        return load_model(folder)
    model = build()
    save_model(model, folder)
    return model


def book_variants(model: torch.nn.Module, tokenizer, suite: dict, train_steps: tuple[int, int] = (80, 30),
                  n_train: int | None = None) -> list[tuple[str, str, torch.nn.Module, int]]:
    """(name, chapter, model, batch size) of the base model and its five variants;
    ``train_steps``: the LoRA and DPO steps; ``n_train``: the first that many training-split items
    (all by default; fewer keeps DPO's precomputed reference log-probabilities small)."""
    from llmlab import kvcache, quant
    from llmlab.quant.calibrate import calibration_batch

    if n_train is not None and n_train <= 16:
        raise ValueError(f"n_train must be > 16 (DPO holds out 16 pairs), got {n_train}")
    train = suite["return_mc"]["train"][:n_train]
    base_key = {"model": suite["corpus"]["train"]["sha256"], "params": float(sum(
        p.detach().double().sum() for p in model.parameters()))}
    lora_steps, dpo_steps = train_steps
    lora = cached("lora", {**base_key, "recipe": f"lora r8 {lora_steps} steps", "n": len(train)},
                  lambda: lora_finetune(model, tokenizer, train, steps=lora_steps))
    dpo = cached("dpo", {**base_key, "recipe": f"dpo beta0.1 {dpo_steps} steps", "n": len(train)},
                 lambda: dpo_align(model, tokenizer, train, steps=dpo_steps))
    rtn = quant.rtn_quantize_model(copy.deepcopy(model), bits=4, group_size=64)
    gptq = quant.gptq_quantize_model(copy.deepcopy(model), calibration_batch(tokenizer), 4, 64)
    n_layer = model.config.n_layer
    kivi = KVCompressedModel(model, lambda: kvcache.QuantizedKVCache.kivi(n_layer, bits=2,
                                                                          group_size=16))
    return [("book model (base)", "02", model, 16), ("LoRA r=8 on train-split answers", "05", lora, 16),
            ("DPO on answer preferences", "06", dpo, 16), ("int4 RTN, groups of 64", "07", rtn, 16),
            ("int4 GPTQ, groups of 64", "07", gptq, 16),
            ("KIVI 2-bit KV cache", "08", kivi, 1)]  # one row per batch: a cache sees no padding


def table_rows(rows: Sequence[Row]) -> list[dict[str, str]]:
    """The rows as the columns of the book's table (text, intervals included)."""
    out = []
    for r in rows:
        d = r.delta_acc_norm
        out.append({"model": r.name, "chapter": r.chapter, "acc": str(r.acc),
                    "acc_norm": str(r.acc_norm),
                    "Δ acc_norm vs base (paired)": "—" if d is None else
                    f"{d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}]",
                    "bits per byte (mean over files)": str(r.bits_per_byte)})
    return out


def run(config: SuiteConfig = SuiteConfig(), train_steps: tuple[int, int] = (80, 30),
        scorer: Callable = loglikelihood, progress: Callable | None = None) -> list[Row]:
    """The book's leaderboard: load the model and the suite, build the variants, score them."""
    from llmlab.evaluate.tasks import load_suite
    from llmlab.model import load_book_model

    torch.manual_seed(config.seed)
    model, tokenizer = load_book_model()
    suite = load_suite()
    variants = book_variants(model, tokenizer, suite, train_steps)
    return leaderboard(variants, tokenizer, suite, config, scorer, progress)


__all__ = ["KVCompressedModel", "Row", "SuiteConfig", "answer_examples", "book_variants", "cached",
           "dpo_align", "evaluate_suite", "leaderboard", "lora_finetune", "markdown_table",
           "rows_to_json", "run", "table_rows"]
