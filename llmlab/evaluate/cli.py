"""``llmlab eval``: score a model on one task of the book's suite from the command line.

    llmlab eval --model book --task return-mc [--shots 3] [--limit 100] [--json]
    llmlab eval --model PATH --task bpb        # PATH: a folder written by llmlab.model.save_model
                                               # with its tokenizer.json beside it
    llmlab eval --leaderboard                  # the book's models on one suite (bench/leaderboard)

Tasks: ``return-mc`` (held-out multiple choice: acc and acc_norm with 95 % bootstrap
intervals), ``bpb`` (bits per byte and token perplexity per domain), ``min-k`` (Min-K% AUROC of
training vs held-out functions). Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

import argparse
import json
import sys

TASKS = ("return-mc", "bpb", "min-k")


def _run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from llmlab.evaluate import (
        auroc,
        bootstrap_ci,
        domain_likelihood,
        evaluate_mc,
        load_suite,
        min_k_prob,
        sample_shots,
        text_token_logprobs,
    )
    from llmlab.model import load_book_model

    if args.leaderboard:
        from llmlab.evaluate.leaderboard import markdown_table, rows_to_json, run

        rows = run(progress=lambda it: tqdm(it, desc="leaderboard", leave=False, disable=args.json))
        print(json.dumps(rows_to_json(rows), indent=2) if args.json else markdown_table(rows))
        return 0
    if not args.task:
        print("llmlab eval: give --task NAME or --leaderboard", file=sys.stderr)
        return 2
    try:
        model, tok = load_book_model(None if args.model == "book" else args.model)
    except FileNotFoundError as exc:
        print(f"llmlab eval: {exc}", file=sys.stderr)
        return 1
    suite = load_suite()
    progress = (lambda it: tqdm(it, desc=args.task, leave=False, disable=args.json))  # noqa: E731
    if args.task == "return-mc":
        items = suite["return_mc"]["heldout"][:args.limit]
        shots = sample_shots(suite["return_mc"]["train"], args.shots, 0) if args.shots else ()
        res = evaluate_mc(model, tok, items, shots, progress=progress)
        out = {"acc": vars(bootstrap_ci(res.acc)), "acc_norm": vars(bootstrap_ci(res.acc_norm)),
               "items": len(items), "shots": args.shots}
    elif args.task == "bpb":
        stats = domain_likelihood(model, tok, {k: v[:args.limit] for k, v in suite["domains"].items()},
                                  progress=progress)
        out = {d: {"bits_per_byte": s.bits_per_byte, "token_perplexity": s.token_perplexity,
                   "bytes": s.n_bytes, "tokens": s.n_tokens} for d, s in stats.items()}
    else:
        fn = suite["functions"]
        score = lambda texts: [min_k_prob(text_token_logprobs(model, tok, t)) for t in progress(texts)]  # noqa: E731
        members, nonmembers = score(fn["members"][:args.limit]), score(fn["nonmembers"][:args.limit])
        out = {"auroc": auroc(members, nonmembers), "members": len(members),
               "nonmembers": len(nonmembers)}
    out = {"model": args.model, "task": args.task, **out}
    print(json.dumps(out, indent=2) if args.json else _table(out))
    return 0


def _table(out: dict) -> str:
    lines = [f"{out['model']} · {out['task']}"]
    for key, value in out.items():
        if key in ("model", "task"):
            continue
        if isinstance(value, dict) and "estimate" in value:
            value = f"{value['estimate']:.3f} [{value['low']:.3f}, {value['high']:.3f}] (95% bootstrap)"
        elif isinstance(value, dict):
            value = " · ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.3f}"
        lines.append(f"  {key:<18} {value}")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score a model on a task of the book's evaluation suite")
    p.add_argument("--model", default="book", help="'book' or a folder with config.json, "
                                                   "model.safetensors and tokenizer.json")
    p.add_argument("--task", choices=TASKS)
    p.add_argument("--limit", type=int, default=None, help="at most this many items per split")
    p.add_argument("--shots", type=int, default=0, help="few-shot examples (return-mc)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--leaderboard", action="store_true",
                   help="the book's models on one suite (slow the first time: trains two variants)")
    p.set_defaults(func=_run)
