"""The effective config and catalog as an operator may read them: every secret masked."""

from __future__ import annotations

import re
from typing import Any

from tokenmux.config import Config
from tokenmux.routing import Catalog

MASK = "***"
# Settings whose value is a credential, whatever section they are in.
SECRET_NAME = re.compile(r"(^|_)(key|api_key|admin_key|secret|password|token|authorization)$",
                         re.IGNORECASE)
# A URL's password: scheme://user:password@host
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*:)[^@/\s]*(?P<tail>@)",
                          re.IGNORECASE)


def redacted(value: Any, name: str = "") -> Any:
    if isinstance(value, dict):
        if name == "headers":  # a provider's extra headers often carry its credentials
            return {k: MASK for k in value}
        return {k: redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v, name) for v in value]
    if isinstance(value, str):
        if SECRET_NAME.search(name):
            return MASK
        return URL_PASSWORD.sub(lambda m: m["head"] + MASK + m["tail"], value)
    return value


def effective(config: Config, catalog: Catalog) -> dict[str, Any]:
    return {"config": redacted(config.model_dump(mode="json")),
            "catalog": [{**entry.as_openai(catalog.created),
                         "channels": [{"channel": r.channel, "provider": r.provider,
                                       "kind": r.kind, "priority": r.priority,
                                       "weight": r.weight, "timeout_s": r.timeout}
                                      for r in entry.routes],
                         "fallbacks": [name for name, _ in entry.fallbacks]}
                        for entry in catalog.entries]}
