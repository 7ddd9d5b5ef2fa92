"""The parts that run the book's model: the bi-encoder and InfoNCE, RAG loss, prefix reuse,
CacheBlend, the reranker and deep research."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmlab.data import Document
from llmlab.rag import (
    BiEncoder,
    BiEncoderConfig,
    Chunk,
    blend_forward,
    cached_prompt_tokens,
    citation_precision,
    code_pairs,
    completion_tasks,
    deep_research,
    encode,
    info_nce,
    pad_rows,
    precompute_chunk,
    query_likelihood,
    rag_prompt,
    target_loss,
    train_biencoder,
)


def test_info_nce_is_cross_entropy_over_in_batch_negatives():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    d = F.normalize(torch.randn(6, 8, generator=g), dim=-1)
    naive = sum(-torch.log(torch.exp(q[i] @ d[i] / 0.1) / torch.exp(q[i] @ d.T / 0.1).sum())
                for i in range(6)) / 6
    assert info_nce(q, d, 0.1) == pytest.approx(float(naive), rel=1e-5)
    assert info_nce(q, q, 0.01) < 0.01  # each row its own best match
    with pytest.raises(ValueError, match="temperature"):
        info_nce(q, d, 0.0)


def test_bi_encoder_ignores_padding_and_learns(book):
    model, tok = book
    enc = BiEncoder(model, 16, n_layers=1)
    ids, valid = pad_rows([[5, 6, 7], [5, 6, 7, 8, 9, 10]])
    alone, _ = pad_rows([[5, 6, 7]])
    with torch.no_grad():
        single = enc(alone, torch.ones_like(alone, dtype=torch.bool))
        torch.testing.assert_close(enc(ids, valid)[0], single[0])
    pairs = [(f"return the number {i} squared", f"def f{i}():\n    return {i} ** 2") for i in range(16)]
    losses = train_biencoder(enc, tok, pairs, BiEncoderConfig(steps=25, batch_size=8, lr=3e-3))
    assert sum(losses[-5:]) / 5 < losses[0]
    vecs = encode(enc, tok, [p for _, p in pairs])
    assert vecs.shape == (16, 16) and abs(float((vecs ** 2).sum(1).mean()) - 1) < 1e-4


SOURCE = '''class Stack:
    """A last-in first-out stack of items."""

    def __init__(self):
        self.items = []

    def push(self, item):
        """Push an item on top of the stack."""
        self.items.append(item)
        return item

    def pop(self):
        """Remove and return the item on top of the stack."""
        item = self.items.pop()
        return item
'''


def test_target_loss_is_the_model_loss_on_the_target(book):
    model, tok = book
    doc = Document("stack.py", SOURCE)
    tasks = completion_tasks([doc], code_pairs([doc], min_query_words=3), target_lines=1)
    assert [t.target for t in tasks] == ["        self.items.append(item)\n",
                                         "        item = self.items.pop()\n"]
    prompt = rag_prompt(["def helper():\n    pass"], tasks[0].prefix)
    assert prompt.startswith("# context\ndef helper():\n    pass\n\n")
    p, t = tok.encode(prompt), tok.encode(tasks[0].target)
    with torch.no_grad():
        logits = model(torch.tensor([p + t]))[0]
    want = F.cross_entropy(logits[len(p) - 1:-1], torch.tensor(t))
    assert target_loss(model, tok, prompt, tasks[0].target) == pytest.approx(float(want), rel=1e-5)


def test_prefix_cache_reuses_whole_blocks_of_a_shared_prefix(book):
    model, tok = book
    shared = list(range(40, 40 + 37))  # 37 tokens: two full blocks of 16
    cached = cached_prompt_tokens(model, tok, [shared + [7, 8], shared + [9], [1, 2] + shared])
    assert cached == [0, 32, 0]


def test_cacheblend_is_exact_at_full_recompute_and_fixes_positions(book):
    model, tok = book
    a, b = tok.encode("def add(a, b):\n    return a + b\n"), tok.encode("class Box:\n    size = 3\n")
    q = tok.encode("def sub(a, b):\n    return a - b\n")
    ca, cb = precompute_chunk(model, a), precompute_chunk(model, b)
    with torch.no_grad():
        full = model(torch.tensor([a + b + q]))[:, -len(q):]
        alone = model(torch.tensor([b]))
    out = blend_forward(model, [ca, cb], q, 1.0)
    assert out.recomputed == 1.0
    torch.testing.assert_close(out.logits, full, atol=1e-4, rtol=1e-4)
    # layer 0's keys of chunk b, rotated to offset len(a), equal a prefill of a + b
    cap = precompute_chunk(model, a + b)
    from llmlab.rag.cacheblend import _shifted_keys
    torch.testing.assert_close(_shifted_keys(model, [ca, cb], 0), cap.keys[0], atol=1e-5, rtol=1e-4)
    reuse = blend_forward(model, [ca, cb], q, 0.0)
    assert reuse.recomputed == 0.0 and not torch.allclose(reuse.logits, full, atol=1e-3)
    part = blend_forward(model, [ca, cb], q, 0.5)
    assert 0.4 < part.recomputed < 0.6
    assert alone.shape[1] == len(b)


def test_query_likelihood_by_hand(book):
    model, tok = book
    docs = ["def area(r):\n    return 3.14 * r * r", "import os"]
    scores = query_likelihood(model, tok, "Area of a circle.", docs, template="{doc}\n# {query}")
    ctx, q = tok.encode(docs[1] + "\n# "), tok.encode("Area of a circle.")
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([ctx + q]))[0], -1)
    want = logp[torch.arange(len(ctx) - 1, len(ctx) + len(q) - 1), torch.tensor(q)].mean()
    assert float(scores[1]) == pytest.approx(float(want), rel=1e-4)


def test_deep_research_cites_what_it_read():
    chunks = {"a": Chunk("a.py", 0, 10, "# Open a socket and connect to the host\nx = 1"),
              "b": Chunk("b.py", 0, 10, '"""Parse a date string into a tuple of fields."""'),
              "c": Chunk("c.py", 0, 10, "# Unrelated words about colours and paint")}

    def retrieve(query, k):
        return list(chunks.values())[:k]

    report = deep_research("connect to the host socket; parse the date string", retrieve, k=3)
    assert report.plan == ["connect to the host socket", "parse the date string"]
    assert [cid for _, _, cid in report.claims] == ["a.py#0", "b.py#0"]
    assert "[a.py#0]" in report.text
    assert citation_precision([report], [[{"a.py#0"}, {"c.py#0"}]]) == 0.5


def test_a_kit_of_llmlab_pieces_pickles_and_retrieves_the_same(book):
    """The grader replays a check's cases in another process, so a kit must survive pickle."""
    import functools
    import pickle

    import llmlab.rag as rag

    model, tok = book
    torch.manual_seed(0)
    encoder = rag.BiEncoder(model, dim=16, n_layers=0)
    texts = ["def area(r):\n    return 3.14 * r * r", "import os", "class Box:\n    size = 3",
             "def add(a, b):\n    return a + b"]
    embed = rag.Embedder(encoder, tok)
    assert torch.allclose(torch.from_numpy(embed("add two numbers")),
                          torch.from_numpy(rag.encode(encoder, tok, ["add two numbers"], max_len=64)[0]))
    corpus = [rag.words(t) for t in texts]
    assert (rag.BM25.corpus_scores(corpus, ["return", "r"], 1.2, 0.5)
            == rag.BM25(corpus, rag.BM25Config(k1=1.2, b=0.5)).scores(["return", "r"])).all()
    kit = rag.RetrievalKit(
        texts=texts, corpus_words=corpus,
        index=rag.HNSWIndex.build(rag.encode(encoder, tok, texts, max_len=64), rag.HNSWConfig(M=4)),
        embed=embed, bm25=rag.BM25.corpus_scores, search_layer=rag.HNSWIndex.search_layer,
        fuse=rag.reciprocal_rank_fusion, lm_score=functools.partial(rag.query_likelihood, model, tok))
    again = pickle.loads(pickle.dumps(kit))
    for query in ("return the area of a circle", "add a and b"):
        assert rag.hybrid_retrieve(again, query, 2, 4) == rag.hybrid_retrieve(kit, query, 2, 4)
