"""Amounts, periods and prices of budgets: the arithmetic both stores share.

Amounts are whole ticks of 1e-10 USD, the ledger's own precision (`cost_usd` is NUMERIC(20, 10)),
so a budget counter and the ledger's sum for a key can agree to the last digit, and Redis can
add them exactly (its scripts' numbers are doubles: whole up to 2**53 ticks, about $900,000).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal

from tokenmux.ledger.cost import Pricer
from tokenmux.ledger.row import pricing
from tokenmux.providers.base import Usage
from tokenmux.routing.catalog import Catalog, Route

UNIT = Decimal("1e-10")  # USD per tick
PERIODS = ("day", "month", "total")
MAX_BUDGET_USD = 900_000  # whole ticks stay exact in Redis's doubles below 2**53
HEADER = "X-TokenMux-Budget-Remaining"


def ticks(usd: Decimal, rounding: str = ROUND_CEILING) -> int:
    """USD as whole ticks, rounded up unless told: a budget never counts less than was spent."""
    return int((usd / UNIT).to_integral_value(rounding))


def ticks_to_usd(amount: int) -> Decimal:
    return Decimal(amount).scaleb(-10)


def usd_text(amount: int) -> str:
    """Plain decimal notation, no exponent, no trailing zeros: `0.009994`, `25`, `-0.0001`."""
    text = f"{ticks_to_usd(amount):f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def period_of(period: str, when: datetime) -> tuple[str, datetime | None]:
    """The name of the budget period WHEN falls in, and its first instant (None: `total`, which
    never starts again). Days and months are UTC's, whatever the machine's zone."""
    when = when.astimezone(UTC)
    if period == "day":
        start = when.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), start
    if period == "month":
        start = when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m"), start
    return "total", None


def worst_cost(catalog: Catalog, routes: Sequence[Route], prompt: int, answers: int,
               max_output: int | None) -> int:
    """Ticks a request reserves: its prompt estimate at the input price and its longest answers
    (`max_tokens`, else the model's `max_output`, else its output estimate) at the output price,
    on the dearest of the channels it may be sent to. A channel without a known price counts 0."""
    worst = 0.0
    for route in routes:
        price = route.list_price
        if price is None:
            continue
        entry = catalog.resolve(route.model)
        if max_output is not None:
            longest = max_output if entry.max_output is None else min(max_output,
                                                                      entry.max_output)
        else:
            longest = entry.max_output or entry.answer_estimate(None, prompt)
        worst = max(worst, prompt * price.input + answers * longest * price.output)
    # USD per million tokens to ticks: times 1e-6 USD, over 1e-10 USD per tick.
    return math.ceil(worst * 10_000)


def real_cost(pricer: Pricer, route: Route | None, usage: Usage) -> Decimal | None:
    """What the ledger writer would price the row at (the same Pricer on the same fields); None
    when no price is known."""
    if route is None:
        return None
    return pricer.cost({"_pricing": pricing(route), "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                        "cached_tokens": usage.cached_tokens,
                        "upstream_model": route.upstream_model})


@dataclass(slots=True)
class Hold:
    """One request's reservation on its key's budget, charged its real cost once, at the end."""

    period: str  # the period the reservation was taken in
    reserved: int
    left: int  # the key's remaining once this reservation was taken, when it was
    charge: Callable[[Hold, int, datetime], None]
    bucket: str = ""  # in Redis, the counter of the minute the reservation is counted under
    actual: int | None = None
    settled: bool = False

    def remaining(self) -> int:
        """As of admission, with this request's real cost in place of its reservation once
        known; negative when the key is over (by at most one request's reservation)."""
        return self.left if self.actual is None else self.left + self.reserved - self.actual

    def headers(self) -> dict[str, str]:
        return {HEADER: usd_text(self.remaining())}

    def settle(self, actual: int, when: datetime) -> None:
        """Releases the reservation and charges ACTUAL to the period WHEN falls in (the ledger
        row's own time, so that the row and the charge land in the same period)."""
        if self.settled:
            return
        self.settled = True
        self.actual = actual
        self.charge(self, actual, when)
