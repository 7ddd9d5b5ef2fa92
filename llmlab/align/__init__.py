"""Alignment: from a pretrained model to one that follows preferences and verifiable rewards.

Taught in chapter 06 (solutions/06_align). One file per method, named after its paper:

- ``logprobs``: prompt/response batches with a response mask, per-token log-probs and entropy,
  masked reductions and whitening (CS336 alignment helpers).
- ``sft``: ChatML tokens for a base model, assistant-only labels, packing with a document mask
  and position resets, the SFT loss.
- ``reward_model``: a trunk with a scalar head, the Bradley–Terry loss, held-out accuracy.
- ``reinforce``: the policy gradient with a baseline.
- ``ppo``: KL-penalised rewards, GAE, clipped policy/value losses, adaptive KL, ``PPOTrainer``.
- ``dpo``, ``ipo``, ``simpo``, ``orpo``, ``kto``: preference losses without a reward model.
- ``grpo``: group advantages, the GRPO / Dr. GRPO / DAPO losses, ``GRPOTrainer``;
  ``kl_estimators``: k1, k2, k3.
- ``rollout``: sampling completions and scoring them; ``rewards``: verifiable and hackable
  rewards, preference pairs from real code.
"""

from llmlab.align.dpo import dpo_loss, preference_log_probs, train_dpo
from llmlab.align.grpo import GRPOConfig, GRPOTrainer, group_advantages, grpo_loss, grpo_token_losses
from llmlab.align.ipo import ipo_loss
from llmlab.align.kl_estimators import kl_estimate
from llmlab.align.kto import kto_loss, kto_reference_point
from llmlab.align.logprobs import (
    compute_entropy,
    get_response_log_probs,
    masked_mean,
    masked_normalize,
    masked_whiten,
    prompt_response_batch,
    require_tokens,
    sequence_log_probs,
    token_log_probs,
    tokenize_prompt_and_output,
)
from llmlab.align.orpo import orpo_loss, orpo_odds_ratio_term
from llmlab.align.ppo import (
    AdaptiveKLController,
    PPOConfig,
    PPOTrainer,
    gae,
    kl_penalized_rewards,
    ppo_policy_loss,
    ppo_token_losses,
    ppo_value_loss,
)
from llmlab.align.reinforce import reinforce_loss
from llmlab.align.reward_model import (
    ScalarHeadModel,
    bradley_terry_loss,
    hidden_states,
    pad_batch,
    preference_accuracy,
    reward_scores,
    train_reward_model,
)
from llmlab.align.rewards import (
    code_preference_pairs,
    decode_completions,
    keyword_reward,
    return_statement_reward,
    text_reward,
)
from llmlab.align.rollout import Rollout, completion_log_probs, completion_mask, sample_rollout
from llmlab.align.sft import (
    IGNORE_INDEX,
    PackedBatch,
    add_chat_tokens,
    document_causal_mask,
    pack_examples,
    packed_context,
    packed_sft_loss,
    sft_example,
    sft_loss,
)
from llmlab.align.simpo import simpo_loss

__all__ = [
    "IGNORE_INDEX",
    "AdaptiveKLController",
    "GRPOConfig",
    "GRPOTrainer",
    "PPOConfig",
    "PPOTrainer",
    "PackedBatch",
    "packed_context",
    "Rollout",
    "ScalarHeadModel",
    "add_chat_tokens",
    "bradley_terry_loss",
    "code_preference_pairs",
    "completion_log_probs",
    "completion_mask",
    "compute_entropy",
    "decode_completions",
    "document_causal_mask",
    "dpo_loss",
    "gae",
    "get_response_log_probs",
    "group_advantages",
    "grpo_loss",
    "grpo_token_losses",
    "hidden_states",
    "ipo_loss",
    "keyword_reward",
    "kl_estimate",
    "kl_penalized_rewards",
    "kto_loss",
    "kto_reference_point",
    "masked_mean",
    "masked_normalize",
    "masked_whiten",
    "orpo_loss",
    "orpo_odds_ratio_term",
    "pack_examples",
    "packed_sft_loss",
    "pad_batch",
    "ppo_policy_loss",
    "ppo_token_losses",
    "ppo_value_loss",
    "preference_accuracy",
    "preference_log_probs",
    "prompt_response_batch",
    "reinforce_loss",
    "require_tokens",
    "return_statement_reward",
    "reward_scores",
    "sample_rollout",
    "sequence_log_probs",
    "sft_example",
    "sft_loss",
    "simpo_loss",
    "text_reward",
    "token_log_probs",
    "tokenize_prompt_and_output",
    "train_dpo",
    "train_reward_model",
]
