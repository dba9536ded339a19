"""API keys: minting and hashing, their records, and the in-memory view the gateway checks."""

# keys first: what cache.py imports (key options, and through them compression) needs Principal.
from tokenmux.auth.keys import Principal, hash_key, new_secret  # isort: skip
from tokenmux.auth.cache import KeyCache  # isort: skip

__all__ = ["KeyCache", "Principal", "hash_key", "new_secret"]
