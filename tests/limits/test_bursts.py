"""Token limits hold in a burst of concurrent requests, whatever `max_tokens` says."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx

from tests.conftest import Gateway

# Long enough that the whole burst arrives before the first answer settles, on a loaded machine.
STALLED = [{"role": "user", "content": "@stall 4"}]


def _burst(gateway: Gateway, secret: str, body: dict, count: int) -> list[httpx.Response]:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: gateway.post(body, key=secret), range(count)))


def test_a_burst_without_max_tokens_reserves_an_answer_each(gateway):
    # fake-model has no max_output, so each answer is reserved at the default 1,024 tokens:
    # a 2,500-token minute admits two requests at once, not the forty that their prompts
    # (about 30 tokens each) would let in.
    secret = gateway.cli("keys", "create", "--name", "burst", "--tpm", "2500").stdout.split()[-1]
    responses = _burst(gateway, secret, {"model": "fake-model", "messages": STALLED}, 16)
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) in (2, 3), statuses  # a third may fit as the bucket refills
    assert statuses.count(429) == 16 - statuses.count(200)


def test_a_huge_max_tokens_reserves_one_bucket_and_retry_after_stays_sane(gateway):
    secret = gateway.cli("keys", "create", "--name", "huge", "--tpm", "600").stdout.split()[-1]
    body = {"model": "fake-model", "messages": STALLED, "max_tokens": 1_000_000}
    responses = _burst(gateway, secret, body, 4)
    assert [r.status_code for r in responses].count(200) == 1, responses
    for refused in (r for r in responses if r.status_code == 429):
        # A whole minute's bucket at most was reserved, so the wait is at most a minute.
        assert 1 <= int(refused.headers["retry-after"]) <= 60
    # The short answer settled: the key has most of its minute back at once.
    response = gateway.post({"model": "fake-model", "messages": [
        {"role": "user", "content": "hello"}], "max_tokens": 16}, key=secret)
    assert response.status_code == 200, response.text
