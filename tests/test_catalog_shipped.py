"""The shipped catalog: what a provider key in the environment brings, and that it stays priced.

These build the catalog in process: the anthropic and gemini adapters are not part of every build,
and listing their models needs none.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tokenmux.config import load_config
from tokenmux.config.builtin import shipped_catalog
from tokenmux.ledger.cost import Pricer
from tokenmux.ledger.row import UsageRow
from tokenmux.routing import Catalog

ECHO = "tokenmux/echo"
def _of(provider: str) -> set[str]:
    return {m["name"] for m in shipped_catalog()["models"]
            if m["channels"][0]["provider"] == provider}


# Each provider's shipped models, as the data packages and catalog.yaml make them.
OPENAI, ANTHROPIC, GEMINI = _of("openai"), _of("anthropic"), _of("gemini")
DEEPSEEK, XAI = _of("deepseek"), _of("xai")
# The models the catalog shipped when it was written by hand: the data must keep bringing them.
EARLIER = {
    "openai": {"gpt-5.1", "gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini",
               "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini", "o3", "o4-mini"},
    "anthropic": {"claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1",
                  "claude-sonnet-4-0"},
    "gemini": {"gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite"},
    "deepseek": {"deepseek-chat", "deepseek-reasoner"},
    "xai": {"grok-4", "grok-4-fast-reasoning", "grok-4-fast-non-reasoning", "grok-code-fast-1",
            "grok-3", "grok-3-mini"},
}

ALL_KEYS = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g-1",
            "DEEPSEEK_API_KEY": "sk-d", "XAI_API_KEY": "xai-1"}


def served(environ: dict[str, str]) -> Catalog:
    return Catalog(load_config(None, environ))


@pytest.mark.parametrize(("variable", "provider", "kind", "expected"), [
    ("OPENAI_API_KEY", "openai", "openai", OPENAI),
    ("ANTHROPIC_API_KEY", "anthropic", "anthropic", ANTHROPIC),
    ("GEMINI_API_KEY", "gemini", "gemini", GEMINI),
    ("GOOGLE_API_KEY", "gemini", "gemini", GEMINI),
    ("DEEPSEEK_API_KEY", "deepseek", "openai", DEEPSEEK),
    ("XAI_API_KEY", "xai", "openai", XAI),
])
def test_one_provider_key_brings_that_providers_models_only(variable, provider, kind, expected):
    catalog = served({variable: "secret-from-env"})
    assert {entry.name for entry in catalog.entries} == expected | {ECHO}
    routes = [route for entry in catalog.entries[1:] for route in entry.routes]
    assert {(r.provider, r.kind) for r in routes} == {(provider, kind)}
    config = load_config(None, {variable: "secret-from-env"})
    assert list(config.providers) == [provider]
    assert config.providers[provider].api_key == "secret-from-env"


def test_all_keys_together_bring_every_shipped_model_at_its_providers_address():
    config = load_config(None, ALL_KEYS)
    catalog = Catalog(config)
    every = OPENAI | ANTHROPIC | GEMINI | DEEPSEEK | XAI
    assert {e.name for e in catalog.entries} == every | {ECHO}
    assert {name: p.base_url for name, p in config.providers.items()} == {
        "openai": "https://api.openai.com/v1",
        "anthropic": "https://api.anthropic.com",
        "gemini": "https://generativelanguage.googleapis.com/v1beta",
        "deepseek": "https://api.deepseek.com/v1",
        "xai": "https://api.x.ai/v1",
    }


@pytest.mark.parametrize("provider", sorted(EARLIER))
def test_the_earlier_shipped_models_are_still_shipped(provider):
    assert EARLIER[provider] <= _of(provider)


def test_the_model_data_brings_the_embedding_models_marked_as_such(everything):
    embedding = {e.name: e.dimensions for e in everything.entries if e.mode == "embedding"}
    assert {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
            "gemini-embedding-001": 3072}.items() <= embedding.items()
    assert everything.resolve("gemini-embedding-001").routes[0].kind == "gemini"
    assert all(e.mode == "chat" for e in everything.entries if e.name.startswith("gpt-"))


def test_no_key_serves_the_echo_model_alone():
    assert [entry.name for entry in served({}).entries] == [ECHO]


def test_gemini_key_wins_over_google_key():
    config = load_config(None, {"GEMINI_API_KEY": "the-gemini-one", "GOOGLE_API_KEY": "other"})
    assert config.providers["gemini"].api_key == "the-gemini-one"


def test_a_versioned_name_is_the_same_model_pinned_to_its_snapshot():
    catalog = served(ALL_KEYS)
    sonnet = catalog.resolve("claude-sonnet-4-5@20250929")
    assert sonnet is catalog.resolve("claude-sonnet-4-5")
    assert [r.upstream_model for r in sonnet.routes] == ["claude-sonnet-4-5-20250929"]
    assert (sonnet.context_window, sonnet.max_output) == (200_000, 64_000)
    assert sonnet.capabilities == ("tools", "vision", "json", "reasoning")
    gpt = catalog.resolve("gpt-4.1@2025-04-14")
    assert gpt.name == "gpt-4.1"
    assert [r.upstream_model for r in gpt.routes] == ["gpt-4.1-2025-04-14"]


def test_every_versioned_alias_names_its_model_and_the_snapshot_the_channel_calls():
    for model in shipped_catalog()["models"]:
        for alias in model.get("aliases", []):
            name, _, version = alias.partition("@")
            assert name == model["name"], alias
            upstream = [channel["model"] for channel in model["channels"]]
            assert all(u.endswith("-" + version) for u in upstream), (alias, upstream)


@pytest.fixture(scope="module")
def everything() -> Catalog:
    return served(ALL_KEYS)


@pytest.mark.parametrize("name", [m["name"] for m in shipped_catalog()["models"]])
def test_every_shipped_model_has_a_known_price_in_the_list_and_the_ledger(everything, name):
    # When genai-prices drops or renames a model, this fails here instead of leaving the ledger's
    # cost column empty in production.
    entry = everything.resolve(name)
    assert entry.list_price is not None, f"{name}: genai-prices knows no price"
    # An embedding model writes nothing: it is priced for its input alone.
    assert entry.list_price.input > 0 and (entry.list_price.output > 0) == (entry.mode == "chat")
    row = UsageRow("req", None, None, None, name, entry.routes[0], 1, "medium", 0.0, False,
                   200, None, prompt_tokens=100_000, completion_tokens=0, cached_tokens=0,
                   reasoning_tokens=0, usage_source="upstream", latency_ms=1.0, ttft_ms=None)
    cost = Pricer().cost(row.as_record())
    assert cost is not None, f"{name}: the ledger would leave the cost empty"
    # A tenth of a million tokens: below the prompt size where tiered prices go up.
    assert cost == Decimal(str(entry.list_price.input)) / 10
