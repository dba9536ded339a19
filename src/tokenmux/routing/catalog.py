"""The models the gateway serves, their aliases and channels, resolved once from the config."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from tokenmux.config.schema import ECHO_MODEL, Breaker, Config, ModelCompression, Price
from tokenmux.errors import InvalidRequest, ModelNotFound
from tokenmux.routing.admission import Gate
from tokenmux.routing.health import ChannelHealth
from tokenmux.routing.params import TRIMS_TOOL_CALLS, to_drop
from tokenmux.routing.pricing import list_price
from tokenmux.routing.quota import Quota

ECHO_PROVIDER = "tokenmux"
DEFAULT_OUTPUT_ESTIMATE = 1024  # tokens; a long answer for most chat models, cheap to settle


@dataclass(frozen=True, slots=True)
class Route:
    """One channel of one model: where an attempt goes."""

    model: str  # the model's canonical name, which clients see in responses
    provider: str  # the provider's name in the config
    kind: str
    upstream_model: str
    timeout: float  # seconds for one attempt
    price: Price | None  # the config's own price, which wins over the price library
    price_provider: str | None  # the price library's provider id, when the config names one
    base_url: str | None  # otherwise the library recognises the provider by its address
    priority: int = 0
    weight: float = 1.0
    # Shared by every model that uses the same provider/upstream-model: it is one channel.
    health: ChannelHealth = field(default_factory=lambda: _health(Breaker()), compare=False,
                                  repr=False)
    gate: Gate | None = field(default=None, compare=False, repr=False)  # None: no limit
    # USD per million tokens, from the config or the price library; None when neither knows.
    list_price: Price | None = field(default=None, compare=False)
    # The sampling hints this route leaves out of its requests (routing/params.py), decided
    # once here: a request pays one set test against its body.
    drop: frozenset[str] = field(default=frozenset(), compare=False)
    # The API cannot be told `parallel_tool_calls: false`: the gateway keeps the first call.
    trims_tool_calls: bool = field(default=False, compare=False)
    # The upstream account's rpm/tpm on this channel (routing/quota.py); None: none stated.
    quota: Quota | None = field(default=None, compare=False, repr=False)

    @property
    def unit_price(self) -> float | None:
        """A million tokens in and a million out: how the slow tier compares channels."""
        price = self.list_price
        return None if price is None else price.input + price.output

    @property
    def channel(self) -> str:
        """How responses and logs name the channel: provider/upstream-model."""
        return f"{self.provider}/{self.upstream_model}"


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    aliases: tuple[str, ...]
    routes: tuple[Route, ...]
    # Each fallback model's routes, with the fallback's own timeout applied.
    fallbacks: tuple[tuple[str, tuple[Route, ...]], ...] = ()
    context_window: int | None = None
    max_output: int | None = None
    capabilities: tuple[str, ...] = ()
    list_price: Price | None = None  # USD per million tokens; None when no source knows it
    # Tokens an answer is taken to need when the request sets no max_tokens; None: as many as
    # the prompt has (the echo model answers with its prompt).
    output_estimate: int | None = None
    compression: ModelCompression | None = None  # the model's compression default
    # The catalog fields of `/v1/models`, made once: listing models is then a dict merge each.
    _card: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        price = self.list_price
        object.__setattr__(self, "_card", {
            "aliases": list(self.aliases),
            "context_window": self.context_window,
            "max_output": self.max_output,
            "capabilities": list(self.capabilities),
            "pricing": None if price is None else {
                "input": price.input, "output": price.output, "cached_input": price.cached_input,
            },
        })

    def check_output_limit(self, requested: int, param: str) -> None:
        """A request may not ask for a longer answer than the model can write."""
        if self.max_output is not None and requested > self.max_output:
            raise InvalidRequest(
                f"'{param}' is too large: {requested}. The model '{self.name}' writes at most "
                f"{self.max_output} tokens in one answer.", param=param)

    def answer_estimate(self, max_output: int | None, prompt: int) -> int:
        """Tokens a rate limit reserves for one answer: what the request allows, never more
        than the model can write; else the model's typical answer."""
        if max_output is None:
            return prompt if self.output_estimate is None else self.output_estimate
        return max_output if self.max_output is None else min(max_output, self.max_output)

    def as_openai(self, created: int) -> dict[str, Any]:
        return {"id": self.name, "object": "model", "created": created,
                "owned_by": self.routes[0].provider, **self._card}


def _health(breaker: Breaker) -> ChannelHealth:
    return ChannelHealth(breaker.failures, breaker.cooldown_ms / 1000,
                         breaker.max_cooldown_ms / 1000)


class Catalog:
    def __init__(self, config: Config):
        self.created = int(time.time())
        breaker = config.routing.breaker
        healths: dict[str, ChannelHealth] = {}
        gates: dict[str, Gate] = {}
        quotas: dict[str, Quota] = {}
        entries: list[ModelEntry] = []
        if config.echo_model:
            free = Price(input=0, output=0, cached_input=None)
            echo = Route(ECHO_MODEL, ECHO_PROVIDER, "echo", "echo", 180.0, free, None, None,
                         health=_health(breaker), list_price=free)
            entries.append(ModelEntry(ECHO_MODEL, (), (echo,), list_price=free))
        own: dict[str, tuple[Route, ...]] = {}
        for model in config.models:
            routes = []
            for channel in model.channels:
                provider = config.providers[channel.provider]
                name = f"{channel.provider}/{channel.model}"
                health = healths.setdefault(name, _health(breaker))
                gate = None
                if channel.max_concurrency is not None:
                    gate = gates.setdefault(name, Gate(channel.max_concurrency))
                quota = quotas.get(name)
                if quota is None and (channel.rpm is not None or channel.tpm is not None):
                    # One upstream account's limit: the first model to state it sets it.
                    quota = quotas[name] = Quota(f"channel:{name}", channel.rpm, channel.tpm)
                price = list_price(model.price, provider.price_provider, provider.base_url,
                                   channel.model)
                routes.append(Route(
                    model.name, channel.provider, provider.kind, channel.model,
                    channel.timeout or provider.timeout, model.price, provider.price_provider,
                    provider.base_url, channel.priority, channel.weight, health, gate, price,
                    drop=to_drop(provider, model.sampling),
                    trims_tool_calls=provider.kind in TRIMS_TOOL_CALLS,
                    quota=quota,
                ))
            own[model.name] = tuple(routes)
        canonical = {alias: m.name for m in config.models for alias in (m.name, *m.aliases)}
        if config.echo_model:
            own[ECHO_MODEL] = entries[0].routes
            canonical[ECHO_MODEL] = ECHO_MODEL
        for model in config.models:
            fallbacks = []
            for fallback in model.fallbacks:
                name = canonical[fallback.model]
                timeout = fallback.timeout
                fallbacks.append((name, own[name] if timeout is None else
                                  tuple(replace(r, timeout=timeout) for r in own[name])))
            served = own[model.name]
            # The price shown is the first-tried channel's; the ledger prices each attempt's own.
            first = min(served, key=lambda route: route.priority)
            entries.append(ModelEntry(
                model.name, tuple(model.aliases), served, tuple(fallbacks),
                model.context_window, model.max_output, tuple(model.capabilities),
                first.list_price,
                model.output_estimate or min(DEFAULT_OUTPUT_ESTIMATE,
                                             model.max_output or DEFAULT_OUTPUT_ESTIMATE),
                model.compression,
            ))
        self.entries = entries
        self._by_name = {name: e for e in entries for name in (e.name, *e.aliases)}

    def resolve(self, name: str, param: str = "model") -> ModelEntry:
        entry = self._by_name.get(name)
        if entry is None:
            raise ModelNotFound(f"The model '{name}' does not exist or you do not have access "
                                "to it.", param=param)
        return entry
