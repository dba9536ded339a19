"""One client cannot take the gateway down: the key is checked before the body is read, headers
and bodies have read timeouts, connections are capped, and so are a key's requests in flight."""

from __future__ import annotations

import threading
import time

import httpx2 as httpx
import pytest

from tests.conftest import ADMIN_KEY, started_gateway, wait_until
from tests.server.raw import (
    connect,
    exchange,
    raise_open_file_limit,
    read_reply,
    request,
)

BIG = 32 * 1024 * 1024  # the default server.max_request_bytes
SLOW_BODY_TIMEOUT = 12  # seconds; the slow_edge gateway's body_timeout_s
BODY = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}'


def _fake_model_gateway(folder, upstream, server: str):
    return started_gateway(folder, f"""\
        server: {server}
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: sk-x}}
        models:
          - name: fake-model
            channels: [{{provider: fake, model: upstream-model-v1}}]
        """)


@pytest.fixture(scope="module")
def edge(tmp_path_factory, upstream):
    gateway = _fake_model_gateway(
        tmp_path_factory.mktemp("edge"), upstream,
        "{header_timeout_s: 2, body_timeout_s: 2, max_concurrent_per_key: 2}")
    yield gateway
    gateway.stop()


def _post(headers: dict[str, str], body: bytes = b"") -> bytes:
    return request("POST", "/v1/chat/completions", headers, body)


def test_a_request_without_a_valid_key_is_refused_before_its_body_is_read(edge):
    # 30 clients announce a body of 32 MB less a byte, send 64 KB of it and stall: each is
    # answered 401 from its headers, long before its body could have arrived.
    socks = []
    for i in range(30):
        headers = {"Content-Length": str(BIG - 1), "Content-Type": "application/json"}
        if i % 2:
            headers["Authorization"] = "Bearer tm-not-a-key-of-this-gateway"
        sock = connect(edge.port)
        sock.sendall(_post(headers) + b"x" * 65536)
        socks.append(sock)
    try:
        for sock in socks:
            reply = read_reply(sock, timeout=20)
            assert reply.status == 401, reply.raw
            assert reply.error()["code"] == "invalid_api_key"
            assert reply.headers.get("connection") == "close"
    finally:
        for sock in socks:
            sock.close()


def test_a_declared_length_over_the_limit_is_413_before_reading(edge):
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Length": str(BIG + 1)}
    with connect(edge.port) as sock:
        sock.sendall(_post(headers))  # and not one byte of the body
        reply = read_reply(sock, timeout=20)
    assert reply.status == 413
    assert reply.error()["code"] == "request_too_large"


def test_a_body_that_stalls_is_408_once_the_body_timeout_is_spent(edge):
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Length": str(len(BODY))}
    with connect(edge.port, timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(_post(headers, BODY[:10]))
        reply = read_reply(sock, timeout=30)
        waited = time.monotonic() - started
    assert reply.status == 408
    error = reply.error()
    assert (error["type"], error["code"]) == ("timeout", "body_timeout")
    assert reply.headers.get("connection") == "close"
    assert 1.5 <= waited < 20  # body_timeout_s is 2


def test_headers_trickled_a_byte_at_a_time_are_408_after_the_header_timeout(edge):
    # A slow-loris client: every byte is on time, the headers as a whole are not.
    header = request("GET", "/health/live", {f"X-Pad-{i}": "y" * 20 for i in range(40)})
    socks = [connect(edge.port) for _ in range(20)]
    started = time.monotonic()
    answered: dict[int, bytes] = {}
    for sock in socks:
        sock.setblocking(False)
    try:
        sent = 0
        while len(answered) < len(socks) and time.monotonic() - started < 30:
            for i, sock in enumerate(socks):
                if i in answered:
                    continue
                try:
                    sock.send(header[sent:sent + 1])
                    answered[i] = sock.recv(4096)
                except (BlockingIOError, TimeoutError):
                    pass
                except OSError:
                    answered[i] = b"closed"
            if sent == 1:  # the gateway still serves others meanwhile
                assert httpx.get(edge.base_url + "/health/live", timeout=10).status_code == 200
            sent += 1
            time.sleep(0.3)
        waited = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    assert len(answered) == len(socks)
    assert sent < len(header)  # answered before the headers could ever have been complete
    assert 1.5 <= waited < 30  # header_timeout_s is 2
    for first in answered.values():
        assert first.startswith(b"HTTP/1.1 408 "), first
        assert b'"code":"header_timeout"' in first


def test_a_key_over_its_concurrency_cap_gets_429_and_slots_come_back(edge):
    created = edge.cli("keys", "create", "--name", "two-at-once")
    key = created.stdout.strip().splitlines()[-1].strip()
    client = edge.client(key)
    holding = threading.Barrier(3, timeout=30)
    errors: list[BaseException] = []

    def hold_a_stream() -> None:
        try:
            stream = client.chat.completions.create(
                model="fake-model", stream=True,
                messages=[{"role": "user", "content": "@slow 3"}])
            next(iter(stream))
            holding.wait()  # both streams are open
            holding.wait()  # the third request has been refused
            stream.close()  # a client hanging up mid-stream gives its slot back
        except BaseException as exc:  # the test thread reports it
            errors.append(exc)
            holding.abort()

    threads = [threading.Thread(target=hold_a_stream) for _ in range(2)]
    for thread in threads:
        thread.start()
    holding.wait()
    refused = edge.post({"model": "fake-model", "messages": [{"role": "user", "content": "x"}]},
                        key=key)
    holding.wait()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "concurrency_limit_exceeded"
    assert refused.json()["error"]["type"] == "requests"
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["X-Request-Id"]

    def admitted() -> bool:
        body = {"model": "fake-model", "messages": [{"role": "user", "content": "x"}]}
        return all(edge.post(body, key=key).status_code == 200 for _ in range(3))

    assert wait_until(admitted, timeout=20)


@pytest.fixture(scope="module")
def slow_edge(tmp_path_factory, upstream):
    # The slots are held only until the body timeout: long enough here that a loaded machine's
    # third request still comes while they are.
    gateway = _fake_model_gateway(
        tmp_path_factory.mktemp("slow-edge"), upstream,
        f"{{body_timeout_s: {SLOW_BODY_TIMEOUT}, max_concurrent_per_key: 2}}")
    yield gateway
    gateway.stop()


def test_a_slot_is_held_while_the_body_is_read_and_freed_when_it_fails(slow_edge):
    created = slow_edge.cli("keys", "create", "--name", "slow-bodies")
    key = created.stdout.strip().splitlines()[-1].strip()
    headers = {"Authorization": f"Bearer {key}", "Content-Length": str(len(BODY))}
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "x"}]}
    # Known to the gateway first: a new key's first requests all wait for one reread and resume
    # together, so the third could take a slot before a stalled body did (run 18 of a loop).
    assert slow_edge.post(body, key=key).status_code == 200
    socks = [connect(slow_edge.port, timeout=60) for _ in range(2)]
    try:
        started = time.monotonic()
        for sock in socks:
            sock.sendall(_post(headers, BODY[:5]))
        time.sleep(1)  # headers take milliseconds to read; the slots are held for 12 s
        assert wait_until(lambda: slow_edge.post(body, key=key).status_code == 429,
                          timeout=SLOW_BODY_TIMEOUT - 4)
        for sock in socks:
            assert read_reply(sock, timeout=60).status == 408
        assert time.monotonic() - started >= SLOW_BODY_TIMEOUT - 0.5
    finally:
        for sock in socks:
            sock.close()
    assert slow_edge.post(body, key=key).status_code == 200


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    gateway = started_gateway(tmp_path_factory.mktemp("capped"), """\
        server: {max_connections: 1002, header_timeout_s: 120}
        """)
    yield gateway
    gateway.stop()


def test_live_answers_beside_a_thousand_half_sent_requests_and_the_cap_says_503(capped):
    raise_open_file_limit(1200)
    half = request("POST", "/v1/chat/completions", {"Content-Length": "10"})[:-2]
    socks = []
    try:
        for _ in range(1000):
            sock = connect(capped.port)
            sock.sendall(half)  # the headers never end
            socks.append(sock)
        live = httpx.get(capped.base_url + "/health/live", timeout=10)
        assert live.status_code == 200
        busy = None
        for _ in range(30):  # a few more fit under the cap; then each is answered 503 at once
            sock = connect(capped.port)
            socks.append(sock)
            sock.settimeout(1)
            try:
                first = sock.recv(4096)
            except TimeoutError:
                continue
            busy = first
            break
        assert busy is not None, "no connection was refused at the cap"
        head, _, body = busy.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 ")
        assert b"Retry-After: 1" in head
        assert b'"code":"server_busy"' in body
    finally:
        for sock in socks:
            sock.close()
    # Closed connections free their places.
    def live_again() -> bool:
        try:
            return exchange(capped.port, request("GET", "/health/live",
                                                 {"Connection": "close"})).status == 200
        except (OSError, AssertionError):  # still refused at the cap: reset, or 503
            return False

    assert wait_until(live_again, timeout=20)


def test_the_header_clock_starts_at_a_requests_first_byte_not_at_the_connection(edge):
    # A keep-alive connection idle for longer than the header timeout is still served: only
    # the bytes of a request count against it.
    live = request("GET", "/health/live")
    with connect(edge.port, timeout=30) as sock:
        sock.sendall(live)
        assert read_reply(sock).status == 200
        time.sleep(3)  # header_timeout_s is 2
        sock.sendall(live[:10])
        time.sleep(0.5)
        sock.sendall(live[10:])
        assert read_reply(sock).status == 200


def test_streams_that_run_to_the_end_give_their_slots_back(edge):
    created = edge.cli("keys", "create", "--name", "streams-to-the-end")
    client = edge.client(created.stdout.strip().splitlines()[-1].strip())
    for _ in range(5):  # the cap is 2: a slot kept by a finished stream would refuse the third
        stream = client.chat.completions.create(
            model="fake-model", stream=True, messages=[{"role": "user", "content": "hi"}])
        assert [chunk for chunk in stream]


def test_expect_100_continue_is_given_only_to_a_valid_key(edge):
    expect = {"Expect": "100-continue", "Content-Length": str(len(BODY)),
              "Content-Type": "application/json"}
    refused = exchange(edge.port, _post({**expect, "Authorization": "Bearer tm-wrong"}))
    assert refused.status == 401  # at once, and no 100 Continue before it
    assert refused.error()["code"] == "invalid_api_key"
    too_big = exchange(edge.port, _post({**expect, "Authorization": f"Bearer {ADMIN_KEY}",
                                         "Content-Length": str(BIG + 1)}))
    assert too_big.status == 413
    odd = exchange(edge.port, _post({**expect, "Expect": "something-else",
                                     "Authorization": f"Bearer {ADMIN_KEY}"}))
    assert odd.status == 417
    assert odd.error()["code"] == "expectation_failed"
    with connect(edge.port) as sock:
        sock.sendall(_post({**expect, "Authorization": f"Bearer {ADMIN_KEY}"}))
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(BODY)
        answer = read_reply(sock)
    assert answer.status == 200, answer.raw
    assert answer.json()["object"] == "chat.completion"
