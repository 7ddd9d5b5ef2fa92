"""Model-based quality filtering: a fastText classifier of "pages worth training on".

Rules catch pages whose statistics are wrong; a grammatical content-farm article has the
statistics of prose and passes them. GPT-3 (Brown et al., arXiv:2005.14165, appendix A) trained
a classifier to tell curated reference text from raw Common Crawl and kept pages by its score;
DCLM (Li et al., arXiv:2406.11794) found a fastText bigram classifier the best filter of all it
tried; FineWeb-Edu (Penedo et al., arXiv:2406.17557) distilled an LLM's educational-value ratings
into a small classifier. Here the labels are the crawl's own (good vs spam, SEO, spun, listing
pages), the features words and word bigrams. Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

from collections.abc import Sequence

from llmlab.curate.fasttext import FastTextClassifier, FastTextConfig, train_fasttext

QUALITY = FastTextConfig(n_buckets=1 << 16, dim=16, word_ngrams=2, max_chars=3000, epochs=5,
                         lr=2.0, batch_size=32)


def train_quality(texts: Sequence[str], good: Sequence[bool],
                  cfg: FastTextConfig = QUALITY) -> FastTextClassifier:
    """A classifier whose ``"good"`` probability scores pages (labels: True for good pages)."""
    return train_fasttext(texts, ["good" if g else "bad" for g in good], cfg)


def quality_scores(clf: FastTextClassifier, texts: Sequence[str]) -> list[float]:
    """P(good) for each text."""
    col = clf.labels.index("good")
    return clf.predict_proba(list(texts))[:, col].tolist()
