"""`llmlab serve --model book-chat` in its own process answers the held-out questions of its
model card through the official openai client (127.0.0.1 only), at the rate the card states."""

import json
import re

import openai
import pytest

from llmlab.align import chat_data
from llmlab.align.book_chat import MAX_NEW_TOKENS
from llmlab.model import BOOK_CHAT_MODEL_DIR

SUMMARY = json.loads((BOOK_CHAT_MODEL_DIR / "summary.json").read_text())


@pytest.fixture(scope="module")
def url(cli_server):
    with cli_server("book-chat") as (_, base):
        yield base


def test_the_card_states_the_rate_the_server_reaches(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
    assert [m.id for m in client.models.list().data] == ["book-chat"]
    questions = chat_data.questions("heldout")
    correct = {task: 0 for task in chat_data.TASKS}
    finishes = []
    for e in questions:  # one at a time, greedy: the same decoding as the card's evaluation
        r = client.chat.completions.create(model="book-chat", messages=e.chat(with_answer=False),
                                           max_tokens=MAX_NEW_TOKENS[e.task], temperature=0)
        correct[e.task] += chat_data.score(e, r.choices[0].message.content)
        finishes.append(r.choices[0].finish_reason)
    held = SUMMARY["heldout"]
    assert held["n"] == len(questions)
    card = (BOOK_CHAT_MODEL_DIR / "MODEL_CARD.md").read_text()
    assert f"**{held['correct']} / {held['n']} = {held['rate']:.1%}**" in card
    for task in chat_data.TASKS:
        assert correct[task] >= held["by_task"][task]["correct"], (task, correct)
    # the explain answers are short and end with <|im_end|>, not at the token limit
    assert finishes[:30].count("stop") >= 25, finishes[:30]


def test_chat_reply_is_on_topic(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
    r = client.chat.completions.create(
        model="book-chat", temperature=0, max_tokens=MAX_NEW_TOKENS["write"],
        messages=[{"role": "user", "content": "Write a function `area(width, height)` that "
                                              "return the area of a rectangle."}])
    text = r.choices[0].message.content
    assert "def area(width, height):" in text and "<|" not in text
    assert re.fullmatch(r"[\x09\x0a\x20-\x7e]*", text)  # plain text, no byte fragments
