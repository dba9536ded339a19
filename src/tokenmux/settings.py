"""The one place the process environment is read.

Everything else receives these values as arguments; config files refer to the environment only
through `${VAR}` interpolation, which `config.loader` resolves with `env()` from here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def env() -> Mapping[str, str]:
    return os.environ


# Where the workers of `serve --workers N` keep their metrics; prometheus_client reads it too, at
# import, and the supervisor sets it for its workers (telemetry/metrics.py).
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir() -> str | None:
    return os.environ.get(METRICS_DIR_ENV) or None


@dataclass(frozen=True)
class Settings:
    config_path: str | None
    admin_key: str | None
    redis_url: str | None = None


def load() -> Settings:
    return Settings(
        config_path=os.environ.get("TOKENMUX_CONFIG") or None,
        admin_key=os.environ.get("TOKENMUX_ADMIN_KEY") or None,
        redis_url=os.environ.get("TOKENMUX_REDIS_URL") or None,
    )
