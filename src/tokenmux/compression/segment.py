"""Which messages of a conversation may be compressed, and the conversation rebuilt without them.

A turn starts at a user message. The last `keep_turns` turns are kept verbatim, so the last user
message always is; before them, system and developer messages stay where they are, and so does
any message carrying an image, audio or a file. Everything else before the recent turns is
compressible. Because the line between old and recent falls on a turn's start, an assistant
message with `tool_calls` and the `tool` messages answering it always land on the same side, and
truncation drops whole turns, so a pair is never split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenmux import tokens

_MEDIA = frozenset({"image_url", "input_audio", "file"})
SUMMARY_HEAD = "[Summary of the earlier conversation, written by the gateway in place of its " \
               "messages]\n"


def stays(message: dict[str, Any]) -> bool:
    """A message that is never compressed away, wherever it stands."""
    if message.get("role") in ("system", "developer"):
        return True
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(part, dict) and part.get("type") in _MEDIA for part in content)


@dataclass(slots=True)
class Conversation:
    messages: list[dict[str, Any]]
    turns: list[int]  # the index where each turn starts (a user message)
    cut: int  # the first message of the recent turns; nothing from here on is compressed
    # Each message's tokens, framing included, from `base` on; the messages before it are known
    # by their totals alone (a stored summary's), so they are never counted again.
    sizes: list[int] = field(default_factory=list)
    base: int = 0
    base_tokens: int = 0  # all the messages before `base`
    base_span: int = 0  # the compressible ones among them

    def count(self, base: int = 0, base_tokens: int = 0, base_span: int = 0) -> None:
        """Counts each message from `base` on exactly (the caller has judged the conversation
        near its threshold); blocking, and about 0.05 ms per thousand characters."""
        self.base, self.base_tokens, self.base_span = base, base_tokens, base_span
        self.sizes = [0] * base + [tokens.count_messages([m]) - 3 for m in self.messages[base:]]

    def chars(self, base: int = 0) -> int:
        return tokens.messages_size(self.messages[base:])

    @property
    def tokens(self) -> int:
        return self.tokens_to(len(self.messages)) + 3  # as tokens.count_messages primes a reply

    def tokens_to(self, end: int) -> int:
        return self.base_tokens + sum(self.sizes[self.base:end])

    def span_to(self, end: int) -> int:
        return self.base_span + self.span_tokens(self.base, end)

    def boundaries(self) -> list[int]:
        """Where a summary may end: the starts of the turns before the recent ones, and the
        cut itself."""
        return [i for i in self.turns if 0 < i <= self.cut]

    def span(self, start: int, end: int) -> list[dict[str, Any]]:
        return [m for m in self.messages[start:end] if not stays(m)]

    def span_tokens(self, start: int, end: int) -> int:
        return sum(size for m, size in zip(self.messages[start:end], self.sizes[start:end],
                                           strict=True) if not stays(m))

    def turns_in(self, start: int, end: int) -> int:
        return sum(1 for i in self.turns if start <= i < end)


def read(messages: list[dict[str, Any]], keep_turns: int) -> Conversation:
    """The conversation's turns and where its recent ones begin; nothing is counted yet."""
    turns = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    cut = turns[-keep_turns] if len(turns) >= keep_turns else (turns[0] if turns else 0)
    return Conversation(messages, turns, cut)


def summary_message(summary: str) -> dict[str, Any]:
    return {"role": "system", "content": SUMMARY_HEAD + summary}


def inject(conversation: Conversation, covered: int, summary: dict[str, Any]
           ) -> list[dict[str, Any]]:
    """The conversation with the compressible messages before `covered` replaced by `summary`,
    placed where the first of them was; what stays keeps its order."""
    rebuilt: list[dict[str, Any]] = []
    placed = False
    for message in conversation.messages[:covered]:
        if stays(message):
            rebuilt.append(message)
        elif not placed:
            rebuilt.append(summary)
            placed = True
    rebuilt.extend(conversation.messages[covered:])
    return rebuilt


def truncate(conversation: Conversation, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Middle-out: the oldest compressible turns dropped, whole, until the conversation fits
    `limit` tokens (or nothing before the recent turns is left to drop). Returns the messages
    and their tokens. Every message must have been counted (`count()` from 0)."""
    messages, sizes = conversation.messages, conversation.sizes
    total = conversation.tokens
    starts = [0, *(i for i in conversation.turns if 0 < i < conversation.cut)]
    dropped: set[int] = set()
    for start, end in zip(starts, [*starts[1:], conversation.cut], strict=True):
        if total <= limit:
            break
        for i in range(start, end):
            if not stays(messages[i]):
                dropped.add(i)
                total -= sizes[i]
    return [m for i, m in enumerate(messages) if i not in dropped], total
