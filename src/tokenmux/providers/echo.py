"""The built-in model `tokenmux/echo`: answers with the last user message, word by word.

For trying the gateway without any provider key and for load tests: deterministic, instant, no
network, and its token counts are real (cl100k_base), so limits and the ledger behave as with a
paid model. `max_tokens` cuts the echo short with finish_reason "length".
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tokenmux import tokens
from tokenmux.errors import InvalidRequest
from tokenmux.providers.base import Call, Completion, StreamState, Usage

_WORDS = re.compile(r"\s*\S+")
# n copies of the echo: bounded, so that `n` cannot multiply a large message into gigabytes.
MAX_ANSWER_CHARS = 8 * 1024 * 1024
_BATCH = 256  # chunks a stream hands over at once: what one write holds in memory


def _answer(call: Call) -> tuple[str, str]:
    """The echoed text and its finish reason."""
    text = ""
    for message in reversed(call.request.body["messages"]):
        if message.get("role") == "user":
            text = tokens.message_text(message.get("content")).strip()
            break
    limit = call.request.max_output
    if limit is not None:
        cut = tokens.truncate(text, limit)
        if cut != text:
            return cut, "length"
    return text, "stop"


def _choices(call: Call, text: str) -> int:
    n = int(call.request.body.get("n") or 1)
    if n > 1 and n * len(text) > MAX_ANSWER_CHARS:
        raise InvalidRequest(f"'n' copies of this echo would exceed {MAX_ANSWER_CHARS} "
                             f"characters; ask for fewer.", param="n")
    return n


class EchoProvider:
    async def complete(self, call: Call) -> Completion:
        text, finish = _answer(call)
        n = _choices(call, text)
        usage = Usage(tokens.count_messages(call.request.body["messages"]),
                      tokens.count_text(text) * n)
        body = {
            "id": "chatcmpl-" + secrets.token_hex(12),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.route.model,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": text, "refusal": None},
                 "logprobs": None, "finish_reason": finish}
                for i in range(n)
            ],
            "usage": usage.as_openai(),
        }
        return Completion(body, usage)

    @asynccontextmanager
    async def stream(self, call: Call) -> AsyncIterator[_EchoStream]:
        yield _EchoStream(call)


class _EchoStream:
    def __init__(self, call: Call):
        self._call = call
        self.state = StreamState()

    async def __aiter__(self) -> AsyncIterator[list[dict[str, Any]]]:
        call = self._call
        text, finish = _answer(call)
        n = _choices(call, text)
        base = {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion.chunk",
                "created": int(time.time()), "model": call.route.model}

        def chunk(index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
            return {**base, "choices": [choice]}

        words = _WORDS.findall(text)
        for i in range(n):
            # A word per chunk, in batches: nothing makes the echo wait between words, and a
            # long echo is never all in memory at once.
            batch = [chunk(i, {"role": "assistant", "content": ""})]
            for word in words:
                batch.append(chunk(i, {"content": word}))
                if len(batch) == _BATCH:
                    yield batch
                    batch = []
            self.state.text.extend(words)
            batch.append(chunk(i, {}, finish))
            yield batch
        self.state.usage = Usage(tokens.count_messages(call.request.body["messages"]),
                                 tokens.count_text(text) * n)
        self.state.finished = True
