"""Structured output: a regular expression compiled to a token-level automaton.

A constrained decoder only samples tokens that keep the output a prefix of *some* string the
regular expression matches, and allows end-of-sequence only where the output is a full match, so
every finished output parses. The construction follows Willard & Louf, "Efficient Guided
Generation for Large Language Models" (Outlines, arXiv 2307.09702): compile the regex to a DFA
over *bytes* (Thompson's NFA, then the subset construction), keep only live states (from which an
accepting state is reachable), then walk every token's bytes from each DFA state to get the mask
of allowed tokens and the state each leads to. Byte level matches byte-level BPE exactly: a token
that ends in the middle of a UTF-8 character is handled like any other. States are indexed lazily
(a mask is computed the first time a state is reached) and cached.

Supported syntax: literals, ``.``, ``[...]`` / ``[^...]`` classes with ranges, ``\\d \\w \\s``
(ASCII), escapes (``\\xNN`` is one byte, in or out of a class), groups ``(...)`` / ``(?:...)``,
``|``, ``* + ?``, ``{m}``, ``{m,}``, ``{m,n}``.
No anchors, backreferences or lookaround (a DFA cannot express the last two). Taught in chapter 09
(solutions/09_serve).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

_CLASSES = {
    "d": frozenset(range(48, 58)),
    "w": frozenset([*range(48, 58), *range(65, 91), *range(97, 123), 95]),
    "s": frozenset(b" \t\n\r\f\v"),
}
_ESCAPES = {"n": 10, "t": 9, "r": 13, "f": 12, "v": 11}
_ALL = frozenset(range(256))


class _Parser:
    """Recursive descent over the pattern; produces an AST of ("set" | "cat" | "alt" | "rep")."""

    def __init__(self, pattern: str) -> None:
        self.p, self.i = pattern, 0

    def error(self, msg: str) -> ValueError:
        return ValueError(f"regex {self.p!r}: {msg} at position {self.i}")

    def peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None

    def take(self) -> str:
        ch = self.p[self.i]
        self.i += 1
        return ch

    def parse(self) -> tuple:
        node = self.alt()
        if self.i != len(self.p):
            raise self.error("unbalanced ')'")
        return node

    def alt(self) -> tuple:
        options = [self.concat()]
        while self.peek() == "|":
            self.take()
            options.append(self.concat())
        return options[0] if len(options) == 1 else ("alt", options)

    def concat(self) -> tuple:
        items = []
        while self.peek() not in (None, "|", ")"):
            items.append(self.repeat())
        return ("cat", items)

    def repeat(self) -> tuple:
        node = self.atom()
        while self.peek() in ("*", "+", "?", "{"):
            op = self.take()
            if op == "{":
                end = self.p.find("}", self.i)
                if end < 0:
                    raise self.error("unclosed '{'")
                lo, _, hi = self.p[self.i:end].partition(",")
                try:
                    m = int(lo)
                    n = m if "," not in self.p[self.i:end] else (int(hi) if hi else None)
                except ValueError:
                    raise self.error("bad {m,n} repetition") from None
                self.i = end + 1
            else:
                m, n = {"*": (0, None), "+": (1, None), "?": (0, 1)}[op]
            if n is not None and n < m:
                raise self.error(f"repetition {{{m},{n}}} has max < min")
            node = ("rep", node, m, n)
        return node

    def atom(self) -> tuple:
        ch = self.take()
        if ch == "(":
            if self.p.startswith("?:", self.i):
                self.i += 2
            node = self.alt()
            if self.peek() != ")":
                raise self.error("unclosed '('")
            self.take()
            return node
        if ch == "[":
            return ("set", self.char_class())
        if ch == ".":
            return ("set", _ALL - {10})
        if ch == "\\":
            return self.escape()
        if ch in "*+?{":
            raise self.error(f"nothing to repeat before {ch!r}")
        if ch in "^$":
            raise self.error("anchors are not supported (the whole output must match)")
        return ("cat", [("set", frozenset([b])) for b in ch.encode("utf-8")])

    def escape(self) -> tuple:
        if self.peek() is None:
            raise self.error("trailing backslash")
        ch = self.take()
        if ch.lower() in _CLASSES:
            s = _CLASSES[ch.lower()]
            return ("set", _ALL - s if ch.isupper() else s)
        if ch == "x":  # \xNN: one byte (how a pattern names the bytes of UTF-8 sequences)
            digits = self.p[self.i:self.i + 2]
            if len(digits) != 2 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                raise self.error("\\x needs two hex digits")
            self.i += 2
            return ("set", frozenset([int(digits, 16)]))
        return ("set", frozenset([_ESCAPES.get(ch, ord(ch))]))

    def char_class(self) -> frozenset[int]:
        negate = self.peek() == "^"
        if negate:
            self.take()
        out: set[int] = set()
        first = True
        while True:
            if self.peek() is None:
                raise self.error("unclosed '['")
            ch = self.take()
            if ch == "]" and not first:
                break
            first = False
            if ch == "\\":
                node = self.escape()
                lo_set = node[1]
                if len(lo_set) != 1:
                    out |= lo_set
                    continue
                lo = next(iter(lo_set))
            else:
                lo = self.class_char(ch)
            if self.peek() == "-" and self.p[self.i + 1:self.i + 2] not in ("]", ""):
                self.take()
                hi_ch = self.take()
                hi_set = self.escape()[1] if hi_ch == "\\" else {self.class_char(hi_ch)}
                if len(hi_set) != 1:
                    raise self.error("a range cannot end in a class escape")
                hi = next(iter(hi_set))
                if hi < lo:
                    raise self.error(f"bad range {chr(lo)}-{chr(hi)}")
                out |= set(range(lo, hi + 1))
            else:
                out.add(lo)
        return frozenset(_ALL - out if negate else out)

    def class_char(self, ch: str) -> int:
        if ord(ch) > 127:
            raise self.error("character classes are ASCII only (name bytes as \\xNN)")
        return ord(ch)


@dataclass
class DFA:
    """A deterministic automaton over bytes. ``trans[s]``: byte -> next state (absent = dead)."""

    trans: list[dict[int, int]]
    accepting: set[int]
    start: int = 0
    live: set[int] = field(default_factory=set)

    def walk(self, state: int, data: bytes) -> int | None:
        """The state after reading ``data``, or None when it leaves the live states."""
        for b in data:
            state = self.trans[state].get(b)
            if state is None or state not in self.live:
                return None
        return state

    def fullmatch(self, data: bytes) -> bool:
        end = self.walk(self.start, data)
        return end is not None and end in self.accepting


def regex_to_dfa(pattern: str, max_states: int = 5000) -> DFA:
    """Compile ``pattern`` to a byte DFA: Thompson NFA, then the subset construction."""
    ast = _Parser(pattern).parse()
    eps: list[list[int]] = []
    edges: list[list[tuple[frozenset[int], int]]] = []

    def new() -> int:
        eps.append([])
        edges.append([])
        return len(eps) - 1

    def build(node: tuple) -> tuple[int, int]:  # (start, end) NFA fragment
        kind = node[0]
        if kind == "set":
            s, e = new(), new()
            edges[s].append((node[1], e))
            return s, e
        if kind == "cat":
            s = e = new()
            for item in node[1]:
                fs, fe = build(item)
                eps[e].append(fs)
                e = fe
            return s, e
        if kind == "alt":
            s, e = new(), new()
            for option in node[1]:
                fs, fe = build(option)
                eps[s].append(fs)
                eps[fe].append(e)
            return s, e
        _, child, m, n = node
        s = e = new()
        for _ in range(m):
            fs, fe = build(child)
            eps[e].append(fs)
            e = fe
        if n is None:  # a loop: zero or more further copies
            fs, fe = build(child)
            eps[e] += [fs]
            eps[fe] += [fs]
            end = new()
            eps[e].append(end)
            eps[fe].append(end)
            return s, end
        end = new()
        for _ in range(n - m):  # up to n - m optional copies
            eps[e].append(end)
            fs, fe = build(child)
            eps[e].append(fs)
            e = fe
        eps[e].append(end)
        return s, end

    start, final = build(ast)

    def closure(states) -> frozenset[int]:
        stack, seen = list(states), set(states)
        while stack:
            for t in eps[stack.pop()]:
                if t not in seen:
                    seen.add(t)
                    stack.append(t)
        return frozenset(seen)

    first = closure([start])
    index, trans, todo = {first: 0}, [{}], [first]
    while todo:
        cur = todo.pop()
        moves: dict[int, set[int]] = {}
        for s in cur:
            for byteset, t in edges[s]:
                for b in byteset:
                    moves.setdefault(b, set()).add(t)
        row = trans[index[cur]]
        for b, targets in moves.items():
            nxt = closure(targets)
            if nxt not in index:
                if len(index) >= max_states:
                    raise ValueError(f"regex {pattern!r} needs more than {max_states} DFA states")
                index[nxt] = len(trans)
                trans.append({})
                todo.append(nxt)
            row[b] = index[nxt]
    accepting = {i for st, i in index.items() if final in st}
    return DFA(trans, accepting, 0, _live_states(trans, accepting))


def _live_states(trans: list[dict[int, int]], accepting: set[int]) -> set[int]:
    """States from which some accepting state is reachable (reverse reachability)."""
    back: dict[int, set[int]] = {}
    for s, row in enumerate(trans):
        for t in row.values():
            back.setdefault(t, set()).add(s)
    live, stack = set(accepting), list(accepting)
    while stack:
        for s in back.get(stack.pop(), ()):
            if s not in live:
                live.add(s)
                stack.append(s)
    return live


def token_mask(dfa: DFA, state: int, token_bytes: list[bytes]) -> list[int | None]:
    """Per token: the DFA state after reading its bytes from ``state``, or None if not allowed."""
    return [dfa.walk(state, tb) if tb else None for tb in token_bytes]


class TokenAutomaton:
    """A DFA lifted to tokens: ``allowed(state)`` (vocab,) bool and ``next(state, token)``."""

    def __init__(self, dfa: DFA, token_bytes: list[bytes], eos_id: int | None) -> None:
        self.dfa, self.token_bytes, self.eos_id = dfa, token_bytes, eos_id
        self._next: dict[int, list[int | None]] = {}
        self._masks: dict[int, torch.Tensor] = {}

    @classmethod
    def build(cls, pattern: str, tokenizer, eos_id: int | None) -> TokenAutomaton:
        """Compile ``pattern`` against a byte-level tokenizer's vocabulary (specials excluded)."""
        if eos_id is None:
            raise ValueError("constrained decoding needs an end-of-sequence token", "regex")
        dfa = regex_to_dfa(pattern)
        if dfa.start not in dfa.live:
            raise ValueError(f"regex {pattern!r} matches nothing", "regex")
        specials = set(getattr(tokenizer, "special_ids", {}).values())
        size = max(tokenizer.vocab) + 1
        token_bytes = [b"" if i in specials else tokenizer.vocab.get(i, b"") for i in range(size)]
        return cls(dfa, token_bytes, eos_id)

    def next_states(self, state: int) -> list[int | None]:
        if state not in self._next:
            self._next[state] = token_mask(self.dfa, state, self.token_bytes)
        return self._next[state]

    def allowed(self, state: int) -> torch.Tensor:
        """(vocab,) bool: tokens that keep the output matchable; EOS where it fully matches."""
        if state not in self._masks:
            mask = torch.tensor([s is not None for s in self.next_states(state)])
            mask[self.eos_id] = state in self.dfa.accepting
            self._masks[state] = mask
        return self._masks[state]


class RegexConstraint:
    """One request's position in a :class:`TokenAutomaton`."""

    def __init__(self, automaton: TokenAutomaton) -> None:
        self.automaton, self.state = automaton, automaton.dfa.start

    def mask(self, vocab_size: int) -> torch.Tensor:
        """(vocab_size,) bool for the model's vocabulary (ids past the tokenizer's: False)."""
        m = self.automaton.allowed(self.state)
        out = torch.zeros(vocab_size, dtype=torch.bool)
        n = min(vocab_size, m.shape[0])
        out[:n] = m[:n]
        return out

    def advance(self, token: int) -> None:
        if token == self.automaton.eos_id:
            return
        nxt = self.automaton.next_states(self.state)[token]
        if nxt is None:
            raise ValueError(f"token {token} is not allowed by the constraint in state {self.state}")
        self.state = nxt
