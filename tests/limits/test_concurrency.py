"""Requests in flight per key: the count a key is refused at, and what gives a slot back."""

from __future__ import annotations

import pytest

from tokenmux.auth import Principal
from tokenmux.errors import ConcurrencyLimited
from tokenmux.limits import KeyConcurrency

A, B = Principal("key_a", "a"), Principal("key_b", "b")


def test_a_key_is_refused_at_its_cap_and_others_are_not():
    cap = KeyConcurrency(2)
    held = [cap.acquire(A), cap.acquire(A)]
    with pytest.raises(ConcurrencyLimited) as refused:
        cap.acquire(A)
    assert refused.value.status == 429
    assert refused.value.headers()["Retry-After"] == "1"
    assert cap.in_flight("key_a") == 2  # a refusal takes nothing
    cap.acquire(B)
    held[0].release()
    held[0].release()  # twice gives back one slot, not two
    assert cap.in_flight("key_a") == 1
    cap.acquire(A)
    with pytest.raises(ConcurrencyLimited):
        cap.acquire(A)


def test_no_cap_counts_nothing():
    cap = KeyConcurrency(None)
    slots = [cap.acquire(A) for _ in range(1000)]
    assert cap.in_flight("key_a") == 0
    for slot in slots:
        slot.release()
