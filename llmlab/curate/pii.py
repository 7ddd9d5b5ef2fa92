"""Personal data: find email addresses, phone numbers and public IPv4 addresses, and mask them.

Web text is full of contact lines; a model trained on them can repeat a person's address
(Carlini et al., "Extracting Training Data from Large Language Models", arXiv:2012.07805).
Pipelines replace what a pattern finds: datatrove's ``PIIFormatter`` (FineWeb) masks emails
and *public* IPv4 addresses (a private ``192.168.x.x`` identifies no one); BigCode's StarCoder
pipeline adds keys and names with a trained detector. llmlab uses datatrove's two patterns — so
its emails and IPs are masked exactly where datatrove masks them (tests/curate/test_parity_pii.py)
— and adds phone numbers (international ``+CC`` forms and North-American ``(415) 555-0132``).

A pattern cannot read context: a four-part version number ``2.10.3.1`` is a valid public
address, and is masked. The chapter measures that as lost precision. Taught in chapter 10
(solutions/10_data).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

EMAIL = re.compile(  # datatrove's PIIFormatter pattern (RFC 5322-ish local part, domain or [IP])
    r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:(?:[A-Za-z0-9](?:["
    r"A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?|\[(?:(?:25[0-5]|2[0-4][0-9]|["
    r"01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?|[A-Za-z0-9-]*[A-Za-z0-9]:)])")
IPV4 = re.compile(  # datatrove's pattern: four octets 0-255
    r"(?:(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)\.){3}(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)")
PHONE = re.compile(
    r"(?<![\w+.-])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,4}[ .-]?\d{2,4}"      # +CC and 3-5 groups
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"                          # (415) 555-0132
    r"|\d{3}[ .-]\d{3}[ .-]\d{4}"                               # 415-555-0132
    r")(?![\w.-]*\d)")
PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP>"}


@dataclass(frozen=True)
class Match:
    """One piece of personal data found: its kind, text and character span."""

    kind: str
    value: str
    start: int
    end: int


def public_ip(text: str) -> bool:
    """Whether ``text`` is an IPv4 address routable on the internet (not private, loopback,
    link-local, documentation or reserved)."""
    try:
        return ipaddress.ip_address(text).is_global
    except ValueError:
        return False


KINDS = ("email", "phone", "ip")


def find_pii(text: str, kinds: tuple[str, ...] = KINDS) -> list[Match]:
    """Every email, phone number and public IPv4 address in ``text`` (of the ``kinds`` asked
    for), in order, not overlapping: emails first, as in datatrove; then IPs; then phones."""
    if not set(kinds) <= set(KINDS):
        raise ValueError(f"kinds must be among {KINDS}, got {kinds}")
    found: list[Match] = [Match("email", m.group(0), m.start(), m.end())
                          for m in EMAIL.finditer(text)] if "email" in kinds else []
    taken = [(m.start, m.end) for m in found]
    free = lambda a, b: all(b <= s or a >= e for s, e in taken)  # noqa: E731
    for m in IPV4.finditer(text) if "ip" in kinds else ():
        if public_ip(m.group(0)) and free(m.start(), m.end()):
            found.append(Match("ip", m.group(0), m.start(), m.end()))
            taken.append((m.start(), m.end()))
    for m in PHONE.finditer(text) if "phone" in kinds else ():
        if free(m.start(), m.end()):
            found.append(Match("phone", m.group(0), m.start(), m.end()))
    return sorted(found, key=lambda m: m.start)


def mask_pii(text: str, kinds: tuple[str, ...] = KINDS) -> tuple[str, dict[str, int]]:
    """``text`` with each email, phone number and public IPv4 address replaced by ``<EMAIL>``,
    ``<PHONE>`` or ``<IP>``, and how many of each were replaced."""
    counts = {k: 0 for k in PLACEHOLDERS}
    out, pos = [], 0
    for m in find_pii(text, kinds):
        out += [text[pos:m.start], PLACEHOLDERS[m.kind]]
        counts[m.kind] += 1
        pos = m.end
    out.append(text[pos:])
    return "".join(out), counts
