"""The shipped catalog (config/shipped.py), merged into a config that says `catalog: builtin`.

The merge works on the raw mapping, before validation, so that the result is validated as one
config: a shipped model overridden in a file is checked like a hand-written one, and its errors
carry the file's own field paths (the file's models come first, in the file's order).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from tokenmux.config.shipped import build

BUILTIN = "builtin"


def curated_catalog() -> dict[str, Any]:
    """catalog.yaml: the shipped providers (without keys), the data sources, the overrides."""
    text = resources.files("tokenmux.config").joinpath("catalog.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def shipped_catalog() -> dict[str, Any]:
    """The shipped providers and models: the model data packages' models with catalog.yaml's
    overrides (config/shipped.py)."""
    return build(curated_catalog())


def merge_builtin(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Returns RAW with the shipped catalog merged in when it asks for it, and the problems found.

    - A provider with a shipped name (openai, anthropic, gemini, deepseek, xai) takes the shipped
      kind, base_url and price_provider for the fields it does not set.
    - A shipped model comes in when its provider is configured, unless `hide` names it.
    - A `models` entry replaces the shipped model named by its `from` (default: its own `name`);
      fields it sets win, the others are the shipped ones. A different `name` renames the model.
    """
    models = raw.get("models")
    entries = models if isinstance(models, list) else []
    if raw.get("catalog") != BUILTIN:
        problems = [f"models[{i}].from: only with `catalog: builtin`"
                    for i, entry in enumerate(entries)
                    if isinstance(entry, dict) and "from" in entry]
        if raw.get("catalog") is None and raw.get("hide"):
            problems.append("hide: only with `catalog: builtin`")
        return raw, problems

    catalog = shipped_catalog()
    shipped = {model["name"]: model for model in catalog["models"]}
    providers = raw.get("providers")
    if isinstance(providers, dict):
        providers = {
            name: {**catalog["providers"][name], **given}
            if name in catalog["providers"] and isinstance(given, dict) else given
            for name, given in providers.items()
        }
    hidden, problems = _hidden(raw.get("hide"), shipped)
    merged, replaced = _own_models(entries, shipped, problems)
    configured = set(providers) if isinstance(providers, dict) else set()
    for name, model in shipped.items():
        if name in replaced or name in hidden:
            continue
        if all(channel["provider"] in configured for channel in model["channels"]):
            merged.append(model)

    result = {**raw, "models": merged}
    if providers is not None:
        result["providers"] = providers
    return result, problems


def _hidden(hide: Any, shipped: dict[str, Any]) -> tuple[set[str], list[str]]:
    hidden: set[str] = set()
    problems = []
    for j, name in enumerate(hide if isinstance(hide, list) else []):
        if isinstance(name, str):  # anything else is left to validation to report
            hidden.add(name)
            if name not in shipped:
                problems.append(f"hide[{j}]: {name!r} is not a model of the shipped catalog")
    return hidden, problems


def _own_models(entries: list[Any], shipped: dict[str, Any],
                problems: list[str]) -> tuple[list[Any], set[str]]:
    """The file's models, each merged over the shipped model it replaces; and the names replaced."""
    merged: list[Any] = []
    replaced: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            merged.append(entry)
            continue
        own = {key: value for key, value in entry.items() if key != "from"}
        base = entry.get("from", entry.get("name"))
        if "from" in entry and base not in shipped:
            problems.append(f"models[{i}].from: {base!r} is not a model of the shipped catalog")
        if isinstance(base, str) and base in shipped:
            replaced.add(base)
            own = {**shipped[base], **own}
        merged.append(own)
    return merged, replaced
