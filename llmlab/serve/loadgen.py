"""A bounded load generator: Poisson arrivals of streaming requests, latency percentiles, goodput.

Requests arrive as a Poisson process (exponential gaps at ``rate`` per second), with prompt and
output lengths drawn from a mix; each is a streaming ``/v1/completions`` call, timed from its
send to its first chunk (TTFT) and between later tokens (TPOT). Throughput counts output tokens
per second of wall time; *goodput* counts only requests that met the service-level objective
(TTFT and TPOT under their limits), as DistServe ("DistServe: Disaggregating Prefill and
Decoding for Goodput-optimized Large Language Model Serving", arXiv 2401.09670) defines it.
Bounded: a fixed number of requests, each with a timeout, to one base URL (127.0.0.1 in the
tests and the book). Taught in chapter 09 (solutions/09_serve).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


@dataclass
class RequestResult:
    ttft: float | None
    tpot: float | None
    latency: float
    output_tokens: int
    ok: bool


@dataclass
class LoadReport:
    requests: int
    failed: int
    duration: float
    throughput: float  # output tokens / s
    ttft_ms: dict[str, float]  # p50, p90, p99
    tpot_ms: dict[str, float]
    goodput: float  # requests / s meeting the SLO
    slo_attainment: float  # fraction of requests meeting it


def percentiles(values: list[float], ps=(50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (NaN when there is no value)."""
    if not values:
        return {f"p{p}": float("nan") for p in ps}
    s = sorted(values)
    return {f"p{p}": s[min(len(s) - 1, max(0, -(-p * len(s) // 100) - 1))] for p in ps}


async def _one(client, url: str, model: str, prompt: str, max_tokens: int,
               timeout: float) -> RequestResult:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "ignore_eos": True}
    start, times = time.perf_counter(), []
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body,
                                 timeout=timeout) as resp:
            if resp.status_code != 200:
                await resp.aread()
                return RequestResult(None, None, time.perf_counter() - start, 0, False)
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    if json.loads(line[6:])["choices"][0]["text"] or not times:
                        times.append(time.perf_counter())
    except Exception:  # a timeout or a broken connection counts as a failed request
        return RequestResult(None, None, time.perf_counter() - start, 0, False)
    end = time.perf_counter()
    ttft = times[0] - start if times else None
    tpot = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
    return RequestResult(ttft, tpot, end - start, len(times), True)


async def run_load(url: str, prompts: list[str], *, num_requests: int = 16, rate: float = 4.0,
                   output_lens: tuple[int, int] = (8, 32), model: str = "book",
                   slo_ttft: float = 1.0, slo_tpot: float = 0.2, seed: int = 0,
                   timeout: float = 60.0) -> LoadReport:
    """Send ``num_requests`` Poisson-timed streaming requests; summarize their latencies."""
    import httpx

    if num_requests < 1 or rate <= 0:
        raise ValueError(f"need num_requests >= 1 and rate > 0, got {num_requests}, {rate}")
    rng = random.Random(seed)
    plan, t = [], 0.0
    for _ in range(num_requests):
        t += rng.expovariate(rate)
        plan.append((t, rng.choice(prompts), rng.randint(*output_lens)))
    start = time.perf_counter()
    async with httpx.AsyncClient() as client:
        async def launch(at: float, prompt: str, n: int) -> RequestResult:
            await asyncio.sleep(max(0.0, at - (time.perf_counter() - start)))
            return await _one(client, url, model, prompt, n, timeout)

        results = await asyncio.gather(*(launch(*p) for p in plan))
    duration = time.perf_counter() - start
    ok = [r for r in results if r.ok]
    good = [r for r in ok if r.ttft is not None and r.ttft <= slo_ttft
            and (r.tpot is None or r.tpot <= slo_tpot)]
    return LoadReport(
        requests=num_requests, failed=num_requests - len(ok), duration=duration,
        throughput=sum(r.output_tokens for r in ok) / duration,
        ttft_ms={k: 1e3 * v for k, v in percentiles([r.ttft for r in ok if r.ttft]).items()},
        tpot_ms={k: 1e3 * v for k, v in percentiles([r.tpot for r in ok if r.tpot]).items()},
        goodput=len(good) / duration, slo_attainment=len(good) / num_requests)


def load_test(url: str, prompts: list[str], **kwargs) -> LoadReport:
    """Synchronous wrapper of :func:`run_load`: its own event loop in a worker thread (so it also
    works where a loop is already running, as in a notebook)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run_load(url, prompts, **kwargs)).result()
