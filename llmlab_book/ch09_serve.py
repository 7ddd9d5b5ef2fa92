"""Chapter 09 (solutions/09_serve): the catalogue of plausible wrong answers.

Each variant is one slip a learner makes in an otherwise right answer, written as the answer
cell would be (see :mod:`llmlab_book.catalogue` for the format); the chapter's checks name them
and ``tests/platform/test_catalogue.py`` grades every one.
"""

from __future__ import annotations

import json
import math

import torch

import llmlab.serve as serve
from llmlab.serve.scheduler import Status
from llmlab_book.catalogue import Catalogue, Mistake

# ------------------------------------------------------------------ 9.1 top-p and min-p


def top_p_one_too_few(logits, top_p=1.0, min_p=0.0):
    """A token dropped once the mass *up to and including* it reaches top_p: the token that
    crosses p is lost."""
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) >= top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    if min_p > 0.0:
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, -math.inf)
    return logits


def min_p_absolute(logits, top_p=1.0, min_p=0.0):
    """min-p as an absolute threshold on the probabilities, not relative to the top one."""
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    if min_p > 0.0:
        logits = logits.masked_fill(logits.softmax(-1) < min_p, -math.inf)
    return logits


# ------------------------------------------------------------------ 9.2 predict: survivors


def survivors_top_p_one_short():
    """Top-p stopped before the token whose mass crosses p: 0.40 + 0.25 = 0.65 < 0.75."""
    return 2, 4


def survivors_min_p_absolute():
    """min-p read as an absolute threshold: p ≥ 0.2 instead of p ≥ 0.2 × 0.40."""
    return 3, 2


# ------------------------------------------------------------------ 9.3 stop strings


def stop_step_in_delta_only(pending, delta, stops):
    """Stop strings searched in the new text only: one that began in the held-back text is
    missed."""
    text = pending + delta
    hits = [i for i in (delta.find(s) for s in stops) if i >= 0]
    if hits:
        return text[:len(pending) + min(hits)], "", True
    keep = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), keep, -1):
            if text.endswith(stop[:k]):
                keep = k
                break
    return text[:len(text) - keep], text[len(text) - keep:], False


def stop_step_first_listed(pending, delta, stops):
    """The first stop string of the list that occurs wins, not the earliest occurrence."""
    text = pending + delta
    for stop in stops:
        if stop in text:
            return text[:text.find(stop)], "", True
    keep = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), keep, -1):
            if text.endswith(stop[:k]):
                keep = k
                break
    return text[:len(text) - keep], text[len(text) - keep:], False


# ------------------------------------------------------------------ 9.4 predict: static batching


def static_busy_fraction():
    """The busy fraction of the row-steps, not the idle one."""
    return 30, (12 + 3 + 7 + 30) / (4 * 30)


def static_idle_over_busy():
    """Idle row-steps divided by the busy ones, not by all 4 × 30."""
    return 30, (4 * 30 - (12 + 3 + 7 + 30)) / (12 + 3 + 7 + 30)


# ------------------------------------------------------------------ 9.5 the scheduler's step


def _schedule(sched, cut_admission=True, newest_victim=True):
    """A right step, except where a flag says otherwise."""
    budget, reserved = sched.config.max_num_batched_tokens, 0
    rows, preempted, admitted = [], [], []
    queue = list(sched.running)
    while queue and budget > 0:
        seq = queue.pop(0)
        n = min(seq.num_uncomputed, budget)
        need = sched.kv.blocks_needed(seq.seq_id, n)
        while reserved + need > sched.kv.num_free_blocks and seq in sched.running:
            victim = queue.pop() if queue and newest_victim else seq
            sched.running.remove(victim)
            sched.kv.free(victim.seq_id)
            victim.num_computed, victim.status = 0, Status.WAITING
            victim.num_preemptions += 1
            sched.waiting.appendleft(victim)
            preempted.append(victim)
        if seq not in sched.running:
            break
        rows.append((seq, n))
        reserved += need
        budget -= n
    while (not preempted and sched.waiting and budget > 0
           and len(sched.running) < sched.config.max_num_seqs):
        seq = sched.waiting[0]
        seq.num_computed = seq.num_cached = sched.kv.add_sequence(seq.seq_id, seq.tokens)
        n = min(seq.num_uncomputed, budget) if cut_admission else seq.num_uncomputed
        need = sched.kv.blocks_needed(seq.seq_id, n)
        if reserved + need > sched.kv.num_free_blocks:
            sched.kv.free(seq.seq_id)
            seq.num_computed = 0
            break
        sched.waiting.popleft()
        seq.status = Status.RUNNING
        sched.running.append(seq)
        admitted.append(seq)
        rows.append((seq, n))
        reserved += need
        budget -= n
    return serve.ScheduledBatch(rows, preempted, admitted)


def schedule_admitting_past_budget(sched):
    """An admitted prompt's row not cut to what the budget has left: the forward exceeds the
    token budget."""
    return _schedule(sched, cut_admission=False)


def schedule_preempting_the_asker(sched):
    """The sequence whose row does not fit is preempted, instead of the newest running one."""
    return _schedule(sched, newest_victim=False)


# ------------------------------------------------------------------ 9.6 predict: chunked prefill


def chunks_whole_budget():
    """The decode tokens' share of the budget forgotten: ⌈300 / 64⌉."""
    return math.ceil(300 / 64)


def chunks_one_more():
    """One more forward counted for the first token, which the last chunk's forward samples."""
    return math.ceil(300 / (64 - 8)) + 1


# ------------------------------------------------------------------ 9.7 capstone: the engine's step


def _engine_step(engine, schedule, top_p_min_p, stop_step, free=True, pending_kept=True):
    """A right step, except where a flag says otherwise."""
    batch = schedule(engine.scheduler)
    if not batch.rows:
        return []
    engine.num_steps += 1
    chunks = [seq.tokens[seq.num_computed:seq.num_computed + n] for seq, n in batch.rows]
    ctx = engine.cache.prepare([seq.seq_id for seq, _ in batch.rows], tokens=chunks,
                               device=engine.device, last_logits=True)
    width = max(len(c) for c in chunks)
    ids = torch.tensor([c + [0] * (width - len(c)) for c in chunks], device=engine.device)
    with torch.no_grad():
        logits = engine.model(ids, ctx).float()
    engine.cache.commit(ctx)
    outputs = []
    for row, (seq, n) in enumerate(batch.rows):
        seq.num_computed += n
        if seq.num_uncomputed > 0:
            continue
        req = engine.requests[seq.seq_id]
        p = req.params
        if p.temperature == 0:
            token = int(logits[row].argmax())
        else:
            probs = top_p_min_p(logits[row] / p.temperature, p.top_p, p.min_p).softmax(-1)
            token = int(torch.multinomial(probs, 1, generator=req.generator))
        seq.output.append(token)
        eos = engine.eos_id if p.eos_token_id is None else p.eos_token_id
        text, reason, hit = "", None, False
        if (token == eos and not p.ignore_eos) or token in p.stop_token_ids:
            reason = "stop"
        else:
            pending = req.stop.pending if pending_kept else ""
            text, req.stop.pending, hit = stop_step(pending, req.detok.push(token), p.stop)
            if hit:
                reason = "stop"
            elif len(seq.output) >= p.max_new_tokens or len(seq.tokens) >= engine.max_model_len:
                reason = "length"
        if reason is not None:
            if not hit:
                tail, rest, hit = stop_step(req.stop.pending, req.detok.flush(), p.stop)
                text += tail + ("" if hit else rest)
                req.stop.pending = ""
            req.finish_reason = reason
            if free:
                engine.scheduler.finish(seq)
            else:
                engine.scheduler.running.remove(seq)
                seq.status = Status.FINISHED
            del engine.requests[req.request_id]
        req.text += text
        outputs.append(serve.RequestOutput(req.request_id, [token], text, reason is not None, reason))
    return outputs


def engine_step_keeping_blocks(engine, schedule, top_p_min_p, stop_step):
    """A finished sequence leaves the batch without freeing its KV blocks."""
    return _engine_step(engine, schedule, top_p_min_p, stop_step, free=False)


def engine_step_forgetting_pending(engine, schedule, top_p_min_p, stop_step):
    """Each token's text checked for stop strings on its own: the held-back text is dropped, so
    a stop string across tokens is missed and text is lost."""
    return _engine_step(engine, schedule, top_p_min_p, stop_step, pending_kept=False)


# ------------------------------------------------------------------ 9.8 the acceptance rule


def accept_ratio_upside_down(p, q, draft, u):
    """Accepted with probability q/p instead of p/q (u · p ≤ q)."""
    for i, x in enumerate(draft):
        q_i = torch.zeros_like(p[i]) if q is None else q[i]
        if q is None:
            q_i[x] = 1.0
        if u[i] * p[i, x] <= q_i[x]:
            continue
        residual = (p[i] - q_i).clamp(min=0)
        if float(residual.sum()) <= 0:
            return i, p[i]
        return i, residual / residual.sum()
    return len(draft), p[len(draft)]


def accept_residual_unnormalized(p, q, draft, u):
    """The residual max(0, p - q) returned without dividing by its sum."""
    for i, x in enumerate(draft):
        q_i = torch.zeros_like(p[i]) if q is None else q[i]
        if q is None:
            q_i[x] = 1.0
        if u[i] * q_i[x] <= p[i, x]:
            continue
        residual = (p[i] - q_i).clamp(min=0)
        if float(residual.sum()) <= 0:
            return i, p[i]
        return i, residual
    return len(draft), p[len(draft)]


# ------------------------------------------------------------------ 9.9 the regex-to-token mask


def token_mask_empty_allowed(dfa, state, token_bytes):
    """An empty token allowed (it keeps the state) instead of disallowed."""
    out = []
    for tb in token_bytes:
        s = state
        for b in tb:
            s = dfa.trans[s].get(b)
            if s is None or s not in dfa.live:
                s = None
                break
        out.append(s)
    return out


def token_mask_first_byte(dfa, state, token_bytes):
    """Only the token's first byte walked: the state after it, not after the whole token."""
    out = []
    for tb in token_bytes:
        s = dfa.trans[state].get(tb[0]) if tb else None
        out.append(s if s is not None and s in dfa.live else None)
    return out


# ------------------------------------------------------------------ 9.10 the SSE event


def sse_event_one_newline(data):
    """One newline at the end of the event, not a blank line: the client never sees it end."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n"


def sse_event_spaced_json(data):
    """JSON with json.dumps' default separators (", " and ": "), not the compact ones."""
    payload = data if isinstance(data, str) else json.dumps(data)
    return f"data: {payload}\n\n"


CATALOGUE = Catalogue({
    "top_p_min_p": [
        Mistake("top-p keeping one token too few: the token whose mass crosses top_p dropped",
                top_p_one_too_few),
        Mistake("min-p as an absolute threshold (p < min_p), not min_p × the top probability",
                min_p_absolute),
    ],
    "predict_survivors": [
        Mistake("top-p one short: the token that crosses 0.75 is kept (0.65 < 0.75 before it)",
                survivors_top_p_one_short),
        Mistake("min-p read as p ≥ 0.2 instead of p ≥ 0.2 × 0.40", survivors_min_p_absolute),
    ],
    "stop_step": [
        Mistake("stop strings searched in the new text only, not in the held-back text with it",
                stop_step_in_delta_only),
        Mistake("the first stop string of the list wins, not the earliest occurrence",
                stop_step_first_listed),
    ],
    "predict_static": [
        Mistake("the busy fraction of the row-steps, not the idle one", static_busy_fraction),
        Mistake("idle row-steps divided by the busy ones, not by all 4 × 30", static_idle_over_busy),
    ],
    "schedule_step": [
        Mistake("admitting past the token budget: an admitted prompt's row is not cut to the "
                "budget left", schedule_admitting_past_budget),
        Mistake("the sequence whose row does not fit is preempted, not the newest running one",
                schedule_preempting_the_asker),
    ],
    "predict_chunks": [
        Mistake("the decode tokens' share of the budget forgotten: ⌈300 / 64⌉", chunks_whole_budget),
        Mistake("one forward too many: the last chunk's forward already samples the first token",
                chunks_one_more),
    ],
    "engine_step": [
        Mistake("finished sequences leave the batch without freeing their KV blocks",
                engine_step_keeping_blocks),
        Mistake("each token's text checked for stop strings alone: the held-back text is dropped",
                engine_step_forgetting_pending),
    ],
    "accept_draft": [
        Mistake("the acceptance ratio upside down: q/p instead of p/q", accept_ratio_upside_down),
        Mistake("the residual max(0, p - q) not normalized", accept_residual_unnormalized),
    ],
    "token_mask": [
        Mistake("an empty token allowed (it keeps the state)", token_mask_empty_allowed),
        Mistake("only the token's first byte walked", token_mask_first_byte),
    ],
    "sse_event": [
        Mistake("one newline after the event instead of a blank line (two newlines)",
                sse_event_one_newline),
        Mistake("JSON with the default separators (', ' and ': '), not the compact ones",
                sse_event_spaced_json),
    ],
})

__all__ = ["CATALOGUE"]
