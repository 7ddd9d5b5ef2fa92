"""The stdlib corpus (and an installed package's source): which files, the deterministic split,
the manifest."""

import json
import lzma
from pathlib import Path

import pytest

from llmlab.data import (
    corpus_manifest,
    load_documents,
    package_documents,
    split_of,
    stdlib_files,
    stdlib_root,
)
from llmlab.data.corpus import SNAPSHOT_PYTHON, read_folder, snapshot_documents
from llmlab.data.snapshot import write_snapshot

BOOK_SUMMARY = Path(__file__).parents[2] / "llmlab" / "model" / "assets" / "book" / "summary.json"


def test_files_are_sorted_source_without_tests():
    files = stdlib_files()
    rel = [p.relative_to(stdlib_root()).as_posix() for p in files]
    assert rel == sorted(rel) and len(rel) > 200
    assert "os.py" in rel and "json/decoder.py" in rel
    assert not any(r.startswith(("test/", "encodings/")) or "/tests/" in r for r in rel)
    assert not any("site-packages" in r for r in rel)


def test_split_is_stable_disjoint_and_about_the_fraction():
    assert split_of("os.py") == split_of("os.py")
    names = [p.relative_to(stdlib_root()).as_posix() for p in stdlib_files()]
    val = [n for n in names if split_of(n) == "val"]
    assert 0.02 < len(val) / len(names) < 0.09
    assert {split_of(n, 0.0) for n in names} == {"train"}
    assert {split_of(n, 1.0) for n in names} == {"val"}


def test_load_documents_splits_partition_the_corpus(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "test").mkdir()
    for i in range(40):
        (tmp_path / "pkg" / f"m{i}.py").write_text(f'"""Module {i}."""\nx = {i}\n')
    (tmp_path / "test" / "test_x.py").write_text("assert False\n")
    (tmp_path / "pkg" / "bad.py").write_bytes(b"\xff\xfe not utf-8")
    all_docs = load_documents(tmp_path)
    train = load_documents(tmp_path, "train", val_fraction=0.3)
    val = load_documents(tmp_path, "val", val_fraction=0.3)
    assert len(all_docs) == 40  # tests and undecodable files left out
    assert {d.name for d in train} | {d.name for d in val} == {d.name for d in all_docs}
    assert not {d.name for d in train} & {d.name for d in val}
    assert val and train


def test_manifest_identifies_content():
    docs = load_documents(split="val")
    m = corpus_manifest(docs)
    assert m["python"] == SNAPSHOT_PYTHON and m["files"] == len(docs)
    assert corpus_manifest(docs) == m
    assert corpus_manifest(docs[1:])["sha256"] != m["sha256"]


def test_package_documents_name_split_and_record_the_package(tmp_path, monkeypatch):
    pkg = tmp_path / "fakepkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "tests").mkdir()
    (pkg / "__init__.py").write_text('"""A package."""\n')
    for i in range(30):
        (pkg / "sub" / f"m{i}.py").write_text(f"y = {i}\n")
    (pkg / "tests" / "test_y.py").write_text("assert False\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    docs = package_documents("fakepkg")
    names = [d.name for d in docs]
    assert names == sorted(names) and len(names) == 31  # tests left out
    assert all(n.startswith("fakepkg/") for n in names)
    train = package_documents("fakepkg", "train", val_fraction=0.3)
    val = package_documents("fakepkg", "val", val_fraction=0.3)
    assert {d.name for d in train} | {d.name for d in val} == set(names)
    assert not {d.name for d in train} & {d.name for d in val} and train and val
    # the split hashes the prefixed name, so a file's side is the same on every machine
    assert all(split_of(d.name, 0.3) == "val" for d in val)
    with pytest.raises(ModuleNotFoundError):
        package_documents("no_such_package_here")
    with pytest.raises(ValueError, match="not a package"):
        package_documents("json.decoder")  # a module, not a package


def test_torch_source_joins_the_manifest_with_its_version():
    import torch

    docs = package_documents("torch", "val")
    assert docs and all(d.name.startswith("torch/") for d in docs)
    assert not any("/test/" in d.name or "/tests/" in d.name for d in docs)
    m = corpus_manifest(docs, ("torch",))
    assert m["packages"] == {"torch": torch.__version__} and m["files"] == len(docs)


def test_the_snapshot_is_the_corpus_the_book_model_was_validated_on():
    """Every Python reads the same shipped standard library: its validation split is, byte for
    byte, the one the book model's card reports (same files, characters and sha256)."""
    card = json.loads(BOOK_SUMMARY.read_text())["data"]["val"]
    val = load_documents(split="val")[: card["files"]]
    m = corpus_manifest(val)
    assert {k: m[k] for k in ("python", "files", "chars", "sha256")} == \
        {k: card[k] for k in ("python", "files", "chars", "sha256")}
    names = [d.name for d in load_documents()]
    assert names == sorted(names) and "os.py" in names and "json/decoder.py" in names
    assert not any(n.startswith(("test/", "encodings/")) for n in names)


def test_snapshot_round_trip_and_a_damaged_snapshot_is_refused(tmp_path):
    root = tmp_path / "lib"
    (root / "pkg").mkdir(parents=True)
    for i in range(12):
        (root / "pkg" / f"m{i}.py").write_text(f'"""Module {i}: café."""\nx = {i}\n')
    out = tmp_path / "snap.jsonl.xz"
    sha = write_snapshot(out, root)
    assert list(snapshot_documents(out, sha)) == read_folder(root)
    write_snapshot(tmp_path / "again.xz", root)
    assert (tmp_path / "again.xz").read_bytes() == out.read_bytes()  # deterministic bytes
    lines = lzma.decompress(out.read_bytes()).decode().splitlines()
    lines = [line.replace("x = 3", "x = 4") for line in lines]  # one file edited
    bad = tmp_path / "bad.jsonl.xz"
    bad.write_bytes(lzma.compress("\n".join(lines).encode()))
    assert bad.read_bytes() != out.read_bytes()
    with pytest.raises(ValueError, match="damaged"):
        snapshot_documents(bad, sha)
    with pytest.raises(FileNotFoundError, match="snapshot"):
        snapshot_documents(tmp_path / "missing.xz", sha)
