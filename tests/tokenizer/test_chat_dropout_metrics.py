"""Chat templates (parity with transformers' assistant masks), BPE-dropout, metrics."""

from __future__ import annotations

import random

import pytest

from llmlab.tokenizer import (
    CHATML_SPECIAL_TOKENS,
    Tokenizer,
    apply_chat_template,
    bytes_per_token,
    encode_with_dropout,
    fertility,
    to_hf,
    train_bpe,
    vocab_utilization,
)
from llmlab.tokenizer.chat import render_chatml
from tests.tokenizer.conftest import DIVERSE

CHATML_JINJA = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 12 + 30?"},
    {"role": "assistant", "content": "12 + 30 = 42."},
    {"role": "user", "content": "用中文说一遍。"},
    {"role": "assistant", "content": "十二加三十等于四十二。 👍"},
]


@pytest.fixture(scope="module")
def chat_tok(corpus) -> Tokenizer:
    vocab, merges = train_bpe(corpus, 700, CHATML_SPECIAL_TOKENS)
    return Tokenizer(vocab, merges, CHATML_SPECIAL_TOKENS)


def test_chatml_render_and_mask(chat_tok):
    enc = apply_chat_template(chat_tok, MESSAGES)
    assert enc.text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert len(enc.ids) == len(enc.assistant_mask) and enc.ids == chat_tok.encode(enc.text)
    trained = chat_tok.decode([i for i, m in zip(enc.ids, enc.assistant_mask) if m])
    assert trained == "12 + 30 = 42.<|im_end|>十二加三十等于四十二。 👍<|im_end|>"
    prompt = apply_chat_template(chat_tok, MESSAGES[:2], add_generation_prompt=True)
    assert prompt.text.endswith("<|im_start|>assistant\n") and not any(prompt.assistant_mask)


@pytest.mark.parity
def test_chat_template_parity_with_transformers(chat_tok):
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=to_hf(chat_tok))
    hf.chat_template = CHATML_JINJA
    for messages, gen in [(MESSAGES, False), (MESSAGES[:4], True), (MESSAGES[2:], False)]:
        ref = hf.apply_chat_template(messages, add_generation_prompt=gen, tokenize=True,
                                     return_dict=True, return_assistant_tokens_mask=True)
        ours = apply_chat_template(chat_tok, messages, add_generation_prompt=gen)
        assert ours.text == hf.apply_chat_template(messages, add_generation_prompt=gen,
                                                   tokenize=False)
        assert ours.ids == ref["input_ids"]
        assert ours.assistant_mask == ref["assistant_masks"]


def test_chat_bad_input(chat_tok, corpus):
    with pytest.raises(ValueError, match="unknown role"):
        render_chatml([{"role": "robot", "content": "hi"}])
    with pytest.raises(ValueError, match="exactly 'role' and 'content'"):
        render_chatml([{"role": "user", "text": "hi"}])
    vocab, merges = train_bpe(corpus, 300)
    with pytest.raises(ValueError, match="lacks the special tokens"):
        apply_chat_template(Tokenizer(vocab, merges), MESSAGES)


def test_dropout(trained, corpus):
    text = corpus[0][:3000]
    assert encode_with_dropout(trained, text, 0.0) == trained.encode(text)
    assert encode_with_dropout(trained, text, 1.0) == [
        trained.token_to_id[bytes([b])] for b in text.encode()]
    rng = random.Random(0)
    lengths = [len(encode_with_dropout(trained, text, p, rng)) for p in (0.0, 0.1, 0.3, 0.6)]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    for t in DIVERSE:
        assert trained.decode(encode_with_dropout(trained, t, 0.2, rng)) == t
    draws = {tuple(encode_with_dropout(trained, " tokenization", 0.3, rng)) for _ in range(50)}
    assert len(draws) > 3  # different segmentations of the same word
    with pytest.raises(ValueError, match="must be in"):
        encode_with_dropout(trained, text, 1.5)


def test_metrics(trained, english, chinese):
    assert bytes_per_token(trained.encode, english) == pytest.approx(
        len(english.encode()) / len(trained.encode(english)))
    assert bytes_per_token(list, "abc") == 1.0  # one token per character
    assert fertility(lambda t: t.split(), "one two three") == 1.0
    assert fertility(list, "分词") == 1.0  # a Han character is one word
    assert fertility(trained.encode, english) > 1.0
    u = vocab_utilization(trained.encode, english + chinese, trained.vocab_size)
    assert 0.2 < u <= 1.0
    assert vocab_utilization(lambda t: [0, 0, 1], "x", 4) == 0.5


LLAMA3_LIKE_JINJA = (  # Llama 3's shape: bos_token, a loop with `continue`, raise_exception
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + message['role']) }}{% endif %}"
    "{% if message['content'] == '' %}{% continue %}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n\\n' + message['content'] | trim + '<|im_end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n\\n' }}{% endif %}"
)


@pytest.mark.parity
def test_render_chat_template_matches_transformers(chat_tok):
    transformers = pytest.importorskip("transformers")
    from llmlab.tokenizer import render_chat_template

    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=to_hf(chat_tok),
                                              bos_token="<|im_start|>")
    messages = [*MESSAGES[:3], {"role": "user", "content": ""}, {"role": "user", "content": " x "}]
    for gen in (False, True):
        ref = hf.apply_chat_template(messages, chat_template=LLAMA3_LIKE_JINJA, tokenize=False,
                                     add_generation_prompt=gen)
        ours = render_chat_template(LLAMA3_LIKE_JINJA, messages, add_generation_prompt=gen,
                                    bos_token="<|im_start|>")
        assert ours == ref
    assert ours.endswith("x<|im_end|><|im_start|>assistant\n\n") and "user\n\n<|im_end|>" not in ours
    with pytest.raises(ValueError, match="unknown role tool"):
        render_chat_template(LLAMA3_LIKE_JINJA, [{"role": "tool", "content": "1"}],
                             bos_token="")
    with pytest.raises(ValueError, match="non-empty string"):
        render_chat_template(None, messages)
