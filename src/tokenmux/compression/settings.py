"""Which compression a request gets: its body's `compression`, else its headers, else its key's
default, else its model's, field by field in that order; `enabled: false` in the body or
`X-Context-Compression: off` turns it off for the request whatever the others say.

A request that asks for nothing, with a key and a model that have no default, never reaches
this module: the pipeline checks four values first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenmux.api.schema import fail, kind_of, shown
from tokenmux.auth import Principal
from tokenmux.errors import ModelNotFound
from tokenmux.routing.catalog import Catalog, ModelEntry

STRATEGIES = ("on", "conservative", "aggressive", "truncate")
KEEP_TURNS = {"on": 6, "conservative": 8, "aggressive": 3, "truncate": 6}
DEFAULT_THRESHOLD = 8000
# Without an explicit threshold, a strategy fires at this share of the smallest context window
# among the models a request may be sent to, when that is below DEFAULT_THRESHOLD.
WINDOW_SHARE = {"on": 0.5, "conservative": 0.75, "aggressive": 0.25, "truncate": 0.75}
MAX_KEEP_TURNS = 1000
AUTO = "auto"
_FIELDS = frozenset({"enabled", "strategy", "threshold", "keep_turns", "model"})


@dataclass(frozen=True, slots=True)
class Headers:
    """`X-Context-Compression`, `X-Compression-Threshold`, `-Keep-Turns` and `-Model`."""

    strategy: str | None
    threshold: str | None
    keep_turns: str | None
    model: str | None

    @classmethod
    def read(cls, get: Any) -> Headers | None:
        """From a header lookup; None (the common case) when none of the four is sent."""
        strategy, threshold = get("X-Context-Compression"), get("X-Compression-Threshold")
        keep_turns, model = get("X-Compression-Keep-Turns"), get("X-Compression-Model")
        if strategy is None and threshold is None and keep_turns is None and model is None:
            return None
        return cls(strategy, threshold, keep_turns, model)


@dataclass(frozen=True, slots=True)
class Settings:
    strategy: str
    threshold: int | None  # None: the strategy's own, scaled to the context window
    keep_turns: int
    model: ModelEntry | None  # the compression model; None: no model (truncate, or none known)

    def threshold_for(self, window: int | None) -> int:
        if self.threshold is not None:
            return self.threshold
        if window is None:
            return DEFAULT_THRESHOLD
        return min(DEFAULT_THRESHOLD, max(1, int(window * WINDOW_SHARE[self.strategy])))


@dataclass(slots=True)
class _Asked:
    """One source's fields; None where the source says nothing."""

    off: bool = False
    strategy: str | None = None
    threshold: int | None = None
    keep_turns: int | None = None
    model: str | None = None
    param: str | None = None  # how a request names its model field; None: a key's default


def resolve(body: Any, headers: Headers | None, principal: Principal, entry: ModelEntry,
            catalog: Catalog, default_model: str | None) -> Settings | None:
    """The request's settings, or None when it gets no compression. A bad value is a 400
    naming its field, raised before anything is called."""
    sources = []
    if body is not None:
        sources.append(_from_body(body))
    if headers is not None:
        sources.append(_from_headers(headers))
    for source in sources:
        if source.off:
            return None
    if principal.compression:
        sources.append(_Asked(strategy=principal.compression,
                              threshold=principal.compression_threshold,
                              model=principal.compression_model))
    if (own := entry.compression) is not None:
        sources.append(_Asked(strategy=own.strategy, threshold=own.threshold,
                              keep_turns=own.keep_turns, model=own.model))
    # A body that asks names its strategy or takes `on`; headers without X-Context-Compression
    # only refine what a default asks for.
    strategy = _first(sources, "strategy") or ("on" if body is not None else None)
    if strategy not in STRATEGIES:  # none asked; or a key's row written by hand, not guessed at
        return None
    threshold = _first(sources, "threshold")
    keep_turns = _first(sources, "keep_turns") or KEEP_TURNS[strategy]
    model: ModelEntry | None = None
    if strategy != "truncate":
        asked = next((s for s in sources if s.model is not None), None)
        name = default_model if asked is None or asked.model == AUTO else asked.model
        if name is not None:
            try:
                model = catalog.resolve(name)
            except ModelNotFound:
                if asked is not None and asked.param is not None:
                    fail(asked.param, f"names no model this gateway serves: {shown(name)}.")
                # A key's default no longer served: the request is sent unchanged, and says so.
    return Settings(strategy, threshold, keep_turns, model)


def _first(sources: list[_Asked], name: str) -> Any:
    for source in sources:
        if (value := getattr(source, name)) is not None:
            return value
    return None


def _from_body(value: Any) -> _Asked:
    if not isinstance(value, dict):
        fail("compression", f"must be an object; got {kind_of(value)}.")
    if not _FIELDS.issuperset(value) and (unknown := sorted(set(value) - _FIELDS)):
        fail(f"compression.{unknown[0]}", "is not a field of compression (enabled, strategy, "
             "threshold, keep_turns, model).")
    enabled = value.get("enabled")
    if enabled is not True and enabled is not False:
        fail("compression.enabled", f"is required and must be a boolean; got {kind_of(enabled)}.")
    if enabled is False:
        return _Asked(off=True)
    strategy = value.get("strategy")
    if strategy is not None and strategy not in STRATEGIES:
        fail("compression.strategy", f"must be one of {', '.join(STRATEGIES)}; got "
             f"{shown(strategy)}.")
    model = value.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        fail("compression.model", f"must be a model name or 'auto'; got {shown(model)}.")
    return _Asked(strategy=strategy,
                  threshold=_count(value.get("threshold"), "compression.threshold"),
                  keep_turns=_count(value.get("keep_turns"), "compression.keep_turns"),
                  model=model, param="compression.model")


def _count(value: Any, param: str) -> int | None:
    if value is None:
        return None
    limit = MAX_KEEP_TURNS if param.endswith("keep_turns") else 2**31 - 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        fail(param, f"must be a positive integer (at most {limit}); got {shown(value)}.")
    return value


def _from_headers(headers: Headers) -> _Asked:
    strategy = None
    if headers.strategy is not None:
        strategy = headers.strategy.strip().lower()
        if strategy == "off":
            return _Asked(off=True)
        if strategy not in STRATEGIES:
            fail("X-Context-Compression", f"must be off or one of {', '.join(STRATEGIES)}; got "
                 f"{shown(headers.strategy)}.")
    model = None if headers.model is None else headers.model.strip()
    if model == "":
        fail("X-Compression-Model", "must be a model name or 'auto'.")
    return _Asked(strategy=strategy,
                  threshold=_header_count(headers.threshold, "X-Compression-Threshold"),
                  keep_turns=_header_count(headers.keep_turns, "X-Compression-Keep-Turns"),
                  model=model, param="X-Compression-Model")


def _header_count(text: str | None, param: str) -> int | None:
    if text is None:
        return None
    text = text.strip()
    # ASCII digits only: int() would also take full-width digits and "1_000".
    return _count(int(text) if text.isascii() and text.isdigit() else -1, param)
