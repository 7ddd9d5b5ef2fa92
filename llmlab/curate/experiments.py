"""Chapter 10's three data experiments on the book's crawl, written to one JSON file.

1. **Raw vs curated at equal tokens** — the crawl's extracted text (no filter, no dedup) against
   the output of the chapter's pipeline (:func:`llmlab.curate.curate`) and against the pages
   its labels call good English originals, same tiny model, seeds and token count
   (:func:`llmlab.curate.ablation.compare`), scored on the clean main text of the crawl's
   held-out good English pages.
2. **Memorisation vs duplicate count** — canaries injected 0, 1, 4, 16, 64 times into the
   curated text (:func:`llmlab.curate.canaries.memorization_vs_duplicates`; Carlini et al.,
   arXiv:2202.07646).
3. **Mixture weight vs per-domain loss** — documentation and README pages mixed at several
   weights (:func:`llmlab.curate.ablation.mixture_sweep`).

Run ``python -m llmlab.curate.experiments --out llmlab/curate/assets/ablations.json`` (about
4 CPU-minutes at the default size; ``--tiny`` for a seconds-long smoke run). Chapter 10 loads
the file and writes its prose from the numbers. Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch

from llmlab.curate.ablation import AblationConfig, compare, mixture_sweep, to_bytes
from llmlab.curate.canaries import make_canaries, memorization_vs_duplicates
from llmlab.curate.crawl import load_crawl
from llmlab.curate.document import Doc
from llmlab.curate.extract import html_to_text
from llmlab.curate.langid import train_langid
from llmlab.curate.quality import train_quality
from llmlab.curate.stages import CurateTools, curate
from llmlab.curate.text import split_words
from llmlab.evaluate.statistics import paired_bootstrap

RESULTS = Path(__file__).with_name("assets") / "ablations.json"
LINKS = ("dup_of", "near_dup_of", "paraphrase_of")
COUNTS = (0, 1, 4, 16, 64)
WEIGHTS = (0.1, 0.5, 0.9)


def heldout_pages(crawl: list[Doc], start: int) -> list[Doc]:
    """Good English validation pages from ``crawl[start:]`` that are no copy of another page and
    have no copy anywhere in the crawl: clean text no training set here contains."""
    linked = {d.meta[k] for d in crawl for k in LINKS if d.meta.get(k)}
    return [d for d in crawl[start:] if d.meta["split"] == "val" and d.meta["quality"] == "good"
            and d.meta["lang"] == "en" and not any(d.meta.get(k) for k in LINKS)
            and d.id not in linked]


def raw_and_curated(sample: list[Doc]) -> tuple[list[str], list[str], list[str], dict]:
    """Training texts of the sample's train-split pages: extracted only; through the chapter's
    whole pipeline (language ID and quality classifier trained on the same pages); and the
    pages the crawl's labels call good English originals (what a perfect pipeline would keep,
    as extracted)."""
    texts = [html_to_text(d.text) for d in sample]
    train = [(d, t) for d, t in zip(sample, texts) if t.strip() and d.meta["split"] == "train"]
    en = [(d, t) for d, t in train if d.meta["lang"] == "en"]
    tools = CurateTools(langid=train_langid([t for _, t in train], [d.meta["lang"] for d, _ in train]),
                        quality=train_quality([t for _, t in en],
                                              [d.meta["quality"] == "good" for d, _ in en]))
    kept, stats = curate([d for d in sample if d.meta["split"] == "train"], tools)
    labelled = [t for d, t in en if d.meta["quality"] == "good"
                and not any(d.meta.get(k) for k in LINKS)]
    return [t for _, t in train], [d.text for d in kept], labelled, dict(stats)


def run(cfg: AblationConfig, seeds: tuple[int, ...], sample_size: int = 600,
        canary_cfg: AblationConfig | None = None) -> dict:
    """All three experiments; a JSON-ready dict."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    crawl = load_crawl()
    sample = crawl[:sample_size]
    raw, cur, labelled, stats = raw_and_curated(sample)
    held = heldout_pages(crawl, sample_size)
    by_domain = {dom: [d.meta["main"] for d in held if d.meta["domain"] == dom]
                 for dom in ("docs", "readme", "license")}
    heldout = to_bytes([d.meta["main"] for d in held])
    cmp = compare({"raw": to_bytes(raw), "curated": to_bytes(cur), "labelled": to_bytes(labelled)},
                  heldout, cfg, seeds)
    d_lab = paired_bootstrap(cmp.windows["raw"], cmp.windows["labelled"], n_resamples=2000)

    words = [w for t in cur for w in split_words(t)]
    canaries = make_canaries(words, COUNTS, per_count=4, length=64, seed=cfg.seed)
    memo = memorization_vs_duplicates([t.encode() for t in cur], canaries, canary_cfg or cfg)

    train_good = [d for d in crawl if d.meta["split"] == "train" and d.meta["quality"] == "good"
                  and d.meta["lang"] == "en"]
    dom = {k: to_bytes([d.meta["main"] for d in train_good if d.meta["domain"] == k])
           for k in ("docs", "readme")}
    mix = mixture_sweep(dom["docs"], dom["readme"], to_bytes(by_domain["docs"]),
                        to_bytes(by_domain["readme"]), WEIGHTS, cfg)
    d = cmp.difference
    interval = lambda i: {"estimate": i.estimate, "low": i.low, "high": i.high,  # noqa: E731
                          "confidence": i.confidence}
    texts = {"raw": raw, "curated": cur, "labelled": labelled}
    return {
        "config": dataclasses.asdict(cfg), "seeds": list(seeds), "sample_size": sample_size,
        "canary_config": dataclasses.asdict(canary_cfg or cfg),
        "command": "python -m llmlab.curate.experiments --out llmlab/curate/assets/ablations.json",
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.machine(), "threads": 1},
        "seconds": round(time.perf_counter() - t0, 1),
        "raw_vs_curated": {
            "pages": {k: len(v) for k, v in texts.items()} | {"heldout": len(held)},
            "bytes": {k: sum(len(t.encode()) for t in v) for k, v in texts.items()}
            | {"heldout": int(len(heldout))},
            "heldout_domains": {k: len(v) for k, v in by_domain.items()},
            "pipeline_stats": stats, "tokens": cmp.tokens, "losses": cmp.losses,
            "difference": interval(d), "difference_labelled": interval(d_lab),
            "windows": len(cmp.windows["raw"]),
        },
        "memorization": {"counts": list(COUNTS), "per_count": 4, "prefix": 32, "suffix": 32,
                         "rows": memo},
        "mixture": {"a": "docs", "b": "readme", "rows": mix},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--canary-steps", type=int, default=1200)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="a seconds-long run (tests)")
    a = p.parse_args(argv)
    if a.tiny:
        cfg = AblationConfig(d_model=32, n_layer=1, n_head=2, seq_len=64, batch_size=8, steps=20)
        result = run(cfg, (0, 1), sample_size=200, canary_cfg=cfg)
    else:
        cfg = AblationConfig(steps=a.steps)
        result = run(cfg, tuple(range(a.seeds)),
                     canary_cfg=dataclasses.replace(cfg, steps=a.canary_steps))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {a.out} in {result['seconds']} s")


if __name__ == "__main__":
    main()
