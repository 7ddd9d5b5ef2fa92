"""JSON Schema to a regular expression, so chapter 09's token automaton constrains tool calls.

Outlines' construction (Willard & Louf, "Efficient Guided Generation for Large Language Models",
arXiv:2307.09702, section 4): a JSON Schema without recursion describes a regular language once
the layout is fixed, so it compiles to a regex, the regex to a byte DFA, and the DFA to
per-state token masks (:class:`llmlab.serve.TokenAutomaton`). The layout is compact — no
whitespace, ``,`` and ``:`` as separators, properties in the schema's order — exactly the
language of xgrammar's ``Grammar.from_json_schema(schema, any_whitespace=False,
separators=(",", ":"), strict_mode=True)``, and the tests check the token masks are equal.

Supported: ``type`` (string, integer, number, boolean, null, array, object, or a list of
them), ``enum``, ``const``, ``anyOf``/``oneOf`` (as a union), ``properties`` + ``required``
(optional properties may be left out; no other property may appear), ``items``,
``minItems``/``maxItems``, ``minLength``/``maxLength``. Anything else (``pattern``,
``minimum``, ``$ref``, ``additionalProperties: true``, ...) raises ``ValueError`` naming the
keyword, rather than accepting outputs the schema forbids. Strings are any valid UTF-8 except
``"``, ``\\`` and control characters, or a JSON escape. One deliberate difference: for a string
with ``minLength``/``maxLength``, xgrammar drops escapes and lets raw control characters other
than CR and LF through (which is not valid JSON); here a bounded string has the same characters
as any other, an escape counting as one. Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

# One JSON string character: printable ASCII but '"' and '\', a valid UTF-8 multi-byte
# sequence (RFC 3629, table 3-7 of the Unicode standard), or an escape.
_UTF8_MULTI = ("[\\xc2-\\xdf][\\x80-\\xbf]|\\xe0[\\xa0-\\xbf][\\x80-\\xbf]"
               "|[\\xe1-\\xec\\xee\\xef][\\x80-\\xbf]{2}|\\xed[\\x80-\\x9f][\\x80-\\xbf]"
               "|\\xf0[\\x90-\\xbf][\\x80-\\xbf]{2}|[\\xf1-\\xf3][\\x80-\\xbf]{3}"
               "|\\xf4[\\x80-\\x8f][\\x80-\\xbf]{2}")
STRING_CHAR = f'(?:[ !#-\\[\\]-\\x7f]|{_UTF8_MULTI}|\\\\(?:["\\\\/bfnrt]|u[0-9a-fA-F]{{4}}))'
INTEGER = "(?:0|-?[1-9][0-9]*)"  # xgrammar (and JSON Schema "integer") writes no "-0"
NUMBER = "-?(?:0|[1-9][0-9]*)" + "(?:\\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
PRIMITIVES = {"integer": INTEGER, "number": NUMBER, "boolean": "(?:true|false)", "null": "null"}
_KNOWN = {"type", "enum", "const", "anyOf", "oneOf", "properties", "required", "items",
          "minItems", "maxItems", "minLength", "maxLength", "additionalProperties",
          "title", "description", "default", "examples", "$schema"}


def literal(value: Any) -> str:
    """The regex that matches exactly the compact JSON text of ``value``."""
    return re.escape(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def _repeat(m: int, n: int | None) -> str:
    if n is None:
        return f"{{{m},}}"
    if n < m:
        raise ValueError(f"max ({n}) < min ({m})")
    return f"{{{m},{n}}}"


def _object(schema: Mapping[str, Any]) -> str:
    if schema.get("additionalProperties", False) not in (False,) and "properties" in schema:
        raise ValueError("additionalProperties must be false (or absent): the layout lists "
                         "only the schema's properties")
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    unknown = required - set(props)
    if unknown:
        raise ValueError(f"required names properties the schema does not define: {sorted(unknown)}")
    names = list(props)

    def rest(i: int, comma: bool) -> str:
        """Properties i.. of the object, each optional one either present or skipped."""
        if i == len(names):
            return ""
        item = ("," if comma else "") + literal(names[i]) + ":" + schema_to_regex(props[names[i]])
        present = item + rest(i + 1, True)
        if names[i] in required:
            return present
        return f"(?:{present}|{rest(i + 1, comma)})"

    return "\\{" + rest(0, False) + "\\}"


def schema_to_regex(schema: Mapping[str, Any]) -> str:
    """The regex of the compact JSON texts ``schema`` accepts (see the module doc)."""
    if not isinstance(schema, Mapping):
        raise ValueError(f"a JSON schema must be an object, got {type(schema).__name__}")
    extra = set(schema) - _KNOWN
    if extra:
        raise ValueError(f"unsupported JSON Schema keyword(s): {sorted(extra)}")
    if "const" in schema:
        return literal(schema["const"])
    if "enum" in schema:
        if not schema["enum"]:
            raise ValueError("enum must list at least one value")
        return "(?:" + "|".join(literal(v) for v in schema["enum"]) + ")"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return "(?:" + "|".join(schema_to_regex(s) for s in schema[key]) + ")"
    kind = schema.get("type")
    if isinstance(kind, list):
        return "(?:" + "|".join(schema_to_regex({**schema, "type": k}) for k in kind) + ")"
    if kind in PRIMITIVES:
        return PRIMITIVES[kind]
    if kind == "string":
        lo, hi = schema.get("minLength", 0), schema.get("maxLength")
        return '"' + STRING_CHAR + ("*" if (lo, hi) == (0, None) else _repeat(lo, hi)) + '"'
    if kind == "array":
        item = schema_to_regex(schema.get("items", {"type": ["string", "number", "boolean", "null"]}))
        lo, hi = schema.get("minItems", 0), schema.get("maxItems")
        if hi == 0:
            return "\\[\\]"
        more = _repeat(max(lo - 1, 0), None if hi is None else hi - 1)
        body = f"{item}(?:,{item}){more}"
        return "\\[" + (body if lo >= 1 else f"(?:{body})?") + "\\]"
    if kind == "object":
        return _object(schema)
    raise ValueError(f"schema needs a type, enum, const or anyOf; got {dict(schema)}")


def validate(value: Any, schema: Mapping[str, Any], where: str = "the value") -> str | None:
    """None when ``value`` (parsed JSON) satisfies ``schema`` (the supported subset), else why
    not. Checks content, not layout: a call a model wrote without constraints passes when its
    values are right, however it was spaced or its keys ordered."""
    if "const" in schema:
        return None if value == schema["const"] else f"{where} must be {schema['const']!r}"
    if "enum" in schema:
        return None if value in schema["enum"] else f"{where} must be one of {schema['enum']!r}"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            fails = [validate(value, s, where) for s in schema[key]]
            return None if None in fails else f"{where} matches none of {key}: {fails[0]}"
    kind = schema.get("type")
    if isinstance(kind, list):
        fails = [validate(value, {**schema, "type": k}, where) for k in kind]
        return None if None in fails else f"{where} is none of the types {kind}"
    python_types = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
                    "null": type(None), "array": list, "object": dict}
    if kind not in python_types:
        raise ValueError(f"schema needs a type, enum, const or anyOf; got {dict(schema)}")
    if not isinstance(value, python_types[kind]) or \
            (kind in ("integer", "number") and isinstance(value, bool)):
        return f"{where} must be of type {kind}, got {type(value).__name__}"
    if kind == "string" and not schema.get("minLength", 0) <= len(value) <= \
            schema.get("maxLength", len(value)):
        return f"{where} has length {len(value)}, outside the schema's bounds"
    if kind == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            return f"{where} has {len(value)} items, outside the schema's bounds"
        for i, item in enumerate(value):
            msg = validate(item, schema.get("items", {}), f"{where}[{i}]") if "items" in schema else None
            if msg:
                return msg
    if kind == "object":
        props = schema.get("properties", {})
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            return f"{where} lacks the required {missing}"
        extra = [k for k in value if k not in props]
        if extra:
            return f"{where} has properties the schema does not allow: {extra}"
        for k, v in value.items():
            msg = validate(v, props[k], f"{where}.{k}")
            if msg:
                return msg
    return None


__all__ = ["INTEGER", "NUMBER", "STRING_CHAR", "literal", "schema_to_regex", "validate"]
