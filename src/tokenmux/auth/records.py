"""The api_keys table: create, list, revoke and read, for the CLI and the gateway alike."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Engine, func, select, update

from tokenmux.auth.keys import Principal, display_prefix, hash_key, new_key_id, new_secret
from tokenmux.auth.options import KeyOptions, utc_time
from tokenmux.budgets.money import PERIODS, period_of, ticks, ticks_to_usd
from tokenmux.budgets.spent import spent_since
from tokenmux.db.schema import api_keys
from tokenmux.routing.tiers import Tier, tier_named

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyRecord:
    id: str
    name: str
    prefix: str
    is_admin: bool
    rpm: int | None
    tpm: int | None
    tier: str | None
    max_tier: str | None
    created_at: datetime
    revoked_at: datetime | None
    fallback_models: tuple[str, ...] = ()
    fallback_timeout_ms: int | None = None
    strict_params: bool = False
    compression: str | None = None  # a strategy; None: no compression default
    compression_model: str | None = None
    compression_threshold: int | None = None
    budget_usd: Decimal | None = None
    budget_period: str | None = None
    expires_at: datetime | None = None  # UTC; None: never


def create_key(engine: Engine, name: str,
               options: KeyOptions | None = None) -> tuple[str, KeyRecord]:
    """Returns the secret, which exists nowhere else afterwards, and the stored record. OPTIONS
    are taken as checked (auth/options.py)."""
    options = options or KeyOptions()
    secret = new_secret()
    now = datetime.now(UTC)
    record = KeyRecord(new_key_id(), name, display_prefix(secret), options.is_admin, options.rpm,
                       options.tpm, options.tier, options.max_tier, now, None,
                       tuple(options.fallback_models), options.fallback_timeout_ms,
                       options.strict_params, options.compression, options.compression_model,
                       options.compression_threshold, options.budget_usd,
                       None if options.budget_usd is None else options.budget_period or "total",
                       options.expires_at)
    with engine.begin() as conn:
        conn.execute(api_keys.insert().values(
            id=record.id, name=name, key_hash=hash_key(secret), prefix=record.prefix,
            **_settings(record), created_at=now, updated_at=now,
        ))
    return secret, record


def _settings(record: KeyRecord) -> dict[str, Any]:
    """The columns a key's settings are kept in."""
    return dict(
        is_admin=record.is_admin, rpm=record.rpm, tpm=record.tpm, tier=record.tier,
        max_tier=record.max_tier, fallback_models=_models_text(record.fallback_models),
        fallback_timeout_ms=record.fallback_timeout_ms, strict_params=record.strict_params,
        compression=record.compression, compression_model=record.compression_model,
        compression_threshold=record.compression_threshold, budget_usd=record.budget_usd,
        budget_period=record.budget_period, expires_at=record.expires_at)


def options_of(record: KeyRecord) -> KeyOptions:
    """A stored key's settings, to change some and check them all again."""
    return KeyOptions.model_construct(**{
        name: getattr(record, name) for name in KeyOptions.model_fields})


def update_key(engine: Engine, key_id: str, name: str,
               options: KeyOptions) -> KeyRecord | None:
    """Replaces a live key's name and settings (checked); None when no live key has KEY_ID.
    The new updated_at moves the keys' revision, so running gateways reload it at their poll."""
    now = datetime.now(UTC)
    record = get_key(engine, key_id)
    if record is None or record.revoked_at is not None:
        return None
    changed = KeyRecord(**{**record.__dict__, **options.model_dump(), "name": name,
                           "fallback_models": tuple(options.fallback_models),
                           "budget_period": None if options.budget_usd is None
                           else options.budget_period or "total"})
    with engine.begin() as conn:
        conn.execute(update(api_keys).where((api_keys.c.id == key_id)
                                            & api_keys.c.revoked_at.is_(None))
                     .values(name=name, **_settings(changed), updated_at=now))
    return changed


def _models_text(models: tuple[str, ...]) -> str | None:
    return orjson.dumps(list(models)).decode() if models else None


def _models(text: str | None) -> tuple[str, ...]:
    # Written by create_key alone; anything else in the column reads as no defaults.
    try:
        models = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        return ()
    if not isinstance(models, list):
        return ()
    return tuple(m for m in models if isinstance(m, str) and m)


def list_keys(engine: Engine, *, include_revoked: bool = False,
              key_id: str | None = None) -> list[KeyRecord]:
    query = select(
        api_keys.c.id, api_keys.c.name, api_keys.c.prefix, api_keys.c.is_admin, api_keys.c.rpm,
        api_keys.c.tpm, api_keys.c.tier, api_keys.c.max_tier, api_keys.c.created_at,
        api_keys.c.revoked_at, api_keys.c.fallback_models, api_keys.c.fallback_timeout_ms,
        api_keys.c.strict_params, api_keys.c.compression, api_keys.c.compression_model,
        api_keys.c.compression_threshold, api_keys.c.budget_usd, api_keys.c.budget_period,
        api_keys.c.expires_at,
    ).order_by(api_keys.c.created_at)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    if key_id is not None:
        query = query.where(api_keys.c.id == key_id)
    with engine.connect() as conn:
        return [KeyRecord(**{**row._mapping, "fallback_models": _models(row.fallback_models),
                             "expires_at": row.expires_at and utc_time(row.expires_at)})
                for row in conn.execute(query)]


def get_key(engine: Engine, key_id: str) -> KeyRecord | None:
    """The key with KEY_ID, revoked or not."""
    found = list_keys(engine, include_revoked=True, key_id=key_id)
    return found[0] if found else None


def revoke_key(engine: Engine, key_id_or_name: str) -> list[str]:
    """Revokes by id, or every live key of that name; returns the ids revoked."""
    now = datetime.now(UTC)
    live = api_keys.c.revoked_at.is_(None)
    match = (api_keys.c.id == key_id_or_name) | (api_keys.c.name == key_id_or_name)
    with engine.begin() as conn:
        ids = [row.id for row in conn.execute(select(api_keys.c.id).where(live & match))]
        if ids:
            conn.execute(update(api_keys).where(api_keys.c.id.in_(ids))
                         .values(revoked_at=now, updated_at=now))
    return ids


def revoke_ids(engine: Engine, ids: list[str]) -> None:
    """Revokes the live keys with these ids (and no key by its name)."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(update(api_keys).where(api_keys.c.id.in_(ids)
                                            & api_keys.c.revoked_at.is_(None))
                     .values(revoked_at=now, updated_at=now))


def has_admin_key(engine: Engine) -> bool:
    query = select(func.count()).select_from(api_keys).where(
        api_keys.c.is_admin.is_(True) & api_keys.c.revoked_at.is_(None))
    with engine.connect() as conn:
        return bool(conn.execute(query).scalar_one())


def live_principals(engine: Engine) -> dict[str, Principal]:
    """Every usable key, by hash: what the gateway holds in memory. A row the gateway cannot
    read (a tier it does not know, written by hand or by a newer version) is left out with a
    warning, so one bad row never stops the others from loading."""
    query = select(api_keys.c.key_hash, api_keys.c.id, api_keys.c.name, api_keys.c.is_admin,
                   api_keys.c.rpm, api_keys.c.tpm, api_keys.c.tier, api_keys.c.max_tier,
                   api_keys.c.fallback_models, api_keys.c.fallback_timeout_ms,
                   api_keys.c.strict_params, api_keys.c.compression,
                   api_keys.c.compression_model, api_keys.c.compression_threshold,
                   api_keys.c.budget_usd, api_keys.c.budget_period, api_keys.c.expires_at,
                   ).where(api_keys.c.revoked_at.is_(None))
    principals: dict[str, Principal] = {}
    with engine.connect() as conn:
        for (key_hash, key_id, name, is_admin, rpm, tpm, tier, max_tier, fallbacks,
             timeout_ms, strict, compression, compression_model,
             compression_threshold, budget_usd, budget_period, expires) in conn.execute(query):
            try:
                principals[key_hash] = Principal(
                    key_id, name, is_admin, rpm, tpm, tier_named(tier) if tier else Tier.MEDIUM,
                    tier_named(max_tier) if max_tier else None, _models(fallbacks), timeout_ms,
                    bool(strict), compression, compression_model, compression_threshold,
                    *_budget(budget_usd, budget_period),
                    None if expires is None else utc_time(expires).timestamp())
            except KeyError as unknown:
                log.warning("key %s is left out: unknown tier %s", key_id, unknown)
    return principals


def _budget(usd: Any, period: str | None) -> tuple[int | None, str]:
    if usd is None:
        return None, "total"
    # A period the gateway does not know (written by hand) reads as the strictest: in all.
    return ticks(Decimal(str(usd))), period if period in PERIODS else "total"


def spent_by_key(engine: Engine, keys: list[KeyRecord]) -> dict[str, Decimal]:
    """What each key with a budget has spent in its current period, by the ledger."""
    now = datetime.now(UTC)
    return {key.id: ticks_to_usd(spent_since(engine, key.id,
                                             period_of(key.budget_period or "total", now)[1]))
            for key in keys if key.budget_usd is not None}


def revision(engine: Engine) -> tuple[int, str]:
    """Changes whenever a key is created or revoked; cheap enough to poll."""
    query = select(func.count(), func.max(api_keys.c.updated_at))
    with engine.connect() as conn:
        count, latest = conn.execute(query).one()
    return count, str(latest)
