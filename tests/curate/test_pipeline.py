"""The whole pipeline: what each stage removes (scored on the crawl's labels), bad input counted
not crashed, sharded runs that resume without duplicating output, and the same result under
datatrove's local executor."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from llmlab.curate import (
    CurateTools,
    Doc,
    Stage,
    curate,
    read_docs,
    run,
    run_sharded,
    train_langid,
    train_quality,
    write_docs,
)

CALLS: Counter = Counter()


@pytest.fixture(scope="module")
def tools(crawl, texts):
    train = [(d, t) for d, t in zip(crawl, texts) if t.strip() and d.meta["split"] == "train"]
    en = [(d, t) for d, t in train if d.meta["lang"] == "en"][:800]
    return CurateTools(
        langid=train_langid([t for _, t in train[:600]], [d.meta["lang"] for d, _ in train[:600]]),
        quality=train_quality([t for _, t in en], [d.meta["quality"] == "good" for d, _ in en]))


def test_curate_removes_what_the_labels_say(crawl, tools):
    pages = crawl[:900]
    kept, stats = curate(pages, tools)
    by_id = {d.id: d for d in pages}
    kept_meta = [by_id[d.id].meta for d in kept]
    assert stats["read"] == len(pages) and stats["kept"] == len(kept)
    assert sum(stats[k] for k in stats if k not in ("read", "kept")) == len(pages) - len(kept)
    bad = [m for m in (d.meta for d in pages) if m["quality"] != "good"]
    assert sum(m["quality"] != "good" for m in kept_meta) < 0.15 * len(bad), stats
    assert not any(m["dup_of"] for m in kept_meta)  # every exact copy goes
    assert all(m["lang"] == "en" for m in kept_meta)  # other languages go (rules or language ID)
    # the Gopher rules are strict with technical text (symbols count as words): about a quarter
    # of the good English pages survive every stage
    assert len(kept) > 0.2 * sum(m["quality"] == "good" and not m["dup_of"] and m["lang"] == "en"
                                 for m in (d.meta for d in pages))
    for d in kept:  # labelled personal data does not survive
        for kind, value in by_id[d.id].meta["pii"]:
            assert value not in d.text, (kind, value)
    assert crawl[0].meta.get("lang_pred") is None  # the input is left alone


def test_bad_input_is_counted_not_fatal():
    def boom(d):
        if "bad" in d.text:
            raise ValueError("cannot parse")
        return d
    docs = [Doc("1", "good"), Doc("2", ""), Doc("3", "a bad one"), Doc("4", "   "), Doc("5", "fine text")]
    stats: Counter = Counter()
    short = Stage("short", lambda d: "too_short" if len(d.text) < 5 else d)
    out = list(run(docs, [Stage("parse", boom), short], stats))
    assert [d.id for d in out] == ["5"]
    assert stats == Counter({"read": 5, "empty": 2, "parse: error": 1, "short: too_short": 1, "kept": 1})
    assert docs[2].meta["errors"] == ["parse: cannot parse"]


def _stages():
    def count(d):
        CALLS[d.id] += 1
        return d if int(d.id) % 3 else "multiple_of_3"
    return [Stage("count", count)]


def test_sharded_run_resumes_without_duplicates(tmp_path):
    shards = []
    for s in range(3):
        path = tmp_path / f"shard{s}.jsonl.gz"
        write_docs(path, [Doc(str(10 * s + i), f"doc {s} {i}") for i in range(10)])
        shards.append(path)
    out = tmp_path / "out"
    CALLS.clear()
    first = run_sharded(shards, out, _stages, workers=1)
    assert all(v["read"] == 10 for v in first.values()) and sum(CALLS.values()) == 30
    texts = {p.name: [d.text for d in read_docs(out / p.name)] for p in shards}
    # a run killed while writing shard1: its output and marker are missing, a temp file is left
    os.remove(out / "shard1.jsonl.gz")
    os.remove(out / ".done" / "shard1.jsonl.gz")
    (out / ".tmp-shard1.jsonl.gz").write_text("partial")
    CALLS.clear()
    second = run_sharded(shards, out, _stages, workers=1)
    assert set(CALLS) == {str(10 + i) for i in range(10)}  # only the unfinished shard ran again
    assert second == first
    assert {p.name: [d.text for d in read_docs(out / p.name)] for p in shards} == texts
    assert sorted(x.name for x in out.iterdir() if x.is_file()) == sorted(p.name for p in shards)


def test_sharded_run_in_two_processes(tmp_path):
    shards = []
    for s in range(2):
        path = tmp_path / f"s{s}.jsonl"
        write_docs(path, [Doc(str(i), "x") for i in range(6)])
        shards.append(path)
    stats = run_sharded(shards, tmp_path / "out", _stages, workers=2)
    assert stats == {p.name: {"read": 6, "kept": 4, "count: multiple_of_3": 2} for p in shards}


@pytest.mark.parity
def test_same_output_under_datatrove(tmp_path, crawl, tools):
    pytest.importorskip("datatrove")
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor

    from llmlab.curate.datatrove_steps import datatrove_steps

    pages = crawl[:300]
    theirs = []

    def reader(data, rank=0, world_size=1):
        yield from (Document(text=d.text, id=d.id, metadata=dict(d.meta)) for d in pages)

    def collect(data, rank=0, world_size=1):
        theirs.extend(data)
        return iter(())

    LocalPipelineExecutor(pipeline=[reader, *datatrove_steps(tools), collect], tasks=1, workers=1,
                          logging_dir=str(tmp_path / "logs")).run()
    ours, _ = curate(pages, tools)
    assert [(d.id, d.text) for d in theirs] == [(d.id, d.text) for d in ours] and len(ours) > 30
