"""Compare a learner's result with the expected one and explain the first difference in words.

``explain(got, expected)`` returns ``None`` when they match (within tolerance) and otherwise a
message a learner can act on: where the difference is (``output[1]['loss']``), what was expected
and what came back, and a diagnosis for the common mistakes (transposed result, missing
``keepdim``, a constant factor such as a forgotten ``1/sqrt(d)``, NaNs from an unstable ``exp``,
masked entries that differ). A diagnosis is printed only when it is true of the output: "times a
constant r" only when the result *is* the expected one times r within the check's tolerance (and
r is not 1), an overflow only when the expected result has no infinities of its own.

``known_mistake`` names a wrong variant (interleaved instead of half RoPE, an off-by-one mask, ...)
when the learner's result is exactly what that variant computes; ``mistake_text`` is the sentence
that names it, the same in a notebook's check and in the grader's feedback.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from llmlab.grading.record import Fields, as_fields

MAX_REPR = 160


def short(value: Any) -> str:
    """A one-line repr, truncated, for messages."""
    if isinstance(value, torch.Tensor):
        if value.numel() <= 8:
            text = f"tensor({value.detach().cpu().tolist()}, dtype={value.dtype})"
        else:
            text = f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    else:
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= MAX_REPR else text[: MAX_REPR - 3] + "..."


def explain(got: Any, expected: Any, atol: float = 1e-5, rtol: float = 1e-4,
            path: str = "the result") -> str | None:
    """None if ``got`` matches ``expected``; otherwise what differs, in words."""
    got, expected = as_fields(got), as_fields(expected)
    if isinstance(expected, Fields):
        if not isinstance(got, Fields) or got.kind != expected.kind:
            return f"{path}: expected a {expected.kind}, got {short(got)}."
        for key, value in expected.items():
            msg = explain(got.get(key), value, atol, rtol, f"{path}.{key}")
            if msg:
                return msg
        return None
    if isinstance(expected, np.ndarray):
        expected = torch.from_numpy(expected)
        if isinstance(got, np.ndarray):
            got = torch.from_numpy(got)
    if isinstance(expected, torch.Tensor):
        return _explain_tensor(got, expected, atol, rtol, path)
    if isinstance(expected, bool) or expected is None or isinstance(expected, (str, bytes)):
        if got == expected and type(got) is type(expected):
            return None
        return f"{path}: expected {short(expected)}, got {short(got)}."
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return _explain_number(got, expected, atol, rtol, path)
    if isinstance(expected, dict):
        return _explain_dict(got, expected, atol, rtol, path)
    if isinstance(expected, (list, tuple)):
        return _explain_sequence(got, expected, atol, rtol, path)
    if got == expected:
        return None
    return f"{path}: expected {short(expected)}, got {short(got)}."


def _explain_number(got: Any, expected: float, atol: float, rtol: float, path: str) -> str | None:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, np.generic):
        got = got.item()
    if not isinstance(got, (int, float)) or isinstance(got, bool):
        return f"{path}: expected a number like {short(expected)}, got {short(got)}."
    if isinstance(expected, int) and not isinstance(got, int) and not float(got).is_integer():
        return f"{path}: expected the whole number {expected}, got {got}."
    if math.isnan(got) and not math.isnan(expected):
        return f"{path}: expected {expected:.6g}, got NaN (an overflow, a log of 0, or 0/0?)."
    if math.isinf(got) and math.isfinite(expected):
        return f"{path}: expected {expected:.6g}, got {got} (an overflow, or a division by 0?)."
    if math.isclose(got, expected, rel_tol=rtol, abs_tol=atol) or got == expected:
        return None
    msg = f"{path}: expected {expected:.6g}, got {got:.6g}"
    if expected != 0 and got != 0 and math.isfinite(expected) and f"{got / expected:.4g}" != "1":
        msg += f" (ratio got/expected = {got / expected:.4g})"
    return msg + "."


def _explain_dict(got: Any, expected: dict, atol: float, rtol: float, path: str) -> str | None:
    if not isinstance(got, dict):
        return f"{path}: expected a dict, got {type(got).__name__} {short(got)}."
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys {short(missing)}")
        if extra:
            parts.append(f"unexpected keys {short(extra)}")
        return f"{path}: {' and '.join(parts)}."
    for key, value in expected.items():
        msg = explain(got[key], value, atol, rtol, f"{path}[{key!r}]")
        if msg:
            return msg
    return None


def _explain_sequence(got: Any, expected: list | tuple, atol: float, rtol: float,
                      path: str) -> str | None:
    if isinstance(got, torch.Tensor) or not isinstance(got, (list, tuple)):
        return f"{path}: expected a {type(expected).__name__}, got {type(got).__name__} {short(got)}."
    if len(got) != len(expected):
        return (f"{path}: expected {len(expected)} items, got {len(got)} "
                f"(expected {short(expected)}, got {short(got)}).")
    for i, (g, e) in enumerate(zip(got, expected)):
        msg = explain(g, e, atol, rtol, f"{path}[{i}]")
        if msg:
            return msg
    return None


def _explain_tensor(got: Any, expected: torch.Tensor, atol: float, rtol: float,
                    path: str) -> str | None:
    if isinstance(got, np.ndarray):
        return f"{path}: expected a torch.Tensor, got a NumPy array (use torch operations)."
    if not isinstance(got, torch.Tensor):
        return f"{path}: expected a tensor of shape {tuple(expected.shape)}, got {short(got)}."
    if got.shape != expected.shape:
        return f"{path}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}." + \
            _shape_diagnosis(tuple(got.shape), tuple(expected.shape))
    if _kind(got) != _kind(expected) or (got.is_floating_point() and got.dtype != expected.dtype):
        return f"{path}: expected dtype {expected.dtype}, got {got.dtype}."
    g, e = got.detach().cpu(), expected.detach().cpu()
    if not g.is_floating_point() and not g.is_complex():
        if torch.equal(g, e):
            return None
        idx = _first_index(g != e)
        return (f"{path}: {int((g != e).sum())} of {g.numel()} entries differ; first at index "
                f"{idx}: expected {e[idx].item()}, got {g[idx].item()}.")
    bad_g, bad_e = ~torch.isfinite(g), ~torch.isfinite(e)
    if bad_g.any() or bad_e.any():
        msg = _explain_nonfinite(g, e, bad_g, bad_e, path)
        if msg:
            return msg
    g64, e64 = g.double(), e.double()
    close = torch.isclose(g64, e64, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return None
    diff = (g64 - e64).abs()
    idx = _first_index(~close)
    msg = (f"{path}: {int((~close).sum())} of {g.numel()} values differ (max abs diff "
           f"{diff[~close].max().item():.3g}, tolerance atol={atol:g}, rtol={rtol:g}); first at "
           f"index {idx}: expected {e64[idx].item():.6g}, got {g64[idx].item():.6g}.")
    return msg + _value_diagnosis(g64, e64, atol, rtol)


def _explain_nonfinite(g: torch.Tensor, e: torch.Tensor, bad_g: torch.Tensor, bad_e: torch.Tensor,
                       path: str) -> str | None:
    """What differs among the NaN/inf entries; None when they agree (same places, same values).

    An expected result with infinities of its own uses them as a mask (``-inf`` logits a filter
    removed, a causal mask): there a difference is a mask that differs, never an overflow."""
    nan_g = torch.isnan(g)
    same = (bad_g == bad_e) & (nan_g == torch.isnan(e))
    same &= torch.where(bad_g & ~nan_g, g == e, torch.ones_like(same))
    if same.all():
        return None
    n = g.numel()
    if not bad_e.any():
        wrong = bad_g
        idx = _first_index(wrong)
        kinds = " or ".join(k for k, m in (("NaN", nan_g), ("inf", bad_g & ~nan_g)) if m.any())
        why = ("0/0, inf - inf, or an exp that overflows before a division?" if not (bad_g & ~nan_g).any()
               else "an exp that overflows (subtract the max first?), a log of 0, or a division by 0?")
        return (f"{path}: {int(wrong.sum())} of {n} entries are {kinds} where finite values were "
                f"expected (first at index {idx}): {why}")
    parts = []
    masked_extra = bad_g & ~bad_e & ~nan_g
    masked_missing = bad_e & ~bad_g
    nan_extra = nan_g & ~torch.isnan(e)
    other = ~same & ~masked_extra & ~masked_missing & ~nan_extra
    for mask, words in ((masked_extra, "are ±inf (masked) where finite values were expected"),
                        (masked_missing, "are finite where ±inf (masked) was expected"),
                        (nan_extra, "are NaN"),
                        (other, "are ±inf with the other sign")):
        if mask.any():
            parts.append(f"{int(mask.sum())} {words} (first at index {_first_index(mask)})")
    return (f"{path}: the masked (±inf) entries differ from the expected ones: "
            + "; ".join(parts) + ".")


def _kind(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return "bool"
    if t.is_floating_point():
        return "float"
    if t.is_complex():
        return "complex"
    return "int"


def _first_index(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in mask.nonzero()[0]) if mask.dim() else ()


def _shape_diagnosis(got: tuple[int, ...], expected: tuple[int, ...]) -> str:
    if sorted(got) == sorted(expected):
        return " Same sizes in another order: a transpose or permute missing (or one too many)?"
    if len(got) == len(expected) - 1 and any(
        expected[:i] + expected[i + 1:] == got for i in range(len(expected))
    ):
        return " One dimension is missing: a reduction without keepdim=True?"
    if len(got) == len(expected) + 1 and 1 in got:
        return " One extra dimension of size 1: squeeze it, or reduce with keepdim=False?"
    if math.prod(got) == math.prod(expected):
        return " Same number of elements: a reshape/view to the wrong shape?"
    return ""


def _value_diagnosis(g: torch.Tensor, e: torch.Tensor, atol: float, rtol: float) -> str:
    """A sentence about how ``g`` relates to ``e``, printed only when it is true: within the
    check's tolerance, ``g`` *is* ``e`` transposed, negated, scaled or shifted."""
    def equal(a: torch.Tensor) -> bool:
        return torch.allclose(a, e, rtol=rtol, atol=atol)

    if g.dim() >= 2 and g.shape[-1] == g.shape[-2] and equal(g.transpose(-1, -2)):
        return " Your result is the expected one transposed (last two dimensions)."
    if equal(-g):
        return " Your result has the opposite sign."
    finite = torch.isfinite(e)
    nonzero = finite & (e.abs() > max(atol, 1e-12))
    if int(nonzero.sum()) >= 2:
        r = (g[nonzero] / e[nonzero]).median().item()
        if math.isfinite(r) and f"{r:.4g}" not in ("1", "0", "-0") and equal(g / r):
            return (f" Your result is the expected one times a constant {r:.4g}: a missing "
                    "or extra scale factor (1/sqrt(d)? a mean vs a sum?)")
    if int(finite.sum()) >= 2:
        c = (g - e)[finite].median().item()
        if math.isfinite(c) and f"{c:.4g}" not in ("0", "-0") and equal(g - c):
            return f" Your result is the expected one shifted by a constant {c:.4g}."
    return ""


def mistake_text(label: str) -> str:
    """The sentence that names a known mistake: the same in a notebook's check and in the
    grader's feedback."""
    return f" Your result is exactly what this known mistake gives: {label}."


def match_mistake(got: Any, outputs: Mapping[str, Any], atol: float = 1e-5,
                  rtol: float = 1e-4) -> str:
    """``mistake_text`` of the first mistake whose output (``outputs``: label -> what that wrong
    variant returns on the same inputs) equals ``got``; "" when none does."""
    for label, value in outputs.items():
        if explain(got, value, atol, rtol) is None:
            return mistake_text(label)
    return ""


def mistake_outputs(mistakes: Mapping[str, Callable[..., Any]], args: tuple,
                    kwargs: dict) -> dict[str, Any]:
    """What each wrong variant returns on fresh copies of ``args``/``kwargs`` (a variant that
    raises is left out)."""
    out = {}
    for label, wrong in mistakes.items():
        try:
            out[label] = wrong(*copy.deepcopy(args), **copy.deepcopy(kwargs))
        except Exception:  # a variant that cannot run on this case names nothing
            continue
    return out


def known_mistake(got: Any, mistakes: Mapping[str, Callable[..., Any]], args: tuple, kwargs: dict,
                  atol: float = 1e-5, rtol: float = 1e-4) -> str:
    """``mistake_text`` of the first wrong variant whose output on the same inputs matches
    ``got``; "" when none does (or a variant itself fails)."""
    return match_mistake(got, mistake_outputs(mistakes, args, kwargs), atol, rtol)
