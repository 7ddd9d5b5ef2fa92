"""Canaries and memorisation (llmlab.curate.canaries): duplicates counted as injected, the
suffix loss and greedy-continuation checks against direct computation, and more duplicates
giving lower canary loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmlab.curate import ablation, canaries
from llmlab.curate.ablation import AblationConfig
from llmlab.curate.text import split_words
from llmlab.model import GPT, GPTConfig


@pytest.fixture(scope="module")
def words(english):
    return [w for t in english[:50] for w in split_words(t)]


def test_canaries_are_distinct_exact_length_and_counted(words):
    cs = canaries.make_canaries(words, (0, 1, 4, 16), per_count=3, length=48, seed=1)
    assert [c.count for c in cs] == [0] * 3 + [1] * 3 + [4] * 3 + [16] * 3
    assert all(len(c.text) == 48 for c in cs) and len({c.text for c in cs}) == len(cs)
    docs = [b"some document text. " * 10, b"another one. " * 7]
    stream = canaries.inject(docs, cs, seed=0)
    for c in cs:
        assert canaries.count_occurrences(stream, c.text) == c.count
    sep = len(ablation.SEPARATOR)
    items = len(docs) + sum(c.count for c in cs)
    assert len(stream) == sum(map(len, docs)) + sum(48 * c.count for c in cs) + sep * (items - 1)


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=256, block_size=24, n_layer=1, n_head=2, d_model=16)).eval()


def test_canary_loss_is_the_suffix_loss_given_the_prefix():
    model = _model()
    p = bytes(range(65, 65 + 20))
    got = canaries.canary_loss(model, [p], prefix=8, suffix=12)
    seq = torch.tensor([list(p)])
    with torch.no_grad():
        logp = torch.log_softmax(model(seq[:, :-1]), -1)[0]
    want = -np.mean([float(logp[i - 1, p[i]]) for i in range(8, 20)])
    assert got[0] == pytest.approx(want, rel=1e-5)


def test_memorization_is_true_exactly_for_the_greedy_continuation():
    model = _model()
    prefix = b"hello, world"
    x = torch.tensor([list(prefix)])
    with torch.no_grad():
        for _ in range(8):
            x = torch.cat([x, model(x)[:, -1].argmax(-1, keepdim=True)], 1)
    greedy = bytes(x[0].tolist())
    wrong = greedy[:-1] + bytes([(greedy[-1] + 1) % 256])
    assert canaries.memorization(model, [greedy, wrong], prefix=12, suffix=8) == [True, False]
    acc = canaries.suffix_accuracy(model, [greedy, wrong], prefix=12, suffix=8)
    assert acc.tolist() == [1.0, 7 / 8]


def test_more_duplicates_lower_canary_loss(english):
    """Carlini et al.: canaries seen 32 times are far more predictable than unseen ones."""
    docs = [t.encode() for t in english[:10]]
    words = [w for t in english[:20] for w in split_words(t)]
    cs = canaries.make_canaries(words, (0, 32), per_count=3, length=48, seed=0)
    cfg = AblationConfig(d_model=48, n_layer=2, n_head=2, seq_len=48, batch_size=16, steps=200,
                         lr=5e-3)
    rows = canaries.memorization_vs_duplicates(docs, cs, cfg, prefix=16, suffix=32)
    assert [r["count"] for r in rows] == [0, 32] and [r["found"] for r in rows] == [0.0, 32.0]
    assert rows[1]["loss"] < rows[0]["loss"] - 0.6  # measured: 3.38 vs 2.37


def test_bad_input_is_a_clear_error(words):
    model = _model()
    with pytest.raises(ValueError, match="block_size"):
        canaries.canary_loss(model, [b"x" * 64], prefix=32, suffix=32)
    with pytest.raises(ValueError, match="prefix \\+ suffix"):
        canaries.memorization(model, [b"short"], prefix=4, suffix=4)
    with pytest.raises(ValueError, match="50 distinct"):
        canaries.make_canaries(["a", "b"], (1,))
    with pytest.raises(ValueError, match="counts"):
        canaries.make_canaries(words, (-1,))
