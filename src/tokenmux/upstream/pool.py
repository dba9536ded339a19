"""The one HTTP client session the whole process shares: keep-alive connections, pooled."""

from __future__ import annotations

import aiohttp


def new_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0,  # concurrency is bounded by the callers, not by a hidden pool queue
        keepalive_timeout=60,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
    )
    # No cookie jar: cookies from one tenant's upstream call must never reach another's.
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
        headers={"User-Agent": "tokenmux"},
    )
