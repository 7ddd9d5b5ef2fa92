"""HNSW: a hierarchical navigable small-world graph for approximate nearest neighbours.

Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search using Hierarchical
Navigable Small World graphs", arXiv:1603.09320 — the index inside faiss (``IndexHNSWFlat``),
hnswlib, Lucene/Elasticsearch, pgvector, Qdrant and Weaviate. Each vector gets a level drawn
from a geometric distribution (``floor(-ln U · m_L)``, ``m_L = 1 / ln M``); it is linked to
``M`` neighbours on every layer up to its level (``2M`` on layer 0). A search descends greedily
through the sparse upper layers and then runs a best-first search with a beam of ``ef`` on the
dense bottom layer. The paper's names are kept: ``search_layer`` is Algorithm 2, the neighbour
heuristic Algorithm 4 (keep a candidate only if it is closer to the new vector than to every
neighbour already kept — this keeps long links between clusters), ``insert`` Algorithm 1.

Similarity is the inner product (the vectors are unit-normalised). ``distance_computations``
counts the vectors a search scored: the cost HNSW saves over an exact scan. Pure Python and
NumPy, one vector at a time: it shows the algorithm, not faiss's speed. Taught in chapter 12
(solutions/12_rag_agents).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from llmlab.rag.flat import as_matrix
from llmlab.utils import reject_unknown_keys


@reject_unknown_keys
@dataclass(frozen=True)
class HNSWConfig:
    """``M`` links per node per layer (``2M`` on layer 0), ``ef_construction`` the beam while
    inserting, ``seed`` for the levels."""

    M: int = 16
    ef_construction: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.M < 2 or self.ef_construction < 1:
            raise ValueError(f"need M >= 2 and ef_construction >= 1, got M={self.M}, "
                             f"ef_construction={self.ef_construction}")


class HNSWIndex:
    """``HNSWIndex.build(vectors, config)``, then ``search(queries, k, ef)``."""

    def __init__(self, vectors: np.ndarray, config: HNSWConfig) -> None:
        self.x = as_matrix(vectors)               # (n, d)
        self.config = config
        self.layers: list[dict[int, list[int]]] = []  # layers[l][node] -> neighbour ids
        self.entry, self.max_level = -1, -1
        self.distance_computations = 0
        self._rng = np.random.default_rng(config.seed)

    @classmethod
    def build(cls, vectors, config: HNSWConfig | None = None) -> HNSWIndex:
        index = cls(vectors, config or HNSWConfig())
        for i in range(len(index.x)):
            index.insert(i)
        return index

    def sims(self, q: np.ndarray, nodes: list[int]) -> np.ndarray:
        self.distance_computations += len(nodes)
        return self.x[nodes] @ q

    def search_layer(self, q: np.ndarray, entry: list[int], ef: int, layer: int) -> list[tuple[float, int]]:
        """Algorithm 2: best-first search from ``entry`` with a beam of ``ef``; (sim, node) best first."""
        graph = self.layers[layer]
        visited = set(entry)
        sims = self.sims(q, entry)
        candidates = [(-float(s), n) for s, n in zip(sims, entry)]  # max-heap by similarity
        results = [(float(s), n) for s, n in zip(sims, entry)]      # min-heap: worst on top
        heapq.heapify(candidates)
        heapq.heapify(results)
        while len(results) > ef:
            heapq.heappop(results)
        while candidates:
            neg, c = heapq.heappop(candidates)
            if -neg < results[0][0] and len(results) >= ef:
                break  # the closest candidate is worse than the worst result: done
            fresh = [n for n in graph[c] if n not in visited]
            visited.update(fresh)
            if not fresh:
                continue
            for s, n in zip(self.sims(q, fresh).tolist(), fresh):
                if len(results) < ef or s > results[0][0]:
                    heapq.heappush(candidates, (-s, n))
                    heapq.heappush(results, (s, n))
                    if len(results) > ef:
                        heapq.heappop(results)
        return sorted(results, key=lambda t: (-t[0], t[1]))

    def select_neighbors(self, candidates: list[tuple[float, int]], m: int) -> list[int]:
        """Algorithm 4 (the heuristic): from (sim to the base, node) best first, keep a node only
        when it is more similar to the base than to every node kept so far; at most ``m``."""
        kept: list[int] = []
        for s, e in candidates:
            if len(kept) >= m:
                break
            if not kept or float((self.x[kept] @ self.x[e]).max()) < s:
                kept.append(e)
        return kept

    def insert(self, i: int) -> None:
        """Algorithm 1: add vector ``i`` to the graph."""
        M, q = self.config.M, self.x[i]
        level = int(-math.log(1.0 - self._rng.random()) / math.log(M))
        while len(self.layers) <= level:
            self.layers.append({})
        for lc in range(level + 1):
            self.layers[lc][i] = []
        if self.entry < 0:
            self.entry, self.max_level = i, level
            return
        ep = [self.entry]
        for lc in range(self.max_level, level, -1):  # greedy descent through the upper layers
            ep = [self.search_layer(q, ep, 1, lc)[0][1]]
        for lc in range(min(level, self.max_level), -1, -1):
            found = self.search_layer(q, ep, self.config.ef_construction, lc)
            m_max = 2 * M if lc == 0 else M
            neighbours = self.select_neighbors(found, M)
            self.layers[lc][i] = neighbours
            for n in neighbours:  # link back; shrink an overfull list with the same heuristic
                links = self.layers[lc][n]
                links.append(i)
                if len(links) > m_max:
                    sims = self.sims(self.x[n], links)
                    ranked = sorted(zip(sims.tolist(), links), key=lambda t: (-t[0], t[1]))
                    self.layers[lc][n] = self.select_neighbors(ranked, m_max)
            ep = [n for _, n in found]
        if level > self.max_level:
            self.entry, self.max_level = i, level

    def search(self, queries, k: int, ef: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(scores (q, k), indices (q, k)) with a bottom-layer beam of ``max(ef, k)``."""
        xq = as_matrix(queries, "queries")
        if xq.shape[1] != self.x.shape[1]:
            raise ValueError(f"index has d={self.x.shape[1]}, queries d={xq.shape[1]}")
        if k < 1 or ef < 1:
            raise ValueError(f"need k >= 1 and ef >= 1, got k={k}, ef={ef}")
        scores = np.full((len(xq), k), -np.inf, dtype=np.float32)
        ids = np.full((len(xq), k), -1, dtype=np.int64)
        for r, q in enumerate(xq):
            ep = [self.entry]
            for lc in range(self.max_level, 0, -1):
                ep = [self.search_layer(q, ep, 1, lc)[0][1]]
            found = self.search_layer(q, ep, max(ef, k), 0)[:k]
            scores[r, :len(found)] = [s for s, _ in found]
            ids[r, :len(found)] = [n for _, n in found]
        return scores, ids


__all__ = ["HNSWConfig", "HNSWIndex"]
