"""The compression model's call: the prompt, and the call itself through the gateway's own
routing (the model's channels in its plan's order, retries with backoff, the breaker), within
the time the request can spare for it. The call leaves a ledger row of its own, linked to its
request's row, whether it answered or not.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tokenmux.api.chat import ChatRequest
from tokenmux.auth import Principal
from tokenmux.errors import DeadlineExceeded, GatewayError, UpstreamFailed, UpstreamTimeout
from tokenmux.ledger import UsageRow
from tokenmux.ledger.row import COMPRESSION
from tokenmux.providers.base import Call, Usage
from tokenmux.routing.catalog import ModelEntry
from tokenmux.routing.params import dropped
from tokenmux.routing.plan import plan
from tokenmux.routing.retry import Attempts, Deadline, attempt_in_turn
from tokenmux.routing.tiers import NAMES as TIER_NAMES
from tokenmux.routing.tiers import Tier
from tokenmux.tokens import estimate_prompt, message_text, messages_size

if TYPE_CHECKING:
    from tokenmux.gateway import Gateway

INSTRUCTIONS = (
    "You condense the earlier part of a conversation between a user and an assistant, so that "
    "the assistant can carry on without the original messages. Keep every fact, decision, "
    "open question, commitment, name, number, date, identifier, file path, code fragment and "
    "tool result that a later reply could need, and say who said or did what. Add nothing "
    "that is not in the conversation, do not answer it, do not address the reader. Write "
    "short factual bullet points, in the conversation's own language, in at most {words} "
    "words."
)


@dataclass(slots=True)
class Summary:
    text: str
    usage: Usage


class SummariserFailed(Exception):
    def __init__(self, reason: str, spent: int):
        super().__init__(reason)
        self.reason = reason  # as X-Compression-Error says it
        self.spent = spent  # tokens billed all the same (an answer without text)


def prompt(span: list[dict[str, Any]], previous: str | None, max_tokens: int
           ) -> list[dict[str, Any]]:
    lines = [_line(message) for message in span]
    if previous is None:
        task = "The conversation so far:\n\n" + "\n".join(lines)
    else:
        task = ("The summary of the conversation so far:\n\n" + previous + "\n\nThe messages "
                "that came after it:\n\n" + "\n".join(lines) + "\n\nWrite one summary of both, "
                "keeping what the earlier summary holds.")
    return [{"role": "system", "content": INSTRUCTIONS.format(words=max_tokens * 3 // 4)},
            {"role": "user", "content": task}]


def _line(message: dict[str, Any]) -> str:
    role = message.get("role")
    text = message_text(message.get("content"))
    if role == "tool":
        return f"[tool result {message.get('tool_call_id')}] {text}"
    calls = message.get("tool_calls") or []
    called = "; ".join(f"{c['function']['name']}({c['function']['arguments']})"
                       for c in calls if isinstance(c, dict) and c.get("type") == "function")
    if called:
        text = f"{text} [calls {called}]".strip()
    return f"[{role}] {text}"


async def summarise(gw: Gateway, entry: ModelEntry, messages: list[dict[str, Any]],
                    max_tokens: int, budget: Deadline, tier: Tier, request_id: str,
                    principal: Principal, parent_id: str) -> Summary:
    """The compression model's summary; SummariserFailed when it has none to give in time."""
    body: dict[str, Any] = {"model": entry.name, "messages": messages, "max_tokens": max_tokens}
    request = ChatRequest(body, entry.name, False, None, max_tokens, None, [])
    attempts = Attempts(tier=tier)
    routes = plan(gw.catalog, entry, [], tier, gw.rng)
    started = time.perf_counter()
    usage, status, code = Usage(source="none"), 200, None
    try:
        completion = await attempt_in_turn(
            routes, budget, gw.config.routing, attempts, gw.rng,
            lambda route, limit: gw.providers[route.provider].complete(
                Call(request, route, request_id, limit, dropped(body, route.drop))),
            limits_itself=True, quotas=gw.limiter,
            estimate=estimate_prompt(messages_size(messages)) + max_tokens)
        usage = completion.usage
        text = _text(completion.body)
        if not text:
            raise UpstreamFailed(f"The compression model {entry.name!r} answered no text.")
        return Summary(text, usage)
    except GatewayError as error:
        status, code = error.status, error.code
        timed_out = isinstance(error, DeadlineExceeded | UpstreamTimeout)
        reason = "summarizer-timeout" if timed_out else "summarizer-failed"
        raise SummariserFailed(reason, usage.prompt_tokens + usage.completion_tokens) from error
    except asyncio.CancelledError:
        status, code = 499, "client_closed"  # the request ended (its client left) meanwhile
        raise
    finally:
        attempts.release()
        attempts.settle(usage.prompt_tokens + usage.completion_tokens)
        gw.ledger.record(UsageRow(
            request_id=request_id, key_id=principal.key_id, key_name=principal.name,
            end_user=None, requested_model=entry.name, route=attempts.route,
            attempts=attempts.count, tier=TIER_NAMES[tier],
            queue_ms=attempts.queue_seconds * 1000, stream=False, status=status,
            error_code=code, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens, usage_source=usage.source,
            latency_ms=(time.perf_counter() - started) * 1000, ttft_ms=None,
            kind=COMPRESSION, parent_id=parent_id))


def _text(body: dict[str, Any]) -> str:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return message_text(content).strip()
