"""Structured JSON logs: one line per hook call, never patient data or tokens.

Only fields set explicitly through `extra=` with names in SAFE_FIELDS are written; the free-text
message is a fixed event name. Nothing from a request body is ever formatted into a message.
"""

from __future__ import annotations

import logging
import re
import sys
import time

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
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.msg if isinstance(record.msg, str) else "event",
        }
        for name in SAFE_FIELDS:
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        return dumps_log(entry)


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
