"""PII masking: emails, phone numbers and public IPv4 addresses, scored on the crawl's labels
and equal to datatrove's PIIFormatter for the kinds it covers."""

from __future__ import annotations

import pytest

from llmlab.curate import mask_pii, prf
from llmlab.curate.pii import find_pii


def test_masks_and_counts():
    text = ("Write to jane.doe+lists@mail.example.org or call (415) 555-0132 / +44 20 7946 0958. "
            "Server 8.8.8.8 answered; 192.168.1.20 and 127.0.0.1 are private. Version 1.2.3 "
            "shipped on 2024-05-01.")
    masked, counts = mask_pii(text)
    assert counts == {"email": 1, "phone": 2, "ip": 1}
    assert masked == ("Write to <EMAIL> or call <PHONE> / <PHONE>. Server <IP> answered; "
                      "192.168.1.20 and 127.0.0.1 are private. Version 1.2.3 shipped on 2024-05-01.")
    assert mask_pii("", ("email",)) == ("", {"email": 0, "phone": 0, "ip": 0})
    assert mask_pii("a@b.co 8.8.8.8", ("ip",))[0] == "a@b.co <IP>"
    with pytest.raises(ValueError, match="kinds must be among"):
        mask_pii("x", ("ssn",))


def test_an_ip_inside_an_email_is_one_email():
    assert [m.kind for m in find_pii("root@[8.8.4.4] and 1.1.1.1")] == ["email", "ip"]


def test_scored_on_the_crawl(crawl):
    tp = fp = fn = 0
    for d in crawl:
        truth = {tuple(x) for x in d.meta["pii"]}
        got = {(m.kind, m.value) for m in find_pii(d.meta["main"])}
        tp, fp, fn = tp + len(truth & got), fp + len(got - truth), fn + len(truth - got)
    score = prf(tp, fp, fn)
    # recall is what matters for privacy; the misses a regex makes are version numbers that
    # look like public IPs and ID numbers that look like phones (the crawl's decoys)
    assert score.recall > 0.99 and score.precision > 0.7, score


@pytest.mark.parity
def test_emails_and_ips_equal_datatrove(crawl):
    pytest.importorskip("datatrove")
    from datatrove.pipeline.formatters import PIIFormatter
    theirs = PIIFormatter(email_replacement="<EMAIL>", ip_replacement="<IP>")
    pages = [d.meta["main"] for d in crawl if d.meta["pii"] or d.meta["decoys"]]
    assert len(pages) > 200
    for text in pages:
        assert mask_pii(text, ("email", "ip"))[0] == theirs.format(text)
