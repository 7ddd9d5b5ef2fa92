import codecs

import pytest
import torch
import transformers.generation.logits_process as lp

from llmlab.serve import (
    IncrementalDetokenizer,
    SamplingParams,
    StopChecker,
    apply_penalties,
    filter_logits,
    next_token,
    process_logits,
    stop_holdback,
)


@pytest.fixture
def logits():
    return torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3


@pytest.mark.parity
@pytest.mark.parametrize("top_k,top_p,min_p", [(5, 1.0, 0.0), (0, 0.7, 0.0), (0, 1.0, 0.1),
                                               (10, 0.9, 0.05), (0, 0.05, 0.0)])
def test_filters_equal_transformers(logits, top_k, top_p, min_p):
    ids = torch.zeros(4, 1, dtype=torch.long)
    ref = logits.clone()
    if top_k:
        ref = lp.TopKLogitsWarper(top_k)(ids, ref)
    if top_p < 1:
        ref = lp.TopPLogitsWarper(top_p)(ids, ref)
    if min_p:
        ref = lp.MinPLogitsWarper(min_p)(ids, ref)
    got = filter_logits(logits, top_k, top_p, min_p)
    assert torch.equal(torch.isinf(got), torch.isinf(ref))
    torch.testing.assert_close(got[~torch.isinf(got)], ref[~torch.isinf(ref)])


@pytest.mark.parity
def test_penalties_and_temperature_equal_transformers(logits):
    prompt, output = [1, 2, 3], [3, 7, 7, 9]
    params = SamplingParams(temperature=0.7, repetition_penalty=1.3, logit_bias={5: 2.0, 6: -1.5})
    ids = torch.tensor([prompt + output])
    ref = lp.SequenceBiasLogitsProcessor({(5,): 2.0, (6,): -1.5})(ids, logits[:1].clone())
    ref = lp.RepetitionPenaltyLogitsProcessor(1.3)(ids, ref)
    ref = lp.TemperatureLogitsWarper(0.7)(ids, ref)
    torch.testing.assert_close(process_logits(logits[0], params, prompt, output), ref[0])


def test_presence_and_frequency_penalties_follow_openai():
    logits = torch.zeros(6)
    p = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25)
    out = apply_penalties(logits, [4], [1, 1, 2], p)  # the prompt is not penalized (OpenAI)
    assert out.tolist() == [0, -1.0, -0.75, 0, 0, 0]


def test_greedy_and_seeded_sampling(book):
    model, tok = book
    x = torch.randn(100)
    p = SamplingParams(temperature=0)
    assert int(process_logits(x, p, [], []).argmax()) == int(x.argmax())
    p = SamplingParams(temperature=1.0, top_p=0.9)
    a = [int(next_token(process_logits(x, p, [], []), p, torch.Generator().manual_seed(3)))
         for _ in range(3)]
    assert len(set(a)) == 1  # the same seed draws the same token
    rows = process_logits(torch.stack([x, x]), p)  # a batch: one draw per row, same stream
    assert next_token(rows, p, torch.Generator().manual_seed(3)).shape == (2,)


def test_top_p_keeps_the_best_token():
    x = torch.tensor([[5.0, 0.0, 0.0]])  # p(best) > 0.9: top-p 0.01 keeps it alone
    assert torch.isinf(filter_logits(x, top_p=0.01)[0, 1:]).all()
    assert torch.isfinite(filter_logits(x, top_p=0.01)[0, 0])


@pytest.mark.parametrize("field,value", [("temperature", -1), ("top_p", 0), ("min_p", 2),
                                         ("max_new_tokens", 0), ("top_k", -1),
                                         ("presence_penalty", 3), ("logprobs", 50),
                                         ("stop", ["a"] * 5)])
def test_bad_params_name_the_field(field, value):
    with pytest.raises(ValueError) as err:
        SamplingParams(**{field: value})
    assert err.value.args[1] == field and field in err.value.args[0]


def test_token_ids_are_checked_against_the_vocabulary():
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        SamplingParams(logit_bias={12: 1.0}).validate(10)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        SamplingParams(eos_token_id=10).validate(10)


def test_detokenizer_never_emits_broken_utf8(book):
    _, tok = book
    text = "naïve café — 日本語 🙂 done"
    ids = tok.encode(text)
    detok, pieces = IncrementalDetokenizer(tok), []
    for t in ids:
        pieces.append(detok.push(t))
        assert "\ufffd" not in pieces[-1]
    pieces.append(detok.flush())
    assert "".join(pieces) == text
    assert any(len(tok.decode([t]).encode()) != len(tok.vocab[t]) for t in ids)  # splits exist
    # a truncated character at the end is flushed as one replacement character
    detok = IncrementalDetokenizer(tok)
    bad = [tok.token_to_id[bytes([b])] for b in "é".encode()[:1]]
    assert detok.push(bad[0]) == "" and detok.flush() == "\ufffd"
    assert codecs.decode("é".encode()[:1], errors="replace") == "\ufffd"


def test_stop_string_across_token_boundaries():
    chk = StopChecker(["\n\n", "END"])
    out = [chk.push(d) for d in ["a", "b\n", "\nc"]]
    assert out == [("a", False), ("b", False), ("", True)]
    chk = StopChecker(["END"])
    assert chk.push("xE") == ("x", False)
    assert chk.push("N") == ("", False)
    assert chk.push("Dzz") == ("", True)
    chk = StopChecker(["END"])
    assert chk.push("xEN") == ("x", False) and chk.push("o") == ("ENo", False)
    assert chk.push("EN") == ("", False) and chk.flush() == "EN"
    assert stop_holdback("abcab", ["abd", "bca"]) == 2
