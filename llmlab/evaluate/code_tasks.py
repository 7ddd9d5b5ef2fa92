# ruff: noqa: E501  (a table of problems, one per line)
"""Small HumanEval-style programming problems for execution-based evaluation.

Each problem is a function signature and docstring that end where the body's ``return`` starts,
and ``assert`` tests that call it. They are deliberately easy — one-line bodies in the style of
the standard library — so that a 1.6 M-parameter model trained on Python solves some of them and
pass@k has something to measure; the format is HumanEval's (Chen et al., arXiv:2107.03374).
Each problem's ``solution`` passes its tests (checked by the test suite).
Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CodeProblem:
    """``prompt`` + a completion is a function ``entry_point``; ``tests`` assert on it."""

    name: str
    prompt: str
    tests: str
    solution: str


def _problem(name: str, signature: str, doc: str, solution: str, tests: list[str]) -> CodeProblem:
    prompt = f'def {name}{signature}:\n    """{doc}"""\n    return'
    return CodeProblem(name, prompt, "\n".join(f"assert {t}" for t in tests), solution)


PROBLEMS: tuple[CodeProblem, ...] = (
    _problem("add", "(a, b)", "Return the sum of a and b.", " a + b", ["add(2, 3) == 5", "add(-1, 1) == 0"]),
    _problem("subtract", "(a, b)", "Return a minus b.", " a - b", ["subtract(5, 3) == 2", "subtract(0, 4) == -4"]),
    _problem("multiply", "(a, b)", "Return the product of a and b.", " a * b", ["multiply(3, 4) == 12", "multiply(0, 9) == 0"]),
    _problem("square", "(x)", "Return x squared.", " x * x", ["square(3) == 9", "square(-2) == 4"]),
    _problem("negate", "(x)", "Return -x.", " -x", ["negate(3) == -3", "negate(-2) == 2"]),
    _problem("is_even", "(n)", "Return True if n is even.", " n % 2 == 0", ["is_even(4)", "not is_even(7)"]),
    _problem("is_positive", "(x)", "Return True if x is greater than zero.", " x > 0", ["is_positive(1)", "not is_positive(0)", "not is_positive(-3)"]),
    _problem("is_empty", "(items)", "Return True if items is empty.", " not items", ["is_empty([])", "not is_empty([1])"]),
    _problem("length", "(items)", "Return the number of items.", " len(items)", ["length([1, 2, 3]) == 3", "length('') == 0"]),
    _problem("first", "(items)", "Return the first item.", " items[0]", ["first([7, 8]) == 7", "first('ab') == 'a'"]),
    _problem("last", "(items)", "Return the last item.", " items[-1]", ["last([7, 8]) == 8", "last('ab') == 'b'"]),
    _problem("rest", "(items)", "Return all items but the first.", " items[1:]", ["rest([1, 2, 3]) == [2, 3]", "rest('abc') == 'bc'"]),
    _problem("reverse", "(items)", "Return the items in reverse order.", " items[::-1]", ["reverse([1, 2, 3]) == [3, 2, 1]", "reverse('ab') == 'ba'"]),
    _problem("maximum", "(items)", "Return the largest item.", " max(items)", ["maximum([3, 9, 2]) == 9", "maximum([-1]) == -1"]),
    _problem("minimum", "(items)", "Return the smallest item.", " min(items)", ["minimum([3, 9, 2]) == 2", "minimum([5]) == 5"]),
    _problem("total", "(items)", "Return the sum of the items.", " sum(items)", ["total([1, 2, 3]) == 6", "total([]) == 0"]),
    _problem("sort_items", "(items)", "Return the items sorted in increasing order.", " sorted(items)", ["sort_items([3, 1, 2]) == [1, 2, 3]"]),
    _problem("to_upper", "(s)", "Return s in upper case.", " s.upper()", ["to_upper('abc') == 'ABC'"]),
    _problem("to_lower", "(s)", "Return s in lower case.", " s.lower()", ["to_lower('AbC') == 'abc'"]),
    _problem("strip_spaces", "(s)", "Return s without leading and trailing whitespace.", " s.strip()", ["strip_spaces('  a b ') == 'a b'"]),
    _problem("split_words", "(s)", "Return the list of words of s.", " s.split()", ["split_words('a bc  d') == ['a', 'bc', 'd']"]),
    _problem("join_words", "(words)", "Return the words joined by single spaces.", " ' '.join(words)", ["join_words(['a', 'b']) == 'a b'"]),
    _problem("starts_with", "(s, prefix)", "Return True if s starts with prefix.", " s.startswith(prefix)", ["starts_with('hello', 'he')", "not starts_with('hello', 'lo')"]),
    _problem("ends_with", "(s, suffix)", "Return True if s ends with suffix.", " s.endswith(suffix)", ["ends_with('hello', 'lo')", "not ends_with('hello', 'he')"]),
    _problem("contains", "(items, x)", "Return True if x is in items.", " x in items", ["contains([1, 2], 2)", "not contains([1, 2], 3)"]),
    _problem("count_of", "(items, x)", "Return how many times x occurs in items.", " items.count(x)", ["count_of([1, 2, 1], 1) == 2", "count_of('aba', 'b') == 1"]),
    _problem("index_of", "(items, x)", "Return the index of x in items.", " items.index(x)", ["index_of([5, 6, 7], 7) == 2"]),
    _problem("get_name", "(obj)", "Return the name attribute of obj.", " obj.name", ["get_name(type('T', (), {'name': 'n'})) == 'n'"]),
    _problem("to_string", "(x)", "Return x converted to a string.", " str(x)", ["to_string(12) == '12'"]),
    _problem("to_int", "(s)", "Return s converted to an integer.", " int(s)", ["to_int('42') == 42"]),
    _problem("absolute", "(x)", "Return the absolute value of x.", " abs(x)", ["absolute(-3) == 3", "absolute(2) == 2"]),
    _problem("half", "(x)", "Return x divided by 2.", " x / 2", ["half(3) == 1.5"]),
    _problem("get_key", "(d, key)", "Return the value of key in d, or None.", " d.get(key)", ["get_key({'a': 1}, 'a') == 1", "get_key({}, 'a') is None"]),
    _problem("keys_of", "(d)", "Return the list of keys of d.", " list(d)", ["keys_of({'a': 1, 'b': 2}) == ['a', 'b']"]),
    _problem("unique", "(items)", "Return the set of distinct items.", " set(items)", ["unique([1, 1, 2]) == {1, 2}"]),
    _problem("pair", "(a, b)", "Return a tuple of a and b.", " (a, b)", ["pair(1, 2) == (1, 2)"]),
)

__all__ = ["PROBLEMS", "CodeProblem"]
