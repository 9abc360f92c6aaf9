"""Logging: structlog, JSON lines in production and a readable console in dev.

Context (request id, tenant, job id) is bound per request (``bind``: one context variable
holding an immutable mapping, set fresh by gateway.middleware.RequestContext for each request),
so every line of a request carries it; background work names the job explicitly. Every job's
acceptance and each of its transitions is one line with its ``job_id``, so an operator can
follow a job from start to end by that id.
Secrets never reach a line: fields named like one are replaced, and values that look like an
API key, a webhook secret or a bearer token are masked wherever they appear.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import structlog

from gateway import jsonio
from gateway.times import now_iso_micros

if TYPE_CHECKING:
    from gateway.jobs import Transition
    from gateway.store import Job

# The logger configure_logging built; None before (then structlog's defaults apply).
_active: Any = None


@dataclass(frozen=True)
class _Pipeline:
    """What configure_logging set up, run by _Logger itself: the lowest level written, the
    processors (ending in the renderer) and the writer."""

    level: int
    processors: tuple[structlog.typing.Processor, ...]
    writer: LineWriter
    # The processors for a line without ``exc_info`` (nearly every line): without the one
    # that formats it, which only looks for it.
    plain: tuple[structlog.typing.Processor, ...]

    def write(self, method: str, fields: structlog.typing.EventDict) -> None:
        line: Any = fields
        for processor in self.processors if "exc_info" in fields else self.plain:
            line = processor(self.writer, method, line)
        self.writer.msg(line)


_pipeline: _Pipeline | None = None
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def _forward(method: str) -> Callable[..., Any]:
    name = "error" if method == "exception" else method  # as structlog names it
    level = _LEVELS[name]

    def call(self: _Logger, event: str, *args: Any, **fields: Any) -> Any:
        pipeline = _pipeline
        if pipeline is None or args:  # not configured yet, or %-style arguments
            logger = _active if _active is not None else structlog.get_logger()
            return getattr(logger, method)(event, *args, **fields)
        if level >= pipeline.level:
            if method == "exception":
                fields.setdefault("exc_info", True)
            fields["event"] = event
            pipeline.write(name, fields)
        return None

    call.__name__ = method
    return call


class _Logger:
    """What modules log through (``log = get_logger()``).

    A line runs the processors configure_logging set up, on a dict of the call's fields, and
    goes to the writer: what structlog's bound logger does, less its general machinery (a
    context of its own, which the gateway keeps in ``bind`` instead, and several kinds of
    processor results), which cost a third of a line. Anything else (``bind``, or %-style
    arguments) goes to the bound logger configure_logging built, so that a call never
    constructs a logger (structlog's lazy proxy builds one per call unless it caches the
    first, which would outlive a reconfiguration)."""

    __slots__ = ()

    debug = _forward("debug")
    info = _forward("info")
    warning = _forward("warning")
    error = _forward("error")
    exception = _forward("exception")

    def __getattr__(self, method: str) -> Any:
        return getattr(_active if _active is not None else structlog.get_logger(), method)


def get_logger() -> Any:
    return _Logger()


log = get_logger()

_CONTEXT: ContextVar[Mapping[str, Any]] = ContextVar(
    "gateway_log_context", default=MappingProxyType({})
)


def bind(**fields: Any) -> None:
    """Add ``fields`` to every later line of this request (or task). A new mapping each time:
    a task started earlier keeps the context it was started with. Redacted here, once, rather
    than on every line that carries them."""
    _CONTEXT.set({**_CONTEXT.get(), **redact(None, "", fields)})


def bound() -> Mapping[str, Any]:
    return _CONTEXT.get()


@contextmanager
def fresh_context(**fields: Any) -> Iterator[None]:
    """A context of only ``fields`` for the block; the previous one is restored when the block
    ends normally. After an exception it stays, so that the error handler's line carries it.
    Redacted here, as ``bind`` does."""
    token = _CONTEXT.set(redact(None, "", fields))
    yield
    _CONTEXT.reset(token)


# structlog's level names for its method names (as its add_log_level writes them).
_LEVEL_NAMES = {"warn": "warning", "exception": "error"}


def prepare(_: object, method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Every line's own fields, in one processor (it was four, and each call cost more than
    its work): what the call gave, redacted (``redact``); the bound context under it (redacted
    when it was bound); the level; the time (UTC, to the microsecond, with a Z, as structlog's
    TimeStamper writes it)."""
    redact(_, method, event)
    for name, value in _CONTEXT.get().items():
        event.setdefault(name, value)
    event["level"] = _LEVEL_NAMES.get(method, method)
    event["timestamp"] = now_iso_micros()
    return event


_SECRET_FIELDS = ("authorization", "api_key", "secret", "token", "password", "key")
_NOT_SECRET = frozenset({"key_id", "webhook_id", "idempotency_key_set"})
_SECRET_VALUES = re.compile(
    r"(kgw_[a-z]+_[A-Za-z0-9]+|whsec_[A-Za-z0-9+/=]+|(?i:bearer)\s+[^\s\"',]+)"
)
REDACTED = "[redacted]"
# Fields whose values the gateway makes itself (ids, catalog names, numbers): never a secret,
# so the redaction skips them. Not here: request_id (a client may choose it) and event (for
# the standard library's lines it is the message text).
_PLAIN_FIELDS = frozenset({
    "level", "timestamp", "tenant_id", "job_id", "model", "task", "route", "method",
    "status", "duration_ms", "from_status", "to_status", "source",
})


def _may_hold_secret(text: str) -> bool:
    # Substring tests are far cheaper than the regex, and almost every value fails them.
    return "kgw_" in text or "whsec_" in text or "bearer" in text.lower()


def _mask(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET_VALUES.sub(REDACTED, value) if _may_hold_secret(value) else value
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return value


@functools.lru_cache(maxsize=1024)
def _secret_field(name: str) -> bool:
    lowered = name.lower()
    return name not in _NOT_SECRET and any(part in lowered for part in _SECRET_FIELDS)


def redact(_: object, __: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Fields named like a secret are replaced; values that look like one are masked."""
    for name, value in event.items():
        if name in _PLAIN_FIELDS or value is None:
            continue
        if _secret_field(name):
            event[name] = REDACTED
        elif type(value) is str:  # the common case, without _mask's type tests
            if _may_hold_secret(value):
                event[name] = _SECRET_VALUES.sub(REDACTED, value)
        elif not isinstance(value, int | float):  # bool is an int
            event[name] = _mask(value)
    return event


class LineWriter:
    """structlog's output.

    To a file descriptor, the lines logged on an event loop's thread are gathered and written
    with one ``os.write`` when the loop's current iteration ends (``call_soon``): a busy gateway
    logs two lines per request, and a write system call costs more than formatting a line. A
    line logged anywhere else (another thread, no running loop, another loop) is written at
    once, after the lines gathered before it, so every thread's lines keep their order. What is
    gathered is written at exit as well; a process killed outright loses at most the lines of
    the iteration it was in.
    To a stream without a file descriptor (tests' StringIO), each line is written and flushed
    at once (print() through the text layer and its lock cost a third of a line)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None
        self._gathered: list[str] = []
        self._flushing_loop: asyncio.AbstractEventLoop | None = None  # its call_soon will write
        self._lock = threading.Lock()
        if self._fd is not None:
            atexit.register(self.flush)

    def msg(self, message: str) -> None:
        if self._fd is None:
            self._stream.write(message + "\n")
            self._stream.flush()
            return
        loop = asyncio.events._get_running_loop()
        with self._lock:
            self._gathered.append(message)
            if self._flushing_loop is None and loop is not None:
                self._flushing_loop = loop
                loop.call_soon(self.flush)
            elif loop is None or loop is not self._flushing_loop:
                self._write()

    def flush(self) -> None:
        """Write what was gathered."""
        with self._lock:
            self._write()

    def _write(self) -> None:
        """Under the lock: one write of every gathered line."""
        self._flushing_loop = None
        if not self._gathered or self._fd is None:
            return
        data = ("\n".join(self._gathered) + "\n").encode()
        self._gathered.clear()
        while data:
            data = data[os.write(self._fd, data):]

    log = debug = info = warning = warn = error = critical = exception = fatal = failure = msg


class _LineHandler(logging.Handler):
    """The standard library's records, formatted, through the gateway's LineWriter."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.msg(self.format(record))
        except Exception:
            self.handleError(record)


def render_json(_: object, __: str, event: structlog.typing.EventDict) -> str:
    """One JSON line (gateway.jsonio); values JSON cannot carry are written as their repr."""
    return jsonio.dumps(event, fallback=repr)


def configure_logging(fmt: Literal["json", "console"], level: str) -> None:
    """structlog for the gateway's own lines, and the standard library's (uvicorn's, asyncio's)
    through the same processors, so that everything on stderr has one format."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        render_json
        if fmt == "json" else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.typing.Processor] = [prepare]
    exc_info: structlog.typing.Processor = (
        structlog.processors.format_exc_info if fmt == "json" else structlog.dev.set_exc_info
    )
    # One writer for every line, the standard library's too, so that they keep their order.
    writer = LineWriter(sys.stderr)
    structlog.configure(
        processors=[*shared, exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One logger for every call: a factory making one per line costs more than the line.
        logger_factory=_shared(writer),
        cache_logger_on_first_use=False,
    )
    global _active, _pipeline
    _active = structlog.get_logger().bind()
    _pipeline = _Pipeline(numeric, (*shared, exc_info, renderer), writer, (*shared, renderer))
    handler = _LineHandler(writer)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, exc_info, renderer],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
    # httpx logs every request at INFO: the gateway counts and logs its upstream calls itself.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(numeric, logging.WARNING))


def _shared(logger: LineWriter) -> Callable[..., LineWriter]:
    def factory(*_: Any) -> LineWriter:
        return logger

    return factory


def log_accepted(job: Job) -> None:
    log.info(
        "job_accepted", job_id=job.id, tenant_id=job.tenant_id, model=job.model, task=job.task,
    )


def log_transition(moved: Transition) -> None:
    job = moved.job
    fields: dict[str, Any] = {
        "job_id": job.id, "tenant_id": job.tenant_id, "from_status": moved.from_status,
        "to_status": moved.to_status, "source": moved.source,
    }
    if job.upstream_id is not None:
        fields["upstream_id"] = job.upstream_id
    if moved.to_status == "failed":
        fields["error_code"] = job.error_code
        fields["error"] = job.error_message
    log.info("job_transition", **fields)


def reset_logging() -> None:
    """Back to structlog's defaults (tests that configured logging undo it with this)."""
    global _active, _pipeline
    _active = _pipeline = None
    structlog.reset_defaults()
