"""acc vs acc_norm, few-shot prompts, and the suite built from the corpus."""

from __future__ import annotations

import pytest

from llmlab.evaluate import (
    MCItem,
    evaluate_mc,
    fewshot_prefix,
    load_suite,
    mc_decision,
    mc_requests,
    return_item_parts,
    return_items,
    sample_shots,
)


def test_acc_norm_divides_by_characters():
    # the long gold answer loses on the raw sum, wins per character
    assert mc_decision([-12.0, -5.0], ["a_long_answer", "ab"], 0) == (0, 1)
    assert mc_decision([-1.0, -5.0], ["a", "bb"], 0) == (1, 1)
    with pytest.raises(ValueError):
        mc_decision([-1.0], ["a", "b"], 0)
    with pytest.raises(ValueError):
        MCItem("q", ("a", "b"), 2)


def test_requests_and_fewshot_prefix():
    shot = MCItem("def f():\n    return", ("1", "x"), 1)
    item = MCItem("def g():\n    return", ("a", "b"), 0)
    prefix = fewshot_prefix([shot])
    assert prefix == "def f():\n    return x\n\n"
    reqs = mc_requests(item, prefix)
    assert [r.continuation for r in reqs] == [" a", " b"]
    assert reqs[0].context == prefix + item.query
    assert len({tuple(sample_shots([shot, item, shot], 2, s)) for s in range(5)}) >= 1
    with pytest.raises(ValueError):
        sample_shots([shot], 2, 0)


def test_evaluate_mc_matches_per_choice_scores(model, tokenizer):
    items = [MCItem("def add(a, b):\n    return", ("a + b", "os", "Point()"), 0),
             MCItem("import", ("os", "a + b"), 0)]
    res = evaluate_mc(model, tokenizer, items, batch_size=2)
    assert len(res.acc) == 2 and all(x in (0, 1) for x in res.acc + res.acc_norm)
    for item, lps, acc, norm in zip(items, res.logprobs, res.acc, res.acc_norm):
        assert (acc, norm) == mc_decision(lps, item.choices, item.gold)


def test_return_items_from_source():
    src = ('def f(x):\n    """Double."""\n    y = x * 2\n    return y\n\n'
           'class A:\n    def g(self):\n        """Name."""\n        return self.name\n\n'
           'def h():\n    return 1\n')  # h has no docstring: left out
    parts = return_item_parts(src)
    assert parts == [('def f(x):\n    """Double."""\n    y = x * 2\n    return', "y"),
                     ('def g(self):\n    """Name."""\n    return', "self.name")]
    items = return_items([src] * 3, n_choices=2, seed=0)
    for it in items:
        assert it.choices[it.gold] in ("y", "self.name") and len(set(it.choices)) == 2


def test_the_shipped_suite():
    suite = load_suite()
    held, train = suite["return_mc"]["heldout"], suite["return_mc"]["train"]
    assert len(held) >= 200 and len(train) >= 200
    assert all(len(i.choices) == 4 and len(set(i.choices)) == 4 for i in held)
    assert not {i.query for i in held} & {i.query for i in train}
    golds = [i.gold for i in held]
    assert min(golds.count(g) for g in range(4)) > len(held) / 8  # gold positions spread
    assert suite["corpus"]["train"]["python"] == "3.11.7"
    assert set(suite["domains"]) == {"python code", "English docstrings", "Chinese prose"}
