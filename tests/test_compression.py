"""Context compression at the gateway, as a client and an operator see it: what the target
receives, what the compression model is asked, the response headers, and the ledger."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from tests.compression_help import Calls, Talk, compression, compression_gateway
from tests.conftest import ADMIN_KEY, Gateway, wait_until
from tests.fakes.openai_upstream import REPLY, FakeOpenAI, summary_of
from tokenmux import TokenMux
from tokenmux.tokens import count_messages


@pytest.fixture(scope="module")
def fake(module_upstream: FakeOpenAI) -> FakeOpenAI:
    return module_upstream


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI) -> Iterator[Gateway]:
    running = compression_gateway(tmp_path_factory.mktemp("compression"), fake)
    yield running
    running.stop()


def ask(gw: Gateway, messages: list[dict[str, Any]], model: str = "target",
        headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    response = gw.post({"model": model, "messages": messages, **body}, headers=headers or {})
    assert response.status_code == 200, response.text
    return response


def is_summary(message: dict[str, Any]) -> bool:
    return message["role"] == "system" and "SUMMARY " in message["content"]


def test_below_the_threshold_nothing_changes_and_at_the_threshold_it_fires(gw, fake):
    messages = Talk().turns(6).ask()
    exact = count_messages(messages)

    calls = Calls(fake)
    far = ask(gw, messages, compression=compression(threshold=100 * exact, keep_turns=2))
    # Far below: refused on the body's size alone, nothing counted.
    assert far.headers["X-Compression-Applied"] == "false"
    assert far.headers["X-Compression-Error"] == "below-threshold"
    assert "X-Compression-Original-Tokens" not in far.headers
    assert calls.summaries() == [] and calls.target()["messages"] == messages

    calls = Calls(fake)
    near = ask(gw, messages, compression=compression(threshold=exact + 1, keep_turns=2))
    assert near.headers["X-Compression-Applied"] == "false"
    assert near.headers["X-Compression-Error"] == "below-threshold"
    assert near.headers["X-Compression-Original-Tokens"] == str(exact)
    assert calls.summaries() == [] and calls.target()["messages"] == messages
    assert "compression" not in calls.target()  # the field never goes upstream

    calls = Calls(fake)
    at = ask(gw, messages, compression=compression(threshold=exact, keep_turns=2))
    assert at.headers["X-Compression-Applied"] == "true", at.headers
    assert "X-Compression-Error" not in at.headers
    assert len(calls.summaries()) == 1
    sent = calls.target()
    assert "compression" not in sent
    assert any(is_summary(m) for m in sent["messages"])
    original, final = (int(at.headers[f"X-Compression-{n}-Tokens"]) for n in ("Original", "Final"))
    assert original == exact and final == count_messages(sent["messages"]) < original
    assert int(at.headers["X-Compression-Savings"]) == original - final
    assert at.json()["choices"][0]["message"]["content"] == REPLY


def test_system_recent_turns_the_last_user_message_media_and_tool_pairs_arrive_verbatim(gw, fake):
    talk = Talk().turns(2)
    image = {"role": "user", "content": [
        {"type": "text", "text": "this chart, please"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}
    old_call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_old", "type": "function",
         "function": {"name": "lookup", "arguments": '{"q": "old"}'}}]}
    old_result = {"role": "tool", "tool_call_id": "call_old", "content": "old result " * 40}
    talk.messages += [image, old_call, old_result,
                      {"role": "assistant", "content": "the chart shows growth " * 20}]
    talk.turns(3)
    developer = {"role": "developer", "content": "Answer in English."}
    talk.messages.append(developer)
    talk.turns(1)
    # The turn on the line between old and recent: a tool call and its two results.
    new_call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}
    talk.messages += [{"role": "user", "content": "run both tools"}, new_call,
                      {"role": "tool", "tool_call_id": "call_a", "content": "a done"},
                      {"role": "tool", "tool_call_id": "call_b", "content": "b done"},
                      {"role": "assistant", "content": "both ran"}]
    messages = talk.ask("and now?")

    calls = Calls(fake)
    response = ask(gw, messages, compression=compression(threshold=300, keep_turns=2))
    assert response.headers["X-Compression-Applied"] == "true"
    sent = calls.target()["messages"]
    # The system prompt first, then the summary where the old messages were; the image and the
    # developer message in their order; the last two turns (from "run both tools") verbatim.
    assert sent[0] == messages[0] and is_summary(sent[1])
    assert [m for m in sent if m in (image, developer)] == [image, developer]
    recent = messages[messages.index({"role": "user", "content": "run both tools"}):]
    assert sent[-len(recent):] == recent and sent[-1] == messages[-1]
    assert old_call not in sent and old_result not in sent  # summarised, together
    (asked,) = calls.summaries()
    prompt = asked.body["messages"][-1]["content"]
    assert "[tool result call_old]" in prompt and 'lookup({"q": "old"})' in prompt
    assert "run both tools" not in prompt and "this chart" not in prompt


def test_three_growing_turns_cost_one_summary_and_two_increments(gw, fake):
    talk = Talk(words=120).turns(5)
    asked, summaries = [], []
    for _ in range(3):
        calls = Calls(fake)
        response = ask(gw, talk.ask(), compression=compression(threshold=500, keep_turns=2))
        assert response.headers["X-Compression-Applied"] == "true"
        assert "X-Compression-Cached" not in response.headers
        (call,) = calls.summaries()
        asked.append(call.body["messages"][-1]["content"])
        summaries.append(summary_of(call.body))
        sent = calls.target()["messages"]
        assert sent[1]["content"].endswith(summaries[-1])  # the newest summary is the one sent
        assert response.headers["X-Compression-Original-Tokens"] == str(
            count_messages(talk.ask()))
        assert response.headers["X-Compression-Final-Tokens"] == str(count_messages(sent))
        talk.turn()
    full, *increments = asked
    assert full.startswith("The conversation so far")
    for i, increment in enumerate(increments):
        # Only the previous summary and the one turn that newly left the recent window.
        assert increment.startswith("The summary of the conversation so far")
        assert summaries[i] in increment
        assert f"({talk.tag} 0)" not in increment
        assert increment.count("[user]") == 1 and increment.count("[assistant]") == 1
        assert f"({talk.tag} {4 + i})" in increment


def test_the_summary_is_byte_stable_until_a_block_of_turns_is_folded_in(gw, fake):
    talk = Talk(words=100).turns(8)  # keep_turns 4: a block is two turns
    sent, cached, summarised = [], [], []
    for _ in range(4):
        calls = Calls(fake)
        response = ask(gw, talk.ask(), compression=compression(threshold=500, keep_turns=4))
        assert response.headers["X-Compression-Applied"] == "true"
        cached.append(response.headers.get("X-Compression-Cached") == "true")
        summarised.append(len(calls.summaries()))
        sent.append(calls.target()["messages"])
        # Exact, though what a stored summary covers is not counted again.
        assert response.headers["X-Compression-Original-Tokens"] == str(
            count_messages(talk.ask()))
        assert response.headers["X-Compression-Final-Tokens"] == str(count_messages(sent[-1]))
        talk.turn()
    assert summarised == [1, 0, 1, 0] and cached == [False, True, False, True]
    # Turn 2 begins with the very bytes turn 1 sent (its last message aside): a prompt cache
    # keeps hitting. Turn 3 folds the block in and is stable again on turn 4.
    first = orjson.dumps(sent[0][:-1])
    assert orjson.dumps(sent[1][:len(sent[0]) - 1]) == first
    assert sent[2][1] != sent[1][1]
    assert orjson.dumps(sent[3][:len(sent[2]) - 1]) == orjson.dumps(sent[2][:-1])


def test_the_cost_check_skips_a_dear_summariser_for_a_cheap_target_not_the_reverse(gw, fake):
    messages = Talk().turns(6).ask()
    calls = Calls(fake)
    dear = ask(gw, messages, compression=compression(threshold=300, keep_turns=2,
                                                     model="summariser-dear"))
    assert dear.headers["X-Compression-Applied"] == "false"
    assert dear.headers["X-Compression-Error"] == "compression-not-cost-effective"
    assert calls.summaries() == [] and calls.target()["messages"] == messages

    calls = Calls(fake)
    cheap = ask(gw, messages, "dear-target",
                compression=compression(threshold=300, keep_turns=2, model="summariser-cheap"))
    assert cheap.headers["X-Compression-Applied"] == "true"
    assert len(calls.summaries()) == 1

    calls = Calls(fake)  # a target whose price no source knows is never skipped on cost
    unknown = ask(gw, messages, "unpriced-target",
                  compression=compression(threshold=300, keep_turns=2, model="summariser-dear"))
    assert unknown.headers["X-Compression-Applied"] == "true"
    assert [c.body["model"] for c in calls.summaries()] == ["summariser-dear"]


def test_a_failing_summariser_sends_the_original_conversation_and_says_so(gw, fake):
    messages = Talk().turns(6).ask()
    calls = Calls(fake)
    response = ask(gw, messages, compression=compression(threshold=300, keep_turns=2,
                                                         model="summariser-broken"))
    assert response.headers["X-Compression-Applied"] == "false"
    assert response.headers["X-Compression-Error"] == "summarizer-failed"
    assert len(calls.summaries()) == 3  # retried through the gateway's routing, then given up
    assert calls.target()["messages"] == messages
    assert response.json()["choices"][0]["message"]["content"] == REPLY


def test_a_summariser_out_of_time_sends_the_original_within_the_deadline(gw, fake):
    messages = Talk().turns(6).ask()
    calls = Calls(fake)
    started = time.monotonic()
    response = ask(gw, messages, compression=compression(threshold=300, keep_turns=2,
                                                         model="summariser-slow"),
                   headers={"X-Timeout": "8000"})
    assert time.monotonic() - started < 8
    assert response.headers["X-Compression-Applied"] == "false"
    assert response.headers["X-Compression-Error"] == "summarizer-timeout"
    assert calls.target()["messages"] == messages


def test_truncate_drops_the_oldest_turns_and_calls_no_model(gw, fake):
    messages = Talk().turns(8).ask()
    calls = Calls(fake)
    response = ask(gw, messages, headers={"X-Context-Compression": "truncate",
                                          "X-Compression-Threshold": "500",
                                          "X-Compression-Keep-Turns": "2"})
    assert response.headers["X-Compression-Applied"] == "true"
    assert calls.summaries() == []
    sent = calls.target()["messages"]
    final = int(response.headers["X-Compression-Final-Tokens"])
    assert final == count_messages(sent) <= 500
    # The system prompt, then whole turns from the newest back: a suffix of the conversation.
    assert sent[0] == messages[0] and sent[1]["role"] == "user"
    assert sent[1:] == messages[len(messages) - len(sent) + 1:]


def test_a_conversation_over_the_window_is_cut_to_fit_when_no_summary_can_be_had(gw, fake):
    messages = Talk().turns(8).ask()
    assert count_messages(messages) > 600
    calls = Calls(fake)
    response = ask(gw, messages, "small-window",
                   compression=compression(model="summariser-broken", keep_turns=2))
    assert response.headers["X-Compression-Error"] == "summarizer-failed"
    assert response.headers["X-Compression-Applied"] == "true"
    sent = calls.target()["messages"]
    assert count_messages(sent) == int(response.headers["X-Compression-Final-Tokens"]) <= 600
    assert sent[0] == messages[0] and sent[-1] == messages[-1]


def test_body_headers_key_and_model_defaults_apply_in_that_order(gw, fake):
    messages = Talk().turns(6).ask()
    high = str(100 * count_messages(messages))
    made = gw.cli("keys", "create", "--name", "compressing", "--compression", "on",
                  "--compression-threshold", high)
    key = made.stdout.strip().splitlines()[-1]

    def applied(key: str = key, model: str = "target", headers: dict[str, str] | None = None,
                **body: Any) -> str:
        response = gw.post({"model": model, "messages": messages, **body}, key=key,
                           headers=headers or {})
        assert response.status_code == 200, response.text
        return response.headers.get("X-Compression-Applied", "absent")

    assert applied(key=ADMIN_KEY) == "absent"  # nothing asked, no default: nothing at all
    assert applied() == "false"  # the key's default, with its high threshold
    assert applied(headers={"X-Compression-Threshold": "300"}) == "true"  # headers over key
    assert applied(headers={"X-Compression-Threshold": "300"},  # the body over the headers
                   compression=compression(threshold=int(high))) == "false"
    assert applied(key=ADMIN_KEY, model="defaulted") == "true"  # the model's own default
    assert applied(model="defaulted") == "false"  # the key's threshold over the model's
    # A body that names no strategy takes the model's (aggressive: three turns kept)...
    calls = Calls(fake)
    assert applied(key=ADMIN_KEY, model="defaulted", compression=compression(threshold=300)) \
        == "true"
    sent = calls.target()["messages"]
    assert len(sent) == 7 and sent[2:] == messages[-5:]
    # ... and a body's keep_turns wins over the model's.
    calls = Calls(fake)
    assert applied(key=ADMIN_KEY, model="defaulted", compression=compression(keep_turns=1)) \
        == "true"
    sent = calls.target()["messages"]
    assert sent[2:] == messages[-1:]  # system, summary, and the last user message alone


def test_off_wins_from_the_body_or_the_headers(gw, fake):
    messages = Talk().turns(6).ask()
    for headers, body in (({"X-Context-Compression": "off"}, compression(threshold=300)),
                          ({"X-Context-Compression": "on", "X-Compression-Threshold": "300"},
                           {"enabled": False}),
                          ({"X-Context-Compression": "OFF"}, {})):
        calls = Calls(fake)
        response = ask(gw, messages, "defaulted", headers=headers,
                       **({"compression": body} if body else {}))
        assert "X-Compression-Applied" not in response.headers
        assert calls.summaries() == [] and calls.target()["messages"] == messages


@pytest.mark.parametrize(("body", "headers", "param"), [
    ("on", {}, "compression"),
    ({"strategy": "on"}, {}, "compression.enabled"),
    ({"enabled": "yes"}, {}, "compression.enabled"),
    (compression(strategy="maximal"), {}, "compression.strategy"),
    (compression(threshold=0), {}, "compression.threshold"),
    (compression(threshold="8000"), {}, "compression.threshold"),
    (compression(threshold=True), {}, "compression.threshold"),
    (compression(keep_turns=-1), {}, "compression.keep_turns"),
    (compression(model="no-such-model"), {}, "compression.model"),
    (compression(model=""), {}, "compression.model"),
    (compression(ratio=2), {}, "compression.ratio"),
    (None, {"X-Context-Compression": "sometimes"}, "X-Context-Compression"),
    (None, {"X-Context-Compression": "on", "X-Compression-Threshold": "1e4"},
     "X-Compression-Threshold"),
    (None, {"X-Context-Compression": "on", "X-Compression-Keep-Turns": "0"},
     "X-Compression-Keep-Turns"),
    (None, {"X-Context-Compression": "on", "X-Compression-Model": "nope"},
     "X-Compression-Model"),
])
def test_a_bad_value_is_a_400_naming_the_field_before_anything_is_called(gw, fake, body,
                                                                         headers, param):
    calls = Calls(fake)
    extra = {} if body is None else {"compression": body}
    response = gw.post({"model": "target", "messages": Talk().turns(1).ask(), **extra},
                       headers=headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and param in error["message"]
    assert error["type"] == "invalid_request_error"
    assert calls.all() == []


def test_a_keys_compression_model_must_exist(gw):
    made = gw.cli("keys", "create", "--name", "x", "--compression", "on",
                  "--compression-model", "no-such-model", check=False)
    assert made.returncode != 0 and "no-such-model" in made.stderr


def _rows(gw: Gateway, request_id: str, count: int) -> list[dict[str, Any]]:
    assert wait_until(lambda: len(gw.rows(request_id=request_id)) == count)
    return gw.rows(request_id=request_id)


def test_the_ledger_bills_the_summariser_linked_to_its_request_and_usage_totals_it(gw, fake):
    messages = Talk().turns(6).ask()
    response = ask(gw, messages, "dear-target",
                   compression=compression(threshold=300, keep_turns=2))
    rid = response.headers["x-request-id"]
    rows = _rows(gw, rid, 2)
    (request,) = [r for r in rows if r["kind"] is None]
    (summariser,) = [r for r in rows if r["kind"] == "compression"]
    assert summariser["parent_id"] == request["id"]
    assert summariser["model"] == "summariser-cheap" and summariser["key_name"] == "admin"
    assert summariser["status"] == 200 and summariser["prompt_tokens"] > 0
    assert summariser["cost_usd"] == pytest.approx(
        (summariser["prompt_tokens"] * 0.1 + summariser["completion_tokens"] * 0.2) / 1e6)
    assert request["model"] == "dear-target"
    assert request["tokens_before"] == int(response.headers["X-Compression-Original-Tokens"])
    assert request["tokens_after"] == int(response.headers["X-Compression-Final-Tokens"])

    # A failed summary is billed too (nothing, here), still linked.
    failed = ask(gw, messages, compression=compression(threshold=300, keep_turns=2,
                                                       model="summariser-broken"))
    rows = _rows(gw, failed.headers["x-request-id"], 2)
    (broken,) = [r for r in rows if r["kind"] == "compression"]
    assert broken["status"] == 502 and broken["attempts"] == 3

    report = orjson.loads(gw.cli("usage", "--json").stdout)
    by_model = {t["model"]: t for t in report["totals"]["by_model"]}
    assert by_model["summariser-cheap"]["compression_calls"] >= 1
    assert by_model["summariser-cheap"]["requests"] == 0  # a summary is not a request
    saved = request["tokens_before"] - request["tokens_after"]
    assert by_model["dear-target"]["tokens_saved"] >= saved > 0
    (admin,) = [t for t in report["totals"]["by_key"] if t["key"] == "admin"]
    assert admin["compression_cost_usd"] > 0
    text = gw.cli("usage").stdout
    assert "compression:" in text and "tokens saved" in text
    assert "+summariser-cheap" in text


def test_a_stream_is_compressed_through_the_openai_sdk(gw, fake):
    messages = Talk().turns(6).ask()
    calls = Calls(fake)
    client = gw.client()
    raw = client.chat.completions.with_raw_response.create(
        model="target", messages=messages, stream=True,
        extra_body={"compression": compression(threshold=300, keep_turns=2)})
    assert raw.headers["X-Compression-Applied"] == "true"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse()
                   if chunk.choices)
    assert text == REPLY
    sent = calls.target()
    assert sent["stream"] is True and "compression" not in sent
    assert any(is_summary(m) for m in sent["messages"])

    calls = Calls(fake)  # and JSON, through the same SDK, by headers
    raw = client.chat.completions.with_raw_response.create(
        model="target", messages=messages,
        extra_headers={"X-Context-Compression": "on", "X-Compression-Threshold": "300",
                       "X-Compression-Keep-Turns": "2"})
    assert raw.headers["X-Compression-Applied"] == "true"
    assert raw.headers["X-Compression-Cached"] == "true"  # the same conversation again
    assert raw.parse().choices[0].message.content == REPLY
    assert calls.summaries() == []


def test_our_sdk_sends_compression_for_json_and_streams(gw, fake):
    sdk = TokenMux(api_key=ADMIN_KEY, base_url=gw.base_url + "/v1", max_retries=0)
    for stream in (False, True):
        messages = Talk().turns(6).ask()
        calls = Calls(fake)
        answer = sdk.chat.completions.create(
            model="target", messages=messages, stream=stream,
            compression={"enabled": True, "threshold": 300, "keep_turns": 2,
                         "model": "summariser-cheap"})
        text = ("".join(c.choices[0].delta.content or "" for c in answer if c.choices)
                if stream else answer.choices[0].message.content)
        assert text == REPLY
        assert len(calls.summaries()) == 1
        sent = calls.target()
        assert "compression" not in sent and any(is_summary(m) for m in sent["messages"])


def test_the_summary_cache_is_per_key(gw, fake, tmp_path: Path):
    messages = Talk().turns(6).ask()
    key = gw.cli("keys", "create", "--name", "other").stdout.strip().splitlines()[-1]
    for who, cached in ((ADMIN_KEY, None), (key, None), (ADMIN_KEY, "true")):
        response = gw.post({"model": "target", "messages": messages,
                            "compression": compression(threshold=300, keep_turns=2)}, key=who)
        assert response.headers["X-Compression-Applied"] == "true"
        assert response.headers.get("X-Compression-Cached") == cached


def test_a_summary_one_instance_made_is_reused_by_another_through_redis(fake, tmp_path: Path):
    redis = os.environ.get("TOKENMUX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    # Other suites share the Redis server: these summaries live under a prefix of their own.
    shared = f"redis: {redis}\nredis_prefix: 'test-{uuid.uuid4().hex}:'\n"
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = compression_gateway(tmp_path / "one", fake, shared)
    two = compression_gateway(tmp_path / "two", fake, shared)
    try:
        messages = Talk().turns(6).ask()
        calls = Calls(fake)
        asked = {"model": "target", "messages": messages,
                 "compression": compression(threshold=300, keep_turns=2)}
        first, second = one.post(asked), two.post(asked)
        assert first.headers["X-Compression-Applied"] == "true"
        assert "X-Compression-Cached" not in first.headers
        assert second.headers["X-Compression-Applied"] == "true"
        assert second.headers["X-Compression-Cached"] == "true"
        assert len(calls.summaries()) == 1
        sent = [r.body["messages"] for r in calls.targets()]
        assert sent[0] == sent[1]  # the same summary, byte for byte, from either instance
    finally:
        one.stop()
        two.stop()
