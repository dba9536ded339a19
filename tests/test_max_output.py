"""A request may ask for at most as long an answer as its model can write."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Gateway, started_gateway
from tests.fakes.openai_upstream import FakeOpenAI

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Gateway]:
    running = started_gateway(tmp_path_factory.mktemp("capped"), f"""\
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: sk-capped}}
        models:
          - name: short-writer
            max_output: 100
            channels: [{{provider: fake, model: upstream-short}}]
        """)
    yield running
    running.stop()


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_more_than_the_models_max_output_is_400_naming_the_field(capped, upstream, param):
    before = len(upstream.received)
    response = capped.post({"model": "short-writer", "messages": HELLO, param: 101})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param,
                                                               None)
    assert "at most 100 tokens" in error["message"]
    assert len(upstream.received) == before  # refused before any upstream call


def test_up_to_the_models_max_output_is_served(capped):
    response = capped.post({"model": "short-writer", "messages": HELLO, "max_tokens": 100})
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "short-writer"
