"""What every command shares: reading the config and opening its database."""

from __future__ import annotations

import click
from sqlalchemy import Engine

from tokenmux import settings
from tokenmux.config import Config, ConfigError, load_config
from tokenmux.db import connect

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help="YAML config file (default: $TOKENMUX_CONFIG, else the built-in catalog).",
)


def load(config_path: str | None) -> Config:
    env = settings.load()
    try:
        config = load_config(config_path or env.config_path, settings.env())
    except ConfigError as exc:
        lines = "\n".join(f"  - {problem}" for problem in exc.problems)
        raise click.ClickException(f"invalid config {exc.source}:\n{lines}") from None
    if config.admin_key is None and env.admin_key:
        config = config.model_copy(update={"admin_key": env.admin_key})
    if config.redis is None and env.redis_url:
        config = config.model_copy(update={"redis": env.redis_url})
    return config


def open_database(config: Config) -> Engine:
    return connect(config.database)
