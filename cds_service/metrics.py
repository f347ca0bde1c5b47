"""Prometheus metrics (GET /metrics). Labels take values from small fixed sets only: service
ids, rule ids, indicators, FHIR resource types and outcomes, normalised reasons; never patient
data, URLs or tokens.

Under `cds-service serve` the metrics are in multiprocess mode: the command sets
PROMETHEUS_MULTIPROC_DIR before this module is first imported, every gunicorn worker writes
its own files there and /metrics adds them up.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

HOOK_CALLS = Counter(
    "cds_hook_calls_total", "Hook calls answered, by service and HTTP status", ["service", "status"]
)
HOOK_LATENCY = Histogram(
    "cds_hook_duration_seconds",
    "Hook call latency in the view (parse to cards)",
    ["service"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
HOOK_MISSING_DATA = Counter(
    "cds_hook_missing_data_total",
    "Hook calls answered 412 (required data unobtainable)",
    ["service"],
)
CARDS = Counter("cds_cards_total", "Cards returned, by rule and indicator", ["rule", "indicator"])
FHIR_CALLS = Counter(
    "cds_fhir_calls_total", "FHIR fallback reads, by resource and outcome", ["resource", "outcome"]
)
FHIR_FAILURES = Counter(
    "cds_fhir_call_failures_total",
    "FHIR fallback reads that did not return data (outcome other than ok)",
    ["resource", "outcome"],
)
FHIR_LATENCY = Histogram(
    "cds_fhir_call_duration_seconds",
    "FHIR fallback read latency",
    ["resource"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
)
AUTH_FAILURES = Counter("cds_auth_failures_total", "Refused EHR tokens, by reason", ["reason"])
STORE_FAILURES = Counter(
    "cds_store_failures_total",
    "Store operations that failed (database unreachable, locked or erroring)",
    ["operation"],
)
CARD_LOG_LOST = Counter(
    "cds_card_log_lost_total",
    "Card-log entries (issued cards and hook-call counts) never written",
    ["reason"],
)
CARD_LOG_WRITTEN = Counter("cds_card_log_written_total", "Issued cards written to the card log")
CARD_LOG_QUEUE = Gauge(
    "cds_card_log_queue_depth",
    "Card-log entries waiting to be written",
    multiprocess_mode="livesum",
)
FEEDBACK_ITEMS = Counter("cds_feedback_items_total", "Feedback items received", ["outcome"])
FEEDBACK_STORED = Counter(
    "cds_feedback_stored_total", "Feedback items stored (new; a resent item is stored once)"
)


class Children:
    """A labelled metric's children, each looked up once: `labels()` takes a lock and checks
    its arguments on every call, and a hook call records several metrics. Label values come
    from small fixed sets; past MAX_CHILDREN distinct ones, labels() is asked every time."""

    MAX_CHILDREN = 1024

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._metric.labels(*values)
            if len(self._children) < self.MAX_CHILDREN:
                self._children[values] = child
        return child


HOOK_CALLS_BY = Children(HOOK_CALLS)
HOOK_LATENCY_BY = Children(HOOK_LATENCY)
CARDS_BY = Children(CARDS)

_AUTH_REASONS = (
    "no Authorization header",
    "not a Bearer token",
    "malformed JWT",
    "algorithm",
    "issuer not trusted",
    "no key for this kid",
    "key type does not match",
    "key is for another",
    "token expired",
    "token not yet valid",
    "wrong audience",
    "bad signature",
    "invalid token",
    "token issued in the future",
    "tenant not allowed",
    "replayed jti",
    "jku not on",
    "exp or iat is not a time",
    "token lifetime too long",
)


def auth_reason(message: str) -> str:
    """A refusal reason from a fixed set (an AuthError message may quote token fields)."""
    for reason in _AUTH_REASONS:
        if message.startswith(reason):
            return reason.replace(" ", "-").lower()
    return "other"


def exposition(multiproc_dir: str) -> bytes:
    if multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiproc_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(DEFAULT_REGISTRY)
