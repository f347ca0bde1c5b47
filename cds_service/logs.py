"""Structured JSON logs: one line per hook call, never patient data or tokens.

Only fields set explicitly through `extra=` with names in SAFE_FIELDS are written; the free-text
message is a fixed event name. Nothing from a request body is ever formatted into a message.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from typing import Any

from cds_service.jsonfast import dumps_log

SAFE_FIELDS = (
    "service",
    "hook",
    "hookInstance",
    "status",
    "ms",
    "cards",
    "fhir_calls",
    "anomalies",
    "partial",
    "unavailable",
    "failed_rules",
    "rule",
    "error",
    "where",
    "feedback_items",
    "method",
    "path_kind",
    "reason",
    "silent_cards",
    "error_id",
    "unexpected",
    "key_failures",
)


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # the last second's text (one per second)

    def _stamp(self, created: float) -> str:
        """The time as "2026-12-07T10:30:05.123Z" (UTC); the seconds' text made once per
        second (strftime per line cost more than the rest of the line)."""
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        return f"{cached[1]}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        event = record.msg if isinstance(record.msg, str) else "event"
        return self._line(
            record.created, record.levelname.lower(), record.name, event, vars(record)
        )

    def info_line(self, logger: str, event: str, created: float, fields: dict[str, object]) -> str:
        """What format() gives for an INFO record of `logger` made at `created` with
        `fields` (log_event's direct path, no LogRecord)."""
        return self._line(created, "info", logger, event, fields)

    def _line(
        self, created: float, level: str, logger: str, event: str, fields: dict[str, Any]
    ) -> str:
        entry: dict[str, object] = {
            "ts": self._stamp(created),
            "level": level,
            "logger": logger,
            "event": event,
        }
        for name in SAFE_FIELDS:
            if name in fields:
                entry[name] = fields[name]
        return dumps_log(entry)


def log_event(logger: logging.Logger, event: str, fields: dict[str, object]) -> None:
    """`logger.info(event, extra=fields)` for the line of every hook call, made cheaply: no
    caller lookup (findCaller walks the stack; the line says where it comes from by its
    logger and event) and no per-field checks (the fields are SAFE_FIELDS names, none a
    LogRecord attribute); the record has every standard attribute, so any handler or
    formatter (pytest's caplog, a site's own) reads it as usual."""
    if not logger.isEnabledFor(logging.INFO):
        return
    now = time.time()
    handler = _only_json_handler(logger)
    failed = False
    if handler is not None:
        # the service's own configuration (configure()): the one line written as the
        # handler would write it, without a LogRecord or the handler chain
        formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
        line = formatter.info_line(logger.name, event, now, fields) + handler.terminator
        with handler.lock:  # type: ignore[union-attr]
            try:
                stream = handler.stream
                stream.write(line)
                stream.flush()
                return
            except RecursionError:
                raise
            except Exception:  # noqa: BLE001 - reported below, as the handler's emit would
                failed = True  # (not written again: part of the line may be out already)
    record = logging.LogRecord.__new__(logging.LogRecord)
    values = record.__dict__
    values.update(_process_fields())
    values["name"] = logger.name
    values["msg"] = event
    values["created"] = now
    values["msecs"] = int((now - int(now)) * 1000) + 0.0
    values["relativeCreated"] = (now - logging._startTime) * 1000  # type: ignore[attr-defined]
    values["thread"] = threading.get_ident()
    values["threadName"] = threading.current_thread().name
    values.update(fields)
    if failed and handler is not None:
        handler.handleError(record)
        return
    logger.handle(record)


_PROCESS: tuple[int, dict[str, object]] = (-1, {})


def _only_json_handler(logger: logging.Logger) -> logging.StreamHandler[Any] | None:
    """The JSON handler configure() installed when it is the only thing an INFO record of
    `logger` would reach (no filter, no other handler up to the root, stream handler as
    shipped); None otherwise (pytest's caplog, a site's own handlers: the usual path)."""
    found: logging.StreamHandler[Any] | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not logging.StreamHandler
                or not getattr(handler, "_cds_json", False)
                or handler.filters
                or handler.level > logging.INFO
                or type(handler.formatter) is not JsonFormatter
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


def _process_fields() -> dict[str, object]:
    """A record's attributes that do not change within a process (remade after a fork)."""
    global _PROCESS
    pid = os.getpid()
    if _PROCESS[0] != pid:
        template = logging.LogRecord("", logging.INFO, "", 0, "", None, None)
        _PROCESS = (pid, {**template.__dict__, "exc_info": None, "stack_info": None})
    return _PROCESS[1]


def configure(level: str = "INFO") -> None:
    root = logging.getLogger("cds_service")
    if any(getattr(h, "_cds_json", False) for h in root.handlers):
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._cds_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = True


def where(exc: BaseException) -> str:
    """File and line of an exception's origin (never its message, which may quote data)."""
    frame = exc.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    if frame is None:
        return "?"
    return f"{frame.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.tb_lineno}"


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def loggable_id(value: str) -> str:
    """A client-supplied id (hookInstance) as the log may show it: a UUID as is (the spec
    says hookInstance is one), anything else replaced by a fixed word, never echoed."""
    return value if _UUID.fullmatch(value) else "not-a-uuid"
