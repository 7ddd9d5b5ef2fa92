"""book-chat: its data recipe (deterministic, split by module), its shipped weights (the
checksum its card records) and the loader's refusal of a damaged asset."""

import hashlib
import json
import shutil

import pytest
import torch

from llmlab.align import chat_data
from llmlab.data import Document, load_documents, split_of
from llmlab.model import BOOK_CHAT_MODEL_DIR, load, load_book_chat_model
from llmlab.model.book import BOOK_MODEL_DIR

SUMMARY = json.loads((BOOK_CHAT_MODEL_DIR / "summary.json").read_text())


@pytest.fixture(scope="module")
def train_set():
    return chat_data.build("train")


def test_recipe_is_deterministic_and_is_the_one_trained_on(train_set):
    again = chat_data.build("train")
    assert again == train_set
    assert chat_data.recipe_sha256(train_set) == SUMMARY["training"]["recipe_sha256"]
    other = chat_data.build("train", seed=1)
    assert sorted(map(chat_data.recipe_sha256, [[e] for e in other])) == sorted(
        map(chat_data.recipe_sha256, [[e] for e in train_set]))  # the same examples
    assert other != train_set  # in another order


def test_train_and_heldout_are_split_by_module(train_set):
    heldout = chat_data.build("heldout")
    assert len(heldout) >= 100 and len(train_set) > 10 * len(heldout)
    train_modules = {e.module for e in train_set}
    held_modules = {e.module for e in heldout}
    assert not train_modules & held_modules
    assert not {(e.module, e.qualname) for e in train_set} & {(e.module, e.qualname) for e in heldout}
    # the held-out files are the ones the book model's pretraining held out too
    val_modules = {chat_data.module_name(d.name) for d in load_documents()
                   if split_of(d.name) == "val"}
    assert held_modules <= val_modules
    questions = chat_data.questions("heldout")
    assert [e.task for e in questions] == ["explain"] * 30 + ["write"] * 30
    assert not {e.question for e in questions} & {e.question for e in train_set}
    assert not {e.answer for e in heldout if e.task == "write"} & {e.answer for e in train_set}


def test_examples_are_what_the_recipe_says():
    text = ('class C:\n    def add(self, a, b=1):\n        """Add two numbers.\n\n        More.\n'
            '        """\n        return a + b\n\n'
            'def f():\n    """no capital."""\n\n'
            'def g(x):\n    """Return x\n    unchanged.  Then more."""\n    return x\n')
    name = next(n for n in ("zz_mod.py", "zz_other.py", "zz_third.py") if split_of(n) == "train")
    examples = chat_data.build("train", documents=[Document(name, text)])
    by = {(e.task, e.qualname): e for e in examples}
    assert set(by) == {("explain", "C.add"), ("write", "C.add"), ("explain", "g"), ("write", "g")}
    explain, write = by[("explain", "C.add")], by[("write", "C.add")]
    module = name.removesuffix(".py")
    assert explain.question.startswith(f"What does `{module}.C.add` do?\n\ndef add(self, a, b=1):")
    assert explain.answer == "Add two numbers."
    assert by[("explain", "g")].answer == "Return x unchanged."
    assert write.question == "Write a function `add(self, a, b=1)` that add two numbers."
    assert write.answer.startswith("def add(self, a, b=1):\n    \"\"\"Add")  # dedented source
    assert chat_data.score(explain, "  Add two\nnumbers. ") and not chat_data.score(explain, "Add.")
    assert chat_data.score(write, "def add(self, a, b=1):\n    pass")
    assert not chat_data.score(write, "def add(self, a):")
    with pytest.raises(ValueError, match="'train' or 'heldout'"):
        chat_data.build("val")


def test_shipped_weights_match_the_card_and_load():
    weights = BOOK_CHAT_MODEL_DIR / "model.safetensors"

    assert hashlib.sha256(weights.read_bytes()).hexdigest() == SUMMARY["weights_sha256"]
    assert SUMMARY["weights_sha256"] in (BOOK_CHAT_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert weights.stat().st_size < 4_000_000  # fp16: half the book model's fp32 file
    model, tok = load("book-chat", device="cpu")
    base, _ = load("book", device="cpu")
    assert model.config.vocab_size == base.config.vocab_size + 2
    assert {"<|im_start|>", "<|im_end|>"} <= set(tok.special_ids)
    tuned, plain = model.state_dict(), base.state_dict()
    assert tuned.keys() == plain.keys()
    changed = [k for k in plain if "emb" not in k and "lm_head" not in k
               and not torch.allclose(tuned[k], plain[k], atol=1e-3)]
    assert len(changed) > len(plain) // 2  # fine-tuned, not the base model


def test_a_damaged_asset_is_refused(tmp_path):
    shutil.copytree(BOOK_CHAT_MODEL_DIR, tmp_path / "m")
    data = bytearray((tmp_path / "m" / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "m" / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_book_chat_model(tmp_path / "m")
    with pytest.raises(ValueError, match="weights_sha256"):
        load_book_chat_model(BOOK_MODEL_DIR)  # the base model's summary has no checksum
    with pytest.raises(FileNotFoundError, match="book_chat"):
        load_book_chat_model(tmp_path)
