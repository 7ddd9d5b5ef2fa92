"""Chapter 10's experiment command (python -m llmlab.curate.experiments) at tiny size, and the
shipped results file it wrote: equal tokens, canaries counted as injected, mixture shares."""

from __future__ import annotations

import json

import pytest

from llmlab.curate import experiments


def _check(r: dict) -> None:
    cfg = r["config"]
    tokens = cfg["steps"] * cfg["batch_size"] * cfg["seq_len"]
    rc = r["raw_vs_curated"]
    assert rc["tokens"] == {"raw": tokens, "curated": tokens, "labelled": tokens}
    assert all(len(v) == len(r["seeds"]) for v in rc["losses"].values())
    assert rc["pages"]["curated"] == rc["pipeline_stats"]["kept"] < rc["pages"]["raw"]
    assert rc["bytes"]["curated"] < rc["bytes"]["raw"]
    d = rc["difference"]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert d["estimate"] == pytest.approx(mean(rc["losses"]["raw"]) - mean(rc["losses"]["curated"]))
    assert d["low"] <= d["estimate"] <= d["high"]
    d = rc["difference_labelled"]
    assert d["estimate"] == pytest.approx(mean(rc["losses"]["raw"]) - mean(rc["losses"]["labelled"]))
    assert rc["pages"]["labelled"] < rc["pages"]["raw"]
    memo = r["memorization"]["rows"]
    assert [m["count"] for m in memo] == r["memorization"]["counts"]
    assert [m["found"] for m in memo] == [float(c) for c in r["memorization"]["counts"]]
    assert all(0 <= m["exact"] <= m["accuracy"] <= 1 for m in memo)
    mix = r["mixture"]["rows"]
    assert [m["bytes_a"] for m in mix] == sorted(m["bytes_a"] for m in mix)
    assert all(m["bytes_a"] + m["bytes_b"] == tokens for m in mix)


def test_heldout_pages_are_clean_and_unlinked(crawl):
    held = experiments.heldout_pages(crawl, 600)
    ids = {d.id for d in held}
    assert held and all(d.meta["quality"] == "good" and d.meta["split"] == "val" for d in held)
    for d in crawl:
        assert not any(d.meta.get(k) in ids for k in experiments.LINKS)


def test_tiny_run_writes_consistent_results(tmp_path):
    out = tmp_path / "ablations.json"
    experiments.main(["--tiny", "--out", str(out)])
    _check(json.loads(out.read_text()))


def test_shipped_results_are_consistent():
    r = json.loads(experiments.RESULTS.read_text())
    _check(r)
    assert r["config"]["steps"] >= 200 and len(r["seeds"]) >= 3
