"""Log-likelihood requests: lm-eval's conventions, checked against a direct computation."""

from __future__ import annotations

import math

import pytest
import torch

from llmlab.evaluate import Request, encode_pair, loglikelihood, prefix_token_id, token_logprobs
from llmlab.evaluate.perplexity import LikelihoodStats, document_likelihood, rolling_windows


def naive(model, ctx: list[int], cont: list[int]) -> float:
    """Sum of log p(cont) by one forward over ctx + cont, without batching or truncation."""
    ids = torch.tensor([ctx + cont])
    return float(token_logprobs(model, ids)[0, len(ctx) - 1:].sum())


def test_encode_pair_moves_trailing_space_and_splits_the_joint_encoding(tokenizer):
    eot = prefix_token_id(tokenizer)
    ctx, cont = encode_pair(tokenizer, "x = a +", " b", eot)
    assert ctx + cont == tokenizer.encode("x = a + b")
    assert encode_pair(tokenizer, "x = a + ", "b", eot) == (ctx, cont)  # the space moves over
    assert encode_pair(tokenizer, "", "def", eot) == ([eot], tokenizer.encode("def"))


def test_batched_scores_equal_one_by_one(model, tokenizer):
    reqs = [Request("def add(a, b):\n    return", " a + b"), Request("", "import os"),
            Request("class Point:\n   ", " x = 0"), Request("print(", "os.path")]
    batched = loglikelihood(model, tokenizer, reqs, batch_size=3)
    eot = prefix_token_id(tokenizer)
    for r, got in zip(reqs, batched):
        ctx, cont = encode_pair(tokenizer, r.context, r.continuation, eot)
        assert got.n_tokens == len(cont)
        assert got.logprob == pytest.approx(naive(model, ctx, cont), abs=1e-4)
        assert got.logprob < 0


def test_is_greedy_and_left_truncation(model, tokenizer):
    ctx = tokenizer.encode("def add(a, b):\n    return a")
    logits = model(torch.tensor([ctx]))[0, -1]
    best = tokenizer.decode([int(logits.argmax())])
    [res] = loglikelihood(model, tokenizer, [Request(tokenizer.decode(ctx), best)])
    if encode_pair(tokenizer, tokenizer.decode(ctx), best, 0)[1] == [int(logits.argmax())]:
        assert res.is_greedy
    long_ctx = "x = 1\n" * 40  # more tokens than the 32-token window
    [a] = loglikelihood(model, tokenizer, [Request(long_ctx, " y")])
    ctx_ids, cont = encode_pair(tokenizer, long_ctx, " y", 0)
    window = (ctx_ids + cont)[-33:]
    assert a.logprob == pytest.approx(naive(model, window[:-len(cont)], cont), abs=1e-4)


def test_bad_input_is_a_clear_error(model, tokenizer):
    with pytest.raises(ValueError, match="batch_size"):
        loglikelihood(model, tokenizer, [Request("a", " b")], batch_size=0)
    with pytest.raises(ValueError, match="at least one token"):
        loglikelihood(model, tokenizer, [Request("a", "")])


def test_rolling_windows_predict_every_token_once():
    tokens = list(range(100, 170))
    for context_len in (1, 5, 16):
        wins = list(rolling_windows(tokens, 0, 16, context_len))
        predicted = [t for _, b in wins for t in b]
        assert predicted == tokens
        for ctx, pred in wins:
            assert len(ctx) + len(pred) <= 17
        assert wins[0][0] == [0]
    assert len(list(rolling_windows(tokens, 0, 16, 16))) > len(list(rolling_windows(tokens, 0, 16, 1)))
    with pytest.raises(ValueError):
        list(rolling_windows(tokens, 0, 16, 0))


def test_document_likelihood_equals_a_direct_sum_and_bits_per_byte(model, tokenizer):
    text = "def add(a, b):\n    return a + b\n"  # shorter than the window: one forward
    stats = document_likelihood(model, tokenizer, text)
    ids = [prefix_token_id(tokenizer)] + tokenizer.encode(text)
    direct = float(token_logprobs(model, torch.tensor([ids])).sum())
    assert stats.logprob == pytest.approx(direct, abs=1e-4)
    assert stats.bits_per_byte == pytest.approx(-direct / len(text.encode()) / math.log(2))
    assert stats.token_perplexity == pytest.approx(math.exp(-direct / len(ids[1:])))
    total = stats + LikelihoodStats(-1.0, 1, 2, 1)
    assert total.n_bytes == stats.n_bytes + 2 and total.logprob == pytest.approx(stats.logprob - 1)


def test_more_context_per_window_scores_a_long_document_differently(model, tokenizer):
    text = "def add(a, b):\n    return a + b\n" * 6  # several windows of 32 tokens
    disjoint = document_likelihood(model, tokenizer, text, context_len=1)
    sliding = document_likelihood(model, tokenizer, text, context_len=32)
    assert disjoint.n_tokens == sliding.n_tokens > 32
    assert disjoint.logprob != pytest.approx(sliding.logprob, abs=1e-3)
