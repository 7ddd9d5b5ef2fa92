"""Rewards, rollouts and the reward-hacking run: a proxy reward (keyword count) is driven up by
GRPO while the true reward (a well-formed return line) is not."""

from __future__ import annotations

import copy

import pytest
import torch

from llmlab.align import (
    GRPOConfig,
    GRPOTrainer,
    code_preference_pairs,
    completion_mask,
    keyword_reward,
    return_statement_reward,
    sample_rollout,
    text_reward,
)


@pytest.mark.parametrize("text,want", [
    ("return x + 1\n    y", 1.0), ("  return self._value", 1.0), ("return", 0.0), ("return return x", 0.0),
    ("x = 1\nreturn x", 0.0), ("return (x", 0.0), ("returns", 0.0),
])
def test_return_statement_reward(text, want):
    assert return_statement_reward(text) == want


def test_keyword_reward_and_completion_mask():
    assert keyword_reward("return return return") == 0.75 and keyword_reward("x" * 9) == 0.0
    assert keyword_reward("return " * 9) == 1.0  # capped
    c = torch.tensor([[5, 9, 6, 9], [5, 6, 7, 8]])
    assert completion_mask(c, 9).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    with pytest.raises(ValueError, match="longer"):
        code_preference_pairs(_Tok(), ["ab"], 1, prompt_len=4, response_len=4)


class _Tok:
    def encode(self, text):
        return list(text.encode())


def test_preference_pairs_share_prompt_and_tokens():
    pairs = code_preference_pairs(_Tok(), ["def f(x):\n    return x * 2\n" * 3], 5, 6, 8, seed=1)
    for p, c, r in pairs:
        assert len(p) == 6 and sorted(c) == sorted(r) and c != r


def test_reward_hacking_proxy_rises_true_reward_does_not(book):
    torch.manual_seed(0)
    model, tok = copy.deepcopy(book[0]), book[1]
    eos = tok.special_ids["<|endoftext|>"]
    ids = torch.tensor([tok.encode(p)[-6:] for p in ["def get(self):\n        ", "def size(x):\n    "]])
    proxy, true = text_reward(keyword_reward, tok), text_reward(return_statement_reward, tok)
    tr = GRPOTrainer(model, GRPOConfig(group_size=8, max_new_tokens=8, lr=1e-3, beta=0.0), eos_token_id=eos)
    rewards = [tr.step(ids, proxy)["reward"] for _ in range(10)]
    gen = torch.Generator().manual_seed(1)
    ro = sample_rollout(tr.policy, ids.repeat(8, 1), max_new_tokens=8, temperature=1.0,
                        eos_token_id=eos, generator=gen)
    assert sum(rewards[-3:]) / 3 > 0.6 > rewards[0] + 0.3, rewards  # the proxy is learned fast
    assert float(proxy(ro).mean()) > 0.6 and float(true(ro).mean()) < 0.2
