"""What a key may be made with, checked in one place for `tokenmux keys create` and the admin API.

`KeyOptions` holds every setting of a key but its name, each within the bounds the CLI's options
and the API's JSON share; `check` adds the rules that tie settings to each other and to the config
(a period needs a budget, a default tier at most the highest, fallback and summariser models the
config serves) and to the clock (a new expiry is still to come). A broken rule raises
`InvalidKeyOption` naming the setting, which the CLI turns into its option's name and the API
into the field's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tokenmux.api.chat import MAX_FALLBACK_MODELS, MAX_FALLBACK_TIMEOUT_MS, MIN_FALLBACK_TIMEOUT_MS
from tokenmux.budgets.money import MAX_BUDGET_USD, PERIODS, UNIT
from tokenmux.compression.settings import STRATEGIES
from tokenmux.config.schema import ECHO_MODEL, Config
from tokenmux.routing.tiers import NAMES as TIERS
from tokenmux.routing.tiers import tier_named

MAX_NAME = 200  # the column's width


class InvalidKeyOption(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class KeyOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rpm: int | None = Field(None, ge=1, le=2**31 - 1)
    tpm: int | None = Field(None, ge=1, le=2**31 - 1)
    is_admin: bool = False
    tier: str | None = None
    max_tier: str | None = None
    fallback_models: tuple[str, ...] = ()
    fallback_timeout_ms: int | None = Field(None, ge=MIN_FALLBACK_TIMEOUT_MS,
                                            le=MAX_FALLBACK_TIMEOUT_MS)
    strict_params: bool = False
    compression: str | None = None
    compression_model: str | None = None
    compression_threshold: int | None = Field(None, ge=1, le=2**31 - 1)
    budget_usd: Decimal | None = Field(None, gt=0, le=MAX_BUDGET_USD)
    budget_period: str | None = None
    # When the gateway stops taking the key (UTC); None: never.
    expires_at: datetime | None = None

    @field_validator("tier", "max_tier")
    @classmethod
    def _a_tier(cls, value: str | None) -> str | None:
        return _one_of(value, TIERS)

    @field_validator("compression")
    @classmethod
    def _a_strategy(cls, value: str | None) -> str | None:
        return _one_of(value, STRATEGIES)

    @field_validator("budget_period")
    @classmethod
    def _a_period(cls, value: str | None) -> str | None:
        return _one_of(value, PERIODS)

    @field_validator("budget_usd")
    @classmethod
    def _to_ledger_precision(cls, value: Decimal | None) -> Decimal | None:
        # The amount given, to the ledger's precision: 0.1 stays 0.1.
        return None if value is None else value.quantize(UNIT)

    @field_validator("expires_at", mode="before")
    @classmethod
    def _a_time(cls, value: object) -> datetime | None:
        return None if value is None else utc_time(value)


def utc_time(value: object) -> datetime:
    """VALUE, an ISO 8601 text or a datetime, as an aware UTC time. A time without its zone is
    taken as UTC, as every time the gateway shows or stores is."""
    when = value
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            when = None
    if not isinstance(when, datetime):
        raise ValueError(f"must be an ISO 8601 time, such as 2027-01-31T00:00:00Z; got {value!r}")
    try:
        return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:  # a zone that pushes the year past 9999
        raise ValueError(f"must be a time before the year 10000; got {value!r}") from None


def _one_of(value: str | None, choices: tuple[str, ...]) -> str | None:
    if value is not None and value not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}")
    return value


def parse(fields: dict[str, Any]) -> KeyOptions:
    """KeyOptions from JSON-like FIELDS; the first problem is raised with its field."""
    try:
        return KeyOptions.model_validate(fields)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "body"
        raise InvalidKeyOption(where, f"{where}: {problem['msg']}") from None


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise InvalidKeyOption("name", f"name: a text of 1 to {MAX_NAME} characters")
    return name


def check(config: Config, options: KeyOptions, names: dict[str, str] | None = None, *,
          kept_expiry: datetime | None = None) -> KeyOptions:
    """OPTIONS when their settings agree with each other and with CONFIG; the budget's period
    set to "total" when a budget has none. NAMES: how the caller spells a setting in its
    messages (the CLI's options), where not as the field. KEPT_EXPIRY: the key's stored expiry,
    which may have passed (a change to its other settings keeps it); any other must be to come."""
    def named(field: str) -> str:
        return (names or {}).get(field, field)

    if options.budget_period is not None and options.budget_usd is None:
        raise InvalidKeyOption("budget_period", f"a period is for a {named('budget_usd')}; "
                                                "none was given")
    if options.budget_usd is not None and options.budget_period is None:
        options = options.model_copy(update={"budget_period": "total"})
    tier, highest = options.tier, options.max_tier
    if tier and highest and tier_named(tier) > tier_named(highest):
        raise InvalidKeyOption("tier", f"the default tier {tier!r} is above "
                                       f"{named('max_tier')} {highest!r}")
    if len(options.fallback_models) > MAX_FALLBACK_MODELS:
        raise InvalidKeyOption("fallback_models", f"at most {MAX_FALLBACK_MODELS} fallback "
                                                  f"models; got {len(options.fallback_models)}")
    _check_models(config, options.fallback_models, "fallback_models")
    if (options.compression_model or options.compression_threshold) and not options.compression:
        raise InvalidKeyOption("compression", "a compression model or threshold needs a "
                                              "compression strategy")
    if options.compression_model is not None and options.compression_model != "auto":
        _check_models(config, (options.compression_model,), "compression_model")
    expires = options.expires_at
    if expires is not None and expires != kept_expiry and expires <= datetime.now(UTC):
        raise InvalidKeyOption("expires_at", f"{named('expires_at')} {iso(expires)} has "
                                             "passed; an expiry must be a time to come")
    return options


def iso(when: datetime) -> str:
    """A UTC time as the gateway writes it: ISO 8601 with a Z, to the second."""
    return when.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _check_models(config: Config, models: tuple[str, ...], field: str) -> None:
    known = {ECHO_MODEL} if config.echo_model else set()
    known.update(name for m in config.models for name in (m.name, *m.aliases))
    for model in models:
        if model not in known:
            raise InvalidKeyOption(field, f"the config serves no model {model!r}")


def describe(options: KeyOptions) -> str:
    """The settings in a few words, as `keys create` confirms them."""
    limits = ", ".join(f"{v} {k}" for k, v in (("rpm", options.rpm), ("tpm", options.tpm)) if v)
    text = (limits or "no limits") + f", tier {options.tier or 'medium'}"
    if options.max_tier:
        text += f" (at most {options.max_tier})"
    if options.fallback_models:
        text += ", falls back to " + ", ".join(options.fallback_models)
    if options.strict_params:
        text += ", strict parameters"
    if options.compression:
        text += f", compression {options.compression}" + (
            f" by {options.compression_model}" if options.compression_model else "")
    if options.budget_usd is not None:
        text += f", budget ${options.budget_usd:f} {per(options.budget_period or 'total')}"
    if options.expires_at is not None:
        text += f", expires {iso(options.expires_at)}"
    return text


def per(period: str) -> str:
    return "in all" if period == "total" else f"per {period}"
