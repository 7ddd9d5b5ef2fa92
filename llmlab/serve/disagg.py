"""Prefill/decode disaggregation: a prefill process computes prompts' KV blocks, a decode process
imports them and generates.

DistServe ("DistServe: Disaggregating Prefill and Decoding for Goodput-optimized Large Language
Model Serving", arXiv 2401.09670) and Mooncake ("Mooncake: A KVCache-centric Disaggregated
Architecture for LLM Serving", arXiv 2407.00079) run the two phases on different machines:
prefill is compute-bound and decode memory-bound, so each gets hardware and batch sizes suited to
it, and a long prompt never stalls other users' decoding. The price is moving the KV cache.

Here the prefill side is a separate process (:func:`prefill_worker`) that runs each prompt through
its own :class:`~llmlab.kvcache.PagedKVCache` and ships the full blocks' keys and values through a
``torch.multiprocessing`` queue. The decode side (:func:`disaggregated_generate`, an
:class:`~llmlab.serve.engine.LLMEngine` with prefix caching) stores them with
``PagedKVCache.import_blocks`` as prefix-cache entries — the store Mooncake keeps keyed by prefix
hash — so admission finds them and only the prompt's partial last block (fewer than
``block_size`` tokens) is computed on the decode side. The transfer is real (the arrays are serialized
through a pipe); its cost on a network is *simulated* as bytes / bandwidth. Taught in chapter 09
(solutions/09_serve).
"""

from __future__ import annotations

import queue as queue_mod
import time
from dataclasses import dataclass

import torch

from llmlab.kvcache import PagedKVCache, blocks_for


def prefill_worker(model_dir: str | None, requests, results, block_size: int,
                   threads: int = 1) -> None:
    """Run in its own process: ``(request id, prompt ids)`` in, ``(id, tokens, kv)`` out.

    ``None`` on ``requests`` stops it (it answers ``None``). ``kv[layer]`` holds the full blocks'
    tensors (see ``PagedKVCache.export_blocks``).
    """
    from llmlab.model import load_book_model

    torch.set_num_threads(threads)
    model, _ = load_book_model(model_dir)
    c = model.config
    cache = PagedKVCache(c.n_layer, blocks_for(c.block_size, block_size) + 1, block_size)
    with torch.no_grad():
        while (item := requests.get()) is not None:
            rid, prompt = item
            cache.add_sequence(rid, prompt)
            ctx = cache.prepare([rid], tokens=[prompt])
            model(torch.tensor([prompt]), ctx)
            cache.commit(ctx)
            tokens, kv = cache.export_blocks(rid)
            cache.free(rid)
            # sent by value (serialized bytes), as over a network, not as shared memory
            results.put((rid, tokens, [[t.cpu().numpy() for t in layer] for layer in kv]))
    results.put(None)


@dataclass
class HandoverStats:
    """Blocks and bytes handed over, prompt tokens the decode side still computed."""

    blocks: int = 0
    bytes: int = 0
    decode_prompt_tokens: int = 0
    prompt_tokens: int = 0

    def transfer_seconds(self, bandwidth: float = 25e9) -> float:
        """Simulated network time at ``bandwidth`` bytes/s (25 GB/s ~ one 200 Gb/s RDMA NIC)."""
        return self.bytes / bandwidth


def disaggregated_generate(engine, prompts: list[list[int]], params, model_dir: str | None = None,
                           timeout: float = 120.0) -> tuple[list, HandoverStats]:
    """Prefill ``prompts`` in a separate process, decode them in ``engine``; (requests, stats).

    ``engine`` must use prefix caching. Requests join the decode batch as their blocks arrive.
    """
    import torch.multiprocessing as mp

    if not engine.config.prefix_caching:
        raise ValueError("the decode engine needs EngineConfig(prefix_caching=True)")
    ctx = mp.get_context("spawn")
    requests, results = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=prefill_worker, args=(model_dir, requests, results,
                                                    engine.config.block_size), daemon=True)
    proc.start()
    for i, p in enumerate(prompts):
        requests.put((i, list(p)))
    requests.put(None)
    stats, handles, deadline, open_ = HandoverStats(), {}, time.monotonic() + timeout, True
    try:
        while open_ or engine.has_unfinished():
            if time.monotonic() > deadline:
                raise TimeoutError(f"disaggregated generation took more than {timeout} s")
            try:
                item = results.get(timeout=0.01 if engine.has_unfinished() else 1.0)
            except queue_mod.Empty:
                item = False
            if item is None:
                open_ = False
            elif item is not False:
                rid, tokens, arrays = item
                kv = [[torch.from_numpy(a).to(engine.device) for a in layer] for layer in arrays]
                stats.blocks += engine.cache.import_blocks(tokens, kv)
                stats.bytes += sum(t.numel() * t.element_size() for layer in kv for t in layer)
                handles[rid] = engine.requests[engine.add_request(prompts[rid], params)]
            engine.step()
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    done = [handles[i] for i in range(len(prompts))]
    stats.prompt_tokens = sum(len(p) for p in prompts)
    stats.decode_prompt_tokens = sum(len(r.seq.prompt) - r.seq.num_cached for r in done)
    return done, stats
