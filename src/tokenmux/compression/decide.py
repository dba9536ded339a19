"""Whether a summary is worth its price: the compression model's list price for reading the
messages and writing the summary, against the target's input price for the tokens it removes.

Only this request's saving counts, though a stored summary goes on saving on the turns that
follow: the check errs on the side of not calling. A model whose price no source knows is never
skipped on cost, and a free summariser always pays.
"""

from __future__ import annotations

from tokenmux.config.schema import Price

# The summary's length in tokens: this share of what it replaces, within the bounds below.
SHARE = {"on": 4, "conservative": 3, "aggressive": 8}
MIN_SUMMARY, MAX_SUMMARY = 64, 1024
INSTRUCTION_TOKENS = 200  # the summarisation prompt's own tokens, about


def summary_budget(tokens: int, strategy: str) -> int:
    return max(MIN_SUMMARY, min(MAX_SUMMARY, tokens // SHARE[strategy]))


def too_small(tokens: int, budget: int) -> bool:
    """A summary would not take away even half of what it replaces."""
    return tokens < 2 * budget


def worth_it(tokens: int, budget: int, summariser: Price | None, target: Price | None) -> bool:
    if summariser is None or target is None:
        return True
    cost = (tokens + INSTRUCTION_TOKENS) * summariser.input + budget * summariser.output
    return cost == 0 or cost < (tokens - budget) * target.input
