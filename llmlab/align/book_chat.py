"""``python -m llmlab.align.book_chat``: fine-tune the book model into ``book-chat``.

Supervised fine-tuning (Ouyang et al. 2022, "Training language models to follow instructions
with human feedback", arXiv:2203.02155) with chapter 06's pipeline: ChatML tokens added to the
book tokenizer (:func:`llmlab.align.add_chat_tokens`), loss on assistant tokens only
(:func:`llmlab.align.sft_example`), examples packed without cross-document attention (Krell et
al. 2021, arXiv:2107.02027; :func:`llmlab.align.pack_examples`). The data is
:mod:`llmlab.align.chat_data`. The run is seeded and on CPU; it writes the weights (fp16, ~3 MB),
the tokenizer, ``summary.json`` (checksums, held-out score, wall time) and ``MODEL_CARD.md``.

    python -m llmlab.align.book_chat --out llmlab/model/assets/book-chat   # replace the shipped one
    python -m llmlab.align.book_chat --out DIR --rescore   # score a trained folder again
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from llmlab.align import chat_data
from llmlab.align.sft import add_chat_tokens, pack_examples, packed_sft_loss, sft_example
from llmlab.data import sha256_file
from llmlab.model import generate, load_book_model, save_model
from llmlab.tokenizer import apply_chat_template
from llmlab.utils import reject_unknown_keys

COMMAND = "python -m llmlab.align.book_chat --out llmlab/model/assets/book-chat"
MAX_NEW_TOKENS = {"explain": 40, "write": 24}  # enough for the sentence / the def line


@reject_unknown_keys
@dataclass
class BookChatConfig:
    """The fine-tune's hyper-parameters (the card records them)."""

    steps: int = 72
    seq_len: int = 512
    rows_per_step: int = 8
    lr: float = 1e-3
    warmup_steps: int = 8
    weight_decay: float = 0.0
    clip: float = 1.0
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        if self.steps < 1 or self.rows_per_step < 1 or self.lr <= 0:
            raise ValueError(f"steps and rows_per_step must be >= 1 and lr > 0, got {self}")


def answer(model, tok, question: str, max_new_tokens: int) -> str:
    """The greedy reply to one user message (ChatML prompt, stops at ``<|im_end|>``)."""
    prompt = apply_chat_template(tok, [{"role": "user", "content": question}],
                                 add_generation_prompt=True).ids
    end = tok.special_ids["<|im_end|>"]
    out = generate(model, torch.tensor([prompt]), max_new_tokens=max_new_tokens, temperature=0,
                   eos_token_id=end)[0, len(prompt):].tolist()
    return tok.decode([t for t in out if t != end])


def evaluate(model, tok, examples: list[chat_data.ChatExample]) -> dict:
    """Held-out score: the fraction of questions answered correctly, overall and per task."""
    hits: dict[str, list[bool]] = {t: [] for t in chat_data.TASKS}
    with torch.no_grad():
        for e in examples:
            hits[e.task].append(chat_data.score(e, answer(model, tok, e.question,
                                                          MAX_NEW_TOKENS[e.task])))
    every = [h for v in hits.values() for h in v]
    return {"n": len(every), "correct": sum(every), "rate": sum(every) / len(every),
            "by_task": {t: {"n": len(v), "correct": sum(v)} for t, v in hits.items()}}


def train(config: BookChatConfig, progress: bool = True):
    """(model, tokenizer, log) after SFT of the shipped book model on the train split."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    base, tok = load_book_model()
    model, tok = add_chat_tokens(base, tok)
    examples = chat_data.build("train", config.seed)
    pad = tok.special_ids["<|endoftext|>"]
    packed = pack_examples([sft_example(tok, e.chat()) for e in examples], config.seq_len, pad)
    rows = packed.ids.shape[0]
    total = config.steps
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95),
                            weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / config.warmup_steps)
                                              * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / total))))
    order = random.Random(config.seed)
    model.train()
    losses, step, t0 = [], 0, time.perf_counter()
    perm: list[int] = []
    while step < total:
        if len(perm) < config.rows_per_step:  # a fresh pass over the rows, reshuffled
            perm = list(range(rows))
            order.shuffle(perm)
        idx = torch.tensor(perm[:config.rows_per_step])
        perm = perm[config.rows_per_step:]
        batch = type(packed)(packed.ids[idx], packed.labels[idx], packed.positions[idx],
                             packed.doc_ids[idx])
        loss = packed_sft_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        step += 1
        if progress and (step % 10 == 0 or step == total):
            print(f"step {step}/{total} loss {losses[-1]:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    log = {"steps": total, "wall_time_s": round(time.perf_counter() - t0, 1),
           "examples": len(examples), "rows": rows,
           "rows_trained": total * config.rows_per_step,
           "assistant_tokens_per_epoch": int((packed.labels != -100).sum()),
           "loss_first": losses[0], "loss_last": sum(losses[-20:]) / len(losses[-20:]),
           "recipe_sha256": chat_data.recipe_sha256(examples)}
    return model.eval(), tok, log


def write_card(out: Path, summary: dict) -> None:
    c, h, log = summary["config"], summary["heldout"], summary["training"]
    trn = summary["train_sample"]

    def cell(result: dict, task: str) -> str:
        return f"{result['by_task'][task]['correct']} / {result['by_task'][task]['n']}"

    text = f"""# llmlab book-chat

The book model (`llmlab/model/assets/book`, 1.56 M parameters) after supervised fine-tuning on
a synthetic instruction set built offline from the standard library. Load it with
`llmlab.model.load("book-chat")`, serve it with `llmlab serve --model book-chat`.

Reproduce it with `{summary['command']}` (seeded; {log['wall_time_s'] / 60:.1f} min on
{c['threads']} threads of a 2-core CPU shared with other jobs, {summary['machine']},
torch {summary['torch']}).

## Data recipe (`llmlab.align.chat_data`)

Every function and method of the shipped standard-library snapshot whose source is at most
{chat_data.MAX_SOURCE_CHARS} characters, whose `def` line is one line and whose docstring opens
with a plain sentence gives two conversations:

- **explain**: "What does `module.func` do?" followed by the function's source; the answer is
  the docstring's first sentence. Scored by exact match (whitespace-normalised).
- **write**: "Write a function `name(args)` that <first sentence>."; the answer is the
  function's source. Scored by contained match of the `def name(args):` line.

Split by module: held-out questions come from the files `llmlab.data.split_of` puts in "val",
the files the book model's pretraining also held out, so neither the base model nor the
fine-tune saw those functions; a held-out function whose source, or whose signature and first
sentence, also occurs in a train file (code copied between modules) is left out.
Train: {log['examples']:,} conversations (recipe sha256 `{log['recipe_sha256'][:16]}…`),
packed into {log['rows']} rows of {c['seq_len']} tokens.

## Training

Chapter 06's SFT: ChatML tokens `<|im_start|>`, `<|im_end|>` appended to the book tokenizer
(vocabulary {summary['vocab_size']}), loss on assistant tokens only, packed rows with a
block-diagonal mask. {log['steps']} AdamW steps of {c['rows_per_step']} rows
({log['rows_trained'] / log['rows']:.0%} of the packed rows, shuffled), lr {c['lr']}
({c['warmup_steps']} warmup steps, cosine to 0.1×), clip {c['clip']}, seed {c['seed']}.
Loss on assistant tokens {log['loss_first']:.2f} → {log['loss_last']:.2f} nats
(mean of the last 20 steps). Weights stored in fp16; `model.safetensors` sha256
`{summary['weights_sha256']}`.

## Held-out score (greedy, the shipped fp16 weights)

| task | held-out correct | train-split sample correct |
|---|---|---|
| explain (exact sentence) | {cell(h, 'explain')} | {cell(trn, 'explain')} |
| write (contains the `def` line) | {cell(h, 'write')} | {cell(trn, 'write')} |
| **all** | **{h['correct']} / {h['n']} = {h['rate']:.1%}** | {trn['correct']} / {trn['n']} = \
{trn['rate']:.1%} |

The held-out set is `chat_data.questions("heldout")` (the first 30 held-out questions of each
task). `tests/serve/test_book_chat.py` asks them through the `openai` client of a running
`llmlab serve --model book-chat` and checks this rate.

## Limitations

What a 1.6 M-parameter model manages here is copying and formatting: the chat format, stopping
at `<|im_end|>`, lifting a docstring's first sentence out of source it is shown, and writing the
`def` line a request names. The score does not look at the function bodies it writes, and it has
no way to know a function it is not shown. It is a teaching artefact, not an assistant.
"""
    (out / "MODEL_CARD.md").write_text(text, encoding="utf-8")


def score_folder(out: Path, summary: dict) -> dict:
    """Score the fp16 weights in ``out`` (what is shipped, read back), then write
    ``summary.json`` and ``MODEL_CARD.md``; returns the summary."""
    from llmlab.model import load_book_model

    shipped, tok = load_book_model(out)
    summary = {**summary, "heldout": evaluate(shipped, tok, chat_data.questions("heldout")),
               "train_sample": evaluate(shipped, tok, chat_data.questions("train")),
               "vocab_size": shipped.config.vocab_size,
               "weights_sha256": sha256_file(out / "model.safetensors"),
               "tokenizer_sha256": sha256_file(out / "tokenizer.json")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_card(out, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llmlab.align.book_chat", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/book-chat"),
                   help="output folder (the shipped model: llmlab/model/assets/book-chat)")
    p.add_argument("--steps", type=int, default=BookChatConfig.steps)
    p.add_argument("--threads", type=int, default=BookChatConfig.threads)
    p.add_argument("--rescore", action="store_true",
                   help="do not train: score the model already in --out again (after a change of "
                        "the held-out set) and rewrite its summary.json and card")
    args = p.parse_args(argv)
    if args.rescore:
        torch.set_num_threads(args.threads)
        summary = json.loads((args.out / "summary.json").read_text(encoding="utf-8"))
    else:
        config = BookChatConfig(steps=args.steps, threads=args.threads)
        model, tok, log = train(config)
        args.out.mkdir(parents=True, exist_ok=True)
        save_model(model, args.out, torch.float16)
        tok.save(args.out / "tokenizer.json")
        summary = {"command": COMMAND, "config": config.__dict__, "training": log,
                   "machine": platform.machine(), "torch": torch.__version__}
    summary = score_folder(args.out, summary)
    held = summary["heldout"]
    print(f"held-out: {held['correct']}/{held['n']} = {held['rate']:.1%} {held['by_task']}; "
          f"train sample {summary['train_sample']['rate']:.1%}; "
          f"training {summary['training']['wall_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
