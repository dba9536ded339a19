"""The gateway's own OpenAPI document (openapi.yaml beside this module), served as JSON."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

import orjson
import yaml


@cache
def document() -> bytes:
    """The document as JSON bytes: read and converted once, on the first request for it."""
    text = files("tokenmux.api").joinpath("openapi.yaml").read_text(encoding="utf-8")
    return orjson.dumps(yaml.safe_load(text))
