"""API keys: minting and hashing, their records, and the in-memory view the gateway checks."""

from tokenmux.auth.cache import KeyCache
from tokenmux.auth.keys import Principal, hash_key, new_secret

__all__ = ["KeyCache", "Principal", "hash_key", "new_secret"]
