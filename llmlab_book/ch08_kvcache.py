"""Chapter 08 (solutions/08_kvcache): the catalogue of plausible wrong answers.

Each variant is one slip a learner makes in an otherwise right answer, written as the answer
cell would be (see :mod:`llmlab_book.catalogue` for the format); the chapter's checks name them
and ``tests/platform/test_catalogue.py`` grades every one.
"""

from __future__ import annotations

from collections import deque

import torch

import llmlab.kvcache as kv
from llmlab.kvcache import ContiguousKVCache
from llmlab_book.catalogue import Catalogue, Mistake

# ------------------------------------------------------------------ 8.1 the speed limit of decoding


def predict_decode_fp32() -> float:
    """4 bytes per parameter: the weights read as fp32, not bf16."""
    return 3.35e12 / (7e9 * 4)


def predict_decode_one_byte() -> float:
    """1 byte per parameter."""
    return 3.35e12 / 7e9


# ------------------------------------------------------------------ 8.2 the cache update


def append_kv_new_only(buffer, length, new):
    """Only the new tokens returned, not the past and the new."""
    t_new = new.shape[1]
    if length + t_new > buffer.shape[1]:
        raise ValueError(f"buffer holds {buffer.shape[1]} tokens, cannot append {t_new}")
    buffer[:, length:length + t_new] = new
    return buffer[:, length:length + t_new]


def append_kv_one_late(buffer, length, new):
    """The new tokens written one slot late, after a gap at ``length``."""
    t_new = new.shape[1]
    if length + t_new > buffer.shape[1]:
        raise ValueError(f"buffer holds {buffer.shape[1]} tokens, cannot append {t_new}")
    buffer[:, length + 1:length + 1 + t_new] = new[:, :buffer.shape[1] - length - 1]
    return buffer[:, :length + t_new]


# ------------------------------------------------------------------ 8.3 one cached attention step


def decode_attention_unscaled(q, k, v, lengths=None):
    """The scores q·k not divided by √d."""
    n_rep = q.shape[1] // k.shape[2]
    k, v = k.repeat_interleave(n_rep, dim=2), v.repeat_interleave(n_rep, dim=2)
    scores = torch.einsum("bhd,bthd->bht", q, k)
    if lengths is not None:
        pad = torch.arange(k.shape[1])[None, :] >= lengths[:, None]
        scores = scores.masked_fill(pad[:, None, :], float("-inf"))
    return torch.einsum("bht,bthd->bhd", scores.softmax(-1), v)


def decode_attention_tiled_heads(q, k, v, lengths=None):
    """KV heads tiled (``repeat``), so query head h reads KV head h % n_kv_head."""
    n_rep = q.shape[1] // k.shape[2]
    k, v = k.repeat(1, 1, n_rep, 1), v.repeat(1, 1, n_rep, 1)
    scores = torch.einsum("bhd,bthd->bht", q, k) / q.shape[-1] ** 0.5
    if lengths is not None:
        pad = torch.arange(k.shape[1])[None, :] >= lengths[:, None]
        scores = scores.masked_fill(pad[:, None, :], float("-inf"))
    return torch.einsum("bht,bthd->bhd", scores.softmax(-1), v)


# ------------------------------------------------------------------ 8.4 the cached decode loop


def _greedy_cached(model, idx, max_new_tokens, cache, eos_token_id, pad_token_id, commit=True):
    """The cached greedy loop of exercise 8.4, with the cache (and the commits) given."""
    def forward(ids):
        ctx = cache.prepare(ids)
        logits = model(ids, ctx)[:, -1]
        if commit:
            cache.commit(ctx)
        return logits

    logits, out = forward(idx), []
    done = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
    for i in range(max_new_tokens):
        tok = logits.argmax(-1)
        if eos_token_id is not None:
            tok = torch.where(done, pad_token_id, tok)
            done |= tok == eos_token_id
        out.append(tok)
        if i + 1 == max_new_tokens or bool(done.all()):
            break
        logits = forward(tok[:, None])
    return torch.cat([idx, torch.stack(out, 1)], 1)


@torch.no_grad()
def cached_generate_blind_to_padding(model, idx, max_new_tokens, attention_mask=None,
                                     eos_token_id=None, pad_token_id=0):
    """A cache built without ``key_valid``: positions count the left padding and every row
    attends to its padding tokens."""
    cache = ContiguousKVCache(model.config.n_layer, idx.shape[1] + max_new_tokens)
    return _greedy_cached(model, idx, max_new_tokens, cache, eos_token_id, pad_token_id)


@torch.no_grad()
def cached_generate_without_commit(model, idx, max_new_tokens, attention_mask=None,
                                   eos_token_id=None, pad_token_id=0):
    """Steps never committed: every step starts again from an empty cache."""
    valid = torch.ones_like(idx, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    cache = ContiguousKVCache(model.config.n_layer, idx.shape[1] + max_new_tokens,
                              None if bool(valid.all()) else valid)
    return _greedy_cached(model, idx, max_new_tokens, cache, eos_token_id, pad_token_id,
                          commit=False)


# ------------------------------------------------------------------ 8.5 the cache of Llama 3 8B


def kv_bytes_all_query_heads() -> int:
    """All 32 query heads cached, as without GQA."""
    return 32 * 2 * 32 * 128 * 2


def kv_bytes_keys_only() -> int:
    """Keys counted, values forgotten (or the reverse)."""
    return 32 * 8 * 128 * 2


# ------------------------------------------------------------------ 8.6 the free-list allocator


class _FreeListBase:
    """The given part of the answer cell: refcounts, the free list, ``share``."""

    def __init__(self, num_blocks: int) -> None:
        self.refcount = [0] * num_blocks
        self.free = deque(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self.free)

    def share(self, block: int) -> None:
        if self.refcount[block] == 0:
            self.free.remove(block)
        self.refcount[block] += 1


class FreeListFromTail(_FreeListBase):
    """Blocks taken from the tail of the free list (``pop``), not its head."""

    def allocate(self, n: int) -> list[int]:
        if n > len(self.free):
            raise kv.OutOfBlocksError(n, len(self.free))
        blocks = [self.free.pop() for _ in range(n)]
        for b in blocks:
            self.refcount[b] = 1
        return blocks

    def release(self, block: int) -> None:
        if self.refcount[block] <= 0:
            raise ValueError(f"block {block} is already free")
        self.refcount[block] -= 1
        if not self.refcount[block]:
            self.free.append(block)


class FreeListReleasedToHead(_FreeListBase):
    """A released block put back at the head of the free list (``appendleft``)."""

    def allocate(self, n: int) -> list[int]:
        if n > len(self.free):
            raise kv.OutOfBlocksError(n, len(self.free))
        blocks = [self.free.popleft() for _ in range(n)]
        for b in blocks:
            self.refcount[b] = 1
        return blocks

    def release(self, block: int) -> None:
        if self.refcount[block] <= 0:
            raise ValueError(f"block {block} is already free")
        self.refcount[block] -= 1
        if not self.refcount[block]:
            self.free.appendleft(block)


# ------------------------------------------------------------------ 8.7 copy-on-write


def append_token_unscaled_block(pool, table, length, new, allocator, block_size):
    """The slot of token j as ``table[j // block_size] + j % block_size``: the block id not
    multiplied by the block size, so blocks overlap."""
    if length % block_size and allocator.refcount[table[-1]] > 1:
        old, (fresh,) = table[-1], allocator.allocate(1)
        pool[fresh * block_size:(fresh + 1) * block_size] = pool[old * block_size:(old + 1) * block_size]
        allocator.release(old)
        table[-1] = fresh
    if length % block_size == 0:
        table += allocator.allocate(1)
    pool[table[length // block_size] + length % block_size] = new
    pos = torch.arange(length + 1)
    return pool[torch.tensor(table)[pos // block_size] + pos % block_size]


def append_token_without_cow(pool, table, length, new, allocator, block_size):
    """No copy-on-write: the token written into a tail block another sequence shares."""
    if length % block_size == 0:
        table += allocator.allocate(1)
    pool[table[length // block_size] * block_size + length % block_size] = new
    pos = torch.arange(length + 1)
    return pool[torch.tensor(table)[pos // block_size] * block_size + pos % block_size]


# ------------------------------------------------------------------ 8.8 the paged cache (capstone)


class _PagedCacheBase:
    """A right answer, with the places the variants below get wrong as methods."""

    def __init__(self, n_layer: int, allocator, block_size: int) -> None:
        self.n_layer, self.block_size, self.allocator = n_layer, block_size, allocator
        self.num_blocks = len(allocator.refcount)
        self.tables: dict = {}
        self.lengths: dict = {}
        self.pools: list = [None] * n_layer
        self.step = None

    def add_sequence(self, seq_id) -> None:
        if seq_id in self.tables:
            raise ValueError(f"sequence {seq_id!r} already exists")
        self.tables[seq_id], self.lengths[seq_id] = [], 0

    def free(self, seq_id) -> None:
        for block in self.tables.pop(seq_id):
            self.allocator.release(block)
        del self.lengths[seq_id]

    def slot(self, tables, pos):
        return tables.gather(1, pos // self.block_size) * self.block_size + pos % self.block_size

    def positions(self, past, cols):
        return past[:, None] + cols

    def mask(self, keys, total, positions):
        return (keys < total[:, None])[:, None, :] & (keys[:, None, :] <= positions[:, :, None])

    def prepare(self, seq_ids, n_new):
        seq_ids = list(seq_ids)
        n_new = [n_new] * len(seq_ids) if isinstance(n_new, int) else list(n_new)
        bs = self.block_size
        missing = [-(-(self.lengths[s] + n) // bs) - len(self.tables[s])
                   for s, n in zip(seq_ids, n_new)]
        if sum(missing) > self.allocator.num_free:
            raise kv.OutOfBlocksError(sum(missing), self.allocator.num_free)
        for s, m in zip(seq_ids, missing):
            self.tables[s] += self.allocator.allocate(m)
        past = torch.tensor([self.lengths[s] for s in seq_ids])
        n = torch.tensor(n_new)
        total = past + n
        width = max(len(self.tables[s]) for s in seq_ids)
        tables = torch.tensor([self.tables[s] + [0] * (width - len(self.tables[s])) for s in seq_ids])
        cols = torch.arange(int(n.max()))[None]
        real = cols < n[:, None]
        write = self.slot(tables, past[:, None] + cols)[real]
        keys = torch.arange(int(total.max()))[None].expand(len(seq_ids), -1)
        gather = self.slot(tables, torch.minimum(keys, total[:, None] - 1))
        positions = self.positions(past, cols)
        ctx = kv.StepContext(positions, self.mask(keys, total, positions)[:, None], self)
        self.step = (ctx, seq_ids, n_new, real, write, gather)
        return ctx

    def observe_queries(self, layer_idx, q) -> None:
        pass

    def update(self, layer_idx, k, v):
        _, _, _, real, write, gather = self.step
        if self.pools[layer_idx] is None:
            size = self.num_blocks * self.block_size
            self.pools[layer_idx] = tuple(t.new_zeros(size, *t.shape[2:]) for t in (k, v))
        out = []
        for pool, new in zip(self.pools[layer_idx], (k, v)):
            pool[write] = new[real]
            out.append(pool[gather])
        return out[0], out[1]

    def commit(self, ctx) -> None:
        for s, n in zip(self.step[1], self.step[2]):
            self.lengths[s] += n
        self.step = None


class PagedCacheUnscaledBlock(_PagedCacheBase):
    """Slots ``table[j // block_size] + j % block_size``: block ids not multiplied by the block
    size, so the blocks of a pool overlap."""

    def slot(self, tables, pos):
        return tables.gather(1, pos // self.block_size) + pos % self.block_size


class PagedCachePositionsFromZero(_PagedCacheBase):
    """The step's positions start at 0 in every step, not after the tokens already cached."""

    def positions(self, past, cols):
        return cols.expand(len(past), -1)


# ------------------------------------------------------------------ 8.9 PagedAttention, block by block

def _paged_attention(q, k_pool, v_pool, block_tables, lengths, rescale=True, mask=True, tiled=False):
    """The block-by-block kernel with one of its slips switched on."""
    batch, n_head, d = q.shape
    block_size, n_kv = k_pool.shape[1], k_pool.shape[2]
    if tiled:  # query head h grouped with KV head h % n_kv
        qg = q.float().view(batch, n_head // n_kv, n_kv, d).transpose(1, 2) / d ** 0.5
    else:
        qg = q.float().view(batch, n_kv, n_head // n_kv, d) / d ** 0.5
    m = torch.full((batch, n_kv, n_head // n_kv), float("-inf"))
    denom = torch.zeros_like(m)
    acc = torch.zeros(batch, n_kv, n_head // n_kv, d)
    for j in range(block_tables.shape[1]):
        slots = j * block_size + torch.arange(block_size)
        real = slots[None, :] < lengths[:, None]
        if not real.any():
            break
        kb = k_pool[block_tables[:, j]].float()
        vb = v_pool[block_tables[:, j]].float()
        scores = torch.einsum("bgrd,btgd->bgrt", qg, kb)
        if mask:
            scores = scores.masked_fill(~real[:, None, None, :], float("-inf"))
        m_new = torch.maximum(m, scores.amax(-1))
        alpha = torch.exp(m - m_new) if rescale else torch.ones_like(m)
        p = torch.exp(scores - m_new[..., None])
        denom = alpha * denom + p.sum(-1)
        acc = alpha[..., None] * acc + torch.einsum("bgrt,btgd->bgrd", p, vb)
        m = m_new
    out = acc / denom[..., None]
    if tiled:
        out = out.transpose(1, 2)
    return out.reshape(batch, n_head, d).to(q.dtype)


def paged_attention_not_rescaled(q, k_pool, v_pool, block_tables, lengths):
    return _paged_attention(q, k_pool, v_pool, block_tables, lengths, rescale=False)


def paged_attention_unmasked(q, k_pool, v_pool, block_tables, lengths):
    return _paged_attention(q, k_pool, v_pool, block_tables, lengths, mask=False)


def paged_attention_tiled_heads(q, k_pool, v_pool, block_tables, lengths):
    return _paged_attention(q, k_pool, v_pool, block_tables, lengths, tiled=True)


# ------------------------------------------------------------------ 8.10 the prefix hash chain


def prefix_hashes_with_partial(tokens, block_size):
    """The trailing partial block hashed too."""
    hashes, prev = [], None
    for start in range(0, len(tokens), block_size):
        prev = kv.hash_block(prev, tokens[start:start + block_size])
        hashes.append(prev)
    return hashes


def prefix_hashes_unchained(tokens, block_size):
    """Each block hashed alone (``prev_hash=None`` every time), not chained to its prefix."""
    return [kv.hash_block(None, tokens[start:start + block_size])
            for start in range(0, len(tokens) - block_size + 1, block_size)]


# ------------------------------------------------------------------ 8.11 KIVI


def kivi_axes_swapped(k, v, bits=4):
    """Keys quantized per token and values per channel."""
    def fake_quant(x, dim):
        lo, hi = x.amin(dim, keepdim=True), x.amax(dim, keepdim=True)
        scale = ((hi - lo) / (2 ** bits - 1)).clamp(min=1e-8)
        return ((x - lo) / scale).round().clamp(0, 2 ** bits - 1) * scale + lo

    return fake_quant(k, -1), fake_quant(v, 1)


def kivi_2_pow_bits_steps(k, v, bits=4):
    """The scale (max - min) / 2^bits: 2^bits steps for 2^bits levels, one too many."""
    def fake_quant(x, dim):
        lo, hi = x.amin(dim, keepdim=True), x.amax(dim, keepdim=True)
        scale = ((hi - lo) / 2 ** bits).clamp(min=1e-8)
        return ((x - lo) / scale).round().clamp(0, 2 ** bits - 1) * scale + lo

    return fake_quant(k, 1), fake_quant(v, -1)


CATALOGUE = Catalogue({
    "predict_decode": [
        Mistake("4 bytes per parameter (fp32, not bf16)", predict_decode_fp32),
        Mistake("1 byte per parameter", predict_decode_one_byte),
    ],
    "append_kv": [
        Mistake("only the new tokens returned, not the whole filled part", append_kv_new_only),
        Mistake("the new tokens written one slot late, at length + 1", append_kv_one_late),
    ],
    "decode_attention": [
        Mistake("scores not scaled by 1/√d", decode_attention_unscaled),
        Mistake("KV heads tiled (repeat), so query head h reads KV head h % n_kv_head, "
                "not h // (n_head // n_kv_head)", decode_attention_tiled_heads),
    ],
    "cached_generate": [
        Mistake("a cache blind to the left padding (no key_valid)", cached_generate_blind_to_padding),
        Mistake("steps never committed to the cache", cached_generate_without_commit),
    ],
    "predict_kv_bytes": [
        Mistake("caching all 32 query heads (no GQA)", kv_bytes_all_query_heads),
        Mistake("only keys, or only values", kv_bytes_keys_only),
    ],
    "allocator": [
        Mistake("blocks taken from the tail of the free list, not its head", FreeListFromTail),
        Mistake("a released block put back at the head of the free list, not its tail",
                FreeListReleasedToHead),
    ],
    "cow": [
        Mistake("the block id not multiplied by block_size: slot table[j // block_size] + "
                "j % block_size", append_token_unscaled_block),
        Mistake("no copy-on-write: writing into a tail block another sequence shares",
                append_token_without_cow),
    ],
    "paged_cache": [
        Mistake("the block id not multiplied by block_size: blocks of the pool overlap",
                PagedCacheUnscaledBlock),
        Mistake("positions not advanced: every step's tokens at 0, 1, … instead of after the "
                "cached ones", PagedCachePositionsFromZero),
    ],
    "paged_attention": [
        Mistake("the running sum and output not rescaled by exp(m - m_new) when a block brings a "
                "larger score", paged_attention_not_rescaled),
        Mistake("slots at or past a row's length not masked: the last block's unused slots are "
                "attended to", paged_attention_unmasked),
        Mistake("query heads grouped as h % n_kv_head, not h // (n_head // n_kv_head)",
                paged_attention_tiled_heads),
    ],
    "prefix_hashes": [
        Mistake("the partial last block hashed too", prefix_hashes_with_partial),
        Mistake("each block hashed alone, not chained to the previous block's hash",
                prefix_hashes_unchained),
    ],
    "kivi": [
        Mistake("keys per token and values per channel (the axes swapped)", kivi_axes_swapped),
        Mistake("the scale (max - min) / 2^bits instead of / (2^bits - 1)", kivi_2_pow_bits_steps),
    ],
})

__all__ = ["CATALOGUE"]
