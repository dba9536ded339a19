"""The usage ledger: one row per request, priced, written in batches off the response path."""

from tokenmux.ledger.row import UsageRow
from tokenmux.ledger.writer import LedgerWriter

__all__ = ["LedgerWriter", "UsageRow"]
