"""The chapters' catalogues of plausible wrong answers (``llmlab_book.chNN_topic.CATALOGUE``).

Every exercise of a catalogued chapter has at least two; each one, written into a learner's
notebook in place of the answer, loses the exercise's hidden points under the real grader
(reference run, sandboxed judges), and its words appear in the grader's feedback and in the
output of the notebook's own check (see ``llmlab_book/verify.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from llmlab.grading.assemble import read_notebook
from llmlab_book import ch00_intro
from llmlab_book.catalogue import Catalogue, Mistake, answer_source
from llmlab_book.verify import ROOT, catalogue_of, chapter_paths, coverage, dependents, table, verify_chapter

sys.path.insert(0, str(ROOT / "tools"))

import notebooks  # noqa: E402

CHAPTERS = [p.name for p in notebooks.chapters()]
CATALOGUED = [slug for slug in CHAPTERS if catalogue_of(slug) is not None]


def test_the_first_chapters_have_catalogues():
    assert {"00_intro", "01_tokenization"} <= set(CATALOGUED)


def test_a_mistake_is_written_as_a_learner_answer_cell():
    source = answer_source(ch00_intro.split_heads_d_h, "split_heads_")
    assert source.startswith("from einops.einops import rearrange\n")
    assert "def split_heads_(x, n_heads):" in source and "split_heads_d_h" not in source
    ns: dict = {}
    exec(source, ns)
    import torch
    x = torch.arange(8.0).reshape(1, 1, 8)
    assert torch.equal(ns["split_heads_"](x, 2), ch00_intro.split_heads_d_h(x, 2))
    # a name the chapter's notebook defines is left to the notebook, not imported
    assert "import" not in answer_source(ch00_intro.split_heads_d_h, "f", frozenset({"rearrange"}))


def test_a_catalogue_refuses_what_it_cannot_use():
    with pytest.raises(ValueError, match="share a label"):
        Catalogue({"x": [Mistake("a", len), Mistake("a", abs)]})
    with pytest.raises(ValueError, match="Mistake"):
        Catalogue({"x": ["not a mistake"]})
    catalogue = Catalogue({"x": [Mistake("a", len), Mistake("slow", abs, says="took over the limit")]})
    assert catalogue.mistakes("x") == {"a": len}  # only what an output can tell


def test_an_answer_that_reads_another_depends_on_it_through_every_link():
    """Chapter 01: the tokenizer capstone calls the learner's bpe_encode, which calls merge_pair;
    a wrong merge_pair may cost both, a wrong bpe_fast neither."""
    authored = read_notebook(str(chapter_paths("01_tokenization")[0]))
    assert {"bpe_encode", "tokenizer"} <= dependents(authored, {"merge_pair"})
    assert "tokenizer" in dependents(authored, {"bpe_encode"})
    assert dependents(authored, {"bpe_fast"}) == set()


@pytest.mark.parametrize("slug", CATALOGUED)
def test_every_exercise_has_two_catalogued_mistakes(slug):
    authored = read_notebook(str(chapter_paths(slug)[0]))
    assert coverage(catalogue_of(slug), authored) == []


@pytest.mark.parametrize("slug", CATALOGUED)
def test_every_mistake_loses_its_hidden_points_and_is_named_in_both_places(slug):
    """Each variant notebook is also a partial solution, graded exactly: the variants' exercises
    lose their hidden points and every untouched exercise keeps all of its points."""
    results = verify_chapter(slug)
    assert len(results) == sum(map(len, catalogue_of(slug).values()))
    assert not [r for r in results if r.problems()], table(results)
    named_in_both = [r for r in results if r.named_by_grader and r.named_in_notebook]
    assert len(named_in_both) >= 0.9 * len(results), table(results)  # hidden-only ones are rare


def test_the_book_never_imports_the_courseware():
    root = Path(ROOT / "llmlab")
    assert not [p for p in root.rglob("*.py") if "llmlab_book" in p.read_text()]
