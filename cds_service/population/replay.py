"""One patient's replay: every opioid or benzodiazepine MedicationRequest authored in the
window becomes the draft of an order-sign call, with the record as it stood on that day,
evaluated by the service's own Engine with today = the order's date.

`record_as_of` is the whole of "as it stood": a resource is kept when the date it entered the
chart (authored, dispensed, recorded, asserted, performed, started) is on or before the day,
or when it has no such date; what ended later (a condition's abatement, an encounter's or
care plan's end) is shown as still going on. A status changed later without a date cannot be
undone (see docs/backtest.md).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cds_service.fhir.read import JSON, parse_date, parse_reference
from cds_service.knowledge.classifier import ANTITUSSIVE, BENZODIAZEPINE, MOUD, OPIOID

SIGN_SERVICE = "opioid-lbp-order-sign"
VIEW_SERVICE = "opioid-lbp-patient-view"
OPIOID_CLASSES = frozenset({OPIOID, MOUD, ANTITUSSIVE})
REPLAYED_CLASSES = OPIOID_CLASSES | {BENZODIAZEPINE}
_NOT_SIGNED = {"draft", "entered-in-error"}
# rules that judge opioid analgesic drafts through exclusions.pain_opioid_drafts_in_scope
_PAIN_OPIOID_RULES = frozenset({"opioid-start-chronic-lbp", "first-line-therapy-not-tried"})


def entered_on(resource: JSON) -> dt.date | None:
    """The day a resource entered the chart, as far as its own data says (None: undated)."""
    rtype = resource.get("resourceType")

    def first(*values: Any) -> dt.date | None:
        for value in values:
            day = parse_date(value)
            if day is not None:
                return day
        return None

    def start(period: Any) -> Any:
        return period.get("start") if isinstance(period, dict) else None

    if rtype in ("MedicationRequest", "ServiceRequest"):
        return first(resource.get("authoredOn"))
    if rtype == "MedicationDispense":
        return first(resource.get("whenHandedOver"), resource.get("whenPrepared"))
    if rtype == "MedicationStatement":
        return first(
            resource.get("dateAsserted"),
            resource.get("effectiveDateTime"),
            start(resource.get("effectivePeriod")),
        )
    if rtype == "Condition":
        return first(
            resource.get("recordedDate"),
            resource.get("onsetDateTime"),
            start(resource.get("onsetPeriod")),
        )
    if rtype == "Procedure":
        return first(resource.get("performedDateTime"), start(resource.get("performedPeriod")))
    if rtype == "Encounter":
        return first(start(resource.get("period")))
    if rtype == "CarePlan":
        return first(resource.get("created"), start(resource.get("period")))
    if rtype == "AllergyIntolerance":
        return first(
            resource.get("recordedDate"),
            resource.get("onsetDateTime"),
            start(resource.get("onsetPeriod")),
        )
    return None


def _later(value: Any, day: dt.date) -> bool:
    found = parse_date(value)
    return found is not None and found > day


def _undo_end(resource: JSON, element: str, status: str, ended: set[str]) -> JSON:
    period = resource.get(element)
    if isinstance(period, dict) and period.get("end") is not None:
        resource = dict(resource)
        resource[element] = {k: v for k, v in period.items() if k != "end"}
        if resource.get("status") in ended:
            resource["status"] = status
    return resource


def as_of(resource: JSON, day: dt.date) -> JSON:
    """The resource as it stood on `day` where its own dates allow (a copy when changed)."""
    rtype = resource.get("resourceType")
    if rtype == "Patient" and _later(resource.get("deceasedDateTime"), day):
        return {k: v for k, v in resource.items() if k != "deceasedDateTime"}
    if rtype == "Condition":
        abatement = resource.get("abatementDateTime")
        if abatement is None and isinstance(resource.get("abatementPeriod"), dict):
            abatement = resource["abatementPeriod"].get("start")
        if _later(abatement, day):
            out = {k: v for k, v in resource.items() if not k.startswith("abatement")}
            out["clinicalStatus"] = {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            }
            return out
        return resource
    if rtype == "Encounter" and isinstance(resource.get("period"), dict):
        if _later(resource["period"].get("end"), day):
            return _undo_end(resource, "period", "in-progress", {"finished"})
        return resource
    if rtype == "CarePlan" and isinstance(resource.get("period"), dict):
        if _later(resource["period"].get("end"), day):
            return _undo_end(resource, "period", "active", {"completed"})
        return resource
    if rtype == "Procedure" and isinstance(resource.get("performedPeriod"), dict):
        if _later(resource["performedPeriod"].get("end"), day):
            return _undo_end(resource, "performedPeriod", "in-progress", {"completed"})
        return resource
    if rtype == "MedicationStatement" and isinstance(resource.get("effectivePeriod"), dict):
        if _later(resource["effectivePeriod"].get("end"), day):
            return _undo_end(resource, "effectivePeriod", "active", {"completed"})
        return resource
    return resource


def record_as_of(
    entries: Sequence[tuple[str, JSON]], day: dt.date, leave_out: JSON | None = None
) -> list[tuple[str, JSON]]:
    """(fullUrl, resource) of the record as it stood on `day`: nothing entered later, no
    order that was never signed (draft, entered in error), `leave_out` (the replayed order)
    left out."""
    kept = []
    for full_url, resource in entries:
        if resource is leave_out:
            continue
        if resource.get("resourceType") == "MedicationRequest" and (
            resource.get("status") in _NOT_SIGNED
        ):
            continue
        entered = entered_on(resource)
        if entered is not None and entered > day:
            continue
        kept.append((full_url, as_of(resource, day)))
    return kept


def as_draft(order: JSON) -> JSON:
    """The order as the EHR sent it at signing: status draft."""
    draft = copy.deepcopy(order)
    draft["status"] = "draft"
    return draft


def bundle_of(entries: Iterable[tuple[str, JSON]]) -> JSON:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": url, "resource": resource} if url else {"resource": resource}
            for url, resource in entries
        ],
    }


def replay_bundle(entries: Sequence[tuple[str, JSON]], order: JSON, day: dt.date) -> JSON:
    """The patient Bundle the order-sign replay is made from: the record as of `day` and the
    order as a draft (hooks/bundle_request.py turns it into the hook request)."""
    full_url = next((url for url, r in entries if r is order), "")
    return bundle_of([*record_as_of(entries, day, order), (full_url, as_draft(order))])


def sign_request(entries: Sequence[tuple[str, JSON]], order: JSON, day: dt.date) -> JSON:
    """The order-sign hook request the EHR would have sent on `day` for `order`."""
    from cds_service.hooks.bundle_request import request_from_bundle

    request = request_from_bundle(replay_bundle(entries, order, day), "order-sign")
    encounter = parse_reference(order.get("encounter"))
    if encounter.id and encounter.resource_type in ("", "Encounter"):
        request["context"]["encounterId"] = encounter.id
    return request


def view_request(entries: Sequence[tuple[str, JSON]], day: dt.date) -> JSON:
    from cds_service.hooks.bundle_request import request_from_bundle

    return request_from_bundle(bundle_of(record_as_of(entries, day)), "patient-view")


@dataclass
class Options:
    since: dt.date | None = None
    until: dt.date | None = None
    fhir_server: str = ""  # the base the export came from (part of the pseudonym input)
    patient_view: bool = False


@dataclass
class PatientResult:
    orders: list[dict[str, Any]] = field(default_factory=list)
    cards: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # reasons a record could not be used
    views: list[dt.date] = field(default_factory=list)  # days of patient-view replays (200)


class Replayer:
    """Replays patients with one engine (built once per process)."""

    def __init__(self, engine: Any, knowledge: Any, key: bytes, options: Options) -> None:
        from cds_service.fhir.record import PatientRecord

        self.engine = engine
        self.classifier = knowledge.classifier
        self.settings = engine.settings
        self.key = key
        self.options = options
        self._record_type = PatientRecord
        from cds_service.cards import cards_dir
        from cds_service.store.cardlog import SuggestionLabels

        self.labels = SuggestionLabels.from_cards_dir(cards_dir())

    def pseudonym(self, kind: str, value: str) -> str:
        """HMAC-SHA256 keyed like the store's patient key (store/pseudonym.py); `kind`
        separates patients, prescribers and orders."""
        from cds_service.store.pseudonym import Pseudonymizer

        ring = self.key.split(b"\n")  # a rotated key ring, oldest first (population/run.py)
        keys = self.__dict__.get("_pseudonymizer")
        if keys is None:  # built once per replay, not per pseudonym
            keys = self.__dict__["_pseudonymizer"] = Pseudonymizer(ring)
        if kind == "patient":
            return keys.patient_key(self.options.fhir_server, value)
        message = f"{self.options.fhir_server.rstrip('/')}\x1f{kind}\x1f{value}".encode()
        return keys.finish(hmac.new(ring[0], message, hashlib.sha256).hexdigest())

    def _classes(self, order: JSON, record: Any) -> frozenset[str]:
        try:
            classification = self.classifier.classify_order(order, record.medication_for(order))
        except Exception:  # noqa: BLE001 - an odd order is not replayed, never fatal
            return frozenset()
        return frozenset(classification.classes) & REPLAYED_CLASSES

    def orders(
        self, entries: Sequence[tuple[str, JSON]]
    ) -> list[tuple[JSON, dt.date, frozenset[str]]]:
        record = self._record_type(patient_id="")
        for url, resource in entries:
            if resource.get("resourceType") == "Medication":
                record.remember(resource, url)
        out = []
        for _, resource in entries:
            if resource.get("resourceType") != "MedicationRequest":
                continue
            if resource.get("status") in _NOT_SIGNED:
                continue
            day = parse_date(resource.get("authoredOn"))
            if day is None:
                continue
            if (self.options.since and day < self.options.since) or (
                self.options.until and day > self.options.until
            ):
                continue
            classes = self._classes(resource, record)
            if classes:
                out.append((resource, day, classes))
        return out

    def patient(self, patient_id: str, texts: Sequence[tuple[str, str]]) -> PatientResult:
        """Every replay of one patient; `texts` = (fullUrl, resource JSON text) in a fixed
        order (the export's file and line)."""
        result = PatientResult()
        entries: list[tuple[str, JSON]] = []
        for url, text in texts:
            try:
                resource = json.loads(text)
            except (ValueError, RecursionError):
                continue  # cannot happen: the readers parsed it already
            entries.append((url, resource))
        patient_key = self.pseudonym("patient", patient_id)
        for index, (order, day, classes) in enumerate(self.orders(entries)):
            self._sign(result, entries, order, day, classes, patient_key, index)
        if self.options.patient_view:
            self._views(result, entries, patient_key)
        return result

    def _sign(
        self,
        result: PatientResult,
        entries: Sequence[tuple[str, JSON]],
        order: JSON,
        day: dt.date,
        classes: frozenset[str],
        patient_key: str,
        index: int,
    ) -> None:
        requester = parse_reference(order.get("requester"))
        prescriber = (
            self.pseudonym("prescriber", f"{requester.resource_type}/{requester.id}")
            if requester.id
            else None
        )
        order_id = order.get("id") if isinstance(order.get("id"), str) else f"#{index}"
        order_key = self.pseudonym("order", f"{patient_key}/{order_id}")
        request = sign_request(entries, order, day)
        outcome = self.engine.evaluate(SIGN_SERVICE, request, today=day)
        facts = outcome.facts
        draft = next((d for d in facts.drafts if d.in_focus), None) if facts else None
        mme = None
        if draft is not None and draft.has(OPIOID) and facts is not None:
            calculated = facts.mme(draft)
            mme = calculated.mme_per_day if calculated is not None else None
        exclusions = self._exclusions(facts, draft) if facts is not None else []
        cards = [*outcome.body.get("cards", []), *outcome.silent_cards]
        silent = len(outcome.body.get("cards", []))
        reason = str(outcome.log.get("reason", "")) if outcome.status != 200 else ""
        if outcome.log.get("reason") == "record-unusable":
            reason = "record-unusable"
        if reason:
            result.unreadable.append(reason)
        month = day.strftime("%Y-%m")
        common = {
            "patient_key": patient_key,
            "prescriber_key": prescriber,
            "order_key": order_key,
            "order_date": day,
            "month": month,
            "mme_per_day": float(mme) if mme is not None else None,
        }
        result.orders.append(
            {
                **common,
                "drug_classes": sorted(classes),
                "opioid": bool(classes & OPIOID_CLASSES),
                "benzodiazepine": BENZODIAZEPINE in classes,
                "status": int(outcome.status),
                "cards": len(cards),
                "rules_fired": sorted({_rule(c) for c in cards}),
                "exclusions": exclusions,
                "problem": reason or None,
            }
        )
        for rank, card in enumerate(cards):
            result.cards.append(
                {
                    **common,
                    "hook": "order-sign",
                    "rank": rank,
                    "rule": _rule(card),
                    "variant": outcome.variants.get(card.get("uuid"), ""),
                    "indicator": card.get("indicator", ""),
                    "silent": rank >= silent,
                    "covered_rules": list(_covers(card)),
                    "suggestions": self._labels(card),
                }
            )

    def _labels(self, card: Mapping[str, Any]) -> list[str]:
        """The suggestions' template keys (never the rendered label: it names the drug)."""
        keys = []
        for suggestion in card.get("suggestions", []):
            label = suggestion.get("label") if isinstance(suggestion, dict) else None
            key, _ = self.labels.match(label if isinstance(label, str) else "")
            keys.append(key or "other")
        return keys

    def _exclusions(self, facts: Any, draft: Any) -> list[str]:
        """`rule:exclusion` for every enabled order-sign rule that one of the shared
        exclusions (rules/exclusions.py) keeps silent on this order: the order's own
        exclusion first, then the patient's; the pain-opioid rules (which judge opioid
        analgesic drafts only) also by opioid use disorder treatment."""
        from cds_service.rules.exclusions import order_exclusion, oud_treatment, patient_exclusion

        out = []
        for rule in self.engine.rules_for("order-sign"):
            pain_rule = rule.id in _PAIN_OPIOID_RULES
            if pain_rule and (draft is None or not draft.has(OPIOID)):
                continue  # the rule does not judge this order at all
            settings = self.settings.rules[rule.id].exclusions
            reason = (order_exclusion(draft, facts, settings) if draft is not None else None) or (
                patient_exclusion(facts, settings)
            )
            if reason is None and pain_rule:
                reason = oud_treatment(facts, settings)
            if reason:
                out.append(f"{rule.id}:{reason}")
        return out

    def _views(
        self, result: PatientResult, entries: Sequence[tuple[str, JSON]], patient_key: str
    ) -> None:
        """patient-view on the last day of each month with an order, dispense or encounter
        in the window (the chart opened once a month while care was going on)."""
        months = set()
        for _, resource in entries:
            if resource.get("resourceType") in (
                "MedicationRequest",
                "MedicationDispense",
                "Encounter",
            ):
                day = entered_on(resource)
                if day is None:
                    continue
                if (self.options.since and day < self.options.since) or (
                    self.options.until and day > self.options.until
                ):
                    continue
                months.add((day.year, day.month))
        for year, month in sorted(months):
            last = dt.date(year + month // 12, month % 12 + 1, 1) - dt.timedelta(days=1)
            if self.options.until and last > self.options.until:
                last = self.options.until
            outcome = self.engine.evaluate(VIEW_SERVICE, view_request(entries, last), today=last)
            if outcome.status == 200:
                result.views.append(last)
            cards = [*outcome.body.get("cards", []), *outcome.silent_cards]
            silent = len(outcome.body.get("cards", []))
            for rank, card in enumerate(cards):
                result.cards.append(
                    {
                        "patient_key": patient_key,
                        "prescriber_key": None,
                        "order_key": None,
                        "order_date": last,
                        "month": last.strftime("%Y-%m"),
                        "mme_per_day": None,
                        "hook": "patient-view",
                        "rank": rank,
                        "rule": _rule(card),
                        "variant": outcome.variants.get(card.get("uuid"), ""),
                        "indicator": card.get("indicator", ""),
                        "silent": rank >= silent,
                        "covered_rules": list(_covers(card)),
                        "suggestions": self._labels(card),
                    }
                )


def _rule(card: Mapping[str, Any]) -> str:
    return str(card.get("source", {}).get("topic", {}).get("code", "unknown"))


def _covers(card: Mapping[str, Any]) -> tuple[str, ...]:
    from cds_service.store.cardlog import _covers as covers

    return covers(card, _rule(card))
