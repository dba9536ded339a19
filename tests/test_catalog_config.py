"""A config file that starts from the shipped catalog: add, override, rename and hide models."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tests.test_catalog_shipped import DEEPSEEK, OPENAI, XAI
from tokenmux.config import ConfigError, load_config
from tokenmux.config.schema import Price
from tokenmux.routing import Catalog


def load(tmp_path, text: str, environ: dict[str, str] | None = None):
    path = tmp_path / "tokenmux.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(str(path), environ or {})


BUILTIN = """\
    catalog: builtin
    providers:
      openai: {api_key: sk-o}
      xai: {api_key: "${XAI_API_KEY}"}
      local: {kind: openai, base_url: "http://127.0.0.1:8000/v1"}
    hide: [gpt-4o, grok-3]
    models:
      - name: gpt-4.1
        price: {input: 1.5, output: 6}
        max_output: 16000
      - name: fast
        from: gpt-4.1-mini
        aliases: [gpt-4.1-mini]
      - name: llama
        channels: [{provider: local, model: llama-3.3-70b}]
        context_window: 131072
        capabilities: [tools]
    """


def test_builtin_catalog_with_an_override_a_rename_a_hide_and_an_own_model(tmp_path):
    config = load(tmp_path, BUILTIN, {"XAI_API_KEY": "xai-key"})
    catalog = Catalog(config)
    names = {entry.name for entry in catalog.entries}
    assert names == (OPENAI | XAI | {"tokenmux/echo", "fast", "llama"}) - {
        "gpt-4o", "grok-3", "gpt-4.1-mini"}

    overridden = catalog.resolve("gpt-4.1@2025-04-14")
    assert overridden.name == "gpt-4.1"
    assert overridden.list_price == Price(input=1.5, output=6)
    assert overridden.routes[0].price == Price(input=1.5, output=6)  # the ledger bills it too
    assert (overridden.context_window, overridden.max_output) == (1_047_576, 16_000)

    renamed = catalog.resolve("fast")
    assert renamed.aliases == ("gpt-4.1-mini",)
    assert catalog.resolve("gpt-4.1-mini") is renamed
    assert [r.upstream_model for r in renamed.routes] == ["gpt-4.1-mini-2025-04-14"]
    assert renamed.capabilities == ("tools", "vision", "json")
    assert renamed.list_price is not None and renamed.list_price.input == 0.4

    own = catalog.resolve("llama")
    assert (own.context_window, own.max_output, own.capabilities) == (131_072, None, ("tools",))
    assert own.list_price is None

    # Shipped providers keep their address and price table unless the file sets them.
    assert config.providers["xai"].base_url == "https://api.x.ai/v1"
    assert config.providers["xai"].price_provider == "x-ai"
    assert config.providers["xai"].api_key == "xai-key"


def test_the_files_models_keep_the_file_order_ahead_of_the_shipped_ones(tmp_path):
    names = [m.name for m in load(tmp_path, BUILTIN).models]
    assert names[:3] == ["gpt-4.1", "fast", "llama"]


def test_a_shipped_provider_may_change_kind_and_address(tmp_path):
    config = load(tmp_path, """\
        catalog: builtin
        providers:
          deepseek: {kind: openai, base_url: "https://proxy.example/v1", api_key: k}
        """)
    catalog = Catalog(config)
    assert {e.name for e in catalog.entries} == DEEPSEEK | {"tokenmux/echo"}
    route = catalog.resolve("deepseek-chat").routes[0]
    assert route.base_url == "https://proxy.example/v1"
    assert catalog.resolve("deepseek-chat").list_price is not None  # priced by provider id


def test_without_the_flag_a_file_serves_only_its_own_models(tmp_path):
    config = load(tmp_path, """\
        providers:
          openai: {kind: openai, api_key: k}
        models:
          - {name: gpt-4.1, channels: [{provider: openai, model: gpt-4.1}]}
        """)
    assert [m.name for m in config.models] == ["gpt-4.1"]
    assert config.models[0].context_window is None


@pytest.mark.parametrize(("text", "expected"), [
    ("catalog: builtin\nhide: [gpt-4o, gpt-9]\n",
     "hide[1]: 'gpt-9' is not a model of the shipped catalog"),
    ("catalog: builtin\nproviders: {openai: {api_key: k}}\nmodels:\n  - {name: a, from: gpt-9}\n",
     "models[0].from: 'gpt-9' is not a model of the shipped catalog"),
    ("providers: {openai: {kind: openai}}\nmodels:\n  - {name: a, from: gpt-4.1}\n",
     "models[0].from: only with `catalog: builtin`"),
    ("hide: [gpt-4o]\n", "hide: only with `catalog: builtin`"),
    ("catalog: everything\n", "catalog: Input should be 'builtin'"),
    # Overriding a shipped model whose provider the file does not configure.
    ("catalog: builtin\nmodels:\n  - {name: claude-sonnet-4-5, max_output: 8000}\n",
     "models[0].channels[0].provider: unknown provider 'anthropic'"),
    ("catalog: builtin\nproviders: {openai: {api_key: k}}\nmodels:\n"
     "  - {name: gpt-4.1, capabilities: [tools, telepathy]}\n", "models[0].capabilities[1]"),
    ("catalog: builtin\nproviders: {openai: {api_key: k}}\nmodels:\n"
     "  - {name: gpt-4.1, context_window: 0}\n", "models[0].context_window"),
])
def test_a_catalog_mistake_names_the_field(tmp_path, text, expected):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert expected in str(caught.value)


def test_the_readme_config_examples_load(tmp_path):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
    assert len(blocks) >= 2
    for block in blocks:
        config = load(tmp_path, block, {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"})
        assert Catalog(config).entries
