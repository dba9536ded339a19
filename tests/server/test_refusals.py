"""Whatever a client sends, the answer is an OpenAI error with the right status and a request
id: malformed HTTP, oversized headers, bytes no key has, bodies that do not decode, bodies
that are not JSON, lenient numbers."""

from __future__ import annotations

import gzip

import openai
import pytest

from tests.conftest import ADMIN_KEY
from tests.server.raw import closed_by_peer, connect, exchange, read_reply, request

BODY = b'{"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}'
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
SECRET_PART = ADMIN_KEY[3:]


def _chat(headers: dict[str, str], body: bytes = BODY) -> bytes:
    return request("POST", "/v1/chat/completions",
                   {**headers, "Content-Length": str(len(body)), "Connection": "close"}, body)


MALFORMED = {
    "header_over_8k": (request("GET", "/v1/models", {"X-Big": "a" * 9000}), 431,
                       "request_header_too_large"),
    "key_padded_past_8k": (request("GET", "/v1/models",
                                   {"Authorization": f"Bearer {ADMIN_KEY}" + " " * 8200}),
                           431, "request_header_too_large"),
    "request_line_over_8k": (request("GET", "/v1/models?q=" + "a" * 9000), 431,
                             "request_header_too_large"),
    "too_many_headers": (request("GET", "/v1/models", {f"X-H{i}": "1" for i in range(200)}),
                         431, "request_header_too_large"),
    "key_with_a_control_byte": (request("GET", "/v1/models", {
        "Authorization": f"Bearer {ADMIN_KEY[:10]}\x01{ADMIN_KEY[10:]}"}), 400,
        "malformed_request"),
    "bad_chunk_size": (request("POST", "/v1/chat/completions",
                               {**AUTH, "Transfer-Encoding": "chunked"}, b"zz\r\nabc\r\n"),
                       400, "malformed_request"),
    "length_and_chunked": (request("POST", "/v1/chat/completions",
                                   {**AUTH, "Content-Length": "5",
                                    "Transfer-Encoding": "chunked"}, b"0\r\n\r\n"),
                           400, "malformed_request"),
    "bare_cr": (b"GET /v1/models HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", 400,
                "malformed_request"),
    "bare_lf_in_a_value": (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: b\nc\r\n\r\n", 400,
                           "malformed_request"),
    "unknown_method": (request("FROB", "/v1/models"), 501, "method_not_implemented"),
    "not_http": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32, 501,
                 "method_not_implemented"),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_http_refusals_are_openai_errors_that_quote_nothing(gateway, name):
    raw, status, code = MALFORMED[name]
    reply = exchange(gateway.port, raw)
    assert reply.status == status, reply.raw
    assert reply.error()["code"] == code
    assert SECRET_PART[:8].encode() not in reply.raw
    assert b"aaaaaaaa" not in reply.raw  # no echo of what was sent


def test_a_refused_malformed_request_closes_its_connection(gateway):
    with connect(gateway.port) as sock:
        sock.sendall(MALFORMED["bad_chunk_size"][0])
        assert closed_by_peer(sock, timeout=20)


def test_headers_over_64k_in_all_are_431_though_each_is_within_its_limit(gateway):
    head = request("GET", "/v1/models", {f"X-Pad-{i}": "p" * 8000 for i in range(10)})
    with connect(gateway.port) as sock:
        sock.sendall(head[:-2])  # 80 KB of headers, and no end to them yet
        reply = read_reply(sock)
    assert reply.status == 431
    assert reply.error()["code"] == "request_header_too_large"


def test_a_method_a_route_does_not_take_is_405(gateway):
    reply = exchange(gateway.port, request("DELETE", "/v1/chat/completions", AUTH))
    assert reply.status == 405
    assert reply.error()["code"] == "method_not_allowed"


@pytest.mark.parametrize("header", ["Authorization", "x-api-key"])
def test_a_key_with_a_byte_that_is_not_utf8_is_401(gateway, header):
    value = b"Bearer tm-\xff\xfe-not-utf8" if header == "Authorization" else b"tm-\xff\xfe"
    raw = (f"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{header}: ").encode()
    reply = exchange(gateway.port, raw + value + b"\r\n\r\n")
    assert reply.status == 401
    assert reply.error()["code"] == "invalid_api_key"
    reply = exchange(gateway.port, raw.replace(b"GET /v1/models", b"POST /v1/chat/completions")
                     + value + f"\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
    assert reply.status == 401


def test_a_gzip_body_that_is_not_gzip_is_400(gateway):
    reply = exchange(gateway.port, _chat({**AUTH, "Content-Encoding": "gzip"}))
    assert reply.status == 400
    assert reply.error()["code"] == "invalid_body"


def test_a_real_gzip_body_is_served(gateway):
    reply = exchange(gateway.port, _chat({**AUTH, "Content-Encoding": "gzip",
                                          "Content-Type": "application/json"},
                                         gzip.compress(BODY)))
    assert reply.status == 200, reply.raw
    assert reply.json()["object"] == "chat.completion"


def test_an_encoding_the_gateway_cannot_decode_is_415(gateway):
    reply = exchange(gateway.port, _chat({**AUTH, "Content-Encoding": "compress"}))
    assert reply.status == 415
    assert reply.error()["code"] == "unsupported_encoding"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "json"])
def test_a_body_that_says_it_is_not_json_is_415(gateway, content_type):
    reply = exchange(gateway.port, _chat({**AUTH, "Content-Type": content_type}))
    assert reply.status == 415
    error = reply.error()
    assert (error["type"], error["code"]) == ("invalid_request_error", "unsupported_media_type")


@pytest.mark.parametrize("content_type", [None, "application/json",
                                          "application/json; charset=utf-8",
                                          "Application/JSON", "application/vnd.api+json"])
def test_json_types_and_no_type_are_served(gateway, content_type):
    headers = dict(AUTH) if content_type is None else {**AUTH, "Content-Type": content_type}
    reply = exchange(gateway.port, _chat(headers))
    assert reply.status == 200, reply.raw


@pytest.mark.parametrize("value", ["\uff16\uff10\uff10\uff10", "6_000", "+6000", "6000.0",
                                   "0x1770"])
def test_x_timeout_takes_ascii_digits_only(gateway, value):
    raw = _chat(AUTH).replace(b"Connection: close", b"X-Timeout: " + value.encode()
                              + b"\r\nConnection: close")
    reply = exchange(gateway.port, raw)
    assert reply.status == 400, reply.raw
    assert reply.error()["code"] == "invalid_timeout"


def test_x_timeout_in_ascii_digits_is_taken(gateway):
    response = gateway.post({"model": "fake-model",
                             "messages": [{"role": "user", "content": "hi"}]},
                            headers={"X-Timeout": "6000"})
    assert response.status_code == 200


def test_the_sdk_lists_and_retrieves_models_under_api_v1(gateway):
    client = openai.OpenAI(base_url=gateway.base_url + "/api/v1", api_key=ADMIN_KEY,
                           max_retries=0)
    ids = [model.id for model in client.models.list()]
    assert "fake-model" in ids
    assert client.models.retrieve("fake-model").id == "fake-model"
    assert client.models.retrieve("fake-model@2026-01-01").id == "fake-model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway.base_url + "/api/v1", api_key="tm-wrong",
                      max_retries=0).models.list()
