import random
import re

import pytest
import torch

from llmlab.serve import RegexConstraint, TokenAutomaton, regex_to_dfa, token_mask

PATTERNS = [r"(yes|no)", r"\d{1,3}\.\d{2}", r"[A-Z][a-z]{2,5}", r"a*b+c?", r"(ab|a)(bc|c)?",
            r"[^x\n]{2}x", r"\w+@\w+\.com", r"(?:0|[1-9]\d*)", r"\s?-?[a-c]{0,3}"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_dfa_agrees_with_python_re(pattern):
    dfa = regex_to_dfa(pattern)
    rng = random.Random(0)
    alphabet = "abcxyz019.-@ \nAZo"
    strings = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7))) for _ in range(1500)]
    strings += ["yes", "no", "12.34", "Hello", "aabbc", "abc", "ab", "a@b.com", "0", "10", " -ab"]
    for s in strings:
        assert dfa.fullmatch(s.encode()) == bool(re.fullmatch(pattern, s)), (pattern, s)


@pytest.mark.parametrize("bad", ["(ab", "a{3,1}", "*a", "[abc", "^a", "a\\"])
def test_bad_regex_raises(bad):
    with pytest.raises(ValueError):
        regex_to_dfa(bad)


def test_token_mask_against_brute_force():
    dfa = regex_to_dfa(r"(cat|car)s?")
    vocab = [b"c", b"ca", b"cat", b"cars", b"x", b"s", b"at", b"r", b"ts"]
    after_c = dfa.walk(dfa.start, b"c")
    got = [s is not None for s in token_mask(dfa, after_c, vocab)]
    want = [any(re.fullmatch(r"(cat|car)s?", "c" + v.decode() + rest) for rest in ["", "s", "t",
            "ts", "r", "rs", "at", "ats", "ar", "ars"]) for v in vocab]
    assert got == want


def test_masks_only_allow_matchable_prefixes(book):
    _, tok = book
    eos = tok.special_ids["<|endoftext|>"]
    auto = TokenAutomaton.build(r"(True|False|None)", tok, eos)
    con = RegexConstraint(auto)
    allowed = con.mask(len(tok.vocab)).nonzero().flatten().tolist()
    texts = {tok.decode([i]) for i in allowed}
    assert "True" in texts and "T" in texts and "x" not in texts and eos not in allowed
    for i in allowed:
        assert any(w.startswith(tok.decode([i])) for w in ("True", "False", "None"))
    con.advance(tok.encode("None")[0])
    while not bool(con.mask(len(tok.vocab))[eos]):
        con.advance(int(con.mask(len(tok.vocab)).nonzero()[0]))
    assert torch.equal(con.mask(len(tok.vocab)).nonzero().flatten(), torch.tensor([eos]))
