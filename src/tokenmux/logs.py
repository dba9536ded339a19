"""The process's logging: every line names its request, and no line ever shows a secret.

Two pieces sit on the one root handler, so they see every record of every logger (ours,
aiohttp's server, access, web and client loggers, asyncio's) and its traceback:

- `RequestIdFilter` stamps each record with the request id of the task that wrote it, read from
  a context variable the HTTP edge sets when a request comes in; tasks a request spawns inherit
  it, background tasks show `-`.
- `RedactingFormatter` rewrites the finished line, traceback included: the values of
  `Authorization`, `x-api-key` and `x-goog-api-key` (as a header line, a repr'd header tuple or
  a dict entry) and anything shaped like a key (`tm-…`, `sk-…`, `AIza…`, long base64 or hex
  runs). Redacting the formatted text rather than the message means a secret carried in an
  exception's arguments, a raw header line in a parser error or a repr is caught just the same.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from contextvars import ContextVar
from types import TracebackType

REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="-")

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
MASK = "[redacted]"

# A secret-carrying header's name, its separator as written by HTTP, a repr or a dict, and its
# value up to the end of the quoted string or the line (a value may hold escaped control bytes
# or spaces, so a word boundary is not enough).
_HEADER_VALUE = re.compile(
    r"(?i)((?:authorization|x-api-key|x-goog-api-key|api[_-]?key)(?:\\?['\"])?"
    r"\s*[:=,]\s*(?:b?\\?['\"])?)([^'\"\r\n]+)")
_TOKENS = re.compile(
    r"\b(?:tm|sk|sk-ant|sk-proj|rk|pk)[-_][A-Za-z0-9_\-]{6,}"  # tm-…, sk-…: ours, OpenAI's
    r"|\bAIza[A-Za-z0-9_\-]{20,}"  # Google's
    r"|\bBearer\s+\S+"
    # Some other issuer's secret: a long base64 run mixing upper case, lower case and digits, or
    # a long hex run. Request and completion ids, paths and words stay out of both.
    r"|(?<![A-Za-z0-9+/_\-])(?=[A-Za-z0-9+/_\-]*\d)(?=[A-Za-z0-9+/_\-]*[a-z])"
    r"(?=[A-Za-z0-9+/_\-]*[A-Z])[A-Za-z0-9+/_\-]{32,}=*"
    r"|\b[0-9a-fA-F]{40,}\b")


def redact(text: str) -> str:
    text = _HEADER_VALUE.sub(lambda m: m.group(1) + MASK, text)
    return _TOKENS.sub(MASK, text)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # `extra={"request_id": …}` names it where no task context can (transport callbacks).
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        text = redact(super().format(record))
        # The formatter caches the traceback's text on the record; a handler added later must
        # not find the unredacted one there.
        record.exc_text = None
        return text


def configure(level: str) -> None:
    """Installs the one handler on stderr; uncaught exceptions go through it too."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(RedactingFormatter(FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], exc: BaseException,
                  tb: TracebackType | None) -> None:
    logging.getLogger("tokenmux").critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)
