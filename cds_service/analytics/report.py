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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Date, and_, case, cast, distinct, func, literal_column, select

from cds_service.store.db import Store
from cds_service.store.schema import card_rule, feedback, hook_call_count, issued_card

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


EARLIEST = dt.date(1900, 1, 1)
LATEST = dt.date(9000, 12, 31)  # far from date.max, so a period's arithmetic cannot overflow


def _date(value: str, name: str) -> dt.date:
    try:
        day = dt.date.fromisoformat(value.strip())
    except ValueError:
        raise ReportError(f"{name}: not a date (YYYY-MM-DD)") from None
    if not EARLIEST <= day <= LATEST:
        raise ReportError(f"{name}: out of range ({EARLIEST} to {LATEST})")
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

    def rule_ids(self) -> list[str]:
        return list(dict.fromkeys([rule for rule, _ in self.expected] + sorted(self.rules)))


def reason_catalogue(cards_directory: Path) -> dict[str, str]:
    data = json.loads((cards_directory / "override-reasons.json").read_text("utf-8"))
    reasons: dict[str, str] = data["reasons"]
    return dict(reasons)


def context_for(
    rules: Iterable[Any], settings_rules: Mapping[str, Any], cards_directory: Path | None = None
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
    return ReportContext(expected, info, reason_catalogue(cards_directory or cards_dir()))


def _day(dialect: str) -> Any:
    """The UTC day a card was issued, as SQL (a date on PostgreSQL, 'YYYY-MM-DD' on SQLite)."""
    if dialect == "postgresql":
        return cast(func.timezone(literal_column("'UTC'"), issued_card.c.issued_at), Date)
    return func.date(issued_card.c.issued_at)


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
    day_rows, patient_rows, item_rows, call_rows = store.read_many(
        "report", [per_day, patients, items, calls]
    )
    return assemble(context, period, rule, day_rows, patient_rows, item_rows, call_rows)


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
