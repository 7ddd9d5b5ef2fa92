"""Grading: instant-feedback checks for exercises, and the notebook autograder.

Taught in chapter 00 (solutions/00_intro). The checks are what a chapter's visible and hidden test
cells call; :func:`llmlab.grading.autograde.grade_notebook` grades a whole learner notebook with
the grader: scores are decided in a process that never ran the learner's code (see the README's
threat model).
"""

from llmlab.grading.checks import Case, check_function, check_module, check_prediction, check_value, expect
from llmlab.grading.compare import explain, known_mistake, mistake_text
from llmlab.grading.cumulative import prefer_yours
from llmlab.grading.guard import ReferenceBlocked, blocked

__all__ = [
    "Case",
    "ReferenceBlocked",
    "blocked",
    "check_function",
    "check_module",
    "check_prediction",
    "check_value",
    "expect",
    "explain",
    "known_mistake",
    "mistake_text",
    "prefer_yours",
]
