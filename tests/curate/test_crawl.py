"""The shipped crawl: checksum, and labels that mean what they say."""

from __future__ import annotations

import shutil

import pytest

from llmlab.curate import crawl_manifest, load_crawl
from llmlab.curate.crawl import CRAWL
from llmlab.curate.crawl_build import BuildConfig, build, to_blocks
from llmlab.curate.crawl_sources import Source


def test_manifest_counts_match_the_file(crawl):
    m = crawl_manifest()
    assert m["pages"] == len(crawl) >= 2000
    assert m["exact_duplicates"] == sum(d.meta["dup_of"] is not None for d in crawl)
    assert m["counts"]["quality"]["good"] == sum(d.meta["quality"] == "good" for d in crawl)
    assert "crawl_build" in m["command"]


def test_labels_are_consistent(crawl):
    by_id = {d.id: d for d in crawl}
    order = {d.id: i for i, d in enumerate(crawl)}
    for d in crawl:
        for key in ("dup_of", "near_dup_of", "paraphrase_of"):
            orig = d.meta[key]
            if orig is not None:
                assert order[orig] < order[d.id], "a copy comes after its original"
                assert by_id[orig].meta["split"] == d.meta["split"]
        if d.meta["dup_of"]:
            assert d.meta["main"] == by_id[d.meta["dup_of"]].meta["main"]
        for kind, value in d.meta["pii"]:
            assert kind in ("email", "phone", "ip") and value in d.meta["main"]
    assert {d.meta["lang"] for d in crawl} >= {"en", "zh", "fr", "ja"}


def test_a_changed_file_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "crawl.jsonl.gz"
    shutil.copy(CRAWL, copy)
    with open(copy, "ab") as f:
        f.write(b"\0")
    monkeypatch.setattr("llmlab.curate.crawl.CRAWL", copy)
    with pytest.raises(ValueError, match="sha256"):
        load_crawl(copy)


def test_build_is_deterministic_and_labels_injections():
    sources = [Source(f"docs/{i}", "docs", "en", f"Title {i}\n=======\n\n" + (
        f"The module number {i} explains how the parser reads a file and what it returns. " * 12))
        for i in range(40)]
    cfg = BuildConfig(spam=5, spun=3, seo=4, listing=3, mirrors=4, recrawls=2, near_dups=4,
                      paraphrases=2, pii_fraction=0.5)
    a, b = build(cfg, sources), build(cfg, sources)
    assert [d.text for d in a] == [d.text for d in b]
    assert sum(d.meta["dup_of"] is not None for d in a) == 6
    assert sum(bool(d.meta["pii"]) for d in a) > 5


def test_to_blocks_reads_markdown_and_rest():
    blocks = to_blocks("Title\n=====\n\nSome *text* with a [link](http://x).\n\n    code\n      more\n\n"
                       "- item one\n  continued\n- item two\n")
    assert blocks == [("h", "Title"), ("p", "Some *text* with a link."), ("pre", "code\n  more"),
                      ("li", "item one continued"), ("li", "item two")]
