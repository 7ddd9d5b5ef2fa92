"""The book's leaderboard: the base model and its chapter 05–08 variants on one suite.

    python -m bench.bench_leaderboard [--size tiny|full]

Scores, not timings: held-out return-statement multiple choice (acc, acc_norm) and bits per
byte on held-out code, each with a 95 % bootstrap interval, and the paired difference of each
variant's acc_norm from the base model's. The trained variants (LoRA, DPO) are cached under
``$LLMLAB_CACHE/evaluate``. ``llmlab eval --leaderboard`` prints the same table.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from bench.common import parse_args, parser, write_results
from llmlab.evaluate.leaderboard import SuiteConfig, run, table_rows

NOTES = ("Intervals: 95 % percentile bootstrap over items (documents for bits per byte). "
         "Δ: the paired bootstrap interval of the per-item difference from the base model. "
         "Chapter 11 explains each column.")


def main() -> None:
    args = parse_args(parser(__doc__.split("\n")[0], threads=True))
    tiny = args.size == "tiny"
    config = SuiteConfig(n_items=16, n_docs=2, n_resamples=200) if tiny else SuiteConfig()
    rows = run(config, (4, 2) if tiny else (80, 30), progress=lambda it: tqdm(it, leave=False))
    write_results("leaderboard", table_rows(rows), out=args.out, size=args.size,
                  title="The book's models on one suite (chapter 11)", notes=NOTES)


if __name__ == "__main__":
    main()
