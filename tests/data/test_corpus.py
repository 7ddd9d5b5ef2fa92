"""The stdlib corpus: which files, the deterministic split, the manifest."""

import sys

from llmlab.data import corpus_manifest, load_documents, split_of, stdlib_files, stdlib_root


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
    assert m["python"] == sys.version.split()[0] and m["files"] == len(docs)
    assert corpus_manifest(docs) == m
    assert corpus_manifest(docs[1:])["sha256"] != m["sha256"]
