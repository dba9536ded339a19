"""Budgets held in this process: a dict lookup and two additions per request.

What a key has spent in its current period survives a restart: it is read from the ledger (the
sum of its rows' `cost_usd` since the period began) once, at start or when the key is first
seen, off the request path, and kept here afterwards. With N workers and no Redis, each worker
holds 1/N of every budget and of what was spent, as each holds 1/N of the rate limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from tokenmux.auth.keys import Principal
from tokenmux.budgets.money import Hold, period_of, usd_text
from tokenmux.budgets.spent import OncePerKey, read_spent
from tokenmux.errors import BudgetExhausted


@dataclass(slots=True)
class _Account:
    spent: int = 0
    held: int = 0  # the reservations of requests in flight


class MemoryBudgets:
    def __init__(self, engine: Engine, *, share: int = 1):
        self._engine = engine
        self._share = max(1, share)
        self._accounts: dict[str, dict[str, _Account]] = {}  # key id → period → account
        self._known: set[str] = set()  # keys whose spending was read from the ledger
        self._reading = OncePerKey()

    async def start(self, principals: Iterable[Principal]) -> None:
        """Reads what every key with a budget has spent in its period, before serving."""
        await asyncio.gather(*(self._learn(p) for p in principals if p.budget is not None))

    @property
    def share(self) -> int:
        return self._share

    def scope(self) -> str:
        """Where each key's budget is held, as `/health` says it (as the limits say theirs)."""
        return "process" if self._share == 1 else f"split 1/{self._share}"

    async def admit(self, principal: Principal, worst: int) -> Hold:
        assert principal.budget is not None
        if principal.key_id not in self._known:
            await self._learn(principal)
        period, _ = period_of(principal.budget_period, datetime.now(UTC))
        account = self._account(principal.key_id, period)
        limit = principal.budget // self._share
        left = limit - account.spent - account.held
        if left <= 0:
            raise over_budget(principal, left, self._share)
        account.held += worst
        return Hold(period, worst, left - worst, self._charge_for(principal.key_id))

    def _account(self, key_id: str, period: str) -> _Account:
        periods = self._accounts.setdefault(key_id, {})
        account = periods.get(period)
        if account is None:
            # A period begins: those before it are done with, once nothing in flight holds them
            # (their last charge drops them then), so a key keeps one account, not one a day.
            for name in [name for name, old in periods.items() if old.held <= 0]:
                del periods[name]
            account = periods[period] = _Account()
        return account

    def _charge_for(self, key_id: str) -> Callable[[Hold, int, datetime], None]:
        def charge(hold: Hold, actual: int, when: datetime) -> None:
            period, _ = period_of(period_kind(hold.period), when)
            self._account(key_id, period).spent += actual
            periods = self._accounts[key_id]
            account = periods.get(hold.period)
            if account is not None:
                account.held -= hold.reserved
                if period != hold.period and account.held <= 0:
                    del periods[hold.period]
        return charge

    async def _learn(self, principal: Principal) -> None:
        await self._reading.run(principal.key_id, lambda: self._read(principal))

    async def _read(self, principal: Principal) -> None:
        period, start = period_of(principal.budget_period, datetime.now(UTC))
        spent = await read_spent(self._engine, principal.key_id, start)
        self._account(principal.key_id, period).spent += spent // self._share
        self._known.add(principal.key_id)


def period_kind(name: str) -> str:
    """The kind of a period from its name: `2026-12-01` a day, `2026-12` a month."""
    if name == "total":
        return "total"
    return "day" if name.count("-") == 2 else "month"


def over_budget(principal: Principal, left: int, share: int = 1) -> BudgetExhausted:
    assert principal.budget is not None
    whose = "" if share == 1 else f" (this worker holds 1/{share} of it)"
    error = BudgetExhausted(
        f"This key has spent its budget of ${usd_text(principal.budget)} "
        f"({'in all' if principal.budget_period == 'total' else 'per ' + principal.budget_period}"
        f"){whose}. Raise the budget or wait for its period to end.")
    error.extra_headers = {"X-TokenMux-Budget-Remaining": usd_text(left)}
    return error
