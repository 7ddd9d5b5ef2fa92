"""Known wrong variants of chapter 12's exercises (retrieval, RAG, tools), so its checks can name
the mistake they see. Each is one plausible slip in an otherwise right answer; they live here,
not in the chapter's check cells, so a visible check never shows a near-solution. Used by
chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import torch
import torch.nn.functional as F

from llmlab.rag import BM25, BM25Config, hnsw_search, words

# ------------------------------------------------------------------ 12.1 chunk spans


def spans_without_overlap(length, size, overlap=0):
    """Windows that step by ``size``: the overlap is ignored."""
    return [(a, min(a + size, length)) for a in range(0, length, size)]


def spans_with_a_tail_of_overlap(length, size, overlap=0):
    """Every start up to ``length``, so the last window may hold only what the previous one had."""
    return [(a, min(a + size, length)) for a in range(0, length, size - overlap)]


# ------------------------------------------------------------------ 12.2 predict: idf ratio


def idf_ratio_robertson():
    """Robertson's idf ln((N - n + 0.5) / (n + 0.5)) for both words (negative for ``self``)."""
    return math.log(998.5 / 2.5) / math.log(100.5 / 900.5)


def idf_ratio_plain():
    """The textbook ln(N / n), without BM25's 0.5 smoothing and 1 +."""
    return math.log(1000 / 2) / math.log(1000 / 900)


# ------------------------------------------------------------------ 12.3 BM25


def bm25_okapi_idf(corpus, query, k1=1.5, b=0.75):
    """Robertson's idf ln((N - n + 0.5) / (n + 0.5)) (negative for common terms), no floor."""
    bm = BM25(corpus, BM25Config(k1=k1, b=b))
    n = len(corpus)
    bm.idf = {t: math.log((n - len(ids) + 0.5) / (len(ids) + 0.5)) for t, (ids, _) in bm.postings.items()}
    return bm.scores(query)


def bm25_without_length_norm(corpus, query, k1=1.5, b=0.75):
    """Every document treated as average length (b ignored)."""
    return BM25(corpus, BM25Config(k1=k1, b=0.0)).scores(query)


# ------------------------------------------------------------------ 12.4 InfoNCE


def info_nce_without_temperature(q, d, temperature=0.05):
    """Raw cosine similarities as logits (the temperature forgotten)."""
    return F.cross_entropy(q @ d.T, torch.arange(len(q)))


def info_nce_without_positive_in_denominator(q, d, temperature=0.05):
    """The softmax over the negatives only (the diagonal left out of the sum)."""
    logits = q @ d.T / temperature
    eye = torch.eye(len(q), dtype=torch.bool)
    neg = logits.masked_fill(eye, float("-inf")).logsumexp(-1)
    return (neg - logits.diagonal()).mean()


def info_nce_symmetric(q, d, temperature=0.05):
    """CLIP's symmetric loss (both directions averaged) where the query-to-document one was asked."""
    logits = q @ d.T / temperature
    target = torch.arange(len(q))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


# ------------------------------------------------------------------ 12.5 metrics


def _metrics(ranked, relevant, k, recall, gain_rank, ideal):
    r = m = n = 0.0
    for ranking, rel in zip(ranked, relevant):
        r += recall(ranking[:k], rel, k)
        m += next((1.0 / (i + 1) for i, d in enumerate(ranking) if d in rel), 0.0)
        dcg = sum(1.0 / math.log2(gain_rank(i)) for i, d in enumerate(ranking[:k]) if d in rel)
        n += dcg / (sum(1.0 / math.log2(gain_rank(i)) for i in range(min(k, len(rel)))) if ideal else 1.0)
    q = len(relevant)
    return r / q, m / q, n / q


def metrics_precision_not_recall(ranked, relevant, k):
    """Hits divided by k (precision@k) where hits divided by the relevant count was asked."""
    return _metrics(ranked, relevant, k, lambda top, rel, k: len(set(top) & rel) / k,
                    lambda i: i + 2, True)


def metrics_unnormalised_dcg(ranked, relevant, k):
    """DCG without dividing by the ideal DCG."""
    return _metrics(ranked, relevant, k, lambda top, rel, k: len(set(top) & rel) / len(rel),
                    lambda i: i + 2, False)


# ------------------------------------------------------------------ 12.6 HNSW search_layer


def search_layer_greedy(index, q, entry, ef, layer):
    """A beam of one (greedy descent) whatever ``ef`` asks for."""
    return index.search_layer(q, entry, 1, layer)


def search_layer_without_early_stop(index, q, entry, ef, layer):
    """Expanding every reachable candidate instead of stopping when the best one left is worse
    than the worst of the ``ef`` results."""
    graph = index.layers[layer]
    visited = set(entry)
    sims = index.sims(q, entry)
    candidates = [(-float(s), n) for s, n in zip(sims, entry)]
    results = [(float(s), n) for s, n in zip(sims, entry)]
    heapq.heapify(candidates)
    heapq.heapify(results)
    while len(results) > ef:
        heapq.heappop(results)
    while candidates:
        _, c = heapq.heappop(candidates)
        fresh = [n for n in graph[c] if n not in visited]
        visited.update(fresh)
        if not fresh:
            continue
        for s, n in zip(index.sims(q, fresh).tolist(), fresh):
            if len(results) < ef or s > results[0][0]:
                heapq.heappush(candidates, (-s, n))
                heapq.heappush(results, (s, n))
                if len(results) > ef:
                    heapq.heappop(results)
    return sorted(results, key=lambda t: (-t[0], t[1]))


# ------------------------------------------------------------------ 12.7 RRF


def rrf_ranks_from_zero(rankings, k=60.0):
    """Ranks counted from 0, so a first place scores 1 / k."""
    scores: dict = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def rrf_without_k(rankings, k=60.0):
    """1 / rank, the constant k left out (the top ranks dominate)."""
    scores: dict = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / rank
    return sorted(scores.items(), key=lambda kv: -kv[1])


# ------------------------------------------------------------------ 12.8 hybrid retriever


def _hybrid(kit, query, k, depth, head):
    """The hybrid retriever with the first stages cut to ``head`` and the fused ``head``
    reranked (``head = depth`` is right), or no rerank at all (``head = 0``)."""
    cut = head or depth
    scores = np.asarray(kit.bm25(kit.corpus_words, words(query), 1.2, 0.75))
    lexical = [int(i) for i in np.lexsort((np.arange(len(scores)), -scores))[:cut] if scores[i] > 0]
    dense = hnsw_search(kit, kit.embed(query), cut)
    fused = [doc for doc, _ in kit.fuse([lexical, dense], 60.0)][:cut]
    if head:
        lm = [float(x) for x in kit.lm_score(query, [kit.texts[i] for i in fused])]
        fused = [fused[j] for j in sorted(range(len(fused)), key=lambda j: -lm[j])]
    return fused[:k]


def hybrid_without_rerank(kit, query, k=3, depth=10):
    """The fused order returned as it is: the reranker never consulted."""
    return _hybrid(kit, query, k, depth, 0)


def hybrid_reranking_only_k(kit, query, k=3, depth=10):
    """Only the top ``k`` of each stage fused and reranked, not the top ``depth``."""
    return _hybrid(kit, query, k, depth, k)


# ------------------------------------------------------------------ 12.9 predict: cached tokens


def cached_every_shared_token():
    """All 150 shared tokens: the prefix cache only shares whole blocks."""
    return 150


def cached_rounded_up_to_a_block():
    """150 rounded up to 160: a partial block is not named by a hash, so it is never shared."""
    return 160


# ------------------------------------------------------------------ 12.10 JSON Schema to regex


def integers_with_leading_zeros(schema):
    """Integers as any digits (``007``, ``-0`` accepted): JSON forbids leading zeros."""
    from llmlab.agent.json_schema import INTEGER, schema_to_regex

    return schema_to_regex(schema).replace(INTEGER, "-?[0-9]+")


def strings_with_raw_quotes(schema):
    """String contents as "anything but a newline": an unescaped quote ends nothing."""
    from llmlab.agent.json_schema import STRING_CHAR, schema_to_regex

    return schema_to_regex(schema).replace(STRING_CHAR, '[^\\n]')


# ------------------------------------------------------------------ 12.11 the agent loop


class ScriptedLines:
    """A stand-in for the model in the agent loop's checks: ``writer(transcripts)`` returns, for
    each transcript, the next of the lines scripted for its task (``(line, cut)`` pairs; a run
    past its script answers ``?``). It refuses more calls than the longest run of its first call
    has lines: a loop that writes one run at a time, not one batch per step, is caught."""

    def __init__(self, script: dict[str, list[tuple[str, bool]]]) -> None:
        self.script = script
        self.tasks: list[str] = []
        self.calls = 0

    def _length(self, task: str) -> int:
        """Lines a run of ``task`` writes before it ends (an answer or an unknown line)."""
        for k, (line, _) in enumerate(self.script.get(task, [])):
            if not line.startswith(("Thought:", "Call:")):
                return k + 1
        return len(self.script.get(task, [])) + 1

    def __call__(self, transcripts):
        tasks = [text.splitlines()[0].removeprefix("Task: ") for text in transcripts]
        if self.calls == 0:
            self.tasks = tasks
        self.calls += 1
        longest = max((self._length(t) for t in self.tasks), default=0)
        if self.calls > longest:
            raise ValueError(f"write_lines was called {self.calls} times, but no run writes more "
                             f"than {longest} lines: call it once per step, with every run still going")
        out = []
        for task, text in zip(tasks, transcripts):
            written = sum(1 for ln in text.splitlines()[1:] if not ln.startswith("Result:"))
            script = self.script.get(task, [])
            out.append(script[written] if written < len(script) else ("Answer: ?\n", False))
        return out


def _add(a: int, b: int) -> str:
    return str(a + b)


def _echo(text: str) -> str:
    return text


def _divide(a: int, b: int) -> str:
    return str(a // b)


def _tool(name, description, properties, fn):
    from llmlab.agent import Tool

    return Tool(name, description, {"type": "object", "properties": properties,
                                    "required": sorted(properties)}, fn)


def check_tools():
    """Three pure tools for the checks: ``add``, ``echo`` and ``divide`` (which can raise)."""
    integer = {"type": "integer"}
    return [_tool("add", "Add two integers.", {"a": integer, "b": integer}, _add),
            _tool("echo", "Repeat a text.", {"text": {"type": "string"}}, _echo),
            _tool("divide", "Integer division.", {"a": integer, "b": integer}, _divide)]


def agent_counting_cut_as_invalid(write_lines, tools, tasks, max_steps=6, max_observation=160):
    """A call cut at the token limit counted as an invalid call."""
    from llmlab.agent import run_agent

    runs = run_agent(write_lines, tools, tasks, max_steps, max_observation)
    for run in runs:
        run.invalid_calls, run.cut_calls = run.invalid_calls + run.cut_calls, 0
    return runs


def agent_stopping_on_a_bad_call(write_lines, tools, tasks, max_steps=6, max_observation=160):
    """A call that does not parse (or was cut) ends its run: no ``Result: error`` line to retry
    from. (Runs are independent, so each is the right run cut after its first bad call.)"""
    from llmlab.agent import ToolError, parse_call, run_agent

    runs = run_agent(write_lines, tools, tasks, max_steps, max_observation)
    for run in runs:
        lines = run.transcript.splitlines(keepends=True)
        calls = 0
        for k, line in enumerate(lines):
            if not line.startswith("Call:"):
                continue
            calls += 1
            try:
                parse_call(line[len("Call:"):].strip(), tools)
            except ToolError:
                first = run.errors[0]
                cut = first == "the call was cut before its end"
                run.transcript, run.answer, run.calls = "".join(lines[:k + 1]), None, calls
                run.errors, run.cut_calls, run.invalid_calls = [first], int(cut), int(not cut)
                break
    return runs


def agent_with_uncut_observations(write_lines, tools, tasks, max_steps=6, max_observation=160):
    """A tool's output shown whole, not cut to ``max_observation`` characters."""
    from llmlab.agent import run_agent

    return run_agent(write_lines, tools, tasks, max_steps, 10**9)
