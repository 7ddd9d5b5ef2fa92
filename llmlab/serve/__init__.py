"""Serving: streaming detokenization, continuous batching, speculative decoding, structured
output, and an OpenAI-compatible HTTP server.

Built on chapter 08's :class:`llmlab.kvcache.PagedKVCache`; every token is chosen by the one
decoding contract of :mod:`llmlab.model.sampling` (``SamplingParams`` and its pipeline,
re-exported here). Taught in chapter 09 (solutions/09_serve).
"""

from llmlab.model.sampling import (
    SamplingParams,
    apply_penalties,
    filter_logits,
    next_token,
    process_logits,
    top_logprobs,
)
from llmlab.serve.detokenize import IncrementalDetokenizer, StopChecker, stop_holdback
from llmlab.serve.disagg import HandoverStats, disaggregated_generate, prefill_worker
from llmlab.serve.engine import EngineConfig, LLMEngine, PromptTooLongError, Request, RequestOutput
from llmlab.serve.loadgen import LoadReport, load_test, percentiles, run_load
from llmlab.serve.metrics import Histogram, ServerMetrics
from llmlab.serve.openai_api import ApiError, parse_sampling, sse_event
from llmlab.serve.scheduler import ScheduledBatch, Scheduler, SchedulerConfig, Sequence, Status
from llmlab.serve.simulate import simulate
from llmlab.serve.speculative import (
    ModelDrafter,
    NgramDrafter,
    SpecStats,
    accept_draft,
    early_exit_model,
    greedy_verify,
    rejection_sample,
    speculative_generate,
)
from llmlab.serve.structured import DFA, RegexConstraint, TokenAutomaton, regex_to_dfa, token_mask

__all__ = [
    "ApiError",
    "DFA",
    "EngineConfig",
    "HandoverStats",
    "Histogram",
    "IncrementalDetokenizer",
    "LLMEngine",
    "LoadReport",
    "ModelDrafter",
    "NgramDrafter",
    "PromptTooLongError",
    "RegexConstraint",
    "Request",
    "RequestOutput",
    "SamplingParams",
    "ScheduledBatch",
    "Scheduler",
    "SchedulerConfig",
    "Sequence",
    "ServerMetrics",
    "SpecStats",
    "Status",
    "StopChecker",
    "TokenAutomaton",
    "accept_draft",
    "apply_penalties",
    "disaggregated_generate",
    "early_exit_model",
    "filter_logits",
    "greedy_verify",
    "load_test",
    "next_token",
    "parse_sampling",
    "percentiles",
    "prefill_worker",
    "process_logits",
    "regex_to_dfa",
    "rejection_sample",
    "run_load",
    "simulate",
    "speculative_generate",
    "sse_event",
    "stop_holdback",
    "token_mask",
    "top_logprobs",
]
