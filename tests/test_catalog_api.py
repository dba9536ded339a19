"""The catalog as clients see it: `/v1/models` fields through the SDK, versioned names, costs.

The gateway starts from the shipped catalog with its openai provider sent to the fake upstream;
the shipped provider still names OpenAI's price table, so the real prices apply.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests.conftest import ADMIN_KEY, Gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.test_catalog_shipped import OPENAI

HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Gateway]:
    directory = tmp_path_factory.mktemp("catalog")
    config = textwrap.dedent(f"""\
        database: {directory}/gateway.db
        admin_key: {ADMIN_KEY}
        ledger: {{flush_interval_ms: 50}}
        catalog: builtin
        hide: [o3]
        providers:
          openai: {{base_url: "{upstream.base_url}", api_key: sk-upstream}}
        models:
          - name: gpt-4o-mini
            price: {{input: 0.2, output: 0.8, cached_input: 0.1}}
          - name: house-model
            channels: [{{provider: openai, model: house-v1}}]
            context_window: 32000
            capabilities: [json]
        """)
    running = Gateway(directory, config).start()
    yield running
    running.stop()


def test_models_list_has_openai_fields_and_catalog_fields(served):
    models = {m.id: m for m in served.client().models.list()}
    assert set(models) == OPENAI - {"o3"} | {"tokenmux/echo", "house-model"}
    gpt = models["gpt-4.1"]
    assert (gpt.object, gpt.owned_by) == ("model", "openai")
    assert isinstance(gpt.created, int)
    assert gpt.model_extra == {
        "mode": "chat",
        "aliases": ["gpt-4.1@2025-04-14"],
        "context_window": 1_047_576,
        "max_output": 32_768,
        "capabilities": ["tools", "vision", "json"],
        "pricing": {"input": 2.0, "output": 8.0, "cached_input": 0.5},
    }
    assert models["gpt-4o-mini"].to_dict()["pricing"] == {
        "input": 0.2, "output": 0.8, "cached_input": 0.1}
    house = models["house-model"].to_dict()
    assert (house["context_window"], house["max_output"]) == (32_000, None)
    assert (house["capabilities"], house["pricing"]) == (["json"], None)
    assert models["tokenmux/echo"].to_dict()["pricing"] == {
        "input": 0.0, "output": 0.0, "cached_input": None}
    # An embedding model, as the model data describes it: its vector length, its input price.
    assert models["text-embedding-3-small"].model_extra == {
        "mode": "embedding", "dimensions": 1536, "aliases": [], "context_window": 8191,
        "max_output": None, "capabilities": [],
        "pricing": {"input": 0.02, "output": 0.0, "cached_input": None},
    }


def test_retrieving_a_versioned_name_gives_the_model(served):
    model = served.client().models.retrieve("gpt-5-mini@2025-08-07")
    assert model.id == "gpt-5-mini"
    assert model.to_dict()["aliases"] == ["gpt-5-mini@2025-08-07"]
    assert model.to_dict()["max_output"] == 128_000


@pytest.mark.parametrize("asked", ["gpt-4.1", "gpt-4.1@2025-04-14"])
def test_a_versioned_name_is_served_by_the_same_model_and_billed_at_its_price(
        served, upstream, asked):
    raw = served.client().chat.completions.with_raw_response.create(model=asked, messages=HELLO)
    answer = raw.parse()
    assert answer.model == "gpt-4.1"
    assert upstream.last().body["model"] == "gpt-4.1-2025-04-14"
    row = served.wait_row(raw.headers["x-request-id"])
    assert (row["requested_model"], row["model"]) == (asked, "gpt-4.1")
    usage = answer.usage
    assert usage is not None
    # genai-prices: $2 in and $8 out per million tokens for gpt-4.1.
    expected = (2 * Decimal(usage.prompt_tokens) + 8 * Decimal(usage.completion_tokens)) / 10**6
    assert Decimal(str(row["cost_usd"])) == expected


def test_a_hidden_model_is_not_served(served):
    response = served.post({"model": "o3", "messages": HELLO})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
