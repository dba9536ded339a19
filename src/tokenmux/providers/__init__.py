"""One module per provider kind: each turns our request into theirs and their answer into ours."""

from __future__ import annotations

from collections.abc import Callable

from tokenmux.config.schema import Provider
from tokenmux.providers.anthropic import AnthropicAdapter
from tokenmux.providers.base import Adapter
from tokenmux.providers.gemini import GeminiAdapter
from tokenmux.providers.openai import OpenAIAdapter

# Each provider kind's adapter (its default base URL is in config/schema.py).
ADAPTERS: dict[str, Callable[[Provider], Adapter]] = {
    "openai": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
}


# Kinds whose API has no `n`: the gateway fans such requests out (providers/fanout.py).
FAN_OUT = frozenset({"anthropic"})


def adapter_for(provider: Provider) -> Adapter:
    return ADAPTERS[provider.kind](provider)
