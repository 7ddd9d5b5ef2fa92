"""Prometheus text metrics of a server: gauges, counters and latency histograms.

The exposition format (https://prometheus.io/docs/instrumenting/exposition_formats/) is plain
text: ``# TYPE name kind`` then ``name{labels} value`` lines; a histogram has cumulative
``_bucket{le="..."}`` lines, ``_sum`` and ``_count``. Written by hand to avoid a dependency.
Time to first token (TTFT) and time per output token (TPOT) are the two latencies a chat user
feels: waiting for the answer to start, and the speed it streams at. Taught in chapter 09
(solutions/09_serve).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Histogram:
    """Counts of observations per upper bound (cumulative when printed)."""

    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str) -> list[str]:
        out, cum = [f"# TYPE {name} histogram"], 0
        for bound, c in zip([*map(str, self.buckets), "+Inf"], self.counts):
            cum += c
            out.append(f'{name}_bucket{{le="{bound}"}} {cum}')
        return out + [f"{name}_sum {self.total:.6f}", f"{name}_count {self.n}"]


@dataclass
class ServerMetrics:
    """What ``/metrics`` shows: engine gauges (passed in), request counters, TTFT/TPOT."""

    ttft: Histogram = field(default_factory=Histogram)
    tpot: Histogram = field(default_factory=Histogram)
    requests_total: int = 0
    requests_aborted: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0

    def render(self, gauges: dict[str, int]) -> str:
        lines = []
        names = {"waiting": "llmlab_num_requests_waiting", "running": "llmlab_num_requests_running",
                 "kv_blocks_used": "llmlab_kv_blocks_used", "kv_blocks_total": "llmlab_kv_blocks_total"}
        for key, name in names.items():
            lines += [f"# TYPE {name} gauge", f"{name} {gauges[key]}"]
        for name, value in [("llmlab_requests_total", self.requests_total),
                            ("llmlab_requests_aborted_total", self.requests_aborted),
                            ("llmlab_prompt_tokens_total", self.prompt_tokens),
                            ("llmlab_generation_tokens_total", self.generation_tokens)]:
            lines += [f"# TYPE {name} counter", f"{name} {value}"]
        lines += self.ttft.lines("llmlab_time_to_first_token_seconds")
        lines += self.tpot.lines("llmlab_time_per_output_token_seconds")
        return "\n".join(lines) + "\n"
