"""The database: table definitions, the engine, and migrations run at start."""

from tokenmux.db.engine import connect
from tokenmux.db.schema import api_keys, metadata, usage

__all__ = ["api_keys", "connect", "metadata", "usage"]
