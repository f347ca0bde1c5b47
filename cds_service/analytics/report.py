"""The governance report: per rule and service, what the card log and feedback store hold.

Counting rules (the README's "Governance analytics" says the same):
- A card belongs to the period when it was issued in it (UTC days, both ends included); its
  outcome is whatever feedback it received, whenever that arrived.
- A card counts for its own rule and for every rule it covers ("say it once": one card
  answering several rules' concerns): `cards` = `own_cards` + `covered_cards`, so the rows of
  one service do not add up to the number of cards issued.
- A silent-mode rule's cards were logged and never shown: they are in `cards` (what the rule
  would have shown) and also counted in `silent_cards`; they never get feedback.
- Outcome of a card: accepted if any feedback item for it says accepted, else overridden if
  any says overridden, else no response; accepted + overridden + no_response = cards.
- Override reasons: for each card counted as overridden, each distinct reason code it was
  overridden with, shown with the catalogue's display. A code outside the catalogue is
  counted as "other" (the EHR may send free text there; it is never shown), an overridden
  card without a code as "none".
- Suggestions accepted: per card, each distinct accepted suggestion of that card, by its
  template label (never the rendered label: that names the patient's drug).
- Calls: hook calls the service answered with 200 on the period's days (the denominator of
  `cards_per_100_calls`, silent cards included in the numerator).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Date,
    String,
    Text,
    and_,
    case,
    cast,
    distinct,
    func,
    literal,
    literal_column,
    or_,
    select,
    type_coerce,
)

from cds_service.analytics.decisions import (
    CONTEXT_CHART,
    CONTEXT_ORDER,
    DecisionContext,
    DecisionRows,
    assemble_decisions,
)
from cds_service.hooks.decision import ORDER_HOOKS
from cds_service.store.db import Store
from cds_service.store.schema import card_rule, feedback, hook_call_count, issued_card, order_call

MAX_DAYS = 1100  # about three years: the longest period one report covers
DEFAULT_DAYS = 84  # twelve weeks, today included
NO_REASON = "none"
OTHER_REASON = "other"
OTHER_SUGGESTION = "Other suggestion (label matches no template)"


class ReportError(ValueError):
    """A report parameter cannot be used; the message says which."""


@dataclass(frozen=True)
class Period:
    since: dt.date
    until: dt.date

    @classmethod
    def parse(cls, since: str | None, until: str | None, today: dt.date) -> Period:
        """The period from optional ISO dates (default: the twelve weeks up to today)."""
        end = _date(until, "until") if until else today
        start = _date(since, "since") if since else end - dt.timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise ReportError("since is after until")
        if (end - start).days + 1 > MAX_DAYS:
            raise ReportError(f"the period is longer than {MAX_DAYS} days")
        return cls(start, end)

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        start = dt.datetime.combine(self.since, dt.time(), dt.UTC)
        end = dt.datetime.combine(self.until + dt.timedelta(days=1), dt.time(), dt.UTC)
        return start, end

    def weeks(self) -> list[str]:
        """Every ISO week the period touches, oldest first."""
        out: list[str] = []
        day = self.since - dt.timedelta(days=self.since.weekday())
        while day <= self.until:
            out.append(iso_week(day))
            day += dt.timedelta(days=7)
        return out


FIRST_DAY = dt.date(1900, 1, 1)
LAST_DAY = dt.date(2999, 12, 31)


def _date(value: str, name: str) -> dt.date:
    try:
        day = dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ReportError(f"{name}: not a date (YYYY-MM-DD)") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ReportError(
            f"{name}: {day.isoformat()} is outside the dates a report covers "
            f"({FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()})"
        )
    return day


def iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


@dataclass(frozen=True)
class RuleInfo:
    """What the settings in force say of a rule (the report's `mode` and `enabled`)."""

    mode: str
    enabled: bool


@dataclass(frozen=True)
class ReportContext:
    """Everything static a report needs, built once (CLI start or create_app)."""

    # (rule id, service id) rows shown even with no cards, in this order
    expected: tuple[tuple[str, str], ...]
    rules: Mapping[str, RuleInfo]
    reasons: Mapping[str, str]  # override reason code -> display (cards/override-reasons.json)
    reason_classes: Mapping[str, str] = field(default_factory=dict)  # code -> class
    # rule -> "ordering" and/or "chart review" (the hooks it runs on)
    rule_contexts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    knowledge_version: str | None = None  # the value sets in force where the report runs

    def decision_context(self) -> DecisionContext:
        return DecisionContext(
            modes={rule: info.mode for rule, info in self.rules.items()},
            rule_contexts=self.rule_contexts,
            reasons=self.reasons,
            reason_classes=self.reason_classes,
            class_titles=REASON_CLASSES,
        )

    def rule_ids(self) -> list[str]:
        return list(dict.fromkeys([rule for rule, _ in self.expected] + sorted(self.rules)))


REASON_CLASSES = {
    "not-applicable": "Should not have fired (not applicable or data wrong)",
    "clinical-judgement": "Clinical judgement (disagrees)",
    "patient-benefit": "Patient-specific benefit",
}


def reason_specs(cards_directory: Path) -> dict[str, dict[str, str]]:
    """code -> {"display", "class"} from cards/override-reasons.json."""
    data = json.loads((cards_directory / "override-reasons.json").read_text("utf-8"))
    return {
        code: {"display": str(spec["display"]), "class": str(spec["class"])}
        for code, spec in data["reasons"].items()
    }


def reason_catalogue(cards_directory: Path) -> dict[str, str]:
    """code -> display."""
    return {code: spec["display"] for code, spec in reason_specs(cards_directory).items()}


def context_for(
    rules: Iterable[Any],
    settings_rules: Mapping[str, Any],
    cards_directory: Path | None = None,
    knowledge_version: str | None = None,
) -> ReportContext:
    """The context from the rule registry and the typed settings in force."""
    from cds_service.cards import cards_dir
    from cds_service.hooks.services import SERVICES

    rules = tuple(rules)
    expected = tuple(
        (rule.id, service.id)
        for rule in rules
        for service in SERVICES
        if service.hook in rule.hooks
    )
    info = {
        rule_id: RuleInfo(str(value.mode), bool(value.enabled))
        for rule_id, value in settings_rules.items()
    }
    specs = reason_specs(cards_directory or cards_dir())
    contexts = {
        rule.id: tuple(
            name
            for name, hooks in (
                (CONTEXT_ORDER, ORDER_HOOKS),
                (CONTEXT_CHART, frozenset({"patient-view"})),
            )
            if hooks & set(rule.hooks)
        )
        for rule in rules
    }
    return ReportContext(
        expected,
        info,
        {code: spec["display"] for code, spec in specs.items()},
        {code: spec["class"] for code, spec in specs.items()},
        contexts,
        knowledge_version,
    )


def _day(dialect: str, column: Any = None) -> Any:
    """The UTC day of a timestamp (a card's issue by default), as SQL (a date on PostgreSQL,
    'YYYY-MM-DD' on SQLite)."""
    column = issued_card.c.issued_at if column is None else column
    if dialect == "postgresql":
        return cast(func.timezone(literal_column("'UTC'"), column), Date)
    return func.date(column)


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def build_report(
    store: Store, context: ReportContext, period: Period, rule: str | None = None
) -> dict[str, Any]:
    """The report as one JSON-ready object (the shape `cds-service report --format json`
    prints). Four aggregate queries plus one over the period's feedback items."""
    start, end = period.bounds()
    in_period = and_(issued_card.c.issued_at >= start, issued_card.c.issued_at < end)
    if rule:
        in_period = and_(in_period, card_rule.c.rule_id == rule)
    cards_of_rules = card_rule.join(issued_card, card_rule.c.card_uuid == issued_card.c.card_uuid)
    # per card of the period: 1 if any feedback accepted it / overrode it
    period_cards = select(issued_card.c.card_uuid).where(
        issued_card.c.issued_at >= start, issued_card.c.issued_at < end
    )
    outcome = (
        select(
            feedback.c.card_uuid,
            func.max(case((feedback.c.outcome == "accepted", 1), else_=0)).label("acc"),
            func.max(case((feedback.c.outcome == "overridden", 1), else_=0)).label("ovr"),
        )
        .where(feedback.c.card_uuid.in_(period_cards))
        .group_by(feedback.c.card_uuid)
        .subquery()
    )
    day = _day(store.dialect)
    per_day = (
        select(
            card_rule.c.rule_id,
            issued_card.c.service_id,
            day.label("day"),
            func.count().label("cards"),
            func.sum(case((card_rule.c.covered, 1), else_=0)).label("covered"),
            func.sum(case((issued_card.c.silent, 1), else_=0)).label("silent"),
            func.sum(case((outcome.c.acc == 1, 1), else_=0)).label("accepted"),
            func.sum(case((and_(outcome.c.ovr == 1, outcome.c.acc == 0), 1), else_=0)).label(
                "overridden"
            ),
        )
        .select_from(
            cards_of_rules.outerjoin(outcome, outcome.c.card_uuid == issued_card.c.card_uuid)
        )
        .where(in_period)
        .group_by(card_rule.c.rule_id, issued_card.c.service_id, day)
    )
    patients = (
        select(
            card_rule.c.rule_id,
            issued_card.c.service_id,
            func.count(distinct(issued_card.c.patient_key)).label("patients"),
        )
        .select_from(cards_of_rules)
        .where(in_period)
        .group_by(card_rule.c.rule_id, issued_card.c.service_id)
    )
    items = (
        select(
            card_rule.c.rule_id,
            issued_card.c.service_id,
            issued_card.c.card_uuid,
            issued_card.c.suggestions,
            feedback.c.outcome,
            feedback.c.override_reason,
            feedback.c.accepted_suggestions,
            outcome.c.acc,
        )
        .select_from(
            cards_of_rules.join(feedback, feedback.c.card_uuid == issued_card.c.card_uuid).join(
                outcome, outcome.c.card_uuid == issued_card.c.card_uuid
            )
        )
        .where(in_period)
    )
    calls = (
        select(
            hook_call_count.c.service_id,
            func.sum(hook_call_count.c.calls).label("calls"),
            func.sum(hook_call_count.c.calls_with_cards).label("calls_with_cards"),
        )
        .where(hook_call_count.c.day >= period.since, hook_call_count.c.day <= period.until)
        .group_by(hook_call_count.c.service_id)
    )
    # per decision (analytics/decisions.py): the period's cards, their answers, the order
    # calls of the period and the week after (a later order-sign), patient-view calls per day
    # order decisions per UTC day of their first call in the period (all, and with an opioid)
    per_decision = (
        select(
            func.min(_day(store.dialect, order_call.c.called_at)).label("day"),
            func.max(case((order_call.c.opioid, 1), else_=0)).label("opioid"),
        )
        .where(order_call.c.called_at >= start, order_call.c.called_at < end)
        .group_by(order_call.c.decision_key)
        .subquery()
    )
    decisions_seen = select(
        per_decision.c.day,
        func.count().label("decisions"),
        func.sum(per_decision.c.opioid).label("opioid_decisions"),
    ).group_by(per_decision.c.day)
    view_services = [s.id for s in _services() if s.hook == "patient-view"]
    views = select(hook_call_count.c.day, hook_call_count.c.calls).where(
        hook_call_count.c.day >= period.since,
        hook_call_count.c.day <= period.until,
        hook_call_count.c.service_id.in_(view_services),
    )
    (day_rows, patient_rows, item_rows, call_rows, seen_rows, view_rows) = store.read_many(
        "report", [per_day, patients, items, calls, decisions_seen, views]
    )
    report = assemble(context, period, rule, day_rows, patient_rows, item_rows, call_rows)
    report["knowledge_version"] = context.knowledge_version
    report["decisions"] = assemble_decisions(
        context.decision_context(),
        rule,
        _decision_rows(store, start, end, rule, seen_rows, view_rows),
        lambda keys: _order_calls(store, keys, start, end),
    )
    return report


def _naive(value: Any) -> dt.datetime:
    stamp: dt.datetime = (
        value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    )
    return stamp if stamp.tzinfo is None else stamp.astimezone(dt.UTC).replace(tzinfo=None)


def _decision_rows(
    store: Store,
    start: dt.datetime,
    end: dt.datetime,
    rule: str | None,
    decisions_seen: Sequence[Mapping[str, Any]],
    view_calls: Sequence[Mapping[str, Any]],
) -> DecisionRows:
    """The per-decision rows (analytics/decisions.py DecisionRows), grouped in SQL: the
    feedback on the period's cards, the covering cards, the versions and digests seen per
    (rule, service); then one row per firing, and the change markers only where a version or
    a rule's digest took more than one value."""
    card = issued_card.c
    in_period = and_(card.issued_at >= start, card.issued_at < end)
    decision = func.coalesce(card.decision_key, literal("card:") + card.card_uuid)
    context = case(
        (or_(card.decision_key.is_not(None), card.hook.in_(sorted(ORDER_HOOKS))), CONTEXT_ORDER),
        else_=CONTEXT_CHART,
    )
    answers = (
        select(
            card.rule_id,
            decision,
            feedback.c.id,
            feedback.c.outcome,
            feedback.c.outcome_timestamp,
            feedback.c.override_reason,
            type_coerce(feedback.c.accepted_suggestions, Text),
            feedback.c.received_at,
            card.service_id,
            type_coerce(card.suggestions, Text),
        )
        .select_from(issued_card.join(feedback, feedback.c.card_uuid == card.card_uuid))
        .where(in_period)
    )
    covers = case((func.json_array_length(card.covers) > 0, cast(card.covers, Text)))
    version = case((card.knowledge_version != "", card.knowledge_version))
    digest = case((card.settings_digest != "", card.settings_digest))
    shown_service = case((card.silent, None), else_=card.service_id)
    ranked = (
        select(
            card.rule_id,
            decision.label("decision"),
            context.label("context"),
            _day(store.dialect).label("day"),
            type_coerce(card.issued_at, String).label("issued_at"),
            card.variant,
            card.prescriber_key,
            case((card.silent, 1), else_=0).label("silent"),
            case((func.json_array_length(card.suggestions) > 0, 1), else_=0).label("suggests"),
            card.service_id,
            shown_service.label("shown_service"),
            covers.label("covers"),
            version.label("version"),
            digest.label("digest"),
            func.row_number()
            .over(
                partition_by=(card.rule_id, decision),
                order_by=(card.issued_at.desc(), card.card_uuid.desc()),
            )
            .label("rn"),
        )
        .where(in_period)
        .subquery()
    )
    last = ranked.c.rn == 1
    firings = select(
        ranked.c.rule_id,
        ranked.c.decision,
        func.max(ranked.c.context),
        func.min(ranked.c.day),
        func.max(case((last, ranked.c.variant))),
        func.max(case((last, ranked.c.prescriber_key))),
        func.min(ranked.c.silent),
        func.max(ranked.c.suggests),
        func.max(ranked.c.issued_at),
        func.min(ranked.c.service_id),
        func.max(ranked.c.service_id),
        func.min(ranked.c.covers),
        func.max(ranked.c.covers),
        func.min(ranked.c.shown_service),
        func.max(ranked.c.shown_service),
        func.min(ranked.c.version),
        func.max(ranked.c.version),
        func.min(ranked.c.digest),
        func.max(ranked.c.digest),
    ).group_by(ranked.c.rule_id, ranked.c.decision)
    answer_rows, firing_rows = store.read_tuples("report", [answers, firings])
    answered = frozenset(row[8] for row in answer_rows)
    shown = {s for row in firing_rows for s in row[13:15] if s is not None}
    services = [(service, 1, service in answered) for service in sorted(shown)]
    versions = {v for row in firing_rows for v in row[15:17] if v is not None}
    digests: dict[str, set[str]] = defaultdict(set)
    for row in firing_rows:
        if row[17] is not None:
            digests[row[0]].update(row[17:19])
    changed_rules = sorted(r for r, values in digests.items() if len(values) > 1)

    queries: list[Any] = []
    if len(versions) > 1:
        known = (
            select(
                card.issued_at,
                card.card_uuid,
                func.lag(card.knowledge_version)
                .over(order_by=(card.issued_at, card.card_uuid))
                .label("old"),
                card.knowledge_version.label("new"),
            )
            .where(in_period, card.knowledge_version.is_not(None), card.knowledge_version != "")
            .subquery()
        )
        queries.append(
            select(
                known.c.issued_at,
                known.c.card_uuid,
                literal("knowledge"),
                literal(None, String),
                known.c.old,
                known.c.new,
            ).where(known.c.old.is_not(None), known.c.old != known.c.new)
        )
    if changed_rules:
        changes = (
            select(
                card.issued_at,
                card.card_uuid,
                card.rule_id,
                func.lag(card.settings_digest)
                .over(partition_by=card.rule_id, order_by=(card.issued_at, card.card_uuid))
                .label("old"),
                card.settings_digest.label("new"),
            )
            .where(
                in_period,
                card.rule_id.in_(changed_rules),
                card.settings_digest.is_not(None),
                card.settings_digest != "",
            )
            .subquery()
        )
        queries.append(
            select(
                changes.c.issued_at,
                changes.c.card_uuid,
                literal("settings"),
                changes.c.rule_id,
                changes.c.old,
                changes.c.new,
            ).where(changes.c.old.is_not(None), changes.c.old != changes.c.new)
        )
    marker_rows = store.read_tuples("report", queries) if queries else []
    markers = sorted(
        (row for rows in marker_rows for row in rows),
        key=lambda m: (_naive(m[0]), m[1], m[2]),
    )
    return DecisionRows(
        firings=firing_rows,
        answers=answer_rows,
        answered=answered,
        markers=markers,
        services=services,
        decisions_seen=decisions_seen,
        view_calls=view_calls,
    )


def _order_calls(
    store: Store, keys: set[str], start: dt.datetime, end: dt.datetime
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """The order calls of these decisions, and the order-signs of their encounters from the
    period's start to a week after its end (what "acted on" looks at)."""
    by_decision: dict[str, list[dict[str, Any]]] = defaultdict(list)
    chunk = sorted(keys)
    for index in range(0, len(chunk), 500):
        (rows,) = store.read_many(
            "report",
            [
                select(
                    order_call.c.decision_key,
                    order_call.c.encounter_key,
                    order_call.c.decision_drafts,
                ).where(order_call.c.decision_key.in_(chunk[index : index + 500]))
            ],
        )
        for row in rows:
            by_decision[row["decision_key"]].append(row)
    encounters = sorted({c["encounter_key"] for calls in by_decision.values() for c in calls})
    signs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for index in range(0, len(encounters), 500):
        (rows,) = store.read_many(
            "report",
            [
                select(
                    order_call.c.encounter_key,
                    order_call.c.called_at,
                    order_call.c.draft_keys,
                    order_call.c.classes,
                ).where(
                    order_call.c.encounter_key.in_(encounters[index : index + 500]),
                    order_call.c.hook == "order-sign",
                    order_call.c.called_at >= start,
                    order_call.c.called_at < end + dt.timedelta(days=7),
                )
            ],
        )
        for row in rows:
            signs[row["encounter_key"]].append(row)
    return by_decision, signs


def _services() -> Sequence[Any]:
    from cds_service.hooks.services import SERVICES

    return SERVICES


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def assemble(
    context: ReportContext,
    period: Period,
    rule: str | None,
    day_rows: Sequence[Mapping[str, Any]],
    patient_rows: Sequence[Mapping[str, Any]],
    item_rows: Sequence[Mapping[str, Any]],
    call_rows: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The report object from the query results (pure: no database)."""
    Key = tuple[str, str]
    weeks = period.weeks()
    totals: dict[Key, Counter[str]] = defaultdict(Counter)
    by_week: dict[Key, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for row in day_rows:
        key = (row["rule_id"], row["service_id"])
        week = iso_week(_as_date(row["day"]))
        for name in ("cards", "covered", "silent", "accepted", "overridden"):
            value = int(row[name] or 0)
            totals[key][name] += value
            by_week[key][week][name] += value
    patient_count = {(r["rule_id"], r["service_id"]): int(r["patients"]) for r in patient_rows}
    reasons: dict[Key, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    suggestions: dict[Key, dict[str, set[tuple[str, str]]]] = defaultdict(lambda: defaultdict(set))
    for row in item_rows:
        key = (row["rule_id"], row["service_id"])
        card = row["card_uuid"]
        if row["outcome"] == "overridden" and not row["acc"]:
            code = row["override_reason"] or NO_REASON
            if code != NO_REASON and code not in context.reasons:
                code = OTHER_REASON
            reasons[key][code].add(card)
        elif row["outcome"] == "accepted":
            offered = {
                s.get("uuid"): s.get("label")
                for s in row["suggestions"] or []
                if isinstance(s, dict)
            }
            for suggestion_uuid in row["accepted_suggestions"] or []:
                if suggestion_uuid in offered:
                    label = offered[suggestion_uuid] or OTHER_SUGGESTION
                    suggestions[key][label].add((card, suggestion_uuid))
    service_calls = {
        r["service_id"]: (int(r["calls"] or 0), int(r["calls_with_cards"] or 0)) for r in call_rows
    }
    keys = [k for k in context.expected if not rule or k[0] == rule]
    keys += sorted(k for k in totals if k not in keys)
    rows = []
    for key in keys:
        rule_id, service_id = key
        count = totals.get(key, Counter())
        cards = count["cards"]
        calls = service_calls.get(service_id, (0, 0))[0]
        info = context.rules.get(rule_id)
        no_response = cards - count["accepted"] - count["overridden"]
        rows.append(
            {
                "rule": rule_id,
                "service": service_id,
                "mode": info.mode if info else "active",
                "enabled": info.enabled if info else None,
                "calls": calls,
                "cards": cards,
                "own_cards": cards - count["covered"],
                "covered_cards": count["covered"],
                "silent_cards": count["silent"],
                "cards_per_100_calls": round(100 * cards / calls, 2) if calls else None,
                "patients": patient_count.get(key, 0),
                "accepted": count["accepted"],
                "overridden": count["overridden"],
                "no_response": no_response,
                "accepted_share": _share(count["accepted"], cards),
                "overridden_share": _share(count["overridden"], cards),
                "no_response_share": _share(no_response, cards),
                "override_reasons": [
                    {"code": code, "display": _reason_display(context, code), "count": n}
                    for code, n in sorted(
                        ((c, len(s)) for c, s in reasons[key].items()),
                        key=lambda item: (-item[1], item[0]),
                    )
                ],
                "suggestions_accepted": [
                    {"label": label, "count": n}
                    for label, n in sorted(
                        ((lbl, len(s)) for lbl, s in suggestions[key].items()),
                        key=lambda item: (-item[1], item[0]),
                    )
                ],
                "weeks": [
                    {
                        "week": week,
                        "cards": by_week[key][week]["cards"],
                        "accepted": by_week[key][week]["accepted"],
                        "overridden": by_week[key][week]["overridden"],
                    }
                    for week in weeks
                ],
            }
        )
    return {
        "since": period.since.isoformat(),
        "until": period.until.isoformat(),
        "rule": rule,
        "services": [
            {"service": service, "calls": calls, "calls_with_cards": with_cards}
            for service, (calls, with_cards) in sorted(service_calls.items())
        ],
        "rules": rows,
    }


def _reason_display(context: ReportContext, code: str) -> str:
    if code == NO_REASON:
        return "No reason given"
    if code == OTHER_REASON:
        return "Other (a code outside the catalogue)"
    return context.reasons[code]
