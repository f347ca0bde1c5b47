"""One hook call from parsed JSON to response: parse -> load record -> facts -> rules -> cards.

Shared by the HTTP API and `cds-service evaluate`, so both give the same answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from cds_service.cards import CardTemplates
from cds_service.config import Config
from cds_service.errors import CdsError, unexpected_error
from cds_service.facts import ClinicalFacts, FactBuilder
from cds_service.fhir.bulkhead import FhirServers
from cds_service.fhir.client import FhirClient
from cds_service.fhir.read import JSON, validate_resource
from cds_service.fhir.record import PatientRecord
from cds_service.findings import Finding, Line
from cds_service.hooks.decision import DraftDecision, order_decision
from cds_service.hooks.loading import RecordLoader
from cds_service.hooks.request import HookRequest, parse_hook_request
from cds_service.hooks.services import SERVICES_BY_ID
from cds_service.jsonfast import dumps_sorted
from cds_service.knowledge import Knowledge
from cds_service.knowledge.bounded import BoundedCache
from cds_service.logs import log_event, loggable_id
from cds_service.rules.base import Rule
from cds_service.settings import Settings
from cds_service.store.errors import StoreUnavailable

log = logging.getLogger("cds_service.hooks")
_SEVERITY = {"critical": 0, "warning": 1, "info": 2}
_MAX_VALIDATED_ORDERS = 20
_ORDER_HOOKS = frozenset({"order-select", "order-sign"})

# A FHIR id (R4: [A-Za-z0-9\-\.]{1,64}) and a relative Patient reference with one: values the
# R4 model accepts whatever they are, so they do not enter the validation digest.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_PATIENT_REF = re.compile(r"Patient/[A-Za-z0-9\-.]{1,64}")


def draft_digest(order: JSON) -> str:
    """What the R4 validation of a draft order depends on, as a short digest: its content,
    except a valid id and a valid relative Patient reference in `subject` (every valid value
    validates alike; an invalid one stays in and is validated as it is)."""
    shape = order
    rid = order.get("id")
    if isinstance(rid, str) and _FHIR_ID.fullmatch(rid):
        shape = {**shape, "id": "-"}
    subject = order.get("subject")
    if isinstance(subject, dict):
        reference = subject.get("reference")
        if isinstance(reference, str) and _PATIENT_REF.fullmatch(reference):
            shape = {**shape, "subject": {**subject, "reference": "Patient/-"}}
    return hashlib.blake2b(dumps_sorted(shape), digest_size=16).hexdigest()


class RecordCheck:
    """The engine's own card (cards/record-unusable.json): the record could not be read."""

    id = "record-unusable"
    text: Mapping[str, frozenset[str]] = {
        "variant:unusable": frozenset(),
        "line:ignored": frozenset({"ignored", "total"}),
    }


@dataclass
class HookResult:
    status: int
    body: dict[str, Any]
    log: dict[str, Any] = field(default_factory=dict)
    # cards of rules in silent mode: rendered for the issued-card log, never returned
    silent_cards: list[dict[str, Any]] = field(default_factory=list)
    # governance: the ordering decision (order hooks), for the per-decision figures
    decision: DraftDecision | None = None
    headers: dict[str, str] = field(default_factory=dict)  # e.g. Retry-After on a 503
    # shown order cards -> the decision each asks for (card uuid -> decision key), logged
    # with the card so that feedback on it answers the decision
    decisions: dict[str, str] = field(default_factory=dict)
    # the facts the rules judged (the population backtest), and each rendered card's template
    # variant (card uuid -> variant; governance and the backtest)
    facts: ClinicalFacts | None = None
    variants: dict[str, str] = field(default_factory=dict)


class Answers(Protocol):
    """The shared store's view of decisions (store/db.py Store): keyed by patient, encounter,
    rule and draft orders; answered once feedback exists for a card with that key."""

    def decision_keys(
        self, request: HookRequest, findings: Sequence[tuple[str, tuple[str, ...]]]
    ) -> list[str]: ...

    def answered(self, keys: list[str]) -> set[str]: ...


class Engine:
    """Everything static (knowledge, settings, rules, thread pool) is built once, in
    create_app, and handed in here."""

    def __init__(
        self, config: Config, knowledge: Knowledge, settings: Settings, rules: tuple[Rule, ...]
    ) -> None:
        self.config = config
        self.templates: CardTemplates = knowledge.cards
        self.settings = settings
        self.rules = rules
        self.facts = FactBuilder(knowledge, settings)
        self.fhir_servers = FhirServers(config)  # bulkheads, breakers, admission
        # one decision, one answer (set by create_app when the site has it on)
        self.answers: Answers | None = None
        self.loader = RecordLoader(config, self.fhir_servers, FhirClient(config))
        self._validated: BoundedCache[str, tuple[tuple[str, int], ...]] = BoundedCache(
            config.cache_max_bytes
        )
        hooks = {h for r in rules for h in r.hooks}
        self._rules_by_hook = {
            hook: tuple(r for r in rules if hook in r.hooks and settings.rules[r.id].enabled)
            for hook in hooks
        }

    def rules_for(self, hook: str) -> tuple[Rule, ...]:
        """The engine, not the rules, decides which rules run for which hook (enabled ones,
        decided once from the settings)."""
        return self._rules_by_hook.get(hook, ())

    def evaluate(
        self,
        service_id: str,
        body: Any,
        issuer_fhir_servers: tuple[str, ...] = (),
        today: dt.date | None = None,
    ) -> HookResult:
        """Answer one hook call. `today` is the evaluation date (default: the configured
        clinical date, else the clock); the population backtest passes each order's date."""
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
            facts = self.facts.derive(
                record,
                today or self.config.clinical_today(),
                ordering=request.hook != "patient-view",
            )
            findings, failed = self._findings(request.hook, record, facts, info)
            keys = self._decisions(request, findings, info)
            variants: dict[str, str] = {}
            cards, silent_cards, decisions = self._render(findings, failed, keys, variants)
            self._check_focus_orders(cards, record)
            info.update(
                cards=[c["source"]["topic"]["code"] for c in cards],
                failed_rules=failed,
                partial=sorted(record.partial),
                unavailable=sorted(record.unavailable),
                anomalies=dict(record.anomalies),
            )
            if silent_cards:
                info["silent_cards"] = [c["source"]["topic"]["code"] for c in silent_cards]
            result = HookResult(
                200,
                {"cards": cards},
                silent_cards=silent_cards,
                decisions=decisions,
                facts=facts,
                decision=order_decision(
                    request.hook, request.encounter_id, record.focus_orders, facts.drafts
                ),
                variants=variants,
            )
        except CdsError as exc:
            # Messages and log reasons never quote client-supplied text or patient data.
            info["reason"] = exc.log_reason or exc.message[:200]
            result = HookResult(exc.status, exc.body(), headers=dict(exc.headers))
        except RecursionError:
            info["reason"] = "nested too deeply"
            result = HookResult(400, CdsError(400, "The request is nested too deeply").body())
        except Exception as exc:  # noqa: BLE001 - a bug: logged with an error id, answered 500
            error_id, error_body = unexpected_error(
                log, "hook-unexpected-error", exc, service=service_id
            )
            info.update(error=type(exc).__name__, error_id=error_id)
            result = HookResult(500, error_body)
        return self._done(result, info, started)

    def _silent(self, rule_id: str) -> bool:
        settings = self.settings.rules.get(rule_id)
        return settings is not None and settings.mode == "silent"

    def _decisions(
        self, request: HookRequest, findings: list[Finding], info: dict[str, Any]
    ) -> dict[int, str]:
        """One decision, one answer: the decision key of each shown order finding (by id);
        findings already answered (and the ones they cover) are removed from `findings`.
        The store unavailable: every card is shown (the safe default)."""
        if self.answers is None or request.hook not in _ORDER_HOOKS:
            return {}
        asking = [f for f in findings if f.drafts and not self._silent(f.rule_id)]
        if not asking:
            return {}
        made = self.answers.decision_keys(request, [(f.rule_id, f.drafts) for f in asking])
        keys = {id(f): key for f, key in zip(asking, made, strict=True)}
        try:
            answered = self.answers.answered(sorted(set(keys.values())))
        except StoreUnavailable:
            info["answers"] = "store-unavailable"  # shown again: the safe default
            return keys
        if answered:
            gone = [f for f in findings if keys.get(id(f)) in answered]
            covered = {r for f in gone for r in f.covers}
            findings[:] = [
                f for f in findings if all(f is not g for g in gone) and f.rule_id not in covered
            ]
            info["answered"] = sorted(f.rule_id for f in gone)
        return keys

    def _render(
        self,
        findings: list[Finding],
        failed: list[str],
        keys: dict[int, str] | None = None,
        variants: dict[str, str] | None = None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
        """(cards shown, cards of silent rules, decision key of each shown card), in order;
        `variants` gets each card's variant by card uuid (for the population backtest)."""
        shown: list[dict[str, Any]] = []
        silent: list[dict[str, Any]] = []
        decisions: dict[str, str] = {}
        for finding, covers, is_silent, original in self._order_and_dedupe(findings):
            try:
                card = self.templates.render(finding, covers)
            except Exception as exc:  # noqa: BLE001 - a template bug drops one card
                unexpected_error(log, "card-render-failed", exc, rule=finding.rule_id)
                failed.append(finding.rule_id)
                continue
            if variants is not None:
                variants[card["uuid"]] = finding.variant
            (silent if is_silent else shown).append(card)
            key = (keys or {}).get(original)
            if key and not is_silent:
                decisions[card["uuid"]] = key
        return shown, silent, decisions

    def _findings(
        self, hook: str, record: PatientRecord, facts: ClinicalFacts, info: dict[str, Any]
    ) -> tuple[list[Finding], list[str]]:
        if facts.deceased:
            info["reason"] = "patient-deceased"
            return [], []
        if record.unusable_reason:
            info["reason"] = "record-unusable"
            line = Line(
                "ignored",
                {
                    "ignored": str(record.other_patient_count),
                    "total": str(record.clinical_resource_count),
                },
            )
            return [Finding(RecordCheck.id, "unusable", {}, (line,))], []
        return self.run_rules(hook, facts)

    def run_rules(self, hook: str, facts: ClinicalFacts) -> tuple[list[Finding], list[str]]:
        """Every rule for the hook; one rule's exception is logged and the others answer."""
        findings: list[Finding] = []
        failed: list[str] = []
        for rule in self.rules_for(hook):
            try:
                findings.extend(rule.evaluate(facts, self.settings))
            except Exception as exc:  # noqa: BLE001 - isolation: log, keep the other cards
                # A bug: logged as unexpected with an error id, type and code location only
                # (exception messages can quote patient data); the other rules still answer.
                unexpected_error(log, "rule-failed", exc, rule=rule.id)
                failed.append(rule.id)
        return findings, failed

    def _order_and_dedupe(
        self, findings: list[Finding]
    ) -> list[tuple[Finding, tuple[str, ...], bool, int]]:
        """Say it once: a finding whose concern another card answers is dropped (its rule id
        kept on that card), but a shown card never disappears behind a silent one; the most
        dangerous concern first (priority, then indicator); a card that mentions a concern a
        shown card covers renders its `if_covered` form; a suggestion already offered by an
        earlier shown card is not repeated. Returns (finding, rules it covers, silent,
        id of the original finding)."""
        silent = {f.rule_id for f in findings if self._silent(f.rule_id)}
        fired = {f.rule_id for f in findings}
        dropped_by: dict[str, set[str]] = {}
        for finding in findings:
            for rule in finding.covers:
                if (
                    rule in fired
                    and rule != finding.rule_id
                    and (finding.rule_id not in silent or rule in silent)
                ):
                    dropped_by.setdefault(finding.rule_id, set()).add(rule)
        dropped = set().union(*dropped_by.values()) if dropped_by else set()
        kept = [f for f in findings if f.rule_id not in dropped]
        kept.sort(
            key=lambda f: (self.templates.priority(f), _SEVERITY[self.templates.indicator(f)])
        )
        offered: dict[bool, set[tuple[str, tuple[tuple[str, str], ...]]]] = {
            True: set(),
            False: set(),
        }
        # concerns a shown card answers: a card that only mentions one renders without it
        answered = {r for f in kept if f.rule_id not in silent for r in f.covers}
        out = []
        for original in kept:
            is_silent = original.rule_id in silent
            finding = original
            if original.if_covered is not None and answered.intersection(original.mentions):
                finding = original.if_covered
            suggestions = []
            for spec in finding.suggestions:
                # one action on one draft is one suggestion, whichever card would offer it
                address = spec.values.get("resource_id")
                key = (
                    spec.key,
                    (("resource_id", address),) if address else tuple(sorted(spec.values.items())),
                )
                if key not in offered[is_silent]:
                    offered[is_silent].add(key)
                    suggestions.append(spec)
            covers = tuple(r for r in finding.covers if r in dropped_by.get(finding.rule_id, ()))
            if len(suggestions) != len(finding.suggestions):  # (a copy only when one went)
                finding = replace(finding, suggestions=tuple(suggestions))
            out.append((finding, covers, is_silent, id(original)))
        return out

    def _check_focus_orders(self, cards: list[dict[str, Any]], record: PatientRecord) -> None:
        """Validate the draft orders a card is about against the R4 model (anomalies counted,
        advice still given). It runs only when a card fires, for at most
        _MAX_VALIDATED_ORDERS orders, and the result is remembered per order content (a
        digest, so the memory is bounded): EHRs resend the same draft on every order-select
        and on order-sign."""
        if not cards:
            return
        for order in record.focus_orders[:_MAX_VALIDATED_ORDERS]:
            try:
                key = draft_digest(order)
            except (TypeError, ValueError, RecursionError):
                continue
            known = self._validated.get(key)
            if known is None:
                anomalies: Counter[str] = Counter()
                validate_resource(order, anomalies)
                known = tuple(anomalies.items())
                self._validated.put(key, known)
            for name, count in known:
                record.anomalies[name] += count

    @staticmethod
    def _done(result: HookResult, info: dict[str, Any], started: float) -> HookResult:
        info["status"] = result.status
        info["ms"] = round((time.perf_counter() - started) * 1000, 2)
        result.log = info
        log_event(log, "hook", info)
        return result

    def close(self) -> None:
        self.fhir_servers.close()
