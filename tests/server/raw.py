"""Plain sockets for the HTTP edge's tests: what a misbehaving client sends, byte for byte."""

from __future__ import annotations

import resource
import socket
import time
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes
    elapsed: float

    def json(self) -> Any:
        return orjson.loads(self.body)

    def error(self) -> dict[str, Any]:
        """The OpenAI error object, after checking the shape every refusal must have."""
        assert self.headers.get("content-type", "").startswith("application/json"), self.raw
        assert self.headers.get("x-request-id"), self.raw
        body = self.json()
        assert set(body) == {"error"}, body
        assert {"message", "type", "param", "code"} <= set(body["error"]), body
        return body["error"]


def connect(port: int, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_reply(sock: socket.socket, timeout: float = 10) -> Reply:
    """Reads one response: headers, then a body of its Content-Length."""
    started = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head, "the connection closed without an answer"
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Reply(status, headers, body[:length], data, time.monotonic() - started)


def exchange(port: int, raw: bytes, timeout: float = 10) -> Reply:
    with connect(port, timeout) as sock:
        sock.sendall(raw)
        return read_reply(sock, timeout)


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True once the other side has closed the connection (reading whatever it sent first)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


def request(method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes = b"", *, extra: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n").encode() + extra + b"\r\n" + body


def raise_open_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(wanted, soft)), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= wanted
