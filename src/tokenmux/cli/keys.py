"""`tokenmux keys create | list | revoke`."""

from __future__ import annotations

from decimal import Decimal

import click
import orjson

from tokenmux.api.chat import (
    MAX_FALLBACK_MODELS,
    MAX_FALLBACK_TIMEOUT_MS,
    MIN_FALLBACK_TIMEOUT_MS,
)
from tokenmux.auth import records
from tokenmux.budgets.money import MAX_BUDGET_USD, PERIODS, UNIT, ticks, usd_text
from tokenmux.cli.common import config_option, load, open_database
from tokenmux.compression.settings import STRATEGIES
from tokenmux.config.schema import ECHO_MODEL, Config
from tokenmux.routing.tiers import NAMES as TIERS
from tokenmux.routing.tiers import tier_named


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
def create(config_path: str | None, name: str, rpm: int | None, tpm: int | None,
           admin: bool, tier: str | None, max_tier: str | None,
           fallback_models: tuple[str, ...], fallback_timeout: int | None,
           strict_params: bool, compression: str | None, compression_model: str | None,
           compression_threshold: int | None, budget: float | None,
           budget_period: str | None) -> None:
    """Create a key; its secret is printed once, as the last line."""
    if budget_period is not None and budget is None:
        raise click.BadParameter("a period is for a --budget; none was given",
                                 param_hint="--budget-period")
    budget_period = budget_period or "total"
    if tier and max_tier and tier_named(tier) > tier_named(max_tier):
        raise click.BadParameter(f"the default tier {tier!r} is above --max-tier {max_tier!r}",
                                 param_hint="--tier")
    config = load(config_path)
    _check_fallbacks(config, fallback_models)
    if (compression_model or compression_threshold) and not compression:
        raise click.BadParameter("needs --compression", param_hint="--compression-model, "
                                 "--compression-threshold")
    if compression_model is not None and compression_model != "auto":
        _check_models(config, (compression_model,), "--compression-model")
    engine = open_database(config)
    secret, record = records.create_key(engine, name, rpm=rpm, tpm=tpm, is_admin=admin,
                                        tier=tier, max_tier=max_tier,
                                        fallback_models=fallback_models,
                                        fallback_timeout_ms=fallback_timeout,
                                        strict_params=strict_params,
                                        compression=compression,
                                        compression_model=compression_model,
                                        compression_threshold=compression_threshold,
                                        budget_usd=None if budget is None else _usd(budget),
                                        budget_period=budget_period)
    limits = ", ".join(f"{v} {k}" for k, v in (("rpm", rpm), ("tpm", tpm)) if v) or "no limits"
    limits += f", tier {tier or 'medium'}" + (f" (at most {max_tier})" if max_tier else "")
    if fallback_models:
        limits += ", falls back to " + ", ".join(fallback_models)
    if strict_params:
        limits += ", strict parameters"
    if compression:
        limits += f", compression {compression}" + (
            f" by {compression_model}" if compression_model else "")
    if record.budget_usd is not None:
        limits += f", budget ${record.budget_usd:f} {_per(budget_period)}"
    click.echo(f"Created key {record.id} ({name}, {limits}). Its secret is shown only now:",
               err=True)
    click.echo(secret)


def _usd(amount: float) -> Decimal:
    # The text the user typed, to the ledger's precision: 0.1 stays 0.1, not 0.1000000000000000055
    return Decimal(repr(amount)).quantize(UNIT)


def _per(period: str) -> str:
    return "in all" if period == "total" else f"per {period}"


def _check_fallbacks(config: Config, models: tuple[str, ...]) -> None:
    if len(models) > MAX_FALLBACK_MODELS:
        raise click.BadParameter(f"at most {MAX_FALLBACK_MODELS} fallback models; got "
                                 f"{len(models)}", param_hint="--fallback-model")
    _check_models(config, models, "--fallback-model")


def _check_models(config: Config, models: tuple[str, ...], option: str) -> None:
    known = {ECHO_MODEL} if config.echo_model else set()
    known.update(name for m in config.models for name in (m.name, *m.aliases))
    for model in models:
        if model not in known:
            raise click.BadParameter(f"the config serves no model {model!r}", param_hint=option)


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
                 "budget_usd": _money(r.budget_usd), "spent_usd": _money(spent.get(r.id))}
                for r in rows]
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{'ID':<22} {'NAME':<20} {'PREFIX':<11} {'RPM':>6} {'TPM':>9}  "
               f"{'TIER':<20} {'BUDGET (SPENT)':<30} STATE")
    for r in rows:
        state = "revoked" if r.revoked_at else ("admin" if r.is_admin else "active")
        tier = (r.tier or "medium") + (f" (max {r.max_tier})" if r.max_tier else "")
        budget = "-" if r.budget_usd is None else (
            f"${_money(r.budget_usd)} {_per(r.budget_period or 'total')} "
            f"(${_money(spent.get(r.id))})")
        click.echo(f"{r.id:<22} {r.name:<20} {r.prefix + '…':<11} {r.rpm or '-':>6} "
                   f"{r.tpm or '-':>9}  {tier:<20} {budget:<30} {state}")


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
