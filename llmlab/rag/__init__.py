"""Retrieval-augmented generation: chunking, lexical and dense retrieval, approximate indexes,
fusion, reranking, metrics, RAG measured, KV reuse of retrieved chunks, and deep research.

One file per stage or method: ``corpus`` ((docstring, code) pairs), ``chunking`` (fixed and by
structure), ``bm25`` (equal to bm25s and rank-bm25), ``dense`` (a bi-encoder and InfoNCE),
``flat`` (exact search), ``ivf`` and ``hnsw`` (approximate, checked against faiss), ``fusion``
(RRF), ``rerank`` (query likelihood), ``hybrid`` (BM25 + HNSW, fused and reranked),
``metrics`` (recall@k, MRR, nDCG), ``augment`` (completion with retrieved context),
``generate`` (completions and prefix-cache reuse through chapter 09's engine), ``cacheblend``
(reusing non-prefix chunks' KV), ``research`` (plan, retrieve, read, write with citations).
Taught in chapter 12 (solutions/12_rag_agents).
"""

from llmlab.rag.augment import (
    CompletionTask,
    completion_tasks,
    exact_first_line,
    rag_prompt,
    target_loss,
)
from llmlab.rag.bm25 import BM25, BM25Config, words
from llmlab.rag.cacheblend import BlendResult, ChunkKV, blend_forward, precompute_chunk
from llmlab.rag.chunking import Chunk, fixed_chunks, fixed_spans, structure_chunks, structure_spans
from llmlab.rag.corpus import CodePair, code_pairs
from llmlab.rag.dense import (
    BiEncoder,
    BiEncoderConfig,
    Embedder,
    batch_ids,
    encode,
    info_nce,
    pad_rows,
    train_biencoder,
)
from llmlab.rag.flat import exact_search, recall_at, top_k
from llmlab.rag.fusion import reciprocal_rank_fusion
from llmlab.rag.generate import cached_prompt_tokens, complete
from llmlab.rag.hnsw import HNSWConfig, HNSWIndex
from llmlab.rag.hybrid import RetrievalKit, hnsw_search, hybrid_retrieve
from llmlab.rag.ivf import IVFIndex, kmeans
from llmlab.rag.metrics import mrr, ndcg_at_k, recall_at_k
from llmlab.rag.rerank import query_likelihood, rerank
from llmlab.rag.research import Report, citation_precision, deep_research, plan, read, sentences

__all__ = [
    "BM25",
    "BM25Config",
    "BiEncoder",
    "BiEncoderConfig",
    "Embedder",
    "BlendResult",
    "Chunk",
    "ChunkKV",
    "CodePair",
    "CompletionTask",
    "HNSWConfig",
    "HNSWIndex",
    "IVFIndex",
    "Report",
    "RetrievalKit",
    "batch_ids",
    "blend_forward",
    "cached_prompt_tokens",
    "citation_precision",
    "code_pairs",
    "complete",
    "completion_tasks",
    "deep_research",
    "encode",
    "exact_first_line",
    "exact_search",
    "fixed_chunks",
    "fixed_spans",
    "hnsw_search",
    "hybrid_retrieve",
    "info_nce",
    "kmeans",
    "mrr",
    "ndcg_at_k",
    "pad_rows",
    "plan",
    "precompute_chunk",
    "query_likelihood",
    "rag_prompt",
    "read",
    "recall_at",
    "recall_at_k",
    "reciprocal_rank_fusion",
    "rerank",
    "sentences",
    "structure_chunks",
    "structure_spans",
    "target_loss",
    "top_k",
    "train_biencoder",
    "words",
]
