"""``llmlab serve --model book [--host H] [--port P]``: the OpenAI-compatible server.

``--model`` is ``book`` (the shipped model), ``book-chat`` (it after supervised fine-tuning,
which answers chat requests) or a folder saved by ``llmlab.model.save_model`` with a
``tokenizer.json`` beside it. Binds to 127.0.0.1 unless told otherwise. Taught in chapter
09 (solutions/09_serve).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    p.add_argument("--model", default="book", help="'book', 'book-chat' or a saved model folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--num-blocks", type=int, default=512, help="KV cache blocks")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    p.add_argument("--max-num-seqs", type=int, default=16, help="sequences per step")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from llmlab.model import load_book_chat_model, load_book_model
    from llmlab.serve.engine import EngineConfig, LLMEngine
    from llmlab.serve.server import create_app

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "book-chat":
        model, tok = load_book_chat_model()
    else:
        model, tok = load_book_model(None if args.model == "book" else args.model)
    engine = LLMEngine(model, tok, EngineConfig(num_blocks=args.num_blocks,
                                                block_size=args.block_size,
                                                max_num_seqs=args.max_num_seqs))
    name = (args.model if args.model in ("book", "book-chat")
            else args.model.rstrip("/").split("/")[-1])
    uvicorn.run(create_app(engine, name), host=args.host, port=args.port, log_level="info",
                timeout_graceful_shutdown=5)
    return 0
