"""One request's compression, from the threshold check to the conversation that goes upstream.

    estimate → segment → find a stored summary → count (what it does not cover) → reuse it, or
    decide and summarise → inject → (still over the context window: drop the oldest turns)

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
from tokenmux.routing.catalog import ModelEntry
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
    spent: int = 0  # the compression model's tokens, in and out, for the key's rate limit

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
    conversation = segment.read(job.request.body["messages"], settings.keep_turns)
    stored = None
    if settings.strategy != "truncate" and settings.model is not None:
        stored = await _stored(job, settings, settings.model, conversation)
    # What a stored summary covers is known by its totals: only the rest is counted.
    await _count(conversation, stored)
    original = conversation.tokens
    if original < threshold:
        result = Result(False, original, original, error="below-threshold")
    elif settings.strategy == "truncate":
        kept, final = segment.truncate(conversation, threshold)
        if final < original:
            # Only a conversation that changed is replaced: the one as sent may go natively.
            job.request.body["messages"] = kept
        result = Result(final < original, original, final,
                        error=None if final < original else "nothing-to-compress")
    else:
        result = await _summarised(job, settings, conversation, stored)
    if limit is not None and limit > 0 and result.final is not None and result.final > limit:
        # The last resort, for a conversation the target could not take even so.
        last = segment.read(job.request.body["messages"], 1)
        await _count(last, None)
        kept, final = segment.truncate(last, limit)
        if final < result.final:
            job.request.body["messages"] = kept
        result.applied, result.final = result.applied or final < result.final, final
    return result


@dataclass(slots=True)
class _Stored:
    keys: dict[int, str]  # each turn start's cache key
    start: int = 0  # where the stored summary ends; 0: none found
    # {text, tokens: the summary message's, prefix: the tokens of every message it ends at,
    # span: of those, the compressible ones'}
    entry: dict[str, Any] | None = None


async def _stored(job: Job, settings: Settings, model: ModelEntry,
                  conversation: segment.Conversation) -> _Stored:
    """The latest stored summary of this conversation's prefix, if any."""
    ends = conversation.boundaries()[-LOOKBACK:]
    scope = f"{job.principal.key_id}\x00{model.name}\x00{settings.strategy}"
    found = _Stored(prefix_keys(conversation.messages, ends, scope))
    for end in reversed(ends):
        if (raw := await job.gw.summaries.get(found.keys[end])) is not None:
            found.start, found.entry = end, orjson.loads(raw)
            break
    return found


async def _count(conversation: segment.Conversation, stored: _Stored | None) -> None:
    entry = None if stored is None else stored.entry
    if stored is None or entry is None:
        await tokens.measured(conversation.chars(), conversation.count)
        return
    await tokens.measured(conversation.chars(stored.start), lambda: conversation.count(
        stored.start, entry["prefix"], entry["span"]))


def _window(job: Job) -> int | None:
    """The smallest context window among the models the request may go to."""
    windows = {job.gw.catalog.resolve(route.model).context_window for route in job.routes}
    known = [w for w in windows if w is not None]
    return min(known) if known else None


async def _summarised(job: Job, settings: Settings, conversation: segment.Conversation,
                      found: _Stored | None) -> Result:
    original, cut = conversation.tokens, conversation.cut
    model = settings.model
    if model is None or found is None:
        return Result(False, original, original, error="no-compression-model")
    if conversation.span_to(cut) == 0:
        return Result(False, original, original, error="nothing-to-compress")
    start, stored = found.start, found.entry
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
        return Result(False, original, original, error=failed.reason, spent=failed.spent)
    message = segment.summary_message(summary.text)
    made = {"text": summary.text, "tokens": tokens.count_messages([message]) - 3,
            "prefix": conversation.tokens_to(cut), "span": conversation.span_to(cut)}
    gw = job.gw
    await gw.summaries.put(found.keys[cut], orjson.dumps(made),
                           gw.config.compression.cache_ttl_s)
    result = _injected(job, conversation, cut, made, cached=False)
    result.spent = summary.usage.prompt_tokens + summary.usage.completion_tokens
    return result


def _injected(job: Job, conversation: segment.Conversation, covered: int,
              summary: dict[str, Any], cached: bool) -> Result:
    job.request.body["messages"] = segment.inject(conversation, covered,
                                                  segment.summary_message(summary["text"]))
    original = conversation.tokens
    final = original - conversation.span_to(covered) + summary["tokens"]
    return Result(True, original, final, cached=cached)
