"""Reward model: a language-model trunk with a scalar head, trained on preference pairs with the
Bradley–Terry loss  -log sigmoid(r(x, y_chosen) - r(x, y_rejected)).

- Bradley & Terry 1952, "Rank Analysis of Incomplete Block Designs"; for language models
  Christiano et al. 2017, "Deep reinforcement learning from human preferences",
  arXiv:1706.03741, and Ouyang et al. 2022 (InstructGPT), arXiv:2203.02155, section 3.5.

The same module is PPO's critic (``ppo.py``): a value per token instead of a score per sequence.
Taught in chapter 06 (solutions/06_align).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.nn.context import StepContext


def hidden_states(model: nn.Module, idx: torch.Tensor,
                  ctx: StepContext | None = None) -> torch.Tensor:
    """The final-norm hidden states of an llmlab ``GPT`` (everything but the LM head).

    idx: (batch, T) -> (batch, T, d_model); ``ctx`` the step context (default a fresh sequence).
    """
    ctx = ctx if ctx is not None else StepContext.causal(*idx.shape, idx.device)
    x = model.tok_emb(idx)
    if model.pos_emb is not None:
        x = x + model.pos_emb(ctx.positions)
    for i, block in enumerate(model.blocks):
        x = block(x, ctx, i)
    return model.norm_f(x)


class ScalarHeadModel(nn.Module):
    """A copy of a GPT trunk with a linear head to one number per token.

    forward(idx: (batch, T)) -> (batch, T) float. As a reward model, read the score at the last
    real token (``score``); as PPO's value model, use every position.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(backbone)
        self.backbone.lm_head = nn.Identity()  # unused; keeps the tied embedding as a parameter
        d = backbone.config.d_model
        self.head = nn.Linear(d, 1)
        nn.init.zeros_(self.head.weight)  # starts at 0: a value model's first advantages are the rewards
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(hidden_states(self.backbone, idx)).squeeze(-1)

    def score(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Score at each row's last real token. idx: (batch, T), lengths: (batch,) -> (batch,)."""
        if lengths.shape != idx.shape[:1] or int(lengths.min()) < 1 or int(lengths.max()) > idx.shape[1]:
            raise ValueError(f"lengths must be (batch,) in [1, {idx.shape[1]}], got {lengths.tolist()}")
        values = self(idx)
        return values.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, margin: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected [- margin]). (batch,), (batch,) -> scalar.

    The optional margin is Llama 2's (Touvron et al. 2023, arXiv:2307.09288, eq. 2).
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"r_chosen {tuple(r_chosen.shape)} and r_rejected {tuple(r_rejected.shape)} differ")
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def preference_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Fraction of pairs the reward model orders correctly (ties count as wrong)."""
    return float((r_chosen > r_rejected).float().mean())


def pad_batch(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists. -> ids (batch, max_len) long, lengths (batch,) long."""
    if not seqs or min(len(s) for s in seqs) == 0:
        raise ValueError("pad_batch needs a non-empty list of non-empty sequences")
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, torch.tensor([len(s) for s in seqs])


def train_reward_model(rm: ScalarHeadModel, chosen: list[list[int]], rejected: list[list[int]],
                       pad_id: int, steps: int = 40, batch_size: int = 16, lr: float = 3e-4,
                       seed: int = 0, progress=None) -> list[float]:
    """Fit ``rm`` on (chosen, rejected) token lists with AdamW; returns the loss per step."""
    if len(chosen) != len(rejected):
        raise ValueError(f"{len(chosen)} chosen but {len(rejected)} rejected")
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(rm.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    steps_iter = progress(range(steps)) if progress else range(steps)
    rm.train()
    for _ in steps_iter:
        pick = torch.randint(len(chosen), (batch_size,), generator=g).tolist()
        ids, lengths = pad_batch([chosen[i] for i in pick] + [rejected[i] for i in pick], pad_id)
        r = rm.score(ids, lengths)
        loss = bradley_terry_loss(r[:batch_size], r[batch_size:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    rm.eval()
    return losses


@torch.no_grad()
def reward_scores(rm: ScalarHeadModel, seqs: list[list[int]], pad_id: int) -> torch.Tensor:
    """Scores of token lists. -> (len(seqs),)."""
    ids, lengths = pad_batch(seqs, pad_id)
    return rm.score(ids, lengths)
