import math

import pytest
import torch

from llmlab.model import generate
from llmlab.serve import (
    ModelDrafter,
    NgramDrafter,
    SamplingParams,
    early_exit_model,
    greedy_verify,
    rejection_sample,
    speculative_generate,
)


def chi2_critical(df: int, z: float = 3.09) -> float:
    """Upper 0.1% point of chi-square (Wilson-Hilferty approximation)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("k,deterministic", [(1, False), (3, False), (2, True)])
def test_rejection_sampling_keeps_the_target_distribution(k, deterministic):
    """Every emitted position is distributed as the target p, whatever the draft q."""
    g = torch.Generator().manual_seed(k)
    vocab, n = 5, 6000
    p = torch.softmax(torch.randn(k + 1, vocab, generator=g) * 1.5, -1)
    q = torch.softmax(torch.randn(k, vocab, generator=g) * 1.5, -1)
    first, second = torch.zeros(vocab), torch.zeros(vocab)
    for _ in range(n):
        draft = [int(torch.multinomial(q[i], 1, generator=g)) for i in range(k)]
        if deterministic:
            draft = [int(q[i].argmax()) for i in range(k)]
        out = rejection_sample(p, None if deterministic else q, draft, g)
        first[out[0]] += 1
        if len(out) > 1 and out[0] == draft[0]:
            second[out[1]] += 1
    assert chi2(first, p[0]) < chi2_critical(vocab - 1)
    # the token after an accepted first draft follows p[1] (the target's next distribution)
    assert chi2(second, p[1]) < chi2_critical(vocab - 1)


def test_a_wrong_acceptance_rule_fails_the_test():
    """Accepting every draft (q instead of p) is detected by the same statistic."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(2, 5, generator=g) * 1.5, -1)
    q = torch.softmax(torch.randn(1, 5, generator=g) * 1.5, -1)
    counts = torch.bincount(torch.multinomial(q[0], 6000, True, generator=g), minlength=5)
    assert chi2(counts.float(), p[0]) > chi2_critical(4)


def test_greedy_verify():
    assert greedy_verify([4, 5, 6, 7], [4, 5, 9]) == [4, 5, 6]
    assert greedy_verify([4, 5, 6, 7], [4, 5, 6]) == [4, 5, 6, 7]
    assert greedy_verify([1], []) == [1]


def test_ngram_drafter_copies_what_followed():
    d = NgramDrafter(2)
    assert d.propose([1, 2, 3, 4, 9, 1, 2], 2) == ([3, 4], None)
    assert d.propose([5, 6, 7], 3) == ([], None)


@pytest.mark.parametrize("drafter", ["ngram", "early-exit"])
def test_greedy_speculative_equals_greedy(book, drafter):
    model, tok = book
    prompt = tok.encode("def add(a, b):\n    return a + b\n\n\ndef add(a, b):\n")
    ref = generate(model, torch.tensor([prompt]), max_new_tokens=40)[0, len(prompt):].tolist()
    d = (NgramDrafter(3) if drafter == "ngram"
         else ModelDrafter(early_exit_model(model, 3), SamplingParams(temperature=0)))
    out, stats = speculative_generate(model, prompt, d, k=4, max_new_tokens=40)
    assert out == ref
    assert stats.target_forwards < 40 or drafter == "early-exit"
    assert stats.accepted + stats.target_forwards == len(out)


def test_accept_draft_cases():
    from llmlab.serve import accept_draft

    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]])
    q = torch.tensor([[0.2, 0.6, 0.2], [0.4, 0.4, 0.2]])
    n, dist = accept_draft(p, q, [0, 1], torch.tensor([0.99, 0.99]))  # p >= q: always accepted
    assert n == 2 and torch.equal(dist, p[2])
    n, dist = accept_draft(p, q, [1, 1], torch.tensor([0.7, 0.0]))  # 0.7 * 0.6 > 0.3: rejected
    assert n == 0
    torch.testing.assert_close(dist, torch.tensor([0.3, 0.0, 0.0]) / 0.3)
    assert accept_draft(p[:2], None, [2], torch.tensor([0.5]))[0] == 0  # one-hot q: u <= p(x)
    assert accept_draft(p[:2], None, [2], torch.tensor([0.1]))[0] == 1
    n, dist = accept_draft(p[:2], None, [0], torch.tensor([0.6]))
    assert n == 0 and torch.allclose(dist, torch.tensor([0.0, 0.6, 0.4]))
    with pytest.raises(ValueError):
        accept_draft(p, q, [0], torch.tensor([0.5]))
