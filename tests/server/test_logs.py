"""The gateway's log names each request by its id and never shows a key, whatever path a key
takes into it: a malformed header line, an oversized one, a parser's traceback."""

from __future__ import annotations

import logging
import re
import secrets

import httpx2 as httpx

from tests.conftest import Gateway
from tests.server.raw import exchange, request
from tokenmux.logs import FORMAT, RedactingFormatter, redact


def test_keys_never_reach_the_log_and_every_request_line_has_its_id(tmp_path):
    admin = "tm-" + secrets.token_urlsafe(32)
    google = "AIza" + secrets.token_urlsafe(27)
    gateway = Gateway(tmp_path, f"""\
database: {tmp_path}/gateway.db
admin_key: {admin}
providers:
  dead: {{kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-dead-provider-key-0042}}
models:
  - name: dead-model
    channels: [{{provider: dead, model: nothing}}]
""").start()
    replies = []
    try:
        sends = [
            request("GET", "/v1/models", {"Authorization": f"Bearer {admin[:12]}\x01{admin[12:]}"}),
            request("GET", "/v1/models", {"Authorization": f"Bearer {admin}" + " " * 8200}),
            request("GET", "/v1/models", {"x-api-key": admin + "\x7f" + "b" * 9000}),
            request("GET", "/v1/models", {"x-goog-api-key": google + "\x00"}),
            request("POST", "/v1/chat/completions", {"Authorization": f"Bearer {admin}",
                                                     "Transfer-Encoding": "chunked"},
                    b"zz\r\n"),
            request("GET", "/v1/models", {"Authorization": f"Bearer {admin}"}) + b"\x00junk",
            # 80 KB of headers that never end: refused before aiohttp has a request to log.
            request("GET", "/v1/models", {"Authorization": f"Bearer {admin}",
                                          **{f"X-Pad-{i}": "p" * 8000 for i in range(10)}})[:-2],
        ]
        replies = [exchange(gateway.port, raw) for raw in sends]
        failed = httpx.post(gateway.base_url + "/v1/chat/completions",
                            headers={"Authorization": f"Bearer {admin}"},
                            json={"model": "dead-model", "messages": [{"role": "user",
                                                                       "content": "hi"}]},
                            timeout=30)
    finally:
        gateway.stop()
    log = gateway.output
    secret_parts = [admin[i:i + 8] for i in range(3, len(admin) - 8, 4)]
    secret_parts += [google[i:i + 8] for i in range(0, len(google) - 8, 4)]
    for reply in replies:
        assert 400 <= reply.status <= 501
        reply.error()
        for part in secret_parts:
            assert part.encode() not in reply.raw
    for part in [*secret_parts, "sk-dead-provider-key"]:
        assert part not in log, f"{part!r} is in the log:\n{log}"
    # Each refusal was logged under the id its answer carries; so was the upstream failure.
    assert failed.status_code == 502
    for rid in [reply.headers["x-request-id"] for reply in replies] + [
            failed.headers["X-Request-Id"]]:
        assert re.search(rf"\[{re.escape(rid)}\]: ", log), f"{rid} not in the log:\n{log}"
    line = next(line for line in log.splitlines() if failed.headers["X-Request-Id"] in line)
    assert "502" in line and "bad_gateway" in line


def test_the_formatter_masks_keys_in_messages_arguments_and_tracebacks():
    admin = "tm-" + secrets.token_urlsafe(32)
    hexed = secrets.token_hex(24)
    try:
        raise ValueError(f"Invalid HTTP header: b'X-Api-Key: {admin[:9]}\\x01{admin[9:]}'")
    except ValueError as exc:
        error = exc
    record = logging.LogRecord(
        "aiohttp.server", logging.ERROR, __file__, 1,
        "Error handling request %r %s %s", ({"authorization": f"Bearer {admin}"}, hexed,
                                            "sk-proj-" + admin[3:]),
        (type(error), error, error.__traceback__))
    text = RedactingFormatter(FORMAT).format(record)
    assert "Traceback" in text and "ValueError" in text
    for part in [admin[i:i + 8] for i in range(3, len(admin) - 8, 4)] + [hexed[:12]]:
        assert part not in text, text
    # What an operator needs stays readable.
    assert "req_0123456789abcdef01234567" in redact("id req_0123456789abcdef01234567")
    assert "chatcmpl-8e068aab971a8a58ea1890b4" in redact("chatcmpl-8e068aab971a8a58ea1890b4")
    assert "/site-packages/aiohttp/compression_utils.py" in redact(
        "/usr/lib/python3.11/site-packages/aiohttp/compression_utils.py")
