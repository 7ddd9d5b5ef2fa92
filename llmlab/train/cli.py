"""``llmlab pretrain --preset NAME``: the command that trains (and resumes) the book's model.

The top-level ``llmlab/cli.py`` calls ``register(subparsers)``; the parser dispatches to ``run``.
Taught in chapter 02 (solutions/02_gpt).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llmlab.train.presets import PRESETS


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``pretrain`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "pretrain", help="pretrain a GPT on the offline stdlib corpus",
        description="Tokenize the Python stdlib, pretrain a preset GPT, write checkpoint, "
                    "tokenizer, log and model card. Re-running resumes from the last checkpoint.",
    )
    p.add_argument("--preset", required=True, choices=sorted(PRESETS))
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: runs/<preset>; the shipped book model is replaced "
                        "only when --out names its folder, llmlab/model/assets/book)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="token cache and checkpoints (default: $LLMLAB_CACHE/pretrain/<preset>)")
    p.add_argument("--steps", type=int, default=None, help="override the preset's step count")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: preset)")
    p.add_argument("--device", default="cpu",
                   help="where the model trains: cpu (default), cuda, cuda:1, mps, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise SystemExit(f"--device: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: this torch build sees no CUDA GPU "
                         f"(torch {torch.__version__}); use --device cpu")
    from llmlab.train.pretrain import pretrain

    out = args.out or Path("runs") / args.preset
    s = pretrain(args.preset, out, args.workdir, progress=not args.no_progress,
                 max_steps=args.steps, threads=args.threads, device=args.device)
    print(f"{s['steps']} steps, {s['tokens_trained']:,} tokens in {s['wall_time_s'] / 60:.1f} min;"
          f" val loss {s['val_loss']:.3f} (unigram {s['unigram_val_loss']:.3f}) -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m llmlab.train.cli pretrain --preset tiny``."""
    parser = argparse.ArgumentParser(prog="llmlab")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
