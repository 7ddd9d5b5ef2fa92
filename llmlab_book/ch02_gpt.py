"""Chapter 02 (solutions/02_gpt): the catalogue of plausible wrong answers.

Each variant is one slip a learner makes in an otherwise right answer, written as the answer
cell would be (see :mod:`llmlab_book.catalogue` for the format); the chapter's checks name them
and ``tests/platform/test_catalogue.py`` grades every one. Names the notebook defines before an
exercise (``your_rms_norm``, ``loss_fn``, ``your_optimizer``, ...) have llmlab's stand-ins here.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from llmlab.data import random_windows
from llmlab.nn import CausalSelfAttention, RMSNorm, SwiGLU
from llmlab.nn import cross_entropy as loss_fn  # the notebook's chosen loss stands here
from llmlab.train import AdamW, decay_groups, evaluate_loss
from llmlab.train import cosine_lr as schedule_fn  # the notebook's chosen schedule stands here
from llmlab.train.checkpoint import load_checkpoint, save_checkpoint
from llmlab_book.catalogue import Catalogue, Mistake


def your_rms_norm(d: int, eps: float = 1e-6) -> RMSNorm:
    """The notebook's RMSNorm layer (computing with the learner's rms_norm_) stands here."""
    return RMSNorm(d, eps)


def your_attention(d_model: int, n_head: int, n_kv_head: int | None = None, rope=None) -> CausalSelfAttention:
    """The notebook's attention layer (the learner's RoPE and attention) stands here."""
    return CausalSelfAttention(d_model, n_head, n_kv_head, rope=rope)


def your_optimizer(model: nn.Module, config) -> torch.optim.Optimizer:
    """The notebook's AdamW around the learner's step stands here."""
    return AdamW(decay_groups(model, config.weight_decay), lr=config.lr,
                 betas=(config.beta1, config.beta2), eps=config.eps)


# ------------------------------------------------------------------ 2.1 RMSNorm


def rms_norm_eps_outside(x, weight, eps=1e-6):
    """eps added to the root instead of inside it."""
    xf = x.float()
    return weight * (xf / (xf.pow(2).mean(-1, keepdim=True).sqrt() + eps)).to(x.dtype)


def layer_norm_without_bias(x, weight, eps=1e-6):
    """Subtracting the mean: LayerNorm, not RMSNorm."""
    xf = x.float()
    centred = xf - xf.mean(-1, keepdim=True)
    return weight * (centred * torch.rsqrt(xf.var(-1, keepdim=True, unbiased=False) + eps)).to(x.dtype)


# ------------------------------------------------------------------ 2.2 RoPE


def rope_interleaved(x, cos, sin):
    """The paper's pairs (2i, 2i+1) where the half layout (i, i + d/2) was asked."""
    cos, sin = cos.unsqueeze(2).to(x.dtype), sin.unsqueeze(2).to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)


def rope_backwards(x, cos, sin):
    """Rotating by minus the angle (the sign of sin flipped)."""
    cos, sin = cos.unsqueeze(2).to(x.dtype), sin.unsqueeze(2).to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


# ------------------------------------------------------------------ 2.3 causal attention (GQA)


def _attend(q, k, v, scale, diagonal, interleave):
    group = q.shape[1] // k.shape[1]
    if interleave:
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    else:
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.shape[-1]) if scale else 1.0)
    t = q.shape[2]
    hidden = torch.triu(torch.ones(t, t, dtype=torch.bool, device=q.device), diagonal)
    return torch.softmax(scores.masked_fill(hidden, float("-inf")), -1).nan_to_num(0.0) @ v


def attention_without_scale(q, k, v):
    """Scores not divided by sqrt(d_head)."""
    return _attend(q, k, v, False, 1, True)


def attention_hiding_the_diagonal(q, k, v):
    """The mask also hides the token itself (diagonal 0)."""
    return _attend(q, k, v, True, 0, True)


def attention_showing_the_next_token(q, k, v):
    """The mask starts one too far right: each token sees the next one."""
    return _attend(q, k, v, True, 2, True)


def attention_repeat(q, k, v):
    """`repeat` instead of `repeat_interleave`: query head h gets KV head h % n_kv."""
    return _attend(q, k, v, True, 1, False)


# ------------------------------------------------------------------ 2.4 the block


class BlockPostNorm(nn.Module):
    """Post-norm (the 2017 transformer): the norm after each residual sum, not before the sublayer."""

    def __init__(self, config, rope=None):
        super().__init__()
        self.norm1 = your_rms_norm(config.d_model, config.norm_eps)
        self.attn = your_attention(config.d_model, config.n_head, config.n_kv_head, rope=rope)
        self.norm2 = your_rms_norm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config.d_model, config.d_ff)

    def forward(self, x, ctx=None, layer_idx=0):
        x = self.norm1(x + self.attn(x, ctx, layer_idx))
        return self.norm2(x + self.mlp(x))


class BlockParallel(nn.Module):
    """Both sublayers read the stream from before attention was added (a parallel block)."""

    def __init__(self, config, rope=None):
        super().__init__()
        self.norm1 = your_rms_norm(config.d_model, config.norm_eps)
        self.attn = your_attention(config.d_model, config.n_head, config.n_kv_head, rope=rope)
        self.norm2 = your_rms_norm(config.d_model, config.norm_eps)
        self.mlp = SwiGLU(config.d_model, config.d_ff)

    def forward(self, x, ctx=None, layer_idx=0):
        return x + self.attn(self.norm1(x), ctx, layer_idx) + self.mlp(self.norm2(x))


# ------------------------------------------------------------------ 2.5 GPT.forward


def _gpt_forward(model, idx, ctx, final_norm, pick):
    b, t = idx.shape
    positions = torch.arange(t, device=idx.device).expand(b, t) if ctx is None else ctx.positions
    x = model.tok_emb(idx)
    if model.pos_emb is not None:
        x = x + model.pos_emb(positions)
    for i, block in enumerate(model.blocks):
        x = block(x, ctx, i)
    if pick and ctx is not None and ctx.logits_at is not None:
        x = x[torch.arange(b, device=x.device), ctx.logits_at]
    return model.lm_head(model.norm_f(x) if final_norm else x)


def gpt_forward_without_final_norm(model, idx, ctx=None):
    """Blocks straight into the LM head, skipping ``norm_f``."""
    return _gpt_forward(model, idx, ctx, False, True)


def gpt_forward_ignoring_logits_at(model, idx, ctx=None):
    """Every column's logits even when the context asks for one column per row."""
    return _gpt_forward(model, idx, ctx, True, False)


# ------------------------------------------------------------------ 2.6 predict: the initial loss


def initial_loss_in_bits(vocab_size):
    """log base 2: bits per token, not nats."""
    return math.log2(vocab_size)


def initial_loss_log10(vocab_size):
    """log base 10."""
    return math.log10(vocab_size)


# ------------------------------------------------------------------ 2.7 cross-entropy


def _token_losses(logits, targets, ignore_index):
    logits = logits.float()
    keep = targets != ignore_index
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    return torch.logsumexp(logits, -1) - logits.gather(-1, safe.unsqueeze(-1)).squeeze(-1), keep


def cross_entropy_sum(logits, targets, ignore_index=-100):
    """A sum over positions instead of the mean."""
    nll, keep = _token_losses(logits, targets, ignore_index)
    return (nll * keep).sum()


def cross_entropy_mean_over_all(logits, targets, ignore_index=-100):
    """Ignored positions left out of the sum but counted in the mean."""
    nll, keep = _token_losses(logits, targets, ignore_index)
    return (nll * keep).sum() / targets.numel()


# ------------------------------------------------------------------ 2.8 AdamW


def adamw_l2(p, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    """Adam's L2 penalty (decay added to the gradient) instead of decoupled decay."""
    beta1, beta2 = betas
    grad = grad + weight_decay * p
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    p = p - lr * (m / (1 - beta1**step)) / ((v / (1 - beta2**step)).sqrt() + eps)
    return p, m, v


def adamw_without_bias_correction(p, grad, m, v, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
    """No bias correction: m and v used as they are, though they start at zero."""
    beta1, beta2 = betas
    p = p * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    return p - lr * m / (v.sqrt() + eps), m, v


# ------------------------------------------------------------------ 2.9 the schedule


def schedule_warmup_one_ahead(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """Warmup at (step + 1) / warmup: the peak one step early."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_cosine_to_zero(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
    """The cosine decays to 0, the floor min_lr only after the end."""
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max_lr * 0.5 * (1 + math.cos(math.pi * progress))


# ------------------------------------------------------------------ 2.10 capstone: the pretraining loop


def _pretrain(model, train_ids, val_ids, config, stop_after, divide=True, clip_each=False,
              lr_ahead=False, restore_sampler=True, restore_optimizer=True):
    """A right loop with one switch per slip (each variant below turns one)."""
    c = config
    if c.precision != "fp32":
        raise ValueError(f"expected precision='fp32', got {c.precision!r}")
    stop = c.max_steps if stop_after is None else stop_after
    if not 0 <= stop <= c.max_steps:
        raise ValueError(f"stop_after must be in [0, {c.max_steps}], got {stop_after}")
    seq_len = c.seq_len or model.config.block_size
    optimizer = your_optimizer(model, c)
    generator = torch.Generator().manual_seed(c.seed)
    step, log = 0, []
    path = Path(c.checkpoint_path) if c.checkpoint_path else None
    if path is not None and path.exists():
        state = load_checkpoint(path)
        model.load_state_dict(state["model"])
        if restore_optimizer:
            optimizer.load_state_dict(state["optimizer"])
        if restore_sampler:
            generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step, log = state["step"], list(state["log"])
    model.train()
    while step < stop:
        at = step + 1 if lr_ahead else step
        lr = schedule_fn(at, c.lr, c.warmup_steps, c.max_steps, c.lr * c.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss = 0.0
        for _ in range(c.grad_accum):
            x, y = random_windows(train_ids, c.batch_size, seq_len, generator)
            micro = loss_fn(model(x), y) / (c.grad_accum if divide else 1)
            micro.backward()
            loss += micro.item()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = torch.sqrt(sum(g.float().pow(2).sum() for g in grads)).item()
        with torch.no_grad():
            for g in grads:
                g.mul_(min(1.0, c.grad_clip / ((float(g.norm()) if clip_each else norm) + 1e-6)))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        if step % c.log_every == 0 or step == c.max_steps:
            log.append({"step": step, "loss": loss, "grad_norm": norm, "lr": lr})
        if val_ids is not None and c.eval_every and (step % c.eval_every == 0 or step == c.max_steps):
            log.append({"step": step, "val_loss": evaluate_loss(model, val_ids, c.batch_size, seq_len,
                                                                c.eval_batches)})
        if path is not None and ((c.checkpoint_every and step % c.checkpoint_every == 0) or
                                 (stop_after is not None and step == stop)):
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                             "step": step, "log": log}, path)
    return log


def pretrain_without_dividing(model, train_ids, val_ids, config, stop_after=None):
    """Micro-batch losses summed, not divided by grad_accum."""
    return _pretrain(model, train_ids, val_ids, config, stop_after, divide=False)


def pretrain_clipping_each_tensor(model, train_ids, val_ids, config, stop_after=None):
    """Each parameter's gradient clipped on its own instead of by the global norm."""
    return _pretrain(model, train_ids, val_ids, config, stop_after, clip_each=True)


def pretrain_lr_one_step_ahead(model, train_ids, val_ids, config, stop_after=None):
    """The rate of step s + 1 used for the step after s completed steps."""
    return _pretrain(model, train_ids, val_ids, config, stop_after, lr_ahead=True)


def pretrain_resume_without_sampler(model, train_ids, val_ids, config, stop_after=None):
    """The sampler's generator not restored on resume: the data restarts from the seed."""
    return _pretrain(model, train_ids, val_ids, config, stop_after, restore_sampler=False)


def pretrain_resume_without_optimizer(model, train_ids, val_ids, config, stop_after=None):
    """The optimizer's state not restored on resume: Adam starts again from zero moments."""
    return _pretrain(model, train_ids, val_ids, config, stop_after, restore_optimizer=False)


# ------------------------------------------------------------------ 2.11 perplexity


def perplexity_mean_of_exp(token_losses):
    """exp of each token's loss, then the mean: the mean of exponentials, not exp of the mean."""
    return token_losses.exp().mean()


def perplexity_base_two(token_losses):
    """2 ** mean: base 2 for a loss in natural log units."""
    return 2 ** token_losses.mean()


def perplexity_exp_of_sum(token_losses):
    """exp of the total loss instead of the mean."""
    return token_losses.sum().exp()


# ------------------------------------------------------------------ 2.12 sampling


@torch.no_grad()
def _generate(model, idx, n, temperature, top_k, top_p, generator, crossing_kept, times):
    for _ in range(n):
        logits = model(idx[:, -model.config.block_size:])[:, -1].float()
        if temperature == 0:
            idx = torch.cat((idx, logits.argmax(-1, keepdim=True)), 1)
            continue
        logits = logits * temperature if times else logits / temperature
        if top_k > 0:
            kth = torch.topk(logits, min(top_k, logits.shape[-1]), -1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p < 1.0:
            probs, order = torch.sort(torch.softmax(logits, -1), -1, descending=True)
            drop = (probs.cumsum(-1) - probs >= top_p) if crossing_kept else (probs.cumsum(-1) > top_p)
            drop[..., 0] = False  # the most probable token always stays
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
        idx = torch.cat((idx, nxt), 1)
    return idx


def generate_top_p_off_by_one(model, idx, n, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """Top-p that also drops the token whose probability carries the mass past p."""
    return _generate(model, idx, n, temperature, top_k, top_p, generator, False, False)


def generate_temperature_times(model, idx, n, temperature=1.0, top_k=0, top_p=1.0, generator=None):
    """The logits multiplied by the temperature instead of divided."""
    return _generate(model, idx, n, temperature, top_k, top_p, generator, True, True)


# ------------------------------------------------------------------ 2.13 predict: Chinchilla's FLOPs


def chinchilla_flops_forward_only():
    """2·N·D: the forward pass only."""
    n = 124e6
    return 2 * n * 20 * n


def chinchilla_flops_d_of_20():
    """D = 20 tokens instead of 20 per parameter."""
    return 6 * 124e6 * 20


CATALOGUE = Catalogue({
    "rmsnorm": [Mistake("eps outside the square root", rms_norm_eps_outside),
                Mistake("subtracting the mean (LayerNorm, not RMSNorm)", layer_norm_without_bias)],
    "rope": [Mistake("RoPE on interleaved pairs (2i, 2i+1) instead of the half layout", rope_interleaved),
             Mistake("rotating the wrong way (sin with the opposite sign)", rope_backwards)],
    "attention": [
        Mistake("attention without the 1/sqrt(d_head) scale", attention_without_scale),
        Mistake("an off-by-one mask that hides the diagonal", attention_hiding_the_diagonal),
        Mistake("an off-by-one mask that shows the next token", attention_showing_the_next_token),
        Mistake("`repeat` instead of `repeat_interleave` for the KV heads", attention_repeat)],
    "block": [Mistake("post-norm: the norm after the residual sum, not before the sublayer", BlockPostNorm),
              Mistake("the MLP reading the stream from before attention's update", BlockParallel)],
    "gpt_forward": [Mistake("skipping the final norm", gpt_forward_without_final_norm),
                    Mistake("ignoring ctx.logits_at", gpt_forward_ignoring_logits_at)],
    "predict_init_loss": [Mistake("log base 2 (bits, not nats)", initial_loss_in_bits),
                          Mistake("log base 10", initial_loss_log10)],
    "cross_entropy": [
        Mistake("a sum over positions instead of the mean", cross_entropy_sum),
        Mistake("averaging over all positions, ignored ones included", cross_entropy_mean_over_all)],
    "adamw": [
        Mistake("Adam's L2 penalty (decay added to the gradient) instead of decoupled decay", adamw_l2),
        Mistake("no bias correction of m and v", adamw_without_bias_correction)],
    "schedule": [Mistake("warmup one step ahead: (step + 1) / warmup_steps", schedule_warmup_one_ahead),
                 Mistake("the cosine decaying to 0 instead of to min_lr", schedule_cosine_to_zero)],
    "pretrain": [
        Mistake("not dividing each micro-batch's loss by grad_accum", pretrain_without_dividing),
        Mistake("clipping each tensor on its own instead of the global norm", pretrain_clipping_each_tensor),
        Mistake("the learning rate of the next step (schedule at s + 1)", pretrain_lr_one_step_ahead),
        Mistake("resuming without the sampler's generator state", pretrain_resume_without_sampler),
        Mistake("resuming without the optimizer's state", pretrain_resume_without_optimizer)],
    "perplexity": [
        Mistake("the mean of per-token exp(loss) instead of exp of the mean loss", perplexity_mean_of_exp),
        Mistake("2 ** mean loss: base 2 for a loss in nats", perplexity_base_two),
        Mistake("exp of the summed loss instead of the mean", perplexity_exp_of_sum)],
    "generate": [
        Mistake("top-p dropping the token that crosses p", generate_top_p_off_by_one),
        Mistake("the logits multiplied by the temperature instead of divided", generate_temperature_times)],
    "predict_flops": [Mistake("2·N·D (the forward pass only)", chinchilla_flops_forward_only),
                      Mistake("D = 20 tokens instead of 20 per parameter", chinchilla_flops_d_of_20)],
})
