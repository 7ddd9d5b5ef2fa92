"""Short runs on the book model, fixed seed, asserted with margins: a reward model's held-out
accuracy, a DPO run's implicit reward margin and win rate, a GRPO run's verifiable reward, and
a reward-hacking run where a proxy rises while the true reward does not."""

from __future__ import annotations

import copy

import pytest
import torch

from llmlab.align import (
    GRPOConfig,
    GRPOTrainer,
    ScalarHeadModel,
    code_preference_pairs,
    preference_accuracy,
    return_statement_reward,
    reward_scores,
    text_reward,
    train_dpo,
    train_reward_model,
)
from llmlab.data import load_documents

PROMPTS = ["def get(self):\n        ", "def size(x):\n    "]


@pytest.fixture(scope="module")
def pairs(book):
    texts = [d.text for d in load_documents()[:40]]
    all_pairs = code_preference_pairs(book[1], texts, 320, prompt_len=12, response_len=6, seed=0)
    return all_pairs[:256], all_pairs[256:]


def test_reward_model_learns_held_out_preferences(book, pairs):
    torch.manual_seed(0)
    train, held_out = pairs
    rm = ScalarHeadModel(book[0])
    pad = book[1].special_ids["<|endoftext|>"]

    def acc():
        c = reward_scores(rm, [p + c for p, c, _ in held_out], pad)
        r = reward_scores(rm, [p + r for p, _, r in held_out], pad)
        return preference_accuracy(c, r)

    before = acc()
    losses = train_reward_model(rm, [p + c for p, c, _ in train], [p + r for p, _, r in train], pad,
                                steps=30, batch_size=16, lr=3e-4)
    after = acc()
    assert after >= 0.6 and after > before, (before, after)  # 64 unseen pairs; chance is 0.5
    assert sum(losses[-5:]) / 5 < 0.6 < losses[0] + 0.1


def test_dpo_run_raises_margin_and_win_rate(book, pairs):
    torch.manual_seed(0)
    train, held_out = pairs
    policy = copy.deepcopy(book[0]).train()
    pad = book[1].special_ids["<|endoftext|>"]
    hist = train_dpo(policy, train, held_out[:16], pad, steps=10, beta=0.1, lr=1e-4, batch_size=8)
    assert len(hist) == 11 and hist[0]["eval_margin"] == 0 and hist[0]["win_rate"] == 0
    assert hist[-1]["eval_margin"] > hist[1]["eval_margin"] + 0.05, hist
    assert hist[-1]["win_rate"] > 0.7 and hist[-1]["loss"] < hist[1]["loss"]


def test_grpo_run_raises_verifiable_reward(book):
    torch.manual_seed(0)
    model, tok = copy.deepcopy(book[0]), book[1]
    ids = torch.tensor([tok.encode(p)[-6:] for p in PROMPTS])
    tr = GRPOTrainer(model, GRPOConfig(group_size=8, max_new_tokens=6, lr=1e-3, beta=0.0),
                     eos_token_id=tok.special_ids["<|endoftext|>"])
    rewards = [tr.step(ids, text_reward(return_statement_reward, tok))["reward"] for _ in range(12)]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.3, rewards
