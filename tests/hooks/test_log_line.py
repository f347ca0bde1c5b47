"""The hook call's log line: written straight by the service's own JSON handler, the same
line the usual LogRecord path gives."""

from __future__ import annotations

import io
import json
import logging

from cds_service.logs import JsonFormatter, _only_json_handler, log_event

FIELDS: dict[str, object] = {
    "service": "opioid-lbp-order-sign",
    "hook": "order-sign",
    "status": 200,
    "ms": 1.25,
    "cards": ["opioid-start-chronic-lbp"],
    "anomalies": {},
    "not_a_safe_field": "never written",
}


def _logger(name: str) -> tuple[logging.Logger, logging.StreamHandler[io.StringIO], io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler._cds_json = True  # type: ignore[attr-defined]
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler, stream


def test_direct_line_matches_the_record_path() -> None:
    """With only the service's JSON handler in reach, log_event writes the line itself, and
    it is the line the handler writes for a LogRecord (timestamp aside)."""
    logger, handler, stream = _logger("cds_test_log_line.direct")
    assert _only_json_handler(logger) is handler
    log_event(logger, "hook", FIELDS)
    handler.addFilter(lambda _record: True)  # a filter: the usual LogRecord path
    assert _only_json_handler(logger) is None
    log_event(logger, "hook", FIELDS)
    direct, usual = (json.loads(line) for line in stream.getvalue().splitlines())
    assert direct.pop("ts").endswith("Z") and usual.pop("ts").endswith("Z")
    assert direct == usual
    assert direct["event"] == "hook" and "not_a_safe_field" not in direct


def test_other_handlers_take_the_usual_path() -> None:
    """A second handler anywhere up the chain (a site's own, pytest's capture) gets the record:
    the direct line is written only when the JSON handler is all there is."""
    logger, handler, stream = _logger("cds_test_log_line.parent")
    child = logging.getLogger("cds_test_log_line.parent.child")
    other = io.StringIO()
    extra = logging.StreamHandler(other)
    logger.addHandler(extra)
    assert _only_json_handler(child) is None
    log_event(child, "hook", FIELDS)
    assert json.loads(stream.getvalue())["service"] == "opioid-lbp-order-sign"
    assert other.getvalue() == "hook\n"
    logger.removeHandler(extra)
    assert _only_json_handler(child) is handler


class _BrokenStream(io.StringIO):
    """A stream that takes part of a line and then fails (a full pipe, a closed file)."""

    def write(self, text: str) -> int:
        super().write(text[:10])
        raise OSError("stream broken")


def test_a_failed_write_is_reported_not_repeated() -> None:
    """A write that fails on the direct path is reported through the handler's handleError,
    as its emit would, and the line is not written a second time."""
    logger, handler, _ = _logger("cds_test_log_line.broken")
    broken = _BrokenStream()
    handler.setStream(broken)
    reported: list[logging.LogRecord] = []
    handler.handleError = reported.append  # type: ignore[method-assign,assignment]
    log_event(logger, "hook", FIELDS)
    assert len(reported) == 1 and reported[0].msg == "hook"
    assert len(broken.getvalue()) == 10  # one partial write, no second attempt
