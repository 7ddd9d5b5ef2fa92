"""Every configuration dataclass rejects an unknown key by name, through the one public helper
``llmlab.utils.reject_unknown_keys``."""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path

import pytest

import llmlab
from llmlab.utils import reject_unknown_keys

PACKAGE = Path(llmlab.__file__).parent
# Configurations: what a user builds with keyword knobs. Every ``*Config`` dataclass is one.
CONFIGS = {"SamplingParams", "KVSpec", "RopeScaling", "ModelShape", "Hardware", "Plan", "Preset"}


def _config_classes() -> list[tuple[str, str]]:
    found = []
    for f in PACKAGE.rglob("*.py"):
        module = ".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.ClassDef) and (node.name.endswith("Config")
                                                   or node.name in CONFIGS):
                found.append((module, node.name))
    return sorted(found)


def test_every_listed_config_exists():
    assert CONFIGS <= {name for _, name in _config_classes()}


@pytest.mark.parametrize("module,name", _config_classes())
def test_config_rejects_unknown_keys(module, name):
    cls = getattr(importlib.import_module(module), name)
    assert dataclasses.is_dataclass(cls), f"{module}.{name} is not a dataclass"
    assert getattr(cls, "__rejects_unknown_keys__", False), (
        f"{module}.{name} must be decorated with llmlab.utils.reject_unknown_keys")
    with pytest.raises(ValueError, match="not_a_knob") as err:
        cls(not_a_knob=1)
    assert err.value.args[1] == "not_a_knob"


def test_replace_is_checked_too():
    from llmlab.model import GPTConfig, SamplingParams

    with pytest.raises(ValueError, match="n_layers"):
        dataclasses.replace(GPTConfig(), n_layers=3)
    with pytest.raises(ValueError, match="max_tokens"):
        dataclasses.replace(SamplingParams(), max_tokens=3)


def test_only_dataclasses():
    with pytest.raises(ValueError, match="dataclass"):
        reject_unknown_keys(int)
