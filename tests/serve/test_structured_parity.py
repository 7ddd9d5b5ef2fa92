"""Parity: llmlab's regex token masks equal xgrammar's on the same pattern and vocabulary."""

from __future__ import annotations

import random

import pytest
import torch
import xgrammar as xgr
from xgrammar.testing import bitmask_to_bool_mask

from llmlab.serve import RegexConstraint, TokenAutomaton

PATTERNS = [r"(yes|no)", r"\d{1,3}\.\d{2}", r"(ab|a)(bc|c)?", r"[a-z]+@[a-z]+\.com",
            r"def [a-z_]{1,12}\(\):"]


@pytest.fixture(scope="module")
def compiler(book):
    _, tok = book
    eos = tok.special_ids["<|endoftext|>"]
    specials = set(tok.special_ids.values())
    size = max(tok.vocab) + 1
    vocab = [b"" if i in specials else tok.vocab.get(i, b"") for i in range(size)]
    info = xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=size, stop_token_ids=[eos])
    return xgr.GrammarCompiler(info), size, eos


@pytest.mark.parity
@pytest.mark.parametrize("pattern", PATTERNS)
def test_masks_equal_xgrammar_along_random_walks(book, compiler, pattern):
    _, tok = book
    comp, size, eos = compiler
    compiled = comp.compile_regex(pattern)
    automaton = TokenAutomaton.build(pattern, tok, eos)
    rng = random.Random(0)
    steps = 0
    for _ in range(3):  # three random paths through the grammar, checking the mask at each step
        ours, theirs = RegexConstraint(automaton), xgr.GrammarMatcher(compiled)
        bitmask = xgr.allocate_token_bitmask(1, size)
        for _ in range(30):
            theirs.fill_next_token_bitmask(bitmask)
            want = bitmask_to_bool_mask(bitmask, size)[0]
            got = ours.mask(size)
            assert torch.equal(got, want), (pattern, steps, (got ^ want).nonzero().flatten()[:10])
            steps += 1
            allowed = got.nonzero().flatten().tolist()
            token = rng.choice(allowed)
            if token == eos:
                break
            ours.advance(token)
            assert theirs.accept_token(token)
    assert steps >= 6  # three walks of at least a token and EOS each
