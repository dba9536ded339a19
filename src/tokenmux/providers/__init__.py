"""One module per provider kind: each turns our request into theirs and their answer into ours."""

from __future__ import annotations

from collections.abc import Callable

from tokenmux.config.schema import Provider
from tokenmux.providers.base import Adapter
from tokenmux.providers.openai import OpenAIAdapter

# Each provider kind's adapter (its default base URL is in config/schema.py).
ADAPTERS: dict[str, Callable[[Provider], Adapter]] = {
    "openai": OpenAIAdapter,
}


def adapter_for(provider: Provider) -> Adapter:
    return ADAPTERS[provider.kind](provider)
