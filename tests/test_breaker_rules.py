"""The breaker's rules, measured at the fake upstream: a failed probe doubles the cooldown up
to `max_cooldown_ms`, no call is made to a cooling channel, and a client's own mistakes never
count against the channel."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from itertools import pairwise

import pytest

from tests.conftest import Gateway, started_gateway
from tests.fakes.openai_upstream import FakeOpenAI

COOLDOWN_S, MAX_COOLDOWN_S = 0.8, 1.6


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Gateway]:
    # One failure opens a breaker, so a single miscounted 4xx would show.
    running = started_gateway(tmp_path_factory.mktemp("breaker-rules"), textwrap.dedent(f"""\
        routing:
          breaker: {{failures: 1, cooldown_ms: {int(COOLDOWN_S * 1000)},
                     max_cooldown_ms: {int(MAX_COOLDOWN_S * 1000)}}}
        providers:
          fake: {{kind: openai, base_url: "{upstream.base_url}", api_key: sk-fake}}
        models:
          - name: flaky-pair
            channels:
              - {{provider: fake, model: probed-flaky, priority: 0}}
              - {{provider: fake, model: probed-steady, priority: 1}}
          - name: picky-pair
            channels:
              - {{provider: fake, model: picky, priority: 0}}
              - {{provider: fake, model: picky-spare, priority: 1}}
        """))
    yield running
    running.stop()
    upstream.standing.pop("probed-flaky", None)


def ask(gateway: Gateway, model: str, text: str = "hello"):  # type: ignore[no-untyped-def]
    return gateway.post({"model": model, "messages": [{"role": "user", "content": text}]})


def test_a_failed_probe_doubles_the_cooldown_up_to_its_cap(guarded, upstream):
    upstream.standing["probed-flaky"] = "@fail 500"

    def flaky_times() -> list[float]:
        return [r.at for r in upstream.received if r.body.get("model") == "probed-flaky"]

    before = len(flaky_times())
    deadline = time.monotonic() + 30
    # Steady traffic: every request is answered (by the steady channel when the other fails or
    # cools down), and the flaky one sees only the first failure and then one probe per cooldown.
    while len(flaky_times()) < before + 4 and time.monotonic() < deadline:
        response = ask(guarded, "flaky-pair")
        assert response.status_code == 200
        assert response.headers["x-tokenmux-channel"] == "fake/probed-steady"
        time.sleep(0.03)
    upstream.standing.pop("probed-flaky")
    times = flaky_times()[before:]
    assert len(times) == 4, "the flaky channel was not probed three times within 30 s"
    gaps = [b - a for a, b in pairwise(times)]
    assert gaps[0] >= COOLDOWN_S, gaps  # the first cooldown: cooldown_ms
    assert gaps[0] < 2 * COOLDOWN_S - 0.1, gaps  # and not already doubled
    assert gaps[1] >= 2 * COOLDOWN_S, gaps  # the probe failed: twice as long
    assert gaps[2] >= MAX_COOLDOWN_S, gaps  # failed again: doubling would give 3.2 s ...
    assert gaps[2] < 2 * MAX_COOLDOWN_S - 0.3, gaps  # ... but max_cooldown_ms caps it


@pytest.mark.parametrize("status", [400, 413, 422])
def test_a_clients_mistake_never_opens_the_breaker(guarded, upstream, status):
    def picky_calls() -> int:
        return sum(1 for r in upstream.received if r.body.get("model") == "picky")

    before = picky_calls()
    for _ in range(3):
        response = ask(guarded, "picky-pair", f"@fail {status}")
        assert response.status_code == status
    assert picky_calls() == before + 3  # each went to the first channel, and only there
    # Had any of them counted, the channel would be cooling down and the spare would answer.
    response = ask(guarded, "picky-pair")
    assert response.status_code == 200
    assert response.headers["x-tokenmux-channel"] == "fake/picky"
    assert response.headers["x-tokenmux-attempts"] == "1"
