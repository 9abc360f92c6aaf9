"""Logging: structlog, JSON lines in production and a readable console in dev. Context
(request id, tenant, job id) is bound per request through contextvars."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

_REDACT = ("authorization", "api_key", "secret", "token", "key")


def _redact(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    for name in list(event):
        lowered = name.lower()
        if any(part in lowered for part in _REDACT) and name not in ("key_id", "webhook_id"):
            event[name] = "[redacted]"
    return event


def configure_logging(fmt: Literal["json", "console"], level: str) -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json" else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info if fmt == "json" else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
