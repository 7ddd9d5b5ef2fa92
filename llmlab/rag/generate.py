"""The one place chapter 12 asks a model for text: greedy completions through chapter 09's engine.

``complete(model, tokenizer, prompts, ...)`` runs every prompt through :class:`llmlab.serve.
LLMEngine` (continuous batching over the paged, prefix-cached KV cache) and returns the texts.
With a :class:`llmlab.serve.TokenAutomaton` the output is constrained to its regular language;
the automaton is built once by the caller and shared by every request (its masks are computed
lazily and cached, so the second request reuses the first one's work), where the engine's
``SamplingParams(regex=...)`` would compile the pattern again for each request.
Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from llmlab.serve import EngineConfig, LLMEngine, RegexConstraint, SamplingParams, TokenAutomaton


def complete(model: nn.Module, tokenizer, prompts: Sequence[str | list[int]], max_tokens: int = 48,
             stop: Sequence[str] = ("\n",), automaton: TokenAutomaton | None = None,
             config: EngineConfig | None = None) -> list[str]:
    """Greedy completions of ``prompts`` (text or token ids), in order; each ends at EOS, a stop
    string (not included), ``max_tokens``, or — when constrained — the end of the language."""
    engine = LLMEngine(model, tokenizer, config or EngineConfig(num_blocks=512))
    params = SamplingParams(max_new_tokens=max_tokens, temperature=0.0,
                            stop=[] if automaton is not None else list(stop))
    ids = []
    for p in prompts:
        rid = engine.add_request(p, params)
        if automaton is not None:
            engine.requests[rid].constraint = RegexConstraint(automaton)
        ids.append(rid)
    reqs = {i: engine.requests[i] for i in ids}
    while engine.has_unfinished():
        engine.step()
    return [reqs[i].text for i in ids]


def cached_prompt_tokens(model: nn.Module, tokenizer, prompts: Sequence[str | list[int]],
                         block_size: int = 16) -> list[int]:
    """Run ``prompts`` one after another through one engine with prefix caching; per prompt,
    how many of its tokens were found in the cache (whole blocks of a shared prefix only)."""
    engine = LLMEngine(model, tokenizer, EngineConfig(num_blocks=512, block_size=block_size))
    cached = []
    for p in prompts:
        rid = engine.add_request(p, SamplingParams(max_new_tokens=1, temperature=0.0))
        seq = engine.requests[rid].seq
        while engine.has_unfinished():
            engine.step()
        cached.append(seq.num_cached)
    return cached


__all__ = ["cached_prompt_tokens", "complete"]
