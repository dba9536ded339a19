"""`tokenmux keys create | list | revoke`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import click
import orjson

from tokenmux.api.chat import (
    MAX_FALLBACK_MODELS,
    MAX_FALLBACK_TIMEOUT_MS,
    MIN_FALLBACK_TIMEOUT_MS,
)
from tokenmux.auth import options, records
from tokenmux.budgets.money import MAX_BUDGET_USD, PERIODS, ticks, usd_text
from tokenmux.cli.common import config_option, load, open_database
from tokenmux.compression.settings import STRATEGIES
from tokenmux.routing.tiers import NAMES as TIERS


@click.group()
def keys() -> None:
    """Create, list and revoke API keys."""


@keys.command()
@config_option
@click.option("--name", required=True, help="Who the key is for; shown in the ledger.")
@click.option("--rpm", type=click.IntRange(min=1), default=None, help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), default=None, help="Tokens per minute.")
@click.option("--admin", is_flag=True, help="A key that may also manage the gateway.")
@click.option("--tier", type=click.Choice(TIERS), default=None,
              help="Service tier of its requests when they send no X-Tier (default: medium).")
@click.option("--max-tier", type=click.Choice(TIERS), default=None,
              help="Highest tier its requests may ask for with X-Tier.")
@click.option("--fallback-model", "fallback_models", multiple=True,
              help="A model tried when the requested one fails, for requests that name no "
                   f"fallback_models of their own (repeat, up to {MAX_FALLBACK_MODELS}).")
@click.option("--fallback-timeout", "fallback_timeout",
              type=click.IntRange(MIN_FALLBACK_TIMEOUT_MS, MAX_FALLBACK_TIMEOUT_MS), default=None,
              help="Milliseconds an attempt may take before the next model is tried "
                   "(default 30000).")
@click.option("--strict-params", is_flag=True,
              help="Refuse (400), rather than drop, sampling fields a model does not take.")
@click.option("--compression", type=click.Choice(STRATEGIES), default=None,
              help="Compress its requests' long conversations by default (a request's body or "
                   "headers may change or turn it off).")
@click.option("--compression-model", default=None,
              help="The model that writes its summaries (default: the gateway's).")
@click.option("--compression-threshold", type=click.IntRange(min=1), default=None,
              help="Tokens from which its conversations are compressed (default: the "
                   "strategy's).")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True, max=MAX_BUDGET_USD),
              default=None, help="US dollars the key may spend per --budget-period; over it, "
                                 "requests get 429 insufficient_quota.")
@click.option("--budget-period", type=click.Choice(PERIODS), default=None,
              help="The budget's period: a UTC day, a UTC month, or in all (default).")
@click.option("--expires", default=None, metavar="TIME|DURATION",
              help="When the key stops working: an ISO 8601 time (UTC unless it names its "
                   "zone), or a duration from now such as 30d, 12h, 90m or 2w.")
def create(config_path: str | None, name: str, rpm: int | None, tpm: int | None,
           admin: bool, tier: str | None, max_tier: str | None,
           fallback_models: tuple[str, ...], fallback_timeout: int | None,
           strict_params: bool, compression: str | None, compression_model: str | None,
           compression_threshold: int | None, budget: float | None,
           budget_period: str | None, expires: str | None) -> None:
    """Create a key; its secret is printed once, as the last line."""
    fields = {"rpm": rpm, "tpm": tpm, "is_admin": admin, "tier": tier, "max_tier": max_tier,
              "fallback_models": fallback_models, "fallback_timeout_ms": fallback_timeout,
              "strict_params": strict_params, "compression": compression,
              "compression_model": compression_model,
              "compression_threshold": compression_threshold,
              "budget_usd": None if budget is None else _usd(budget),
              "budget_period": budget_period,
              "expires_at": None if expires is None else _expiry(expires)}
    config = load(config_path)
    try:
        checked = options.check(config, options.parse(fields), OPTION_OF)
    except options.InvalidKeyOption as problem:
        raise click.BadParameter(problem.message, param_hint=OPTION_OF.get(
            problem.field, "--" + problem.field.replace("_", "-"))) from None
    secret, record = records.create_key(open_database(config), name, checked)
    click.echo(f"Created key {record.id} ({name}, {options.describe(checked)}). Its secret is "
               "shown only now:", err=True)
    click.echo(secret)


# The CLI's name for a setting where it differs from the field's.
OPTION_OF = {"is_admin": "--admin", "fallback_models": "--fallback-model",
             "fallback_timeout_ms": "--fallback-timeout", "budget_usd": "--budget",
             "max_tier": "--max-tier", "expires_at": "--expires",
             "compression": "--compression-model, --compression-threshold"}


DURATION = re.compile(r"(\d{1,5})([mhdw])")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _expiry(text: str) -> datetime:
    """The time --expires names: a duration from now, or an ISO 8601 time."""
    duration = DURATION.fullmatch(text.strip())
    if duration is not None:
        return datetime.now(UTC) + timedelta(**{UNITS[duration[2]]: int(duration[1])})
    try:
        return options.utc_time(text)
    except ValueError:
        raise click.BadParameter(f"an ISO 8601 time such as 2027-01-31T00:00:00Z, or a duration "
                                 f"such as 30d, 12h, 90m or 2w; got {text!r}",
                                 param_hint="--expires") from None


def _usd(amount: float) -> Decimal:
    # The text the user typed: 0.1 stays 0.1, not 0.1000000000000000055
    return Decimal(repr(amount))


@keys.command(name="list")
@config_option
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
def list_(config_path: str | None, include_revoked: bool, as_json: bool) -> None:
    """List keys (never their secrets)."""
    engine = open_database(load(config_path))
    rows = records.list_keys(engine, include_revoked=include_revoked)
    spent = records.spent_by_key(engine, rows)
    if as_json:
        data = [{**r.__dict__, "created_at": r.created_at.isoformat(),
                 "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
                 "expires_at": r.expires_at.isoformat() if r.expires_at else None,
                 "budget_usd": _money(r.budget_usd), "spent_usd": _money(spent.get(r.id))}
                for r in rows]
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{'ID':<22} {'NAME':<20} {'PREFIX':<11} {'RPM':>6} {'TPM':>9}  "
               f"{'TIER':<20} {'BUDGET (SPENT)':<30} {'EXPIRES':<20} STATE")
    now = datetime.now(UTC)
    for r in rows:
        state = ("revoked" if r.revoked_at else "expired" if r.expires_at and r.expires_at <= now
                 else "admin" if r.is_admin else "active")
        expiry = options.iso(r.expires_at) if r.expires_at else "-"
        tier = (r.tier or "medium") + (f" (max {r.max_tier})" if r.max_tier else "")
        budget = "-" if r.budget_usd is None else (
            f"${_money(r.budget_usd)} {options.per(r.budget_period or 'total')} "
            f"(${_money(spent.get(r.id))})")
        click.echo(f"{r.id:<22} {r.name:<20} {r.prefix + '…':<11} {r.rpm or '-':>6} "
                   f"{r.tpm or '-':>9}  {tier:<20} {budget:<30} {expiry:<20} {state}")


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else usd_text(ticks(amount))


@keys.command()
@config_option
@click.argument("key")
def revoke(config_path: str | None, key: str) -> None:
    """Revoke KEY (an id, or every live key with that name); running gateways refuse it at once."""
    revoked = records.revoke_key(open_database(load(config_path)), key)
    if not revoked:
        raise click.ClickException(f"no live key with id or name {key!r}")
    click.echo("Revoked " + ", ".join(revoked))
