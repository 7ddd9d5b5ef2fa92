"""HTML to text: boilerplate out, article in, bad input refused with a clear error."""

from __future__ import annotations

import pytest

from llmlab.curate import ExtractConfig, decode_html, html_to_text, micro, word_prf


def test_keeps_the_article_and_drops_the_rest():
    page = """<html><head><title>T</title><style>p{color:red}</style>
    <script>var x = "<p>not text</p>";</script></head><body>
    <nav><a href="/">Home</a> <a href="/a">About</a></nav>
    <div class="cookie-banner">We use cookies. <button>OK</button></div>
    <div id="content"><h1>Real title</h1><p>First paragraph with <em>emphasis</em> &amp; an entity.</p>
    <p>Second paragraph.</div>
    <div id="x"><a href="/1">one</a> | <a href="/2">two</a> | <a href="/3">three</a></div>
    <footer>© 2024 Example</footer><!-- a comment --></body></html>"""
    assert html_to_text(page) == ("Real title\nFirst paragraph with emphasis & an entity.\n"
                                  "Second paragraph.")


def test_malformed_markup_does_not_stop_it():
    page = "<body></span><div><p>one<p>two</b></div><div>three < four</div><p>unclosed"
    assert html_to_text(page) == "one\ntwo\nthree < four\nunclosed"
    assert html_to_text("<!-- never closed <p>hidden") == ""
    assert html_to_text("") == ""


def test_pre_keeps_its_lines():
    assert html_to_text("<pre><code>def f():\n    return 1</code></pre><p>after</p>") == \
        "def f():\n    return 1\nafter"


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="not valid UTF-8"):
        html_to_text(b"<p>caf\xe9 \xff\xfe</p>")
    assert html_to_text(b'<meta charset="latin-1"><p>caf\xe9</p>') == "café"
    with pytest.raises(ValueError, match="over the 1,000 limit"):
        html_to_text("<p>" + "x" * 2000, ExtractConfig(max_chars=1000))
    with pytest.raises(ValueError, match="str or bytes"):
        html_to_text(123)  # type: ignore[arg-type]
    assert decode_html("é".encode()) == "é"


def test_a_50_mb_page_is_refused_before_parsing():
    page = "<p>" + "a" * 50_000_000
    with pytest.raises(ValueError, match="over the 5,000,000 limit"):
        html_to_text(page)


def test_extraction_scores_on_the_crawl(crawl, texts):
    good = [(t, d.meta["main"]) for d, t in zip(crawl, texts) if d.meta["quality"] == "good"]
    score = micro(word_prf(t, main) for t, main in good)
    assert score.precision > 0.97 and score.recall > 0.95, score


@pytest.mark.parity
def test_same_league_as_resiliparse(crawl, texts):
    html2text = pytest.importorskip("resiliparse.extract.html2text")
    good = [(d, t) for d, t in zip(crawl, texts) if d.meta["quality"] == "good"][:600]
    ours = micro(word_prf(t, d.meta["main"]) for d, t in good)
    theirs = micro(word_prf(html2text.extract_plain_text(d.text, main_content=True), d.meta["main"])
                   for d, _ in good)
    assert theirs.f1 > 0.85, theirs  # the crawl's pages are ordinary pages to a real extractor
    assert ours.f1 >= theirs.f1 - 0.02, (ours, theirs)
