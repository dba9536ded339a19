"""The gateway's own OpenAPI document, served at /openapi.json, drives schemathesis against a
live gateway with every provider kind behind it: valid and invalid requests alike get a 2xx or a
4xx, never a 5xx, every error in OpenAI's shape, and no stream ends in an error event."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import ADMIN_KEY
from tests.every_kind import MODELS, EveryKind, every_kind
from tokenmux.api.openapi import document

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
EXAMPLES = 150  # per operation, after schemathesis's own coverage cases
# The packaged document, the one the gateway serves (checked below), loaded eagerly: the plugin's
# lazy fixture loader reads a pytest attribute that pytest 9 no longer has.
SCHEMA = schemathesis.openapi.from_dict(orjson.loads(document()))


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EveryKind]:
    with every_kind(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


def test_the_document_is_served_without_a_key(kinds):
    response = httpx.get(kinds.gateway.base_url + "/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.content == document()
    served = response.json()
    assert served["openapi"].startswith("3.1")
    assert {"/v1/chat/completions", "/v1/models", "/v1/models/{model}", "/health",
            "/health/live"} <= set(served["paths"])
    request = served["components"]["schemas"]["ChatRequest"]["properties"]
    assert request["n"]["maximum"] == 128


def served_by_a_real_model(case: Any) -> None:
    """Most generated bodies name a made-up model, which is a 404 before any adapter runs; four
    in five are sent to a real model instead, one of each kind in turn, chosen by the body
    itself so that the run is the same every time."""
    body = case.body
    if case.path != "/v1/chat/completions" or not isinstance(body, dict) \
            or not isinstance(body.get("model"), str):
        return
    pick = zlib.crc32(json.dumps(body, sort_keys=True, default=str).encode()) % (len(MODELS) + 1)
    if pick < len(MODELS):
        body["model"] = MODELS[pick]


def assert_openai_shaped(response: Any) -> None:
    if response.status_code < 400:
        if response.headers.get("Content-Type", "").startswith("text/event-stream"):
            events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
            assert events and events[-1] == "[DONE]", response.text[-500:]
            assert not any('"error"' in e[:12] for e in events), response.text[-500:]
        return
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert "Traceback" not in error["message"]
    assert set(error) <= {"message", "type", "param", "code"}


@SCHEMA.parametrize()
@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_is_a_server_error(case, kinds):
    served_by_a_real_model(case)
    response = case.call(base_url=kinds.gateway.base_url, headers=AUTH, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
    assert_openai_shaped(response)
