"""The breaker and the hedging figure of one channel, on the clock the caller gives: the README's
rules (failures in a row open it, a cooldown, one probe, a failed probe doubling the cooldown up
to its cap; the 90th percentile once three answers are on record) to the millisecond, which the
gateway-level tests (tests/test_breaker_rules.py, tests/test_tiers.py) can show only with wide
margins."""

from __future__ import annotations

from tokenmux.routing.health import ChannelHealth

FAILURES, COOLDOWN, CAP = 3, 10.0, 50.0


def opened(now: float = 100.0) -> ChannelHealth:
    health = ChannelHealth(FAILURES, COOLDOWN, CAP)
    for _ in range(FAILURES):
        health.failed(now)
    return health


def test_the_breaker_opens_at_its_count_of_failures_in_a_row():
    health = ChannelHealth(FAILURES, COOLDOWN, CAP)
    for _ in range(FAILURES - 1):
        health.failed(100.0)
    assert health.healthy(100.0) and not health.cooling(100.0)
    health.succeeded(0.1)  # a success in between: the count starts again
    for _ in range(FAILURES - 1):
        health.failed(100.0)
    assert health.healthy(100.0)
    health.failed(100.0)
    assert not health.healthy(100.0) and health.cooling(100.0)
    assert health.open_until == 100.0 + COOLDOWN


def test_after_the_cooldown_one_request_is_the_probe_and_its_success_closes_the_breaker():
    health = opened()
    assert not health.healthy(100.0 + COOLDOWN - 0.001)
    assert health.healthy(100.0 + COOLDOWN)  # the probe
    assert not health.healthy(100.0 + COOLDOWN)  # only one at a time
    assert health.cooling(100.0 + COOLDOWN)
    health.succeeded(0.1)
    assert health.healthy(200.0) and health.healthy(200.0) and not health.cooling(200.0)
    # Closed again, with its cooldown back at the start.
    for _ in range(FAILURES):
        health.failed(300.0)
    assert health.open_until == 300.0 + COOLDOWN


def test_a_probe_that_ends_without_a_verdict_lets_the_next_request_probe():
    health = opened()
    assert health.healthy(120.0)
    health.released()
    assert health.healthy(120.0)


def test_a_failed_probe_doubles_the_cooldown_up_to_its_cap():
    health = opened()
    now, cooldowns = 100.0, []
    for _ in range(4):
        now = health.open_until
        assert health.healthy(now)
        health.failed(now)
        cooldowns.append(health.open_until - now)
    assert cooldowns == [2 * COOLDOWN, 4 * COOLDOWN, CAP, CAP]


def test_the_hedging_figure_is_the_90th_percentile_once_three_answers_are_on_record():
    health = ChannelHealth(FAILURES, COOLDOWN, CAP)
    health.succeeded(0.3)
    health.succeeded(0.1)
    assert health.p90() is None
    health.succeeded(0.2)
    assert health.p90() == 0.3
    for seconds in range(4, 21):  # 0.1 to 2.0 in all
        health.succeeded(seconds / 10)
    assert health.p90() == 1.9


def test_the_hedging_figure_forgets_old_answers():
    health = ChannelHealth(FAILURES, COOLDOWN, CAP)
    for _ in range(64):
        health.succeeded(9.0)
    for _ in range(64):
        health.succeeded(1.0)
    assert health.p90() == 1.0
    health.succeeded(5.0)
    assert health.p90() == 1.0  # one slow answer among the recent ones is past the 90th
