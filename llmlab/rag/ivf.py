"""IVF: an inverted-file index over k-means cells (``faiss.IndexIVFFlat``).

Jégou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search", TPAMI 2011
(arXiv-free; the IVF part is their coarse quantizer). Training runs k-means (Lloyd's algorithm,
k-means++ seeding: Arthur & Vassilvitskii 2007) on the vectors; each vector is stored in the
list of its nearest centroid. A query scores the ``nlist`` centroids, scans only the lists of
the ``nprobe`` best, and returns the best ``k`` of those candidates: about ``nprobe / nlist`` of
the work of an exact scan, and a true neighbour is missed when it sits in a cell the query did
not probe. ``nprobe = nlist`` is exact. Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmlab.rag.flat import as_matrix, top_k


def kmeans(x: np.ndarray, n_clusters: int, iters: int = 20, seed: int = 0) -> np.ndarray:
    """Centroids (n_clusters, d) of ``x`` (n, d) by inner product (spherical k-means: centroids
    re-normalised when the data are unit vectors), k-means++ seeded."""
    x = as_matrix(x)
    n = x.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"need 1 <= n_clusters <= {n} vectors, got {n_clusters}")
    rng = np.random.default_rng(seed)
    unit = bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-3))
    centroids = [x[rng.integers(n)]]
    dist = ((x - centroids[0]) ** 2).sum(1)
    for _ in range(1, n_clusters):  # k-means++: the next seed with probability ∝ distance²
        p = dist / dist.sum() if dist.sum() > 0 else np.full(n, 1.0 / n)
        centroids.append(x[rng.choice(n, p=p)])
        dist = np.minimum(dist, ((x - centroids[-1]) ** 2).sum(1))
    c = np.stack(centroids).astype(np.float32)
    for _ in range(iters):
        assign = (x @ c.T - 0.5 * (c * c).sum(1) * (not unit)).argmax(1)
        for j in range(n_clusters):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(0)
        if unit:
            c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    return c


@dataclass
class IVFIndex:
    """``IVFIndex.build(vectors, nlist)``, then ``search(queries, k, nprobe)``."""

    centroids: np.ndarray          # (nlist, d)
    lists: list[np.ndarray]        # per cell: indices of its vectors
    vectors: np.ndarray            # (n, d)

    @classmethod
    def build(cls, vectors, nlist: int, iters: int = 20, seed: int = 0) -> IVFIndex:
        xb = as_matrix(vectors)
        centroids = kmeans(xb, nlist, iters, seed)
        assign = (xb @ centroids.T).argmax(1)
        return cls(centroids, [np.flatnonzero(assign == j) for j in range(nlist)], xb)

    def search(self, queries, k: int, nprobe: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(scores (q, k), indices (q, k)); rows with fewer than k candidates are padded with
        score -inf and index -1 (as faiss does)."""
        xq = as_matrix(queries, "queries")
        if xq.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"index has d={self.vectors.shape[1]}, queries d={xq.shape[1]}")
        if not 1 <= nprobe <= len(self.lists) or k < 1:
            raise ValueError(f"need 1 <= nprobe <= {len(self.lists)} and k >= 1, got "
                             f"nprobe={nprobe}, k={k}")
        _, cells = top_k(xq @ self.centroids.T, nprobe)  # (q, nprobe)
        scores = np.full((len(xq), k), -np.inf, dtype=np.float32)
        ids = np.full((len(xq), k), -1, dtype=np.int64)
        for i, q in enumerate(xq):
            cand = np.concatenate([self.lists[c] for c in cells[i]])
            if len(cand) == 0:
                continue
            s, j = top_k((self.vectors[cand] @ q)[None], k)
            scores[i, :s.shape[1]], ids[i, :s.shape[1]] = s[0], cand[j[0]]
        return scores, ids

    def scanned_fraction(self, queries, nprobe: int) -> float:
        """Mean fraction of the vectors a query scans at ``nprobe``."""
        _, cells = top_k(as_matrix(queries, "queries") @ self.centroids.T, nprobe)
        sizes = np.array([len(lst) for lst in self.lists])
        return float(sizes[cells].sum(1).mean() / len(self.vectors))


__all__ = ["IVFIndex", "kmeans"]
