"""`GET /v1/models`, `GET /v1/models/{model}` and `/health`."""

from __future__ import annotations

import httpx2 as httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY


def test_models_list_has_the_configured_models_and_aliases(gateway):
    models = {m.id: m for m in gateway.client().models.list()}
    assert set(models) == {"tokenmux/echo", "fake-model", "quick-model", "dead-model",
                           "failover-model", "refused-first", "weighted-model", "primary-down"}
    fake = models["fake-model"]
    assert fake.object == "model"
    assert fake.owned_by == "fake"
    assert fake.aliases == ["fake-model@2026-01-01", "fake-alias"]
    assert isinstance(fake.created, int)


def test_retrieve_by_name_alias_and_a_name_with_a_slash(gateway):
    client = gateway.client()
    assert client.models.retrieve("fake-model").id == "fake-model"
    assert client.models.retrieve("fake-alias").id == "fake-model"
    assert client.models.retrieve("tokenmux/echo").id == "tokenmux/echo"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_models_need_a_key_and_have_a_second_path(gateway):
    assert httpx.get(gateway.base_url + "/v1/models").status_code == 401
    response = httpx.get(gateway.base_url + "/api/v1/chat/models",
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert response.status_code == 200
    assert response.json()["object"] == "list"
    assert "fake-model" in [m["id"] for m in response.json()["data"]]


def test_health_reports_liveness_and_database_readiness_without_a_key(gateway):
    response = httpx.get(gateway.base_url + "/health")
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["database"], body["ledger"]) == ("ok", "ok", "ok")
    assert body["ledger_detail"]["disk_free_bytes"] > 0
    assert response.headers["x-request-id"]
    assert httpx.get(gateway.base_url + "/health/live").json() == {"status": "ok"}
