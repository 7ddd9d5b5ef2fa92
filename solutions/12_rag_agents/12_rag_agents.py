# %% [markdown]
# # 12 · Retrieval, tools and agents: RAG, an agent loop, an MCP server
#
# A language model knows what was in its training data, as of the day training stopped, and
# nothing about your code base. The two ways industry gives it more are **retrieval** — find
# the relevant text and put it in the prompt (RAG) — and **tools** — let the model ask a
# program (a search engine, a Python interpreter, an API) and read the answer (agents). Both are
# made of pieces this book has already built: the tokenizer, the model, the KV and prefix cache,
# constrained decoding, the engine. This chapter builds the rest in `llmlab.rag` and
# `llmlab.agent`, end to end, on the book's model and its corpus, and measures every stage.
#
# **You will learn to**
# 1. chunk documents (fixed windows with overlap, or by structure) and score them with BM25;
# 2. train a small bi-encoder contrastively (InfoNCE with in-batch negatives) on (docstring,
#    code) pairs, and measure retrieval with recall@k, MRR and nDCG on held-out queries;
# 3. search vectors approximately with IVF and HNSW — written from the paper — and compare
#    recall and latency with faiss;
# 4. fuse lexical and dense results (RRF), rerank with the language model, and assemble the
#    whole hybrid retriever yourself;
# 5. measure RAG: the book's model completing unseen functions with and without retrieved
#    context, against an oracle and with distractors; reuse the KV cache of retrieved chunks
#    through the prefix cache, and with CacheBlend when they are not a prefix;
# 6. constrain tool calls to a JSON Schema with chapter 09's token automaton, write the ReAct
#    agent loop and run it with a sandboxed Python tool and the retriever as tools, fine-tune
#    the model to call tools, and serve the tools over the Model Context Protocol;
# 7. run a small "deep research" loop that cites its sources, and measure its citation precision.

# %% [markdown]
# **Budget:** ~3 min on 2 CPU cores · peak RAM ~2 GB. No GPU and no network needed. `FULL = True` (below) trains and evaluates on more data, for several times as long.

# %% tags=["nbval-ignore-output"]
import functools
import json
import math
import random
import sys
import time

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import llmlab.agent as agent
import llmlab.rag as rag
from llmlab import grading
from llmlab.data import load_documents
from llmlab_book import ch12_rag_agents as mistakes
from llmlab.model import load_book_model
from llmlab.serve import TokenAutomaton, regex_to_dfa
from llmlab.utils import seed_all

FULL = False  # True: more files, a longer bi-encoder run, more held-out tasks
N_FILES = 400 if FULL else 150
seed_all(0)
torch.set_num_threads(1)  # the book's model is small: one thread is fastest, and fair on a shared CPU
model, tokenizer = load_book_model()
EOS = tokenizer.special_ids["<|endoftext|>"]
docs = load_documents()[:N_FILES]
pairs = rag.code_pairs(docs)
train_pairs = [p for p in pairs if p.split == "train"]
val_pairs = [p for p in pairs if p.split == "val"]
val_docs = [d for d in docs if any(p.doc == d.name for p in val_pairs)]
print(f"the book's model: {model.num_params() / 1e6:.2f} M parameters, context {model.config.block_size}")
print(f"corpus: {len(docs)} files of the standard library, {len(pairs)} documented functions "
      f"({len(train_pairs)} in training files, {len(val_pairs)} in held-out files)")

# %% [markdown]
# ## 1. The corpus, and cutting it into chunks
#
# The book's corpus is Python source. A documented function is a natural retrieval pair: its
# docstring says in English what the code does, so "find the code that does X" is a search task
# whose answer is known (CodeSearchNet, arXiv:1909.09436, built its benchmark this way).
# `rag.code_pairs` takes each function's first docstring paragraph as the **query** and the
# function with the docstring removed as the **document**. Files are split into training and
# held-out by a hash of their name, so no held-out query has a sibling method in training.

# %%
example = val_pairs[0]
print("query:   ", example.query)
print("document:", example.code[:300])

# %% [markdown]
# A retriever does not index whole files: it indexes **chunks**, the pieces a prompt can quote.
# The simplest chunker cuts windows of `size` characters; an **overlap** makes consecutive windows
# share `overlap` characters, so a sentence cut by one boundary is whole in the next window. A
# structure-aware chunker cuts Python at top-level statements instead, so a chunk is a whole
# function or class — what LangChain's language splitters and LlamaIndex's `CodeSplitter` do.
#
# ### Exercise 12.1 — fixed windows with overlap · 2 points · difficulty 1 · ~10 min
#
# Write `chunk_spans(length, size, overlap)`: the `(start, end)` character spans of windows of
# `size` characters over a text of `length` characters, consecutive windows sharing `overlap`
# characters. Contract: the first span starts at 0, the last ends at `length`, every span but
# the last has length `size`, each starts `size - overlap` after the previous one, and there is
# no window that would hold only characters the previous window already has. An empty text has
# no spans. Raise `ValueError` unless `size >= 1` and `0 <= overlap < size`.
#
# <details><summary>Hint 1</summary>Walk the start forward by the stride; decide when to stop
# before adding a window that brings nothing new.</details>
# <details><summary>Hint 2</summary>Once a window reaches the end of the text, it is the
# last.</details>

# %% solution="chunk_spans"
def chunk_spans(length: int, size: int, overlap: int = 0) -> list[tuple[int, int]]:
    """(start, end) spans of windows of `size` characters sharing `overlap` characters."""
    ### BEGIN SOLUTION
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"need size >= 1 and 0 <= overlap < size, got {size}, {overlap}")
    spans, start = [], 0
    while start < length:
        spans.append((start, min(start + size, length)))
        if start + size >= length:
            break
        start += size - overlap
    return spans
    ### END SOLUTION


# %% check="chunk_spans" points=1
SPAN_MISTAKES = {"stepping by size (the overlap ignored)": mistakes.spans_without_overlap,
                 "a last window that holds only overlap": mistakes.spans_with_a_tail_of_overlap}
grading.check_function(chunk_spans, rag.fixed_spans, cases=[
    grading.Case(25, 10, 3, note="25 characters, windows of 10 sharing 3"),
    grading.Case(10, 10, 3, note="the text fits one window"),
    grading.Case(100, 30, 0, note="no overlap"),
], block=[rag.fixed_spans, rag.fixed_chunks], mistakes=SPAN_MISTAKES,
   hint="the stride is size - overlap; stop once a window reaches the end")

# %% hidden="chunk_spans" points=1
def raises_value_error(fn):
    def probe(*args):
        try:
            return fn(*args)
        except ValueError:
            return "ValueError"
    return probe


grading.check_function(raises_value_error(chunk_spans), raises_value_error(rag.fixed_spans), cases=[
    grading.Case(0, 5, 1, note="empty text"),
    grading.Case(1000, 64, 16, note="a long text"),
    grading.Case(23, 7, 6, note="stride 1"),
    grading.Case(17, 5, 0, note="a short last window"),
    grading.Case(10, 4, 4, note="overlap == size is an error"),
    grading.Case(10, 0, 0, note="size 0 is an error"),
], block=[rag.fixed_spans, rag.fixed_chunks], name="chunk_spans", mistakes={
    k: raises_value_error(v) for k, v in SPAN_MISTAKES.items()})

# %% [markdown]
# How often does each chunker cut a function in two? Below, every documented function of the
# held-out files, and the share that lies whole inside one chunk, for fixed windows (your
# `chunk_spans` once it passes) and for structure-aware chunks of about the same size.

# %% tags=["grading-skip"]
spans_fn = grading.prefer_yours(chunk_spans, rag.fixed_spans, [(25, 10, 3), (1000, 64, 16), (5, 4, 3)],
                                name="chunk_spans")


def whole_share(spans_of) -> float:
    whole = total = 0
    for d in val_docs:
        spans = spans_of(d.text)
        for p in (p for p in val_pairs if p.doc == d.name):
            total += 1
            whole += any(a <= p.start and p.end <= b for a, b in spans)
    return whole / total


rows = [("fixed 600, overlap 0", lambda t: spans_fn(len(t), 600, 0)),
        ("fixed 600, overlap 150", lambda t: spans_fn(len(t), 600, 150)),
        ("by structure, ≤ 600", lambda t: rag.structure_spans(t, 600))]
chunk_stats = {}
for name, fn in rows:
    chunk_stats[name] = (sum(len(fn(d.text)) for d in val_docs), whole_share(fn))
    print(f"{name:24} {chunk_stats[name][0]:5d} chunks   functions whole in one chunk: "
          f"{chunk_stats[name][1]:.0%}")
(n0, w0), (n1, w1), (n2, w2) = chunk_stats.values()
assert n1 > n0 and w1 > w0, "overlap should cost chunks and buy whole functions"
assert w2 > w1 and n2 < n1, "structure should keep more functions whole with fewer chunks"

# %% [markdown]
# Overlap buys whole functions with more chunks (a bigger index); cutting at statements gets
# more of them whole for fewer chunks, because it never cuts *inside* a short function (the
# cell asserts both). From here on the held-out files are indexed as structure-aware chunks.

# %%
chunks = [c for d in val_docs for c in rag.structure_chunks(d, 600)]
chunk_texts = [c.text for c in chunks]
print(f"{len(chunks)} chunks from {len(val_docs)} held-out files")

# %% [markdown]
# ## 2. Lexical retrieval: BM25
#
# BM25 (Robertson & Zaragoza, 2009) scores a document $d$ for a query of terms $q_i$:
#
# $$\mathrm{score}(q, d) = \sum_i \mathrm{idf}(q_i)\,
#   \frac{f(q_i, d)}{f(q_i, d) + k_1\left(1 - b + b\,\frac{|d|}{\overline{|d|}}\right)},
# \qquad \mathrm{idf}(t) = \ln\!\left(1 + \frac{N - n_t + 0.5}{n_t + 0.5}\right)$$
#
# with $f$ the term's count in $d$, $|d|$ its length, $\overline{|d|}$ the mean length,
# $N$ documents of which $n_t$ contain $t$. A rare term weighs a lot, a common one almost
# nothing; a term's tenth occurrence adds little ($k_1$ sets the saturation); long documents
# are discounted ($b$). This is Lucene's form (Elasticsearch, OpenSearch, Solr) and the default
# of `bm25s`; Robertson's original idf, $\ln\frac{N - n + 0.5}{n + 0.5}$, goes negative for
# terms in more than half the documents (`rank_bm25` floors it). `rag.BM25` implements both,
# and the test suite checks its scores equal `bm25s`'s and `rank_bm25`'s on the same tokens.
#
# ### Exercise 12.2 — predict first: how much is a rare word worth? · 2 points · difficulty 1 · ~5 min
#
# In a corpus of 1,000 functions, `getaddrinfo` appears in 2 and `self` in 900. **Before
# running anything**, work out the ratio idf(`getaddrinfo`) / idf(`self`) with the Lucene idf
# above, and return it (two significant figures are enough to pass).

# %% solution="predict_idf_ratio"
def predict_idf_ratio() -> float:
    """idf("getaddrinfo") / idf("self") with Lucene's idf, N = 1000, n = 2 and 900."""
    ### BEGIN SOLUTION
    return math.log(1 + 998.5 / 2.5) / math.log(1 + 100.5 / 900.5)
    ### END SOLUTION


# %% check="predict_idf_ratio" points=1
def idf_ratio_of_an_index():
    """The ratio in llmlab's BM25 index over such a corpus."""
    corpus = [["getaddrinfo"] * (i < 2) + ["self"] * (i < 900) + ["pass"] for i in range(1000)]
    idf = rag.BM25(corpus).idf
    return idf["getaddrinfo"] / idf["self"]


IDF_MISTAKES = {"Robertson's idf without the 1 + (negative for `self`)": mistakes.idf_ratio_robertson,
                "the plain ln(N / n), without BM25's smoothing": mistakes.idf_ratio_plain}
grading.check_function(predict_idf_ratio, idf_ratio_of_an_index, [grading.Case(note="N = 1000, n = 2 and 900")],
                       rtol=1e-2, mistakes=IDF_MISTAKES,
                       hint="work out the idf of each word with the formula above, then divide")

# %% hidden="predict_idf_ratio" points=1
grading.check_function(predict_idf_ratio, idf_ratio_of_an_index, [grading.Case(note="the ratio")], rtol=1e-2,
                       mistakes=IDF_MISTAKES)

# %% [markdown]
# ### Exercise 12.3 — BM25 scores · 3 points · difficulty 2 · ~20 min
#
# Write `bm25_scores(corpus, query, k1=1.5, b=0.75)`: `corpus` is a list of tokenized documents
# (lists of words), `query` a list of words; return a float64 NumPy array with every document's
# Lucene BM25 score (the formula above). A query word the corpus lacks adds nothing; a word
# repeated in the query counts each time. `rag.BM25` is blocked — write the statistics yourself.
#
# <details><summary>Hint 1</summary>Count once: document lengths, the mean length, and for each
# word the number of documents holding it.</details>
# <details><summary>Hint 2</summary><code>collections.Counter(doc)</code> gives f(t, d) for every
# word of a document.</details>

# %% solution="bm25_scores"
def bm25_scores(corpus: list[list[str]], query: list[str], k1: float = 1.5,
                b: float = 0.75) -> np.ndarray:
    """(len(corpus),) float64 Lucene BM25 scores of every document for `query`."""
    ### BEGIN SOLUTION
    from collections import Counter

    counts = [Counter(doc) for doc in corpus]
    lengths = np.array([len(doc) for doc in corpus], dtype=np.float64)
    avg = lengths.mean() or 1.0
    df = Counter(t for c in counts for t in c)
    n = len(corpus)
    scores = np.zeros(n)
    for t in query:
        if t not in df:
            continue
        idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
        tf = np.array([c[t] for c in counts], dtype=np.float64)
        scores += idf * tf / (tf + k1 * (1 - b + b * lengths / avg))
    return scores
    ### END SOLUTION


# %% check="bm25_scores" points=1
def ref_bm25_scores(corpus, query, k1=1.5, b=0.75):
    return rag.BM25(corpus, rag.BM25Config(k1=k1, b=b)).scores(query)


BM25_MISTAKES = {"Robertson's idf (no 1 + inside the log)": mistakes.bm25_okapi_idf,
                 "no length normalisation (b ignored)": mistakes.bm25_without_length_norm}
toy = [["open", "file", "read"], ["socket", "open"], ["read", "read", "lines", "file", "text"]]
grading.check_function(bm25_scores, ref_bm25_scores, cases=[
    grading.Case(toy, ["read"], note="one word"),
    grading.Case(toy, ["open", "file"], 1.2, 0.5, note="two words, other k1 and b"),
    grading.Case(toy, ["zebra"], note="a word the corpus lacks"),
], block=[rag.BM25], mistakes=BM25_MISTAKES,
   hint="idf = ln(1 + (N - n + 0.5) / (n + 0.5)); f / (f + k1 (1 - b + b |d| / avg))")

# %% hidden="bm25_scores" points=2
real = [rag.words(d.text[:3000]) for d in docs[:40]]
grading.check_function(bm25_scores, ref_bm25_scores, cases=[
    grading.Case(real, rag.words("return the list of lines"), note="40 real files"),
    grading.Case(real, ["self", "self", "socket"], 0.9, 0.3, note="a repeated word"),
    grading.Case(toy, ["open", "socket", "open"], 2.0, 1.0, note="b = 1"),
    grading.Case([["a"], ["b", "b"], ["a", "b"]], ["a", "b"], note="tiny documents"),
], block=[rag.BM25], mistakes=BM25_MISTAKES)

# %% tags=["grading-skip"]
lexical_scores = grading.prefer_yours(bm25_scores, ref_bm25_scores, name="bm25_scores", cases=[
    (toy, ["read", "open"]), ([rag.words(d.text[:2000]) for d in docs[:10]], ["self", "path"])])
query_words = [rag.words(p.query) for p in val_pairs]
code_words = [rag.words(p.code) for p in val_pairs]
bm25_ranked = []
for qw in tqdm(query_words, desc="BM25 over held-out pairs", leave=False):
    s = lexical_scores(code_words, qw)
    bm25_ranked.append(np.lexsort((np.arange(len(s)), -s))[:20].tolist())
hits = sum(r[0] == i for i, r in enumerate(bm25_ranked))
print(f"BM25: the right function is ranked first for {hits} of {len(val_pairs)} held-out "
      f"docstrings ({hits / len(val_pairs):.0%})")

# %% [markdown]
# ## 3. Dense retrieval: a bi-encoder trained with in-batch negatives
#
# BM25 needs the query and the document to share words. A docstring says "Return the number of
# days in a month"; the code says `mdays[month] + (month == February and isleap(year))`. A
# **bi-encoder** maps each text to a vector so that a query lands near its document, whatever
# words either uses; documents are encoded once, offline, and a search is one inner product per
# document. The encoder here is the book's model body (its first layer), mean-pooled over the
# tokens and projected to 128 numbers — the recipe of SGPT and of today's LLM-based embedders,
# on a very small model.
#
# Training is **contrastive**. A batch holds $B$ (query, document) pairs; each query's own
# document is its positive and the other $B-1$ documents of the batch are its negatives (DPR's
# in-batch negatives, arXiv:2004.04906). With unit vectors and a temperature $\tau$, the
# **InfoNCE** loss (arXiv:1807.03748) is
#
# $$\mathcal{L} = -\frac{1}{B}\sum_{i=1}^{B}\log\frac{\exp(q_i\cdot d_i/\tau)}{\sum_{j=1}^{B}\exp(q_i\cdot d_j/\tau)}.$$
#
# ### Exercise 12.4 — InfoNCE with in-batch negatives · 3 points · difficulty 2 · ~15 min
#
# Write `info_nce(q, d, temperature)` for `q`, `d` of shape `(B, dim)` (unit rows; row `i` of `d`
# is the positive of row `i` of `q`): return the scalar loss above (a 0-d tensor that
# backpropagates). `F.cross_entropy` and `rag.info_nce` are blocked: write the log-softmax
# yourself, in a numerically stable way (a large `1/τ` must not overflow).
#
# <details><summary>Hint 1</summary>All the similarities at once are one matrix
# product.</details>
# <details><summary>Hint 2</summary><code>torch.logsumexp</code> is the stable log of a sum of
# exponentials.</details>

# %% solution="info_nce"
def info_nce(q: torch.Tensor, d: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """q, d: (B, dim) unit vectors, d[i] the positive of q[i] -> scalar InfoNCE loss."""
    ### BEGIN SOLUTION
    logits = q @ d.T / temperature  # (B, B)
    return (logits.logsumexp(-1) - logits.diagonal()).mean()
    ### END SOLUTION


# %% check="info_nce" points=1
NCE_MISTAKES = {"no temperature (raw cosines as logits)": mistakes.info_nce_without_temperature,
                "the positive left out of the denominator": mistakes.info_nce_without_positive_in_denominator,
                "CLIP's symmetric loss (both directions)": mistakes.info_nce_symmetric}
g = torch.Generator().manual_seed(0)
unit = lambda *shape: F.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
grading.check_function(info_nce, rag.info_nce, cases=[
    grading.Case(unit(4, 8), unit(4, 8), 0.1, note="a batch of 4"),
    grading.Case(unit(6, 16), unit(6, 16), 0.05, note="a batch of 6, tau = 0.05"),
], block=[rag.info_nce, F.cross_entropy], mistakes=NCE_MISTAKES,
   hint="cross-entropy of the (B, B) similarity matrix / tau against its diagonal")

# %% hidden="info_nce" points=2
g = torch.Generator().manual_seed(1)
same = unit(5, 8)
grading.check_function(info_nce, rag.info_nce, cases=[
    grading.Case(same, same.clone(), 0.01, note="queries equal to documents, 1/tau = 100"),
    grading.Case(unit(32, 64), unit(32, 64), 0.02, note="a batch of 32"),
    grading.Case(unit(2, 4), unit(2, 4), 1.0, note="tau = 1"),
], block=[rag.info_nce, F.cross_entropy], mistakes=NCE_MISTAKES)
x = unit(3, 4).requires_grad_()
loss = info_nce(x, unit(3, 4), 0.1)
grading.expect(loss.dim() == 0 and loss.requires_grad, "info_nce must return a 0-d tensor that "
               "backpropagates to q and d")

# %% [markdown]
# Now the real run: the bi-encoder trains on the (docstring, code) pairs of the training files,
# with your loss once it passes.

# %% tags=["nbval-ignore-output", "grading-skip"]
nce = grading.prefer_yours(info_nce, rag.info_nce, [(unit(4, 8), unit(4, 8), 0.1)], atol=1e-5)
seed_all(0)
encoder = rag.BiEncoder(model, dim=128, n_layers=1)
enc_cfg = rag.BiEncoderConfig(steps=300 if FULL else 60, batch_size=32, max_len=64, lr=1e-3)
t0 = time.perf_counter()
enc_losses = rag.train_biencoder(encoder, tokenizer, [(p.query, p.code) for p in train_pairs], enc_cfg,
                                 loss_fn=nce, progress=True)
print(f"{enc_cfg.steps} steps in {time.perf_counter() - t0:.0f} s")

# %% tags=["nbval-ignore-output", "grading-skip"]
plt.figure(figsize=(6, 2.6))
plt.plot(enc_losses)
plt.axhline(math.log(enc_cfg.batch_size), color="gray", ls="--", label=f"ln B = chance ({math.log(32):.2f})")
plt.xlabel("step"), plt.ylabel("InfoNCE loss"), plt.legend()
plt.title("the bi-encoder learns to match docstrings to code")
plt.tight_layout()
plt.show()
print(f"loss: {enc_losses[0]:.2f} at the start (chance is ln 32 = {math.log(32):.2f}), "
      f"{np.mean(enc_losses[-10:]):.2f} over the last 10 steps")
assert np.mean(enc_losses[-10:]) < math.log(enc_cfg.batch_size) / 2, "the encoder should learn well below chance"

# %% tags=["grading-skip"]
code_vecs = rag.encode(encoder, tokenizer, [p.code for p in val_pairs], max_len=64)
query_vecs = rag.encode(encoder, tokenizer, [p.query for p in val_pairs], max_len=64)
dense_ranked = rag.exact_search(code_vecs, query_vecs, 20)[1].tolist()

# %% [markdown]
# ## 4. Measuring a retriever
#
# Each held-out docstring has one right function. For a ranked list per query:
#
# - **recall@k**: the share of a query's relevant documents in its top $k$;
# - **MRR**: the mean of $1/\text{rank}$ of the first relevant document (0 if none);
# - **nDCG@k**: $\sum_{r \le k} \mathrm{rel}_r / \log_2(r + 1)$, divided by the same sum for the
#   ideal ranking, so 1 means every relevant document sits at the top.
#
# ### Exercise 12.5 — recall@k, MRR and nDCG@k · 3 points · difficulty 2 · ~15 min
#
# Write `ranking_metrics(ranked, relevant, k)`: `ranked[i]` is query `i`'s ranked list of ids,
# `relevant[i]` the set of its relevant ids (never empty). Return `(recall_at_k, mrr, ndcg_at_k)`,
# each averaged over queries, with binary relevance and ranks counted from 1. The functions in
# `rag.metrics` are blocked.
#
# <details><summary>Hint 1</summary>The ideal DCG puts min(k, |relevant|) relevant documents at
# ranks 1, 2, ….</details>

# %% solution="ranking_metrics"
def ranking_metrics(ranked: list[list], relevant: list[set], k: int) -> tuple[float, float, float]:
    """(recall@k, MRR, nDCG@k) averaged over queries."""
    ### BEGIN SOLUTION
    recall = rr = ndcg = 0.0
    for ranking, rel in zip(ranked, relevant):
        recall += len(set(ranking[:k]) & rel) / len(rel)
        rr += next((1.0 / (i + 1) for i, doc in enumerate(ranking) if doc in rel), 0.0)
        dcg = sum(1.0 / math.log2(i + 2) for i, doc in enumerate(ranking[:k]) if doc in rel)
        ndcg += dcg / sum(1.0 / math.log2(i + 2) for i in range(min(k, len(rel))))
    n = len(relevant)
    return recall / n, rr / n, ndcg / n
    ### END SOLUTION


# %% check="ranking_metrics" points=1
def ref_ranking_metrics(ranked, relevant, k):
    return (rag.recall_at_k(ranked, relevant, k), rag.mrr(ranked, relevant),
            rag.ndcg_at_k(ranked, relevant, k))


METRIC_MISTAKES = {"precision@k (hits / k) instead of recall@k": mistakes.metrics_precision_not_recall,
                   "DCG not divided by the ideal DCG": mistakes.metrics_unnormalised_dcg}
grading.check_function(ranking_metrics, ref_ranking_metrics, cases=[
    grading.Case([["x", "a", "y"], ["b", "q", "c"]], [{"a"}, {"b", "c"}], 2, note="two queries, k = 2"),
    grading.Case([[3, 1, 2]], [{2}], 3, note="relevant at rank 3"),
], block=[rag.recall_at_k, rag.mrr, rag.ndcg_at_k], mistakes=METRIC_MISTAKES,
   hint="rank r contributes 1 / log2(r + 1), ranks from 1")

# %% hidden="ranking_metrics" points=2
grading.check_function(ranking_metrics, ref_ranking_metrics, cases=[
    grading.Case([["z", "w"], ["a", "b", "c", "d"]], [{"v"}, {"a", "d", "e"}], 3, note="a miss, three relevant"),
    grading.Case([list(range(10))], [{9}], 5, note="relevant beyond k"),
    grading.Case([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [{1, 2, 3}, {6}, {8}], 1, note="k = 1"),
], block=[rag.recall_at_k, rag.mrr, rag.ndcg_at_k], mistakes=METRIC_MISTAKES)

# %% tags=["nbval-ignore-output", "grading-skip"]
metrics_fn = grading.prefer_yours(ranking_metrics, ref_ranking_metrics, name="ranking_metrics", cases=
                                  [([["x", "a"], ["b", "c"]], [{"a"}, {"c", "q"}], 2)])
truth_sets = [{i} for i in range(len(val_pairs))]


def table(named_rankings, truth):
    print(f"{'retriever':24} recall@1  recall@10    MRR  nDCG@10")
    out = {}
    for name, ranked in named_rankings:
        r1 = metrics_fn(ranked, truth[:len(ranked)], 1)[0]
        r10, m, n10 = metrics_fn(ranked, truth[:len(ranked)], 10)
        out[name] = (r1, r10, m, n10)
        print(f"{name:24} {r1:8.2f} {r10:10.2f} {m:6.2f} {n10:8.2f}")
    return out


retrieval_table = table([("BM25", bm25_ranked), ("bi-encoder (exact)", dense_ranked)], truth_sets)

# %% [markdown]
# ## 5. Approximate nearest neighbours: IVF and HNSW
#
# An exact search scores every vector: fine for thousands, not for the billions a web index
# holds. Two families of approximate indexes dominate:
#
# - **IVF** (inverted file; Jégou et al., TPAMI 2011): k-means cuts the space into `nlist`
#   cells; a query scans only the `nprobe` cells whose centroids are closest. A true neighbour in
#   an unprobed cell is missed.
# - **HNSW** (Malkov & Yashunin, arXiv:1603.09320): a graph where each vector links to about `M`
#   near neighbours, in layers — few nodes on top, all of them at the bottom. A search greedily
#   walks down the sparse layers, then runs a **best-first search with a beam of `ef`** on the
#   bottom layer. faiss, hnswlib, Lucene, pgvector, Qdrant and Weaviate all use it.
#
# `rag.HNSWIndex` implements the paper's algorithms (insertion with its neighbour-selection
# heuristic, the layered search). Its heart, used both to insert and to search, is
# `search_layer` (the paper's Algorithm 2).
#
# ### Exercise 12.6 — HNSW's layer search · 5 points · difficulty 3 · ~40 min
#
# Write `search_layer(index, q, entry, ef, layer)`. `index.layers[layer]` maps a node to the list
# of its neighbours on that layer; score vectors **only** through `index.sims(q, nodes)` (a
# NumPy array of inner products — higher is closer; it counts the work in
# `index.distance_computations`). Starting from the nodes in `entry`, return the `ef` nodes
# nearest `q` that a best-first search finds, as `[(similarity, node), ...]` best first (ties: the
# lower node id first).
#
# Contract, as Algorithm 2 states it: a node is scored at most once; the search keeps a
# candidate set (closest first) and a result set of at most `ef` nodes (its worst known); it
# takes the closest candidate, stops when that candidate is worse than the worst result while the
# results are full, and otherwise scores the neighbours it has not seen, each entering both sets
# when the results are not full or it beats their worst. The check compares your results *and*
# the number of vectors you scored with the reference: a search that scores more than
# Algorithm 2 does (a scan, or no stopping rule) fails, so does a narrower beam. The index's own
# `search_layer` and `search` are blocked.
#
# <details><summary>Hint 1 — idea</summary>Two heaps: a max-heap of candidates to expand and a
# min-heap of the best results (its top is the worst result, the one to compare with).</details>
# <details><summary>Hint 2 — structure</summary><code>heapq</code> is a min-heap: push
# <code>(-sim, node)</code> for the candidates and <code>(sim, node)</code> for the results;
# pop the results' heap whenever it holds more than <code>ef</code>.</details>
# <details><summary>Hint 3 — the stopping rule</summary>Stop when
# <code>closest_candidate_sim &lt; worst_result_sim</code> and <code>len(results) &gt;= ef</code>.</details>

# %% solution="search_layer"
def search_layer(index: rag.HNSWIndex, q: np.ndarray, entry: list[int], ef: int,
                 layer: int) -> list[tuple[float, int]]:
    """Best-first search of one HNSW layer from `entry` with a beam of `ef` -> [(sim, node)]."""
    ### BEGIN SOLUTION
    import heapq

    graph = index.layers[layer]
    visited = set(entry)
    sims = index.sims(q, entry)
    candidates = [(-float(s), n) for s, n in zip(sims, entry)]
    results = [(float(s), n) for s, n in zip(sims, entry)]
    heapq.heapify(candidates)
    heapq.heapify(results)
    while len(results) > ef:
        heapq.heappop(results)
    while candidates:
        neg, c = heapq.heappop(candidates)
        if -neg < results[0][0] and len(results) >= ef:
            break
        fresh = [n for n in graph[c] if n not in visited]
        visited.update(fresh)
        if not fresh:
            continue
        for s, n in zip(index.sims(q, fresh).tolist(), fresh):
            if len(results) < ef or s > results[0][0]:
                heapq.heappush(candidates, (-s, n))
                heapq.heappush(results, (s, n))
                if len(results) > ef:
                    heapq.heappop(results)
    return sorted(results, key=lambda t: (-t[0], t[1]))
    ### END SOLUTION


# %% check="search_layer" points=2
def with_cost(fn):
    """What the check compares: the results, and how many vectors the search scored."""
    def probe(index, q, entry, ef, layer):
        before = index.distance_computations
        return fn(index, q, entry, ef, layer), index.distance_computations - before
    return probe


def ref_search_layer(index, q, entry, ef, layer):
    return rag.HNSWIndex.search_layer(index, q, entry, ef, layer)  # llmlab's, not a subclass's


def clustered_vectors(n, d, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, d))
    x = centres[rng.integers(12, size=n)] + 0.7 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


small_index = rag.HNSWIndex.build(clustered_vectors(300, 16, 0), rag.HNSWConfig(M=6, ef_construction=24))
probe_q = clustered_vectors(4, 16, 1)
LAYER_MISTAKES = {"a beam of one (greedy) whatever ef is": with_cost(mistakes.search_layer_greedy),
                  "no stopping rule (every reachable node scored)": with_cost(mistakes.search_layer_without_early_stop)}
grading.check_function(with_cost(search_layer), with_cost(ref_search_layer), cases=[
    grading.Case(small_index, probe_q[0], [small_index.entry], 10, 0, note="layer 0, ef = 10"),
    grading.Case(small_index, probe_q[1], [5, 77], 4, 0, note="two entry points, ef = 4"),
], block=[rag.HNSWIndex.search_layer, rag.HNSWIndex.search], mistakes=LAYER_MISTAKES, name="search_layer",
   hint="stop when the closest candidate is worse than the worst of ef results")

# %% hidden="search_layer" points=3
grading.check_function(with_cost(search_layer), with_cost(ref_search_layer), cases=[
    grading.Case(small_index, probe_q[2], [small_index.entry], 1, small_index.max_level, note="top layer, ef = 1"),
    grading.Case(small_index, probe_q[3], [0], 40, 0, note="a wide beam"),
    grading.Case(small_index, probe_q[0], [3, 4, 5, 6, 7], 3, 0, note="more entry points than ef"),
    grading.Case(small_index, -probe_q[1], [small_index.entry], 16, 0, note="a query far from the data"),
], block=[rag.HNSWIndex.search_layer, rag.HNSWIndex.search], mistakes=LAYER_MISTAKES, name="search_layer")

# %% [markdown]
# Your layer search now drives the whole index: every insertion and every query below goes
# through it. On the bi-encoder's vectors of the held-out functions, recall@10 against the exact
# search and the time per query, for IVF over `nprobe`, HNSW over `ef`, and faiss's exact and HNSW
# indexes on the same vectors (faiss is C++ with SIMD: its times show what an implementation
# costs, ours what the algorithm visits).

# %% tags=["nbval-ignore-output", "grading-skip"]
layer_fn = grading.prefer_yours(search_layer, ref_search_layer, [(small_index, probe_q[0], [0], 8, 0)], name="search_layer",
                                probe=with_cost)


class YourHNSW(rag.HNSWIndex):
    """llmlab's HNSW index, searching each layer with the chapter's `layer_fn`."""

    def search_layer(self, q, entry, ef, layer):
        return layer_fn(self, q, entry, ef, layer)


def per_query_ms(search, queries, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        search(queries)
        times.append((time.perf_counter() - t0) / len(queries) * 1e3)
    return float(np.median(times))


t0 = time.perf_counter()
hnsw = YourHNSW.build(code_vecs, rag.HNSWConfig(M=8, ef_construction=40))
hnsw_build_s = time.perf_counter() - t0
ivf = rag.IVFIndex.build(code_vecs, 16)
exact10 = rag.exact_search(code_vecs, query_vecs, 10)[1]
ann_rows = [("exact (NumPy)", 1.0, per_query_ms(lambda q: rag.exact_search(code_vecs, q, 10), query_vecs))]
for nprobe in (1, 2, 4, 8):
    found = ivf.search(query_vecs, 10, nprobe)[1]
    ann_rows.append((f"IVF nprobe={nprobe}", rag.recall_at(found, exact10),
                     per_query_ms(lambda q, p=nprobe: ivf.search(q, 10, p), query_vecs)))
for ef in (10, 20, 40, 80):
    found = hnsw.search(query_vecs, 10, ef)[1]
    ann_rows.append((f"HNSW ef={ef}", rag.recall_at(found, exact10),
                     per_query_ms(lambda q, e=ef: hnsw.search(q, 10, e), query_vecs, 1)))
try:
    import faiss

    flat = faiss.IndexFlatIP(code_vecs.shape[1])
    flat.add(code_vecs)
    ann_rows.append(("faiss exact", rag.recall_at(flat.search(query_vecs, 10)[1], exact10),
                     per_query_ms(lambda q: flat.search(q, 10), query_vecs)))
    fh = faiss.IndexHNSWFlat(code_vecs.shape[1], 8, faiss.METRIC_INNER_PRODUCT)
    fh.hnsw.efConstruction = 40
    fh.add(code_vecs)
    for ef in (10, 40):
        fh.hnsw.efSearch = ef
        ann_rows.append((f"faiss HNSW ef={ef}", rag.recall_at(fh.search(query_vecs, 10)[1], exact10),
                         per_query_ms(lambda q: fh.search(q, 10), query_vecs)))
except ImportError:
    print("faiss-cpu is not installed (pip install llmlab[parity]): its rows are left out")
print(f"HNSW over {len(code_vecs)} vectors built in {hnsw_build_s:.1f} s (pure Python)")
print(f"{'index':20} recall@10   ms/query")
for name, r, ms in ann_rows:
    print(f"{name:20} {r:9.2f} {ms:10.3f}")

# %% tags=["nbval-ignore-output", "grading-skip"]
ours_hnsw = [(n, r) for n, r, _ in ann_rows if n.startswith("HNSW")]
plt.figure(figsize=(6, 2.8))
plt.plot([int(n.split("=")[1]) for n, _ in ours_hnsw], [r for _, r in ours_hnsw], "o-", label="HNSW (yours)")
ivf_rows = [(n, r) for n, r, _ in ann_rows if n.startswith("IVF")]
plt.plot([int(n.split("=")[1]) * 10 for n, _ in ivf_rows], [r for _, r in ivf_rows], "s-",
         label="IVF (x = 10 × nprobe)")
plt.xscale("log"), plt.xlabel("ef (HNSW) · 10 × nprobe (IVF)"), plt.ylabel("recall@10")
plt.title("approximate search: a wider search finds more of the true neighbours")
plt.legend()
plt.tight_layout()
plt.show()
hnsw_recalls = [r for _, r in ours_hnsw]
assert hnsw_recalls[-1] >= hnsw_recalls[0], "a wider beam cannot find fewer neighbours here"
print(f"HNSW recall@10 rises from {hnsw_recalls[0]:.2f} (ef=10) to {hnsw_recalls[-1]:.2f} (ef=80)")

# %% [markdown]
# ## 6. Hybrid search: fusion, a reranker, and the whole retriever
#
# BM25 and the bi-encoder fail on different queries. **Reciprocal rank fusion** (Cormack et
# al., SIGIR 2009) merges their rankings using ranks only, so a BM25 score and a cosine need no
# calibration: $\mathrm{RRF}(d) = \sum_{\text{rankings}} 1/(k + \mathrm{rank}(d))$, ranks from 1,
# $k = 60$.
#
# ### Exercise 12.7 — reciprocal rank fusion · 2 points · difficulty 1 · ~10 min
#
# Write `rrf(rankings, k=60)`: `rankings` is a list of ranked lists of ids (no id twice in one
# list); return `[(id, score), ...]` sorted by score, best first, ties in order of first
# appearance (first ranking first, rank by rank). `rag.reciprocal_rank_fusion` is blocked.

# %% solution="rrf"
def rrf(rankings: list[list], k: float = 60.0) -> list[tuple]:
    """Reciprocal rank fusion -> [(id, score)] best first."""
    ### BEGIN SOLUTION
    scores: dict = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])
    ### END SOLUTION


# %% check="rrf" points=1
RRF_MISTAKES = {"ranks counted from 0": mistakes.rrf_ranks_from_zero,
                "no k (1 / rank)": mistakes.rrf_without_k}
grading.check_function(rrf, rag.reciprocal_rank_fusion, cases=[
    grading.Case([["a", "b", "c"], ["c", "a"]], note="two rankings"),
    grading.Case([[3, 1], [1, 2], [2, 3]], 10.0, note="three rankings, k = 10"),
], block=[rag.reciprocal_rank_fusion], mistakes=RRF_MISTAKES, hint="1 / (k + rank), ranks from 1")

# %% hidden="rrf" points=1
grading.check_function(rrf, rag.reciprocal_rank_fusion, cases=[
    grading.Case([["a", "b"], ["b", "a"]], note="a tie: first appearance wins"),
    grading.Case([list(range(20)), list(range(19, -1, -1))], 1.0, note="reversed lists, k = 1"),
    grading.Case([["x"]], note="one list of one"),
], block=[rag.reciprocal_rank_fusion], mistakes=RRF_MISTAKES)

# %% [markdown]
# A **reranker** reads the query and a document *together*, which a bi-encoder never does, so
# it is better and far slower: it reorders only the first stage's top few. Ours is the book's
# model, scoring how likely it finds the docstring right after the code's signature — UPR's
# query likelihood, $\frac{1}{|q|}\log p(q \mid d)$ (arXiv:2204.07496); production systems use
# a trained cross-encoder (Cohere Rerank, bge-reranker) the same way.
#
# ### Exercise 12.8 — the hybrid retriever · 6 points · difficulty 2 · ~40 min
#
# Assemble the retrieval stack. Write `hybrid_retrieve(kit, query, k=3, depth=10)` returning the
# indices (into `kit.texts`) of the `k` best documents. The `kit` (a `rag.RetrievalKit`) holds the
# documents and the pieces to use: `kit.corpus_words` (`rag.words` of each text),
# `kit.bm25(corpus_words, query_words, k1, b)`, `kit.index` (an HNSW index over the documents'
# vectors) with `kit.search_layer(index, q, entry, ef, layer)`, `kit.embed(text)` (a unit
# vector), `kit.fuse(rankings, k)` and `kit.lm_score(query, texts)` (higher is better). Contract:
#
# - lexical: BM25 with `k1 = 1.2`, `b = 0.75` over `rag.words(query)`; keep the `depth` best
#   documents with a positive score, best first (ties: lower index first);
# - dense: the HNSW search of the paper — from `index.entry`, descend the layers
#   `index.max_level … 1` keeping the single best node of each (a beam of 1), then search
#   layer 0 with a beam of `max(32, depth)`; keep the `depth` best;
# - fuse the lexical list and the dense list (in that order) with `kit.fuse(…, 60)` and keep the
#   fused `depth` best;
# - rerank those by `kit.lm_score`, best first (ties keep the fused order), and return the first
#   `k`.
#
# `rag.hybrid_retrieve`, `rag.hnsw_search` and `HNSWIndex.search` are blocked. The chapter's RAG,
# agent and research demos below run on your retriever, built from your BM25, layer search and
# fusion.
#
# <details><summary>Hint 1 — idea</summary>Two first-stage lists, one fused list, one rerank:
# four small steps, each a few lines.</details>
# <details><summary>Hint 2 — structure</summary><code>np.lexsort((np.arange(n), -scores))</code>
# sorts by score, ties by index; the descent is a loop over layers calling
# <code>kit.search_layer(kit.index, q, [node], 1, layer)[0][1]</code>.</details>
# <details><summary>Hint 3 — the rerank</summary><code>sorted(range(len(fused)), key=lambda j:
# -scores[j])</code> is stable, so ties keep the fused order.</details>

# %% solution="hybrid_retrieve"
def hybrid_retrieve(kit: rag.RetrievalKit, query: str, k: int = 3, depth: int = 10) -> list[int]:
    """Indices of the k best documents: BM25 + HNSW, fused by RRF, reranked by the LM."""
    ### BEGIN SOLUTION
    if k < 1 or depth < k:
        raise ValueError(f"need 1 <= k <= depth, got k={k}, depth={depth}")
    # lexical: BM25's depth best with a positive score
    scores = np.asarray(kit.bm25(kit.corpus_words, rag.words(query), 1.2, 0.75))
    order = np.lexsort((np.arange(len(scores)), -scores))
    lexical = [int(i) for i in order[:depth] if scores[i] > 0]
    # dense: greedy descent through the upper layers, then a beam on layer 0
    index = kit.index
    q = kit.embed(query)
    node = index.entry
    for layer in range(index.max_level, 0, -1):
        node = kit.search_layer(index, q, [node], 1, layer)[0][1]
    found = kit.search_layer(index, q, [node], max(32, depth), 0)
    dense = [n for _, n in found[:depth]]
    # fuse the two rankings, keep the head
    fused = [doc for doc, _ in kit.fuse([lexical, dense], 60)][:depth]
    # rerank the head with the language model
    texts = [kit.texts[i] for i in fused]
    lm = [float(s) for s in kit.lm_score(query, texts)]
    reranked = sorted(range(len(fused)), key=lambda j: -lm[j])
    return [fused[j] for j in reranked[:k]]
    ### END SOLUTION


# %% check="hybrid_retrieve" points=2
lm_score = functools.partial(rag.query_likelihood, model, tokenizer)  # (query, texts) -> scores


def make_kit(texts, enc):
    """A kit of llmlab's pieces over `texts` (picklable: the grader replays the cases)."""
    vecs = rag.encode(enc, tokenizer, texts, max_len=64)
    return rag.RetrievalKit(
        texts=texts, corpus_words=[rag.words(t) for t in texts],
        index=rag.HNSWIndex.build(vecs, rag.HNSWConfig(M=6, ef_construction=24)),
        embed=rag.Embedder(enc, tokenizer), bm25=rag.BM25.corpus_scores, search_layer=rag.HNSWIndex.search_layer,
        fuse=rag.reciprocal_rank_fusion, lm_score=lm_score)


seed_all(0)
check_encoder = rag.BiEncoder(model, dim=32, n_layers=0)  # untrained, seeded: any encoder will do
check_pairs = [p for p in val_pairs if len(p.code) < 700][:40]
check_kit = make_kit([p.code for p in check_pairs], check_encoder)
CAPSTONE_MISTAKES = {"no rerank (the fused order)": mistakes.hybrid_without_rerank,
                     "reranking only the top k instead of the top depth": mistakes.hybrid_reranking_only_k}
grading.check_function(hybrid_retrieve, rag.hybrid_retrieve, cases=[
    grading.Case(check_kit, check_pairs[0].query, note="a held-out docstring"),
    grading.Case(check_kit, check_pairs[5].query, 2, 6, note="k = 2, depth = 6"),
], block=[rag.hybrid_retrieve, rag.hnsw_search, rag.HNSWIndex.search], mistakes=CAPSTONE_MISTAKES,
   hint="lexical and dense lists of `depth`, fused, the fused head reranked")

# %% hidden="hybrid_retrieve" points=4
grading.check_function(hybrid_retrieve, rag.hybrid_retrieve, cases=[
    grading.Case(check_kit, check_pairs[11].query, 5, 12, note="k = 5, depth = 12"),
    grading.Case(check_kit, "zzzz qqqq", note="no word in common: the dense list alone"),
    grading.Case(check_kit, check_pairs[20].query, 1, 1, note="k = depth = 1"),
    grading.Case(check_kit, check_pairs[30].query + " " + check_pairs[31].query, 4, 10,
                 note="a query mixing two functions"),
], block=[rag.hybrid_retrieve, rag.hnsw_search, rag.HNSWIndex.search], mistakes=CAPSTONE_MISTAKES)

# %% [markdown]
# The headline demo: the whole stack, built from your pieces where they pass — your BM25, your
# HNSW layer search inside the index, your fusion, your `hybrid_retrieve` — over the held-out
# functions, against each first stage alone.

# %% tags=["nbval-ignore-output", "grading-skip"]
fuse_fn = grading.prefer_yours(rrf, rag.reciprocal_rank_fusion, [([["a", "b", "c"], ["c", "a"]],)], name="rrf")
retrieve_fn = grading.prefer_yours(hybrid_retrieve, rag.hybrid_retrieve, [(check_kit, check_pairs[0].query)])
pair_kit = rag.RetrievalKit(texts=[p.code for p in val_pairs], corpus_words=code_words, index=hnsw,
                            embed=lambda s: rag.encode(encoder, tokenizer, [s], max_len=64)[0],
                            bm25=lexical_scores, search_layer=layer_fn, fuse=fuse_fn, lm_score=lm_score)

# %% tags=["nbval-ignore-output", "grading-skip"]
n_eval = len(val_pairs) if FULL else min(len(val_pairs), 60)
hybrid_ranked, fused_ranked = [], []
for i in tqdm(range(n_eval), desc="hybrid retrieval", leave=False):
    hybrid_ranked.append(retrieve_fn(pair_kit, val_pairs[i].query, k=10, depth=10))
    fused_ranked.append([d for d, _ in fuse_fn([bm25_ranked[i][:10], dense_ranked[i][:10]])][:10])
print(f"the first {n_eval} held-out docstrings:")
final_table = table([("BM25", bm25_ranked[:n_eval]), ("bi-encoder", dense_ranked[:n_eval]),
                     ("RRF(BM25, bi-encoder)", fused_ranked), ("RRF + LM rerank", hybrid_ranked)],
                    truth_sets)
best = max(final_table, key=lambda name: final_table[name][2])
print(f"\nhighest MRR: {best} ({final_table[best][2]:.2f}); BM25 alone: {final_table['BM25'][2]:.2f}")

# %% tags=["grading-skip"]
fig, ax = plt.subplots(figsize=(7, 2.8))
names = list(final_table)
ax.bar(np.arange(len(names)) - 0.2, [final_table[n][0] for n in names], 0.4, label="recall@1")
ax.bar(np.arange(len(names)) + 0.2, [final_table[n][1] for n in names], 0.4, label="recall@10")
ax.set_xticks(range(len(names)), names, fontsize=8)
ax.set_ylim(0, 1), ax.legend(), ax.set_title("retrieving held-out functions by their docstring")
plt.tight_layout()
plt.show()

# %% [markdown]
# Try it: type what a function should do.

# %% tags=["nbval-ignore-output", "grading-skip"]
def show_search(query="return the number of days in a month", k=3):
    for i in retrieve_fn(pair_kit, query, k=k, depth=10):
        print(f"{val_pairs[i].id:50} {val_pairs[i].query[:70]}")


widgets.interact(show_search, query=widgets.Text("return the number of days in a month"), k=(1, 8));

# %% [markdown]
# ## 7. RAG, measured: does retrieved context help the model write code?
#
# Now the generation side (Lewis et al., arXiv:2005.11401; for code, RepoCoder,
# arXiv:2303.12570). A task is a held-out function: the model sees its signature and docstring
# and must write the body. We compare four prompts that differ only in what sits above the
# function:
#
# - **none**: the function alone;
# - **retrieved**: the two chunks of the *same file* your hybrid retriever ranks best for the
#   signature and docstring (the function's own chunk is excluded);
# - **oracle**: the two chunks BM25 finds with the *true body* as the query — RepoCoder's upper
#   bound for any retriever;
# - **distractors**: two chunks of *other* files.
#
# Measured: the mean loss (nats per token) of the body's first two lines, and how often greedy
# decoding writes the first line exactly.

# %% tags=["grading-skip"]
tasks = rag.completion_tasks(val_docs, val_pairs, target_lines=2)
rng = random.Random(0)
tasks = rng.sample(tasks, min(len(tasks), 120 if FULL else 32))
by_doc: dict = {}
for c in chunks:
    by_doc.setdefault(c.doc, []).append(c)


contexts = {"none": [], "retrieved": [], "oracle": [], "distractors": []}
for task in tqdm(tasks, desc="retrieving context", leave=False):
    p = task.pair
    own = [c for c in by_doc[p.doc] if not (c.start < p.end and p.start < c.end)]  # not the target
    others = [c for c in chunks if c.doc != p.doc]
    contexts["none"].append([])
    if len(own) >= 2:
        kit_texts = [c.text for c in own]
        vecs = rag.encode(encoder, tokenizer, kit_texts, max_len=64)
        kit = rag.RetrievalKit(texts=kit_texts, corpus_words=[rag.words(t) for t in kit_texts],
                               index=YourHNSW.build(vecs, rag.HNSWConfig(M=6, ef_construction=24)),
                               embed=pair_kit.embed, bm25=lexical_scores, search_layer=layer_fn,
                               fuse=fuse_fn, lm_score=lm_score)
        picked = retrieve_fn(kit, task.prefix, k=2, depth=min(6, len(own)))
        contexts["retrieved"].append([own[i].text for i in picked])
        oracle_scores = lexical_scores([rag.words(t) for t in kit_texts], rag.words(task.target), 1.2, 0.75)
        contexts["oracle"].append([own[i].text for i in np.argsort(-oracle_scores, kind="stable")[:2]])
    else:
        contexts["retrieved"].append([c.text for c in own])
        contexts["oracle"].append([c.text for c in own])
    contexts["distractors"].append([c.text for c in rng.sample(others, 2)])

# %% tags=["nbval-ignore-output", "grading-skip"]
rag_results = {}
for name, ctx in contexts.items():
    prompts = [rag.rag_prompt(c, t.prefix) for c, t in zip(ctx, tasks)]
    losses = [rag.target_loss(model, tokenizer, p, t.target) for p, t in
              tqdm(list(zip(prompts, tasks)), desc=f"loss ({name})", leave=False)]
    exact = rag.exact_first_line(model, tokenizer, prompts, [t.target for t in tasks])
    rag_results[name] = (float(np.mean(losses)), float(np.mean(exact)), losses)
print(f"{len(tasks)} held-out functions; the first two lines of each body")
print(f"{'context':12} loss (nats/token)  exact first line")
for name, (loss, exact, _) in rag_results.items():
    print(f"{name:12} {loss:17.3f} {exact:17.0%}")
gain = rag_results["none"][0] - rag_results["retrieved"][0]
paired = np.array(rag_results["none"][2]) - np.array(rag_results["retrieved"][2])
print(f"\nretrieved context lowers the loss by {gain:.3f} nats/token on average; it helps on "
      f"{(paired > 0).mean():.0%} of the functions; the oracle lowers it by "
      f"{rag_results['none'][0] - rag_results['oracle'][0]:.3f}, distractors change it by "
      f"{rag_results['distractors'][0] - rag_results['none'][0]:+.3f}")

assert rag_results["oracle"][0] < rag_results["none"][0], "the oracle's context should help"
assert rag_results["distractors"][0] > rag_results["retrieved"][0], "unrelated chunks should help less"

# %% [markdown]
# Read the table as a RAG engineer would: the gap between *none* and *retrieved* is what the
# retriever buys; the gap between *retrieved* and *oracle* is what a better retriever could
# still buy; *distractors* show what unrelated context costs — tokens the model must read past.

# %% [markdown]
# ## 8. Reusing the KV cache of retrieved chunks
#
# A RAG server sees the same popular chunks in many prompts. Their keys and values need not be
# recomputed: chapter 08's **prefix cache** keeps full blocks of KV named by a hash of all the
# tokens before them, and chapter 09's engine looks them up when a request arrives.
#
# ### Exercise 12.9 — predict first: how much of a shared prefix is reused? · 2 points · difficulty 1 · ~5 min
#
# Two prompts start with the same 150 tokens (the same two retrieved chunks, in the same order)
# and then differ. The engine's paged cache has blocks of 16 tokens and prefix caching on. The
# first prompt has run. How many of the second prompt's tokens are served from the cache?

# %% solution="predict_cached"
def predict_cached() -> int:
    """Tokens of the second prompt found in the prefix cache."""
    ### BEGIN SOLUTION
    return 150 // 16 * 16
    ### END SOLUTION


# %% check="predict_cached" points=1
def cached_on_the_engine():
    """Measured: chapter 09's engine (blocks of 16, prefix caching) runs both prompts."""
    shared = list(range(1000, 1150))
    return rag.cached_prompt_tokens(model, tokenizer, [shared + [7, 8, 9], shared + [10, 11]], block_size=16)[1]


CACHED_MISTAKES = {"every shared token (the cache works per block)": mistakes.cached_every_shared_token,
                   "rounding up to a whole block": mistakes.cached_rounded_up_to_a_block}
grading.check_function(predict_cached, cached_on_the_engine, [grading.Case(note="150 shared tokens, blocks of 16")],
                       mistakes=CACHED_MISTAKES,
                       hint="only full blocks are named by a hash, and so only they can be shared")

# %% hidden="predict_cached" points=1
grading.check_function(predict_cached, cached_on_the_engine, [grading.Case(note="the number of tokens")],
                       mistakes=CACHED_MISTAKES)

# %% [markdown]
# Measured on the engine: the same two chunks with different questions after them, then the
# same chunks in the **other order**.

# %%
chunk_a = tokenizer.encode(chunks[0].text)[:75]
chunk_b = tokenizer.encode(chunks[1].text)[:75]
questions = [tokenizer.encode(f"\n# question {i}: what does this code do?\n") for i in range(3)]
ab = [chunk_a + chunk_b + q for q in questions]
ba = [chunk_b + chunk_a + q for q in questions]
cached = rag.cached_prompt_tokens(model, tokenizer, ab + ba)
for label, prompt, hit in zip(["A B q0", "A B q1", "A B q2", "B A q0", "B A q1", "B A q2"], ab + ba, cached):
    print(f"{label}: {len(prompt):3d} prompt tokens, {hit:3d} from the prefix cache")
shared = len(chunk_a) + len(chunk_b)
assert cached[1] == cached[2] == shared // 16 * 16 and cached[3] == 0
print(f"swapping the two chunks: the first 'B A' prompt reuses {cached[3]} tokens — a prefix "
      "cache cannot see that B's keys were computed before, after a different A")

# %% [markdown]
# **CacheBlend** (Yao et al., arXiv:2405.16444) reuses a chunk's KV wherever the chunk sits. It
# stores each chunk's KV computed *alone* (positions from 0). At query time the keys are rotated
# to their real positions — exact, because RoPE rotations compose, $R(p + \Delta) = R(\Delta)R(p)$
# — and what reuse gets wrong, that no chunk token attended to the chunks before it, is repaired
# by recomputing a small share of tokens: those whose values deviate most from the reused ones.
# `rag.blend_forward(model, chunk_kvs, query, recompute_ratio)` implements it (ratio 1 is a full
# prefill, exactly; 0 is plain concatenation). The quality cost, on the RAG tasks above: the
# target's loss after two retrieved chunks, against a full prefill.

# %% tags=["nbval-ignore-output", "grading-skip"]
ratios = [0.0, 0.05, 0.15, 0.3, 0.5, 1.0]
blend_loss = {r: [] for r in ratios}
full_loss = []
for task, ctx in tqdm(list(zip(tasks, contexts["retrieved"]))[:16], desc="CacheBlend", leave=False):
    if len(ctx) < 2:
        continue
    kvs = [rag.precompute_chunk(model, tokenizer.encode(f"# context\n{c.strip()}\n\n")[:150]) for c in ctx]
    query = tokenizer.encode(task.prefix)[-150:]
    target = tokenizer.encode(task.target)
    full_ids = [t for kv in kvs for t in kv.ids] + query + target
    with torch.no_grad():
        logits = model(torch.tensor([full_ids]))[0, -len(target) - 1:-1]
    full_loss.append(float(F.cross_entropy(logits, torch.tensor(target))))
    for r in ratios:
        out = rag.blend_forward(model, kvs, query + target, r)
        pred = out.logits[0, len(query) - 1:-1]
        blend_loss[r].append(float(F.cross_entropy(pred, torch.tensor(target))))
excess = {r: float(np.mean(blend_loss[r]) - np.mean(full_loss)) for r in ratios}
plt.figure(figsize=(6, 2.6))
plt.plot([r * 100 for r in ratios], [excess[r] for r in ratios], "o-")
plt.axhline(0, color="gray", lw=0.8)
plt.xlabel("chunk tokens recomputed (%)"), plt.ylabel("extra loss vs full prefill")
plt.title("CacheBlend: the quality cost of reusing chunk KV")
plt.tight_layout()
plt.show()
for r in ratios:
    print(f"recompute {r:4.0%}: loss {np.mean(blend_loss[r]):.3f} (full prefill {np.mean(full_loss):.3f}, "
          f"{excess[r]:+.3f})")
assert abs(excess[1.0]) < 1e-3, "recomputing every token is a full prefill"

# %% [markdown]
# ## 9. Tools: calls that always parse
#
# A tool call is a line of JSON: `{"name":"search","arguments":{"query":"..."}}`, its arguments
# described by a JSON Schema (OpenAI's function calling and MCP both use this shape). A small
# model writes broken JSON; a **constrained decoder** cannot. A JSON Schema without recursion
# describes a regular language once the layout is fixed (no spaces, properties in the schema's
# order), so it compiles to a regex — then chapter 09's token automaton does the rest (Outlines,
# arXiv:2307.09702). `agent.schema_to_regex` is that compiler; the test suite checks the token
# masks it yields equal `xgrammar`'s JSON-Schema masks on the same schemas and vocabulary.
#
# ### Exercise 12.10 — a JSON object schema as a regular expression · 3 points · difficulty 2 · ~25 min
#
# Write `object_regex(properties)`: `properties` maps names to `"string"`, `"integer"` or
# `"boolean"`; return a regex (chapter 09's dialect: no anchors, `\xNN` names a byte) for the
# compact JSON objects with exactly these properties, in this order, all required —
# `{"city":"Oslo","days":3,"metric":true}`. JSON's rules: an integer has no leading zero and no
# `-0`; a string is `"…"` of characters that are not `"`, `\` or a control character (below
# `0x20`), or escapes `\" \\ \/ \b \f \n \r \t \uXXXX`. Any valid UTF-8 character may appear:
# `agent.json_schema.STRING_CHAR` is a regex of one string character you may use. Your regex is
# judged by the strings it accepts and rejects. `agent.schema_to_regex` is blocked.

# %% solution="object_regex"
def object_regex(properties: dict[str, str]) -> str:
    """The regex of compact JSON objects with these (name -> type) properties, in order."""
    ### BEGIN SOLUTION
    value = {"string": f'"{agent.json_schema.STRING_CHAR}*"', "integer": "(0|-?[1-9][0-9]*)",
             "boolean": "(true|false)"}
    items = [f'"{name}":{value[kind]}' for name, kind in properties.items()]
    return "\\{" + ",".join(items) + "\\}"
    ### END SOLUTION


# %% check="object_regex" points=1
def language(fn):
    """What the check compares: which of `texts` the regex accepts."""
    def probe(properties, texts):
        dfa = regex_to_dfa(fn(properties))
        return [bool(dfa.fullmatch(t.encode("utf-8"))) for t in texts]
    return probe


def object_schema(properties):
    return {"type": "object", "properties": {k: {"type": v} for k, v in properties.items()},
            "required": list(properties)}


def ref_object_regex(properties):
    return agent.schema_to_regex(object_schema(properties))


SCHEMA_MISTAKES = {
    "integers with leading zeros or -0": language(lambda p: mistakes.integers_with_leading_zeros(object_schema(p))),
    "strings that may hold a raw quote": language(lambda p: mistakes.strings_with_raw_quotes(object_schema(p)))}
WEATHER = {"city": "string", "days": "integer", "metric": "boolean"}
grading.check_function(language(object_regex), language(ref_object_regex), cases=[
    grading.Case(WEATHER, ['{"city":"Oslo","days":3,"metric":true}', '{"city":"Oslo","days":03,"metric":true}',
                           '{"city":"Oslo","days":3}', '{"city":"Os"lo","days":3,"metric":false}'],
                 note="three properties"),
], block=[agent.schema_to_regex], mistakes=SCHEMA_MISTAKES, name="object_regex",
   hint="an integer is 0 or an optional minus and a digit 1-9 then digits")

# %% hidden="object_regex" points=2
grading.check_function(language(object_regex), language(ref_object_regex), cases=[
    grading.Case({"q": "string"}, ['{"q":""}', '{"q":"a\\"b"}', '{"q":"a\\u00e9"}', '{"q":"日本"}',
                                   '{"q":"a\\qb"}', '{"q":"a\nb"}', '{"q":"x"} ', '{ "q":"x"}'],
                 note="escapes, unicode, control characters, spaces"),
    grading.Case({"n": "integer", "ok": "boolean"}, ['{"n":-12,"ok":false}', '{"n":-0,"ok":true}',
                                                     '{"n":0,"ok":true}', '{"ok":true,"n":1}',
                                                     '{"n":1.5,"ok":true}', '{"n":7,"ok":True}'],
                 note="order, -0, floats"),
    grading.Case({}, ["{}", "{ }", '{"a":1}'], note="no properties"),
], block=[agent.schema_to_regex], mistakes=SCHEMA_MISTAKES, name="object_regex")

# %% [markdown]
# Your compiler, on the book's model: the same prompt, decoded freely and under the automaton.

# %%
regex_fn = grading.prefer_yours(object_regex, ref_object_regex, [(WEATHER, ['{"city":"a","days":1,"metric":true}', '{"x":1}'])],
                                name="object_regex",
                                probe=language)
weather_automaton = TokenAutomaton.build(regex_fn(WEATHER), tokenizer, EOS)
prompt = 'def forecast():\n    request = '
free, constrained = (rag.complete(model, tokenizer, [prompt], 40, ("\n",), a)[0] for a in (None, weather_automaton))
print("free:        ", repr(free))
print("constrained: ", repr(constrained))
print("parses and fits the schema:", agent.validate(json.loads(constrained), object_schema(WEATHER)) is None)

# %% [markdown]
# ## 10. An agent: think, call a tool, observe, answer
#
# A ReAct agent (Yao et al., arXiv:2210.03629) alternates model-written lines with tool results:
#
# ```
# Task: What is 417 * 23?
# Thought: compute it with Python
# Call: {"name":"run_python","arguments":{"code":"print(417 * 23)"}}
# Result: 9591
# Answer: 9591
# ```
#
# The loop decodes one line of every live run at a time through the engine, runs the call,
# appends `Result:` (a tool's output, or the error a bad call earned), and stops at `Answer:`;
# you write it in exercise 12.11, and `agent.ReActAgent` is llmlab's. Two tools: `run_python`,
# which runs a snippet in a fresh process with a wall-clock
# timeout, memory, CPU, file-size and open-file limits and no inherited environment
# (`agent.run_python`), and `search`, your hybrid retriever over the held-out functions.
#
# The book's model has never seen this format. We teach it with **synthetic traces** — tasks
# whose answers a program can check, solved by calling the tools for real — and a LoRA
# fine-tune (chapter 05's adapters, chapter 06's assistant-only SFT loss). Training tasks use
# other numbers and other functions than the held-out ones.

# %% [markdown]
# ### Exercise 12.11 — capstone: the agent loop · 6 points · difficulty 3 · ~60 min
#
# Write the loop that every agent runs on: `run_agent(write_lines, tools, tasks, max_steps=6,
# max_observation=160)` returns one `agent.AgentRun` per task, in order. The contract:
#
# - `write_lines(transcripts)` returns `[(line, cut), …]`, the model's next line for each
#   transcript it is given; `cut` is true when the line ran out of tokens before its end. Here it
#   is an `agent.LineWriter`, which decodes all its transcripts as one batch through the engine,
#   so call it once per step with the transcripts of every run still going, and at most
#   `max_steps` times.
# - A run's `transcript` starts `Task: <task>` and gets each of its model lines with one newline
#   at the end. The run ends at an `Answer:` line (its `answer` is the rest of the line,
#   stripped), at a line that is none of `Thought:`, `Call:`, `Answer:` (its start recorded in
#   `errors`, as `agent.ReActAgent` words it), or when `max_steps` lines are written.
# - Every `Call:` line counts in `calls`. A call that `agent.parse_call` accepts runs
#   (`agent.run_call`) and the run reads `Result: <agent.observation(output, max_observation)>`.
#   A call that does not parse, or was cut, does not end the run: the model reads
#   `Result: error: <message>` and may try again; the message (the `ToolError`'s, or
#   `the call was cut before its end`) goes to `errors`, and the call counts in `cut_calls` if it
#   was cut, else in `invalid_calls`.
# - No tools, or `max_steps < 1`, is a `ValueError`.
#
# `agent.ReActAgent`, `agent.run_agent` and `agent.apply_line` are blocked. The held-out
# evaluation below, and the run over MCP, use your loop once it passes.
#
# <details><summary>Hint 1 — idea</summary>Keep the indices of the runs still going; a step is one
# call of <code>write_lines</code> and one update per returned line.</details>
# <details><summary>Hint 2 — structure</summary>A helper <code>apply(run, line, cut) -> bool</code>
# (True when the run is over) keeps the loop three lines long; the helper is a chain of
# <code>startswith</code> tests.</details>
# <details><summary>Hint 3 — the bad call</summary><code>try:</code> raise
# <code>agent.ToolError</code> yourself for a cut line, else <code>parse_call</code> and
# <code>run_call</code>; <code>except agent.ToolError</code> counts, records and shows the error.
# </details>

# %% solution="run_agent"
def run_agent(write_lines, tools: list, tasks: list[str], max_steps: int = 6,
              max_observation: int = 160) -> list:
    """One `agent.AgentRun` per task: think, call a tool, observe, answer."""
    ### BEGIN SOLUTION
    if not tools:
        raise ValueError("an agent needs at least one tool")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")

    def apply(run, line, cut):
        line = line.rstrip("\n")
        run.transcript += line + "\n"
        if line.startswith("Answer:"):
            run.answer = line[len("Answer:"):].strip()
            return True
        if line.startswith("Thought:"):
            return False
        if not line.startswith("Call:"):
            run.errors.append(f"not a Thought/Call/Answer line: {line[:40]!r}")
            return True
        run.calls += 1
        try:
            if cut:
                raise agent.ToolError("the call was cut before its end")
            result = agent.run_call(agent.parse_call(line[len("Call:"):].strip(), tools), tools)
        except agent.ToolError as exc:
            run.cut_calls += cut
            run.invalid_calls += not cut
            run.errors.append(str(exc))
            result = f"error: {exc}"
        run.transcript += f"Result: {agent.observation(result, max_observation)}\n"
        return False

    runs = [agent.AgentRun(f"Task: {task}\n") for task in tasks]
    live = list(range(len(runs)))
    for _ in range(max_steps):
        if not live:
            break
        written = write_lines([runs[i].transcript for i in live])
        live = [i for i, (line, cut) in zip(live, written) if not apply(runs[i], line, cut)]
    return runs
    ### END SOLUTION


# %% check="run_agent" points=2
def call(name, **arguments):
    return "Call: " + json.dumps({"name": name, "arguments": arguments}, separators=(",", ":")) + "\n"


agent_tools = mistakes.check_tools()  # add, echo, divide: pure functions
AGENT_SCRIPT = {  # the lines a model writes, per task: (line, cut)
    "What is 2 + 3?": [("Thought: add them\n", False), (call("add", a=2, b=3), False), ("Answer: 5\n", False)],
    "Say hi.": [(call("echo", text="hi there, " * 4), False), (call("add", a=2), False),
                (call("echo", text="hihi")[:-8], True), ("Answer: hi\n", False)],
    "Halve 9.": [(call("divide", a=9, b=0), False), ("I think it is 4\n", False)],
}
AGENT_MISTAKES = {"a cut call counted as an invalid one": mistakes.agent_counting_cut_as_invalid,
                  "a bad call ends the run (no `Result: error` to retry from)": mistakes.agent_stopping_on_a_bad_call,
                  "observations not cut to max_observation": mistakes.agent_with_uncut_observations}
AGENT_BLOCK = [agent.ReActAgent, agent.run_agent, agent.apply_line]
grading.check_function(run_agent, agent.run_agent, cases=[
    grading.Case(mistakes.ScriptedLines(AGENT_SCRIPT), agent_tools, list(AGENT_SCRIPT), 6, 24,
                 note="three scripted runs: a call, bad and cut calls, a tool that raises"),
    grading.Case(agent.LineWriter(model, tokenizer, 16), agent_tools, ["What is 2 + 3?", "Say hi."], 2,
                 note="the book's model writing, two steps"),
], block=AGENT_BLOCK, mistakes=AGENT_MISTAKES,
   hint="every run's lines in one write_lines call per step; a bad call is shown, not fatal")

# %% hidden="run_agent" points=4
grading.check_function(run_agent, agent.run_agent, cases=[
    grading.Case(mistakes.ScriptedLines(AGENT_SCRIPT), agent_tools, list(AGENT_SCRIPT), 2, 12,
                 note="max_steps = 2 cuts every run short"),
    grading.Case(mistakes.ScriptedLines(AGENT_SCRIPT), agent_tools, ["Say hi.", "Say hi.", "Halve 9."], 5, 40,
                 note="the same task twice"),
    grading.Case(mistakes.ScriptedLines({"x": [(call("nope"), False), (call("echo", text=7), False),
                                               ('Call: {"name"\n', False), ("Answer: done\n", False)]}),
                 agent_tools, ["x"], 6, 160, note="an unknown tool, a wrong type, broken JSON"),
    grading.Case(mistakes.ScriptedLines({}), agent_tools, [], 3, note="no tasks"),
    grading.Case(mistakes.ScriptedLines({}), [], ["x"], note="no tools: ValueError"),
    grading.Case(mistakes.ScriptedLines({}), agent_tools, ["x"], 0, note="max_steps = 0: ValueError"),
], block=AGENT_BLOCK, mistakes=AGENT_MISTAKES)

# %% tags=["grading-skip"]
python = agent.python_tool(timeout=5.0)


def search_tool_fn(query: str, k: int = 3) -> str:
    return "\n".join(f"{val_pairs[i].id}" for i in retrieve_fn(pair_kit, query, k=k, depth=10))


search = agent.Tool("search", "Find functions of the corpus by what they do.",
                    {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
                    search_tool_fn)
tools = [search, python]


def train_search(query: str, k: int = 3) -> str:  # the training lookups search the training files
    hits = train_bm25.search(rag.words(query), k)
    return "\n".join(train_pairs[i].id for i, _ in hits)


train_bm25 = rag.BM25([rag.words(p.query + " " + p.code) for p in train_pairs])
train_tools = [agent.Tool("search", search.description, search.parameters, train_search), python]
def train_observe(name, args):
    return agent.observation(agent.run_call(agent.ToolCall(name, args), train_tools), 160)


SHORT = 100  # characters: a lookup's query fits in one call line of the loop's token budget
train_tasks = agent.arithmetic_tasks(160 if FULL else 48, seed=1) + agent.lookup_tasks(
    [(p.query, p.id) for p in train_pairs if len(p.query) <= SHORT], 240 if FULL else 72, seed=1)
examples = [agent.trace_example(tokenizer, agent.solution_lines(task, train_observe))
            for task in tqdm(train_tasks, desc="writing traces (runs the tools)", leave=False)]
print("\n".join(line for line, _ in agent.solution_lines(train_tasks[0], train_observe)))

# %% tags=["grading-skip", "nbval-ignore-output"]
t0 = time.perf_counter()
tool_model, tune_losses = agent.finetune_tool_use(model, examples, agent.ToolTuneConfig(
    steps=250 if FULL else 60, batch_size=16, lr=3e-3), progress=True)
print(f"LoRA on {len(examples)} traces: loss {tune_losses[0]:.2f} -> {np.mean(tune_losses[-10:]):.2f} "
      f"in {time.perf_counter() - t0:.0f} s")

# %% [markdown]
# Held-out tasks: new arithmetic, and lookups of held-out functions whose right answer is the
# first id the search tool returns (a run succeeds when it used the tool correctly). Each model
# runs with and without the constraint.

# %% tags=["nbval-ignore-output", "grading-skip"]
n_test = 40 if FULL else 16
test_tasks = agent.arithmetic_tasks(n_test // 2, seed=99)
short_val = [p for p in val_pairs if len(p.query) <= SHORT]
lookups = [(p.query, search_tool_fn(p.query, 1)) for p in random.Random(5).sample(short_val, n_test // 2)]
test_tasks += agent.lookup_tasks(lookups, n_test // 2, seed=2)
loop_fn = grading.prefer_yours(run_agent, agent.run_agent,
                               [(mistakes.ScriptedLines(AGENT_SCRIPT), agent_tools, list(AGENT_SCRIPT), 6, 24)],
                               block=AGENT_BLOCK)
line_automaton = TokenAutomaton.build(agent.line_regex(tools), tokenizer, EOS)  # Thought | Call | Answer
agent_rows = {}
for label, m in [("base model", model), ("tool-tuned", tool_model)]:
    for constrained in (False, True):
        writer = agent.LineWriter(m, tokenizer, 96, line_automaton if constrained else None)
        runs = loop_fn(writer, tools, [t.question for t in test_tasks], 5, 160)
        success = float(np.mean([r.answer == t.answer for r, t in zip(runs, test_tasks)]))
        agent_rows[(label, constrained)] = (success, sum(r.calls for r in runs),
                                            sum(r.invalid_calls for r in runs), sum(r.cut_calls for r in runs), runs)
print(f"{len(test_tasks)} held-out tasks ({n_test // 2} arithmetic, {n_test // 2} lookups)")
print(f"{'model':12} {'decoding':12} success  calls  invalid  cut at max_tokens")
for (label, constrained), (success, calls, bad, cut, _) in agent_rows.items():
    print(f"{label:12} {'constrained' if constrained else 'free':12} {success:7.0%} {calls:6d} {bad:8d} {cut:18d}")
    if constrained:
        assert bad == 0, "a constrained call that ends always parses and fits its schema"
base_c, tuned_c = agent_rows[("base model", True)][0], agent_rows[("tool-tuned", True)][0]
tuned_f = agent_rows[("tool-tuned", False)][0]
assert tuned_c > base_c, "the traces should teach the model to use the tools"
print(f"\nconstrained, the base model solves {base_c:.0%} and the tool-tuned one {tuned_c:.0%}; "
      f"the tool-tuned model solves {tuned_f:.0%} without the constraint")
print()
print(agent_rows[("tool-tuned", True)][4][0].transcript)

# %% [markdown]
# The constraint guarantees every call that ends parses and fits its schema (the cell asserts
# the invalid column of the constrained rows is zero). It does not bound length: a model that
# repeats itself inside a string runs out of the line's tokens, and that call is cut — what an
# API reports as `finish_reason="length"`. Nor can it give a model that knows *which* call
# solves the task: the base model, never trained on the format, answers without calling
# anything, and the tuned one solves more (the cell asserts it).
# Production agents combine both: models trained on tool-use data and servers that constrain
# the call (OpenAI's structured outputs, vLLM's and SGLang's xgrammar back-ends).

# %% [markdown]
# ## 11. The Model Context Protocol
#
# MCP (modelcontextprotocol.io) is JSON-RPC between an agent and the processes that provide its
# tools: a server answers `tools/list` (names, descriptions, argument schemas) and `tools/call`.
# `llmlab mcp` serves this chapter's `search` and `run_python` over stdio with the official SDK;
# arguments are validated against the schema before a tool runs (bad ones are a protocol error,
# JSON-RPC −32602), and a snippet that loops or crashes is killed and reported while the server
# keeps serving. `agent.MCPToolSource` turns any MCP server's tools into tools for the loop —
# here the Python tool, from a separate process, used by the tuned agent.

# %% tags=["grading-skip", "nbval-ignore-output"]
command = [sys.executable, "-m", "llmlab.cli", "mcp", "--no-search", "--timeout", "3"]
with agent.MCPToolSource(command) as source:
    print("tools/list:", [(t.name, t.parameters["required"]) for t in source.tools])
    print("a loop:    ", end="")
    try:
        source.call("run_python", {"code": "while True: pass"})
    except RuntimeError as exc:
        print(exc)
    try:
        source.call("run_python", {"code": 42})
    except agent.ToolError as exc:
        print("bad args: ", exc)
    mcp_tools = [search] + source.tools
    mcp_writer = agent.LineWriter(tool_model, tokenizer, 96,
                                  TokenAutomaton.build(agent.line_regex(mcp_tools), tokenizer, EOS))
    mcp_runs = loop_fn(mcp_writer, mcp_tools, [t.question for t in test_tasks[:4]], 5, 160)
print(mcp_runs[0].transcript)
print("answers over MCP:", [r.answer for r in mcp_runs], "expected:", [t.answer for t in test_tasks[:4]])

# %% [markdown]
# ## 12. Deep research, small
#
# "Deep research" agents (OpenAI's, Google's; STORM, arXiv:2402.14207) loop **plan → retrieve →
# read → write**, citing a source for every claim. `rag.deep_research` is the skeleton: the plan
# splits a question into sub-questions, each is retrieved, the reader picks the sentence that
# best answers it, and the writer emits it with `[chunk id]`. The book's model cannot write
# prose, so the writer is extractive; what we measure is **citation precision** (ALCE,
# arXiv:2305.14627): the share of citations that point to a chunk that holds the answer. Each
# question below joins the docstrings of two held-out functions; a citation is right when its
# chunk contains that function.

# %% tags=["nbval-ignore-output", "grading-skip"]
research_pairs = random.Random(3).sample([p for p in val_pairs if ";" not in p.query], 40 if FULL else 20)
questions = [(a, b) for a, b in zip(research_pairs[::2], research_pairs[1::2])]


def chunk_ids_of(pair):
    return {c.id for c in by_doc[pair.doc] if c.start <= pair.start < c.end}


chunk_kit = rag.RetrievalKit(
    texts=chunk_texts, corpus_words=[rag.words(t) for t in chunk_texts],
    index=YourHNSW.build(rag.encode(encoder, tokenizer, chunk_texts, max_len=64), rag.HNSWConfig(M=8, ef_construction=32)),
    embed=pair_kit.embed, bm25=lexical_scores, search_layer=layer_fn, fuse=fuse_fn, lm_score=lm_score)
chunk_bm25 = rag.BM25(chunk_kit.corpus_words)
retrievers = {
    "BM25": lambda q, k: [chunks[i] for i, _ in chunk_bm25.search(rag.words(q), k)],
    "hybrid + rerank": lambda q, k: [chunks[i] for i in retrieve_fn(chunk_kit, q, k=k, depth=10)],
}
for name, retriever in retrievers.items():
    reports = [rag.deep_research(f"{a.query}; {b.query}", retriever, k=3) for a, b in questions]
    relevant = [[chunk_ids_of(a), chunk_ids_of(b)] for a, b in questions]
    print(f"{name:16} citation precision {rag.citation_precision(reports, relevant):.0%}")
print()
print("question:", reports[0].question)
print(reports[0].text)

# %% [markdown]
# ## How the industry does it
#
# - **Retrieval stacks.** Elasticsearch/OpenSearch (BM25 in Lucene, HNSW for vectors, RRF for
#   hybrid), Vespa, Weaviate, Qdrant, pgvector; faiss (IVF-PQ, HNSW, GPU) for billion-scale
#   vectors. HNSW's memory (the graph plus full vectors) is why IVF with product quantization
#   still serves the largest indexes; DiskANN keeps the graph on SSD.
# - **Embedders and rerankers.** Sentence-transformers, E5, BGE and OpenAI/Cohere embedding
#   APIs are bi-encoders trained with InfoNCE on hundreds of millions of pairs with hard
#   negatives (mined with BM25 or an earlier model); cross-encoder rerankers (bge-reranker,
#   Cohere Rerank) reorder the top 50–100. ColBERT keeps one vector per token (late interaction).
# - **Chunking and context.** LangChain and LlamaIndex split by structure with overlap; "lost in
#   the middle" (Liu et al., arXiv:2307.03172) shows long contexts are read unevenly, so order and
#   count of chunks matter; GraphRAG and RAPTOR build summaries over chunks for global questions.
# - **KV reuse.** vLLM's automatic prefix caching and SGLang's RadixAttention reuse shared
#   prefixes (system prompts, few-shot examples, documents); LMCache with CacheBlend reuses
#   chunks at any position, with the paper reporting 2.2–3.3× lower time-to-first-token at
#   similar quality on 7B–70B models.
# - **Tools and agents.** OpenAI function calling and structured outputs, Anthropic tool use,
#   and open models' chat templates all emit JSON calls; vLLM and SGLang constrain them with
#   xgrammar or Outlines. MCP (Anthropic, 2024; now across Claude, ChatGPT, Cursor, VS Code) is
#   the standard way to plug tools in; code interpreters run in containers or microVMs (E2B,
#   Firecracker), with the limits our Python tool has, plus no network.
# - **Where it breaks.** Retrieval that misses the answer makes the model confidently wrong;
#   irrelevant chunks distract; prompt injection in retrieved text or tool output can steer an
#   agent (treat every observation as untrusted); long agent loops compound errors, which is why
#   deep-research systems verify citations.

# %% [markdown]
# ## Summary
#
# - Chunks are what a retriever indexes and a prompt quotes; cutting at structure keeps
#   functions whole, overlap trades index size for fewer cuts.
# - BM25 is a strong lexical baseline; a bi-encoder trained with InfoNCE finds paraphrases; RRF
#   fuses them without calibration and a reranker that reads query and document together puts
#   the right one first — you built each piece and then the whole retriever.
# - IVF and HNSW trade recall for work; HNSW's layer search is a best-first beam search with a
#   stopping rule.
# - RAG is measured like any model change: with vs without context, against an oracle, with
#   distractors. The KV of retrieved chunks can be reused — by prefix caching when the chunks
#   form a prefix, by CacheBlend's selective recompute when they do not.
# - Constrained decoding makes tool calls parse by construction; fine-tuning on tool traces
#   teaches the model to use the tools; MCP makes the tools a separate, sandboxed process.
#
# ## Further reading
#
# - Robertson & Zaragoza, *The Probabilistic Relevance Framework: BM25 and Beyond* (2009).
# - Karpukhin et al., *Dense Passage Retrieval for Open-Domain QA*, [arXiv:2004.04906](https://arxiv.org/abs/2004.04906);
#   van den Oord et al., *CPC / InfoNCE*, [arXiv:1807.03748](https://arxiv.org/abs/1807.03748).
# - Malkov & Yashunin, *HNSW*, [arXiv:1603.09320](https://arxiv.org/abs/1603.09320); Jégou et al., *Product Quantization* (TPAMI 2011).
# - Cormack et al., *Reciprocal Rank Fusion* (SIGIR 2009); Sachan et al., *UPR*, [arXiv:2204.07496](https://arxiv.org/abs/2204.07496).
# - Lewis et al., *RAG*, [arXiv:2005.11401](https://arxiv.org/abs/2005.11401); Zhang et al., *RepoCoder*, [arXiv:2303.12570](https://arxiv.org/abs/2303.12570).
# - Yao et al., *CacheBlend*, [arXiv:2405.16444](https://arxiv.org/abs/2405.16444); Zheng et al., *SGLang / RadixAttention*, [arXiv:2312.07104](https://arxiv.org/abs/2312.07104).
# - Willard & Louf, *Outlines*, [arXiv:2307.09702](https://arxiv.org/abs/2307.09702); Dong et al., *XGrammar*, [arXiv:2411.15100](https://arxiv.org/abs/2411.15100).
# - Yao et al., *ReAct*, [arXiv:2210.03629](https://arxiv.org/abs/2210.03629); Schick et al., *Toolformer*, [arXiv:2302.04761](https://arxiv.org/abs/2302.04761).
# - The Model Context Protocol specification, modelcontextprotocol.io.
# - Shao et al., *STORM*, [arXiv:2402.14207](https://arxiv.org/abs/2402.14207); Gao et al., *ALCE*, [arXiv:2305.14627](https://arxiv.org/abs/2305.14627).
