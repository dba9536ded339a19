"""The YAML configuration: loading, `${ENV}` interpolation and validation with field paths."""

from tokenmux.config.loader import ConfigError, load_config
from tokenmux.config.schema import Config

__all__ = ["Config", "ConfigError", "load_config"]
