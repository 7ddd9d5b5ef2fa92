"""The paged KV cache: block tables over a shared block pool (PagedAttention).

"Efficient Memory Management for Large Language Model Serving with PagedAttention" (Kwon et al.,
arXiv 2309.06180). Each layer's keys and values live in a pool of ``num_blocks`` blocks of
``block_size`` token slots; each sequence owns a *block table* listing its blocks in order, so
token ``j`` of a sequence sits in slot ``table[j // block_size] * block_size + j % block_size``.
A sequence wastes at most one partly filled block, sequences of any lengths share one pool, and a
forked sequence (parallel sampling) shares its parent's blocks until it writes into a shared one
(copy-on-write).

Rows of a forward are sequences of different lengths. ``ctx = cache.prepare(seq_ids, tokens=...)``
names the rows, reserves the slots of each row's new tokens (raising :class:`OutOfBlocksError`
before anything is written, so a scheduler can preempt) and returns the step's context
(:mod:`llmlab.nn.context`): positions, mask, and a :class:`PagedStep` as ``ctx.cache``, which
holds the gather index. The input is right-padded: row ``b`` has ``n_new[b]`` real tokens first.
Each layer's ``ctx.cache.update`` scatters the real new tokens into their slots and gathers the
row's whole sequence through its block table; ``cache.commit(ctx)`` then counts the tokens and
registers newly full blocks in the prefix cache. With ``prefix_caching=True`` full blocks are shared across
requests by chained hash (:mod:`llmlab.kvcache.prefix`). Taught in chapter 08
(solutions/08_kvcache); chapter 09's scheduler drives it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch

from llmlab.kvcache.base import StepContext, check_update
from llmlab.kvcache.blocks import BlockAllocator, OutOfBlocksError, blocks_for
from llmlab.kvcache.prefix import PrefixCachingAllocator, hash_block, prefix_block_hashes

__all__ = ["OutOfBlocksError", "PagedKVCache", "PagedStep", "copy_on_write", "token_slots"]


def token_slots(tables: torch.Tensor, positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """Pool slots of token positions through block tables.

    tables: (batch, n_blocks) block ids; positions: (batch, n) -> (batch, n) slots
    ``tables[b, pos // block_size] * block_size + pos % block_size``.
    """
    block = torch.gather(tables, 1, (positions // block_size).clamp(max=tables.shape[1] - 1))
    return block * block_size + positions % block_size


def copy_on_write(table: list[int], length: int, block_size: int, allocator: BlockAllocator,
                  pools: Sequence[torch.Tensor]) -> None:
    """Before writing token ``length`` into a partly filled tail block another sequence shares,
    give this sequence its own copy of the block (in every pool; ``table`` is edited in place)."""
    if length % block_size == 0 or allocator.refcount[table[-1]] == 1:
        return
    old, (new,) = table[-1], allocator.allocate(1)
    for pool in pools:
        pool[new * block_size:(new + 1) * block_size] = pool[old * block_size:(old + 1) * block_size]
    allocator.release(old)
    table[-1] = new


@dataclass
class PagedStep:
    """One prepared forward: computed once by ``prepare``, used by every layer as ``ctx.cache``."""

    cache: PagedKVCache
    seq_ids: list[Hashable]  # the sequences that are the rows
    n_new: list[int]  # real new tokens per row
    rows: torch.Tensor  # (n_total,) row of each real new token
    cols: torch.Tensor  # (n_total,) its column in the right-padded input
    write_slots: torch.Tensor  # (n_total,) pool slot it is written to
    gather: torch.Tensor  # (batch, T) pool slot of each token of each row (0 past the end)
    tokens: list[list[int]] | None  # the new token ids, for prefix-cache hashing
    stored: list[bool] = field(default_factory=list)  # which layers have written their tokens

    def observe_queries(self, layer_idx: int, q: torch.Tensor) -> None:
        """Not needed: a paged cache keeps every token."""

    def update(self, layer_idx: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Scatter the real new tokens into their slots; gather each row ``(batch, T, ...)``."""
        return self.cache.write_and_gather(self, layer_idx, tensors)


class PagedKVCache:
    """Paged cache for ``n_layer`` layers with ``num_blocks`` blocks of ``block_size`` tokens."""

    def __init__(self, n_layer: int, num_blocks: int, block_size: int = 16,
                 prefix_caching: bool = False) -> None:
        if n_layer < 1 or block_size < 1:
            raise ValueError(f"need n_layer >= 1 and block_size >= 1, got {n_layer}, {block_size}")
        self.n_layer, self.num_blocks, self.block_size = n_layer, num_blocks, block_size
        self.allocator = (PrefixCachingAllocator if prefix_caching else BlockAllocator)(num_blocks)
        self._pools: list[list[torch.Tensor] | None] = [None] * n_layer  # (blocks*size, ...)
        self.tables: dict[Hashable, list[int]] = {}  # sequence -> its block ids, in order
        self.lengths: dict[Hashable, int] = {}  # sequence -> tokens stored
        self._tokens: dict[Hashable, list[int] | None] = {}  # ids of stored tokens (for hashing)
        self._hashes: dict[Hashable, list[bytes]] = {}  # chained hashes of its full blocks
        self._salts: dict[Hashable, bytes | None] = {}  # prefix-hash salt of each sequence
        self._step: PagedStep | None = None  # the prepared, not yet committed forward

    # ----------------------------------------------------------------- sequences
    def add_sequence(self, seq_id: Hashable, prompt: Sequence[int] | None = None,
                     salt: bytes | None = None) -> int:
        """Register a sequence; with prefix caching, reuse cached blocks of ``prompt``.

        ``salt`` keys its blocks apart from other sequences' with the same tokens, e.g. by the
        LoRA adapter that computed them (a scheduler passes it again when a preempted sequence
        comes back). Returns how many leading prompt tokens are already cached (a multiple of
        ``block_size``, at most ``len(prompt) - 1`` so the last prompt token is always computed
        to get logits). The caller then feeds only ``prompt[cached:]``.
        """
        if seq_id in self.tables:
            raise ValueError(f"sequence {seq_id!r} already exists")
        blocks: list[int] = []
        hashes: list[bytes] = []
        if prompt is not None and isinstance(self.allocator, PrefixCachingAllocator):
            hashes = prefix_block_hashes(list(prompt[:-1]), self.block_size, salt)
            blocks = self.allocator.lookup(hashes)
            hashes = hashes[:len(blocks)]
        cached = len(blocks) * self.block_size
        self.tables[seq_id], self.lengths[seq_id] = blocks, cached
        self._tokens[seq_id] = None if prompt is None else list(prompt[:cached])
        self._hashes[seq_id], self._salts[seq_id] = hashes, salt
        return cached

    def fork(self, parent: Hashable, child: Hashable) -> None:
        """``child`` starts as a copy of ``parent`` sharing all its blocks (copy-on-write)."""
        if child in self.tables:
            raise ValueError(f"sequence {child!r} already exists")
        for block in self.tables[parent]:
            self.allocator.share(block)
        self.tables[child] = list(self.tables[parent])
        self.lengths[child] = self.lengths[parent]
        toks = self._tokens[parent]
        self._tokens[child] = None if toks is None else list(toks)
        self._hashes[child] = list(self._hashes[parent])
        self._salts[child] = self._salts[parent]

    def free(self, seq_id: Hashable) -> None:
        """Drop a finished sequence; its tail blocks are released (and so evicted) first."""
        for block in reversed(self.tables.pop(seq_id)):
            self.allocator.release(block)
        for d in (self.lengths, self._tokens, self._hashes, self._salts):
            d.pop(seq_id)

    # ----------------------------------------------------------------- one forward
    def prepare(self, seq_ids: Sequence[Hashable], n_new: Sequence[int] | int | None = None,
                tokens: Sequence[Sequence[int]] | None = None,
                device: torch.device | str | None = None,
                last_logits: bool = False) -> StepContext:
        """The context of a forward whose rows are ``seq_ids``, with ``n_new[b]`` new tokens for
        row ``b`` (or ``tokens[b]``, which the prefix cache then records).

        Reserves their slots — raising :class:`OutOfBlocksError`, nothing changed, when the pool
        is too small — and returns positions, the mask (None when every row is at the same
        length) and the step as ``ctx.cache``; ``last_logits`` asks for logits at each row's last
        new token only. A step replaces one prepared before and not committed.
        """
        seq_ids = list(seq_ids)
        unknown = [s for s in seq_ids if s not in self.tables]
        if not seq_ids or unknown:
            raise ValueError(f"rows must be added sequences (add_sequence first); got {seq_ids}")
        if tokens is not None:
            n_new = [len(t) for t in tokens]
        if isinstance(n_new, int):
            n_new = [n_new] * len(seq_ids)
        if n_new is None or len(n_new) != len(seq_ids) or min(n_new) < 1:
            raise ValueError(f"need n_new >= 1 for each of the {len(seq_ids)} rows, got {n_new}")
        needed = sum(self.blocks_needed(s, n) for s, n in zip(seq_ids, n_new))
        if needed > self.allocator.num_free:
            raise OutOfBlocksError(needed, self.allocator.num_free)
        for seq, n in zip(seq_ids, n_new):
            self._copy_on_write(seq)
            table = self.tables[seq]
            table += self.allocator.allocate(blocks_for(self.lengths[seq] + n, self.block_size)
                                             - len(table))
        toks = None if tokens is None else [list(t) for t in tokens]
        ctx = self._plan(seq_ids, list(n_new), toks, device)
        if last_logits:
            ctx.logits_at = torch.tensor(n_new, device=device) - 1
        self._step = ctx.cache
        return ctx

    @property
    def num_free_blocks(self) -> int:
        """Blocks a scheduler can still hand out (free, or cached and evictable)."""
        return self.allocator.num_free

    def blocks_needed(self, seq: Hashable, n: int) -> int:
        """New blocks ``seq`` needs to store ``n`` more tokens (one more if its tail is shared)."""
        length, table = self.lengths[seq], self.tables[seq]
        shared_tail = n > 0 and length % self.block_size and self.allocator.refcount[table[-1]] > 1
        return blocks_for(length + n, self.block_size) - len(table) + int(bool(shared_tail))

    def _copy_on_write(self, seq: Hashable) -> None:
        """Before writing into a partly filled block another sequence shares, copy it."""
        pools = [pool for layer in filter(None, self._pools) for pool in layer]
        copy_on_write(self.tables[seq], self.lengths[seq], self.block_size, self.allocator, pools)

    def _slots(self, tables: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return token_slots(tables, pos, self.block_size)

    def _plan(self, seq_ids: list[Hashable], n_new: list[int], tokens: list[list[int]] | None,
              device: torch.device | str | None) -> StepContext:
        lengths = torch.tensor([self.lengths[s] for s in seq_ids], device=device)
        n = torch.tensor(n_new, device=device)
        width = max(max(len(self.tables[s]) for s in seq_ids), 1)
        tables = torch.tensor([self.tables[s] + [0] * (width - len(self.tables[s]))
                               for s in seq_ids], device=device)  # (batch, width)
        t_max, T = max(n_new), int((lengths + n).max())
        cols = torch.arange(t_max, device=device)[None]  # (1, t_max)
        positions = lengths[:, None] + cols  # (batch, t_max)
        real = cols < n[:, None]  # (batch, t_max): True at the real (not padding) new tokens
        rows, cols_real = real.nonzero(as_tuple=True)
        write_slots = self._slots(tables, positions)[real]
        key_pos = torch.arange(T, device=device)[None].expand(len(seq_ids), T)
        gather = torch.where(key_pos < (lengths + n)[:, None], self._slots(tables, key_pos), 0)
        aligned = bool((lengths == lengths[0]).all()) and bool((n == t_max).all())
        mask = None
        if not aligned:
            key_ok = key_pos < (lengths + n)[:, None]  # (batch, T)
            mask = key_ok[:, None, :] & (key_pos[:, None, :] <= positions[:, :, None])
            mask = (mask | ~mask.any(-1, keepdim=True))[:, None]  # a row with no key sees all
        step = PagedStep(self, seq_ids, n_new, rows, cols_real, write_slots, gather, tokens,
                         [False] * self.n_layer)
        return StepContext(positions, mask, step)

    def write_and_gather(self, step: PagedStep, layer_idx: int,
                         tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """A layer's update during ``step`` (see :meth:`PagedStep.update`)."""
        if step is not self._step:
            raise ValueError("this step is not the cache's prepared one: prepare() again")
        pools = self._pools[layer_idx] if 0 <= layer_idx < self.n_layer else None
        check_update(self.n_layer, layer_idx, tensors,
                     None if pools is None else tuple(p.shape[1:] for p in pools))
        batch, t_new = tensors[0].shape[:2]
        if batch != len(step.seq_ids) or t_new < max(step.n_new):
            raise ValueError(f"prepared {len(step.seq_ids)} rows with up to {max(step.n_new)} new "
                             f"tokens, got tensors of (batch, t_new) = ({batch}, {t_new})")
        if pools is None:
            slots = self.num_blocks * self.block_size
            pools = [t.new_zeros((slots, *t.shape[2:])) for t in tensors]
            self._pools[layer_idx] = pools
        out = []
        flat = step.gather.flatten()  # one index op per pool: scatter the new, gather the rows
        for pool, t in zip(pools, tensors):
            pool.index_copy_(0, step.write_slots, t[step.rows, step.cols].to(pool.dtype))
            out.append(pool.index_select(0, flat).view(*step.gather.shape, *pool.shape[1:]))
        step.stored[layer_idx] = True
        return tuple(out)

    def commit(self, ctx: StepContext) -> None:
        """After the forward: lengths grow, newly full blocks enter the prefix cache."""
        step = ctx.cache
        if step is None or step is not self._step:
            raise ValueError("commit the context the latest prepare() returned")
        if not all(step.stored):
            missing = [i for i, done in enumerate(step.stored) if not done]
            raise ValueError(f"layers {missing} did not store the step's tokens: run the model "
                             "with this context before committing it")
        for i, seq in enumerate(step.seq_ids):
            self.lengths[seq] += step.n_new[i]
            toks = self._tokens[seq]
            if toks is not None and step.tokens is not None:
                toks += step.tokens[i]
                self._register_full_blocks(seq)
            else:
                self._tokens[seq] = None
        self._step = None

    def _register_full_blocks(self, seq: Hashable) -> None:
        if not isinstance(self.allocator, PrefixCachingAllocator):
            return
        hashes, toks, bs = self._hashes[seq], self._tokens[seq], self.block_size
        for i in range(len(hashes), self.lengths[seq] // bs):
            prev = hashes[-1] if hashes else self._salts[seq]
            hashes.append(hash_block(prev, toks[i * bs:(i + 1) * bs]))
            self.allocator.register(self.tables[seq][i], hashes[-1])

    # ----------------------------------------------------------------- hand-over
    def export_blocks(self, seq_id: Hashable) -> tuple[list[int], list[list[torch.Tensor]]]:
        """The tokens of ``seq_id``'s full blocks and their keys/values, per layer.

        Returns ``(tokens, kv)`` with ``kv[layer]`` a list of ``(n_full * block_size, ...)``
        tensors (one per cached tensor kind, e.g. keys and values). Used to hand a prefilled
        prompt to another process (prefill/decode disaggregation, chapter 09).
        """
        toks = self._tokens[seq_id]
        if toks is None:
            raise ValueError(f"sequence {seq_id!r} was fed without token ids; cannot export")
        n_full = self.lengths[seq_id] // self.block_size
        slots = torch.tensor([b * self.block_size + i for b in self.tables[seq_id][:n_full]
                              for i in range(self.block_size)], dtype=torch.long)
        kv = [[pool[slots.to(pool.device)].clone() for pool in pools]
              for pools in self._pools if pools is not None]
        return list(toks[:n_full * self.block_size]), kv

    def import_blocks(self, tokens: Sequence[int], kv: list[list[torch.Tensor]]) -> int:
        """Store full blocks computed elsewhere as prefix-cache entries; returns blocks stored.

        A later :meth:`add_sequence` with a prompt starting with ``tokens`` finds them as cached
        (needs ``prefix_caching=True``). The blocks stay evictable like any cached block.
        """
        if not isinstance(self.allocator, PrefixCachingAllocator):
            raise ValueError("import_blocks needs a cache built with prefix_caching=True")
        bs = self.block_size
        if len(tokens) % bs or len(kv) != self.n_layer:
            raise ValueError(f"need whole blocks of {bs} tokens and kv for {self.n_layer} layers, "
                             f"got {len(tokens)} tokens and {len(kv)} layers")
        hashes = prefix_block_hashes(list(tokens), bs)
        blocks = self.allocator.allocate(len(hashes))
        for layer, tensors in enumerate(kv):
            if self._pools[layer] is None:
                slots = self.num_blocks * bs
                self._pools[layer] = [t.new_zeros((slots, *t.shape[1:])) for t in tensors]
            for pool, t in zip(self._pools[layer], tensors):
                for j, block in enumerate(blocks):
                    pool[block * bs:(block + 1) * bs] = t[j * bs:(j + 1) * bs]
        for block, h in zip(blocks, hashes):
            self.allocator.register(block, h)
            self.allocator.release(block)  # cached and free: revived by a prefix hit
        return len(blocks)

    # ----------------------------------------------------------------- accounting
    def pool_view(self, layer_idx: int) -> list[torch.Tensor]:
        """Layer ``layer_idx``'s pools as ``(num_blocks, block_size, ...)`` (for paged kernels)."""
        pools = self._pools[layer_idx] or []
        return [p.view(self.num_blocks, self.block_size, *p.shape[1:]) for p in pools]

    def used_blocks(self) -> int:
        return self.num_blocks - self.allocator.num_free

    def stored_tokens(self) -> int:
        """Tokens held, counting a shared block once."""
        seen: dict[int, int] = {}
        for seq, table in self.tables.items():
            for i, block in enumerate(table):
                fill = min(self.block_size, self.lengths[seq] - i * self.block_size)
                seen[block] = max(seen.get(block, 0), fill)
        return sum(seen.values())
