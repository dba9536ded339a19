"""The Configuration section's rules, on one gateway started from another folder than its
config's: `${VAR:-default}` and nested fallbacks, relative paths, `echo_model: false`, a
provider's `headers`, and the two sources of a price, each to the exact cost in the ledger."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from decimal import Decimal

import httpx2 as httpx
import pytest
from genai_prices import Usage, calc_price
from multidict import CIMultiDict

from tests.conftest import ADMIN_KEY, Gateway
from tests.fakes.openai_upstream import FakeOpenAI

HELLO = [{"role": "user", "content": "hello"}]
# The price library knows a provider by its address. This one names Azure OpenAI's host as the
# URL's user part, so the library recognises it while the request still goes to the fake.
AZURE_PREFIX = "http://openai.azure.com@"


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory,
               upstream: FakeOpenAI) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("config-home")
    elsewhere = tmp_path_factory.mktemp("started-from-here")
    by_address = AZURE_PREFIX + upstream.base_url.removeprefix("http://")
    running = Gateway(home, textwrap.dedent(f"""\
        database: ./gateway.db                         # relative: next to this file
        admin_key: ${{RULES_UNSET_ADMIN:-{ADMIN_KEY}}}
        echo_model: false
        ledger: {{flush_interval_ms: 50}}
        providers:
          nested:
            kind: openai
            base_url: "${{RULES_UNSET_URL:-{upstream.base_url}}}"
            api_key: "${{RULES_UNSET_KEY:-${{RULES_SET_KEY}}}}"
            headers: {{X-Org-Tag: "org-${{RULES_SET_TAG}}-42", OpenAI-Organization: org-rules}}
          deep:
            kind: openai
            base_url: "{upstream.base_url}"
            api_key: "${{RULES_UNSET_KEY:-${{RULES_UNSET_OTHER:-sk-deep-fallback}}}}"
          set-wins:
            kind: openai
            base_url: "{upstream.base_url}"
            api_key: "${{RULES_SET_KEY:-sk-never-used}}"
          by-address:
            kind: openai
            base_url: "{by_address}"
          keyless:
            kind: openai
            base_url: "{upstream.base_url}"
            api_key: "${{RULES_UNSET_KEY}}"                # unset: no key at all
        models:
          - name: nested-model
            channels: [{{provider: nested, model: nested-upstream}}]
            price: {{input: 3.0, output: 15.0, cached_input: 0.3}}
          - name: deep-model
            channels: [{{provider: deep, model: deep-upstream}}]
          - name: set-model
            channels: [{{provider: set-wins, model: set-upstream}}]
          - name: by-address-model
            channels: [{{provider: by-address, model: phi-4}}]  # priced at Azure only
          - name: keyless-model
            channels: [{{provider: keyless, model: keyless-upstream}}]
        """), cwd=elsewhere)
    running.env.update(RULES_SET_KEY="sk-from-the-environment", RULES_SET_TAG="tagged")
    running.start()
    running.by_address = by_address  # type: ignore[attr-defined]
    yield running
    running.stop()


def sent_to(upstream: FakeOpenAI, model: str) -> CIMultiDict[str]:
    return [r for r in upstream.received if r.body.get("model") == model][-1].headers


def test_a_default_and_a_nested_fallback_fill_unset_variables(configured, upstream):
    for model in ("nested-model", "deep-model", "set-model"):
        assert configured.post({"model": model, "messages": HELLO}).status_code == 200
    # ${UNSET:-${SET}}: the other variable's value.
    assert sent_to(upstream, "nested-upstream")["Authorization"] == "Bearer sk-from-the-environment"
    # ${UNSET:-${UNSET:-literal}}: the innermost default.
    assert sent_to(upstream, "deep-upstream")["Authorization"] == "Bearer sk-deep-fallback"
    # ${SET:-default}: the value; the default only fills in.
    assert sent_to(upstream, "set-upstream")["Authorization"] == "Bearer sk-from-the-environment"
    # The admin key came from a default too: the suite's key authenticated every request above.


def test_an_unset_variable_means_no_value(configured, upstream):
    assert configured.post({"model": "keyless-model", "messages": HELLO}).status_code == 200
    assert "Authorization" not in sent_to(upstream, "keyless-upstream")  # not "Bearer "


def test_a_providers_headers_reach_its_upstream(configured, upstream):
    assert configured.post({"model": "nested-model", "messages": HELLO}).status_code == 200
    headers = sent_to(upstream, "nested-upstream")
    assert headers["X-Org-Tag"] == "org-tagged-42"  # interpolated inside a longer value
    assert headers["OpenAI-Organization"] == "org-rules"
    assert "X-Org-Tag" not in sent_to(upstream, "deep-upstream")  # that provider's own only


def test_relative_paths_count_from_the_config_files_folder(configured):
    response = configured.post({"model": "set-model", "messages": HELLO})
    assert configured.wait_row(response.headers["x-request-id"])["status"] == 200
    assert (configured.directory / "gateway.db").exists()
    assert not (configured.cwd / "gateway.db").exists()


def test_echo_model_false_leaves_the_echo_out(configured):
    response = configured.post({"model": "tokenmux/echo", "messages": HELLO})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    models = httpx.get(configured.base_url + "/v1/models", timeout=10,
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    assert [m["id"] for m in models["data"]] == ["nested-model", "deep-model", "set-model",
                                                 "by-address-model", "keyless-model"]


def test_the_configs_cached_input_price_is_charged_for_cache_reads(configured):
    response = configured.post({"model": "nested-model", "messages": [
        {"role": "user", "content": "@usage 1000 200 600"}]})
    usage = response.json()["usage"]
    assert (usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"]) == (1000, 600)
    row = configured.wait_row(response.headers["x-request-id"])
    assert (row["prompt_tokens"], row["cached_tokens"], row["completion_tokens"]) == (
        1000, 600, 200)
    # 400 fresh at 3.0, 600 cached at 0.3, 200 out at 15.0, per million.
    expected = (Decimal(400) * Decimal("3.0") + Decimal(600) * Decimal("0.3")
                + Decimal(200) * Decimal("15.0")) / Decimal(1_000_000)
    assert expected == Decimal("0.00438")
    assert Decimal(str(row["cost_usd"])) == expected


def test_without_a_price_provider_the_price_is_found_by_base_url(configured):
    response = configured.post({"model": "by-address-model", "messages": [
        {"role": "user", "content": "@usage 1000 200 600"}]})
    assert response.status_code == 200
    row = configured.wait_row(response.headers["x-request-id"])
    # The model is priced at Azure alone: found by the address, or not at all.
    found = calc_price(Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=600),
                       "phi-4", provider_api_url=configured.by_address)
    assert found.provider.id == "azure"
    assert Decimal(str(row["cost_usd"])) == found.total_price
    listed = httpx.get(configured.base_url + "/v1/models/by-address-model", timeout=10,
                       headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["pricing"]
    table = found.model_price
    cached = table.cache_read_mtok
    assert listed == {"input": float(table.input_mtok), "output": float(table.output_mtok),
                      "cached_input": None if cached is None else float(cached)}


def test_tokenmux_config_names_the_file_when_no_config_option_is_given(tmp_path, upstream):
    config = tmp_path / "elsewhere.yaml"
    config.write_text(textwrap.dedent(f"""\
        database: {tmp_path}/gateway.db
        admin_key: {ADMIN_KEY}
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: sk-fake}}
        models:
          - name: from-the-variable
            channels: [{{provider: fake, model: from-the-variable-upstream}}]
        """))
    running = Gateway(tmp_path, None)
    running.env["TOKENMUX_CONFIG"] = str(config)
    running.start()
    try:
        response = running.post({"model": "from-the-variable", "messages": HELLO})
        assert response.status_code == 200  # its model, and its admin key
        assert running.wait_row(response.headers["x-request-id"])["model"] == "from-the-variable"
    finally:
        running.stop()
