"""The leaderboard's pieces on a tiny model, the contamination scan, and ``llmlab eval``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmlab.evaluate import MCItem, Request, loglikelihood
from llmlab.evaluate.contamination import corpus_overlap
from llmlab.evaluate.leaderboard import (
    KVCompressedModel,
    SuiteConfig,
    dpo_align,
    leaderboard,
    lora_finetune,
    markdown_table,
)

ROOT = Path(__file__).resolve().parents[2]
ITEMS = [MCItem("def add(a, b):\n    return", ("a + b", "os", "Point()"), 0),
         MCItem("class Point:\n    x =", ("0", "os.path"), 0),
         MCItem("import", ("os", "a + b", "x"), 0)] * 6


def test_corpus_overlap():
    texts = ["one two three four five", "nothing in common at all here"]
    corpus = ["zero one two three four five six", "unrelated words only"]
    assert corpus_overlap(texts, iter(corpus), n=3) == [1.0, 0.0]
    assert corpus_overlap(["a b c d"], ["x a b c y"], n=3) == [0.5]


def test_a_lossless_cache_changes_nothing(model, tokenizer):
    from llmlab.kvcache import ContiguousKVCache

    wrapped = KVCompressedModel(model, lambda: ContiguousKVCache(model.config.n_layer))
    reqs = [Request("def add(a, b):\n    return", " a + b")]
    a, b = loglikelihood(model, tokenizer, reqs), loglikelihood(wrapped, tokenizer, reqs)
    assert a[0].logprob == pytest.approx(b[0].logprob, abs=1e-5)


def test_variants_train_and_the_table(model, tokenizer):
    tuned = lora_finetune(model, tokenizer, ITEMS, steps=3, batch_size=4, lr=1e-2)
    assert set(tuned.state_dict()) == set(model.state_dict())  # merged: plain weights again
    assert not torch.equal(tuned.state_dict()["blocks.0.attn.q_proj.weight"],
                           model.state_dict()["blocks.0.attn.q_proj.weight"])
    aligned = dpo_align(model, tokenizer, ITEMS + ITEMS, steps=2, lr=1e-2)
    code = ["def f(x):\n    return x\n" * 8, "import os\n" * 9]
    suite = {"return_mc": {"heldout": ITEMS}, "domains": {"python code": code}}
    rows = leaderboard([("base", "02", model, 4), ("lora", "05", tuned, 4), ("dpo", "06", aligned, 1)],
                       tokenizer, suite, SuiteConfig(n_items=len(ITEMS), n_docs=2, n_resamples=200))
    with pytest.raises(ValueError, match="documents"):
        SuiteConfig(n_docs=1)
    assert rows[0].delta_acc_norm is None and rows[1].delta_acc_norm is not None
    for r in rows:
        assert r.acc.low <= r.acc.estimate <= r.acc.high and r.bits_per_byte.estimate > 0
    table = markdown_table(rows)
    assert table.count("\n") == len(rows) + 1 and "| lora | 05 |" in table


def test_llmlab_eval_command():
    proc = subprocess.run([sys.executable, "-m", "llmlab.cli", "eval", "--model", "book", "--task",
                           "return-mc", "--limit", "8", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["items"] == 8 and 0 <= out["acc"]["estimate"] <= 1
    assert out["acc"]["low"] <= out["acc"]["estimate"] <= out["acc"]["high"]
    bad = subprocess.run([sys.executable, "-m", "llmlab.cli", "eval", "--model", "/nonexistent",
                          "--task", "bpb"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "no model" in bad.stderr
