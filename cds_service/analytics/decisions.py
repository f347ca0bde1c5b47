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
from dataclasses import dataclass
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


# Column positions of one firing (one row per (rule, decision), grouped in SQL, see
# analytics/report.py): rule, decision, context, first day, the last card's variant and
# prescriber key, 1 if all its cards were silent, 1 if any offered a suggestion, when its last
# card was issued, the least and greatest service of its cards (a firing spans at most the
# order-select and the order-sign service), and the least and greatest non-empty `covers` of
# its cards (the cards of one decision cover the same rules).
(
    F_RULE,
    F_DECISION,
    F_CONTEXT,
    F_DAY,
    F_VARIANT,
    F_PRESCRIBER,
    F_SILENT,
    F_SUGGESTS,
    F_LAST_ISSUED,
    F_SERVICE_MIN,
    F_SERVICE_MAX,
    F_COVERS_MIN,
    F_COVERS_MAX,
) = range(13)

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


@dataclass(frozen=True)
class DecisionRows:
    """The period's rows the decision figures are assembled from (analytics/report.py).

    firings: one tuple per (rule, decision) of every rule, columns F_*;
    answers: (rule, decision, id, outcome, outcome_timestamp, override_reason,
      accepted_suggestions, received_at, service, the card's suggestions) per feedback item on
      the period's cards;
    markers: (issued_at, card_uuid, kind, rule, from, to) where a version or digest changed;
    services: (service_id, shown cards, answered cards) per service; answered: the services
      whose cards got feedback in the period;
    decisions_seen: order decisions per UTC day of their first call (day, decisions,
      opioid_decisions); view_calls: patient-view calls per day (day, calls)."""

    firings: Sequence[Sequence[Any]]
    answers: Sequence[Sequence[Any]]
    answered: frozenset[str]
    markers: Sequence[Sequence[Any]]
    services: Sequence[Sequence[Any]]
    decisions_seen: Sequence[Mapping[str, Any]]
    view_calls: Sequence[Mapping[str, Any]]


def _answer_key(item: Sequence[Any]) -> tuple[dt.datetime, int]:
    """When an answer was given: its outcomeTimestamp, else when it arrived (then arrival)."""
    received = _when(item[7])
    text = str(item[4] or "").strip().replace("Z", "+00:00")
    try:
        stamp = _when(dt.datetime.fromisoformat(text)) if text else received
    except ValueError:
        stamp = received
    return stamp, int(item[2] or 0)


def _new_row(rule: str, context: str, mode: str) -> dict[str, Any]:
    return {
        "rule": rule,
        "context": context,
        "mode": mode,
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


def assemble_decisions(
    ctx: DecisionContext,
    rule_filter: str | None,
    data: DecisionRows,
    order_calls: OrderCalls,
) -> dict[str, Any]:
    """The decision figures from the period's firings (grouped per (rule, decision) in SQL),
    the feedback on their cards, the covering cards, the change markers and the denominators;
    `order_calls` is asked only for the accepted firings that could have been acted on."""
    weeks_of: dict[Any, str] = {}

    def week_of(day: Any) -> str:
        week = weeks_of.get(day)
        if week is None:
            week = weeks_of[day] = iso_week(_date(day))
        return week

    # denominators: order decisions evaluated and patient-view calls, per week
    denominators: dict[str, Counter[str]] = {
        CONTEXT_ORDER: Counter(),
        CONTEXT_CHART: Counter(),
        "all order decisions": Counter(),
    }
    for seen in data.decisions_seen:
        week = week_of(seen["day"])
        denominators["all order decisions"][week] += int(seen["decisions"] or 0)
        denominators[CONTEXT_ORDER][week] += int(seen["opioid_decisions"] or 0)
    for view in data.view_calls:
        denominators[CONTEXT_CHART][week_of(view["day"])] += int(view["calls"] or 0)

    # the last answer per firing (by outcomeTimestamp, then arrival)
    last_answer: dict[tuple[str, str], tuple[tuple[dt.datetime, int], Sequence[Any]]] = {}
    for item in data.answers:
        if rule_filter and item[0] != rule_filter:
            continue
        key = (item[0], item[1])
        when = _answer_key(item)
        known = last_answer.get(key)
        if known is None or when > known[0]:
            last_answer[key] = (when, item)

    covered: Counter[tuple[str, str]] = Counter()
    covered_seen: set[tuple[str, str, str]] = set()
    covers_seen: dict[Any, list[str]] = {}

    def covers_of(value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, str):
            return list(value)
        known = covers_seen.get(value)
        if known is None:
            known = covers_seen[value] = list(json.loads(value) or [])
        return known

    rows: dict[tuple[str, str], dict[str, Any]] = {}
    overall_firings: Counter[str] = Counter()
    overall_overrides: Counter[str] = Counter()
    no_response_total: Counter[str] = Counter()
    pending: list[tuple[dict[str, Any], str, str, dt.datetime, set[tuple[bool, str | None]]]] = []

    def row_for(rule: str, context: str) -> dict[str, Any]:
        row = rows.get((rule, context))
        if row is None:
            row = rows[(rule, context)] = _new_row(rule, context, ctx.modes.get(rule, "active"))
        return row

    for rule, contexts in ctx.rule_contexts.items():
        if not rule_filter or rule == rule_filter:
            for context in contexts:
                row_for(rule, context)
    answered = data.answered
    for firing in data.firings:
        rule, decision = firing[F_RULE], firing[F_DECISION]
        if firing[F_COVERS_MIN] is not None:
            context = firing[F_CONTEXT]
            for other in (*covers_of(firing[F_COVERS_MIN]), *covers_of(firing[F_COVERS_MAX])):
                if (other, context, decision) not in covered_seen:
                    covered_seen.add((other, context, decision))
                    covered[(other, context)] += 1
        if rule_filter and rule != rule_filter:
            continue
        row = row_for(rule, firing[F_CONTEXT])
        variant = firing[F_VARIANT] or "unrecorded"
        per_variant = row["_variants"][variant]
        row["firings"] += 1
        per_variant["firings"] += 1
        row["_weeks"][week_of(firing[F_DAY])] += 1
        prescriber = firing[F_PRESCRIBER]
        if prescriber:
            row["_prescribers"][prescriber] += 1
            overall_firings[prescriber] += 1
        else:
            row["_unknown_prescriber"] += 1
        if firing[F_SILENT]:
            row["silent"] += 1
            per_variant["silent"] += 1
            continue
        row["shown"] += 1
        per_variant["shown"] += 1
        if firing[F_SUGGESTS]:
            row["_suggests"] = True
        known = last_answer.get((rule, decision))
        if known is None:
            fed = firing[F_SERVICE_MIN] in answered or firing[F_SERVICE_MAX] in answered
            reason = "not_answered" if fed else "no_feedback_from_ehr"
            row["no_response"] += 1
            row[reason] += 1
            per_variant["no_response"] += 1
            no_response_total[reason] += 1
            continue
        answer = known[1]
        if answer[3] == "accepted":
            row["accepted"] += 1
            per_variant["accepted"] += 1
            accepted = answer[6]
            if isinstance(accepted, str):
                accepted = json.loads(accepted)
            if accepted and not decision.startswith("card:"):
                evidence = _evidence(answer[9], accepted)
                if evidence:
                    after = _when(firing[F_LAST_ISSUED])
                    pending.append((row, variant, decision, after, evidence))
        else:
            row["overridden"] += 1
            per_variant["overridden"] += 1
            code = answer[5] or "none"
            if code != "none" and code not in ctx.reasons:
                code = "other"
            klass = ctx.reason_classes.get(code, UNCLASSIFIED)
            row["_reasons"][code] += 1
            row["_classes"][klass] += 1
            if klass == NOT_APPLICABLE:
                row["should_not_have_fired"] += 1
                per_variant["should_not_have_fired"] += 1
            if prescriber:
                row["_overrides_by"][prescriber] += 1
                overall_overrides[prescriber] += 1
    if pending:
        decision_calls, signs = order_calls({p[2] for p in pending})
        for row, variant, decision, after, evidence in pending:
            if _acted_on(decision, after, evidence, decision_calls, signs):
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
                str(service) for service, shown, answered in data.services if shown and not answered
            ),
        },
        "concentration": {
            "firings": top_share(overall_firings),
            "overrides": top_share(overall_overrides),
        },
        "markers": [
            _marker(_when(at), kind, rule, old, new)
            for at, _uuid, kind, rule, old, new in data.markers
        ],
    }


def _evidence(suggestions: Any, accepted: Sequence[str]) -> set[tuple[bool, str | None]]:
    """What a later order-sign would have to show for the accepted suggestions (of the
    answered card: feedback names the suggestions of the card it answers)."""
    if isinstance(suggestions, str):
        suggestions = json.loads(suggestions)
    wanted = set(accepted)
    keys = {
        s.get("key") for s in suggestions or [] if isinstance(s, dict) and s.get("uuid") in wanted
    }
    return {ACTED_ON_EVIDENCE[k] for k in keys if isinstance(k, str) and k in ACTED_ON_EVIDENCE}


def _acted_on(
    decision: str,
    after: dt.datetime,
    evidence: set[tuple[bool, str | None]],
    decision_calls: Mapping[str, Sequence[Mapping[str, Any]]],
    signs: Mapping[str, Sequence[Mapping[str, Any]]],
) -> bool:
    """A later order-sign in the encounter shows what the accepted suggestion asked for."""
    calls = decision_calls.get(decision, ())
    if not calls:
        return False
    encounter = calls[0]["encounter_key"]
    drafts = {d for call in calls for d in call["decision_drafts"] or []}
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
