"""Structured logs (STYLE.md §11): structlog, context bound through contextvars.

- JSON lines when stderr is not a terminal (or ``MULTIPAIR_LOG_FORMAT=json``),
  readable console lines on a terminal. Each line is one ``write()``, so the
  lines of a supervisor and its lanes sharing stderr never run together.
- ``instance_id``, ``command_id`` and ``pos_ref_id`` are bound with
  :func:`structlog.contextvars.bind_contextvars` where the work happens and
  appear on every line logged inside it.
- A redaction processor removes anything that looks like key material
  before rendering: fields named like secrets are replaced by ``[redacted]``,
  whatever the caller passed. Never log keys; this is the safety net.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping, Sequence
from typing import Any, Final, Literal

import structlog

__all__ = ["REDACTED", "configure_logging", "get_logger", "redact_secrets"]

REDACTED: Final = "[redacted]"
_SECRET_WORDS: Final = (
    "secret",
    "enc_key",
    "hmac_key",
    "enckey",
    "hmackey",
    "master_key",
    "password",
    "token",
    "private",
    "api_key",
)


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: blank every field whose name suggests key material."""
    for key in list(event_dict):
        lowered = key.lower()
        if any(word in lowered for word in _SECRET_WORDS):
            event_dict[key] = REDACTED
    return event_dict


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto",
    *,
    level: int = logging.INFO,
    also: Sequence[Any] = (),
) -> None:
    """Set structlog up once per process.

    ``also``: processors that see every line after redaction, before it is
    rendered (a lane ships its lines to Redis with one:
    :class:`multipair.worker.logship.LogShipper`).
    """
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            *also,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write() per line: a lane forked from the template shares its
        # supervisor's stderr, and print() (PrintLogger) writes the line and its
        # newline apart, so lines of processes logging at once ran together.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A structlog logger tagged with its module name.

    Lazy: it picks up :func:`configure_logging` even when created at import time
    (``bind()`` here would freeze the default configuration).
    """
    return structlog.get_logger(module=name)
