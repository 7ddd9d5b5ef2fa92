"""Language identification: a fastText classifier on character n-grams.

Joulin et al., "Bag of Tricks for Efficient Text Classification", arXiv:1607.01759, and
fastText's ``lid.176`` model: words and the character 1-3-grams of each word, hashed, averaged,
one linear layer. CCNet and FineWeb run such a model on every page and keep a page when its top
language scores at least a threshold (FineWeb: English with score >= 0.65); pages in other
languages go to their own pipelines (FineWeb-2), and mixed or unidentifiable pages (code, lists
of numbers) fall below every threshold. The test suite compares the labels with ``lingua``'s on
the same text (tests/curate/test_parity_langid.py). Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

from collections.abc import Sequence

from llmlab.curate.fasttext import FastTextClassifier, FastTextConfig, train_fasttext

LANGID = FastTextConfig(n_buckets=1 << 16, dim=16, word_ngrams=1, char_ngrams=(1, 3),
                        max_chars=400, epochs=5, lr=0.5, batch_size=64)


def train_langid(texts: Sequence[str], langs: Sequence[str],
                 cfg: FastTextConfig = LANGID) -> FastTextClassifier:
    """A language identifier trained on ``texts`` labelled with ISO codes ``langs``."""
    return train_fasttext(texts, langs, cfg)


def detect(clf: FastTextClassifier, texts: Sequence[str], threshold: float = 0.0) -> list[tuple[str, float]]:
    """(language, score) per text; ``"und"`` (undetermined) when the best score is below
    ``threshold`` or the text is blank."""
    out = []
    probs = clf.predict_proba(list(texts))
    for text, p in zip(texts, probs):
        score, i = p.max(0)
        lang = clf.labels[int(i)] if text.strip() and float(score) >= threshold else "und"
        out.append((lang, float(score)))
    return out
