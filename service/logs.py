"""structlog configuration: JSON lines for machines, console for humans.

Request-scoped fields (method, district, request_id) come from structlog's contextvars,
so every line logged while handling an RPC carries them; a delivery binds its record,
district, attempt and the request_id of the RPC that queued it. A line logged inside a
trace carries its ``trace_id``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from typing import Any, TextIO

import orjson
import structlog

from service.tracing import current_trace_id

_HOST = socket.gethostname()
# Keys that must never reach a log line even if a caller binds them by mistake.
_REDACTED_KEYS = frozenset(
    {
        "client_secret",
        "access_token",
        "token",
        "authorization",
        "password",
        "first_name",
        "last_name",
        "district_token",
    }
)


def _redact(
    _logger: object, _name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    for key in _REDACTED_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    return event_dict


_INSTANCE = f"{_HOST}:{os.getpid()}"


def _new_instance() -> None:
    global _INSTANCE  # noqa: PLW0603  (one value per process, renewed in a forked child)
    _INSTANCE = f"{_HOST}:{os.getpid()}"


# A forked child must not log under its parent's pid; asking the kernel on every line cost a
# system call per RPC.
os.register_at_fork(after_in_child=_new_instance)


def _instance(
    _logger: object, _name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    event_dict.setdefault("instance", _INSTANCE)
    return event_dict


def _trace_id(
    _logger: object, _name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    trace_id = current_trace_id()
    if trace_id is not None:
        event_dict.setdefault("trace_id", trace_id)
    return event_dict


def _dumps(value: Any, **_options: Any) -> str:
    try:
        return orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # what orjson refuses (an integer beyond 64 bits): the stdlib's way
        return json.dumps(value, default=repr)


def configure(
    level: str = "INFO", fmt: str = "json", stream: TextIO | None = None, *, cache: bool = False
) -> None:
    """Configure structlog (and stdlib logging) process-wide; lines go to ``stream``
    (standard error by default), each naming this process (``instance``: host and pid).
    ``cache`` binds each logger once, at its first line: faster, but a later ``configure``
    no longer reaches loggers already used (for a process configured once, at start)."""
    stream = stream or sys.stderr
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _instance,
            _trace_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level, logging.INFO)
        ),
        logger_factory=structlog.WriteLoggerFactory(stream),
        cache_logger_on_first_use=cache,
    )
    logging.basicConfig(level=logging.WARNING, stream=stream)
