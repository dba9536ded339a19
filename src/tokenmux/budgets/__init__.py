"""Per-key spending budgets in US dollars, per UTC day, UTC month or in all: a request reserves its
worst-case cost at admission and is charged its real cost at the end; in process, or shared by
every instance through Redis."""

from tokenmux.budgets.memory import MemoryBudgets
from tokenmux.budgets.money import (
    PERIODS,
    UNIT,
    Hold,
    period_of,
    ticks,
    ticks_to_usd,
    usd_text,
    worst_cost,
)
from tokenmux.budgets.shared import SharedBudgets

__all__ = ["PERIODS", "UNIT", "Hold", "MemoryBudgets", "SharedBudgets", "period_of", "ticks",
           "ticks_to_usd", "usd_text", "worst_cost"]
