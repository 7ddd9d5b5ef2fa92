"""`make test` hands a worker a whole chapter at a time (tests/conftest.py)."""

from __future__ import annotations

from tests.conftest import chapter_of


def test_a_chapter_notebook_and_its_chapter_tests_are_one_unit():
    assert chapter_of("solutions/06_align/06_align.ipynb::Cell 3") == "06_align"
    assert chapter_of("tests/platform/test_notebooks.py::test_solution_grades_full_marks[06_align]") \
        == "06_align"
    assert chapter_of("tests/platform/test_catalogue.py::test_every_mistake_loses[01_tokenization]") \
        == "01_tokenization"


def test_other_tests_are_not_a_chapters():
    assert chapter_of("tests/model/test_gpt.py::test_config[gpt2]") is None
    assert chapter_of("tests/platform/test_notebooks.py::test_release_is_up_to_date") is None
    assert chapter_of("solutions/99_nothing/99_nothing.ipynb::Cell 0") is None
