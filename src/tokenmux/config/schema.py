"""The shape of a config file; validation errors carry the path of the field at fault."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

ECHO_MODEL = "tokenmux/echo"


class Strict(BaseModel):
    # A typo in a config key is an error at start, not a setting silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


# Where each provider kind lives when the config names no base_url.
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}


class Provider(Strict):
    kind: Literal["openai", "anthropic", "gemini"]
    base_url: str = ""  # empty: the kind's default
    api_key: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(180.0, gt=0, description="seconds one upstream attempt may take")
    # Which price table to read (a genai-prices provider id); guessed from base_url when absent.
    price_provider: str | None = None
    # Request fields this provider cannot honour that the gateway should drop rather than
    # refuse with a 400 (kinds anthropic and gemini), e.g. [temperature, seed].
    ignore_params: list[str] = Field(default_factory=list)
    # Bounds on what comes back, so that no upstream can exhaust the gateway's memory or hold a
    # client forever (README, "Limits on an upstream").
    max_response_bytes: int = Field(32 * 1024 * 1024, gt=0, description="a JSON answer's size")
    max_event_bytes: int = Field(8 * 1024 * 1024, gt=0, description="one stream event's size")
    stream_idle_timeout: float = Field(
        30.0, gt=0, description="seconds a started stream may go without an event")
    # True: a sampling hint the target does not take (temperature, top_p, top_k, seed,
    # penalties) is refused with a 400 instead of dropped (README, "The parameter policy").
    strict_params: bool = False

    @model_validator(mode="after")
    def _default_base_url(self) -> Provider:
        if not self.base_url:
            object.__setattr__(self, "base_url", DEFAULT_BASE_URLS[self.kind])
        return self


class Price(Strict):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(None, ge=0)


class Channel(Strict):
    provider: str
    model: str
    timeout: float | None = Field(None, gt=0, description="overrides the provider's timeout")
    priority: int = Field(0, description="lower is tried first")
    weight: float = Field(1.0, gt=0, description="share among channels of equal priority")
    # Requests in flight at once on this channel; beyond it they queue by tier, then deadline.
    max_concurrency: int | None = Field(None, ge=1)
    # The upstream account's own limits on this model: the gateway paces to them (across the
    # fleet, with Redis) and moves on to the next channel rather than be refused a 429.
    rpm: int | None = Field(None, ge=1, description="requests per minute the upstream allows")
    tpm: int | None = Field(None, ge=1, description="tokens per minute the upstream allows")


class Fallback(Strict):
    model: str
    timeout: float | None = Field(None, gt=0, description="seconds per attempt on this model")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: object) -> object:
        return {"model": value} if isinstance(value, str) else value


# What a model can do, as far as a client choosing one needs to know:
#   tools      calls functions (`tools`, `tool_choice`)
#   vision     reads images in `image_url` content parts
#   json       honours `response_format` (JSON mode or a JSON schema)
#   reasoning  thinks before it answers; its thinking tokens are billed as output
Capability = Literal["tools", "vision", "json", "reasoning"]
SamplingParam = Literal["temperature", "top_p", "top_k", "seed", "presence_penalty",
                        "frequency_penalty"]


class Model(Strict):
    name: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    channels: list[Channel] = Field(min_length=1)
    price: Price | None = None
    context_window: int | None = Field(None, gt=0, description="tokens in and out, together")
    max_output: int | None = Field(None, gt=0, description="tokens one answer may have")
    capabilities: list[Capability] = Field(default_factory=list)
    # Models tried in order once this model's own channels are exhausted: names, or
    # {model, timeout} to give attempts on that model a timeout of their own.
    fallbacks: list[Fallback] = Field(default_factory=list)
    # What a rate limit reserves for the answer of a request that sets no max_tokens; settled
    # to the real count when the answer is in. Default: min(1024, max_output).
    output_estimate: int | None = Field(None, gt=0, description="tokens an answer is assumed "
                                        "to take when the request sets no limit")
    # The sampling hints the model takes (of temperature, top_p, top_k, seed, presence_penalty,
    # frequency_penalty); the others are dropped. None: unknown, all the API takes go through.
    sampling: list[SamplingParam] | None = None
    compression: ModelCompression | None = None


# How a conversation is compressed (README, "Context compression"): summarised by a small model
# with `on`, `conservative` or `aggressive` (which keep 6, 8 and 3 recent turns), or its oldest
# turns dropped with `truncate`, which calls no model.
CompressionStrategy = Literal["on", "conservative", "aggressive", "truncate"]


class ModelCompression(Strict):
    """A model's own compression default; a key's, the headers and the body win over it."""

    strategy: CompressionStrategy = "on"
    model: str | None = Field(None, description="the compression model; default: the gateway's")
    threshold: int | None = Field(None, gt=0, description="tokens; default: by the strategy")
    keep_turns: int | None = Field(None, gt=0, le=1000)

    @field_validator("strategy", mode="before")
    @classmethod
    def _unquoted_on(cls, value: object) -> object:
        # YAML 1.1 reads a bare `on` as true: the one strategy a YAML file cannot spell plainly.
        return "on" if value is True else value


class Compression(Strict):
    # The compression model a request gets when it names none ("auto"); None: requests that
    # ask for a summary without naming a model are sent unchanged (`no-compression-model`).
    model: str | None = None
    cache_entries: int = Field(10_000, ge=1, description="summaries kept in memory")
    cache_ttl_s: float = Field(6 * 3600, gt=0, description="how long a summary is kept")


class Breaker(Strict):
    failures: int = Field(5, ge=1, description="failures in a row that open the breaker")
    cooldown_ms: int = Field(30_000, gt=0, description="how long an open channel sits out")
    max_cooldown_ms: int = Field(300_000, gt=0, description="cap as failed probes double it")


class Routing(Strict):
    max_attempts: int = Field(3, ge=1, le=20, description="attempts per request, all models")
    backoff_initial_ms: int = Field(100, ge=0)
    backoff_max_ms: int = Field(2000, ge=0)
    default_timeout_ms: int = Field(60_000, ge=5_000, le=300_000)
    breaker: Breaker = Field(default_factory=Breaker)
    # How long a ludicrous-tier request waits for its first channel before starting a second,
    # while the channel has too few answers on record for its own 90th percentile.
    hedge_default_ms: int = Field(1_000, gt=0)


class Server(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_request_bytes: int = Field(32 * 1024 * 1024, gt=0)
    # Limits on one client, so that none can take the gateway down (README, "Limits on a client").
    header_timeout_s: float = Field(10.0, gt=0, description="from a request's first byte")
    body_timeout_s: float = Field(30.0, gt=0, description="to read the whole body")
    max_connections: int = Field(4096, ge=1, description="open at once; beyond: 503, closed")
    max_concurrent_per_key: int | None = Field(256, ge=1, description="requests in flight")
    # On SIGTERM or SIGINT: how long requests in flight may take to finish before the streams
    # left are ended with a `shutting_down` error event and the rest answered 503.
    shutdown_grace_s: float = Field(30.0, ge=0, le=3600)


class Ledger(Strict):
    flush_interval_ms: int = Field(200, gt=0)
    batch_size: int = Field(500, gt=0)
    max_pending: int = Field(100_000, gt=0)
    spool: str | None = None  # the old spool file, replayed once at start if it exists
    # The write-ahead directory (a local disk, one per machine); default `<database>.ledger`
    # beside a SQLite file, `./tokenmux-ledger` (from the config's folder) for a database URL.
    wal_dir: str | None = None
    fsync: bool = False  # sync each row to the disk: survives a power cut, costs latency
    retry_max_ms: int = Field(5_000, gt=0, description="longest wait between write retries")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(value: object) -> object:
    """`90`, `2s`, `500ms`, `10m`, `24h`, `7d`: a duration in seconds."""
    if not isinstance(value, str):
        return value
    found = _DURATION.fullmatch(value.strip())
    if found is None:
        raise ValueError(f"{value!r} is not a duration (a number of seconds, or e.g. 500ms, "
                         "2s, 10m, 24h, 7d)")
    return float(found.group(1)) * _UNIT_SECONDS[found.group(2) or "s"]


Seconds = Annotated[float, BeforeValidator(_seconds)]


class Idempotency(Strict):
    """How long, and how much of, the answers to keyed requests are kept (README,
    "Retry-safe requests")."""

    ttl: Seconds = Field(24 * 3600, gt=0, description="how long an answer is replayed")
    # Bounds on the in-process store; the oldest answers go first. Redis has its own.
    max_entries: int = Field(10_000, ge=1, description="answers kept at once")
    max_bytes: int = Field(64 * 1024 * 1024, ge=1, description="their bytes in all")
    max_stream_bytes: int = Field(4 * 1024 * 1024, ge=1,
                                  description="a stream above this is not kept")


class Config(Strict):
    database: str = "./tokenmux.db"
    # Shared state (idempotency records today) lives there when set; also TOKENMUX_REDIS_URL.
    redis: str | None = None
    redis_prefix: str = Field("tokenmux:", description="before every key the gateway sets")
    # While Redis does not answer: `open` admits on in-process shares of each key's limits,
    # `closed` refuses limited keys with a 503.
    redis_failure: Literal["open", "closed"] = "open"
    idempotency: Idempotency = Field(default_factory=Idempotency)
    admin_key: str | None = None
    echo_model: bool = True
    log_level: str = "INFO"
    server: Server = Field(default_factory=Server)
    ledger: Ledger = Field(default_factory=Ledger)
    routing: Routing = Field(default_factory=Routing)
    compression: Compression = Field(default_factory=Compression)
    # `builtin`: start from the shipped catalog's models for the providers configured here
    # (config/builtin.py merges it in before validation; it stays set here for the record).
    catalog: Literal["builtin"] | None = None
    hide: list[str] = Field(default_factory=list, description="shipped models to leave out")
    providers: dict[str, Provider] = Field(default_factory=dict)
    models: list[Model] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Config:
        seen: dict[str, str] = {}
        if self.echo_model:
            seen[ECHO_MODEL] = "the built-in echo model"
        for i, model in enumerate(self.models):
            for name in (model.name, *model.aliases):
                if name in seen:
                    raise ValueError(f"models[{i}]: name {name!r} is already used by {seen[name]}")
                seen[name] = f"models[{i}]"
        if self.compression.model is not None and self.compression.model not in seen:
            raise ValueError(f"compression.model: unknown model {self.compression.model!r}")
        for i, model in enumerate(self.models):
            default = model.compression
            if default is not None and default.model is not None and default.model not in seen:
                raise ValueError(f"models[{i}].compression.model: unknown model "
                                 f"{default.model!r}")
            for j, fallback in enumerate(model.fallbacks):
                if fallback.model not in seen:
                    raise ValueError(
                        f"models[{i}].fallbacks[{j}]: unknown model {fallback.model!r}")
            for j, channel in enumerate(model.channels):
                if channel.provider not in self.providers:
                    known = ", ".join(sorted(self.providers)) or "none configured"
                    raise ValueError(
                        f"models[{i}].channels[{j}].provider: unknown provider "
                        f"{channel.provider!r} (known: {known})"
                    )
        return self
