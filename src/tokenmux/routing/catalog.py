"""The models the gateway serves, their aliases and channels, resolved once from the config."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tokenmux.config.schema import ECHO_MODEL, Config, Price
from tokenmux.errors import ModelNotFound

ECHO_PROVIDER = "tokenmux"


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

    @property
    def channel(self) -> str:
        """How responses and logs name the channel: provider/upstream-model."""
        return f"{self.provider}/{self.upstream_model}"


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    aliases: tuple[str, ...]
    routes: tuple[Route, ...]
    fallbacks: tuple[str, ...] = ()

    def as_openai(self, created: int) -> dict[str, Any]:
        return {
            "id": self.name,
            "object": "model",
            "created": created,
            "owned_by": self.routes[0].provider,
            "aliases": list(self.aliases),
        }


class Catalog:
    def __init__(self, config: Config):
        self.created = int(time.time())
        entries: list[ModelEntry] = []
        if config.echo_model:
            free = Price(input=0, output=0, cached_input=None)
            echo = Route(ECHO_MODEL, ECHO_PROVIDER, "echo", "echo", 180.0, free, None, None)
            entries.append(ModelEntry(ECHO_MODEL, (), (echo,)))
        for model in config.models:
            routes = []
            for channel in model.channels:
                provider = config.providers[channel.provider]
                routes.append(Route(
                    model.name, channel.provider, provider.kind, channel.model,
                    channel.timeout or provider.timeout, model.price, provider.price_provider,
                    provider.base_url, channel.priority, channel.weight,
                ))
            entries.append(ModelEntry(model.name, tuple(model.aliases), tuple(routes),
                                      tuple(model.fallbacks)))
        self.entries = entries
        self._by_name = {name: e for e in entries for name in (e.name, *e.aliases)}

    def resolve(self, name: str, param: str = "model") -> ModelEntry:
        entry = self._by_name.get(name)
        if entry is None:
            raise ModelNotFound(f"The model '{name}' does not exist or you do not have access "
                                "to it.", param=param)
        return entry
