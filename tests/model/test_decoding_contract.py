"""One decoding contract: every path that picks tokens goes through ``llmlab.model.sampling``.

Read from the source, so a second copy of a sampling filter or a draw fails here even before a
behaviour test would notice it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llmlab

PACKAGE = Path(llmlab.__file__).parent
PIPELINE = PACKAGE / "model" / "sampling.py"
# The decoding paths: each must take its SamplingParams from the pipeline's module.
DECODERS = ["model/generate.py", "kvcache/generate.py", "serve/engine.py", "serve/speculative.py",
            "align/rollout.py", "peft/prefix_tuning.py"]


def _library_files() -> list[Path]:
    return [f for f in PACKAGE.rglob("*.py") if "grading" not in f.relative_to(PACKAGE).parts]


def _trees():
    return [(f, ast.parse(f.read_text())) for f in _library_files()]


# Draws that are not decoding: they pick items, not tokens.
NOT_DECODING = {"curate/semdedup.py": "k-means++ seeding draws centroids"}


def test_only_the_pipeline_draws_or_filters():
    offenders = []
    for f, tree in _trees():
        if f == PIPELINE:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr == "multinomial"
                    and str(f.relative_to(PACKAGE)) not in NOT_DECODING):
                offenders.append(f"{f.relative_to(PACKAGE)}:{node.lineno} calls multinomial")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = {a.arg for a in node.args.args + node.args.kwonlyargs}
                if args & {"top_k", "top_p", "min_p"}:
                    offenders.append(f"{f.relative_to(PACKAGE)}:{node.lineno} {node.name} takes "
                                     f"sampling arguments of its own")
            if isinstance(node, ast.ClassDef) and node.name == "SamplingParams":
                offenders.append(f"{f.relative_to(PACKAGE)}:{node.lineno} defines SamplingParams")
    assert not offenders, "decoding outside llmlab.model.sampling:\n" + "\n".join(offenders)


@pytest.mark.parametrize("path", DECODERS)
def test_decoding_paths_use_the_one_contract(path):
    tree = ast.parse((PACKAGE / path).read_text())
    imported = {(node.module, alias.name) for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    from_pipeline = {name for module, name in imported
                     if module in ("llmlab.model.sampling", "llmlab.model")}
    assert from_pipeline & {"SamplingParams", "process_logits", "next_token"}, (
        f"{path} must choose tokens with llmlab.model.sampling")
