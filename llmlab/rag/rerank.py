"""A reranker: reorder a retriever's top candidates by how likely the model finds the query
given each candidate.

Sachan et al., "Improving Passage Retrieval with Zero-Shot Question Generation" (UPR),
arXiv:2204.07496: score a passage by the language model's log-probability of the *question*
conditioned on the passage, ``log p(q | d)`` averaged over the question's tokens. Unlike the
bi-encoder, the model reads query and document together (a cross-encoder's view), so it is too
slow for the whole corpus and runs on the top few dozen of a first-stage retriever — the shape of
every production reranking stage (Cohere Rerank, bge-reranker, ColBERT's late interaction sits in
between). ``template`` places the document and the query; the default puts the query where
Python puts a function's description, in the docstring after its signature.
Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_TEMPLATE = '{doc}\n    """{query}'


@torch.no_grad()
def query_likelihood(model: nn.Module, tokenizer, query: str, docs: Sequence[str],
                     template: str = DEFAULT_TEMPLATE, max_doc_tokens: int = 160) -> torch.Tensor:
    """(len(docs),) mean log p(query tokens | the template's text before ``{query}``)."""
    if "{doc}" not in template or not template.endswith("{query}"):
        raise ValueError("template must contain {doc} and end with {query}")
    head, _, _ = template.partition("{query}")
    q = tokenizer.encode(query)
    if not q:
        raise ValueError("empty query")
    device = next(model.parameters()).device
    rows = []
    for d in docs:
        before, after = head.split("{doc}")
        ctx = tokenizer.encode(before) + tokenizer.encode(d)[:max_doc_tokens] + tokenizer.encode(after)
        rows.append((ctx + q)[-model.config.block_size:])
    width = max(map(len, rows))
    x = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        x[i, :len(r)] = torch.tensor(r)
    logp = F.log_softmax(model(x).float(), -1)  # (n, width, vocab)
    scores = torch.empty(len(rows))
    for i, r in enumerate(rows):
        pos = torch.arange(len(r) - len(q) - 1, len(r) - 1, device=device)
        scores[i] = logp[i, pos, torch.tensor(q, device=device)].mean()
    return scores


def rerank(model: nn.Module, tokenizer, query: str, candidates: Sequence[tuple[str, str]],
           template: str = DEFAULT_TEMPLATE) -> list[tuple[str, float]]:
    """[(id, score), ...] of (id, text) ``candidates``, best first (ties: input order)."""
    if not candidates:
        return []
    scores = query_likelihood(model, tokenizer, query, [t for _, t in candidates], template)
    order = sorted(range(len(candidates)), key=lambda i: -float(scores[i]))
    return [(candidates[i][0], float(scores[i])) for i in order]


__all__ = ["DEFAULT_TEMPLATE", "query_likelihood", "rerank"]
