"""One hook call from parsed JSON to response: parse -> load record -> facts -> rules -> cards.

Shared by the HTTP API and `cds-service evaluate`, so both give the same answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from cds_service.cards import CardTemplates
from cds_service.config import Config
from cds_service.errors import CdsError, unexpected_error
from cds_service.facts import ActivitySettings, derive_facts
from cds_service.fhir.client import FhirClient
from cds_service.fhir.read import validate_resource
from cds_service.fhir.record import PatientRecord, RecordLoader
from cds_service.hooks.request import parse_hook_request
from cds_service.hooks.services import SERVICES_BY_ID
from cds_service.logs import loggable_id
from cds_service.rules import Finding, load_settings, run_rules

log = logging.getLogger("cds_service.hooks")
_SEVERITY = {"critical": 0, "warning": 1, "info": 2}
_MAX_VALIDATED_ORDERS = 20



@dataclass
class HookResult:
    status: int
    body: dict[str, Any]
    log: dict[str, Any] = field(default_factory=dict)


class Engine:
    """Everything static (templates, value sets, settings, thread pool) is built once here."""

    def __init__(self, config: Config, rule_settings: dict[str, Any] | None = None) -> None:
        self.config = config
        self.templates = CardTemplates()
        self.rule_settings = dict(rule_settings if rule_settings is not None else load_settings())
        self.rule_settings["mme_table"] = config.mme_table
        self.activity = ActivitySettings.from_mapping(
            self.rule_settings.get("medication_activity", {}))
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="fhir")
        self.loader = RecordLoader(config, self.executor, FhirClient(config))
        self._validated: dict[str, tuple[tuple[str, int], ...]] = {}

    def evaluate(self, service_id: str, body: Any,
                 issuer_fhir_servers: tuple[str, ...] = ()) -> HookResult:
        started = time.perf_counter()
        service = SERVICES_BY_ID.get(service_id)
        info: dict[str, Any] = {"service": service_id}
        if service is None:
            info["service"] = "unknown"  # never echo client text into the log
            result = HookResult(404, CdsError(404, "No CDS service with that id").body())
            return self._done(result, info, started)
        try:
            request = parse_hook_request(body, service, self.config.max_bundle_entries)
            info["hook"] = request.hook
            info["hookInstance"] = loggable_id(request.hook_instance)
            record = self.loader.load(request, service, issuer_fhir_servers)
            info["fhir_calls"] = record.fhir_calls
            facts = derive_facts(record, self.config.clinical_today(), self.activity)
            findings, failed = run_rules(request.hook, record, facts, self.rule_settings)
            findings = self._order_and_dedupe(findings)
            cards = [self.templates.render(f) for f in findings]
            self._check_focus_orders(findings, record)
            info.update(cards=[f.rule_id for f in findings], failed_rules=failed,
                        partial=sorted(record.partial), unavailable=sorted(record.unavailable),
                        anomalies=dict(record.anomalies))
            result = HookResult(200, {"cards": cards})
        except CdsError as exc:
            # Messages and log reasons never quote client-supplied text or patient data.
            info["reason"] = exc.log_reason or exc.message[:200]
            result = HookResult(exc.status, exc.body())
        except RecursionError:
            info["reason"] = "nested too deeply"
            result = HookResult(400, CdsError(400, "The request is nested too deeply").body())
        except Exception as exc:  # noqa: BLE001 - a bug: logged with an error id, answered 500
            error_id, error_body = unexpected_error(log, "hook-unexpected-error", exc,
                                                    service=service_id)
            info.update(error=type(exc).__name__, error_id=error_id)
            result = HookResult(500, error_body)
        return self._done(result, info, started)

    def _order_and_dedupe(self, findings: list[Finding]) -> list[Finding]:
        """Most severe first (the sandbox and EHRs show cards in order); a suggestion already
        offered by an earlier card is not repeated on a later one."""
        findings = sorted(findings, key=lambda f: _SEVERITY[self.templates.indicator(f)])
        offered: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        out = []
        for finding in findings:
            kept = []
            for spec in finding.suggestions:
                key = (spec.key, tuple(sorted(spec.values.items())))
                if key not in offered:
                    offered.add(key)
                    kept.append(spec)
            out.append(replace(finding, suggestions=tuple(kept)))
        return out

    def _check_focus_orders(self, findings: list[Finding], record: PatientRecord) -> None:
        """Validate the draft orders a card is about against the R4 model (anomalies counted,
        advice still given). It runs only when a card fires, for at most
        _MAX_VALIDATED_ORDERS orders, and the result is remembered per order content (a
        digest, so the memory is bounded): EHRs resend the same draft on every order-select
        and on order-sign."""
        if not findings:
            return
        for order in record.focus_orders[:_MAX_VALIDATED_ORDERS]:
            try:
                key = hashlib.sha256(json.dumps(order, sort_keys=True).encode()).hexdigest()
            except (TypeError, ValueError, RecursionError):
                continue
            known = self._validated.get(key)
            if known is None:
                anomalies: Counter[str] = Counter()
                validate_resource(order, anomalies)
                known = tuple(anomalies.items())
                if len(self._validated) >= 4096:
                    self._validated.clear()
                self._validated[key] = known
            for name, count in known:
                record.anomalies[name] += count

    @staticmethod
    def _done(result: HookResult, info: dict[str, Any], started: float) -> HookResult:
        info["status"] = result.status
        info["ms"] = round((time.perf_counter() - started) * 1000, 2)
        result.log = info
        log.info("hook", extra=info)
        return result

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
