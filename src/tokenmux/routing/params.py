"""The parameter policy: which sampling hints a route leaves out, decided once per route.

Sampling hints only nudge how an answer is drawn; a model that does not take one answers as
well without it. So a hint the target cannot take is dropped (and the response says which,
`X-TokenMux-Dropped-Params`), never refused, unless the provider says `strict_params` or the
request `X-Strict-Params: true`. Fields that change what the answer is (`tools`,
`response_format`, `n`, `logprobs`, `modalities`, audio) are never dropped: the adapters refuse
them with a 400 naming them when the target cannot do them.

What a route takes is the intersection of what its API takes (the provider's kind, and for
Anthropic the API version it sends) and what its model takes (the catalog's `sampling`, from the
model data; unknown: everything the API takes). The set to drop is computed when the catalog is
built; a request pays one set test against its body, and only a request that carries such a hint
pays more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tokenmux.config.schema import Provider

SAMPLING = ("temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty")
NONE: frozenset[str] = frozenset()

# Anthropic's API version 2026-10-21 refuses temperature, top_p and top_k, whatever the model;
# the Messages API never had seed or penalties.
ANTHROPIC_API_VERSION = "2026-10-21"
ANTHROPIC_SAMPLING_UNTIL = "2026-10-21"  # versions before this one still take the three
ANTHROPIC_OLD_SAMPLING = frozenset({"temperature", "top_p", "top_k"})
# Gemini takes every hint; the OpenAI format has no top_k, but servers that speak it may.
_KIND_TAKES = {"openai": frozenset(SAMPLING), "gemini": frozenset(SAMPLING)}
# Kinds whose API may call several functions at once and cannot be told not to.
TRIMS_TOOL_CALLS = frozenset({"gemini"})


def anthropic_version(provider: Provider) -> str:
    """The anthropic-version a provider sends: its own header, else the current one."""
    for name, value in provider.headers.items():
        if name.lower() == "anthropic-version":
            return value
    return ANTHROPIC_API_VERSION


def api_takes(provider: Provider) -> frozenset[str]:
    if provider.kind == "anthropic":
        old = anthropic_version(provider) < ANTHROPIC_SAMPLING_UNTIL
        return ANTHROPIC_OLD_SAMPLING if old else NONE
    return _KIND_TAKES.get(provider.kind, frozenset(SAMPLING))


def to_drop(provider: Provider, model_takes: Sequence[str] | None) -> frozenset[str]:
    """The sampling hints a route of this provider and model leaves out of its requests."""
    if provider.strict_params:
        return NONE
    takes = api_takes(provider)
    if model_takes is not None:
        takes = takes & frozenset(model_takes)
    return frozenset(SAMPLING) - takes


def dropped(body: Mapping[str, Any], drop: frozenset[str]) -> tuple[str, ...]:
    """The hints of BODY that a route dropping DROP leaves out, in a stable order."""
    if not drop or drop.isdisjoint(body):
        return ()
    return tuple(name for name in SAMPLING if name in drop and name in body)


def keep_first_tool_call(body: dict[str, Any]) -> int:
    """Trims each choice of a completion to its first tool call (for `parallel_tool_calls:
    false` where the API cannot be told); returns how many calls were left out."""
    trimmed = 0
    for choice in body.get("choices") or ():
        calls = (choice.get("message") or {}).get("tool_calls")
        if calls and len(calls) > 1:
            trimmed += len(calls) - 1
            del calls[1:]
    return trimmed
