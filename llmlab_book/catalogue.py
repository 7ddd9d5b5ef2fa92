"""A chapter's catalogue of plausible wrong answers: one source for its checks and its tests.

Each exercise lists the mistakes learners really make (a transposed reshape, a mask off by one,
a sum for a mean), each written as the learner's answer cell would be: a function (or class)
with the answer's signature, that never calls what the exercise blocks::

    def softmax_without_max(x, dim=-1):
        e = x.exp()
        return e / e.sum(dim=dim, keepdim=True)

    CATALOGUE = Catalogue({
        "softmax": [Mistake("exponentiating without subtracting the max", softmax_without_max),
                    ...],
    })

The same entries serve twice:

- the chapter's check cells name them: ``check_function(..., mistakes=CATALOGUE.mistakes(
  "softmax"))`` adds "Your result is exactly what this known mistake gives: <label>." when the
  learner's result equals a variant's, in the notebook and in the grader's feedback alike;
- :mod:`llmlab_book.verify` writes each variant into a learner's notebook in place of the
  answer cell (:func:`answer_source`), grades the notebook with the real grader and runs the
  chapter's visible check on it; ``tests/platform/test_catalogue.py`` asserts that the variant
  loses the exercise's hidden points and that its words (:attr:`Mistake.words`) appear in the
  grader's feedback and in the check's output.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmlab.grading.reference_run import cell_names


@dataclass(frozen=True)
class Mistake:
    """One plausible wrong answer to an exercise.

    ``label``: the mistake in a learner's words ("a sum over positions instead of the mean"); the
    feedback names it. ``answer``: the answer cell's function or class as a learner would write
    it (any name; it is renamed to the exercise's). ``says``: for a mistake the output cannot
    tell (a missing ``ValueError``, a trainer too slow for the timed test), the words the
    feedback shows instead (the check's message); such a variant is not in ``mistakes=``.
    ``hidden``: only the hidden test catches it (the visible check passes it), so only the
    grader can name it.
    """

    label: str
    answer: Callable[..., Any]
    says: str = ""
    hidden: bool = False

    @property
    def words(self) -> str:
        """What the feedback about this mistake must contain."""
        return self.says or self.label


class Catalogue(Mapping[str, tuple[Mistake, ...]]):
    """Exercise id (the answer cell's ``solution="id"``) -> its mistakes."""

    def __init__(self, entries: Mapping[str, Sequence[Mistake]]) -> None:
        self._entries = {ex: tuple(ms) for ex, ms in entries.items()}
        for ex, ms in self._entries.items():
            for m in ms:
                if not isinstance(m, Mistake) or not callable(m.answer):
                    raise ValueError(f"exercise {ex!r}: expected Mistake(label, answer), got {m!r}")
            labels = [m.label for m in ms]
            if len(set(labels)) != len(labels):
                raise ValueError(f"exercise {ex!r}: two mistakes share a label: {labels}")

    def __getitem__(self, exercise: str) -> tuple[Mistake, ...]:
        return self._entries[exercise]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def mistakes(self, exercise: str) -> dict[str, Callable[..., Any]]:
        """``{label: variant}`` for ``check_function(..., mistakes=...)``: the mistakes an output
        can tell (not those with ``says``)."""
        return {m.label: m.answer for m in self[exercise] if not m.says}


def answer_source(answer: Callable[..., Any], name: str, provided: frozenset[str] = frozenset()) -> str:
    """The source of a learner's answer cell that defines ``answer`` as ``name``.

    The cell holds what ``answer`` needs: an import for each module or importable object it
    reads from its module's globals, the source of each helper defined beside it, and plain
    constants; names in ``provided`` (those the chapter's notebook defines, the learner's
    earlier answers) are left for the notebook to provide.
    """
    imports: list[str] = []
    parts: list[str] = []
    done: set[str] = set()
    module = inspect.getmodule(_kernel_function(answer))
    scope = vars(module) if module else {}

    def add(obj: Any, as_name: str) -> None:
        kernel = _kernel_function(obj) is not obj
        obj = _kernel_function(obj)
        node = ast.parse(textwrap.dedent(inspect.getsource(obj))).body[0]
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            raise TypeError(f"{obj!r} is not a function or class defined with def/class")
        # a Triton kernel's cell keeps what makes it a kernel
        node.decorator_list = [ast.parse("triton.jit", mode="eval").body] if kernel else []
        node.name = as_name
        names = cell_names(ast.unparse(node))
        for g in sorted((names[1] if names else set()) - {as_name}):
            if g in done or g in provided or g not in scope:
                continue
            done.add(g)
            value = scope[g]
            if isinstance(value, types.ModuleType):
                imports.append(f"import {value.__name__}" if value.__name__ == g
                               else f"import {value.__name__} as {g}")
            elif getattr(value, "__module__", None) == getattr(module, "__name__", None) and \
                    (inspect.isfunction(value) or inspect.isclass(value)):
                add(value, g)
            elif _importable(value):
                what = value.__qualname__
                imports.append(f"from {value.__module__} import {what}"
                               + ("" if what == g else f" as {g}"))
            elif isinstance(value, (bool, int, float, str, bytes, tuple, frozenset)):
                parts.append(f"{g} = {value!r}")
            else:
                raise TypeError(f"{as_name} reads {g} ({type(value).__name__}), which a learner's "
                                "cell cannot import or write out")
        parts.append(ast.unparse(node))

    add(answer, name)
    return "\n".join(sorted(set(imports))) + ("\n\n\n" if imports else "") + "\n\n\n".join(parts) + "\n"


def _kernel_function(obj: Any) -> Any:
    """The Python function a Triton kernel (``triton.jit(fn)``) wraps; any other object itself.

    A catalogue writes a kernel as ``name = triton.jit(_function)``: the two names let the
    kernel pickle by reference, and its answer cell is written with ``@triton.jit``."""
    fn = getattr(obj, "fn", None)
    return fn if inspect.isfunction(fn) and type(obj).__module__.startswith("triton.") else obj


def _importable(value: Any) -> bool:
    module, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if not module or not qualname or "<" in qualname or "." in qualname:
        return False
    try:
        return getattr(__import__(module, fromlist=[qualname]), qualname) is value
    except (ImportError, AttributeError):
        return False


__all__ = ["Catalogue", "Mistake", "answer_source"]
