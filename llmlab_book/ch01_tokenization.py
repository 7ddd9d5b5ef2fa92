"""Chapter 01 (solutions/01_tokenization): the catalogue of plausible wrong answers.

Each variant is one slip a learner makes in an otherwise right answer, written as the answer
cell would be (see :mod:`llmlab_book.catalogue` for the format); the chapter's checks name them
and ``tests/platform/test_catalogue.py`` grades every one.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator

import regex

from llmlab.tokenizer.bpe_basics import count_pairs, merge_pair
from llmlab.tokenizer.chat import IM_END, render_chatml
from llmlab.tokenizer.pretokenize import GPT2_PATTERN, pretokenize
from llmlab_book.catalogue import Catalogue, Mistake

# ------------------------------------------------------------------ 1.1 predict: how many bytes?


def bytes_as_characters() -> int:
    """One token per character: "分词 ok 👍" has 7."""
    return 2 + 1 + 2 + 1 + 1


def bytes_two_per_chinese_character() -> int:
    """Chinese characters counted as 2 bytes (their UTF-16 size), the emoji as 4."""
    return 2 * 2 + 1 + 2 + 1 + 4


# ------------------------------------------------------------------ 1.2 count adjacent pairs


def count_pairs_without_overlap(ids, counts=None, weight=1):
    """Pairs taken two ids at a time, (ids[0], ids[1]), (ids[2], ids[3]), ..."""
    counts = {} if counts is None else counts
    for pair in zip(ids[::2], ids[1::2]):
        counts[pair] = counts.get(pair, 0) + weight
    return counts


def count_pairs_ignoring_weight(ids, counts=None, weight=1):
    """Every occurrence counted once, whatever ``weight`` says."""
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


# ------------------------------------------------------------------ 1.3 apply one merge


def merge_pair_overlapping(ids, pair, new_id):
    """After a merge, moving on by one id instead of two, so occurrences overlap."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
        else:
            out.append(ids[i])
        i += 1
    return out


def merge_pair_dropping_the_last(ids, pair, new_id):
    """The loop stops one id early, so a last id with no partner is lost."""
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


# ------------------------------------------------------------------ 1.4 train BPE, naively


def _naive_bpe(text, vocab_size, pattern, greatest=True, as_bytes=True, pretokenized=True):
    pieces = Counter(pretokenize(text, pattern)) if pretokenized else Counter([text])
    words = {tuple(w.encode("utf-8")): n for w, n in pieces.items()}
    vocab = {i: bytes([i]) for i in range(256)}
    merges = []
    while len(vocab) < vocab_size:
        counts = {}
        for w, n in words.items():
            count_pairs(list(w), counts, n)
        if not counts:
            break
        if greatest:
            a, b = max(counts, key=lambda p: (counts[p], vocab[p[0]], vocab[p[1]]))
        else:
            a, b = min(counts, key=lambda p: (-counts[p], vocab[p[0]], vocab[p[1]]))
        new_id = len(vocab)
        vocab[new_id] = vocab[a] + vocab[b]
        merges.append((vocab[a], vocab[b]) if as_bytes else (a, b))
        merged = {}
        for w, n in words.items():
            key = tuple(merge_pair(list(w), (a, b), new_id))
            merged[key] = merged.get(key, 0) + n
        words = merged
    return vocab, merges


def train_bpe_naive_smallest_tie(text, vocab_size, pattern=GPT2_PATTERN):
    """Ties broken toward the smallest byte strings."""
    return _naive_bpe(text, vocab_size, pattern, greatest=False)


def train_bpe_naive_id_merges(text, vocab_size, pattern=GPT2_PATTERN):
    """Merges recorded as pairs of ids, not of byte strings."""
    return _naive_bpe(text, vocab_size, pattern, as_bytes=False)


def train_bpe_naive_across_pretokens(text, vocab_size, pattern=GPT2_PATTERN):
    """The whole text as one word: merges across pre-token boundaries."""
    return _naive_bpe(text, vocab_size, pattern, pretokenized=False)


# ------------------------------------------------------------------ 1.5 encode with merge ranks


def bpe_encode_highest_rank(data, merges):
    """The pair learned *last* merged first."""
    ids = list(data)
    while len(ids) >= 2:
        known = [p for p in count_pairs(ids) if p in merges]
        if not known:
            break
        pair = max(known, key=lambda p: merges[p])
        ids = merge_pair(ids, pair, merges[pair])
    return ids


def bpe_encode_leftmost(data, merges):
    """The leftmost pair that has a merge merged first, whatever its rank."""
    ids = list(data)
    while True:
        pair = next((p for p in zip(ids, ids[1:]) if p in merges), None)
        if pair is None:
            return ids
        ids = merge_pair(ids, pair, merges[pair])


# ------------------------------------------------------------------ 1.6 the fast trainer


def desc_key(b: bytes) -> tuple[int, ...]:
    """The chapter's key under which byte strings sort in descending order."""
    return tuple(255 - x for x in b) + (256,)


def _fast_bpe(word_counts, num_merges, push_new=True, greatest=True, check_stale=True):
    vocab = {i: bytes([i]) for i in range(256)}
    ids = {b: i for i, b in vocab.items()}
    words = [list(w) for w in word_counts]
    freqs = list(word_counts.values())
    pair_counts, where = defaultdict(int), defaultdict(set)
    for i, w in enumerate(words):
        for p in zip(w, w[1:]):
            pair_counts[p] += freqs[i]
            where[p].add(i)

    def entry(p):
        if greatest:
            return (-pair_counts[p], desc_key(vocab[p[0]]), desc_key(vocab[p[1]]), *p)
        return (-pair_counts[p], vocab[p[0]], vocab[p[1]], *p)

    heap = [entry(p) for p in pair_counts]
    heapq.heapify(heap)
    merges = []
    while len(merges) < num_merges and heap:
        neg, _, _, a, b = heapq.heappop(heap)
        if check_stale and -neg != pair_counts.get((a, b), 0):
            if pair_counts.get((a, b), 0) > 0:
                heapq.heappush(heap, entry((a, b)))
            continue
        merged = vocab[a] + vocab[b]
        c = ids.setdefault(merged, len(vocab))
        vocab[c] = merged
        merges.append((vocab[a], vocab[b]))
        born = set()
        for i in where.pop((a, b), set()):
            new = merge_pair(words[i], (a, b), c)
            if len(new) == len(words[i]):
                continue
            for p in zip(words[i], words[i][1:]):
                pair_counts[p] -= freqs[i]
            for p in zip(new, new[1:]):
                pair_counts[p] += freqs[i]
                where[p].add(i)
                if c in p:
                    born.add(p)
            words[i] = new
        pair_counts.pop((a, b), None)
        for p in born:
            if push_new and pair_counts[p] > 0:
                heapq.heappush(heap, entry(p))
    return vocab, merges


def bpe_fast_not_pushing_new_pairs(word_counts, num_merges, progress=False):
    """The pairs a merge creates (those containing the new id) never pushed on the heap."""
    return _fast_bpe(word_counts, num_merges, push_new=False)


def bpe_fast_trusting_stale_entries(word_counts, num_merges, progress=False):
    """A heap entry merged as it surfaces, without checking its count against `pair_counts`."""
    return _fast_bpe(word_counts, num_merges, check_stale=False)


def bpe_fast_smallest_tie(word_counts, num_merges, progress=False):
    """The heap ordered by the byte strings themselves: a min-heap breaks ties toward the smallest."""
    return _fast_bpe(word_counts, num_merges, greatest=False)


# ------------------------------------------------------------------ 1.7 the assistant mask


def _mask_from_byte_spans(tok, messages, spans_of: Callable) -> tuple[list[int], list[int]]:
    text, spans = render_chatml(messages)
    ids, mask, pos = tok.encode(text), [], 0
    spans = spans_of(text, spans)
    for i in ids:
        mask.append(int(any(a <= pos < b for a, b in spans)))
        pos += len(tok.vocab[i])
    return ids, mask


def _byte(text: str, char: int) -> int:
    return len(text[:char].encode("utf-8"))


def _character_spans(text, spans):
    return spans


def _spans_without_im_end(text, spans):
    return [(_byte(text, a), _byte(text, b) - len(IM_END)) for a, b in spans]


def mask_with_character_spans(tok, messages):
    """Character offsets used as if they were byte offsets."""
    return _mask_from_byte_spans(tok, messages, _character_spans)


def mask_without_im_end(tok, messages):
    """The assistant's reply marked, but not the ``<|im_end|>`` that closes it."""
    return _mask_from_byte_spans(tok, messages, _spans_without_im_end)


# ------------------------------------------------------------------ 1.8 capstone: the tokenizer


class _BPETokenizerBase:
    """A right tokenizer with one overridable step per part (the variants change one)."""

    CUT = regex.compile(r"(?r)(?<=\S)(?= )|(?<=\S\n)(?=\S)")

    def __init__(self, vocab, merges, special_tokens=None, pattern=GPT2_PATTERN):
        if any(vocab.get(i) != bytes([i]) for i in range(256)):
            raise ValueError("vocab must map every id 0..255 to its single byte")
        self.vocab = dict(vocab)
        ids = {b: i for i, b in vocab.items()}
        self.ranks = {}
        for a, b in merges:
            if a not in ids or b not in ids or a + b not in ids:
                raise ValueError(f"merge {(a, b)!r}: its parts and result must be in vocab")
            self.ranks.setdefault((ids[a], ids[b]), ids[a + b])
        self.special = {}
        for t in special_tokens or []:
            if t.encode("utf-8") not in ids:
                raise ValueError(f"special token {t!r} is not in vocab")
            self.special[t] = ids[t.encode("utf-8")]
        alternatives = "|".join(regex.escape(t) for t in self._order(self.special))
        self.special_re = regex.compile(f"({alternatives})") if self.special else None
        self.pattern = regex.compile(pattern)
        self.cache = {}

    def _order(self, tokens):
        return sorted(tokens, key=len, reverse=True)

    def encode(self, text: str) -> list[int]:
        out = []
        parts = self.special_re.split(text) if self.special_re else [text]
        for k, part in enumerate(parts):
            if k % 2:
                out.append(self.special[part])
                continue
            for piece in self.pattern.findall(part):
                if piece not in self.cache:
                    self.cache[piece] = self._merge(list(piece.encode("utf-8")))
                out.extend(self.cache[piece])
        return out

    def _merge(self, ids):
        # merges by rank, written out: the variant reads none of the learner's earlier answers
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, float("inf")))
            if pair not in self.ranks:
                return ids
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                    out.append(self.ranks[pair])
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return ids

    def encode_iterable(self, chunks: Iterable[str]) -> Iterator[int]:
        hold = max(map(len, self.special), default=1) - 1
        buf = ""
        for chunk in chunks:
            buf += chunk
            end, start, cut = len(buf) - hold, 0, 0
            for m in self.special_re.finditer(buf) if self.special_re else ():
                if m.start() >= end:
                    break
                start, cut = m.end(), m.start()
            if start <= end:
                m = self.CUT.search(buf, start, max(end, start))
                cut = m.start() if m else start
            if cut:
                yield from self.encode(buf[:cut])
                buf = buf[cut:]
        yield from self.encode(buf)

    def decode(self, ids: Iterable[int]) -> str:
        try:
            data = b"".join(self.vocab[i] for i in ids)
        except KeyError as e:
            raise ValueError(f"unknown token id {e.args[0]}") from None
        return data.decode("utf-8", errors="replace")


class BPETokenizerSpecialsInGivenOrder(_BPETokenizerBase):
    """Special tokens tried in the order given: a shorter one shadows a longer one it begins."""

    def _order(self, tokens):
        return list(tokens)


class BPETokenizerDecodingEachToken(_BPETokenizerBase):
    """Each token decoded on its own and the strings joined: a split character becomes U+FFFD."""

    def decode(self, ids):
        try:
            return "".join(self.vocab[i].decode("utf-8", errors="replace") for i in ids)
        except KeyError as e:
            raise ValueError(f"unknown token id {e.args[0]}") from None


class BPETokenizerEncodingEachChunk(_BPETokenizerBase):
    """Each chunk of the stream encoded on its own: a word cut between two chunks changes ids."""

    def encode_iterable(self, chunks):
        for chunk in chunks:
            yield from self.encode(chunk)


# ------------------------------------------------------------------ 1.9 WordPiece


def wordpiece_shortest_first(word, vocab, unk="[UNK]", prefix="##", max_chars=100):
    """The shortest matching piece taken at each position instead of the longest."""
    if len(word) > max_chars:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        for end in range(start + 1, len(word) + 1):
            piece = word[start:end] if start == 0 else prefix + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                break
        else:
            return [unk]
        start = end
    return pieces


def wordpiece_unk_per_piece(word, vocab, unk="[UNK]", prefix="##", max_chars=100):
    """An unmatchable rest becomes one `[UNK]` piece after the matched ones, not the whole word."""
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
            return pieces + [unk]
        start = end
    return pieces


# ------------------------------------------------------------------ 1.10 Viterbi segmentation


def _viterbi(text, scores, unk_score, max_len, reverse=True):
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
    return pieces[::-1] if reverse else pieces


def viterbi_pieces_last_to_first(text, scores, unk_score=-100.0, max_len=None):
    """The best path followed back from the end, but its pieces not reversed."""
    return _viterbi(text, scores, unk_score, max_len, reverse=False)


def viterbi_greedy_longest(text, scores, unk_score=-100.0, max_len=None):
    """Greedy longest match from the left instead of the most likely segmentation."""
    max_len = max_len or max(map(len, scores), default=1)
    pieces, start = [], 0
    while start < len(text):
        for end in range(min(len(text), start + max_len), start, -1):
            if text[start:end] in scores or end - start == 1:
                pieces.append(text[start:end])
                start = end
                break
    return pieces


# ------------------------------------------------------------------ 1.11 predict: the embedding


def embedding_counted_twice() -> float:
    """The tied output layer counted a second time."""
    return 2 * 50_257 * 768 / 124e6


def embedding_parameters_not_fraction() -> float:
    """A number of parameters instead of a fraction."""
    return 50_257 * 768



# ------------------------------------------------------------------ 1.12 predict: bits per byte


def bpb_nats_per_byte() -> float:
    """Nats per byte: the loss not divided by ln 2."""
    return 2.2 / 3.6


def bpb_times_bytes_per_token() -> float:
    """Multiplied by the bytes per token instead of divided."""
    return 2.2 / math.log(2) * 3.6


def bpb_times_ln2() -> float:
    """Multiplied by ln 2 instead of divided."""
    return 2.2 * math.log(2) / 3.6

CATALOGUE = Catalogue({
    "predict_bytes": [
        Mistake("counting characters instead of bytes", bytes_as_characters),
        Mistake("2 bytes per Chinese character", bytes_two_per_chinese_character),
    ],
    "count_pairs": [
        Mistake("pairs taken two ids at a time, missing the overlapping ones",
                count_pairs_without_overlap),
        Mistake("each occurrence counted once, ignoring `weight`", count_pairs_ignoring_weight),
    ],
    "merge_pair": [
        Mistake("merging overlapping occurrences (moving on one id after a merge, not two)",
                merge_pair_overlapping),
        Mistake("stopping one id early: a last id with no partner is dropped",
                merge_pair_dropping_the_last),
    ],
    "train_bpe_naive": [
        Mistake("ties broken toward the smallest byte strings", train_bpe_naive_smallest_tie),
        Mistake("merges recorded as pairs of ids instead of byte strings", train_bpe_naive_id_merges),
        Mistake("merging across pre-tokens (the text never cut by `pretokenize`)",
                train_bpe_naive_across_pretokens),
    ],
    "bpe_encode": [
        Mistake("merging the pair learned last (highest rank) first", bpe_encode_highest_rank),
        Mistake("merging the leftmost pair that has a merge, whatever its rank", bpe_encode_leftmost),
    ],
    "bpe_fast": [
        Mistake("never pushing the pairs a merge creates (those that contain the new id)",
                bpe_fast_not_pushing_new_pairs),
        Mistake("merging a heap entry as it surfaces, without checking that its count is current",
                bpe_fast_trusting_stale_entries),
        Mistake("heap entries keyed on the byte strings themselves: ties go to the smallest",
                bpe_fast_smallest_tie),
    ],
    "chat_mask": [
        Mistake("character spans used as byte offsets", mask_with_character_spans),
        Mistake("leaving out the closing <|im_end|>", mask_without_im_end),
    ],
    "tokenizer": [
        Mistake("special tokens tried in the order given, not the longest first",
                BPETokenizerSpecialsInGivenOrder),
        Mistake("decoding each token on its own: a character split between tokens becomes U+FFFD",
                BPETokenizerDecodingEachToken),
        Mistake("each chunk of the stream encoded on its own: a pre-token cut between chunks "
                "gets other ids", BPETokenizerEncodingEachChunk),
    ],
    "wordpiece_word": [
        Mistake("the shortest matching piece first instead of the longest", wordpiece_shortest_first),
        Mistake("an unmatchable rest as one [UNK] piece instead of the whole word as [UNK]",
                wordpiece_unk_per_piece),
    ],
    "viterbi_segment": [
        Mistake("the pieces last to first (the back-pointers followed, not reversed)",
                viterbi_pieces_last_to_first),
        Mistake("greedy longest match instead of the most likely segmentation",
                viterbi_greedy_longest),
    ],
    "predict_embedding": [
        Mistake("counting the tied output layer a second time", embedding_counted_twice),
        Mistake("a number of parameters instead of a fraction", embedding_parameters_not_fraction),
    ],
    "predict_bpb": [
        Mistake("nats per byte: the loss not divided by ln 2", bpb_nats_per_byte),
        Mistake("multiplied by the bytes per token instead of divided", bpb_times_bytes_per_token),
        Mistake("multiplied by ln 2 instead of divided", bpb_times_ln2),
    ],
})
