"""Reads a YAML config file, resolves `${VAR}` references and validates the result."""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tokenmux.config.builtin import merge_builtin
from tokenmux.config.schema import Config

# `${VAR}` or `${VAR:-default}`, where the default may itself be one `${OTHER}` reference.
_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}$]|\$(?!\{)|\$\{[^{}]*\})*))?\}")


class ConfigError(Exception):
    """A config that cannot be served, with the file and the field at fault."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def _interpolate(node: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _interpolate(value, environ) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate(value, environ) for value in node]
    if not isinstance(node, str) or "${" not in node:
        return node
    whole = _REF.fullmatch(node)
    if whole:
        # `api_key: ${OPENAI_API_KEY}` with the variable unset means "no key", not an empty one.
        return _resolve(whole, environ)
    return _REF.sub(lambda m: _resolve(m, environ) or "", node)


def _resolve(ref: re.Match[str], environ: Mapping[str, str]) -> str | None:
    value = environ.get(ref.group(1))
    if value:
        return value
    default = ref.group(2)
    return None if default is None else _interpolate(default, environ)


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _validate(raw: Any, source: str, base_dir: Path) -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, ["the file must hold a mapping of settings"])
    raw, problems = merge_builtin(raw)
    if problems:
        raise ConfigError(source, problems)
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            path = _field_path(err["loc"])
            problems.append(message if path == "(top level)" else f"{path}: {message}")
        raise ConfigError(source, problems) from None
    return _anchor_paths(config, base_dir)


def _anchor_paths(config: Config, base_dir: Path) -> Config:
    """Relative file paths count from the config file's folder, whatever the working directory."""
    database = config.database
    if "://" not in database and not Path(database).is_absolute():
        database = str((base_dir / database).resolve())
    spool = config.ledger.spool
    if spool is None:
        spool = database + ".spool" if "://" not in database else "tokenmux-ledger.spool"
    if not Path(spool).is_absolute():
        spool = str((base_dir / spool).resolve())
    wal_dir = config.ledger.wal_dir
    if wal_dir is None:
        wal_dir = database + ".ledger" if "://" not in database else "tokenmux-ledger"
    if not Path(wal_dir).is_absolute():
        wal_dir = str((base_dir / wal_dir).resolve())
    ledger = config.ledger.model_copy(update={"spool": spool, "wal_dir": wal_dir})
    return config.model_copy(update={"database": database, "ledger": ledger})


def load_config(path: str | None, environ: Mapping[str, str]) -> Config:
    """Loads FILE, or with no file the built-in catalog of providers whose key is set."""
    if path is None:
        return _defaults(environ)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [f"cannot read the file: {exc.strerror}"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [f"{where}invalid YAML: {problem}"]) from None
    return _validate(_interpolate(raw, environ), path, file.resolve().parent)


def _defaults(environ: Mapping[str, str]) -> Config:
    text = resources.files("tokenmux.config").joinpath("defaults.yaml").read_text("utf-8")
    raw = _interpolate(yaml.safe_load(text), environ)
    # Serve only what a key in the environment unlocks; the merge then leaves out the models of
    # the providers dropped here. The echo model needs no key.
    raw["providers"] = {n: p for n, p in raw["providers"].items() if p.get("api_key")}
    return _validate(raw, "built-in defaults", Path.cwd())
