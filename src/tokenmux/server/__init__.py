"""The HTTP edge: routes, SSE writing and error rendering. No business logic lives here."""

from tokenmux.server.app import create_app

__all__ = ["create_app"]
