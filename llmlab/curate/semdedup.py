"""Semantic deduplication: drop documents whose *meaning* another document already covers.

Abbas et al., "SemDeDup: Data-efficient learning at web-scale through semantic deduplication",
arXiv:2303.09540. Exact and MinHash dedup see shared strings; a reworded copy shares none and
passes both. SemDeDup embeds every document, clusters the embeddings with k-means (so only
documents in the same cluster are compared: n²/k pairs instead of n²), and inside each cluster
drops a document whose cosine similarity to one kept before it exceeds 1 - ε. Documents are
visited from the farthest from their centroid to the nearest, so of a group of duplicates the
most atypical one is kept (the paper's choice).

The paper embeds with a pretrained encoder (OPT-125M's last layer). Running the book's model
forward over a whole crawl costs too much for a chapter on two cores, so :func:`sif_embeddings`
uses its token embeddings in the smooth-inverse-frequency average of Arora et al. ("A Simple but
Tough-to-Beat Baseline for Sentence Embeddings", ICLR 2017): each token weighted by
a / (a + p(token)), the corpus' common direction removed. Taught in chapter 10
(solutions/10_data).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def sif_embeddings(token_ids: Sequence[Sequence[int]], table: torch.Tensor,
                   a: float = 1e-3) -> torch.Tensor:
    """(n, d) unit vectors: per document, the a/(a + p(t))-weighted mean of its tokens' rows of
    ``table`` (vocab, d), with the first principal component of all documents removed; p(t)
    is the token's frequency in ``token_ids``. An empty document gives a zero vector."""
    table = table.detach().float()
    counts = torch.zeros(table.shape[0])
    for ids in token_ids:
        counts.index_add_(0, torch.as_tensor(list(ids), dtype=torch.long),
                          torch.ones(len(ids)))
    weight = a / (a + counts / counts.sum().clamp_min(1))
    emb = torch.zeros(len(token_ids), table.shape[1])
    for i, ids in enumerate(token_ids):
        if len(ids):
            ids = torch.as_tensor(list(ids), dtype=torch.long)
            emb[i] = (weight[ids, None] * table[ids]).mean(0)
    if len(token_ids) > 1:
        u = torch.linalg.svd(emb - 0, full_matrices=False).Vh[0]  # the common direction
        emb = emb - (emb @ u)[:, None] * u
    return torch.nn.functional.normalize(emb, dim=-1)


def kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Spherical k-means on unit vectors x: (n, d) -> (labels (n,), centroids (k, d)).
    k-means++ seeding from ``seed``; cosine similarity as the affinity."""
    if not 1 <= k <= len(x):
        raise ValueError(f"need 1 <= k <= n = {len(x)}, got k = {k}")
    gen = torch.Generator().manual_seed(seed)
    centroids = [x[torch.randint(len(x), (1,), generator=gen)].squeeze(0)]
    for _ in range(1, k):
        dist = (1 - x @ torch.stack(centroids).T).clamp_min(0).min(1).values
        p = dist / dist.sum() if dist.sum() > 0 else torch.full((len(x),), 1 / len(x))
        centroids.append(x[torch.multinomial(p, 1, generator=gen)].squeeze(0))
    c = torch.stack(centroids)
    for _ in range(iters):
        labels = (x @ c.T).argmax(1)
        new = torch.zeros_like(c).index_add_(0, labels, x)
        empty = new.norm(dim=1) == 0
        new[empty] = c[empty]  # an empty cluster keeps its centroid
        c = torch.nn.functional.normalize(new, dim=-1)
    return (x @ c.T).argmax(1), c


def semdedup(emb: torch.Tensor, labels: torch.Tensor, centroids: torch.Tensor,
             eps: float) -> list[bool]:
    """For each document, whether SemDeDup keeps it: within its cluster, visited from the
    farthest from the centroid to the nearest, a document is dropped when its cosine
    similarity to an earlier-visited one exceeds 1 - eps. emb: (n, d) unit rows."""
    keep = [True] * len(emb)
    for c in range(len(centroids)):
        members = (labels == c).nonzero().flatten()
        if len(members) < 2:
            continue
        to_centroid = emb[members] @ centroids[c]
        order = members[torch.argsort(to_centroid, stable=True)]  # least similar first
        sims = emb[order] @ emb[order].T
        earlier_max = torch.triu(sims, diagonal=1).max(0).values  # best match among earlier
        for i, drop in zip(order.tolist(), (earlier_max > 1 - eps).tolist()):
            keep[i] = not drop
    return keep
