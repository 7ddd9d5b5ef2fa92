"""n-gram overlap, Min-K% (AUROC parity with scikit-learn), the judge, needle and copy tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmlab.evaluate import (
    MCItem,
    auroc,
    copy_logprobs,
    judge_prompt,
    min_k_prob,
    needle_item,
    ngram_index,
    overlap,
    position_bias,
)


def test_ngram_overlap():
    train = ["def add(a, b):\n    return a + b\n"]
    index = ngram_index(train, n=4)
    assert overlap("def add(a, b):\n        return a + b", index, n=4) == 1.0  # re-indented
    assert overlap("completely different words here and there", index, n=4) == 0.0
    assert 0 < overlap("def add(a, b): pass", index, n=4) < 1


def test_min_k_prob():
    lp = torch.tensor([-1.0, -5.0, -2.0, -0.5, -3.0])
    assert min_k_prob(lp, 0.4) == pytest.approx(-4.0)   # the two lowest
    assert min_k_prob(lp, 1.0) == pytest.approx(lp.mean().item())
    with pytest.raises(ValueError):
        min_k_prob(lp, 0.0)


@pytest.mark.parity
def test_auroc_equals_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    pos, neg = list(rng.normal(0.5, 1, 40).round(1)), list(rng.normal(0, 1, 50).round(1))
    theirs = metrics.roc_auc_score([1] * 40 + [0] * 50, pos + neg)
    assert auroc(pos, neg) == pytest.approx(theirs)


def _scorer(pick):
    """A fake judge: log p(" A") = 0 when pick(prompt) says "A", else -1."""
    from llmlab.evaluate import Loglikelihood

    def score(model, tokenizer, requests):
        return [Loglikelihood(0.0 if r.continuation.strip() == pick(r.context) else -1.0, False, 1)
                for r in requests]
    return score


def test_position_bias():
    pairs = [("def f():", "good1", "bad1"), ("def g():", "good2", "bad2")]
    assert "# A: return good1" in judge_prompt(*pairs[0])
    always_a = position_bias(None, None, pairs, scorer=_scorer(lambda p: "A"))
    assert (always_a.first_rate, always_a.consistency) == (1.0, 0.0)
    assert (always_a.accuracy_good_first, always_a.accuracy_good_second) == (1.0, 0.0)
    fair = position_bias(None, None, pairs,
                         scorer=_scorer(lambda p: "A" if "A: return good" in p else "B"))
    assert (fair.first_rate, fair.consistency, fair.accuracy_good_second) == (0.5, 1.0, 1.0)


def test_the_book_model_judges(model, tokenizer):
    bias = position_bias(model, tokenizer, [("def f():", "1", "x"), ("def g():", "y", "2")])
    assert 0 <= bias.first_rate <= 1 and 0 <= bias.consistency <= 1


def test_needle_item(tokenizer):
    hay = "".join(f"x{i} = {i}\n" for i in range(200))
    for depth in (0.0, 0.5, 1.0):
        item = needle_item(hay, "kiwi", ["plum", "fig"], depth, tokenizer, max_tokens=128)
        assert isinstance(item, MCItem) and item.choices[item.gold] == '"kiwi"'
        assert len(tokenizer.encode(item.query)) <= 128
        assert 'SECRET = "kiwi"' in item.query and item.query.endswith("assert SECRET ==")
    first = needle_item(hay, "kiwi", ["plum"], 0.0, tokenizer, 128).query
    assert first.startswith('SECRET = "kiwi"')


def test_copy_logprobs(model):
    first, second = copy_logprobs(model, 10, range(5, 200), seed=0)
    assert first.shape == (9,) and second.shape == (10,)
    with pytest.raises(ValueError):
        copy_logprobs(model, 20, range(5, 200))
