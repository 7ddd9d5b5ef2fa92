"""The instruction set ``book-chat`` is fine-tuned on, built offline from the standard library.

Every function and method of the shipped standard-library snapshot
(:func:`llmlab.data.load_documents`) whose source is short (``MAX_SOURCE_CHARS``), whose
``def`` line fits on one line and whose docstring opens with a plain sentence gives two
conversations:

- ``explain``: "What does `json.decoder.py_scanstring` do?" followed by the function's source;
  the answer is its docstring's first sentence (exact match, whitespace-normalised). The
  source is in the question, so the skill is reading it, not recalling the library.
- ``write``: "Write a function `name(args)` that <first sentence, lower-cased>."; the answer is
  the function's source. Scored by contained match: the reply must contain the ``def`` line
  ``def name(args):``, the part a reader can check without the hidden body.

The split is by module (file), not by function: held-out questions are about functions of files
the fine-tune never saw; a held-out function whose source, or whose signature and first sentence,
also occurs in a train file (code copied between modules) is left out. The held-out files are
those :func:`llmlab.data.split_of` puts in
``"val"``, the same files the book model's pretraining held out, so the base model never read
them either. SFT is the first stage of Ouyang et al. 2022, "Training language models to follow
instructions with human feedback", arXiv:2203.02155. Used by :mod:`llmlab.align.book_chat`.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
import textwrap
from dataclasses import dataclass

from llmlab.data import Document, load_documents, split_of

MAX_SOURCE_CHARS = 500
TASKS = ("explain", "write")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)`'\"])\.(\s|$)")


@dataclass(frozen=True)
class ChatExample:
    """One question and its reference answer. ``task`` is ``"explain"`` or ``"write"``;
    ``target`` is what the score looks for (the sentence, or the ``def`` line)."""

    task: str
    module: str
    qualname: str
    messages: tuple[tuple[str, str], ...]  # (role, content), user then assistant
    target: str

    @property
    def question(self) -> str:
        return self.messages[0][1]

    @property
    def answer(self) -> str:
        return self.messages[1][1]

    def chat(self, with_answer: bool = True) -> list[dict[str, str]]:
        """The conversation as chat messages (without the reply: the prompt to answer)."""
        msgs = self.messages if with_answer else self.messages[:1]
        return [{"role": r, "content": c} for r, c in msgs]


def module_name(document_name: str) -> str:
    """``"json/decoder.py"`` -> ``"json.decoder"``; a package's ``__init__.py`` -> the package."""
    parts = document_name.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def first_sentence(docstring: str) -> str | None:
    """The docstring's first sentence, whitespace joined, or None when it has none that is a
    plain sentence of 12 to 100 characters ending in a full stop."""
    para = " ".join(docstring.strip().split("\n\n", 1)[0].split())
    match = _SENTENCE_END.search(para)
    if not match:
        return None
    sentence = para[:match.start() + 1]
    if not 12 <= len(sentence) <= 100 or not sentence[0].isupper() or ">>>" in sentence:
        return None
    return sentence


def _functions(doc: Document) -> list[tuple[str, str, str, str]]:
    """(qualname, signature text, dedented source, first sentence) of each usable function."""
    try:
        tree = ast.parse(doc.text)
    except SyntaxError:
        return []
    lines = doc.text.splitlines()
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef):
                doc_text = ast.get_docstring(child)
                source = textwrap.dedent("\n".join(lines[child.lineno - 1:child.end_lineno]))
                header = source.split("\n", 1)[0]
                sentence = first_sentence(doc_text) if doc_text else None
                if (sentence and len(source) <= MAX_SOURCE_CHARS and header.endswith(":")
                        and header.startswith(f"def {child.name}(")
                        and not child.name.startswith("__")):
                    out.append((prefix + child.name, header[4:-1], source, sentence))

    visit(tree, "")
    return out


def _lower_first(sentence: str) -> str:
    return sentence[0].lower() + sentence[1:] if not sentence[:2].isupper() else sentence


def build(split: str, seed: int = 0, documents: list[Document] | None = None
          ) -> list[ChatExample]:
    """The ``"train"`` or ``"heldout"`` examples, both tasks, shuffled with ``seed``.

    ``documents`` defaults to the shipped standard-library snapshot; the result is the same on
    every machine and Python for one seed."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    documents = documents if documents is not None else load_documents()
    want = "val" if split == "heldout" else "train"
    seen: set[str] = set()
    if split == "heldout":  # code copied between files would leak a train answer
        seen = {key for doc in documents if split_of(doc.name) == "train"
                for _, signature, source, sentence in _functions(doc)
                for key in (source, f"{signature} {sentence}")}
    examples = []
    for doc in documents:
        if split_of(doc.name) != want:
            continue
        module = module_name(doc.name)
        for qualname, signature, source, sentence in _functions(doc):
            if source in seen or f"{signature} {sentence}" in seen:
                continue
            examples.append(ChatExample(
                "explain", module, qualname,
                (("user", f"What does `{module}.{qualname}` do?\n\n{source}"),
                 ("assistant", sentence)), sentence))
            examples.append(ChatExample(
                "write", module, qualname,
                (("user", f"Write a function `{signature}` that "
                          f"{_lower_first(sentence).rstrip('.')}."),
                 ("assistant", source)), f"def {signature}:"))
    random.Random(seed).shuffle(examples)
    return examples


def questions(split: str = "heldout", n_per_task: int = 30, seed: int = 0) -> list[ChatExample]:
    """A scored set: the first ``n_per_task`` examples of each task of ``split``
    (``"heldout"``: the set the model card reports)."""
    examples = build(split, seed)
    return [e for task in TASKS for e in [x for x in examples if x.task == task][:n_per_task]]


def score(example: ChatExample, reply: str) -> bool:
    """``explain``: the reply, whitespace-normalised, equals the sentence; ``write``: the reply
    contains the ``def`` line."""
    if example.task == "explain":
        return " ".join(reply.split()) == example.target
    return example.target in reply


def recipe_sha256(examples: list[ChatExample]) -> str:
    """A hash of the examples, in order (the card records it; a test rebuilds and compares)."""
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e.task, e.module, e.qualname, e.messages]).encode())
    return h.hexdigest()
