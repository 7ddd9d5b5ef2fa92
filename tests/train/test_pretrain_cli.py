"""`llmlab pretrain --preset tiny` end to end: data, tokenizer, training, card, reload, resume."""

import argparse
import json
from pathlib import Path

import pytest
import torch

from llmlab.model import load_book_model
from llmlab.model.book import BOOK_MODEL_DIR
from llmlab.train import cli
from llmlab.train.presets import get_preset


def test_pretrain_tiny_end_to_end(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    assert cli.main(["pretrain", "--preset", "tiny", "--out", str(out), "--workdir", str(work),
                     "--no-progress"]) == 0
    for name in ("model.safetensors", "config.json", "tokenizer.json", "train_log.jsonl",
                 "summary.json", "MODEL_CARD.md", "loss_curve.png"):
        assert (out / name).exists(), name
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == get_preset("tiny").train.max_steps
    assert s["val_loss"] < s["uniform_val_loss"]
    assert len(s["samples"]) == 3 and s["samples"][0].startswith("def ")
    card = (out / "MODEL_CARD.md").read_text()
    assert f"{s['val_loss']:.3f}" in card and "llmlab pretrain --preset tiny" in card

    model, tok = load_book_model(out)
    assert model.config.n_kv_head < model.config.n_head
    idx = torch.tensor([tok.encode("import os\n")])
    assert model(idx).shape == (1, idx.shape[1], tok.vocab_size)

    # a second run finds the finished checkpoint and does not train again
    log_before = (out / "train_log.jsonl").read_text()
    cli.main(["pretrain", "--preset", "tiny", "--out", str(out), "--workdir", str(work),
              "--no-progress"])
    s2 = json.loads((out / "summary.json").read_text())
    assert s2["val_loss"] == s["val_loss"]
    assert (out / "train_log.jsonl").read_text().count("loss") >= log_before.count("loss")


def test_register_adds_the_subcommand():
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["pretrain", "--preset", "book", "--steps", "3"])
    assert args.func is cli.run and args.steps == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["pretrain", "--preset", "huge"])
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")


def test_default_output_never_overwrites_the_shipped_model(monkeypatch, tmp_path):
    seen = {}

    def fake_pretrain(preset, out, workdir, **kw):
        seen["out"] = out
        return {"steps": 0, "tokens_trained": 0, "wall_time_s": 0.0, "val_loss": 0.0,
                "unigram_val_loss": 0.0}

    monkeypatch.setattr("llmlab.train.pretrain.pretrain", fake_pretrain)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["pretrain", "--preset", "book", "--no-progress"]) == 0
    assert seen["out"] == Path("runs") / "book"
    assert seen["out"].resolve() != BOOK_MODEL_DIR.resolve()
