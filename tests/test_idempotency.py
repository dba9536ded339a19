"""Retry-safe requests: a keyed request runs upstream once and is billed once; its copies (the
client's own retry, the SDKs' retries, copies sent at once) get its answer, streams included."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, Gateway, config_for, wait_until
from tests.fakes.openai_upstream import REPLY, FakeOpenAI
from tokenmux import TokenMux

MODELS = """\
  - name: flaky-model
    channels: [{provider: fake, model: idem-flaky}]
"""


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("idempotency")
    running = Gateway(directory, config_for(directory, upstream) + MODELS).start()
    yield running
    running.stop()


def tag() -> str:
    return "idem-" + uuid.uuid4().hex[:12]


def body(user: str, text: str = "Say hello", **extra: object) -> dict:
    return {"model": "fake-model", "user": user,
            "messages": [{"role": "user", "content": text}], **extra}


def calls(upstream: FakeOpenAI, user: str) -> int:
    return sum(1 for seen in upstream.received if seen.body.get("user") == user)


def rows_for(gateway: Gateway, rid: str, count: int) -> list[dict]:
    assert wait_until(lambda: len(gateway.rows(request_id=rid)) >= count), (
        gateway.rows(request_id=rid))
    time.sleep(0.2)  # a row more than expected would show now
    return gateway.rows(request_id=rid)


def billed(rows: list[dict]) -> list[dict]:
    return [row for row in rows if row["replay_of"] is None]


def new_key(gateway: Gateway, name: str, *args: str) -> str:
    created = gateway.cli("keys", "create", "--name", name, *args)
    return created.stdout.strip().splitlines()[-1]


def test_a_client_timeout_then_a_retry_by_hand_runs_once(keyed, upstream):
    rid, user = tag(), tag()
    impatient = keyed.client(timeout=1.0)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(**body(user, "@stall 3"),
                                          extra_headers={"X-Request-Id": rid})
    answer = keyed.client(timeout=30).chat.completions.create(
        **body(user, "@stall 3"), extra_headers={"X-Request-Id": rid})
    assert answer.choices[0].message.content == REPLY
    assert answer.id == "chatcmpl-fake"
    assert calls(upstream, user) == 1
    rows = rows_for(keyed, rid, 2)
    assert [(row["status"], row["prompt_tokens"] > 0) for row in billed(rows)] == [(200, True)]
    first = billed(rows)[0]
    assert [(r["status"], r["replay_of"], r["cost_usd"]) for r in rows if r["replay_of"]] == [
        (200, first["id"], 0)]
    assert not any(seen == user for seen in upstream.abandoned)  # the client left; not the run


@pytest.mark.parametrize("sdk", ["openai", "tokenmux"])
def test_the_sdks_own_retries_after_timeouts_run_once(keyed, upstream, sdk):
    user = tag()
    if sdk == "openai":
        rid = tag()
        client = openai.OpenAI(base_url=keyed.base_url + "/v1", api_key=ADMIN_KEY, timeout=1.0,
                               max_retries=6)
        answer = client.chat.completions.create(**body(user, "@stall 3"),
                                                extra_headers={"Idempotency-Key": rid})
    else:
        rid = tag()
        ours = TokenMux(api_key=ADMIN_KEY, base_url=keyed.base_url + "/v1", timeout=1.0,
                        max_retries=6)
        answer = ours.chat.completions.create(**body(user, "@stall 3"), request_id=rid)
    assert answer.choices[0].message.content == REPLY
    assert calls(upstream, user) == 1
    rows = rows_for(keyed, rid, 2)
    assert [row["status"] for row in billed(rows)] == [200]
    assert all(row["replay_of"] == billed(rows)[0]["id"] for row in rows if row["replay_of"])


def _send_ten(gateway: Gateway, payload: dict, rid: str) -> list[httpx.Response]:
    def one(_: int) -> httpx.Response:
        return gateway.post(payload, headers={"X-Request-Id": rid})

    with ThreadPoolExecutor(10) as pool:
        return list(pool.map(one, range(10)))


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_ten_identical_requests_at_once_go_upstream_once(keyed, upstream, stream):
    rid, user, hold = tag(), tag(), tag()
    payload = body(user, f"@hold {hold}", **({"stream": True, "stream_options":
                                               {"include_usage": True}} if stream else {}))
    with ThreadPoolExecutor(1) as runner:
        sent = runner.submit(_send_ten, keyed, payload, rid)
        assert wait_until(lambda: calls(upstream, user) == 1)
        time.sleep(1.0)  # the other nine arrive and wait on the first
        upstream.release(hold)
        answers = sent.result(60)
    assert calls(upstream, user) == 1
    assert [a.status_code for a in answers] == [200] * 10
    assert len({a.content for a in answers}) == 1  # ten identical bodies (or event sequences)
    assert sorted(a.headers.get("Idempotent-Replayed", "") for a in answers) == [""] + ["true"] * 9
    if stream:
        text = answers[0].text
        assert text.endswith("data: [DONE]\n\n") and '"usage":{"prompt_tokens"' in text
    else:
        assert answers[0].json()["choices"][0]["message"]["content"] == REPLY
    rows = rows_for(keyed, rid, 10)
    (first,) = billed(rows)
    assert first["status"] == 200 and first["completion_tokens"] > 0
    replays = [row for row in rows if row["replay_of"]]
    assert len(replays) == 9
    assert all((r["replay_of"], r["status"], r["prompt_tokens"], r["completion_tokens"],
                r["cost_usd"]) == (first["id"], 200, 0, 0, 0) for r in replays)


def test_a_finished_stream_is_replayed_byte_for_byte(keyed, upstream):
    rid, user = tag(), tag()
    payload = body(user, stream=True, stream_options={"include_usage": True})
    client = keyed.client()
    sent = []
    for _ in range(2):  # the official SDK sends the same bytes each time, as a retry does
        with client.chat.completions.with_streaming_response.create(
                **payload, extra_headers={"X-Request-Id": rid}) as response:
            sent.append((response.status_code, response.headers, response.read()))
    (status, headers, first), (again_status, again_headers, again) = sent
    assert status == again_status == 200
    assert again == first
    assert again_headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in headers
    assert again_headers["content-type"].startswith("text/event-stream")
    assert again_headers["X-TokenMux-Channel"] == headers["X-TokenMux-Channel"]
    # The SDK reads the replay as the stream it is: the same text, the same usage chunk.
    chunks = list(client.chat.completions.create(**payload, extra_headers={"X-Request-Id": rid}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    events = [json.loads(line[6:]) for line in first.decode().splitlines()
              if line.startswith("data: {")]
    usage = chunks[-1].usage
    assert usage is not None and events[-1]["usage"]["completion_tokens"] > 0
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        events[-1]["usage"]["prompt_tokens"], events[-1]["usage"]["completion_tokens"])
    assert calls(upstream, user) == 1


def test_the_same_id_with_another_body_is_422_and_nothing_runs(keyed, upstream):
    rid, user, other = tag(), tag(), tag()
    assert keyed.post(body(user, "first words"), headers={"X-Request-Id": rid}).status_code == 200
    reused = keyed.post(body(other, "other words"), headers={"Idempotency-Key": rid})
    assert reused.status_code == 422
    error = reused.json()["error"]
    assert (error["code"], error["type"]) == ("idempotency_key_reused", "invalid_request_error")
    assert "words" not in error["message"]  # names neither body
    assert calls(upstream, other) == 0
    rows = rows_for(keyed, rid, 2)
    assert sorted((r["status"], r["prompt_tokens"]) for r in rows)[1] == (422, 0)


def test_one_id_under_two_api_keys_is_two_requests(keyed, upstream):
    rid, user = tag(), tag()
    other = new_key(keyed, "idem-second")
    one = keyed.post(body(user), headers={"X-Request-Id": rid})
    two = keyed.post(body(user), key=other, headers={"X-Request-Id": rid})
    assert one.status_code == two.status_code == 200
    assert "Idempotent-Replayed" not in two.headers
    assert calls(upstream, user) == 2
    assert len(billed(rows_for(keyed, rid, 2))) == 2


def test_a_first_attempt_that_fails_frees_the_id(keyed, upstream):
    rid, user = tag(), tag()
    upstream.standing["idem-flaky"] = "@fail 502"
    try:
        failed = keyed.post({**body(user), "model": "flaky-model"},
                            headers={"X-Request-Id": rid})
    finally:
        upstream.standing.pop("idem-flaky")
    assert failed.status_code == 502
    tried = calls(upstream, user)
    retried = keyed.post({**body(user), "model": "flaky-model"}, headers={"X-Request-Id": rid})
    assert retried.status_code == 200
    assert "Idempotent-Replayed" not in retried.headers
    assert retried.json()["choices"][0]["message"]["content"] == REPLY
    assert calls(upstream, user) == tried + 1
    rows = rows_for(keyed, rid, 2)
    assert sorted(row["status"] for row in billed(rows)) == [200, 502]


def test_a_copy_waiting_on_a_failure_gets_the_same_failure(keyed, upstream):
    rid, user, hold = tag(), tag(), tag()
    payload = body(user, f"@hold {hold}")
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(keyed.post, payload, headers={"X-Request-Id": rid,
                                                          "X-Timeout": "5000"})
        assert wait_until(lambda: calls(upstream, user) == 1)
        copy = pool.submit(keyed.post, payload, headers={"X-Request-Id": rid,
                                                         "X-Timeout": "60000"})
        failed, copied = first.result(60), copy.result(60)
    upstream.release(hold)
    assert failed.status_code == copied.status_code == 408
    assert copied.json() == failed.json()
    assert copied.headers["X-Timeout-Elapsed-Ms"] == failed.headers["X-Timeout-Elapsed-Ms"]
    assert calls(upstream, user) == 1
    again = keyed.post(body(user, "now it runs"), headers={"X-Request-Id": rid})
    assert again.status_code == 200  # the id is free again, for any body


def test_a_copy_whose_deadline_runs_out_first_gets_409_with_retry_after(keyed, upstream):
    rid, user, hold = tag(), tag(), tag()
    payload = body(user, f"@hold {hold}")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(keyed.post, payload, headers={"X-Request-Id": rid})
        assert wait_until(lambda: calls(upstream, user) == 1)
        copy = keyed.post(payload, headers={"X-Request-Id": rid, "X-Timeout": "5000"})
        upstream.release(hold)
        assert first.result(60).status_code == 200
    assert copy.status_code == 409
    assert copy.json()["error"]["code"] == "idempotency_in_progress"
    assert copy.headers["Retry-After"] == "1"
    assert calls(upstream, user) == 1


def test_a_keyed_stream_whose_client_hangs_up_runs_on_for_its_retry(keyed, upstream):
    rid, user = tag(), tag()
    payload = body(user, "@slow 0.3", stream=True)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "X-Request-Id": rid}
    with httpx.stream("POST", keyed.base_url + "/v1/chat/completions", json=payload,
                      headers=headers, timeout=30) as response:
        for line in response.iter_lines():
            if '"content":"Hello' in line:
                break  # one word in, the client hangs up
    retry = keyed.post(payload, headers={"X-Request-Id": rid})
    assert retry.status_code == 200
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                   for line in retry.text.splitlines()
                   if line.startswith("data: {") and '"choices":[{' in line) == REPLY
    assert retry.text.endswith("data: [DONE]\n\n")
    assert calls(upstream, user) == 1
    assert user not in upstream.abandoned
    rows = rows_for(keyed, rid, 2)
    assert [(row["status"], row["completion_tokens"] > 0) for row in billed(rows)] == [(200, True)]


def test_an_unkeyed_request_whose_client_leaves_is_still_cancelled_upstream(keyed, upstream):
    user = tag()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(keyed.base_url + "/v1/chat/completions", json=body(user, "@stall 5"),
                   headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=1.0)
    assert wait_until(lambda: user in upstream.abandoned)


def _one_run_then_replays(gateway: Gateway, upstream: FakeOpenAI, secret: str) -> None:
    rid, user = tag(), tag()
    payload = body(user, max_tokens=5)
    assert gateway.post(payload, key=secret, headers={"X-Request-Id": rid}).status_code == 200
    for _ in range(5):
        replay = gateway.post(payload, key=secret, headers={"X-Request-Id": rid})
        assert (replay.status_code, replay.headers["Idempotent-Replayed"]) == (200, "true")
        assert not any(name.lower().startswith("x-ratelimit") for name in replay.headers)
    assert calls(upstream, user) == 1


def test_replays_consume_neither_rpm_nor_tpm(keyed, upstream):
    # Two requests a minute: the first and one more fit, whatever the replays between them.
    secret = new_key(keyed, "idem-rpm", "--rpm", "2")
    _one_run_then_replays(keyed, upstream, secret)
    assert keyed.post(body(tag()), key=secret).status_code == 200
    refused = keyed.post(body(tag()), key=secret)
    assert (refused.status_code, refused.json()["error"]["type"]) == (429, "requests")
    # 200 tokens a minute: the first takes about 20, five replays as much again would leave
    # too few for a request reserving about 150.
    secret = new_key(keyed, "idem-tpm", "--tpm", "200")
    _one_run_then_replays(keyed, upstream, secret)
    assert keyed.post(body(tag(), max_tokens=120), key=secret).status_code == 200


def test_usage_totals_count_billed_rows_only(keyed):
    secret = new_key(keyed, "idem-totals")
    rid = tag()
    for _ in range(3):
        assert keyed.post(body(tag()) | {"user": "same"}, key=secret,
                          headers={"X-Request-Id": rid}).status_code in (200, 422)
    payload = body("totals")
    for _ in range(3):
        assert keyed.post(payload, key=secret,
                          headers={"X-Request-Id": rid + "-b"}).status_code == 200
    rows_for(keyed, rid + "-b", 3)
    document = json.loads(keyed.cli("usage", "--json").stdout)
    (totals,) = [t for t in document["totals"]["by_key"] if t["key"] == "idem-totals"]
    # Two requests ran (one per id); the rest were a reuse refused and two replays.
    assert totals["requests"] == 2


def test_the_headers_must_agree_and_the_key_must_be_an_id(keyed, upstream):
    user = tag()
    both = keyed.post(body(user), headers={"X-Request-Id": "one", "Idempotency-Key": "two"})
    assert both.status_code == 400
    assert both.json()["error"]["code"] == "idempotency_key_mismatch"
    bad = keyed.post(body(user), headers={"Idempotency-Key": "no spaces allowed"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_idempotency_key"
    assert calls(upstream, user) == 0
    rid = tag()
    same = keyed.post(body(user), headers={"X-Request-Id": rid, "Idempotency-Key": rid})
    assert (same.status_code, same.headers["X-Request-Id"]) == (200, rid)


def test_a_kept_answer_expires_after_its_ttl(tmp_path: Path, upstream):
    config = config_for(tmp_path, upstream, "idempotency: {ttl: 2s}\n")
    running = Gateway(tmp_path, config).start()
    try:
        rid, user = tag(), tag()
        first = running.post(body(user), headers={"X-Request-Id": rid})
        soon = running.post(body(user), headers={"X-Request-Id": rid})
        assert soon.headers.get("Idempotent-Replayed") == "true"
        time.sleep(3)
        later = running.post(body(user), headers={"X-Request-Id": rid})
        assert first.status_code == later.status_code == 200
        assert "Idempotent-Replayed" not in later.headers
        assert calls(upstream, user) == 2
    finally:
        running.stop()
