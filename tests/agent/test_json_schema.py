"""JSON Schema -> regex -> token automaton: the language is right, and the token masks equal
xgrammar's JSON-schema masks on the same schemas and vocabulary."""

from __future__ import annotations

import json
import random

import pytest
import torch

from llmlab.agent import literal, schema_to_regex, validate
from llmlab.serve import RegexConstraint, TokenAutomaton, regex_to_dfa

CALL = {"anyOf": [
    {"type": "object", "properties": {"name": {"const": "search"}, "arguments": {
        "type": "object", "properties": {"query": {"type": "string"}, "k": {"type": "integer"}},
        "required": ["query"]}}, "required": ["name", "arguments"]},
    {"type": "object", "properties": {"name": {"const": "run_python"}, "arguments": {
        "type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}},
     "required": ["name", "arguments"]}]}
MIXED = {"type": "object", "properties": {
    "name": {"type": "string"}, "n": {"type": "integer"}, "x": {"type": "number"},
    "ok": {"type": "boolean"}, "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    "unit": {"enum": ["c", "f"]}, "v": {"type": ["integer", "null"]}}, "required": ["name", "n", "v"]}


def accepts(schema, text: str) -> bool:
    return regex_to_dfa(schema_to_regex(schema)).fullmatch(text.encode("utf-8"))


@pytest.mark.parametrize("text,ok", [
    ('{"name":"search","arguments":{"query":"open a file"}}', True),
    ('{"name":"search","arguments":{"query":"x","k":3}}', True),
    ('{"name":"run_python","arguments":{"code":"print(\\"hi\\")\\n"}}', True),
    ('{"name":"search","arguments":{"query":"日本 🙂"}}', True),
    ('{"name":"search","arguments":{"k":3}}', False),                 # required query missing
    ('{"name":"search","arguments":{"k":3,"query":"x"}}', False),     # schema order
    ('{"name":"search","arguments":{"query":"x","k":-0}}', False),    # integers have no -0
    ('{"name":"search", "arguments":{"query":"x"}}', False),          # compact layout only
    ('{"name":"run_python","arguments":{"query":"x"}}', False),       # arguments of another tool
    ('{"name":"search","arguments":{"query":"a\nb"}}', False),        # raw control character
])
def test_call_language(text, ok):
    assert accepts(CALL, text) is ok


def test_mixed_language_and_validation():
    good = {"name": "ab", "n": 3, "x": -1.5e3, "tags": ["a", "b"], "unit": "f", "v": None}
    text = json.dumps(good, separators=(",", ":"))
    assert accepts(MIXED, text) and validate(good, MIXED) is None
    assert accepts(MIXED, '{"name":"","n":0,"v":7}')
    bounded = {"type": "string", "maxLength": 3}
    assert accepts(bounded, '"a\\nb"') and not accepts(bounded, '"abcd"')  # an escape is one character
    assert not accepts(MIXED, '{"name":"a","n":0,"tags":["a","b","c","d"],"v":1}')  # maxItems 3
    assert "type integer" in validate({**good, "n": 1.5}, MIXED)
    assert "not allow" in validate({**good, "extra": 1}, MIXED)
    assert "required" in validate({"name": "a"}, MIXED)
    assert validate({"v": 1, "n": 2, "name": "z"}, MIXED) is None  # key order is layout, not content
    assert literal({"a": [1, "x"]}) == re_escape('{"a":[1,"x"]}')
    with pytest.raises(ValueError, match="pattern"):
        schema_to_regex({"type": "string", "pattern": "a+"})


def re_escape(s: str) -> str:
    import re
    return re.escape(s)


@pytest.fixture(scope="module")
def xgr_compiler(book):
    xgr = pytest.importorskip("xgrammar")
    _, tok = book
    eos = tok.special_ids["<|endoftext|>"]
    specials = set(tok.special_ids.values())
    size = max(tok.vocab) + 1
    vocab = [b"" if i in specials else tok.vocab.get(i, b"") for i in range(size)]
    info = xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=size, stop_token_ids=[eos])
    return xgr, xgr.GrammarCompiler(info), size, eos


@pytest.mark.parity
@pytest.mark.parametrize("schema", [CALL, MIXED], ids=["tool-call", "mixed"])
def test_masks_equal_xgrammar_json_schema(book, xgr_compiler, schema):
    from xgrammar.testing import bitmask_to_bool_mask

    _, tok = book
    xgr, comp, size, eos = xgr_compiler
    compiled = comp.compile_json_schema(json.dumps(schema), any_whitespace=False,
                                        separators=(",", ":"), strict_mode=True)
    automaton = TokenAutomaton.build(schema_to_regex(schema), tok, eos)
    rng, steps = random.Random(0), 0
    for _ in range(3):
        ours, theirs = RegexConstraint(automaton), xgr.GrammarMatcher(compiled)
        bitmask = xgr.allocate_token_bitmask(1, size)
        for _ in range(25):
            theirs.fill_next_token_bitmask(bitmask)
            want = bitmask_to_bool_mask(bitmask, size)[0]
            got = ours.mask(size)
            assert torch.equal(got, want), (steps, (got ^ want).nonzero().flatten()[:10])
            steps += 1
            token = rng.choice(got.nonzero().flatten().tolist())
            if token == eos:
                break
            ours.advance(token)
            assert theirs.accept_token(token)
    assert steps >= 30
