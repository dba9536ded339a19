"""The `tokenmux` entry point."""

from __future__ import annotations

import sys

import click


def main() -> None:
    try:
        from tokenmux.cli.keys import keys
        from tokenmux.cli.serve import serve
        from tokenmux.cli.usage import usage
    except ImportError as exc:  # the SDK-only install has no server parts
        sys.exit(f"tokenmux: the gateway needs its extra: pip install 'tokenmux[server]' ({exc})")

    @click.group()
    @click.version_option(package_name="tokenmux")
    def cli() -> None:
        """tokenmux, an OpenAI-compatible LLM gateway."""

    cli.add_command(serve)
    cli.add_command(keys)
    cli.add_command(usage)
    cli()
