# %% [markdown]
# # 01 · Tokenization
#
# A language model never sees text. It sees a sequence of integers, and the **tokenizer**
# decides which integers: how many there are for a sentence (what you pay for, and how much fits
# in the context window), whether "1234" is one symbol or four, whether a Chinese sentence costs
# twice as much as its English translation. This chapter builds the tokenizers the industry
# uses — byte-level BPE (GPT-2, GPT-4, Llama 3, Qwen), WordPiece (BERT) and the Unigram LM
# (SentencePiece, T5) — and checks them token for token against `tiktoken`, Hugging Face
# `tokenizers` and `sentencepiece`.
#
# **You will learn to**
# 1. explain how text becomes bytes (UTF-8) and bytes become tokens, and why it matters for
#    cost, context length, arithmetic and non-English text;
# 2. implement byte-level BPE: count pairs, merge, train naively, encode with merge ranks, and
#    assemble the pieces into a streaming tokenizer that gives tiktoken's ids, id for id;
# 3. make BPE training fast yourself (incremental pair counts, a lazy heap) and know why
#    pre-tokenization regexes and special tokens exist;
# 4. implement WordPiece's longest-match encoding and the Unigram model's Viterbi segmentation;
# 5. build a chat template with the assistant mask used for supervised fine-tuning;
# 6. measure the vocabulary-size trade-off on English, Chinese and code.

# %% [markdown]
# **Budget:** ~1 min on 2 CPU cores · peak RAM ~1 GB. No GPU and no network needed.
#
# The text we use is text every machine has: the **Python standard library** — its source code,
# and its docstrings as English prose — plus a short Chinese text that ships with `llmlab`.

# %% tags=["nbval-ignore-output"]
import math
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import Markdown, display
from tqdm.auto import tqdm

from llmlab import grading
from llmlab_book.ch01_tokenization import CATALOGUE
from llmlab.tokenizer import (
    CHATML_SPECIAL_TOKENS,
    GPT2_PATTERN,
    GPT4_PATTERN,
    Tokenizer,
    apply_chat_template,
    bytes_per_token,
    encode_with_dropout,
    fertility,
    from_sentencepiece,
    to_hf,
    to_sentencepiece,
    to_tiktoken,
    train_bpe,
    train_unigram,
    train_wordpiece,
    vocab_utilization,
)
from llmlab.tokenizer import bpe_basics, unigram, wordpiece
from llmlab.tokenizer.bpe_train import bpe_merges_from_counts
from llmlab.tokenizer.chat import render_chatml
from llmlab.tokenizer.pretokenize import pretokenize
from llmlab.tokenizer.samples import chinese_text, python_docstrings, python_source
from llmlab.utils import seed_all

seed_all(0)
t0 = time.time()
english_all = python_docstrings(600_000)
code_all = python_source(600_000)
chinese_all = chinese_text()
# train on the first part of each, measure on the rest (held out)
english, english_eval = english_all[:400_000], english_all[400_000:]
code, code_eval = code_all[:400_000], code_all[400_000:]
half = len(chinese_all) // 2
chinese, chinese_eval = chinese_all[:half], chinese_all[half:]
print(f"English {len(english_all):,} chars · code {len(code_all):,} · Chinese {len(chinese_all):,}"
      f" · loaded in {time.time() - t0:.1f} s")

# %% [markdown]
# ## 1. Bytes, Unicode and UTF-8
#
# Unicode gives every character a number, its *code point*: `a` is U+0061, `é` is U+00E9,
# `中` is U+4E2D, `👍` is U+1F44D. There are about 150,000 assigned characters — too many to
# give each its own embedding, and new ones keep coming. **UTF-8** writes each code point as
# 1 to 4 bytes: ASCII stays one byte, Latin accents take two, Chinese characters three, emoji
# four. A *byte-level* tokenizer starts from the 256 possible bytes, so it can encode any text
# at all — no "unknown" token, ever — and then learns to merge frequent byte sequences.
#
# ### Exercise 1.1 — predict: how many bytes? · 2 points · difficulty 1 · ~3 min
#
# Predict first, then run the demo below. A byte-level tokenizer with no merges at all turns
# every byte into one token. How many tokens does it give for `"分词 ok 👍"` (two Chinese
# characters, a space, two ASCII letters, a space, one emoji)? Work it out from the rules above
# and return the number — do not call `.encode` in the answer.
#
# <details><summary>Hint 1</summary>Count the characters of each kind; each kind has its own
# UTF-8 length.</details>
# <details><summary>Hint 2</summary>ASCII (letters and the space) takes 1 byte, Chinese
# characters 3, emoji 4.</details>

# %% solution="predict_bytes"
def predict_bytes() -> int:
    """The number of UTF-8 bytes (= byte-level tokens) of "分词 ok 👍"."""
    ### BEGIN SOLUTION
    return 2 * 3 + 1 + 2 + 1 + 4
    ### END SOLUTION


# %% check="predict_bytes" points=1
PREDICT_TEXT = "分词 ok 👍"
grading.check_prediction(predict_bytes, len(PREDICT_TEXT.encode("utf-8")),
                         what='the bytes of "分词 ok 👍"', mistakes=CATALOGUE.mistakes("predict_bytes"),
                         hint="Chinese characters take 3 bytes in UTF-8, emoji 4")

# %% hidden="predict_bytes" points=1
grading.check_prediction(predict_bytes, 14, what="the number of bytes",
                         mistakes=CATALOGUE.mistakes("predict_bytes"))

# %%
for ch in ["a", "é", "中", "👍", "\n"]:
    b = ch.encode("utf-8")
    print(f"{ch!r:6} U+{ord(ch):05X}  {len(b)} byte(s): {' '.join(f'{x:02x}' for x in b)}")
print()
print("'分词' as bytes:", list("分词".encode("utf-8")))
print("decoding half a character:", bytes([0xE5, 0x88]).decode("utf-8", errors="replace"))
print(f"{PREDICT_TEXT!r}: {len(PREDICT_TEXT)} characters, {len(PREDICT_TEXT.encode())} bytes")

# %% [markdown]
# The last line matters later: a token boundary can fall *inside* a character, so a single token
# may not be valid UTF-8. Decoders replace such bytes with U+FFFD (�) instead of crashing.

# %% [markdown]
# ## 2. Byte-pair encoding, step by step
#
# BPE (Sennrich et al. 2016, originally a 1994 compression algorithm by Gage) learns a
# vocabulary bottom-up:
#
# 1. write the training text as byte ids 0–255;
# 2. count every adjacent pair of ids;
# 3. give the most frequent pair a new id (256, 257, …) and replace it everywhere;
# 4. repeat until the vocabulary has the size you want.
#
# The ordered list of merges *is* the tokenizer. To encode new text, apply the merges in the
# order they were learned. Drag the slider to watch the merges build up on one sentence (the
# tokenizer was trained on that sentence alone; `|` marks token boundaries):

# %%
sentence = "the cat sat on the mat; the cat ate the rat, and the rat ran"
sentence_vocab, sentence_merges = train_bpe([sentence], 256 + 20)


def show_merges(k: int = 5) -> None:
    tok = Tokenizer({i: b for i, b in sentence_vocab.items() if i < 256 + k}, sentence_merges[:k])
    ids = tok.encode(sentence)
    print(f"after {k} merges: {len(ids)} tokens (from {len(sentence.encode())} bytes)")
    print("|".join(tok.decode([i]) for i in ids))
    if k:
        a, b = sentence_merges[k - 1]
        print(f"merge {k}: {a!r} + {b!r} -> {a + b!r}")


show_merges(5)

# %% tags=["nbval-ignore-output"]
widgets.interact(show_merges, k=widgets.IntSlider(value=5, min=0, max=20, description="merges"));

# %% [markdown]
# Ties are broken deterministically: among equally frequent pairs, llmlab (like the Stanford
# CS336 reference) takes the *lexicographically greatest* pair of byte strings. The tie-break
# matters: two trainers that break ties differently learn different vocabularies from the same
# text.
#
# ### Exercise 1.2 — count adjacent pairs · 2 points · difficulty 1 · ~5 min
#
# Count every adjacent pair in `ids`. Each occurrence adds `weight` (when a word occurs 40 times
# in the corpus we count its pairs once with weight 40). When `counts` is given, add into it and
# return it; otherwise start from an empty dict.
# `count_pairs([1, 2, 1, 2, 3]) == {(1, 2): 2, (2, 1): 1, (2, 3): 1}`.
#
# <details><summary>Hint 1</summary>The pairs of `ids` are `ids[i], ids[i + 1]` for every `i`
# but the last; Python can walk both sequences at once.</details>

# %% solution="count_pairs"
def count_pairs(ids: list[int], counts: dict[tuple[int, int], int] | None = None,
                weight: int = 1) -> dict[tuple[int, int], int]:
    """Adjacent pair -> number of occurrences (times ``weight``), added into ``counts``."""
    ### BEGIN SOLUTION
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts
    ### END SOLUTION


# %% check="count_pairs" points=1
grading.check_function(count_pairs, bpe_basics.count_pairs, [
    grading.Case([1, 2, 1, 2, 3], note="the example"),
    grading.Case([7], note="one id: no pairs"),
    grading.Case([5, 5, 5], note="overlapping pairs both count"),
    grading.Case([1, 2, 1], {(1, 2): 1}, 2, note="added into counts, with a weight"),
], mistakes=CATALOGUE.mistakes("count_pairs"), hint="zip(ids, ids[1:]) walks over the adjacent pairs")

# %% hidden="count_pairs" points=1
grading.check_function(count_pairs, bpe_basics.count_pairs, [
    grading.Case([], note="empty"),
    grading.Case([1, 2, 3], {(1, 2): 4, (9, 9): 1}, note="adding into existing counts"),
    grading.Case(list(b"hello hello"), weight=3, note="a weight"),
    grading.Case(list("the cat sat".encode()), {}, 2, note="everything at once"),
], mistakes=CATALOGUE.mistakes("count_pairs"))

# %% [markdown]
# ### Exercise 1.3 — apply one merge · 2 points · difficulty 1 · ~5 min
#
# Return a new list where every occurrence of `pair`, scanning left to right and never
# overlapping, is replaced by `new_id`. `merge_pair([5, 5, 5], (5, 5), 9) == [9, 5]`: the first
# two 5s merge and the third has no partner left.
#
# <details><summary>Hint 1</summary>Walk with an index rather than a `for` loop: after a merge
# the next position to look at is two ahead, otherwise one.</details>

# %% solution="merge_pair"
def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """``ids`` with each non-overlapping ``pair`` (left to right) replaced by ``new_id``."""
    ### BEGIN SOLUTION
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
    ### END SOLUTION


# %% check="merge_pair" points=1
from llmlab.tokenizer import bpe_train

MERGE_TWINS = [bpe_train._merge_word, bpe_train._apply_merge]  # llmlab's other merges
grading.check_function(merge_pair, bpe_basics.merge_pair, [
    grading.Case([1, 2, 3, 1, 2], (1, 2), 7, note="two occurrences"),
    grading.Case([5, 5, 5], (5, 5), 9, note="overlap: left to right"),
    grading.Case([1, 2], (2, 1), 7, note="absent pair: unchanged"),
], block=MERGE_TWINS, mistakes=CATALOGUE.mistakes("merge_pair"),
   hint="walk with an index; after a merge skip two positions, otherwise one")

# %% hidden="merge_pair" points=1
grading.check_function(merge_pair, bpe_basics.merge_pair, [
    grading.Case([], (1, 2), 7, note="empty"),
    grading.Case([5, 5, 5, 5], (5, 5), 9, note="four in a row"),
    grading.Case([3, 1, 2], (1, 2), 300, note="pair at the end"),
    grading.Case([1], (1, 1), 8, note="a single id"),
], block=MERGE_TWINS, mistakes=CATALOGUE.mistakes("merge_pair"))

# %% [markdown]
# ### Exercise 1.4 — train BPE, naively · 4 points · difficulty 2 · ~25 min
#
# Write `train_bpe_naive(text, vocab_size, pattern)` → `(vocab, merges)`, byte-level BPE as
# section 2 defines it, with your `count_pairs` and `merge_pair`. The contract:
#
# - `vocab` maps ids 0–255 to `bytes([i])` and each merge's new id to its bytes; the merge
#   learned `k`-th (from 0) gets id `256 + k`, and its bytes are its two parts' bytes joined.
#   `merges` lists the merges in the order learned, each as the pair of **byte strings**
#   `(vocab[a], vocab[b])`.
# - Pairs are counted within pre-tokens only (`pretokenize(text, pattern)`, section 4): no merge
#   crosses a pre-token boundary, and a pre-token that occurs `n` times counts `n` times.
# - Each merge is a most frequent adjacent pair of the text as the merges before it left it;
#   among equally frequent pairs, the one whose byte strings `(vocab[a], vocab[b])` are the
#   greatest (the tie-break above).
# - Training stops when `len(vocab) == vocab_size`, or earlier when no pair is left.
# - **Forbidden:** `train_bpe` and `llmlab`'s merge learners (the check blocks them).
#
# The check compares `vocab` and `merges` with llmlab's on a sentence, a tie and 3,000
# characters of docstrings; the hidden test on Chinese, code with GPT-4's pattern, and a text
# that runs out of pairs.
#
# <details><summary>Hint 1 (the idea)</summary>Equal pre-tokens behave alike: count each
# distinct one once, with its number of occurrences as the weight.</details>
# <details><summary>Hint 2 (the structure)</summary>Keep the words as a dict from a tuple of ids
# to its count: merging changes the keys, not the counts, and two words that become equal after
# a merge add their counts.</details>
# <details><summary>Hint 3 (the key formula)</summary>One `max` over the pair counts picks the
# merge, with the key `(counts[p], vocab[p[0]], vocab[p[1]])`.</details>

# %% solution="train_bpe_naive"
def train_bpe_naive(text: str, vocab_size: int, pattern: str = GPT2_PATTERN
                    ) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Byte-level BPE by recounting all pairs after every merge."""
    ### BEGIN SOLUTION
    words = {tuple(w.encode("utf-8")): n for w, n in Counter(pretokenize(text, pattern)).items()}
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    while len(vocab) < vocab_size:
        counts = {}
        for w, n in words.items():
            count_pairs(list(w), counts, n)
        if not counts:
            break
        a, b = max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))
        new_id = len(vocab)
        vocab[new_id] = vocab[a] + vocab[b]
        merges.append((vocab[a], vocab[b]))
        merged = {}
        for w, n in words.items():
            key = tuple(merge_pair(list(w), (a, b), new_id))
            merged[key] = merged.get(key, 0) + n
        words = merged
    return vocab, merges
    ### END SOLUTION


# %% check="train_bpe_naive" points=2
grading.check_function(train_bpe_naive, bpe_basics.train_bpe_naive, [
    grading.Case(sentence, 270, note="the slider's sentence, 14 merges"),
    grading.Case("abcd", 258, note="a tie: the greatest pair wins"),
    grading.Case(english[:3000], 320, note="3,000 characters of docstrings"),
], block=[bpe_merges_from_counts, bpe_train.train_bpe, *MERGE_TWINS],
   mistakes=CATALOGUE.mistakes("train_bpe_naive"),
   hint="ties: max over (count, vocab[a], vocab[b]); merges hold bytes, not ids")

# %% hidden="train_bpe_naive" points=2
grading.check_function(train_bpe_naive, bpe_basics.train_bpe_naive, [
    grading.Case("aaaa aaaa", 300, note="runs out of pairs before vocab_size"),
    grading.Case(chinese[:300], 300, note="Chinese: 3-byte characters"),
    grading.Case(code[:3000], 330, GPT4_PATTERN, note="code with GPT-4's pattern"),
], block=[bpe_merges_from_counts, bpe_train.train_bpe, *MERGE_TWINS],
   mistakes=CATALOGUE.mistakes("train_bpe_naive"))

# %% [markdown]
# ### Exercise 1.5 — encode with merge ranks · 3 points · difficulty 2 · ~10 min
#
# Encoding one pre-token: start from its bytes as ids, and repeatedly merge the adjacent pair
# that was learned **earliest** (the lowest new id in `merges`, a dict `(a, b) -> new_id`), until
# no adjacent pair has a merge. This "lowest rank first" rule is exactly what tiktoken and
# Hugging Face do, and why encoding reproduces training: the order of merges is the priority.
#
# <details><summary>Hint 1</summary>Your `count_pairs` lists the adjacent pairs; among them,
# find the one with the smallest rank (pairs without a merge rank as infinity).</details>
# <details><summary>Hint 2</summary>Stop when the best pair has no merge; otherwise your
# `merge_pair` applies it and you look again.</details>

# %%
sentence_tok = Tokenizer(sentence_vocab, sentence_merges)
# the slider sentence's merges as (left id, right id) -> new id
sentence_ranks = {(sentence_tok.token_to_id[a], sentence_tok.token_to_id[b]):
                  sentence_tok.token_to_id[a + b] for a, b in sentence_merges}
print(list(sentence_ranks.items())[:4])


# %% solution="bpe_encode"
def bpe_encode(data: bytes, merges: dict[tuple[int, int], int]) -> list[int]:
    """Token ids of one pre-token's bytes."""
    ### BEGIN SOLUTION
    ids = list(data)
    while len(ids) >= 2:
        pairs = count_pairs(ids)
        pair = min(pairs, key=lambda p: merges.get(p, float("inf")))
        if pair not in merges:
            break
        ids = merge_pair(ids, pair, merges[pair])
    return ids
    ### END SOLUTION


# %% check="bpe_encode" points=1
import llmlab.tokenizer.dropout

grading.check_function(bpe_encode, bpe_basics.bpe_encode, [
    grading.Case(b" cat", sentence_ranks, note="a word of the sentence"),
    grading.Case(b"x", sentence_ranks, note="one byte"),
    grading.Case(b" the", {}, note="no merges at all"),
    grading.Case(b"cbbbd", {(98, 98): 256, (99, 98): 257, (98, 100): 258},
                 note="the lowest rank is neither the leftmost pair nor the last learned"),
], block=[Tokenizer, llmlab.tokenizer.dropout._merge_with_dropout],
   mistakes=CATALOGUE.mistakes("bpe_encode"),
   hint="pick the pair with the smallest merges[pair]; stop when none is in merges")

# %% hidden="bpe_encode" points=2
grading.check_function(bpe_encode, bpe_basics.bpe_encode, [
    grading.Case(b"zyyyz", {(121, 122): 256, (122, 121): 257, (121, 121): 258}, note="ranks, not positions"),
    grading.Case(b" theatre", sentence_ranks, note="a new word"),
    grading.Case(b"", sentence_ranks, note="empty"),
    grading.Case(b"aaaaa", {(97, 97): 256, (256, 256): 257}, note="merges of merges"),
    grading.Case(b"abc", {(98, 99): 256, (97, 98): 257}, note="rank beats position"),
], block=[Tokenizer, llmlab.tokenizer.dropout._merge_with_dropout],
   mistakes=CATALOGUE.mistakes("bpe_encode"))

# %% [markdown]
# From here on the chapter runs *your* functions where it can: each is tried on a few cases
# against llmlab's, and used when it agrees (otherwise llmlab's, with a note saying why).

# %%
naive_trainer = grading.prefer_yours(train_bpe_naive, bpe_basics.train_bpe_naive,
                                     [grading.Case(sentence, 270), grading.Case(english[:2000], 300)],
                                     name="train_bpe_naive")
encode_word = grading.prefer_yours(bpe_encode, bpe_basics.bpe_encode,
                                   [grading.Case(b" theatre", sentence_ranks),
                                    grading.Case(b"aaaaa", {(97, 97): 256, (256, 256): 257})],
                                   name="bpe_encode")
print([sentence_tok.decode([i]) for i in encode_word(b" the rat sat", sentence_ranks)])

# %% [markdown]
# ## 3. Fast training
#
# The naive trainer recounts every pair of every word after every merge:
# O(merges × corpus). `llmlab.tokenizer.train_bpe` learns *the same merges* much faster:
#
# - it keeps `pair_counts` and an index `where[pair]` of the words containing each pair, so a
#   merge only touches the words that contain it (early merges touch many, late merges few);
# - a max-heap ordered by (count, tie-break) picks the next merge; entries are not updated in
#   place but re-checked when they surface ("lazy deletion") — a merge `(a, b) → c` only lowers
#   existing counts and creates pairs containing `c`, so a stale entry always over-states and
#   can simply be re-pushed with its true count;
# - on large inputs, pre-tokens are counted by several processes in parallel, the text cut at
#   special tokens and at positions where no pre-token can cross.
#
# ### Exercise 1.6 — the fast incremental BPE trainer · 6 points · difficulty 3 · ~45 min
#
# Write `bpe_merges_fast(word_counts, num_merges)`, the merge learner `train_bpe` calls. The
# contract:
#
# - **Input.** `word_counts` maps each pre-token's UTF-8 bytes to its count
#   (`{b" the": 4120, ...}`, what `word_counts_of` below returns); `num_merges` is how many
#   merges to learn; `progress` may be ignored.
# - **Output.** Exactly the `(vocab, merges)` your naive trainer returns for the same
#   pre-tokens: the same merges in the same order (the same tie-break), the merge learned
#   `k`-th with id `256 + k`; fewer than `num_merges` when the pairs run out.
# - **Cost.** Work per merge proportional to the words that contain the merged pair, not to the
#   corpus: the hidden test runs 1,000 merges on a fixed corpus (100,000 characters of
#   docstrings) with a time limit of 15 times what llmlab's learner takes (at least 2.5 s),
#   which a naive trainer misses several times over.
# - **Forbidden:** the naive trainers and `train_bpe` (the check blocks them). `heapq` and
#   `desc_key` (below) are yours to use.
#
# <details><summary>Hint 1 (the idea)</summary>A merge <code>(a, b) → c</code> changes only
# the words that contain the pair, and within them only the pairs that touch it: counts can be
# kept up to date instead of recounted. The next merge is the maximum of counts that change a
# little at every step: a heap, where an entry that is out of date is not searched for but
# recognised when it surfaces.</details>
# <details><summary>Hint 2 (the structure)</summary><code>pair_counts</code> (pair →
# weighted count), <code>where</code> (pair → indices of the words that may contain it: check a
# word before you use it), the words as lists of ids, and a heap of
# <code>(-count, desc_key(vocab[a]), desc_key(vocab[b]), a, b)</code>. A merge only lowers the
# counts of pairs that existed and creates pairs that contain <code>c</code>: push those. An
# entry whose count is no longer <code>pair_counts[pair]</code> over-states it: push it again with
# its true count (if above 0) and pop the next.</details>
# <details><summary>Hint 3 (the key formula)</summary>For each word <code>i</code> in
# <code>where[(a, b)]</code>: subtract the word's count for every pair of the old word, merge
# it, add it for every pair of the new word — all of them, rather than patching
# neighbours: a word can hold the pair several times (<code>a b a b</code>).</details>

# %%
import heapq  # noqa: E402
from collections import defaultdict  # noqa: E402


def desc_key(b: bytes) -> tuple[int, ...]:
    """A key under which byte strings sort in *descending* order (for a min-heap)."""
    return tuple(255 - x for x in b) + (256,)


# %% solution="bpe_fast"
def bpe_merges_fast(word_counts: dict[bytes, int], num_merges: int, progress: bool = False
                    ) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Up to ``num_merges`` BPE merges from pre-token bytes -> count, with incremental counts."""
    ### BEGIN SOLUTION
    vocab = {i: bytes([i]) for i in range(256)}
    words = [list(w) for w in word_counts]
    freqs = list(word_counts.values())
    pair_counts, where = defaultdict(int), defaultdict(set)
    for i, w in enumerate(words):
        for p in zip(w, w[1:]):
            pair_counts[p] += freqs[i]
            where[p].add(i)

    def entry(p):
        return (-pair_counts[p], desc_key(vocab[p[0]]), desc_key(vocab[p[1]]), *p)

    heap = [entry(p) for p in pair_counts]
    heapq.heapify(heap)
    merges = []
    while len(merges) < num_merges and heap:
        neg, _, _, a, b = heapq.heappop(heap)
        if -neg != pair_counts.get((a, b), 0):  # stale: re-push with the true count
            if pair_counts.get((a, b), 0) > 0:
                heapq.heappush(heap, entry((a, b)))
            continue
        c = len(vocab)
        vocab[c] = vocab[a] + vocab[b]
        merges.append((vocab[a], vocab[b]))
        born = set()
        for i in where.pop((a, b)):
            new = merge_pair(words[i], (a, b), c)
            if len(new) == len(words[i]):
                continue  # a stale index entry
            for p in zip(words[i], words[i][1:]):
                pair_counts[p] -= freqs[i]
            for p in zip(new, new[1:]):
                pair_counts[p] += freqs[i]
                where[p].add(i)
                if c in p:
                    born.add(p)
            words[i] = new
        pair_counts.pop((a, b))
        for p in born:
            if pair_counts[p] > 0:
                heapq.heappush(heap, entry(p))
    return vocab, merges
    ### END SOLUTION


# %%
def word_counts_of(text: str, pattern: str = GPT2_PATTERN) -> dict[bytes, int]:
    """Pre-token bytes -> count, the input of a merge learner."""
    return dict(Counter(w.encode("utf-8") for w in pretokenize(text, pattern)))


# %% check="bpe_fast" points=3
grading.check_function(bpe_merges_fast, bpe_merges_from_counts, [
    grading.Case(word_counts_of(sentence), 14, note="the slider's sentence"),
    grading.Case({b"abab": 3, b"ab": 1}, 3, note="a pair twice in one word"),
    grading.Case(word_counts_of(english[:5000]), 200, note="5,000 characters of docstrings"),
], block=[bpe_basics.train_bpe_naive, train_bpe], mistakes=CATALOGUE.mistakes("bpe_fast"),
   hint="compare with your naive trainer on a small input: which merge differs first?")

# %% hidden="bpe_fast" points=3
_fixed = word_counts_of(english[:100_000])
_ref_took = []
for _ in range(3):
    t = time.perf_counter()
    bpe_merges_from_counts(_fixed, 1000)
    _ref_took.append(time.perf_counter() - t)
_limit = max(2.5, 15 * sorted(_ref_took)[1])  # a naive trainer needs several times this
grading.check_function(bpe_merges_fast, bpe_merges_from_counts, [
    grading.Case({b"aaaa": 2, b"aaa": 5}, 10, note="runs of one byte, running out of pairs"),
    grading.Case(word_counts_of(chinese[:400]), 100, note="Chinese"),
    grading.Case({b"abc": 5, b"ab": 3, b"bc": 3, b"xabc": 1}, 6,
                 note="ab and bc compete for the b of abc"),
], block=[bpe_basics.train_bpe_naive, train_bpe], mistakes=CATALOGUE.mistakes("bpe_fast"))
_took = []


def _timed(*args):
    t = time.perf_counter()
    out = bpe_merges_fast(*args)
    _took.append(time.perf_counter() - t)
    return out


grading.check_function(_timed, bpe_merges_from_counts, [
    grading.Case(_fixed, 1000, note="the fixed corpus: 100,000 characters, 1,000 merges"),
], name="bpe_merges_fast", block=[bpe_basics.train_bpe_naive, train_bpe])
grading.expect(bool(_took) and _took[-1] < _limit,
               f"1,000 merges on 100,000 characters took over the limit of {_limit:.1f} s: does each "
               "merge touch only the words that contain the pair?", what="bpe_merges_fast speed")

# %% [markdown]
# Your naive trainer against your fast one (or llmlab's, where yours is not passing yet), on
# the same 20,000 characters: they must agree merge for merge.

# %%
merge_learner = grading.prefer_yours(bpe_merges_fast, bpe_merges_from_counts,
                                     [grading.Case(word_counts_of(english[:5000]), 200)],
                                     name="bpe_merges_fast")
sample = english[:20_000]
t = time.perf_counter()
naive = naive_trainer(sample, 600)
t_naive = time.perf_counter() - t
t = time.perf_counter()
fast = train_bpe([sample], 600, learn_merges=merge_learner)
t_fast = time.perf_counter() - t
assert fast == naive
print("identical vocab and merges:", fast == naive)

# %% tags=["nbval-ignore-output"]
print(f"naive {t_naive:.2f} s · fast {t_fast:.3f} s · {t_naive / t_fast:.0f}x faster")

# %% [markdown]
# Now the tokenizer the rest of the chapter uses: 8,000 tokens trained on 400 kB of docstrings,
# 400 kB of standard-library code and half of the Chinese sample, with one special token.

# %% tags=["nbval-ignore-output"]
EOT = "<|endoftext|>"
t = time.perf_counter()
vocab, merges = train_bpe([english, code, chinese], 8000, [EOT], progress=True,
                          learn_merges=merge_learner)
print(f"trained 8,000 tokens on {len(english) + len(code) + len(chinese):,} chars"
      f" in {time.perf_counter() - t:.1f} s")

# %%
tok = Tokenizer(vocab, merges, [EOT])
print(tok)
print("a few late merges:", [a + b for a, b in merges[-6:]])


def show_tokens(text: str, tokenizer=tok) -> None:
    ids = tokenizer.encode(text)
    pieces = [tokenizer.decode([i]) for i in ids]
    print(f"{len(text.encode())} bytes -> {len(ids)} tokens: " + "|".join(pieces))


show_tokens("Return the number of items in the list.")
show_tokens("    def __init__(self, *args, **kwargs):")
show_tokens("分词是大语言模型处理文本的第一步。")

# %% [markdown]
# Each `�` piece in the Chinese line is a token that holds only part of a character's three
# bytes: that character's bytes were never merged into one token, so it is spelled in pieces.
# Chinese is a small share of this tokenizer's training text (half of the Chinese sample against
# 800 kB of English and code; sizes printed at the top of the chapter): common characters and
# words earned merges, rarer ones stay split (section 10 measures what that costs).

# %% [markdown]
# ## 4. Pre-tokenization: the regex before BPE
#
# Without a rule, BPE would learn tokens such as `"dog."`, `"dog!"` and `"dog?"` separately and
# merge across word boundaries. GPT-2 therefore first cuts the text with a regular expression
# (letters, numbers, punctuation, whitespace, English contractions, each optionally with one
# leading space) and merges only *within* the pieces. GPT-4's pattern (`cl100k_base`) changed
# three things: contractions are case-insensitive, **numbers are cut into runs of at most three
# digits**, and a word may take one leading non-letter (so `"_name"` can be one token).

# %%
for text in ["It's 2024: 1234567 + 89 = 1234656!", "    return self._cache"]:
    for name, pattern in [("GPT-2", GPT2_PATTERN), ("GPT-4", GPT4_PATTERN)]:
        print(f"{name}: {pretokenize(text, pattern)}")
    print()

# %% [markdown]
# Why it matters for arithmetic: with GPT-2's pattern a number is one pre-token and BPE merges
# its digits in whatever chunks were frequent in training, so `1234567` and `1234568` may split
# at different places and digits of equal place value do not line up. Runs of three (GPT-4,
# Llama 3) or single digits (Llama 1/2, Qwen) make the split predictable.

# %%
for n in ["1234567", "1234568", "2024", "99999"]:
    show_tokens(n)

# %% [markdown]
# ## 5. Special tokens and chat templates
#
# Special tokens mark structure: the end of a document (`<|endoftext|>`), or the turns of a
# conversation. They are matched *before* pre-tokenization (the longest first when two
# overlap), map to reserved ids, and are never produced by merging ordinary text — typing the
# characters `<|im_start|>` into a chat box must not let a user forge a system turn, which is
# why production tokenizers only accept them from trusted code.
#
# Chat models are trained on conversations rendered by a **chat template**. ChatML (OpenAI;
# Qwen uses it too) wraps each message as `<|im_start|>role\ncontent<|im_end|>\n`. For
# supervised fine-tuning we compute the loss only on what the assistant wrote — its reply and
# the `<|im_end|>` that ends it, so the model learns to stop — which the **assistant mask**
# marks (1 = train on this token). llmlab's mask matches `transformers`'
# `apply_chat_template(..., return_assistant_tokens_mask=True)` token for token (tested).
#
# ### Exercise 1.7 — the assistant mask · 4 points · difficulty 2 · ~20 min
#
# Write `chat_encode(tok, messages)` → `(ids, mask)`. `render_chatml(messages)` (given) returns
# the ChatML text and the **character** spans `(start, end)` the assistant wrote (its content and
# the `<|im_end|>` after it). Encode the whole text with `tok.encode` and mark a token with 1
# when its *first byte* lies inside an assistant span, else 0. `tok.vocab[i]` holds the bytes of
# token `i` (a special token's bytes are its text).
#
# <details><summary>Hint 1</summary>Tokens are measured in bytes, spans in characters: they
# differ as soon as a message is not ASCII. Convert the spans to byte offsets first.</details>
# <details><summary>Hint 2</summary>The byte offset of character `j` is the length of
# `text[:j]` encoded as UTF-8. Walk the tokens keeping a running byte position.</details>

# %%
chat_vocab, chat_merges = train_bpe([english, code, chinese], 2000, CHATML_SPECIAL_TOKENS,
                                    learn_merges=merge_learner)
chat_tok = Tokenizer(chat_vocab, chat_merges, CHATML_SPECIAL_TOKENS)
messages = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "What does len() return?"},
    {"role": "assistant", "content": "The number of items in a container."},
]
print(render_chatml(messages)[0])


# %% solution="chat_mask"
def chat_encode(tok: Tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """ChatML token ids and the assistant mask (1 = trained on), the same length."""
    ### BEGIN SOLUTION
    text, spans = render_chatml(messages)
    ids = tok.encode(text)
    byte_spans = [(len(text[:a].encode()), len(text[:b].encode())) for a, b in spans]
    mask, pos = [], 0
    for i in ids:
        mask.append(int(any(a <= pos < b for a, b in byte_spans)))
        pos += len(tok.vocab[i])
    return ids, mask
    ### END SOLUTION


# %% check="chat_mask" points=2
def chat_reference(tok, messages):
    enc = apply_chat_template(tok, messages)
    return enc.ids, enc.assistant_mask


CHAT_MISTAKES = CATALOGUE.mistakes("chat_mask")
zh_chat = [{"role": "user", "content": "分词是什么?"},
           {"role": "assistant", "content": "把文本切成词元。"},
           {"role": "user", "content": "thanks"}, {"role": "assistant", "content": "不客气"}]
grading.check_function(chat_encode, chat_reference, [
    grading.Case(chat_tok, messages, note="system, user, assistant"),
    grading.Case(chat_tok, zh_chat, note="Chinese turns: 3 bytes per character"),
], block=[apply_chat_template], mistakes=CHAT_MISTAKES,
   hint="the assistant's reply and its <|im_end|> are trained on; nothing else")

# %% hidden="chat_mask" points=2
grading.check_function(chat_encode, chat_reference, [
    grading.Case(chat_tok, [{"role": "user", "content": "hi"}], note="no assistant turn"),
    grading.Case(chat_tok, [{"role": "assistant", "content": ""}], note="an empty reply"),
    grading.Case(chat_tok, [{"role": "system", "content": "👍 ok"}, *zh_chat, *messages[1:]],
                 note="emoji, Chinese and English, several turns"),
], block=[apply_chat_template], mistakes=CHAT_MISTAKES)

# %%
encode_chat = grading.prefer_yours(chat_encode, chat_reference, [grading.Case(chat_tok, zh_chat)],
                                   name="chat_encode")
chat_ids, chat_mask = encode_chat(chat_tok, messages)
print("".join(f"[{chat_tok.decode([i])}]" if m else chat_tok.decode([i])
              for i, m in zip(chat_ids, chat_mask)))
print(f"{sum(chat_mask)} of {len(chat_ids)} tokens are trained on ([...] above)")

# %% [markdown]
# ## 6. Your tokenizer, checked against the industry
#
# Every piece so far — pairs, merges, ranks, the pre-tokenization regex, special tokens — has
# been a function; what a model ships with is one object that holds them and turns any text into
# ids and back. Until now that object was llmlab's `Tokenizer`. Now you build it, and the
# chapter's headline check runs on yours: the same ids as `tiktoken`, id for id.
#
# ### Exercise 1.8 — capstone: the tokenizer · 8 points · difficulty 3 · ~60 min
#
# Write `BPETokenizer`, the class `llmlab.tokenizer.Tokenizer` has been for this chapter (and
# `tiktoken.Encoding` is for OpenAI's models). The contract:
#
# - **Construction.** `BPETokenizer(vocab, merges, special_tokens=None, pattern=GPT2_PATTERN)`.
#   `vocab` maps ids to bytes, ids 0–255 being the single bytes (`vocab[i] == bytes([i])`, as
#   in every vocabulary this chapter trains); `merges` holds `(left, right)` byte strings, the
#   earliest learned first, and the ids of their results grow in that order (as `train_bpe`
#   returns them); each special token's UTF-8 bytes are in `vocab` (`train_bpe` puts them
#   there). A vocabulary that lacks a single byte, or a merge whose parts or result are not in
#   `vocab`, raises `ValueError` naming what is missing.
# - **`encode(text) -> list[int]`.** The ids tiktoken and Hugging Face `tokenizers` give for the
#   same merges, pattern and special tokens: a special token anywhere in `text` is its own id —
#   where two special tokens match at the same position, the longer one — and never merges with
#   the text around it; the text between special tokens is cut by `pattern`, and each pre-token
#   is encoded by merge rank, as your `bpe_encode` (1.5) does.
# - **`encode_iterable(chunks) -> Iterator[int]`.** For any iterable of strings, exactly the ids
#   of `encode("".join(chunks))`, wherever the chunks are cut (inside a word, a run of spaces, a
#   special token), yielded **lazily**: ids come out before the iterable is exhausted, and what
#   is held back is only the text that chunks still to come could change — so a file of any size
#   streams in bounded memory.
# - **`decode(ids) -> str`.** Byte-exact: the bytes of the ids, concatenated, decoded as UTF-8,
#   with bytes that are not valid UTF-8 (ids that end inside a character) shown as U+FFFD;
#   `decode(encode(text)) == text` for every string. An id not in `vocab` raises `ValueError`
#   naming it.
# - **Forbidden:** `llmlab.tokenizer`'s `Tokenizer`, `split_special`, `special_regex`,
#   `last_safe_cut`, `encode_with_dropout` and `bpe_basics.bpe_encode`, and `tiktoken` (the
#   check blocks them). `regex`, `pretokenize` and your own functions of this chapter are yours.
#
# The check builds two small tokenizers and compares yours with llmlab's on: the ids of texts
# with special tokens (two of which begin alike), code, Chinese and emoji; the round trip; the
# decoding of every prefix of a text's ids; the ids streamed in chunks of a few characters;
# whether the first id arrives before the stream ends; an id that is not in `vocab`. Once it
# passes, the rest of this section runs on your class.
#
# <details><summary>Hint 1 (the idea)</summary>Streaming is the design question. Ask where text
# can be cut so that both sides encode exactly as the whole would: at the edges of a special
# token, and, inside ordinary text, wherever no pre-token of the pattern can cross. Then ask
# what text that has not arrived yet can still change: only the end of what you hold (a special
# token may still be growing into a longer one, a word may go on).</details>
#
# <details><summary>Hint 2 (the structure)</summary>Build what <code>encode</code> needs once, in
# <code>__init__</code>: the table <code>(left id, right id) -> result id</code> your
# <code>bpe_encode</code> takes (the result ids grow with the merge order, so they rank the
# merges), and one regex of the special tokens, longest first, inside a capturing group, so that
# <code>split</code> returns text and special tokens alternately. A dict from pre-token to its
# ids makes repeated words free. <code>encode_iterable</code> keeps a buffer: add a chunk, find
# the last safe cut that later text cannot move, yield the ids up to it, keep the rest; at the
# end, encode what is left.</details>
#
# <details><summary>Hint 3 (the key formulas)</summary>Special tokens:
# <code>regex.compile("(" + "|".join(regex.escape(t) for t in sorted(specials, key=len,
# reverse=True)) + ")")</code>. Under GPT-2's and GPT-4's patterns no pre-token crosses the
# position between a non-space and a space, nor the one after a lone newline between non-spaces:
# <code>regex.compile(r"(?r)(?&lt;=\S)(?= )|(?&lt;=\S\n)(?=\S)")</code> finds the last such
# position (<code>(?r)</code> searches backwards; pass <code>pos</code> and
# <code>endpos</code>). Hold back <code>max(len(t) for t in specials) - 1</code> characters, and
# never cut inside a special token. Decode:
# <code>b"".join(...).decode("utf-8", errors="replace")</code>.</details>

# %%
import regex  # noqa: E402
import tiktoken  # noqa: E402

from llmlab.tokenizer.pretokenize import last_safe_cut, special_regex, split_special  # noqa: E402


# %% solution="tokenizer"
class BPETokenizer:
    """Byte-level BPE: encode (special tokens, pre-tokens, merge ranks), stream, decode."""

    def __init__(self, vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]],
                 special_tokens: list[str] | None = None, pattern: str = GPT2_PATTERN) -> None:
        ### BEGIN SOLUTION
        if any(vocab.get(i) != bytes([i]) for i in range(256)):
            raise ValueError("vocab must map every id 0..255 to its single byte")
        self.vocab = dict(vocab)
        ids = {b: i for i, b in vocab.items()}
        self.ranks = {}  # (left id, right id) -> result id; a smaller id was learned earlier
        for a, b in merges:
            if a not in ids or b not in ids or a + b not in ids:
                raise ValueError(f"merge {(a, b)!r}: its parts and result must be in vocab")
            self.ranks.setdefault((ids[a], ids[b]), ids[a + b])
        self.special = {t: ids[t.encode("utf-8")] for t in special_tokens or []}
        longest_first = sorted(self.special, key=len, reverse=True)
        self.special_re = (regex.compile("(" + "|".join(map(regex.escape, longest_first)) + ")")
                           if self.special else None)
        self.pattern = regex.compile(pattern)
        self.cut_re = regex.compile(r"(?r)(?<=\S)(?= )|(?<=\S\n)(?=\S)")
        self.cache = {}
        ### END SOLUTION

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens in it map to their ids."""
        ### BEGIN SOLUTION
        out = []
        parts = self.special_re.split(text) if self.special_re else [text]
        for k, part in enumerate(parts):
            if k % 2:  # split's capturing group: every other part is a special token
                out.append(self.special[part])
                continue
            for piece in self.pattern.findall(part):
                if piece not in self.cache:
                    self.cache[piece] = bpe_encode(piece.encode("utf-8"), self.ranks)
                out.extend(self.cache[piece])
        return out
        ### END SOLUTION

    def encode_iterable(self, chunks: Iterable[str]) -> Iterator[int]:
        """The ids of ``"".join(chunks)``, yielded as the chunks come."""
        ### BEGIN SOLUTION
        hold = max(map(len, self.special), default=1) - 1  # a special token may still grow
        buf = ""
        for chunk in chunks:
            buf += chunk
            end, start, cut = len(buf) - hold, 0, 0
            for m in self.special_re.finditer(buf) if self.special_re else ():
                if m.start() >= end:
                    break
                start, cut = m.end(), m.start()  # cutting before or after a special token is safe
            if start <= end:
                m = self.cut_re.search(buf, start, max(end, start))
                cut = m.start() if m else start
            if cut:
                yield from self.encode(buf[:cut])
                buf = buf[cut:]
        yield from self.encode(buf)
        ### END SOLUTION

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; bytes that are not valid UTF-8 become U+FFFD."""
        ### BEGIN SOLUTION
        try:
            data = b"".join(self.vocab[i] for i in ids)
        except KeyError as e:
            raise ValueError(f"decode: unknown token id {e.args[0]}") from None
        return data.decode("utf-8", errors="replace")
        ### END SOLUTION


# %% check="tokenizer" points=4
def _tokenizer_trace(cls, vocab, merges, specials, pattern, texts, every) -> dict:
    """Build a tokenizer with ``cls``; record what a tokenizer must get right."""
    tok = cls(vocab, merges, specials, pattern)
    out = {}
    for k, text in enumerate(texts):
        ids = tok.encode(text)
        chunks = [text[j:j + every] for j in range(0, len(text), every)]
        out[f"text {k}: encode"] = ids
        out[f"text {k}: decode(encode(text)) == text"] = tok.decode(ids) == text
        out[f"text {k}: encode_iterable, {every}-character chunks"] = \
            list(tok.encode_iterable(iter(chunks)))
    out["the last text: decode(ids[:k]) for every k"] = [tok.decode(ids[:k])
                                                         for k in range(len(ids) + 1)]
    pulled = []

    def stream():
        for c in chunks:
            pulled.append(c)
            yield c

    next(iter(tok.encode_iterable(stream())), None)
    out["the last text streamed: an id before the stream ends"] = len(pulled) < len(chunks)
    try:
        tok.decode([max(vocab) + 1])
        out["decode of an id not in vocab"] = "no error"
    except ValueError:
        out["decode of an id not in vocab"] = "ValueError"
    return out


_tok_specials = [EOT, "<|sep|>", "<|sep|><|sep|>"]  # one special token begins another
_tok_vocab, _tok_merges = train_bpe([english[:4000], chinese[:300]], 400, _tok_specials)
_tok_blocked = [Tokenizer, split_special, special_regex, last_safe_cut, encode_with_dropout,
                bpe_basics.bpe_encode, tiktoken.Encoding]
_tok_mistakes = {k: (lambda *a, v=v: _tokenizer_trace(v, *a))
                 for k, v in CATALOGUE.mistakes("tokenizer").items()}
_tok_case = grading.Case(_tok_vocab, _tok_merges, _tok_specials, GPT2_PATTERN,
                         [english[4000:4400] + EOT + " next", "a<|sep|><|sep|>b <|sep|>c",
                          chinese[300:400] + " 👍 ok"], 7,
                         note="docstrings, special tokens, Chinese and an emoji; chunks of 7")
grading.check_function(
    lambda *a: _tokenizer_trace(BPETokenizer, *a), lambda *a: _tokenizer_trace(Tokenizer, *a),
    [_tok_case], name="BPETokenizer", block=_tok_blocked, mistakes=_tok_mistakes,
    hint="compare the entry that differs with the contract above; the hints go from the idea "
         "to the formulas")

# %% hidden="tokenizer" points=4
### BEGIN HIDDEN TESTS
_tok4_vocab, _tok4_merges = train_bpe([code[:4000], chinese[:300]], 400, [EOT], GPT4_PATTERN)
grading.check_function(
    lambda *a: _tokenizer_trace(BPETokenizer, *a), lambda *a: _tokenizer_trace(Tokenizer, *a),
    name="BPETokenizer", block=_tok_blocked, mistakes=_tok_mistakes, cases=[
        grading.Case(_tok4_vocab, _tok4_merges, [EOT], GPT4_PATTERN,
                     [code[4000:4300], "x = 1234567  \n\n\t  " + EOT + EOT + "\n", "",
                      "👍🏽 分词 ok" + chinese[400:450]], 1,
                     note="GPT-4's pattern, code, one character per chunk"),
        grading.Case(_tok_vocab, _tok_merges, ["<|sep|>", EOT, "<|sep|><|sep|>"], GPT2_PATTERN,
                     ["<|sep|><|sep|><|sep|>" + english[5000:5200] + "<|sep|>",
                      EOT + "  <|sep|> <|sep|><|sep|>\n" + chinese[500:560]], 5,
                     note="special tokens at the edges, one begins another; chunks of 5"),
        grading.Case({i: b for i, b in _tok_vocab.items() if i != 101}, _tok_merges,
                     _tok_specials, GPT2_PATTERN, ["e"], 3, note="a vocab without the byte 'e'"),
    ])
### END HIDDEN TESTS

# %% [markdown]
# The chapter's tokenizer — 8,000 tokens, the merges of section 3 — now built with your class
# (when it passes; llmlab's otherwise), against tiktoken and Hugging Face `tokenizers` given the
# same merges and GPT-2's pattern (`r50k_base`'s regex). The texts are the chapter's held-out
# English, code and Chinese, and a line built to be awkward: every column must hold, id for id.

# %%
Yours = grading.prefer_yours(BPETokenizer, Tokenizer, [_tok_case], name="BPETokenizer",
                             probe=lambda cls: (lambda *a: _tokenizer_trace(cls, *a)),
                             block=_tok_blocked)
yours = Yours(vocab, merges, [EOT])
reference_tt, reference_hf = to_tiktoken(tok), to_hf(tok)
tricky = f"Hello 世界 👍🏽 x=1234567;\n\n\t  spaces   {EOT} done"
texts = {"English (held out)": english_eval, "code (held out)": code_eval,
         "Chinese (held out)": chinese_eval, "the awkward line": tricky}
print(f"{'text':20} {'chars':>8} {'tokens':>7}  = tiktoken  = HF  round trip  streamed")
rows = []
for name, text in texts.items():
    ids = yours.encode(text)
    row = (ids == reference_tt.encode(text, allowed_special="all"),
           ids == reference_hf.encode(text).ids, yours.decode(ids) == text,
           list(yours.encode_iterable(text.splitlines(keepends=True))) == ids)
    rows.append(row)
    print(f"{name:20} {len(text):8,} {len(ids):7,}  " + "  ".join(
        f"{'✓' if ok else '✗':>{w}}" for ok, w in zip(row, (10, 4, 10, 8))))
assert all(all(row) for row in rows)
print("\nthe awkward line, token by token:", [yours.decode([i]) for i in yours.encode(tricky)])

# %% [markdown]
# ## 7. WordPiece (BERT)
#
# WordPiece (Schuster & Nakajima 2012; BERT, Devlin et al. 2018) differs from BPE in both
# directions. **Training** merges the pair with the highest
# $\frac{\mathrm{count}(ab)}{\mathrm{count}(a)\,\mathrm{count}(b)}$ — the merge that raises the
# likelihood of the corpus most under a unigram model — so it prefers pairs whose parts rarely
# occur apart. **Encoding** does not replay merges: it takes the *longest* vocabulary entry at
# the start of a word, then the longest entry marked as a continuation (`##` prefix) at the
# rest, and so on; if some rest matches nothing, the whole word becomes `[UNK]`.
#
# ### Exercise 1.9 — WordPiece longest match first · 3 points · difficulty 1 · ~10 min
#
# Implement `wordpiece_word(word, vocab)`: return `[unk]` for words longer than `max_chars`;
# otherwise from `start = 0`, find the longest `word[start:end]` in `vocab` (with `prefix`
# prepended when `start > 0`), append it, continue from `end`. If no piece matches at some
# `start`, return `[unk]`. With `{"una", "##ff", "##able", ...}`:
# `"unaffable" -> ["una", "##ff", "##able"]`.
#
# <details><summary>Hint 1</summary>Two loops: the outer one moves `start` along the word, the
# inner one shrinks `end` from the end of the word until a piece is found.</details>

# %% solution="wordpiece_word"
def wordpiece_word(word: str, vocab: set[str] | dict[str, int], unk: str = "[UNK]",
                   prefix: str = "##", max_chars: int = 100) -> list[str]:
    """Greedy longest-match-first WordPiece pieces of one word."""
    ### BEGIN SOLUTION
    if len(word) > max_chars:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                break
            end -= 1
        if end == start:
            return [unk]
        start = end
    return pieces
    ### END SOLUTION


# %% check="wordpiece_word" points=1
wp_vocab = {"un", "una", "##ff", "##f", "##able", "##a", "a", "aff", "[UNK]"}
grading.check_function(wordpiece_word, wordpiece.wordpiece_word, [
    grading.Case("unaffable", wp_vocab, note="the example"),
    grading.Case("aff", wp_vocab, note="a whole word"),
    grading.Case("unx", wp_vocab, note="an unmatchable rest"),
], mistakes=CATALOGUE.mistakes("wordpiece_word"), hint="try the longest candidate first and shrink `end`; continuations need the ## prefix")

# %% hidden="wordpiece_word" points=2
grading.check_function(wordpiece_word, wordpiece.wordpiece_word, [
    grading.Case("un" * 60, wp_vocab, note="longer than max_chars"),
    grading.Case("affable", wp_vocab, note="longest first, not shortest"),
    grading.Case("unaffable", wp_vocab, "<unk>", "@@", note="another prefix and unk"),
    grading.Case("xa", wp_vocab, note="no piece at the start"),
    grading.Case("una", {"u", "##n", "##a", "un", "[UNK]"}, max_chars=3, note="exactly max_chars"),
], mistakes=CATALOGUE.mistakes("wordpiece_word"))

# %% [markdown]
# Trained on our docstrings, WordPiece gives ids identical to Hugging Face's `WordPiece` model
# on the same vocabulary (tested). Here it runs with your `wordpiece_word` on the trained
# vocabulary:

# %%
wp = train_wordpiece([english[:200_000]], 2000)
wp_word = grading.prefer_yours(wordpiece_word, wordpiece.wordpiece_word,
                               [grading.Case("unaffable", wp_vocab), grading.Case("xa", wp_vocab)],
                               name="wordpiece_word")
for word in ["Tokenization", "tokenization", "subprocess", "Return", "return"]:
    pieces = wp_word(word, wp.vocab)
    print(f"{word:>13}: {len(pieces):2d} pieces {pieces}")

# %% [markdown]
# "Tokenization" in 11 pieces looks broken, but it is what the likelihood score asks for. The
# score $\frac{\mathrm{count}(ab)}{\mathrm{count}(a)\,\mathrm{count}(b)}$ ranks a pair *low*
# when its parts are frequent on their own: `e`, `t`, `n`, `o` occur everywhere, so pairs of
# common letters are merged late, while pairs whose parts rarely occur apart (`subproc` of
# `subprocess`) are merged early. With only 2,000 entries trained on 200 kB, the budget runs
# out before the common letters are joined; a capital `T` at the start of a word is rare in
# docstrings, so the capitalised word fares worst. BERT's 30,522 entries, trained on billions
# of words, hold "token" and "##ization" — and Hugging Face's WordPiece *trainer* in fact learns
# its vocabulary with BPE counts and only encodes by longest match, which avoids this.

# %% [markdown]
# ## 8. The Unigram language model (SentencePiece)
#
# The Unigram model (Kudo 2018) turns BPE around. It assumes each piece is drawn independently
# with probability $p(x_i)$, so a segmentation $\mathbf{x} = (x_1, \dots, x_M)$ of a text has
# probability $P(\mathbf{x}) = \prod_i p(x_i)$. **Encoding** picks the most likely
# segmentation, found by dynamic programming over end positions (Viterbi):
#
# $$\mathrm{best}[j] = \max_{i < j,\ \text{text}[i:j] \in V} \big(\mathrm{best}[i] + \log p(\text{text}[i:j])\big),\qquad \mathrm{best}[0] = 0 .$$
#
# **Training** starts from a big seed vocabulary (frequent substrings), estimates the $p$'s by
# EM (expected piece counts over all segmentations, via forward–backward), and prunes the
# pieces whose removal hurts the likelihood least, until the target size remains. Because it
# has probabilities, it can also **sample** a segmentation from $P(\mathbf{x})^\alpha$ —
# *subword regularization*, a data augmentation. SentencePiece writes spaces as `▁`.
#
# ### Exercise 1.10 — Viterbi segmentation · 4 points · difficulty 2 · ~25 min
#
# Implement `viterbi_segment(text, scores)`: `scores` maps pieces to log probabilities. Keep
# `best[j]` (best total score of `text[:j]`) and `back[j]` (where the last piece of that best
# path starts); only consider pieces up to `max_len` characters (the longest key when not
# given). A single character that is not in `scores` may still be used with score `unk_score`.
# Walk `back` from the end to recover the pieces.
#
# <details><summary>Hint 1</summary>Initialise `best[0] = 0` and every other entry to minus
# infinity; for each `end`, try every `start` at most `max_len` characters back.</details>
# <details><summary>Hint 2</summary>Following `back` from `len(text)` gives the pieces last to
# first: reverse them.</details>

# %% solution="viterbi_segment"
def viterbi_segment(text: str, scores: dict[str, float], unk_score: float = -100.0,
                    max_len: int | None = None) -> list[str]:
    """The most likely segmentation of ``text`` under a unigram model, as a list of pieces."""
    ### BEGIN SOLUTION
    max_len = max_len or max(map(len, scores), default=1)
    n = len(text)
    best = [0.0] + [float("-inf")] * n
    back = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - max_len), end):
            piece = text[start:end]
            s = scores.get(piece)
            if s is None and end - start == 1:
                s = unk_score
            if s is not None and best[start] + s > best[end]:
                best[end], back[end] = best[start] + s, start
    pieces, end = [], n
    while end > 0:
        pieces.append(text[back[end]:end])
        end = back[end]
    return pieces[::-1]
    ### END SOLUTION


# %% check="viterbi_segment" points=2
toy_scores = {"▁": -3.0, "▁t": -4.5, "▁the": -2.1, "▁to": -3.3, "▁token": -6.2, "▁tok": -7.4,
              "t": -3.9, "o": -3.8, "k": -5.1, "e": -3.2, "n": -3.6, "i": -3.7, "z": -6.9,
              "a": -3.5, "ti": -5.8, "on": -4.4, "tion": -5.0, "iz": -6.6, "ize": -6.0,
              "ization": -7.7, "h": -4.6, "he": -4.1, "r": -3.9, "en": -4.9, "s": -3.4,
              "u": -4.8, "b": -5.5, "l": -4.2}
grading.check_function(viterbi_segment, unigram.viterbi_segment, [
    grading.Case("▁tokenization", toy_scores, note="a long word"),
    grading.Case("▁the", toy_scores, note="one piece"),
    grading.Case("▁theorize", toy_scores, note="a longer word"),
    grading.Case("abc", {"ab": -1.0, "bc": -1.0, "a": -0.5, "b": -5.0, "c": -5.0},
                 note="the longest first piece is not on the best path"),
], mistakes=CATALOGUE.mistakes("viterbi_segment"), hint="best[end] = max over start of best[start] + scores[text[start:end]]")

# %% hidden="viterbi_segment" points=2
grading.check_function(viterbi_segment, unigram.viterbi_segment, [
    grading.Case("aab", {"aa": -4.0, "ab": -1.0, "a": -1.0, "b": -3.0}, note="longest first loses"),
    grading.Case("▁torn", toy_scores, note="short pieces win"),
    grading.Case("▁x", toy_scores, note="an unknown character"),
    grading.Case("▁tokens", toy_scores, -50.0, 4, note="max_len limits the pieces"),
    grading.Case("", toy_scores, note="empty text"),
    grading.Case("▁tuba", toy_scores, note="single characters only"),
], mistakes=CATALOGUE.mistakes("viterbi_segment"))

# %% [markdown]
# Training a Unigram model on our docstrings and handing its pieces and scores to the real
# `sentencepiece` library gives the same segmentations (tested on hundreds of sentences); the
# first line is your `viterbi_segment` on the trained model's scores:

# %% tags=["nbval-ignore-output"]
t = time.perf_counter()
uni = train_unigram([english[:20_000]], 600)
print(f"Unigram: {uni.vocab_size} pieces in {time.perf_counter() - t:.1f} s")

# %%
import sentencepiece as spm  # noqa: E402

sp = spm.SentencePieceProcessor(model_proto=to_sentencepiece(uni))
text = "Return a new list of the items."
segment = grading.prefer_yours(viterbi_segment, unigram.viterbi_segment,
                               [grading.Case("▁theorize", toy_scores), grading.Case("▁x", toy_scores)],
                               name="viterbi_segment")
print("yours         ", [p for w in unigram.split_words(text)
                         for p in segment(w, uni.pieces, uni.unk_score, uni.max_len)])
print("llmlab        ", uni.tokenize(text))
print("sentencepiece ", sp.encode_as_pieces(text))
print("round trip    ", from_sentencepiece(sp).tokenize(text) == uni.tokenize(text))
rng = random.Random(0)
print("\nsampled segmentations (alpha = 0.2):")
for _ in range(3):
    print("  ", uni.sample(text, alpha=0.2, rng=rng))

# %% [markdown]
# ## 9. BPE-dropout
#
# BPE is deterministic, so the model only ever sees one segmentation of each word and never
# learns how `" tokenization"` relates to `" token" + "ization"`. **BPE-dropout** (Provilkov et
# al. 2020) skips each applicable merge with probability $p$ at every step while *training*,
# producing many segmentations of the same text; at inference it is switched off ($p = 0$).

# %%
rng = random.Random(0)
for p in [0.0, 0.1, 0.3, 0.6]:
    ids = encode_with_dropout(tok, " tokenization matters", p, rng)
    print(f"p={p}: {len(ids):2d} tokens  " + "|".join(tok.decode([i]) for i in ids))

# %% [markdown]
# ## 10. Experiment: how big should the vocabulary be?
#
# A larger vocabulary packs more bytes into each token — fewer tokens per document, more text
# per context window, cheaper inference — but the embedding and output matrices grow with it
# and rare tokens get little training.
#
# ### Exercise 1.11 — predict: what the vocabulary costs · 2 points · difficulty 1 · ~3 min
#
# Predict first. GPT-2 small has a vocabulary of 50,257 tokens, `d_model = 768`, and 124 M
# parameters in all; its output layer shares the embedding matrix. Return the fraction of its
# parameters (a number between 0 and 1) that sits in the token embedding.
#
# <details><summary>Hint 1</summary>The token embedding has one row of `d_model` numbers per
# token. Tied weights are counted once.</details>

# %% solution="predict_embedding"
def predict_embedding_share() -> float:
    """Fraction of GPT-2 small's 124 M parameters in its (tied) token embedding."""
    ### BEGIN SOLUTION
    return 50_257 * 768 / 124e6
    ### END SOLUTION


# %% check="predict_embedding" points=1
grading.check_prediction(predict_embedding_share, 50_257 * 768 / 124e6,
                         what="GPT-2 small's embedding share", atol=0.01, rtol=0.0,
                         mistakes=CATALOGUE.mistakes("predict_embedding"),
                         hint="vocabulary × d_model parameters, divided by the total")

# %% hidden="predict_embedding" points=1
grading.check_prediction(predict_embedding_share, 0.311, what="the share", atol=0.01, rtol=0.0,
                         mistakes=CATALOGUE.mistakes("predict_embedding"))

# %%
print(f"GPT-2 small: {50_257 * 768:,} of its 124 M parameters are the token embedding "
      f"({50_257 * 768 / 124e6:.0%})")

# %% [markdown]
# Because BPE is greedy, the first $k$ merges of our 8,000-token run *are* the
# $256 + k$ tokenizer, so one training gives every size. We measure bytes per token on
# **held-out** text.

# %%
sizes = [256, 512, 1000, 2000, 4000, 8000]
evals = {"English (docstrings)": english_eval, "code (stdlib)": code_eval,
         "Chinese": chinese_eval}
curves = {name: [] for name in evals}
for size in tqdm(sizes, desc="vocab size"):
    k = size - 256
    small = Tokenizer({i: b for i, b in vocab.items() if i < size}, merges[:k])
    for name, text in evals.items():
        curves[name].append(bytes_per_token(small.encode, text))

fig, ax = plt.subplots(figsize=(7, 3.6))
for name, ys in curves.items():
    ax.plot(sizes, ys, marker="o", label=name)
ax.set_xscale("log")
ax.minorticks_off()
ax.set_xticks(sizes, [str(s) for s in sizes])
ax.set_xlabel("vocabulary size"), ax.set_ylabel("bytes per token (held out)")
ax.set_title("Compression vs vocabulary size (BPE trained on stdlib text)")
ax.legend(), ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %%
print(f"{'text':22} {'bytes/token':>12} {'tokens/word':>12} {'vocab used':>11}")
for name, text in evals.items():
    print(f"{name:22} {bytes_per_token(tok.encode, text):12.2f} "
          f"{fertility(tok.encode, text):12.2f} "
          f"{vocab_utilization(tok.encode, text, tok.vocab_size):11.1%}")
train_chars = len(english) + len(code) + len(chinese)
print(f"the Chinese sample: {len(chinese_all):,} characters, {len(chinese):,} to train "
      f"({len(chinese) / train_chars:.2%} of the training text) and {len(chinese_eval):,} held out")

# %% [markdown]
# Read the plot: English and code compress to well over 3 bytes per token. The Chinese sample
# that ships with llmlab is an original text of a few thousand characters (printed above), half
# for training and half held out: enough that the held-out numbers do not hinge on a few
# sentences, far too little to quote as a property of Chinese. It shows the *direction* — with
# Chinese a sliver of the training text, it gains little from the merges, and a character
# (3 bytes) still costs more than one token. The effect it points at is well
# documented at scale: Rust et al. 2021 and Petrov et al. 2023 (arXiv:2305.15425) measure the
# same text costing several times more tokens in some languages than in English, which is why
# models for Chinese (Qwen, DeepSeek, GLM) train their tokenizers on much more Chinese text and
# have 100k–150k-token vocabularies.
#
# **Glitch tokens.** A token that is in the vocabulary but (almost) never appears in the
# *model's* training data gets an embedding that is never trained. GPT-2/3's tokenizer was
# trained on different data than the models, and tokens such as `" SolidGoldMagikarp"` (a
# Reddit user name) made GPT-3 behave erratically (Rumbelow & Watkins 2023; Land & Bartolo 2024,
# arXiv:2405.05417, find such under-trained tokens in many open models). Our tokenizer has the
# same kind of candidates — long tokens that the held-out text never uses:

# %%
used = set(tok.encode(english_eval + code_eval + chinese_eval))
unused = sorted((b for i, b in vocab.items() if i not in used and i != tok.special_ids[EOT]),
                key=lambda b: (-len(b), b))
print(f"{len(unused)} of {tok.vocab_size} tokens never occur in the held-out text; the longest:")
print([b.decode("utf-8", "replace") for b in unused[:8]])

# %% [markdown]
# ### Bits per byte: comparing models across vocabularies
#
# A language model's loss is counted per **token** (nats per token, chapter 02). Two models with
# different tokenizers predict different units: with a larger vocabulary each token covers more
# bytes and is one of more choices, so it is harder to guess, and there are fewer of them. Their
# per-token losses (and perplexities) cannot be compared. What can be compared is the cost of the
# *text*: the bits the model needs to encode it, per byte of UTF-8. A document of $B$ bytes in
# $N$ tokens at a loss of $\ell$ nats per token costs $N\ell/\ln 2$ bits, so
#
# $$\text{bits per byte} = \frac{N\,\ell/\ln 2}{B} = \frac{\ell}{\ln 2 \cdot (\text{bytes per token})} .$$
#
# This is the unit of the Pile (Gao et al. 2020, [arXiv:2101.00027](https://arxiv.org/abs/2101.00027))
# and of lm-evaluation-harness's `bits_per_byte`; chapter 11's `llmlab.evaluate` reports it per
# domain.
#
# ### Exercise 1.12 — predict: bits per byte · 2 points · difficulty 1 · ~3 min
#
# Predict first. A model scores a validation loss of 2.2 nats per token with a tokenizer that
# averages 3.6 bytes per token on that text. Return its loss in bits per byte.
#
# <details><summary>Hint 1</summary>Two conversions: nats to bits (one nat is $1/\ln 2$ bits),
# then per token to per byte (one token covers 3.6 bytes).</details>

# %% solution="predict_bpb"
def predict_bits_per_byte() -> float:
    """Bits per byte of a loss of 2.2 nats/token at 3.6 bytes/token."""
    ### BEGIN SOLUTION
    return 2.2 / math.log(2) / 3.6
    ### END SOLUTION


# %% check="predict_bpb" points=1
grading.check_prediction(predict_bits_per_byte, 2.2 / math.log(2) / 3.6, what="bits per byte",
                         atol=0.01, rtol=0.0, mistakes=CATALOGUE.mistakes("predict_bpb"),
                         hint="nats -> bits: divide by ln 2; per token -> per byte: divide by bytes per token")

# %% hidden="predict_bpb" points=1
grading.check_prediction(predict_bits_per_byte, 0.8817, what="bits per byte", atol=0.01, rtol=0.0,
                         mistakes=CATALOGUE.mistakes("predict_bpb"))

# %% [markdown]
# Now two of this chapter's tokenizers, 512 and 8,000 tokens, each with the simplest language
# model there is: a **unigram** model that predicts every token by its frequency in the training
# text encoded with that tokenizer (add-one smoothed), scored on the held-out text.

# %%
def unigram_nats_per_token(train_ids: list[int], eval_ids: list[int], vocab_size: int) -> float:
    """Mean -ln p(token) on eval_ids, p the add-one-smoothed token frequency of train_ids."""
    counts, total = Counter(train_ids), len(train_ids) + vocab_size
    return -sum(math.log((counts[i] + 1) / total) for i in eval_ids) / len(eval_ids)


bpb_rows = {}
for size in (512, 8000):
    small = Tokenizer({i: b for i, b in vocab.items() if i < size}, merges[:size - 256])
    for name, train_text, eval_text in (("English", english, english_eval), ("code", code, code_eval)):
        nats = unigram_nats_per_token(small.encode(train_text), small.encode(eval_text), size)
        bpt = bytes_per_token(small.encode, eval_text)
        bpb_rows[size, name] = (nats, bpt, nats / math.log(2) / bpt)
print(f"{'vocab':>6} {'text':8} {'nats/token':>11} {'bytes/token':>12} {'bits/byte':>10}")
for (size, name), (nats, bpt, bpb) in bpb_rows.items():
    print(f"{size:6,} {name:8} {nats:11.3f} {bpt:12.2f} {bpb:10.3f}")
for name in ("English", "code"):
    (n_s, _, b_s), (n_l, _, b_l) = bpb_rows[512, name], bpb_rows[8000, name]
    assert n_l > n_s and b_l < b_s, (name, bpb_rows)
    print(f"{name}: per token the 8,000-token model looks worse ({n_l:.2f} vs {n_s:.2f} nats), per byte it is "
          f"better ({b_l:.2f} vs {b_s:.2f} bits): {100 * (1 - b_l / b_s):.0f}% fewer bits for the same text")


# %% [markdown]
# ## 11. Benchmarks: llmlab next to tiktoken and Hugging Face
#
# `bench/bench_tokenizer.py` measures, side by side in one run, training time against HF
# `tokenizers` and against the naive trainer, encoding throughput against tiktoken and HF, and
# the peak memory of `encode_iterable` on a 100 MB stream. Regenerate with
# `python bench/bench_tokenizer.py --size full`. Read each row's ratio before assuming "Rust
# wins": a Python tokenizer whose hot paths are a compiled regex and cached merges can keep up
# with a Rust one on some measures and not on others:

# %% tags=["nbval-ignore-output"]
bench_md = Path("../../bench/results/tokenizer.md")
display(Markdown(bench_md.read_text() if bench_md.exists() else
                 "_run `python bench/bench_tokenizer.py --size full` to produce the table_"))

# %% [markdown]
# ## 12. How the industry does it
#
# | model | tokenizer | vocabulary | notes |
# |---|---|---|---|
# | GPT-2 (2019) | byte-level BPE (`r50k_base`) | 50,257 | 50,000 merges + 256 bytes + `<\|endoftext\|>` |
# | GPT-3.5/4 | byte-level BPE (`cl100k_base`) | 100,277 | digits in runs of ≤ 3, case-insensitive contractions |
# | GPT-4o | byte-level BPE (`o200k_base`) | ~200k | more non-English text, a new pattern |
# | Llama 2 | SentencePiece BPE with byte fallback | 32,000 | digits split into single digits |
# | Llama 3 | tiktoken BPE | 128,256 | 100k from `cl100k` + 28k more for other languages |
# | Qwen2 | byte-level BPE | 151,646 (151,643 + 3 special) | many Chinese tokens; single digits |
# | BERT | WordPiece | 30,522 | `##` continuations, `[CLS]`, `[SEP]`, `[MASK]` |
# | T5 | SentencePiece Unigram | 32,000 | trained on C4 |
#
# Sources: tiktoken's `openai_public.py` (encodings and patterns); Radford et al. 2019
# (GPT-2); Touvron et al. 2023, arXiv:2307.09288 (Llama 2); Llama 3 paper, Dubey et al. 2024,
# arXiv:2407.21783, section 3.1; Qwen2 technical report, Yang et al. 2024, arXiv:2407.10671;
# Devlin et al. 2018, arXiv:1810.04805; Raffel et al. 2019, arXiv:1910.10683 (T5).
#
# In production, **tiktoken** (Rust core, encode only) and Hugging Face **tokenizers** (Rust,
# training too) are the standard BPE implementations — far faster than a naive Python loop (the
# naive trainer's row above), and compared with llmlab row by row in the table; **sentencepiece** (C++) trains and
# runs BPE and Unigram directly on raw text. Models typically pad the embedding matrix to a
# multiple of 64 or 128 (Qwen2's config says 151,936) so matrix multiplies stay efficient.
# Where it breaks: non-English text and code cost more tokens per character; numbers split
# unpredictably; leading spaces make `"Hello"` and `" Hello"` different tokens; special tokens
# typed by users must be escaped; and changing the tokenizer means retraining the model.

# %% [markdown]
# ## Summary
#
# - Text → UTF-8 bytes → tokens. Byte-level BPE covers every string with no unknown token.
# - BPE training is "count pairs, merge the most frequent, repeat"; encoding replays the merges
#   in order. Incremental counts make training fast without changing the result.
# - A tokenizer is those pieces in one object: special tokens first (the longest), the regex,
#   merges by rank; streaming holds back only what later text could change; decoding joins bytes
#   before it decodes them.
# - Pre-tokenization regexes keep merges inside words and shape how numbers and code split.
# - Special tokens are matched first and never merged; chat templates and assistant masks
#   decide what SFT trains on.
# - WordPiece encodes by longest match; Unigram by the most probable segmentation, and can
#   sample segmentations; BPE-dropout brings sampling to BPE.
# - Vocabulary size trades compression against parameters; languages under-represented in the
#   tokenizer's training data pay more tokens per character.
# - Losses per token depend on the tokenizer; bits per byte, $\ell / (\ln 2 \cdot \text{bytes per
#   token})$, compares models across vocabularies.
#
# ## Further reading
#
# - Sennrich, Haddow & Birch 2016, *Neural Machine Translation of Rare Words with Subword
#   Units*, [arXiv:1508.07909](https://arxiv.org/abs/1508.07909)
# - Radford et al. 2019, *Language Models are Unsupervised Multitask Learners* (GPT-2, byte-level
#   BPE), [openai.com](https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf)
# - Kudo 2018, *Subword Regularization*, [arXiv:1804.10959](https://arxiv.org/abs/1804.10959);
#   Kudo & Richardson 2018, *SentencePiece*, [arXiv:1808.06226](https://arxiv.org/abs/1808.06226)
# - Provilkov, Emelianenko & Voita 2020, *BPE-Dropout*, [arXiv:1910.13267](https://arxiv.org/abs/1910.13267)
# - Devlin et al. 2018, *BERT*, [arXiv:1810.04805](https://arxiv.org/abs/1810.04805);
#   Wu et al. 2016, *Google's NMT System* (WordPiece), [arXiv:1609.08144](https://arxiv.org/abs/1609.08144)
# - Gao et al. 2020, *The Pile* (bits per byte), [arXiv:2101.00027](https://arxiv.org/abs/2101.00027)
# - Rust et al. 2021, *How Good is Your Tokenizer?*, [arXiv:2012.15613](https://arxiv.org/abs/2012.15613)
# - Petrov et al. 2023, *Language Model Tokenizers Introduce Unfairness Between Languages*,
#   [arXiv:2305.15425](https://arxiv.org/abs/2305.15425)
# - Land & Bartolo 2024, *Fishing for Magikarp: Automatically Detecting Under-trained Tokens*,
#   [arXiv:2405.05417](https://arxiv.org/abs/2405.05417)
# - Karpathy, *minbpe* (github.com/karpathy/minbpe) and Stanford CS336 assignment 1

# %% tags=["nbval-ignore-output"]
print(f"chapter ran in {time.time() - t0:.0f} s")
