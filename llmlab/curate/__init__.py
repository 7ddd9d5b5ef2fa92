"""Data curation: from a raw web crawl to a training mixture.

The book's offline crawl (real text rendered as web pages with every label known), HTML to text,
language identification, personal-data masking, the Gopher, C4 and FineWeb rules, a fastText
quality classifier, exact, MinHash-LSH and semantic deduplication, domain mixing, synthetic data
filtered by execution, a streaming and resumable pipeline (also as datatrove steps), and the
tiny-model ablations that show what each choice does. One file per stage, named after its paper
or system. Taught in chapter 10 (solutions/10_data).
"""

from llmlab.curate.ablation import (
    AblationConfig,
    Comparison,
    compare,
    mixture_sweep,
    mixture_tokens,
    to_bytes,
    train_bytes,
    window_losses,
)
from llmlab.curate.c4 import C4Config, c4_filter
from llmlab.curate.canaries import (
    Canary,
    canary_loss,
    count_occurrences,
    inject,
    make_canaries,
    memorization,
    memorization_vs_duplicates,
    suffix_accuracy,
)
from llmlab.curate.crawl import crawl_manifest, load_crawl
from llmlab.curate.document import Doc, read_docs, write_docs
from llmlab.curate.exact_dedup import (
    DocDedup,
    LineDedup,
    dedup_docs,
    dedup_file,
    dedup_lines,
    dedup_stream,
    normalize,
)
from llmlab.curate.extract import ExtractConfig, decode_html, html_to_text
from llmlab.curate.fasttext import (
    FastTextClassifier,
    FastTextConfig,
    hash_bucket,
    ngram_features,
    train_fasttext,
)
from llmlab.curate.fineweb import FineWebConfig, fineweb_filter
from llmlab.curate.gopher import (
    GopherQualityConfig,
    GopherRepetitionConfig,
    gopher_quality,
    gopher_repetition,
)
from llmlab.curate.langid import LANGID, detect, train_langid
from llmlab.curate.metrics import PRF, micro, prf, set_prf, word_prf
from llmlab.curate.minhash import (
    MinHashConfig,
    candidate_probability,
    estimate_jaccard,
    jaccard,
    jaccard_pairs,
    lsh_candidates,
    lsh_params,
    minhash_signature,
    near_dedup,
    permutations,
    shingles,
)
from llmlab.curate.mixture import mixture_plan, sample_mixture, temperature_weights
from llmlab.curate.pii import find_pii, mask_pii
from llmlab.curate.pipeline import Stage, run, run_sharded
from llmlab.curate.quality import QUALITY, quality_scores, train_quality
from llmlab.curate.semdedup import kmeans, semdedup, sif_embeddings
from llmlab.curate.stages import CurateTools, curate, curate_stages
from llmlab.curate.synthetic import STATEMENTS, TASKS, Task, synthesize, verify
from llmlab.curate.text import split_sentences, split_words

__all__ = [
    "LANGID", "QUALITY", "STATEMENTS", "TASKS",
    "PRF", "AblationConfig", "C4Config", "Canary", "Comparison", "CurateTools", "Doc",
    "DocDedup", "ExtractConfig",
    "FastTextClassifier", "FastTextConfig", "FineWebConfig", "GopherQualityConfig",
    "GopherRepetitionConfig", "LineDedup", "MinHashConfig", "Stage", "Task",
    "c4_filter", "canary_loss", "candidate_probability", "compare", "count_occurrences",
    "crawl_manifest", "curate", "curate_stages",
    "decode_html", "dedup_docs", "dedup_file", "dedup_lines", "dedup_stream", "detect",
    "estimate_jaccard", "find_pii", "fineweb_filter", "gopher_quality", "gopher_repetition",
    "hash_bucket", "html_to_text", "inject", "jaccard", "jaccard_pairs", "kmeans",
    "load_crawl", "lsh_candidates", "lsh_params", "make_canaries", "mask_pii", "memorization",
    "memorization_vs_duplicates", "micro", "mixture_sweep", "mixture_tokens",
    "minhash_signature", "mixture_plan", "near_dedup", "ngram_features", "normalize",
    "permutations", "prf", "quality_scores", "read_docs", "run", "run_sharded",
    "sample_mixture", "semdedup", "set_prf", "shingles", "sif_embeddings", "split_sentences",
    "split_words", "suffix_accuracy", "synthesize", "temperature_weights", "to_bytes", "train_bytes",
    "train_fasttext", "train_langid", "train_quality", "verify", "window_losses", "word_prf",
    "write_docs",
]
