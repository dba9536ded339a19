"""Console sessions: a random id in an HttpOnly cookie, the rest in the database.

The cookie holds 256 random bits and nothing else; the database holds their SHA-256, the hash of
the admin key that logged in and the session's CSRF token, so every worker and every gateway of
a fleet knows the session, and a database read never yields a usable cookie. A session lasts
LIFETIME from login, or until logout, or until its key is revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select

from tokenmux.db.schema import console_sessions

COOKIE = "tokenmux_session"
LIFETIME = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class Session:
    key_hash: str
    csrf: str
    expires_at: datetime


def _hashed(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(engine: Engine, key_hash: str) -> tuple[str, Session]:
    """A new session for the admin key with KEY_HASH: the cookie's value and the session."""
    session_id = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    session = Session(key_hash, secrets.token_urlsafe(32), now + LIFETIME)
    with engine.begin() as conn:
        conn.execute(delete(console_sessions).where(console_sessions.c.expires_at < now))
        conn.execute(console_sessions.insert().values(
            id_hash=_hashed(session_id), key_hash=key_hash, csrf=session.csrf,
            created_at=now, expires_at=session.expires_at))
    return session_id, session


def find(engine: Engine, session_id: str) -> Session | None:
    if len(session_id) > 100:
        return None
    query = select(console_sessions.c.key_hash, console_sessions.c.csrf,
                   console_sessions.c.expires_at).where(
        console_sessions.c.id_hash == _hashed(session_id))
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
    if expires <= datetime.now(UTC):
        return None
    return Session(row.key_hash, row.csrf, expires)


def close_session(engine: Engine, session_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(console_sessions).where(
            console_sessions.c.id_hash == _hashed(session_id)))
