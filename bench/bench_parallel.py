"""Parallelism benchmark: bytes and memory per rank against the formulas, the pipeline bubble,
and DDP's overlap — on 2 ``gloo`` processes.

On a CPU, time is not the point; the rows report measured ÷ formula:

1. bytes each rank sends in llmlab's ring all-reduce / reduce-scatter / all-gather (counted
   message by message) vs the α-β formulas, and in a ZeRO-1/2 step (ring collectives);
2. model-state bytes each rank holds for DDP and ZeRO-1/2/3 vs the ZeRO paper's formulas
   (fp32: 4 + 4 bytes of parameters and gradients, K = 8);
3. the pipeline bubble measured on real processes (GPipe and 1F1B, 2 stages) and by the
   schedule simulator vs (p − 1)/(m + p − 1);
4. DDP step time with the all-reduce overlapped with backward vs after it.

    python -m bench.bench_parallel --size full    # ~1–2 min
    python -m bench.bench_parallel --size tiny    # seconds
"""

from __future__ import annotations

from bench.common import parser, write_results
from llmlab.parallel import (
    SCHEDULES,
    Slot,
    Step,
    bubble_formula,
    bubble_fraction,
    launch,
    ring_bytes,
    simulate,
    zero_memory,
)
from llmlab.parallel import workers as W

SIZES = {
    "tiny": dict(n_elements=1000, zero_steps=1, n_micro=4, ddp_steps=2, d_model=64, n_layer=2),
    "full": dict(n_elements=1_000_000, zero_steps=3, n_micro=8, ddp_steps=10, d_model=256,
                 n_layer=6),
}


def row(measure: str, measured: float, formula: float, unit: str) -> dict:
    return {"measure": measure, "measured": f"{measured:.4g} {unit}",
            "formula": f"{formula:.4g} {unit}", "measured ÷ formula": measured / formula}


def byte_rows(size: dict) -> list[dict]:
    n = size["n_elements"]
    out = launch(W.collectives_check, 2, n)[0]
    rows = [row(f"ring {op} bytes sent per rank ({n if op != 'all_gather' else 20} fp32)",
                out[f"{op}_bytes"],
                ring_bytes(op, (n if op != "all_gather" else 20) * 4, 2), "B")
            for op in ("all_reduce", "reduce_scatter", "all_gather")]
    z = launch(W.zero_check, 2, size["zero_steps"], False, True)[0]
    padded = -(-z["psi"] // 2) * 2
    for stage in (1, 2):
        rows.append(row(f"ZeRO-{stage} bytes sent per rank per step", z["sent"][stage],
                        ring_bytes("all_reduce", padded * 4, 2), "B"))
    for stage in range(4):
        rows.append(row(f"model-state bytes per rank, {'DDP' if stage == 0 else f'ZeRO-{stage}'}",
                        z["held"][stage],
                        zero_memory(padded if stage else z["psi"], 2, stage, 4, 4, 8), "B"))
    return rows


def bubble_rows(size: dict) -> list[dict]:
    m, rows = size["n_micro"], []
    for name, make in SCHEDULES.items():
        rows.append(row(f"{name} bubble, simulated (p=4, m={2 * m})",
                        bubble_fraction(simulate(make(4, 2 * m))), bubble_formula(4, 2 * m), ""))
        timelines = launch(W.pipeline_timeline, 2, name, m, size["d_model"])
        slots = [Slot(r, Step(op, mb), start, end) for r, tl in enumerate(timelines)
                 for op, mb, start, end in tl]
        rows.append(row(f"{name} bubble, measured on 2 processes (m={m})", bubble_fraction(slots),
                        bubble_formula(2, m), ""))
    return rows


def overlap_rows(size: dict) -> list[dict]:
    args = (size["ddp_steps"], size["d_model"], size["n_layer"])
    with_overlap = max(launch(W.ddp_step_time, 2, True, *args))
    without = max(launch(W.ddp_step_time, 2, False, *args))
    return [{"measure": "DDP step time, overlap ÷ no overlap (2 processes)",
             "measured": f"{with_overlap * 1e3:.4g} ms", "formula": f"{without * 1e3:.4g} ms",
             "measured ÷ formula": with_overlap / without}]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    size = SIZES[args.size]
    rows = byte_rows(size) + bubble_rows(size) + overlap_rows(size)
    write_results("parallel", rows, out=args.out, size=args.size,
                  title="Parallelism: bytes, memory and bubble vs the formulas (2 gloo processes)",
                  notes="Bytes are counted message by message in llmlab's ring collectives; memory "
                        "is the storage of parameters, gradients and AdamW states each rank holds "
                        "after a step. The last row's 'formula' column is the step time without "
                        "overlap (the baseline). Measured bubbles include the time of sends and "
                        "receives on a shared CPU.")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
