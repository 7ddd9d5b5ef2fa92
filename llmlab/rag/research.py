"""Deep research, small: plan -> retrieve -> read -> write, every claim citing a chunk id.

The loop of OpenAI's and Google's "deep research" agents and of STORM (Shao et al., "Assisting
in Writing Wikipedia-like Articles From Scratch with Large Language Models", arXiv:2402.14207),
cut to its skeleton so each stage can be measured:

- **plan**: split a question into sub-questions (here at ``;``: the questions are built that
  way; a large model writes the plan itself);
- **retrieve**: the best chunks for each sub-question from any retriever;
- **read**: from those chunks, the sentence that best answers the sub-question (BM25 between
  the sub-question and each candidate sentence: a docstring line or a comment);
- **write**: one line per sub-question, the sentence and ``[chunk id]``.

The writer here is extractive — the book's 1.6 M-parameter model cannot write prose — so every
sentence is in the chunk it cites. What is measured is **citation precision** (ALCE: Gao et al.,
"Enabling Large Language Models to Generate Text with Citations", arXiv:2305.14627): the share of
citations that point to a chunk that answers the sub-question; it falls with the retriever's
precision. Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from llmlab.rag.bm25 import BM25, words
from llmlab.rag.chunking import Chunk

Retriever = Callable[[str, int], list[Chunk]]


@dataclass
class Report:
    """The plan, and per sub-question the sentence written and the chunk id it cites."""

    question: str
    plan: list[str]
    claims: list[tuple[str, str, str]] = field(default_factory=list)  # (sub-question, sentence, id)

    @property
    def text(self) -> str:
        return "\n".join(f"- {s} [{cid}]" for _, s, cid in self.claims)


def plan(question: str) -> list[str]:
    """Sub-questions of ``question`` (split at ``;``, blanks dropped)."""
    parts = [p.strip() for p in question.split(";") if p.strip()]
    if not parts:
        raise ValueError("an empty question has no plan")
    return parts


def sentences(chunk: Chunk) -> list[str]:
    """Candidate sentences of a code chunk: its comment and docstring lines, stripped."""
    out = []
    for line in chunk.text.split("\n"):
        stripped = line.strip().strip("#").strip().strip("\"'").strip()
        if len(stripped.split()) >= 4 and not stripped.startswith(("def ", "class ", "return ")):
            out.append(stripped)
    return out


def read(sub_question: str, chunks: Sequence[Chunk]) -> tuple[str, str] | None:
    """The (sentence, chunk id) that best answers ``sub_question`` (BM25 over sentences)."""
    candidates = [(s, c.id) for c in chunks for s in sentences(c)]
    if not candidates:
        return None
    index = BM25([words(s) for s, _ in candidates])
    (best, _), = index.search(words(sub_question), 1)
    return candidates[best]


def deep_research(question: str, retrieve: Retriever, k: int = 3) -> Report:
    """Plan, retrieve ``k`` chunks per sub-question, read, and write a cited report."""
    report = Report(question, plan(question))
    for sub in report.plan:
        found = read(sub, retrieve(sub, k))
        if found is not None:
            report.claims.append((sub, *found))
    return report


def citation_precision(reports: Sequence[Report], relevant: Sequence[Sequence[set[str]]]) -> float:
    """Share of citations whose chunk id is in the relevant set of its sub-question;
    ``relevant[r][i]``: chunk ids that answer sub-question i of report r."""
    hits = total = 0
    for report, rel in zip(reports, relevant):
        if len(rel) != len(report.plan):
            raise ValueError(f"{len(report.plan)} sub-questions but {len(rel)} relevant sets")
        by_sub = {sub: cid for sub, _, cid in report.claims}
        for i, sub in enumerate(report.plan):
            if sub in by_sub:
                total += 1
                hits += by_sub[sub] in rel[i]
    if total == 0:
        raise ValueError("no citations to score")
    return hits / total


__all__ = ["Report", "Retriever", "citation_precision", "deep_research", "plan", "read",
           "sentences"]
