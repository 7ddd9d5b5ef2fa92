"""Retrieval-augmented completion, measured: does the model write the code better with context?

Lewis et al., "Retrieval-Augmented Generation for Knowledge-Intensive NLP Tasks",
arXiv:2005.11401, for the idea; for code, RepoCoder (Zhang et al., arXiv:2303.12570) and
"Repository-Level Prompt Generation for LLMs of Code" (Shrivastava et al., arXiv:2206.12839):
the model completes a function of a file it has never seen, with snippets of the *same file*
retrieved and pasted above the function. A task is a held-out function's header and docstring
(the prefix) and the first lines of its body (the target). The measurements:

- ``target_loss``: mean next-token loss (nats) of the target given context + prefix;
- ``exact_first_line``: whether greedy decoding reproduces the body's first line exactly.

RepoCoder's *oracle* retrieves with the ground-truth code as the query: an upper bound for the
retriever. Distractors (chunks of unrelated files) show what irrelevant context costs.
Taught in chapter 12 (solutions/12_rag_agents).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmlab.data import Document
from llmlab.rag.corpus import CodePair
from llmlab.rag.generate import complete


@dataclass(frozen=True)
class CompletionTask:
    """Complete ``target`` after ``prefix``; ``pair`` is the function, ``doc`` its file."""

    prefix: str
    target: str
    pair: CodePair


def completion_tasks(docs: Sequence[Document], pairs: Sequence[CodePair],
                     target_lines: int = 2) -> list[CompletionTask]:
    """A task per pair whose body has ``target_lines`` non-blank lines: prefix = header and
    docstring, target = those lines (each with its newline)."""
    if target_lines < 1:
        raise ValueError(f"target_lines must be >= 1, got {target_lines}")
    by_name = {d.name: d for d in docs}
    out = []
    for p in pairs:
        text = by_name[p.doc].text
        lines = [ln for ln in text[p.body:p.end].split("\n") if ln.strip()][:target_lines]
        if len(lines) == target_lines:
            out.append(CompletionTask(text[p.start:p.body], "".join(ln + "\n" for ln in lines), p))
    return out


def rag_prompt(context: Sequence[str], prefix: str) -> str:
    """Retrieved snippets, each under a ``# context`` comment, then the prefix to complete."""
    return "".join(f"# context\n{c.strip()}\n\n" for c in context) + prefix


def _ids(tokenizer, prompt: str, target: str, max_len: int) -> tuple[list[int], int]:
    """Prompt ids cut from the left so prompt + target fit ``max_len``; and the target's length."""
    p, t = tokenizer.encode(prompt), tokenizer.encode(target)
    if len(t) >= max_len:
        raise ValueError(f"the target alone has {len(t)} tokens >= the context {max_len}")
    p = p[-(max_len - len(t)):]
    return p + t, len(t)


@torch.no_grad()
def target_loss(model: nn.Module, tokenizer, prompt: str, target: str) -> float:
    """Mean loss (nats/token) of ``target``'s tokens after ``prompt`` (cut from the left to fit
    the model's context)."""
    ids, n = _ids(tokenizer, prompt, target, model.config.block_size)
    x = torch.tensor([ids], device=next(model.parameters()).device)
    logits = model(x)[0, -n - 1:-1]  # the predictions of the target's tokens
    return float(F.cross_entropy(logits.float(), x[0, -n:]))


def exact_first_line(model: nn.Module, tokenizer, prompts: Sequence[str],
                     targets: Sequence[str]) -> list[bool]:
    """Whether greedy decoding after each prompt writes the target's first line exactly."""
    lines = [t.split("\n")[0] for t in targets]
    budget = model.config.block_size - 48
    ids = [tokenizer.encode(p)[-budget:] for p in prompts]
    outs = complete(model, tokenizer, ids, max_tokens=40, stop=("\n",))
    return [o.rstrip() == line.rstrip() for o, line in zip(outs, lines)]


__all__ = ["CompletionTask", "completion_tasks", "exact_first_line", "rag_prompt", "target_loss"]
