"""A safe format for values crossing from a process that ran a learner's code to the grader.

``encode`` turns results (tensors, arrays, numbers, strings, bytes, lists, tuples, dicts, sets,
and dataclass instances, carried as :class:`Fields`) into JSON; ``decode`` rebuilds them from
JSON alone — no pickle, no code — so reading a record can never run anything. Anything else is
kept as its (truncated) ``repr``, which compares as text.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from typing import Any

import numpy as np
import torch

MAX_BYTES = 64 << 20  # one record's tensors together


class TooLarge(ValueError):
    """A result too large to send to the grader."""


class Opaque:
    """A value of a type the format does not carry, compared by its repr."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.text == self.text

    def __repr__(self) -> str:
        return self.text


class Fields(dict):
    """A dataclass instance as the format carries it: its class's name (``kind``) and its fields,
    compared field by field (:func:`llmlab.grading.compare.explain`)."""

    def __init__(self, kind: str, fields: dict[str, Any]) -> None:
        super().__init__(fields)
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Fields) and other.kind == self.kind and dict.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{self.kind}({', '.join(f'{k}={v!r}' for k, v in self.items())})"


def as_fields(value: Any) -> Any:
    """A dataclass instance as :class:`Fields` (its fields, not copied deeper); else ``value``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return Fields(type(value).__name__,
                      {f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return value


def encode(value: Any, budget: list[int] | None = None) -> Any:
    budget = budget if budget is not None else [MAX_BYTES]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else {"bigint": str(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, np.generic):
        return encode(value.item(), budget)
    if isinstance(value, torch.Tensor):
        t = torch.Tensor.detach(value).cpu().contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        if t.dtype == torch.bfloat16:
            t = t.float()
        return {"tensor": dtype, "shape": list(t.shape), "data": _bytes(t.numpy().tobytes(), budget),
                "as": str(t.dtype).removeprefix("torch.")}
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        if a.dtype == object:
            return {"repr": _repr(value)}
        return {"ndarray": a.dtype.str, "shape": list(a.shape), "data": _bytes(a.tobytes(), budget)}
    if isinstance(value, bytes):
        return {"bytes": _bytes(value, budget)}
    if isinstance(value, (list, tuple)):
        return {"list" if isinstance(value, list) else "tuple": [encode(v, budget) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"set": [encode(v, budget) for v in sorted(value, key=repr)]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = as_fields(value)
        return {"fields": fields.kind, "items": [[k, encode(v, budget)] for k, v in fields.items()]}
    if isinstance(value, dict):
        return {"dict": [[encode(k, budget), encode(v, budget)] for k, v in value.items()]}
    return {"repr": _repr(value)}


def _bytes(data: bytes, budget: list[int]) -> str:
    budget[0] -= len(data)
    if budget[0] < 0:
        raise TooLarge("the result is too large to grade (over 64 MB)")
    return base64.b64encode(data).decode("ascii")


def _repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text[:2000]


def decode(data: Any) -> Any:
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if not isinstance(data, dict) or len(data) == 0:
        raise ValueError("malformed record")
    if "tensor" in data:
        raw = bytearray(base64.b64decode(data["data"]))
        as_dtype = getattr(torch, str(data["as"]))
        shape = [int(s) for s in data["shape"]]
        t = torch.frombuffer(raw, dtype=as_dtype) if raw else torch.empty(0, dtype=as_dtype)
        t = t.reshape(shape)
        return t.to(getattr(torch, str(data["tensor"])))
    if "ndarray" in data:
        raw = base64.b64decode(data["data"])
        return np.frombuffer(raw, dtype=np.dtype(str(data["ndarray"]))).reshape(data["shape"]).copy()
    if "bytes" in data:
        return base64.b64decode(data["bytes"])
    if "bigint" in data:
        return int(data["bigint"])
    if "float" in data:
        return float(data["float"])
    if "list" in data:
        return [decode(v) for v in data["list"]]
    if "tuple" in data:
        return tuple(decode(v) for v in data["tuple"])
    if "set" in data:
        items = [decode(v) for v in data["set"]]
        try:
            return set(items)
        except TypeError:
            return items
    if "dict" in data:
        out = {}
        for k, v in data["dict"]:
            k = decode(k)
            out[k if _hashable(k) else repr(k)] = decode(v)
        return out
    if "fields" in data:
        return Fields(str(data["fields"]), {str(k): decode(v) for k, v in data["items"]})
    if "repr" in data:
        return Opaque(str(data["repr"]))
    raise ValueError("malformed record")


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def dumps(record: dict[str, Any]) -> bytes:
    return ("\n" + json.dumps(record, separators=(",", ":")) + "\n").encode()
