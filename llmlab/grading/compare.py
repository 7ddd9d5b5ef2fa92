"""Compare a learner's result with the expected one and explain the first difference in words.

``explain(got, expected)`` returns ``None`` when they match (within tolerance) and otherwise a
message a learner can act on: where the difference is (``output[1]['loss']``), what was expected
and what came back, and a diagnosis for the common mistakes (transposed result, missing
``keepdim``, a constant factor such as a forgotten ``1/sqrt(d)``, NaNs from an unstable ``exp``).
``known_mistake`` names a wrong variant (interleaved instead of half RoPE, an off-by-one mask, ...)
when the learner's result is exactly what that variant computes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

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
    if math.isclose(got, expected, rel_tol=rtol, abs_tol=atol):
        return None
    msg = f"{path}: expected {expected:.6g}, got {got:.6g}"
    if expected != 0 and got != 0:
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
    if (bad_g & ~bad_e).any():
        idx = _first_index(bad_g & ~bad_e)
        return (f"{path}: {int((bad_g & ~bad_e).sum())} entries are NaN or inf where finite values "
                f"were expected (first at index {idx}). An exp that overflows (subtract the max "
                "first?), a log of 0, or a division by 0?")
    g64, e64 = g.double(), e.double()
    close = torch.isclose(g64, e64, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return None
    diff = (g64 - e64).abs().nan_to_num(0.0)
    idx = _first_index(~close)
    msg = (f"{path}: {int((~close).sum())} of {g.numel()} values differ (max abs diff "
           f"{diff.max().item():.3g}, tolerance atol={atol:g}, rtol={rtol:g}); first at index "
           f"{idx}: expected {e64[idx].item():.6g}, got {g64[idx].item():.6g}.")
    return msg + _value_diagnosis(g64, e64, atol, rtol)


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
    if g.dim() >= 2 and g.shape[-1] == g.shape[-2] and torch.allclose(
        g.transpose(-1, -2), e, rtol=rtol, atol=atol
    ):
        return " Your result is the expected one transposed (last two dimensions)."
    if torch.allclose(g, -e, rtol=rtol, atol=atol):
        return " Your result has the opposite sign."
    nonzero = e.abs() > 1e-8
    if nonzero.sum() >= 2:
        ratio = g[nonzero] / e[nonzero]
        r = ratio.median()
        if torch.allclose(ratio, r.expand_as(ratio), rtol=1e-3, atol=1e-6) and r.abs() > 1e-8:
            return (f" Your result is the expected one times a constant {r.item():.4g}: a missing "
                    "or extra scale factor (1/sqrt(d)? a mean vs a sum?)")
    shift = (g - e).flatten()
    if shift.numel() >= 2 and torch.allclose(shift, shift[:1].expand_as(shift), atol=atol * 10):
        return f" Your result is the expected one shifted by a constant {shift[0].item():.4g}."
    return ""


def known_mistake(got: Any, mistakes: Mapping[str, Callable[..., Any]], args: tuple, kwargs: dict,
                  atol: float = 1e-5, rtol: float = 1e-4) -> str:
    """" This is exactly what <label> gives." for the first wrong variant whose output on the
    same inputs matches ``got``; "" when none does (or a variant itself fails)."""
    for label, wrong in mistakes.items():
        try:
            if explain(got, wrong(*args, **kwargs), atol, rtol) is None:
                return f" Your result is exactly what {label} gives."
        except Exception:  # a variant that cannot run on this case names nothing
            continue
    return ""
