"""A fastText classifier: hashed word and character n-grams, averaged, then one linear layer.

Joulin et al., "Bag of Tricks for Efficient Text Classification", arXiv:1607.01759. A document
is the bag of its features — words, word n-grams (``word_ngrams=2`` adds bigrams, which keep a
little word order) and optionally character n-grams of each word (``<wo``, ``wor``, ``ord>``:
what fastText's language identifier ``lid.176`` uses, after Bojanowski et al., arXiv:1607.04606)
— each hashed into one of ``n_buckets`` rows of an embedding table. The document vector is the
mean of its rows and a linear layer gives the class scores; training is SGD on the softmax
cross-entropy with a learning rate that decays linearly to zero, as fastText's. It trains in
seconds on a CPU and scores millions of documents an hour, which is why data pipelines use it
for both language identification (CCNet, FineWeb) and quality (GPT-3's filter, DCLM's
``fasttext-oh-eli5``, FineWeb-Edu's annotations distilled into a classifier).

What it leaves out: fastText's vocabulary (every feature here is hashed, words included),
hierarchical softmax, sub-sampling and Hogwild threads. The test suite trains the ``fasttext``
package on the same split and compares accuracy (tests/curate/test_parity_fasttext.py).
Taught in chapter 10 (solutions/10_data).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from llmlab.utils import reject_unknown_keys


@reject_unknown_keys
@dataclass
class FastTextConfig:
    """Features and training of a fastText classifier (defaults: a quality classifier)."""

    n_buckets: int = 1 << 16
    dim: int = 16
    word_ngrams: int = 2  # 1: bag of words; 2: words and bigrams
    char_ngrams: tuple[int, int] = (0, 0)  # (min, max) lengths of each word's character n-grams
    max_chars: int = 3_000  # only the first characters of a long document are read
    lowercase: bool = True
    epochs: int = 5
    lr: float = 1.0
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_buckets < 1 or self.dim < 1 or self.word_ngrams < 1 or self.epochs < 1:
            raise ValueError(f"n_buckets, dim, word_ngrams and epochs must be >= 1, got {self}")


def hash_bucket(feature: str, n_buckets: int) -> int:
    """The row of ``feature`` in the embedding table: CRC-32 of its UTF-8 bytes, mod n_buckets."""
    return zlib.crc32(feature.encode("utf-8")) % n_buckets


def ngram_features(text: str, cfg: FastTextConfig) -> list[int]:
    """The bucket of every feature of ``text``: its words, word n-grams up to ``word_ngrams``
    (joined by a space) and, when ``char_ngrams`` is set, each word's character n-grams with
    ``<`` and ``>`` marking its ends."""
    text = text[: cfg.max_chars]
    words = (text.lower() if cfg.lowercase else text).split()
    feats = [" ".join(words[i:i + n]) for n in range(1, cfg.word_ngrams + 1)
             for i in range(len(words) - n + 1)]
    lo, hi = cfg.char_ngrams
    if lo > 0:
        for w in words:
            w = f"<{w}>"
            feats += [w[i:i + n] for n in range(lo, hi + 1) for i in range(len(w) - n + 1)]
    return [hash_bucket(f, cfg.n_buckets) for f in feats]


class FastText(nn.Module):
    """Mean of hashed feature embeddings, then a linear layer: ids -> (batch, n_classes)."""

    def __init__(self, n_classes: int, cfg: FastTextConfig) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(cfg.n_buckets, cfg.dim, mode="mean")
        self.linear = nn.Linear(cfg.dim, n_classes)
        nn.init.uniform_(self.embedding.weight, -1 / cfg.dim, 1 / cfg.dim)  # fastText's init
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """ids: (total features,) and offsets: (batch,) as ``nn.EmbeddingBag`` takes them."""
        return self.linear(self.embedding(ids, offsets))

    @torch.no_grad()
    def sgd_step(self, ids: torch.Tensor, offsets: torch.Tensor, y: torch.Tensor, lr: float) -> float:
        """One SGD step on a batch, gradients written by hand: the embedding table gets a
        scatter-add into the rows the batch used, not a dense gradient over all ``n_buckets``
        rows. Returns the mean loss."""
        weight, lin = self.embedding.weight, self.linear
        lens = torch.diff(offsets, append=torch.tensor([len(ids)])).clamp_min(1)
        h = nn.functional.embedding_bag(ids, weight, offsets, mode="mean")  # (batch, dim)
        logits = lin(h)
        loss = nn.functional.cross_entropy(logits, y)
        g = logits.softmax(-1)  # d loss_i / d logits_i = p_i - onehot(y_i)
        g[torch.arange(len(y)), y] -= 1
        g_h = (g @ lin.weight) / lens[:, None]  # each of a document's rows gets 1/len of it
        # The shared linear layer takes the batch's mean step; the embedding rows, mostly
        # distinct across documents, each take their own document's step (fastText's
        # per-example update): summed steps on the shared layer would be batch_size times
        # too large and diverge.
        lin.weight.sub_(lr / len(y) * g.T @ h)
        lin.bias.sub_(lr / len(y) * g.sum(0))
        bag = torch.repeat_interleave(torch.arange(len(y)), torch.diff(
            offsets, append=torch.tensor([len(ids)])))
        weight.index_put_((ids,), g_h[bag].mul_(-lr), accumulate=True)
        return float(loss)


def pack(features: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of feature lists as (ids, offsets) for ``nn.EmbeddingBag``."""
    offsets = torch.tensor([0] + [len(f) for f in features[:-1]]).cumsum(0)
    ids = torch.tensor([i for f in features for i in f], dtype=torch.long)
    return ids, offsets


class FastTextClassifier:
    """A trained model with its labels and features: ``predict`` and ``predict_proba`` on text."""

    def __init__(self, model: FastText, labels: list[str], cfg: FastTextConfig) -> None:
        self.model, self.labels, self.cfg = model, labels, cfg

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), n_labels) class probabilities, columns in ``self.labels`` order."""
        if not texts:
            return torch.empty(0, len(self.labels))
        ids, offsets = pack([ngram_features(t, self.cfg) for t in texts])
        return self.model(ids, offsets).softmax(-1)

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most likely label of each text."""
        return [self.labels[i] for i in self.predict_proba(texts).argmax(-1).tolist()]


def train_fasttext(texts: Sequence[str], labels: Sequence[str],
                   cfg: FastTextConfig | None = None) -> FastTextClassifier:
    """Train on ``texts`` with their ``labels`` (any strings; the classes are their sorted set).

    Mini-batch SGD on the summed cross-entropy (each example's step is fastText's), the learning
    rate decaying linearly from ``cfg.lr`` to zero over all steps; the order is shuffled every
    epoch from ``cfg.seed``.
    """
    cfg = cfg or FastTextConfig()
    if len(texts) != len(labels) or not texts:
        raise ValueError(f"need as many labels as texts (at least one), got {len(texts)} texts "
                         f"and {len(labels)} labels")
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(label) for label in labels])
    feats = [ngram_features(t, cfg) for t in texts]
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = FastText(len(classes), cfg)
    steps = cfg.epochs * -(-len(texts) // cfg.batch_size)
    step = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(len(texts), generator=gen).tolist()
        for start in range(0, len(order), cfg.batch_size):
            batch = order[start:start + cfg.batch_size]
            ids, offsets = pack([feats[i] for i in batch])
            model.sgd_step(ids, offsets, y[batch], cfg.lr * (1 - step / steps))
            step += 1
    return FastTextClassifier(model.eval(), classes, cfg)
