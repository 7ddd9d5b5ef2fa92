"""Evaluation: what a number about a model means.

One file per concept: ``likelihood`` (log-likelihood requests, lm-evaluation-harness's
conventions), ``perplexity`` (rolling windows past the context, bits per byte, per domain),
``multiple_choice`` (acc, acc_norm, few-shot), ``tasks`` (the suite, built offline from the
book's corpus and shipped as a snapshot), ``generation`` (stop sequences, greedy and sampled),
``passk`` (HumanEval's unbiased estimator), ``execution`` (generated programs under limits),
``code_tasks`` (small HumanEval-style problems), ``contamination`` (n-gram overlap, Min-K%),
``membership`` (calibrated membership signals: zlib ratio, a reference model, Min-K%++),
``statistics`` (bootstrap intervals, paired tests, sample sizes), ``judges`` (pairwise judging and
its position bias), ``long_context`` (needle and copy tests) and ``leaderboard`` (the book's
models on one suite). ``llmlab eval`` runs a task from the command line (``cli``).
Taught in chapter 11 (solutions/11_eval).
"""

from llmlab.evaluate.code_tasks import PROBLEMS, CodeProblem
from llmlab.evaluate.contamination import (
    auroc,
    min_k_prob,
    ngram_index,
    ngrams,
    overlap,
    text_token_logprobs,
    words,
)
from llmlab.evaluate.execution import (
    DEFAULT_LIMITS,
    ExecutionResult,
    check_completion,
    run_program,
    run_programs,
)
from llmlab.evaluate.generation import CODE_STOPS, generate_until, truncate_at_stop
from llmlab.evaluate.judges import PositionBias, judge_margins, judge_prompt, position_bias
from llmlab.evaluate.leaderboard import (
    KVCompressedModel,
    Row,
    SuiteConfig,
    book_variants,
    evaluate_suite,
    leaderboard,
    markdown_table,
)
from llmlab.evaluate.likelihood import (
    Loglikelihood,
    Request,
    encode_pair,
    loglikelihood,
    prefix_token_id,
    score_tokens,
    token_logprobs,
)
from llmlab.evaluate.long_context import copy_logprobs, needle_item
from llmlab.evaluate.membership import (
    BigramReference,
    TokenStats,
    auroc_interval,
    fit_reference,
    membership_scores,
    min_k_plus_plus,
    reference_calibrated,
    reference_corpus,
    text_ids,
    text_token_stats,
    zlib_ratio,
)
from llmlab.evaluate.multiple_choice import (
    MCItem,
    MCResult,
    PromptFormat,
    evaluate_mc,
    fewshot_prefix,
    fewshot_spread,
    mc_decision,
    mc_requests,
    sample_shots,
)
from llmlab.evaluate.passk import estimate_pass_at_k, pass_at_k
from llmlab.evaluate.perplexity import (
    LikelihoodStats,
    corpus_likelihood,
    document_likelihood,
    domain_likelihood,
    rolling_windows,
)
from llmlab.evaluate.statistics import (
    Interval,
    bootstrap_ci,
    items_needed,
    mcnemar_exact,
    paired_bootstrap,
)
from llmlab.evaluate.tasks import load_suite, return_item_parts, return_items

__all__ = [
    "BigramReference", "TokenStats", "auroc_interval", "fit_reference", "membership_scores",
    "min_k_plus_plus", "reference_calibrated", "reference_corpus", "text_ids",
    "text_token_stats", "zlib_ratio",
    "CODE_STOPS", "DEFAULT_LIMITS", "PROBLEMS", "CodeProblem", "ExecutionResult", "Interval",
    "KVCompressedModel", "LikelihoodStats", "Loglikelihood", "MCItem", "MCResult", "PositionBias",
    "PromptFormat", "Request", "Row", "SuiteConfig", "auroc", "book_variants", "bootstrap_ci",
    "check_completion", "copy_logprobs", "corpus_likelihood", "document_likelihood",
    "domain_likelihood", "encode_pair", "estimate_pass_at_k", "evaluate_mc", "evaluate_suite",
    "fewshot_prefix", "fewshot_spread", "generate_until", "items_needed", "judge_margins",
    "judge_prompt", "leaderboard", "load_suite", "loglikelihood", "markdown_table", "mc_decision",
    "mc_requests", "mcnemar_exact", "min_k_prob", "needle_item", "ngram_index", "ngrams",
    "overlap", "paired_bootstrap", "pass_at_k", "position_bias", "prefix_token_id",
    "return_item_parts", "return_items", "rolling_windows", "run_program", "run_programs", "sample_shots",
    "score_tokens", "text_token_logprobs", "token_logprobs", "truncate_at_stop", "words",
]
