"""The built-in model `tokenmux/echo`: answers with the last user message, word by word.

For trying the gateway without any provider key and for load tests: deterministic, instant, no
network, and its token counts are real (cl100k_base), so limits and the ledger behave as with a
paid model. `max_tokens` cuts the echo short with finish_reason "length".
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from tokenmux import tokens
from tokenmux.errors import InvalidRequest
from tokenmux.providers.base import Call, Completion, StreamState, Usage

_WORDS = re.compile(r"\s*\S+")
# n copies of the echo: bounded, so that `n` cannot multiply a large message into gigabytes.
MAX_ANSWER_CHARS = 8 * 1024 * 1024
_BATCH = 1024  # words in one write of a stream


def _word_batches(text: str) -> Iterator[list[str]]:
    """The words of `text` in lists of _BATCH, the last one shorter (empty, if need be)."""
    words: list[str] = []
    for match in _WORDS.finditer(text):
        words.append(match.group())
        if len(words) == _BATCH:
            yield words
            words = []
    yield words


def _answer(call: Call) -> tuple[str, str, Usage]:
    """The echoed text, its finish reason and the usage of all `n` answers."""
    messages = call.request.body["messages"]
    text = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            text = tokens.message_text(message.get("content")).strip()
            break
    limit, finish = call.request.max_output, "stop"
    if limit is not None:
        cut = tokens.truncate(text, limit)
        if cut != text:
            text, finish = cut, "length"
    usage = Usage(tokens.count_messages(messages), tokens.count_text(text) * _choices(call, text))
    return text, finish, usage


async def _measured_answer(call: Call) -> tuple[str, str, Usage]:
    # The answer is the last user message: at most the prompt's size again to encode.
    size = 2 * tokens.messages_size(call.request.body["messages"])
    return await tokens.measured(size, lambda: _answer(call))


def _choices(call: Call, text: str) -> int:
    n = int(call.request.body.get("n") or 1)
    if n > 1 and n * len(text) > MAX_ANSWER_CHARS:
        raise InvalidRequest(f"'n' copies of this echo would exceed {MAX_ANSWER_CHARS} "
                             f"characters; ask for fewer.", param="n")
    return n


class EchoProvider:
    async def complete(self, call: Call) -> Completion:
        text, finish, usage = await _measured_answer(call)
        n = _choices(call, text)
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
        text, finish, usage = await _measured_answer(call)
        n = _choices(call, text)
        base = {"id": "chatcmpl-" + secrets.token_hex(12), "object": "chat.completion.chunk",
                "created": int(time.time()), "model": call.route.model}

        def chunk(index: int, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
            return {**base, "choices": [choice]}

        for i in range(n):
            # A word per chunk, in batches of up to _BATCH words (one batch, unless the echo is
            # long): nothing makes the echo wait between words, but a long one lets the other
            # requests run between its batches.
            batch = [chunk(i, {"role": "assistant", "content": ""})]
            for words in _word_batches(text):
                if not batch:
                    await asyncio.sleep(0)
                batch.extend(chunk(i, {"content": word}) for word in words)
                if len(words) < _BATCH:
                    batch.append(chunk(i, {}, finish))
                yield batch
                self.state.text.append("".join(words))
                batch = []
        self.state.usage = usage
        self.state.finished = True
