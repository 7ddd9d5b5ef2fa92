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


def test_device_option(tmp_path):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["pretrain", "--preset", "tiny"]).device == "cpu"
    assert parser.parse_args(["pretrain", "--preset", "tiny", "--device", "cuda:1"]).device == "cuda:1"
    if not torch.cuda.is_available():  # a clear message, before any data is prepared
        with pytest.raises(SystemExit, match="no CUDA GPU"):
            cli.main(["pretrain", "--preset", "tiny", "--device", "cuda", "--out",
                      str(tmp_path / "o"), "--workdir", str(tmp_path / "w"), "--no-progress"])
        assert not (tmp_path / "w").exists()
    with pytest.raises(SystemExit, match="--device"):
        cli.main(["pretrain", "--preset", "tiny", "--device", "gpu0", "--out", str(tmp_path)])


def test_extra_packages_join_training_only(tmp_path, monkeypatch):
    """A preset's extra packages add training tokens; tokenizer and validation stay the stdlib's."""
    from dataclasses import replace

    from llmlab.train.pretrain import prepare_data

    pkg = tmp_path / "src" / "extrapkg"
    pkg.mkdir(parents=True)
    for i in range(12):
        (pkg / f"m{i}.py").write_text(f'def f{i}(x):\n    """Return x plus {i}."""\n    return x + {i}\n')
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    tiny = get_preset("tiny")
    plain = prepare_data(tiny, tmp_path / "plain", progress=False)
    extra = prepare_data(replace(tiny, extra_train_packages=("extrapkg",)), tmp_path / "extra",
                         progress=False)
    assert (tmp_path / "plain" / "tokenizer.json").read_bytes() == \
        (tmp_path / "extra" / "tokenizer.json").read_bytes()
    assert extra[3]["val"] == plain[3]["val"] and (extra[2] == plain[2]).all()
    assert extra[3]["train"]["packages"] == {"extrapkg": "unknown"}
    assert extra[3]["train"]["files"] > plain[3]["train"]["files"]
    assert len(extra[1]) > len(plain[1])


def test_the_book_corpus_is_checked_and_a_different_one_says_how_to_get_it():
    """The book preset records its corpus; the shipped snapshot's validation split matches it,
    and a different training corpus (another torch build's source) warns with the fix."""
    import warnings

    from llmlab.data import corpus_manifest, load_documents
    from llmlab.train.pretrain import CorpusMismatch, check_corpus

    book = get_preset("book")
    val = corpus_manifest(load_documents(split="val")[: book.max_val_files])
    same = {"train": {"sha256": book.corpus_sha256["train"]}, "val": val}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_corpus(book, same)
    other = {"train": {"sha256": "0" * 64, "packages": {"torch": "2.13.0+cu130"}}, "val": val}
    with pytest.warns(CorpusMismatch, match=r"train corpus differs.*torch 2\.13\.0\+cu130.*whl/cpu"):
        assert not check_corpus(book, other)
    assert check_corpus(get_preset("tiny"), other)  # a preset that records no corpus
