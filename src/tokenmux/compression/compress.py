"""One request's compression, from the threshold check to the conversation that goes upstream.

    estimate → count → segment → reuse a stored summary, or decide and summarise → inject
    → (still over the context window: drop the oldest turns)

It changes `request.body["messages"]` in place, or leaves it as it came (fail open: whatever
goes wrong with the summary, the original conversation is sent), and returns what the response
headers and the ledger say of it.

Turn after turn, the same summary is sent until a block of turns (half the recent window) has
fallen out of the recent window; only then is that block folded into it. What the target
receives thus begins with the same bytes for several turns in a row, and the provider's own
prompt cache keeps hitting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from tokenmux import tokens
from tokenmux.api.chat import ChatRequest
from tokenmux.auth import Principal
from tokenmux.compression import decide, segment
from tokenmux.compression.cache import prefix_keys
from tokenmux.compression.settings import Settings
from tokenmux.compression.summarise import SummariserFailed, prompt, summarise
from tokenmux.routing import Route
from tokenmux.routing.retry import Deadline
from tokenmux.routing.tiers import Tier

if TYPE_CHECKING:
    from tokenmux.gateway import Gateway

LOOKBACK = 32  # turn starts searched for a stored summary, the latest first
MIN_SUMMARY_SECONDS = 0.5  # less than this left for the summariser: it is not called


@dataclass(slots=True)
class Result:
    applied: bool
    original: int | None = None  # tokens, when they were counted
    final: int | None = None
    cached: bool = False
    error: str | None = None  # why it was not applied (or, with truncation, not summarised)

    def headers(self) -> dict[str, str]:
        headers = {"X-Compression-Applied": "true" if self.applied else "false"}
        if self.original is not None and self.final is not None:
            headers["X-Compression-Original-Tokens"] = str(self.original)
            headers["X-Compression-Final-Tokens"] = str(self.final)
            headers["X-Compression-Savings"] = str(self.original - self.final)
        if self.cached:
            headers["X-Compression-Cached"] = "true"
        if self.error is not None:
            headers["X-Compression-Error"] = self.error
        return headers


@dataclass(slots=True)
class Job:
    """What compressing one request needs to know besides its settings."""

    gw: Gateway
    request: ChatRequest
    body_size: int  # the request body's bytes: the estimate that spares most requests a count
    routes: list[Route]
    deadline: Deadline
    tier: Tier
    request_id: str
    principal: Principal
    parent_id: str  # the request's ledger row, which the summariser's row points to


async def compress(job: Job, settings: Settings) -> Result:
    window = _window(job)
    threshold = settings.threshold_for(window)
    limit = None if window is None else window - (job.request.max_output or 0)
    trigger = threshold if limit is None or limit <= 0 else min(threshold, limit)
    # At most four bytes of JSON per token for prose, and rarely fewer than two: a body this
    # small is below the threshold without counting a token.
    if job.body_size // 4 < trigger // 2:
        return Result(False, error="below-threshold")
    messages = job.request.body["messages"]
    conversation = await tokens.measured(tokens.messages_size(messages),
                                         lambda: segment.read(messages, settings.keep_turns))
    original = conversation.tokens
    if original < threshold:
        result = Result(False, original, original, error="below-threshold")
    elif settings.strategy == "truncate":
        kept, final = segment.truncate(conversation, threshold)
        job.request.body["messages"] = kept
        result = Result(final < original, original, final,
                        error=None if final < original else "nothing-to-compress")
    else:
        result = await _summarised(job, settings, conversation)
    if limit is not None and limit > 0 and result.final is not None and result.final > limit:
        # The last resort, for a conversation the target could not take even so.
        current = job.request.body["messages"]
        last = await tokens.measured(tokens.messages_size(current),
                                     lambda: segment.read(current, 1))
        kept, final = segment.truncate(last, limit)
        job.request.body["messages"] = kept
        result.applied, result.final = result.applied or final < result.final, final
    return result


def _window(job: Job) -> int | None:
    """The smallest context window among the models the request may go to."""
    windows = {job.gw.catalog.resolve(route.model).context_window for route in job.routes}
    known = [w for w in windows if w is not None]
    return min(known) if known else None


async def _summarised(job: Job, settings: Settings,
                      conversation: segment.Conversation) -> Result:
    original, cut = conversation.tokens, conversation.cut
    model = settings.model
    if model is None:
        return Result(False, original, original, error="no-compression-model")
    if conversation.span_tokens(0, cut) == 0:
        return Result(False, original, original, error="nothing-to-compress")
    ends = conversation.boundaries()[-LOOKBACK:]
    scope = f"{job.principal.key_id}\x00{model.name}\x00{settings.strategy}"
    keys = prefix_keys(conversation.messages, ends, scope)
    start, stored = 0, None
    for end in reversed(ends):
        if (raw := await job.gw.summaries.get(keys[end])) is not None:
            start, stored = end, orjson.loads(raw)
            break
    block = max(1, settings.keep_turns // 2)
    if stored is not None and conversation.turns_in(start, cut) < block:
        return _injected(job, conversation, start, stored, cached=True)
    span_tokens = conversation.span_tokens(start, cut) + (stored["tokens"] if stored else 0)
    budget = decide.summary_budget(span_tokens, settings.strategy)
    reason = None
    if decide.too_small(span_tokens, budget):
        reason = "compressible-too-small"
    elif not decide.worth_it(span_tokens, budget, model.list_price,
                             job.gw.catalog.resolve(job.request.model).list_price):
        reason = "compression-not-cost-effective"
    elif (spare := job.deadline.remaining() / 2) < MIN_SUMMARY_SECONDS:
        reason = "summarizer-timeout"
    if reason is not None:
        if stored is not None:  # not worth folding more in: the stored summary still serves
            return _injected(job, conversation, start, stored, cached=True)
        return Result(False, original, original, error=reason)
    asked = prompt(conversation.span(start, cut), stored["text"] if stored else None, budget)
    try:
        summary = await summarise(job.gw, model, asked, budget,
                                  Deadline(int(spare * 1000), time.perf_counter()),
                                  job.tier, job.request_id, job.principal, job.parent_id)
    except SummariserFailed as failed:
        return Result(False, original, original, error=failed.reason)
    message = segment.summary_message(summary.text)
    made = {"text": summary.text, "tokens": tokens.count_messages([message]) - 3}
    gw = job.gw
    await gw.summaries.put(keys[cut], orjson.dumps(made), gw.config.compression.cache_ttl_s)
    return _injected(job, conversation, cut, made, cached=False)


def _injected(job: Job, conversation: segment.Conversation, covered: int,
              summary: dict[str, Any], cached: bool) -> Result:
    job.request.body["messages"] = segment.inject(conversation, covered,
                                                  segment.summary_message(summary["text"]))
    original = conversation.tokens
    final = original - conversation.span_tokens(0, covered) + summary["tokens"]
    return Result(True, original, final, cached=cached)
