"""Governance per ordering decision: which rule to tune or retire (docs/governance.md).

Counting rules:
- The unit is the decision. On order hooks it is the draft order(s) in one encounter that the
  advice is about (the card log's `decision_key`): a rule's cards on order-select and on
  order-sign of the same draft are one firing. On patient-view, and for cards logged before
  decision keys existed, each card is its own decision.
- A decision is attributed to the rule whose card was shown; the rules that card covers
  ("say it once") count it in `covered`, never in their own outcomes.
- The outcome of a firing is the last answer the EHR sent for any of its cards (by
  outcomeTimestamp, then arrival): accepted, overridden, or no response. A silent rule's
  firings are would-be figures: never shown, so never answered.
- No response is split: `no_feedback_from_ehr` when the EHR sent no feedback at all for that
  service's cards in the period (it does not implement feedback), else `not_answered`.
- Acted on: an accepted firing whose accepted suggestion a later order-sign in the same
  encounter shows (the draft gone for a removal, a draft of the suggested class for an
  order). A lower bound: without a later order-sign nothing can be seen.
- Firings per 100 decisions: order rules over the opioid order decisions evaluated (distinct
  decision keys with an opioid draft); patient-view rules over the patient-view calls.
- Concentration: per pseudonymous prescriber key, the share of firings (and of overrides)
  that come from the top 10 % of prescribers (at least one prescriber).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NOT_APPLICABLE = "not-applicable"
UNCLASSIFIED = "unclassified"
CONTEXT_ORDER = "ordering"
CONTEXT_CHART = "chart review"
TOP_SHARE = 0.10
# What a later order-sign must show for an accepted suggestion to count as acted on:
# (the decision's drafts gone, a draft of this drug class present)
ACTED_ON_EVIDENCE: Mapping[str, tuple[bool, str | None]] = {
    "remove-draft": (True, None),
    "naloxone": (False, "naloxone-rescue"),
    "replace-with-naproxen": (True, "nsaid"),
}
TREND_MIN_WEEKS = 2  # weeks with data before a week is compared
TREND_LOOKBACK = 4
TREND_POINTS = 5.0  # a change of at least this many firings per 100 decisions ...
TREND_RELATIVE = 0.5  # ... and of at least half the previous weeks' mean is flagged


def iso_week(day: dt.date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def _when(value: Any) -> dt.datetime:
    """A timestamp as a naive UTC datetime (SQLite returns naive UTC, PostgreSQL aware)."""
    stamp: dt.datetime = (
        value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    )
    if stamp.tzinfo is None:
        return stamp
    return stamp.astimezone(dt.UTC).replace(tzinfo=None)


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])


def _answer_time(item: Mapping[str, Any]) -> tuple[dt.datetime, int]:
    """When an answer was given: its outcomeTimestamp, else when it arrived."""
    received = _when(item["received_at"])
    text = str(item.get("outcome_timestamp") or "").strip().replace("Z", "+00:00")
    try:
        stamp = _when(dt.datetime.fromisoformat(text)) if text else received
    except ValueError:
        stamp = received
    return stamp, int(item.get("id") or 0)


def pct(part: int, whole: int) -> float | None:
    """A percentage with one decimal, None without a denominator."""
    return round(100 * part / whole, 1) if whole else None


def top_share(counts: Mapping[str, int], share: float = TOP_SHARE) -> dict[str, Any]:
    """The part of the total that the top `share` of keys hold (at least one key)."""
    values = sorted(counts.values(), reverse=True)
    total = sum(values)
    top = max(1, math.ceil(share * len(values))) if values else 0
    return {
        "prescribers": len(values),
        "top_prescribers": top,
        "total": total,
        "top_total": sum(values[:top]),
        "top_share_pct": pct(sum(values[:top]), total),
    }


@dataclass
class _Firing:
    """One (rule, decision): the rule's own cards for it."""

    rule: str
    context: str
    decision: str
    cards: list[Mapping[str, Any]] = field(default_factory=list)
    times: list[dt.datetime] = field(default_factory=list)  # issued_at of each card

    def last(self) -> Mapping[str, Any]:
        index = max(
            range(len(self.cards)), key=lambda i: (self.times[i], self.cards[i]["card_uuid"])
        )
        return self.cards[index]

    @property
    def silent(self) -> bool:
        return all(c["silent"] for c in self.cards)


# decision keys -> (order calls per decision key, order-sign calls per encounter key)
OrderCalls = Callable[
    [set[str]],
    tuple[Mapping[str, Sequence[Mapping[str, Any]]], Mapping[str, Sequence[Mapping[str, Any]]]],
]


@dataclass(frozen=True)
class DecisionContext:
    """What the decision figures need besides the database (built once)."""

    modes: Mapping[str, str]  # rule -> active | silent
    rule_contexts: Mapping[str, tuple[str, ...]]  # rule -> ordering / chart review
    reasons: Mapping[str, str]  # code -> display
    reason_classes: Mapping[str, str]  # code -> class
    class_titles: Mapping[str, str]


def assemble_decisions(
    ctx: DecisionContext,
    since: dt.date,
    until: dt.date,
    rule_filter: str | None,
    cards: Sequence[Mapping[str, Any]],
    answers: Sequence[Mapping[str, Any]],
    decisions_seen: Sequence[Mapping[str, Any]],
    view_calls: Sequence[Mapping[str, Any]],
    order_calls: OrderCalls,
) -> dict[str, Any]:
    """The decision figures from the period's cards and their feedback; the order decisions
    evaluated per UTC day of their first call in the period (day, decisions,
    opioid_decisions); patient-view calls per day; and `order_calls`: the order calls of given
    decisions and the later order-signs of their encounters, asked only for accepted firings
    that could have been acted on."""
    # denominators: order decisions evaluated and patient-view calls, per week
    denominators: dict[str, Counter[str]] = {
        CONTEXT_ORDER: Counter(),
        CONTEXT_CHART: Counter(),
        "all order decisions": Counter(),
    }
    for row in decisions_seen:
        week = iso_week(_date(row["day"]))
        denominators["all order decisions"][week] += int(row["decisions"] or 0)
        denominators[CONTEXT_ORDER][week] += int(row["opioid_decisions"] or 0)
    for row in view_calls:
        denominators[CONTEXT_CHART][iso_week(_date(row["day"]))] += int(row["calls"] or 0)

    # answers per card, oldest first
    by_card: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for item in answers:
        by_card[item["card_uuid"]].append(item)
    answered_services = {card["service_id"] for card in cards if by_card.get(card["card_uuid"])}

    firings: dict[tuple[str, str], _Firing] = {}
    covered: Counter[tuple[str, str]] = Counter()
    covered_seen: set[tuple[str, str, str]] = set()
    pending: list[tuple[dict[str, Any], str, _Firing, set[tuple[bool, str | None]]]] = []
    for card in cards:
        context = CONTEXT_ORDER if card["decision_key"] else CONTEXT_CHART
        if card["hook"] in ("order-select", "order-sign"):
            context = CONTEXT_ORDER
        decision = card["decision_key"] or f"card:{card['card_uuid']}"
        key = (card["rule_id"], decision)
        firing = firings.setdefault(key, _Firing(card["rule_id"], context, decision))
        firing.cards.append(card)
        firing.times.append(_when(card["issued_at"]))
        for rule in card["covers"] or []:
            if (rule, context, decision) not in covered_seen:
                covered_seen.add((rule, context, decision))
                covered[(rule, context)] += 1

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    markers = _markers(
        [
            (t, c)
            for firing in firings.values()
            for t, c in zip(firing.times, firing.cards, strict=True)
        ]
    )
    overall_firings: Counter[str] = Counter()
    overall_overrides: Counter[str] = Counter()
    no_response_total: Counter[str] = Counter()

    def row_for(rule: str, context: str) -> dict[str, Any]:
        if (rule, context) not in rows:
            rows[(rule, context)] = {
                "rule": rule,
                "context": context,
                "mode": ctx.modes.get(rule, "active"),
                "firings": 0,
                "shown": 0,
                "silent": 0,
                "covered": 0,
                "accepted": 0,
                "acted_on": 0,
                "overridden": 0,
                "should_not_have_fired": 0,
                "no_response": 0,
                "no_feedback_from_ehr": 0,
                "not_answered": 0,
                "_variants": defaultdict(Counter),
                "_reasons": Counter(),
                "_classes": Counter(),
                "_weeks": Counter(),
                "_prescribers": Counter(),
                "_overrides_by": Counter(),
                "_unknown_prescriber": 0,
                "_suggests": False,
            }
        return rows[(rule, context)]

    for rule, contexts in ctx.rule_contexts.items():
        if not rule_filter or rule == rule_filter:
            for context in contexts:
                row_for(rule, context)
    for firing in firings.values():
        if rule_filter and firing.rule != rule_filter:
            continue
        row = row_for(firing.rule, firing.context)
        last = firing.last()
        variant = last["variant"] or "unrecorded"
        row["firings"] += 1
        row["_variants"][variant]["firings"] += 1
        first = min(firing.times)
        row["_weeks"][iso_week(first.date())] += 1
        prescriber = last["prescriber_key"]
        if prescriber:
            row["_prescribers"][prescriber] += 1
            overall_firings[prescriber] += 1
        else:
            row["_unknown_prescriber"] += 1
        if firing.silent:
            row["silent"] += 1
            row["_variants"][variant]["silent"] += 1
            continue
        row["shown"] += 1
        row["_variants"][variant]["shown"] += 1
        row["_suggests"] |= any(c["suggestions"] for c in firing.cards)
        items = sorted(
            (i for c in firing.cards for i in by_card.get(c["card_uuid"], [])), key=_answer_time
        )
        if not items:
            reason = (
                "not_answered"
                if any(c["service_id"] in answered_services for c in firing.cards)
                else "no_feedback_from_ehr"
            )
            row["no_response"] += 1
            row[reason] += 1
            row["_variants"][variant]["no_response"] += 1
            no_response_total[reason] += 1
            continue
        answer = items[-1]
        if answer["outcome"] == "accepted":
            row["accepted"] += 1
            row["_variants"][variant]["accepted"] += 1
            evidence = _evidence(firing, answer)
            if evidence and not firing.decision.startswith("card:"):
                pending.append((row, variant, firing, evidence))
        else:
            row["overridden"] += 1
            row["_variants"][variant]["overridden"] += 1
            code = answer["override_reason"] or "none"
            if code != "none" and code not in ctx.reasons:
                code = "other"
            klass = ctx.reason_classes.get(code, UNCLASSIFIED)
            row["_reasons"][code] += 1
            row["_classes"][klass] += 1
            if klass == NOT_APPLICABLE:
                row["should_not_have_fired"] += 1
                row["_variants"][variant]["should_not_have_fired"] += 1
            if prescriber:
                row["_overrides_by"][prescriber] += 1
                overall_overrides[prescriber] += 1
    if pending:
        decision_calls, signs = order_calls({f.decision for _, _, f, _ in pending})
        for row, variant, firing, evidence in pending:
            if _acted_on(firing, evidence, decision_calls, signs):
                row["acted_on"] += 1
                row["_variants"][variant]["acted_on"] += 1
    for (rule, context), count in covered.items():
        if not rule_filter or rule == rule_filter:
            row_for(rule, context)["covered"] += count

    weeks_with_data = sorted(
        {w for counter in denominators.values() for w in counter}
        | {w for row in rows.values() for w in row["_weeks"]}
    )
    out_rows = [
        _finish(row, ctx, denominators[row["context"]], weeks_with_data)
        for row in sorted(
            rows.values(),
            key=lambda r: (r["mode"] != "active", -r["firings"], r["rule"], r["context"]),
        )
    ]
    return {
        "unit": "decision",
        "denominators": {
            "opioid_order_decisions": sum(denominators[CONTEXT_ORDER].values()),
            "order_decisions": sum(denominators["all order decisions"].values()),
            "chart_reviews": sum(denominators[CONTEXT_CHART].values()),
        },
        "weeks": weeks_with_data,
        "rules": out_rows,
        "no_response": {
            "no_feedback_from_ehr": no_response_total["no_feedback_from_ehr"],
            "not_answered": no_response_total["not_answered"],
            "services_without_feedback": sorted(
                {c["service_id"] for c in cards if not c["silent"]} - answered_services
            ),
        },
        "concentration": {
            "firings": top_share(overall_firings),
            "overrides": top_share(overall_overrides),
        },
        "markers": markers,
    }


def _evidence(firing: _Firing, answer: Mapping[str, Any]) -> set[tuple[bool, str | None]]:
    """What a later order-sign would have to show for the accepted suggestions."""
    accepted = set(answer.get("accepted_suggestions") or [])
    keys = {
        s.get("key")
        for c in firing.cards
        for s in c["suggestions"] or []
        if isinstance(s, dict) and s.get("uuid") in accepted
    }
    return {ACTED_ON_EVIDENCE[k] for k in keys if isinstance(k, str) and k in ACTED_ON_EVIDENCE}


def _acted_on(
    firing: _Firing,
    evidence: set[tuple[bool, str | None]],
    decision_calls: Mapping[str, Sequence[Mapping[str, Any]]],
    signs: Mapping[str, Sequence[Mapping[str, Any]]],
) -> bool:
    """A later order-sign in the encounter shows what the accepted suggestion asked for."""
    calls = decision_calls.get(firing.decision, ())
    if not calls:
        return False
    encounter = calls[0]["encounter_key"]
    drafts = {d for call in calls for d in call["decision_drafts"] or []}
    after = max(firing.times)
    later_signs = [call for call in signs.get(encounter, ()) if _when(call["called_at"]) > after]
    for removal, drug_class in evidence:
        for call in later_signs:
            gone = not removal or not drafts & set(call["draft_keys"] or [])
            present = drug_class is None or drug_class in (call["classes"] or [])
            if gone and present:
                return True
    return False


def _trend(series: Sequence[Mapping[str, Any]]) -> str:
    """The last week with data against the weeks before it (see _flag)."""
    if not series:
        return "none"
    return str(series[-1]["change"]) if series[-1]["change"] else "steady"


def _flag_changes(series: list[dict[str, Any]]) -> None:
    for index, point in enumerate(series):
        previous = [p["rate"] for p in series[max(0, index - TREND_LOOKBACK) : index]]
        previous = [p for p in previous if p is not None]
        point["change"] = None
        if len(previous) < TREND_MIN_WEEKS or point["rate"] is None:
            point["baseline"] = None
            continue
        base = sum(previous) / len(previous)
        point["baseline"] = round(base, 1)
        if abs(point["rate"] - base) >= max(TREND_POINTS, TREND_RELATIVE * base):
            point["change"] = "up" if point["rate"] > base else "down"


def _finish(
    row: dict[str, Any],
    ctx: DecisionContext,
    denominator: Mapping[str, int],
    weeks: Sequence[str],
) -> dict[str, Any]:
    total = sum(denominator.values())
    shown = row["shown"]
    series: list[dict[str, Any]] = []
    for week in weeks:
        if not denominator.get(week) and not row["_weeks"].get(week):
            continue
        series.append(
            {
                "week": week,
                "firings": row["_weeks"].get(week, 0),
                "decisions": denominator.get(week, 0),
                "rate": (
                    round(100 * row["_weeks"].get(week, 0) / denominator[week], 1)
                    if denominator.get(week)
                    else None
                ),
            }
        )
    _flag_changes(series)
    variants = [
        {
            "variant": variant,
            "firings": v["firings"],
            "shown": v["shown"],
            "silent": v["silent"],
            "accepted": v["accepted"],
            "acted_on": v["acted_on"],
            "overridden": v["overridden"],
            "should_not_have_fired": v["should_not_have_fired"],
            "no_response": v["no_response"],
            "accepted_pct": pct(v["accepted"], v["shown"]),
            "overridden_pct": pct(v["overridden"], v["shown"]),
        }
        for variant, v in sorted(row["_variants"].items(), key=lambda i: (-i[1]["firings"], i[0]))
    ]
    return {
        "rule": row["rule"],
        "context": row["context"],
        "mode": row["mode"],
        "decisions": total,
        "firings": row["firings"],
        "firings_per_100": pct(row["firings"], total),
        "shown": shown,
        "silent": row["silent"],
        "covered": row["covered"],
        "accepted": row["accepted"],
        "acted_on": row["acted_on"],
        "overridden": row["overridden"],
        "should_not_have_fired": row["should_not_have_fired"],
        "no_response": row["no_response"],
        "no_feedback_from_ehr": row["no_feedback_from_ehr"],
        "not_answered": row["not_answered"],
        # an information card without suggestions has nothing to accept: no percentage
        "offers_suggestions": row["_suggests"],
        "accepted_pct": pct(row["accepted"], shown) if row["_suggests"] else None,
        "acted_on_pct": pct(row["acted_on"], shown) if row["_suggests"] else None,
        "overridden_pct": pct(row["overridden"], shown),
        "should_not_have_fired_pct": pct(row["should_not_have_fired"], shown),
        "no_response_pct": pct(row["no_response"], shown),
        "trend": _trend(series),
        "variants": variants,
        "reasons": [
            {
                "code": code,
                "display": _display(ctx, code),
                "class": ctx.reason_classes.get(code, UNCLASSIFIED),
                "count": n,
            }
            for code, n in sorted(row["_reasons"].items(), key=lambda i: (-i[1], i[0]))
        ],
        "reason_classes": [
            {
                "class": klass,
                "title": ctx.class_titles.get(klass, "Unclassified (no or unknown code)"),
                "count": row["_classes"].get(klass, 0),
            }
            for klass in (*ctx.class_titles, UNCLASSIFIED)
        ],
        "weekly": series,
        "concentration": {
            "firings": top_share(row["_prescribers"]),
            "overrides": top_share(row["_overrides_by"]),
            "firings_without_prescriber": row["_unknown_prescriber"],
        },
    }


def _display(ctx: DecisionContext, code: str) -> str:
    if code == "none":
        return "No reason given"
    if code == "other":
        return "Other (a code outside the catalogue)"
    return ctx.reasons.get(code, code)


def _markers(cards: Sequence[tuple[dt.datetime, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Where the knowledge version or a rule's settings changed, in issue order."""
    ordered = sorted(cards, key=lambda item: (item[0], item[1]["card_uuid"]))
    markers: list[dict[str, Any]] = []
    knowledge: str | None = None
    settings: dict[str, str] = {}
    for at, card in ordered:
        version = card["knowledge_version"]
        if version:
            if knowledge is not None and version != knowledge:
                markers.append(_marker(at, "knowledge", None, knowledge, version))
            knowledge = version
        digest = card["settings_digest"]
        if digest:
            rule = card["rule_id"]
            if rule in settings and settings[rule] != digest:
                markers.append(_marker(at, "settings", rule, settings[rule], digest))
            settings[rule] = digest
    return markers


def _marker(at: dt.datetime, kind: str, rule: str | None, old: str, new: str) -> dict[str, Any]:
    return {
        "date": at.date().isoformat(),
        "week": iso_week(at.date()),
        "kind": kind,
        "rule": rule,
        "from": old,
        "to": new,
    }


class BacktestError(ValueError):
    """A backtest folder cannot be read; the message says why (never a traceback)."""


def load_backtest(folder: Path) -> dict[str, Any]:
    """summary.json of a backtest run folder (`cds-service report --format json` of the
    replayed traffic plus "source": "backtest")."""
    path = folder / "summary.json" if folder.is_dir() else folder
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise BacktestError(f"{path.name}: cannot be read ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("source") != "backtest":
        raise BacktestError(f'{path.name}: not a backtest summary (no "source": "backtest")')
    rules = (data.get("decisions") or {}).get("rules")
    if not isinstance(rules, list):
        raise BacktestError(f"{path.name}: holds no per-decision figures")
    return data


def beside(report: Mapping[str, Any], summary: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Backtest figures beside the live ones, per (rule, context)."""
    theirs = {
        (r.get("rule"), r.get("context")): r
        for r in summary["decisions"]["rules"]
        if isinstance(r, dict)
    }
    live = {(r["rule"], r["context"]): r for r in report["decisions"]["rules"]}
    out = []
    for key in list(live) + [k for k in theirs if k not in live]:
        mine, other = live.get(key), theirs.get(key)
        out.append(
            {
                "rule": str(key[0]),
                "context": str(key[1]),
                "live_firings": mine["firings"] if mine else 0,
                "live_per_100": mine["firings_per_100"] if mine else None,
                "backtest_firings": _number(other, "firings"),
                "backtest_per_100": _number(other, "firings_per_100"),
                "backtest_overridden_pct": _number(other, "overridden_pct"),
            }
        )
    return {
        "folder": name,
        "since": summary.get("since"),
        "until": summary.get("until"),
        "rules": out,
    }


def _number(row: Mapping[str, Any] | None, name: str) -> Any:
    value = row.get(name) if row else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def backtest_folders(roots: Sequence[Path]) -> list[Path]:
    """Run folders (holding a summary.json) directly under each root, newest name first."""
    found: list[Path] = []
    for root in roots:
        try:
            found += [p for p in root.iterdir() if (p / "summary.json").is_file()]
        except OSError:
            continue
    return sorted(found, key=lambda p: p.name, reverse=True)
