"""Equal-token ablations (llmlab.curate.ablation): exact token accounting, determinism, the
paired comparison's sign and arithmetic, and mixtures that hold the asked share of each domain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import llmlab.train.trainer as trainer_module
from llmlab.curate import ablation
from llmlab.curate.ablation import AblationConfig
from llmlab.train import evaluate_loss

TINY = AblationConfig(d_model=32, n_layer=1, n_head=2, seq_len=32, batch_size=8, steps=60, lr=5e-3)


@pytest.fixture(scope="module")
def english_bytes(english):
    """~60 KB of training text and ~20 KB of held-out text from different English pages."""
    return ablation.to_bytes(english[:40])[:60_000], ablation.to_bytes(english[-30:])[:20_000]


def test_equal_tokens_are_exact(monkeypatch):
    """Both datasets get steps × batch × seq_len training bytes, counted where the Trainer draws them."""
    drawn = []
    real = trainer_module.random_windows

    def counting(tokens, batch_size, seq_len, generator=None):
        x, y = real(tokens, batch_size, seq_len, generator)
        drawn.append(x.numel())
        return x, y

    monkeypatch.setattr(trainer_module, "random_windows", counting)
    cfg = AblationConfig(d_model=16, n_layer=1, n_head=2, seq_len=16, batch_size=4, steps=7)
    small = np.frombuffer(b"abc " * 40, dtype=np.uint8).copy()
    big = np.frombuffer(bytes(range(256)) * 50, dtype=np.uint8).copy()
    seen = []
    for data in (small, big):
        drawn.clear()
        _, tokens = ablation.train_bytes(data, cfg)
        seen.append((tokens, sum(drawn)))
    assert seen == [(7 * 4 * 16, 7 * 4 * 16)] * 2 and cfg.tokens == 7 * 4 * 16


def test_same_seed_same_model_other_seed_other_model():
    data = np.frombuffer(b"the quick brown fox jumps over the lazy dog. " * 20, dtype=np.uint8).copy()
    cfg = AblationConfig(d_model=16, n_layer=1, n_head=2, seq_len=16, batch_size=4, steps=5)
    a, _ = ablation.train_bytes(data, cfg, seed=3)
    b, _ = ablation.train_bytes(data, cfg, seed=3)
    c, _ = ablation.train_bytes(data, cfg, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_window_losses_average_to_evaluate_loss(english_bytes):
    train, held = english_bytes
    model, _ = ablation.train_bytes(train, AblationConfig(d_model=16, n_layer=1, n_head=2,
                                                          seq_len=32, batch_size=4, steps=5))
    w = ablation.window_losses(model, held, max_windows=40)
    assert w.shape == (40,)
    ref = evaluate_loss(model, held[:40 * 32 + 1], batch_size=8, seq_len=32)
    assert w.mean() == pytest.approx(ref, rel=1e-5)


def test_compare_scores_matching_data_better(english_bytes):
    """English-trained beats random-byte-trained on English held-out text, by a wide margin;
    the interval is of baseline − treatment, and swapping them negates it."""
    train, held = english_bytes
    noise = np.random.default_rng(0).integers(0, 256, len(train), dtype=np.uint8)
    res = ablation.compare({"noise": noise, "english": train}, held, TINY, seeds=(0, 1), max_windows=64)
    assert res.tokens == {"noise": TINY.tokens, "english": TINY.tokens}
    assert all(len(v) == 2 for v in res.losses.values())
    d = res.difference
    assert d.estimate == pytest.approx(res.windows["noise"].mean() - res.windows["english"].mean())
    assert d.estimate == pytest.approx(np.mean(res.losses["noise"]) - np.mean(res.losses["english"]))
    assert d.low > 0.5 and d.low <= d.estimate <= d.high
    assert max(res.losses["english"]) < min(res.losses["noise"]) - 0.5
    swapped = ablation.compare({"noise": noise, "english": train}, held, TINY, seeds=(0, 1),
                               max_windows=64, baseline="english", treatment="noise")
    assert swapped.difference.estimate == pytest.approx(-d.estimate)


def test_mixture_tokens_hold_the_asked_share():
    a = np.full(5000, ord("a"), dtype=np.uint8)
    b = np.full(3000, ord("b"), dtype=np.uint8)
    shares = []
    for w in (0.0, 0.1, 0.5, 0.9, 1.0):
        stream, counts = ablation.mixture_tokens(a, b, w, 256 * 40)
        assert len(stream) == counts["a"] + counts["b"] == 256 * 40
        assert int((stream == ord("a")).sum()) == counts["a"] == round(w * 40) * 256
        shares.append(counts["a"])
    assert shares == sorted(shares) and shares[0] == 0 and shares[-1] == 256 * 40


def test_mixture_weight_moves_per_domain_loss(english_bytes):
    """More weight on a domain: lower loss on that domain, higher on the other."""
    english, held = english_bytes
    digits = np.frombuffer(" ".join(str(i * 7919 % 100003) for i in range(12000)).encode(),
                           dtype=np.uint8).copy()
    rows = ablation.mixture_sweep(english, digits[:50_000], held, digits[50_000:70_000],
                                  (0.1, 0.9), TINY, max_windows=32)
    assert [r["bytes_a"] > r["bytes_b"] for r in rows] == [False, True]
    assert rows[1]["loss_a"] < rows[0]["loss_a"] - 0.2
    assert rows[1]["loss_b"] > rows[0]["loss_b"] + 0.2


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="uint8"):
        ablation.train_bytes(np.zeros(1000, dtype=np.int64))
    with pytest.raises(ValueError, match="seq_len"):
        ablation.train_bytes(np.zeros(10, dtype=np.uint8))
    with pytest.raises(ValueError, match="steps"):
        AblationConfig(steps=0)
    with pytest.raises(ValueError):
        AblationConfig(stepz=3)
    with pytest.raises(ValueError, match="weight"):
        ablation.mixture_tokens(np.zeros(999, np.uint8), np.zeros(999, np.uint8), 1.5, 1024)
    with pytest.raises(ValueError, match="two datasets"):
        ablation.compare({"a": np.zeros(999, np.uint8)}, np.zeros(999, np.uint8))
