"""lm-evaluation-harness on the book's model, exported to Hugging Face with ``to_hf``, gives the
same acc, acc_norm and bits per byte as ``llmlab.evaluate``, on task YAMLs kept in this
repository (``lm_eval_tasks/``), offline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

TASKS = Path(__file__).with_name("lm_eval_tasks")
pytestmark = pytest.mark.parity


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    """(lm-eval results for both tasks, the book model, its tokenizer)."""
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("hf")
    for var, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                       "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(home),
                       "HF_DATASETS_CACHE": str(home / "datasets")}.items():
        mp.setenv(var, value)
    pytest.importorskip("lm_eval")
    transformers = pytest.importorskip("transformers")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from llmlab.model import load_book_model, to_hf
    from llmlab.tokenizer import to_hf as tokenizer_to_hf

    model, tok = load_book_model()
    sd, cfg = to_hf(model)
    hf_model = transformers.LlamaForCausalLM(cfg).eval()
    hf_model.load_state_dict(sd, strict=False)
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer_to_hf(tok),
                                                  eos_token="<|endoftext|>")
    lm = HFLM(pretrained=hf_model, tokenizer=hf_tok, batch_size=8, max_length=512)
    mp.chdir(TASKS)  # the YAMLs name their data files relative to this folder
    try:
        out = simple_evaluate(model=lm, tasks=["llmlab_return_mc", "llmlab_code_bpb"],
                              task_manager=TaskManager(include_path=str(TASKS)), num_fewshot=0,
                              bootstrap_iters=0)
    finally:
        mp.undo()
    return out["results"], model, tok


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (TASKS / name).read_text().splitlines()]


def test_multiple_choice_acc_and_acc_norm(harness):
    from llmlab.evaluate import MCItem, evaluate_mc

    results, model, tok = harness
    items = [MCItem(d["query"], tuple(d["choices"]), d["gold"])
             for d in _jsonl("llmlab_return_mc.jsonl")]
    ours = evaluate_mc(model, tok, items)
    theirs = results["llmlab_return_mc"]
    assert ours.mean_acc == pytest.approx(theirs["acc,none"], abs=1e-9)
    assert ours.mean_acc_norm == pytest.approx(theirs["acc_norm,none"], abs=1e-9)
    assert ours.mean_acc != ours.mean_acc_norm  # the two metrics differ on this task


def test_rolling_bits_per_byte_and_perplexities(harness):
    from llmlab.evaluate import corpus_likelihood

    results, model, tok = harness
    ours = corpus_likelihood(model, tok, [d["text"] for d in _jsonl("llmlab_code_bpb.jsonl")])
    theirs = results["llmlab_code_bpb"]
    assert ours.n_tokens > 512  # longer than the window: the rolling windows are exercised
    assert ours.bits_per_byte == pytest.approx(theirs["bits_per_byte,none"], rel=1e-5)
    assert ours.byte_perplexity == pytest.approx(theirs["byte_perplexity,none"], rel=1e-5)
    assert ours.word_perplexity == pytest.approx(theirs["word_perplexity,none"], rel=1e-4)
    assert math.isfinite(ours.token_perplexity)
