"""The inference engine: a scheduler over a paged KV cache, one batched forward per step.

:class:`LLMEngine` is the thin tensor layer beside :class:`~llmlab.serve.scheduler.Scheduler`
(nano-vllm's split of ``Scheduler`` and ``ModelRunner``). A step asks the scheduler for rows,
prepares the :class:`~llmlab.kvcache.PagedKVCache` for their new tokens (one request may bring a
prefill chunk, another a single decode token), runs the model once on the right-padded batch,
samples a token for every row whose prompt is fully computed, and streams text out through an
incremental detokenizer and stop-string check. Greedy outputs equal running each request alone,
whatever the arrival order and batch mix (``tests/serve/test_engine.py``). Taught in chapter 09
(solutions/09_serve).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from llmlab.kvcache import PagedKVCache, blocks_for
from llmlab.model.sampling import (
    SamplingParams,
    make_generator,
    next_token,
    process_logits,
    top_logprobs,
)
from llmlab.serve.detokenize import IncrementalDetokenizer, StopChecker
from llmlab.serve.scheduler import ScheduledBatch, Scheduler, SchedulerConfig, Sequence
from llmlab.utils import reject_unknown_keys

EOS = "<|endoftext|>"


class PromptTooLongError(ValueError):
    """The prompt (plus the tokens asked for) does not fit the model's context or the KV pool."""


@reject_unknown_keys
@dataclass
class EngineConfig:
    """KV pool size and the scheduler's limits."""

    num_blocks: int = 256
    block_size: int = 16
    max_num_seqs: int = 16
    max_num_batched_tokens: int = 256
    prefix_caching: bool = True
    chunked_prefill: bool = True


@dataclass
class Request:
    """One request's state. Times are ``time.perf_counter()`` seconds."""

    request_id: str
    seq: Sequence
    params: SamplingParams
    detok: IncrementalDetokenizer
    stop: StopChecker
    generator: torch.Generator | None
    constraint: object | None = None
    adapter: int = -1  # index of its LoRA adapter in the engine's stack (-1: the base model)
    text: str = ""
    finish_reason: str | None = None
    logprobs: list[tuple[int, float, dict[int, float]]] = field(default_factory=list)
    arrival: float = 0.0
    first_token_time: float | None = None
    finish_time: float | None = None

    def latency(self) -> tuple[float, float | None]:
        """(time to first token, mean time per output token after the first) in seconds."""
        n = len(self.seq.output)
        tpot = (self.finish_time - self.first_token_time) / (n - 1) if n > 1 else None
        return self.first_token_time - self.arrival, tpot


@dataclass
class RequestOutput:
    """What one step produced for one request: new tokens, the new text, and whether it ended."""

    request_id: str
    token_ids: list[int]
    text: str
    finished: bool
    finish_reason: str | None
    logprobs: list[tuple[int, float, dict[int, float]]] = field(default_factory=list)
    latency: tuple[float, float | None] | None = None  # when finished: (TTFT, TPOT) in seconds


class LLMEngine:
    """``add_request`` / ``step`` / ``abort``; ``generate`` runs a list of prompts to the end."""

    def __init__(self, model: nn.Module, tokenizer, config: EngineConfig | None = None) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.config = c = config or EngineConfig()
        self.cache = PagedKVCache(model.config.n_layer, c.num_blocks, c.block_size,
                                  prefix_caching=c.prefix_caching)
        self.scheduler = Scheduler(self.cache, SchedulerConfig(
            c.max_num_batched_tokens, c.max_num_seqs, c.chunked_prefill))
        self.requests: dict[str, Request] = {}
        self.eos_id = getattr(tokenizer, "special_ids", {}).get(EOS)
        self.max_model_len = model.config.block_size
        self.device = next(model.parameters()).device
        self._ids = itertools.count()
        self.num_steps = 0
        self.last_batch: ScheduledBatch | None = None  # the latest step's rows (for tracing)
        self.adapters: dict[str, int] = {}  # served LoRA adapters: name -> index in the stack

    def load_adapters(self, adapters: dict[str, dict[str, torch.Tensor]],
                      scalings: dict[str, float]) -> None:
        """Serve several LoRA adapters of this base model at once (S-LoRA, arXiv:2311.03285).

        ``adapters[name]`` is an adapter state dict (``llmlab.peft.adapter_state_dict`` of a LoRA
        model, chapter 05), ``scalings[name]`` its alpha / r. The model's linear layers become
        ``MultiLoRALinear`` stacks; a request names its adapter (``add_request(adapter=name)``)
        and each row of a batch then adds its own low-rank term. Call once, before any request.
        """
        from llmlab.peft import apply_multi_lora

        if self.adapters or self.requests:
            raise ValueError("load_adapters once, before the first request")
        if not adapters or set(adapters) != set(scalings):
            raise ValueError(f"need one scaling per adapter, got adapters {sorted(adapters)} and "
                             f"scalings {sorted(scalings)}")
        names = sorted(adapters)
        apply_multi_lora(self.model, [adapters[n] for n in names], [scalings[n] for n in names])
        self.adapters = {n: i for i, n in enumerate(names)}

    # ----------------------------------------------------------------- requests
    def add_request(self, prompt: str | list[int], params: SamplingParams | None = None,
                    request_id: str | None = None, adapter: str | None = None) -> str:
        """Queue a request (text or token ids), optionally on a loaded LoRA ``adapter``.

        Raises ValueError on bad parameters, length or an unknown adapter.
        """
        if adapter is not None and adapter not in self.adapters:
            raise ValueError(f"unknown adapter {adapter!r}; loaded: {sorted(self.adapters)}",
                             "model")
        params = (params or SamplingParams()).validate(self.model.config.vocab_size)
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ValueError("the prompt is empty", "prompt")
        if len(ids) >= self.max_model_len:
            raise PromptTooLongError(f"the prompt has {len(ids)} tokens; this model's context is "
                                     f"{self.max_model_len} tokens", "prompt")
        total = min(len(ids) + params.max_new_tokens, self.max_model_len)
        if blocks_for(total, self.config.block_size) > self.config.num_blocks:
            raise PromptTooLongError(f"{total} tokens need more KV blocks than the pool's "
                                     f"{self.config.num_blocks}", "max_new_tokens")
        request_id = request_id or f"req-{next(self._ids)}"
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use", "request_id")
        generator = make_generator(params)  # on the CPU: the same draws on any device
        constraint = None
        if params.regex is not None:
            from llmlab.serve.structured import RegexConstraint, TokenAutomaton
            try:
                automaton = TokenAutomaton.build(params.regex, self.tokenizer, self.eos_id)
            except ValueError as exc:
                raise ValueError(str(exc.args[0]), "regex") from None
            constraint = RegexConstraint(automaton)
        salt = None if adapter is None else f"lora:{adapter}".encode()  # its blocks are its own
        req = Request(request_id, Sequence(request_id, ids, params.max_new_tokens, salt=salt),
                      params, IncrementalDetokenizer(self.tokenizer), StopChecker(params.stop),
                      generator, constraint, arrival=time.perf_counter())
        if adapter is not None:
            req.adapter = self.adapters[adapter]
        self.requests[request_id] = req
        self.scheduler.add(req.seq)
        return request_id

    def abort(self, request_id: str) -> None:
        """Drop a request (a client went away): its KV blocks return to the pool now."""
        req = self.requests.pop(request_id, None)
        if req is not None:
            self.scheduler.finish(req.seq)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    # ----------------------------------------------------------------- one step
    @torch.no_grad()
    def step(self) -> list[RequestOutput]:
        """Schedule, run the model over every scheduled row, sample, detokenize."""
        batch = self.scheduler.schedule()
        self.last_batch = batch
        if not batch:
            return []
        self.num_steps += 1
        # Decode rows (1 token) and prefill chunks run as two forwards: padding every decode row
        # to a chunk's width would multiply the work (a packed "varlen" kernel avoids both).
        last: dict = {}
        for group in ([r for r in batch.rows if r[1] == 1], [r for r in batch.rows if r[1] > 1]):
            if group:
                logits = self._forward(group)  # (rows, vocab) at each row's last new token
                for row, (seq, _) in enumerate(group):
                    last[seq.seq_id] = logits[row]
        outputs = []
        for seq, n in batch.rows:
            seq.num_computed += n
            if seq.num_uncomputed == 0:  # the whole sequence is in the cache: sample its next
                outputs.append(self._append(self.requests[seq.seq_id], last[seq.seq_id]))
        return outputs

    def _forward(self, rows: list[tuple[Sequence, int]]) -> torch.Tensor:
        """One model forward over ``rows`` (right-padded); logits (rows, vocab) at each last token."""
        chunks = [s.tokens[s.num_computed:s.num_computed + n] for s, n in rows]
        ctx = self.cache.prepare([s.seq_id for s, _ in rows], tokens=chunks, device=self.device,
                                 last_logits=True)
        width = max(map(len, chunks))
        x = torch.tensor([c + [0] * (width - len(c)) for c in chunks], device=self.device)
        if not self.adapters:
            logits = self.model(x, ctx)
        else:
            from llmlab.peft import adapter_ids

            ids = torch.tensor([self.requests[s.seq_id].adapter for s, _ in rows],
                               device=self.device)
            with adapter_ids(self.model, ids):  # row b adds adapter ids[b]'s low-rank term
                logits = self.model(x, ctx)
        self.cache.commit(ctx)
        return logits

    def _append(self, req: Request, logits: torch.Tensor) -> RequestOutput:
        p, seq = req.params, req.seq
        processed = process_logits(logits, p, seq.prompt, seq.output)
        if req.constraint is not None:
            processed = processed.masked_fill(~req.constraint.mask(processed.shape[-1]),
                                              float("-inf"))
        token = int(next_token(processed, p, req.generator))
        if req.constraint is not None:
            req.constraint.advance(token)
        seq.output.append(token)
        now = time.perf_counter()
        req.first_token_time = req.first_token_time or now
        logprobs = []
        if p.logprobs is not None:
            logprobs = [(token, *top_logprobs(logits, token, p.logprobs))]
            req.logprobs += logprobs
        reason, delta, hit = None, "", False
        eos = self.eos_id if p.eos_token_id is None else p.eos_token_id
        if (token == eos and not p.ignore_eos) or token in p.stop_token_ids:
            reason = "stop"
        else:
            delta, hit = req.stop.push(req.detok.push(token))
            if hit:
                reason = "stop"
            elif len(seq.output) >= p.max_new_tokens or len(seq.tokens) >= self.max_model_len:
                reason = "length"
        if reason is not None:
            if not hit:  # the held-back text was no stop string after all
                tail, hit = req.stop.push(req.detok.flush())
                delta += tail + ("" if hit else req.stop.flush())
            req.finish_reason, req.finish_time = reason, now
            self.scheduler.finish(seq)
            self.requests.pop(req.request_id)
        req.text += delta
        return RequestOutput(req.request_id, [token], delta, reason is not None, reason, logprobs,
                             None if reason is None else req.latency())

    # ----------------------------------------------------------------- offline use
    def generate(self, prompts: Iterable[str | list[int]], params: SamplingParams | None = None,
                 ) -> list[Request]:
        """Run prompts to completion (continuous batching); the finished requests, in order."""
        ids = [self.add_request(p, params) for p in prompts]
        reqs = {i: self.requests[i] for i in ids}
        while self.has_unfinished():
            self.step()
        return [reqs[i] for i in ids]

    # ----------------------------------------------------------------- accounting
    def stats(self) -> dict[str, int]:
        """Queue length, running sequences and KV blocks in use (for /metrics)."""
        return {"waiting": len(self.scheduler.waiting), "running": len(self.scheduler.running),
                "kv_blocks_used": self.cache.used_blocks(), "kv_blocks_total": self.cache.num_blocks}

