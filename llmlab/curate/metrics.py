"""Precision and recall for every stage, against the crawl's ground-truth labels.

A data pipeline reported as counts ("removed 31 %") says nothing about whether it removed the
right 31 %. Each stage of chapter 10 is scored as a classifier instead: precision (of what it
removed or kept, how much should have been) and recall (of what should have been, how much it
caught). Extraction is scored on words, as the extraction benchmarks of trafilatura and
resiliparse do: the bag of words extracted against the bag of words of the true main text.
Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PRF:
    """Precision, recall and F1, and the counts they come from."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int

    def __str__(self) -> str:
        return f"precision {self.precision:.3f} · recall {self.recall:.3f} · F1 {self.f1:.3f}"


def prf(tp: int, fp: int, fn: int) -> PRF:
    """Scores from counts (an empty denominator scores 1: nothing claimed, nothing wrong)."""
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return PRF(p, r, f, tp, fp, fn)


def set_prf(predicted: Collection, truth: Collection) -> PRF:
    """Scores of a predicted set (ids flagged, pairs found) against the true set."""
    predicted, truth = set(predicted), set(truth)
    tp = len(predicted & truth)
    return prf(tp, len(predicted) - tp, len(truth) - tp)


def word_prf(extracted: str, truth: str) -> PRF:
    """Bag-of-words scores of an extraction against the true main text."""
    got, want = Counter(extracted.split()), Counter(truth.split())
    tp = sum((got & want).values())
    return prf(tp, sum(got.values()) - tp, sum(want.values()) - tp)


def micro(scores: Iterable[PRF]) -> PRF:
    """Scores of summed counts (every word or item weighs the same, whatever page it is on)."""
    tp = fp = fn = 0
    for s in scores:
        tp, fp, fn = tp + s.tp, fp + s.fp, fn + s.fn
    return prf(tp, fp, fn)
