"""The parameter policy, seen by the official `openai` SDK: sampling hints a target does not take
are dropped and named, what changes the answer is still refused, `strict_params` and
`X-Strict-Params` restore the 400, a fallback applies its own target's policy, and
`parallel_tool_calls: false` is honoured on every provider kind.

One gateway serves the shipped catalog (`catalog: builtin`) with its openai, anthropic and gemini
providers moved to the fakes: the models, their data-driven sampling facts and the routes are the
ones a user gets.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import orjson
import pytest

from tests.conftest import ADMIN_KEY, Gateway, started_gateway
from tests.fakes.anthropic_upstream import REPLY as CLAUDE_REPLY
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import REPLY as OPENAI_REPLY
from tests.fakes.openai_upstream import FakeOpenAI

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "format": {"type": "string"}}}}}
HINTS = {"temperature": 0, "top_p": 0.5, "seed": 3}


@dataclass
class Fakes:
    openai: FakeOpenAI
    claude: FakeAnthropic
    gemini: FakeGemini


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    running = Fakes(FakeOpenAI().start(), FakeAnthropic().start(), FakeGemini().start())
    yield running
    for fake in (running.openai, running.claude, running.gemini):
        fake.stop()


def policy_config(fakes: Fakes) -> str:
    claude = f'base_url: "{fakes.claude.base_url}", api_key: {fakes.claude.api_key}'
    return f"""\
        routing: {{backoff_initial_ms: 10, breaker: {{failures: 1000000}}}}
        catalog: builtin
        providers:
          openai: {{base_url: "{fakes.openai.base_url}", api_key: sk-upstream}}
          anthropic: {{{claude}}}
          gemini: {{base_url: "{fakes.gemini.base_url}", api_key: {fakes.gemini.api_key}}}
          claude-strict: {{kind: anthropic, {claude}, strict_params: true}}
          claude-2023: {{kind: anthropic, {claude}, headers: {{anthropic-version: "2023-06-01"}}}}
          down: {{kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-down}}
          claude-down: {{kind: anthropic, base_url: "http://127.0.0.1:9", api_key: sk-down}}
        models:
          - name: strict-claude
            channels: [{{provider: claude-strict, model: claude-sonnet-4-5}}]
          - name: claude-2023
            channels: [{{provider: claude-2023, model: claude-sonnet-4-5}}]
            sampling: [temperature, top_p, top_k]
          - name: gpt-down
            channels: [{{provider: down, model: gpt-4.1}}]
            fallbacks: [claude-sonnet-4-5]
          - name: claude-then-gpt
            channels: [{{provider: claude-down, model: claude-sonnet-4-5}}]
            fallbacks: [gpt-4.1]
        """


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fakes: Fakes) -> Iterator[Gateway]:
    running = started_gateway(tmp_path_factory.mktemp("params"), policy_config(fakes))
    yield running
    running.stop()


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return gateway.client()


def user(text: str) -> list[dict[str, object]]:
    return [{"role": "user", "content": text}]


# ---------------------------------------------------------------- dropped and named


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "claude-opus-4-7", "claude-sonnet-5-5"])
def test_sampling_hints_to_claude_are_dropped_and_named(client, gateway, fakes, model):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=user("Say hello"), presence_penalty=0.2, **HINTS)
    assert raw.parse().choices[0].message.content == CLAUDE_REPLY
    assert raw.headers["X-TokenMux-Dropped-Params"] == "temperature,top_p,seed,presence_penalty"
    sent = fakes.claude.last()
    assert sent.headers["anthropic-version"] == "2026-10-21"
    assert not {"temperature", "top_p", "seed", "presence_penalty"} & set(sent.body)
    row = gateway.wait_row(raw.headers["x-request-id"])
    assert (row["status"], row["dropped_params"]) == (
        200, "temperature,top_p,seed,presence_penalty")


def test_a_stream_names_the_dropped_hints_in_its_headers_and_row(client, gateway, fakes):
    raw = client.chat.completions.with_raw_response.create(
        model="claude-haiku-4-5", messages=user("Say hello"), stream=True, temperature=0.7,
        extra_body={"top_k": 5})
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == CLAUDE_REPLY
    assert raw.headers["X-TokenMux-Dropped-Params"] == "temperature,top_k"
    assert not {"temperature", "top_k"} & set(fakes.claude.last().body)
    assert gateway.wait_row(raw.headers["x-request-id"])["dropped_params"] == "temperature,top_k"


def test_a_request_without_hints_has_no_header_and_no_note(client, gateway):
    raw = client.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5", messages=user("Say hello"))
    assert "X-TokenMux-Dropped-Params" not in raw.headers
    assert gateway.wait_row(raw.headers["x-request-id"])["dropped_params"] is None


def test_a_reasoning_gpt_loses_temperature_a_classic_gpt_keeps_it(client, fakes):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-5", messages=user("Say hello"), temperature=0.2, top_p=0.9, seed=1)
    assert raw.parse().choices[0].message.content == OPENAI_REPLY
    # The data says a reasoning gpt takes no sampling hint at all.
    assert raw.headers["X-TokenMux-Dropped-Params"] == "temperature,top_p,seed"
    sent = fakes.openai.last().body
    assert (sent["model"], sent.get("temperature"), sent.get("seed")) == (
        "gpt-5-2025-08-07", None, None)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4.1", messages=user("Say hello"), temperature=0.2, extra_body={"top_k": 3})
    assert raw.headers["X-TokenMux-Dropped-Params"] == "top_k"  # no OpenAI model takes it
    assert fakes.openai.last().body["temperature"] == 0.2


def test_gemini_takes_every_hint(client, fakes):
    raw = client.chat.completions.with_raw_response.create(
        model="gemini-2.5-flash", messages=user("Say hello"), temperature=0.1,
        extra_body={"top_k": 4})
    assert "X-TokenMux-Dropped-Params" not in raw.headers
    config = fakes.gemini.last().body["generationConfig"]
    assert (config["temperature"], config["topK"]) == (0.1, 4)


def test_an_older_anthropic_version_passes_the_hints_on(client, fakes):
    raw = client.chat.completions.with_raw_response.create(
        model="claude-2023", messages=user("Say hello"), temperature=0.2, top_p=0.8, seed=9)
    assert raw.headers["X-TokenMux-Dropped-Params"] == "seed"
    sent = fakes.claude.last()
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert (sent.body["temperature"], sent.body["top_p"], "seed" in sent.body) == (
        0.2, 0.8, False)


# ---------------------------------------------------------------- refused


def test_what_changes_the_answer_is_still_refused(gateway, fakes):
    before = len(fakes.claude.received)
    response = gateway.post({"model": "claude-sonnet-4-5", "messages": user("Hi"),
                             "temperature": 0, "logprobs": True})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "logprobs"
    response = gateway.post({"model": "gemini-2.5-flash", "messages": user("Hi"),
                             "modalities": ["text", "audio"]})
    assert (response.status_code, response.json()["error"]["param"]) == (400, "modalities")
    assert len(fakes.claude.received) == before


def test_strict_params_restores_the_400(gateway, fakes):
    before = len(fakes.claude.received)
    response = gateway.post({"model": "strict-claude", "messages": user("Hi"),
                             "temperature": 0.3})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["type"]) == ("temperature", "invalid_request_error")
    assert "an Anthropic channel" in error["message"]
    response = gateway.post({"model": "claude-sonnet-4-5", "messages": user("Hi"), "seed": 1},
                            headers={"X-Strict-Params": "true"})
    assert (response.status_code, response.json()["error"]["param"]) == (400, "seed")
    assert len(fakes.claude.received) == before
    # Strict on a gpt: the hints reach the upstream, whose own 400 comes back.
    response = gateway.post({"model": "gpt-5", "messages": user("Hi"), "temperature": 0.3},
                            headers={"X-Strict-Params": "true"})
    assert (response.status_code, response.json()["error"]["param"]) == (400, "temperature")
    response = gateway.post({"model": "claude-sonnet-4-5", "messages": user("Hi")},
                            headers={"X-Strict-Params": "false"})
    assert response.status_code == 200


def test_a_strict_key_is_refused_and_its_header_may_relax_it(gateway, fakes):
    secret = gateway.cli("keys", "create", "--name", "strict-key",
                         "--strict-params").stdout.split()[-1]
    before = len(fakes.claude.received)
    body = {"model": "claude-sonnet-4-5", "messages": user("Hi"), "temperature": 0.3}
    response = gateway.post(body, key=secret)
    assert (response.status_code, response.json()["error"]["param"]) == (400, "temperature")
    assert len(fakes.claude.received) == before
    # The header, when sent, is the request's own say.
    relaxed = gateway.post(body, key=secret, headers={"X-Strict-Params": "false"})
    assert relaxed.status_code == 200, relaxed.text
    assert relaxed.headers["X-TokenMux-Dropped-Params"] == "temperature"
    listed = {k["name"]: k for k in orjson.loads(gateway.cli("keys", "list", "--json").stdout)}
    assert listed["strict-key"]["strict_params"] is True


def test_a_malformed_strict_header_is_a_400(gateway):
    response = gateway.post({"model": "claude-sonnet-4-5", "messages": user("Hi")},
                            headers={"X-Strict-Params": "yes please"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_header"


# ---------------------------------------------------------------- fallbacks


def test_a_fallback_from_a_gpt_to_claude_drops_what_claude_does_not_take(client, fakes):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-down", messages=user("Say hello"), temperature=0)
    assert raw.parse().choices[0].message.content == CLAUDE_REPLY
    assert raw.headers["X-TokenMux-Channel"] == "anthropic/claude-sonnet-4-5-20250929"
    assert raw.headers["X-TokenMux-Dropped-Params"] == "temperature"
    assert "temperature" not in fakes.claude.last().body


def test_a_fallback_from_claude_to_a_gpt_keeps_the_hint_the_gpt_takes(client, fakes):
    raw = client.chat.completions.with_raw_response.create(
        model="claude-then-gpt", messages=user("Say hello"), temperature=0.4)
    assert raw.parse().choices[0].message.content == OPENAI_REPLY
    assert "X-TokenMux-Dropped-Params" not in raw.headers
    assert fakes.openai.last().body["temperature"] == 0.4


# ---------------------------------------------------------------- parallel_tool_calls: false


def test_gemini_keeps_the_first_call_and_says_so(client, fakes):
    raw = client.chat.completions.with_raw_response.create(
        model="gemini-2.5-flash", messages=user("@calls2"), tools=[WEATHER, TIME],
        parallel_tool_calls=False)
    message = raw.parse().choices[0].message
    assert [c.function.name for c in message.tool_calls] == ["get_weather"]
    assert raw.headers["X-TokenMux-Trimmed-Tool-Calls"] == "1"
    assert "parallel_tool_calls" not in json.dumps(fakes.gemini.last().body)
    raw = client.chat.completions.with_raw_response.create(
        model="gemini-2.5-flash", messages=user("@calls2"), tools=[WEATHER, TIME])
    assert len(raw.parse().choices[0].message.tool_calls) == 2
    assert "X-TokenMux-Trimmed-Tool-Calls" not in raw.headers


def test_a_gemini_stream_leaves_the_later_calls_out(client):
    with client.chat.completions.stream(model="gemini-2.5-flash", messages=user("@calls2"),
                                        tools=[WEATHER, TIME],
                                        parallel_tool_calls=False) as stream:
        message = stream.get_final_completion().choices[0].message
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == [
        ("get_weather", {"city": "Paris"})]


def test_claude_and_gpt_are_told_natively(client, fakes):
    raw = client.chat.completions.with_raw_response.create(
        model="claude-sonnet-4-5", messages=user("@calls2"), tools=[WEATHER, TIME],
        parallel_tool_calls=False)
    assert [c.function.name for c in raw.parse().choices[0].message.tool_calls] == [
        "get_weather"]
    assert fakes.claude.last().body["tool_choice"]["disable_parallel_tool_use"] is True
    assert "X-TokenMux-Trimmed-Tool-Calls" not in raw.headers
    client.chat.completions.create(model="gpt-4.1", messages=user("@call get_weather {}"),
                                   tools=[WEATHER], parallel_tool_calls=False)
    assert fakes.openai.last().body["parallel_tool_calls"] is False


def test_the_stream_of_a_dropped_hint_is_a_plain_sse_stream(gateway):
    # The header goes out with the stream's own: seen by a client that reads raw SSE too.
    with httpx.stream("POST", gateway.base_url + "/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                      json={"model": "claude-sonnet-4-5", "messages": user("Say hello"),
                            "stream": True, "temperature": 0}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-tokenmux-dropped-params"] == "temperature"
        assert "data: [DONE]" in list(response.iter_lines())
