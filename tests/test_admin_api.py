"""The admin API as an operator sees it: who may call it, keys made, changed and revoked taking
effect on the running gateway, and usage rows and aggregates that match the requests made."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx2 as httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, UPSTREAM_KEY, Gateway, gateway_of_its_own, wait_until
from tests.fakes.openai_upstream import FakeOpenAI

ROUTES = [("POST", "/admin/v1/keys"), ("GET", "/admin/v1/keys"),
          ("GET", "/admin/v1/keys/key_0"), ("PATCH", "/admin/v1/keys/key_0"),
          ("DELETE", "/admin/v1/keys/key_0"), ("GET", "/admin/v1/usage"),
          ("GET", "/admin/v1/usage/summary"), ("GET", "/admin/v1/channels"),
          ("GET", "/admin/v1/config")]
# fake-model's price: USD per million tokens in and out
PRICE_IN, PRICE_OUT = Decimal(1), Decimal(2)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory,
       module_upstream: FakeOpenAI) -> Iterator[Gateway]:
    yield from gateway_of_its_own(tmp_path_factory, module_upstream, "admin")


def admin(gw: Gateway, method: str, path: str, key: str | None = ADMIN_KEY,
          **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, gw.base_url + path, headers=headers, timeout=30, **kwargs)


def new_key(gw: Gateway, name: str, **settings: Any) -> dict[str, Any]:
    created = admin(gw, "POST", "/admin/v1/keys", json={"name": name, **settings})
    assert created.status_code == 201, created.text
    return created.json()


def ask(gw: Gateway, key: str, tokens: tuple[int, int] = (1000, 500), *,
        user: str | None = None, model: str = "fake-model") -> Any:
    prompt, completion = tokens
    extra = {"user": user} if user else {}
    return gw.client(key=key).chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"@usage {prompt} {completion} 0"}],
        **extra)


def test_every_route_wants_an_admin_key(gw):
    client = new_key(gw, "a-client")["secret"]
    for method, path in ROUTES:
        missing = admin(gw, method, path, key=None)
        assert missing.status_code == 401, (method, path)
        assert missing.json()["error"]["code"] == "invalid_api_key"
        refused = admin(gw, method, path, key=client, json={})
        assert refused.status_code == 403, (method, path)
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "insufficient_permissions"
        assert set(error) == {"message", "type", "param", "code"}
        wrong = admin(gw, method, path, key="tm-not-a-key-at-all")
        assert wrong.status_code == 401
    # The openai SDK raises its own classes for them, as for any OpenAI API.
    sdk = openai.OpenAI(base_url=gw.base_url + "/admin/v1", api_key=client, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        sdk.get("/keys", cast_to=object)


def test_a_key_made_by_the_api_serves_changes_and_is_revoked(gw):
    made = new_key(gw, "api-team", rpm=50, tier="fast", max_tier="ludicrous",
                   budget_usd="2.5", budget_period="day", fallback_models=["quick-model"])
    secret = made["secret"]
    assert secret.startswith("tm-") and made["prefix"] == secret[:10]
    assert re.fullmatch(r"key_[0-9a-f]{16}", made["id"])
    assert (made["rpm"], made["tier"], made["max_tier"]) == (50, "fast", "ludicrous")
    assert (made["budget_usd"], made["budget_period"]) == ("2.5", "day")
    assert made["fallback_models"] == ["quick-model"]
    listed = admin(gw, "GET", "/admin/v1/keys").json()["data"]
    mine = next(k for k in listed if k["id"] == made["id"])
    assert "secret" not in mine and secret not in str(listed)
    assert mine["spent_usd"] == "0"
    answer = ask(gw, secret, (2000, 1000))
    assert answer.usage.prompt_tokens == 2000
    # $0.002 + $0.002 spent, as the key's record says once the ledger has the row.
    assert wait_until(lambda: admin(gw, "GET", f"/admin/v1/keys/{made['id']}")
                      .json()["spent_usd"] == "0.004")
    changed = admin(gw, "PATCH", f"/admin/v1/keys/{made['id']}", json={"rpm": 1, "name": "t2"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["rpm"], changed.json()["name"]) == (1, "t2")
    assert changed.json()["tier"] == "fast"  # what the change did not name stays
    unbudgeted = admin(gw, "PATCH", f"/admin/v1/keys/{made['id']}", json={"budget_usd": None})
    assert (unbudgeted.json()["budget_usd"], unbudgeted.json()["budget_period"]) == (None, None)
    assert unbudgeted.json()["rpm"] == 1
    # A budget without a period counts everything the key has ever spent.
    lifetime = admin(gw, "PATCH", f"/admin/v1/keys/{made['id']}", json={"budget_usd": "3"})
    assert (lifetime.json()["budget_usd"], lifetime.json()["budget_period"]) == ("3", "total")
    assert admin(gw, "GET", f"/admin/v1/keys/{made['id']}").json()["spent_usd"] == "0.004"

    def new_limit_reached() -> bool:
        # The key's bucket starts over at its new size once the key watch brings the change.
        answer = gw.client(key=secret).chat.completions.with_raw_response.create(
            model="fake-model", messages=[{"role": "user", "content": "@usage 10 1 0"}])
        return answer.headers["x-ratelimit-limit-requests"] == "1"

    assert wait_until(new_limit_reached, timeout=15)
    with pytest.raises(openai.RateLimitError) as limited:
        ask(gw, secret, (10, 1))
    assert limited.value.response.headers["x-ratelimit-limit-requests"] == "1"
    revoked = admin(gw, "DELETE", f"/admin/v1/keys/{made['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]

    def refused() -> bool:
        try:
            ask(gw, secret, (10, 1))
        except openai.AuthenticationError:
            return True
        except openai.RateLimitError:
            return False
        return False

    assert wait_until(refused, timeout=15)
    again = admin(gw, "PATCH", f"/admin/v1/keys/{made['id']}", json={"rpm": 5})
    assert again.status_code == 400 and again.json()["error"]["param"] == "id"
    assert all(k["id"] != made["id"] for k in admin(gw, "GET", "/admin/v1/keys").json()["data"])
    assert any(k["id"] == made["id"] for k in admin(
        gw, "GET", "/admin/v1/keys?include_revoked=true").json()["data"])
    assert admin(gw, "GET", "/admin/v1/keys/key_nope").status_code == 404


@pytest.mark.parametrize(("body", "param"), [
    ({"rpm": 5}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),  # the column holds 200
    ({"name": "x", "rpm": 0}, "rpm"),
    ({"name": "x", "tpm": 0}, "tpm"),
    ({"name": "x", "rpm": 2**31}, "rpm"),  # the column is a 32-bit integer
    ({"name": "x", "compression": "on", "compression_threshold": 0}, "compression_threshold"),
    ({"name": "x", "compression": "on", "compression_threshold": 2**31},
     "compression_threshold"),
    ({"name": "x", "tier": "warp"}, "tier"),
    ({"name": "x", "tier": "ludicrous", "max_tier": "slow"}, "tier"),
    ({"name": "x", "budget_period": "day"}, "budget_period"),
    ({"name": "x", "budget_usd": "-1"}, "budget_usd"),
    ({"name": "x", "fallback_models": ["no-such-model"]}, "fallback_models"),
    ({"name": "x", "compression_model": "fake-model"}, "compression"),
    ({"name": "x", "colour": "blue"}, "colour"),
    ({"name": "x", "expires_at": "tomorrow"}, "expires_at"),
])
def test_a_bad_key_is_refused_naming_its_field(gw, body, param):
    refused = admin(gw, "POST", "/admin/v1/keys", json=body)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param
    assert refused.json()["error"]["type"] == "invalid_request_error"


def test_a_key_takes_the_longest_name_and_the_least_limits(gw):
    made = new_key(gw, "y" * 200, rpm=1, tpm=1, compression="on", compression_threshold=1)
    assert (len(made["name"]), made["rpm"], made["tpm"], made["compression_threshold"]) == (
        200, 1, 1, 1)
    most = new_key(gw, "z", rpm=2**31 - 1, compression="on", compression_threshold=2**31 - 1)
    assert (most["rpm"], most["compression_threshold"]) == (2**31 - 1, 2**31 - 1)


def test_a_body_that_is_not_an_object_is_a_400(gw):
    for content in (b"[1, 2]", b"{nope"):
        refused = admin(gw, "POST", "/admin/v1/keys", content=content)
        assert refused.status_code == 400


@pytest.fixture(scope="module")
def traffic(gw: Gateway) -> dict[str, Any]:
    """Known requests by two keys: what each made, and the ledger's answer to come."""
    alpha, beta = new_key(gw, "alpha"), new_key(gw, "beta")
    made: dict[str, Any] = {"alpha": alpha, "beta": beta, "ids": []}
    for tokens, user in (((1000, 500), "ann"), ((3000, 100), "ann"), ((200, 40), "bob")):
        made["ids"].append(ask(gw, alpha["secret"], tokens, user=user).id)
    made["ids"].append(ask(gw, beta["secret"], (7000, 7), user="cy").id)
    with pytest.raises(openai.APIStatusError) as failed:
        ask(gw, beta["secret"], user="cy", model="dead-model")
    made["failed"] = failed.value.response.headers["x-request-id"]
    assert wait_until(lambda: len(gw.rows(key_id=alpha["id"])) == 3
                      and len(gw.rows(key_id=beta["id"])) == 2)
    return made


def cost(prompt: int, completion: int) -> Decimal:
    return (prompt * PRICE_IN + completion * PRICE_OUT) / 1_000_000


def test_usage_rows_filter_by_key_user_model_status_and_request_id(gw, traffic):
    alpha, beta = traffic["alpha"]["id"], traffic["beta"]["id"]
    rows = admin(gw, "GET", f"/admin/v1/usage?key={alpha}").json()["data"]
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [
        (200, 40), (3000, 100), (1000, 500)]  # newest first
    assert [Decimal(r["cost_usd"]) for r in rows] == [cost(200, 40), cost(3000, 100),
                                                        cost(1000, 500)]
    assert {r["door"] for r in rows} == {"chat"}
    assert all(r["created_at"].endswith("+00:00") for r in rows)
    assert len(admin(gw, "GET", f"/admin/v1/usage?key={alpha}&door=chat").json()["data"]) == 3
    assert admin(gw, "GET", f"/admin/v1/usage?key={alpha}&door=messages").json()["data"] == []
    ann = admin(gw, "GET", f"/admin/v1/usage?key={alpha}&user=ann").json()["data"]
    assert len(ann) == 2 and {r["end_user"] for r in ann} == {"ann"}
    beta_rows = admin(gw, "GET", f"/admin/v1/usage?key={beta}&status=error").json()["data"]
    assert [(r["request_id"], r["status"], r["model"]) for r in beta_rows] == [
        (traffic["failed"], 502, "dead-model")]
    assert admin(gw, "GET", f"/admin/v1/usage?key={beta}&status=5xx").json()["data"] == \
        beta_rows
    assert len(admin(gw, "GET", f"/admin/v1/usage?key={beta}&status=ok").json()["data"]) == 1
    assert len(admin(gw, "GET", f"/admin/v1/usage?key={beta}&provider=fake")
               .json()["data"]) == 1
    assert len(admin(gw, "GET", f"/admin/v1/usage?key={beta}&model=dead-model")
               .json()["data"]) == 1
    one = admin(gw, "GET", f"/admin/v1/usage?request_id={traffic['failed']}").json()["data"]
    assert len(one) == 1 and one[0]["key_id"] == beta
    # Tenant isolation: one key's rows never name another's.
    assert all(r["key_id"] == alpha for r in rows)
    # A time range that ends before the traffic has none of it.
    assert admin(gw, "GET", f"/admin/v1/usage?key={alpha}&to=2020-01-01T00:00:00Z"
                 ).json()["data"] == []
    first = rows[-1]["created_at"]
    since = admin(gw, "GET", "/admin/v1/usage", params={"key": alpha, "from": first}).json()
    assert len(since["data"]) == 3


def test_usage_pages_cover_every_row_once(gw, traffic):
    every = admin(gw, "GET", "/admin/v1/usage?limit=1000").json()["data"]
    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = admin(gw, "GET", "/admin/v1/usage", params=params).json()
        seen += [r["id"] for r in page["data"]]
        cursor = page["next_cursor"]
        assert page["has_more"] == (cursor is not None)
        if cursor is None:
            break
    assert seen == [r["id"] for r in every] and len(set(seen)) == len(seen) >= 5


def test_usage_exports_as_csv(gw, traffic):
    alpha = traffic["alpha"]["id"]
    exported = admin(gw, "GET", f"/admin/v1/usage?key={alpha}&format=csv")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(r["prompt_tokens"]) for r in table] == [200, 3000, 1000]
    assert sum(Decimal(r["cost_usd"]) for r in table) == cost(4200, 640)
    assert {r["key_name"] for r in table} == {"alpha"}


def test_usage_summary_adds_up_the_requests(gw, traffic):
    alpha, beta = traffic["alpha"]["id"], traffic["beta"]["id"]
    summary = admin(gw, "GET", "/admin/v1/usage/summary?group_by=key,user").json()
    mine = {(g["key"], g["user"]): g for g in summary["data"] if g["key"] in (alpha, beta)}
    assert set(mine) == {(alpha, "ann"), (alpha, "bob"), (beta, "cy")}
    ann = mine[(alpha, "ann")]
    assert (ann["requests"], ann["errors"], ann["prompt_tokens"], ann["completion_tokens"]) == \
        (2, 0, 4000, 600)
    assert Decimal(ann["cost_usd"]) == cost(4000, 600)
    assert ann["key_name"] == "alpha"
    cy = mine[(beta, "cy")]
    assert (cy["requests"], cy["errors"]) == (2, 1)  # the failed one named the same user
    assert ann["latency_p50_ms"] is not None and ann["latency_p95_ms"] >= ann["latency_p50_ms"]
    by_day = admin(gw, "GET", f"/admin/v1/usage/summary?group_by=day,model&key={alpha}").json()
    assert [(g["model"], g["requests"]) for g in by_day["data"]] == [("fake-model", 3)]
    assert by_day["totals"]["requests"] == 3
    assert Decimal(by_day["totals"]["cost_usd"]) == cost(4200, 640)
    assert len(by_day["data"][0]["day"]) == 10
    hourly = admin(gw, "GET", f"/admin/v1/usage/summary?group_by=hour,error&key={beta}").json()
    assert sorted((g["error"] or "", g["requests"]) for g in hourly["data"]) == [
        ("", 1), ("bad_gateway", 1)]
    assert hourly["data"][0]["hour"].endswith(":00:00")


@pytest.mark.parametrize(("query", "param"), [
    ("from=yesterday", "from"), ("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "to"),
    ("limit=0", "limit"), ("limit=5000", "limit"), ("status=teapot", "status"),
    ("cursor=%21%21", "cursor"), ("colour=blue", "colour"),
])
def test_bad_usage_parameters_are_a_400(gw, query, param):
    refused = admin(gw, "GET", f"/admin/v1/usage?{query}")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == param


@pytest.mark.parametrize("group_by", ["colour", "hour,day", "key,key"])
def test_a_bad_group_by_is_a_400(gw, group_by):
    refused = admin(gw, "GET", f"/admin/v1/usage/summary?group_by={group_by}")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "group_by"


def test_channels_show_breaker_latency_and_last_error(gw, traffic):
    channels = {c["channel"]: c for c in admin(gw, "GET", "/admin/v1/channels").json()["data"]}
    fake = channels["fake/upstream-model-v1"]
    assert fake["breaker"] == "closed" and fake["cooldown_left_s"] == 0
    assert "fake-model" in fake["models"]
    assert fake["attempt_samples"] >= 4 and fake["attempt_p90_ms"] >= fake["attempt_p50_ms"]
    assert fake["recent"]["requests"] >= 4 and fake["recent"]["latency_p50_ms"] is not None
    assert fake["in_flight"] == 0 and fake["queued"] == 0
    dead = channels["dead/nothing"]
    assert dead["last_error"]["code"] and dead["failures_in_a_row"] >= 1
    assert dead["recent"]["errors"] >= 1


def test_config_is_shown_with_its_secrets_masked(gw):
    shown = admin(gw, "GET", "/admin/v1/config")
    assert shown.status_code == 200
    text = shown.text
    assert UPSTREAM_KEY not in text and ADMIN_KEY not in text and "sk-dead" not in text
    config = shown.json()["config"]
    assert config["admin_key"] == "***"
    assert config["providers"]["fake-quick"]["api_key"] == "***"
    assert config["providers"]["fake"]["base_url"].startswith("http://127.0.0.1")
    catalog = {m["id"]: m for m in shown.json()["catalog"]}
    assert catalog["failover-model"]["channels"][0]["channel"] == "dead/nothing"
    assert catalog["fake-model"]["pricing"]["input"] == 1.0
