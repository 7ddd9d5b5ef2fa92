"""Known wrong variants of chapter 11's exercises (evaluation), so its checks name the mistake.

Each variant is one plausible slip in an otherwise right answer; ``check_function(...,
mistakes={"label": variant})`` says so when a learner's output equals one. Kept out of the
chapter's check cells so a visible cell never shows a near-solution (see :mod:`llmlab_book.catalogue`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from llmlab.evaluate.likelihood import Loglikelihood, model_max_length, prefix_token_id
from llmlab.evaluate.perplexity import rolling_windows

# ------------------------------------------------------------------ 11.2 rolling windows


def rolling_windows_without_prefix(tokens, prefix_id, max_seq_len, context_len=1):
    """The first window starts at the first token, so that token is never scored."""
    return [(list(tokens[:1]), list(tokens[1:max_seq_len + 1]))] + [
        w for w in rolling_windows(tokens, prefix_id, max_seq_len, context_len)][1:]


def rolling_windows_overlapping(tokens, prefix_id, max_seq_len, context_len=1):
    """Windows that start again at every stride, so tokens near a boundary are scored twice."""
    tokens, out, stride = list(tokens), [], max_seq_len - context_len + 1
    for start in range(0, len(tokens), stride):
        ctx = [prefix_id] if start == 0 else tokens[max(0, start - context_len):start]
        out.append((ctx, tokens[start:start + max_seq_len]))
    return out


ROLLING = {"the first token never scored (no prefix token before it)": rolling_windows_without_prefix,
           "overlapping windows that score some tokens twice": rolling_windows_overlapping}

# ------------------------------------------------------------------ 11.3 acc and acc_norm


def mc_decision_token_sum_both(logprobs, choices, gold):
    """acc_norm left unnormalised: the same argmax as acc."""
    best = int(np.argmax(logprobs))
    return int(best == gold), int(best == gold)


def mc_decision_norm_with_delimiter(logprobs, choices, gold):
    """acc_norm dividing by the length of the continuation, delimiter included (len(" " + c))."""
    norm = [lp / len(" " + c) for lp, c in zip(logprobs, choices)]
    return int(int(np.argmax(logprobs)) == gold), int(int(np.argmax(norm)) == gold)


def mc_decision_argmin(logprobs, choices, gold):
    """Picking the lowest log-likelihood (the most negative is the least likely)."""
    norm = [lp / len(c) for lp, c in zip(logprobs, choices)]
    return int(int(np.argmin(logprobs)) == gold), int(int(np.argmin(norm)) == gold)


MC = {"acc_norm without the length normalisation": mc_decision_token_sum_both,
      "acc_norm dividing by the length with the delimiter": mc_decision_norm_with_delimiter,
      "the least likely choice (argmin)": mc_decision_argmin}

# ------------------------------------------------------------------ 11.4 stop sequences


def truncate_at_first_listed_stop(text, stop):
    """Cutting at the first stop *in the list* that occurs, not the earliest in the text."""
    for s in stop:
        if s and s in text:
            return text[:text.index(s)]
    return text


def truncate_keeping_stop(text, stop):
    """Keeping the stop sequence itself in the answer."""
    cut = min((i + len(s) for s in stop if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


STOPS = {"the first stop of the list, not the earliest in the text": truncate_at_first_listed_stop,
         "keeping the stop sequence in the answer": truncate_keeping_stop}

# ------------------------------------------------------------------ 11.5 pass@k


def pass_at_k_plug_in(n, c, k):
    """The biased plug-in estimate 1 - (1 - c/n)^k (sampling with replacement)."""
    return 1 - (1 - c / n) ** k


def pass_at_k_ignoring_k(n, c, k):
    """c / n whatever k is: that is pass@1."""
    return c / n


PASS_AT_K = {"the biased estimator 1 - (1 - c/n)^k": pass_at_k_plug_in,
             "c/n whatever k is (that is pass@1)": pass_at_k_ignoring_k}

# ------------------------------------------------------------------ 11.6 bootstrap


def bootstrap_without_replacement(values, n_resamples, confidence, rng):
    """Resampling without replacement: every resample is a permutation with the same mean."""
    x = np.asarray(values, dtype=float)
    means = np.array([x[rng.permutation(len(x))].mean() for _ in range(n_resamples)])
    a = (1 - confidence) / 2
    return float(np.percentile(means, 100 * a)), float(np.percentile(means, 100 * (1 - a)))


def bootstrap_one_sided_alpha(values, n_resamples, confidence, rng):
    """Percentiles at 1 - confidence and confidence: a 90 % interval where 95 % was asked."""
    x = np.asarray(values, dtype=float)
    means = x[rng.integers(0, len(x), (n_resamples, len(x)))].mean(1)
    return (float(np.percentile(means, 100 * (1 - confidence))),
            float(np.percentile(means, 100 * confidence)))


BOOTSTRAP = {"resampling without replacement": bootstrap_without_replacement,
             "percentiles at 1 - confidence and confidence (a narrower interval)":
                 bootstrap_one_sided_alpha}

# ------------------------------------------------------------------ 11.8 Min-K%


def min_k_highest(token_lp, k=0.2):
    """The *highest* k % of the log-probabilities instead of the lowest."""
    m = math.ceil(k * token_lp.numel())
    return float(token_lp.double().sort(descending=True).values[:m].mean())


def min_k_floor(token_lp, k=0.2):
    """floor(k · T) tokens instead of ceil(k · T)."""
    m = max(1, math.floor(k * token_lp.numel()))
    return float(token_lp.double().sort().values[:m].mean())


MIN_K = {"the highest k % instead of the lowest": min_k_highest,
         "floor(k·T) tokens instead of ceil(k·T)": min_k_floor}

# ------------------------------------------------------------------ 11.9 judge consistency


def bias_same_letter(margins_good_first, margins_good_second):
    """Consistency counted as the same *letter* in both orders: that is position bias."""
    n = len(margins_good_first)
    says_a = [m > 0 for m in list(margins_good_first) + list(margins_good_second)]
    same = sum((a > 0) == (b > 0) for a, b in zip(margins_good_first, margins_good_second))
    return sum(says_a) / (2 * n), same / n


def bias_first_order_only(margins_good_first, margins_good_second):
    """The first-position rate from the first ordering only."""
    n = len(margins_good_first)
    same = sum((a > 0) == (b <= 0) for a, b in zip(margins_good_first, margins_good_second))
    return sum(m > 0 for m in margins_good_first) / n, same / n


JUDGE = {"consistency counted as the same letter in both orders": bias_same_letter,
         "the first-position rate from one ordering only": bias_first_order_only}

# ------------------------------------------------------------------ 11.10 the evaluator


def _score(model, pairs, batch_size, max_length, shift):
    """Score (context ids, continuation ids) one pair per forward; ``shift`` 0 is right."""
    out = []
    for ctx, cont in pairs:
        ids = (ctx + cont)[-(max_length + 1):][:-1]
        with torch.no_grad():
            logp = model(torch.tensor([ids]))[0].float().log_softmax(-1)
        end = len(ids) + shift
        span = logp[end - len(cont):end]
        target = torch.tensor(cont[:len(span)])
        lp = span.gather(-1, target[:, None]).squeeze(-1)
        out.append(Loglikelihood(float(lp.sum()), bool((span.argmax(-1) == target).all()), len(cont)))
    return out


def loglikelihood_continuation_alone(model, tokenizer, requests, batch_size=16, max_length=None):
    """The continuation tokenized on its own instead of split from the joint encoding."""
    max_length = max_length or model_max_length(model)
    eot = prefix_token_id(tokenizer)
    pairs = [(tokenizer.encode(r.context) if r.context else [eot], tokenizer.encode(r.continuation))
             for r in requests]
    return _score(model, pairs, batch_size, max_length, 0)


def loglikelihood_off_by_one(model, tokenizer, requests, batch_size=16, max_length=None):
    """Logits read one position late: each continuation token scored by its own position."""
    from llmlab.evaluate.likelihood import encode_pair

    max_length = max_length or model_max_length(model)
    eot = prefix_token_id(tokenizer)
    pairs = [encode_pair(tokenizer, r.context, r.continuation, eot) for r in requests]
    out = []
    for ctx, cont in pairs:
        ids = (ctx + cont)[-max_length:]
        with torch.no_grad():
            logp = model(torch.tensor([ids]))[0].float().log_softmax(-1)
        span = logp[len(ids) - len(cont):]
        target = torch.tensor(cont)
        lp = span.gather(-1, target[:, None]).squeeze(-1)
        out.append(Loglikelihood(float(lp.sum()), bool((span.argmax(-1) == target).all()), len(cont)))
    return out


def loglikelihood_space_in_context(model, tokenizer, requests, batch_size=16, max_length=None):
    """The context's trailing whitespace left where it was (not moved to the continuation)."""
    max_length = max_length or model_max_length(model)
    eot = prefix_token_id(tokenizer)
    pairs = []
    for r in requests:
        if not r.context:
            pairs.append(([eot], tokenizer.encode(r.continuation)))
            continue
        whole, ctx = tokenizer.encode(r.context + r.continuation), tokenizer.encode(r.context)
        pairs.append((ctx, whole[len(ctx):]))
    return _score(model, pairs, batch_size, max_length, 0)


LOGLIKELIHOOD = {
    "the continuation tokenized on its own": loglikelihood_continuation_alone,
    "an off-by-one in continuation alignment (logits at the tokens' own positions)":
        loglikelihood_off_by_one,
    "the context's trailing space left in the context": loglikelihood_space_in_context,
}

# ------------------------------------------------------------------ 11.1 predict: bits per byte


def bits_per_token(nats_per_token, bytes_per_token):
    """Converted to bits, but still per token."""
    return nats_per_token / math.log(2)


def nats_per_byte(nats_per_token, bytes_per_token):
    """Per byte, but still in nats."""
    return nats_per_token / bytes_per_token


def bits_times_bytes(nats_per_token, bytes_per_token):
    """Multiplied by the bytes per token instead of divided."""
    return nats_per_token / math.log(2) * bytes_per_token


BITS_PER_BYTE = {"bits per token (not divided by the bytes per token)": bits_per_token,
                 "nats per byte (no division by ln 2)": nats_per_byte,
                 "multiplied by the bytes per token": bits_times_bytes}

# ------------------------------------------------------------------ 11.8 predict: items needed

_Z_975, _Z_95, _Z_80 = 1.959964, 1.644854, 0.841621


def items_one_sided_z():
    """z for a one-sided test (1.645) where the test is two-sided."""
    return math.ceil(((_Z_95 + _Z_80) * 0.5 / 0.03) ** 2)


def items_without_power():
    """The power term left out: 50 % power."""
    return math.ceil((_Z_975 * 0.5 / 0.03) ** 2)


def items_sigma_not_squared():
    """sigma_d / delta squared only in delta."""
    return math.ceil((_Z_975 + _Z_80) ** 2 * 0.5 / 0.03 ** 2)


ITEMS_NEEDED = {"a one-sided z (1.645) for a two-sided test": items_one_sided_z,
                "leaving out the power term (50 % power)": items_without_power,
                "sigma_d not squared": items_sigma_not_squared}
