"""SFT and the shared helpers: CS336 semantics, packing without cross-document attention, and
loss masking equal to trl's SFT data collator and SFTTrainer loss."""

from __future__ import annotations

import copy

import pytest
import torch
import trl
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
from trl.trainer.utils import entropy_from_logits, selective_log_softmax

from llmlab.align import (
    IGNORE_INDEX,
    add_chat_tokens,
    compute_entropy,
    masked_mean,
    masked_normalize,
    masked_whiten,
    pack_examples,
    packed_context,
    packed_sft_loss,
    sft_example,
    sft_loss,
    token_log_probs,
    tokenize_prompt_and_output,
)

CONVS = [
    [{"role": "user", "content": "Sort a list."}, {"role": "assistant", "content": "sorted(xs)"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Length?"},
     {"role": "assistant", "content": "len(x)"}, {"role": "user", "content": "Max?"},
     {"role": "assistant", "content": "max(x)"}],
    [{"role": "user", "content": "Sum."}, {"role": "assistant", "content": "return sum(v)"}],
]


@pytest.fixture(scope="module")
def chat(book):
    model, tok = add_chat_tokens(copy.deepcopy(book[0]), book[1])
    return model.eval(), tok


def test_tokenize_prompt_and_output_cs336_semantics(book):
    tok = book[1]
    out = tokenize_prompt_and_output(["def f(x):", "x ="], [" return x", " 1"], tok, pad_id=0)
    for i, (p, o) in enumerate([("def f(x):", " return x"), ("x =", " 1")]):
        full = tok.encode(p) + tok.encode(o)
        n = len(full) - 1
        assert out["input_ids"][i, :n].tolist() == full[:-1]
        assert out["labels"][i, :n].tolist() == full[1:]
        resp = out["response_mask"][i]
        assert resp.sum() == len(tok.encode(o))  # exactly the output's tokens are labels in the mask
        assert out["labels"][i][resp].tolist() == tok.encode(o)
        assert not resp[n:].any()


@pytest.mark.parity
def test_log_probs_and_entropy_match_trl():
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 7, 50) * 3, torch.randint(0, 50, (3, 7))
    torch.testing.assert_close(token_log_probs(logits, labels), selective_log_softmax(logits, labels))
    torch.testing.assert_close(compute_entropy(logits), entropy_from_logits(logits))
    assert token_log_probs(logits, labels.masked_fill(labels > 25, -100))[labels > 25].abs().sum() == 0


def test_masked_reductions():
    torch.manual_seed(0)
    x, m = torch.randn(4, 6), torch.rand(4, 6) > 0.4
    assert torch.allclose(masked_normalize(x, m, 2.0), x[m].sum() / 2.0)
    torch.testing.assert_close(masked_normalize(x, m, 1.0, dim=1), (x * m).sum(1))
    torch.testing.assert_close(masked_mean(x, m), x[m].mean())
    w = masked_whiten(x, m)
    assert abs(float(w[m].mean())) < 1e-5 and abs(float(w[m].std()) - 1) < 1e-4
    torch.testing.assert_close(masked_whiten(x, m, shift_mean=False)[m].mean(), x[m].mean())
    with pytest.raises(ValueError, match="must match"):
        masked_normalize(x, m[:, :3])


def test_assistant_only_labels(chat):
    _, tok = chat
    ids, labels = sft_example(tok, CONVS[1])
    assert len(ids) == len(labels) and labels[-1] == IGNORE_INDEX
    trained = tok.decode([t for t in labels if t != IGNORE_INDEX])
    assert trained == "len(x)<|im_end|>max(x)<|im_end|>"  # replies and their stop token only
    for t, lab in enumerate(labels[:-1]):
        assert lab in (IGNORE_INDEX, ids[t + 1])


def test_packing_has_no_cross_document_attention(chat):
    model, tok = chat
    examples = [sft_example(tok, c) for c in CONVS]
    seq_len = sum(len(ids) for ids, _ in examples) + 3
    batch = pack_examples(examples, seq_len, pad_id=0)
    assert batch.ids.shape == (1, seq_len)
    with torch.no_grad():
        packed = model(batch.ids, packed_context(batch))
        leaky = model(batch.ids)  # plain causal attention over the whole row
        at = 0
        for ids, _ in examples:
            alone = model(torch.tensor([ids]))
            torch.testing.assert_close(packed[0, at:at + len(ids)], alone[0], atol=1e-4, rtol=1e-4)
            if at:  # a later document sees the earlier ones without the mask
                assert (leaky[0, at:at + len(ids)] - alone[0]).abs().max() > 1e-2
            at += len(ids)
    # the packed loss is the token-weighted mean of the per-document losses
    with torch.no_grad():
        per_doc = [(sft_loss(model(torch.tensor([i])), torch.tensor([lab])), sum(x != -100 for x in lab))
                   for i, lab in examples]
        want = sum(loss * n for loss, n in per_doc) / sum(n for _, n in per_doc)
        torch.testing.assert_close(packed_sft_loss(model, batch), want, atol=1e-5, rtol=1e-5)


def test_pack_rows_and_errors():
    ex = [([1] * 5, [2] * 5), ([3] * 4, [4] * 4), ([5] * 3, [6] * 3)]
    b = pack_examples(ex, 8, pad_id=0)
    assert b.doc_ids.tolist() == [[0, 0, 0, 0, 0, 2, 2, 2], [1, 1, 1, 1, -1, -1, -1, -1]]
    assert b.positions[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert b.labels[1, 4:].tolist() == [IGNORE_INDEX] * 4
    with pytest.raises(ValueError, match="seq_len"):
        pack_examples([([1] * 9, [1] * 9)], 8, 0)


@pytest.mark.parity
def test_packing_matches_trl_padding_free_collator(chat):
    _, tok = chat
    examples = [sft_example(tok, c) for c in CONVS]
    # trl's labels are unshifted (the model shifts): the token itself where it is trained
    trl_examples = []
    for c in CONVS:
        from llmlab.tokenizer import apply_chat_template

        enc = apply_chat_template(tok, c)
        trl_examples.append({"input_ids": enc.ids,
                             "labels": [i if m else -100 for i, m in zip(enc.ids, enc.assistant_mask)]})
    got = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(trl_examples)
    n = got["input_ids"].shape[1]
    ours = pack_examples(examples, n, pad_id=0)
    assert torch.equal(ours.ids, got["input_ids"])
    assert torch.equal(ours.positions, got["position_ids"])
    # our labels[t] is trl's labels[t + 1] inside a document; trl masks each document's first token
    shifted = torch.cat([got["labels"][:, 1:], torch.full((1, 1), -100)], 1)
    shifted[ours.positions.roll(-1, 1) == 0] = -100  # the last token of a document predicts nothing
    assert torch.equal(ours.labels, shifted)


@pytest.mark.parity
def test_sft_loss_matches_sfttrainer(hf_model, hf_tok, tmp_path):
    from datasets import Dataset

    ds = Dataset.from_dict({"prompt": ["def f(x):"] * 2, "completion": [" return x"] * 2})
    args = trl.SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, save_strategy="no")
    trainer = trl.SFTTrainer(model=hf_model, args=args, train_dataset=ds, processing_class=hf_tok)
    torch.manual_seed(1)
    ids = torch.randint(0, len(hf_tok) - 1, (3, 9))
    labels = ids.masked_fill(torch.rand(3, 9) < 0.5, -100)  # trl convention: unshifted
    hf_model.eval()
    want = trainer.compute_loss(hf_model, {"input_ids": ids, "labels": labels,
                                           "attention_mask": torch.ones_like(ids)})
    with torch.no_grad():
        logits = hf_model(ids).logits
    got = sft_loss(logits[:, :-1], labels[:, 1:])
    torch.testing.assert_close(got, want.detach(), atol=1e-5, rtol=1e-5)
