"""Log output of every chatgw process: text (the default) or one JSON object per line.

``CHATGW_LOG_FORMAT=json`` makes each record one line::

    {"ts":"2026-05-01T12:00:00.123Z","level":"INFO","logger":"gateway.session","message":"...",
     "process":4242,"user":"alice","run_id":"10c5...","conversation_id":"3657..."}

``exc_info`` (the formatted traceback) and ``stack_info`` appear when the record has them; ``user``,
``run_id`` and ``conversation_id`` when the code that logs runs under :func:`bind`. The context lives in
a :class:`contextvars.ContextVar`: binding in a task (a socket's reader, a run's actor call) covers
everything that task logs, and the tasks it creates afterwards, and nothing else. Records are
formatted by the handler in the thread that logs them (a plain ``StreamHandler``), so the context is
the logging code's own.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from enum import Enum
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
CONTEXT_FIELDS = ("user", "run_id", "conversation_id")

_context: ContextVar[Mapping[str, str] | None] = ContextVar("chatgw_log_context", default=None)


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET
Field = str | None | _Unset


def bind(*, user: Field = UNSET, run_id: Field = UNSET, conversation_id: Field = UNSET) -> Token[Any]:
    """Add fields to the log context of the current task (None removes one); the others stay.
    Returns the token that :func:`unbind` takes to restore the context as it was."""
    fields = dict(_context.get() or {})
    for name, value in (("user", user), ("run_id", run_id), ("conversation_id", conversation_id)):
        if value is None:
            fields.pop(name, None)
        elif not isinstance(value, _Unset):
            fields[name] = value
    return _context.set(fields)


def unbind(token: Token[Any]) -> None:
    _context.reset(token)


@contextlib.contextmanager
def bound(*, user: Field = UNSET, run_id: Field = UNSET, conversation_id: Field = UNSET) -> Iterator[None]:
    """:func:`bind` for the duration of a ``with`` block."""
    token = bind(user=user, run_id=run_id, conversation_id=conversation_id)
    try:
        yield
    finally:
        _context.reset(token)


def log_context() -> dict[str, str]:
    """The fields bound in the current context."""
    return dict(_context.get() or {})


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages and tracebacks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        context = _context.get()
        if context:
            entry.update(context)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def setup_logging(level: str, log_format: LogFormat) -> None:
    """The root logger's handler (stderr), unless the root logger has one already."""
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter(log_format))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def uvicorn_json_log_config() -> dict[str, Any]:
    """uvicorn's ``log_config`` for JSON: its loggers keep no handlers of their own and propagate to
    the root logger, whose handler writes JSON. (For text, uvicorn's default config is kept.)"""
    to_root = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {name: dict(to_root) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }
