"""A streamed chat request read in a thread of its own, so a test can act while it runs."""

from __future__ import annotations

import threading

import httpx2 as httpx

from tests.conftest import ADMIN_KEY, Gateway


class Streamed(threading.Thread):
    """`events` holds each `data:` payload as it arrives; `words` counts the content chunks."""

    def __init__(self, running: Gateway, rid: str, text: str, model: str = "fake-model"):
        super().__init__(daemon=True)
        self.url = running.base_url + "/v1/chat/completions"
        self.rid = rid
        self.body = {"model": model, "stream": True,
                     "messages": [{"role": "user", "content": text}]}
        self.events: list[str] = []
        self.words = 0
        self.error: Exception | None = None

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}", "X-Request-Id": self.rid}
        try:
            with httpx.stream("POST", self.url, json=self.body, timeout=60,
                              headers=headers) as response:
                for line in response.iter_lines():  # a broken chunked body raises here
                    if line.startswith("data: "):
                        self.events.append(line.removeprefix("data: "))
                        if '"content":"' in line and '"content":""' not in line:
                            self.words += 1
        except httpx.HTTPError as exc:
            self.error = exc
