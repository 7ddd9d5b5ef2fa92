"""The book's evaluation suite, built offline from the corpus the book's model was trained on.

- **return-mc** (multiple choice): a Python function up to its final ``return`` keyword — its
  signature, docstring and body — and four candidate return expressions: its own and three taken
  from other functions. ``heldout`` items come from files in the corpus's validation split (the
  book's model never trained on them), ``train`` items from training files (few-shot examples,
  fine-tuning data, and the "seen" side of the contamination study).
- **functions** (membership): whole functions with docstrings from training files (``members``)
  and from validation files (``nonmembers``), for Min-K% probability.
- **heldout_overlap** (contamination): for each held-out item, the fraction of its word 13-grams
  found anywhere in the training data (the same code can live in two files).
- **domains** (likelihood): held-out Python code, the English prose of held-out docstrings, and
  Chinese prose (chapter 01's sample: a language the model never saw).

The suite is a *snapshot*: ``python -m llmlab.evaluate.tasks --build`` extracts it from the corpus
(``llmlab.data``) and writes ``data/suite.json.gz`` with the corpus's manifest, so every Python
version evaluates the same items (the standard library differs between versions).
Taught in chapter 11 (solutions/11_eval).
"""

from __future__ import annotations

import argparse
import ast
import functools
import gzip
import json
import random
import textwrap
from collections.abc import Sequence
from pathlib import Path

from llmlab.evaluate.multiple_choice import MCItem

SUITE_PATH = Path(__file__).with_name("data") / "suite.json.gz"


def _functions(text: str) -> list[ast.FunctionDef]:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return []
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and ast.get_docstring(n)]


def function_source(lines: list[str], node: ast.FunctionDef) -> str:
    """The function's text from its ``def`` line (decorators left out), dedented."""
    return textwrap.dedent("\n".join(lines[node.lineno - 1:node.end_lineno]))


def return_item_parts(text: str, max_query_chars: int = 600,
                      max_choice_chars: int = 60) -> list[tuple[str, str]]:
    """(query up to and including ``return``, the returned expression) for every function of
    ``text`` with a docstring whose last statement is a one-line ``return <expr>``."""
    lines = text.splitlines()
    out = []
    for node in _functions(text):
        last = node.body[-1]
        if not isinstance(last, ast.Return) or last.value is None or last.lineno != last.end_lineno:
            continue
        line = lines[last.lineno - 1]
        before, _, expr = line.partition("return ")
        if before.strip() or not expr.strip() or len(expr) > max_choice_chars or "#" in expr:
            continue
        head = "\n".join(lines[node.lineno - 1:last.lineno - 1] + [before + "return"])
        query = textwrap.dedent(head + " x").removesuffix(" x")  # dedent sees the return line too
        if len(query) <= max_query_chars:
            out.append((query, expr.rstrip()))
    return out


def return_items(texts: Sequence[str], n_choices: int = 4, seed: int = 0,
                 limit: int | None = None) -> list[MCItem]:
    """Multiple-choice items: each function's own return expression among ``n_choices - 1``
    distinct ones drawn from the other functions of ``texts`` (seeded; gold position random)."""
    parts = [p for t in texts for p in return_item_parts(t)]
    rng = random.Random(seed)
    rng.shuffle(parts)
    pool = sorted({e for _, e in parts})
    items = []
    for query, expr in parts[:limit]:
        others = [e for e in rng.sample(pool, min(len(pool), 4 * n_choices)) if e != expr]
        if len(others) < n_choices - 1:
            continue
        choices = others[:n_choices - 1]
        gold = rng.randrange(n_choices)
        choices.insert(gold, expr)
        items.append(MCItem(query, tuple(choices), gold))
    return items


def function_texts(texts: Sequence[str], min_chars: int = 200, max_chars: int = 1200) -> list[str]:
    """Whole functions with docstrings, between ``min_chars`` and ``max_chars`` long."""
    out = []
    for text in texts:
        lines = text.splitlines()
        for node in _functions(text):
            src = function_source(lines, node)
            if min_chars <= len(src) <= max_chars:
                out.append(src)
    return out


def docstring_text(texts: Sequence[str], max_chars: int) -> str:
    """The docstrings of ``texts``' functions, joined by blank lines, up to ``max_chars``."""
    out, total = [], 0
    for text in texts:
        for node in _functions(text):
            doc = ast.get_docstring(node)
            if total + len(doc) > max_chars:
                return "\n\n".join(out)
            out.append(doc)
            total += len(doc) + 2
    return "\n\n".join(out)


def build_suite(seed: int = 0) -> dict:
    """Extract the suite from the corpus the book's model was trained on (see the module doc)."""
    from llmlab.data import corpus_manifest, load_documents, package_documents
    from llmlab.tokenizer.samples import chinese_text

    train = load_documents(split="train")
    val = load_documents(split="val") + package_documents("torch", split="val")
    rng = random.Random(seed)
    heldout = return_items([d.text for d in val], seed=seed)
    seen = return_items([d.text for d in train], seed=seed + 1, limit=400)
    members = function_texts([d.text for d in train])
    nonmembers = function_texts([d.text for d in val])
    n = min(len(members), len(nonmembers), 150)
    from llmlab.evaluate.contamination import corpus_overlap

    heldout = heldout[:300]
    overlap = corpus_overlap([i.query + " " + i.choices[i.gold] for i in heldout],
                             (d.text for d in train + package_documents("torch", split="train")))
    val_code = [d.text for d in val[:40] if 2_000 <= len(d.text) <= 40_000][:12]
    return {
        "built_by": "python -m llmlab.evaluate.tasks --build",
        "corpus": {"train": corpus_manifest(train), "val": corpus_manifest(val, ("torch",))},
        "return_mc": {"heldout": [_item_dict(i) for i in heldout],
                      "train": [_item_dict(i) for i in seen]},
        "heldout_overlap": overlap,  # 13-gram overlap of each held-out item with the training data
        "functions": {"members": rng.sample(members, n), "nonmembers": rng.sample(nonmembers, n)},
        "domains": {"python code": val_code,
                    "English docstrings": [docstring_text([d.text for d in val], 60_000)],
                    "Chinese prose": [chinese_text()]},
    }


def _item_dict(item: MCItem) -> dict:
    return {"query": item.query, "choices": list(item.choices), "gold": item.gold}


@functools.lru_cache(maxsize=2)
def _load(path: str) -> dict:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def load_suite(path: str | Path = SUITE_PATH) -> dict:
    """The shipped suite: ``return_mc`` (heldout/train lists of :class:`MCItem`), ``functions``
    (members/nonmembers), ``domains`` (name -> texts) and the ``corpus`` manifest."""
    data = _load(str(path))
    mc = {split: [MCItem(d["query"], tuple(d["choices"]), d["gold"]) for d in items]
          for split, items in data["return_mc"].items()}
    return {**data, "return_mc": mc}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", action="store_true", help="extract the suite from the corpus")
    parser.add_argument("--out", default=str(SUITE_PATH))
    args = parser.parse_args(argv)
    if not args.build:
        parser.print_help()
        return 2
    suite = build_suite()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(args.out, "wb", mtime=0) as f:  # mtime 0: the same bytes every build
        f.write(json.dumps(suite, ensure_ascii=False, sort_keys=True).encode("utf-8"))
    print(f"wrote {args.out}: {len(suite['return_mc']['heldout'])} held-out items, "
          f"{len(suite['return_mc']['train'])} train items, "
          f"{len(suite['functions']['members'])} member functions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["SUITE_PATH", "build_suite", "docstring_text", "function_source", "function_texts", "load_suite",
           "return_item_parts", "return_items"]
