"""GET /analytics: the governance dashboard (read-only, aggregate and pseudonymous figures).

Access is its own, never the EHR's JWT (views.authenticate skips this blueprint): with no
CDS_ANALYTICS_TOKEN only loopback callers are answered (anyone else gets the same 404 as an
unknown path); with a token every caller, loopback included, must present it as the password
of HTTP Basic authentication (the browser asks for it) or as a Bearer token, compared in
constant time. The page is server-rendered HTML with inline SVG charts, one stylesheet and one
small script shipped in the package (no CDN); its tables work with JavaScript disabled.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, current_app, render_template, request, url_for

from cds_service.analytics import charts
from cds_service.analytics.decisions import (
    BacktestError,
    backtest_folders,
    beside,
    load_backtest,
)
from cds_service.analytics.report import (
    Period,
    ReportContext,
    ReportError,
    build_report,
    context_for,
)
from cds_service.analytics.tables import (
    DECISION_TABLE_NAMES,
    TABLE_NAMES,
    Table,
    decision_tables,
    tables,
    to_csv,
    to_json,
)
from cds_service.config import Config, default_data_dir
from cds_service.errors import CdsError
from cds_service.net import client_address, host_name
from cds_service.store import Store, StoreUnavailable

analytics_bp = Blueprint(
    "analytics",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/analytics/static",
)

_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; "
        "img-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
COLUMN_TITLES = {
    "rule": "Rule",
    "service": "Service",
    "mode": "Mode",
    "calls": "Hook calls",
    "cards": "Cards",
    "own_cards": "Own cards",
    "covered_cards": "Shown in another rule's card",
    "silent_cards": "Silent (not shown)",
    "cards_per_100_calls": "Cards per 100 calls",
    "patients": "Patients",
    "accepted": "Accepted",
    "overridden": "Overridden",
    "no_response": "No response",
    "accepted_share": "Accepted %",
    "overridden_share": "Overridden %",
    "no_response_share": "No response %",
    "code": "Code",
    "display": "Reason",
    "count": "Count",
    "label": "Suggestion",
    "week": "ISO week",
    "context": "Where",
    "decisions": "Decisions",
    "firings": "Fired",
    "firings_per_100": "Firings per 100 decisions",
    "accepted_pct": "Accepted %",
    "acted_on_pct": "Acted on %",
    "overridden_pct": "Overridden %",
    "should_not_have_fired_pct": "Should not have fired %",
    "no_response_pct": "No response %",
    "covered": "Answered by another rule's card",
    "trend": "Trend",
    "variant": "Variant",
    "acted_on": "Acted on",
    "should_not_have_fired": "Should not have fired",
    "class": "Class",
    "per_100": "Per 100",
    "change": "Change",
}
ALL_TABLES = TABLE_NAMES + DECISION_TABLE_NAMES


def install(app: Flask, rules: tuple[Any, ...], settings_rules: Any) -> None:
    """Register the blueprint with its report context (rules and modes), built once."""
    knowledge = app.extensions.get("cds_knowledge")
    app.extensions["cds_report_context"] = context_for(
        rules, settings_rules, knowledge_version=knowledge.version if knowledge else None
    )
    app.extensions["cds_analytics_hosts"] = allowed_hosts(app.config["CDS_CONFIG"])
    app.register_blueprint(analytics_bp)


def _loopback() -> bool:
    address = client_address(request.remote_addr)
    return address is not None and address.is_loopback


def _presented_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def allowed_hosts(config: Config) -> frozenset[str] | None:
    """The Host names /analytics answers to (and, with CDS_AUTH=off, discovery, hooks and
    feedback: http/views.py): CDS_ANALYTICS_HOSTS (loopback names by default) and the host
    of CDS_PUBLIC_BASE_URL; None when "*" is listed (any host)."""
    if "*" in config.analytics_hosts:
        return None
    names = {host_name(name) for name in config.analytics_hosts}
    if config.public_base_url:
        names.add(host_name(urlsplit(config.public_base_url).netloc.rpartition("@")[2]))
    return frozenset(names)


@analytics_bp.before_request
def restrict() -> None:
    config: Config = current_app.config["CDS_CONFIG"]
    hosts: frozenset[str] | None = current_app.extensions["cds_analytics_hosts"]
    if hosts is not None and host_name(request.host) not in hosts:
        # A page served from another name (DNS rebinding onto loopback) must not read this.
        raise CdsError(404, "Not found: the services are listed at GET /cds-services")
    if config.analytics_token:
        presented = _presented_token()
        if presented is None or not hmac.compare_digest(
            presented.encode("utf-8"), config.analytics_token.encode("utf-8")
        ):
            raise CdsError(
                401,
                "The analytics page needs the administrator's token",
                headers={
                    "WWW-Authenticate": 'Basic realm="cds-analytics", charset="UTF-8"',
                    "Cache-Control": "no-store",
                },
            )
    elif not _loopback():
        raise CdsError(404, "Not found: the services are listed at GET /cds-services")


@analytics_bp.after_request
def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _filters() -> tuple[Period, str | None]:
    today = dt.datetime.now(dt.UTC).date()
    period = Period.parse(
        request.args.get("since") or None, request.args.get("until") or None, today
    )
    rule = (request.args.get("rule") or "").strip() or None
    if rule is not None and not _RULE_ID.match(rule):
        raise ReportError("rule: not a rule id")
    return period, rule


def _backtest_roots() -> list[Path]:
    config: Config = current_app.config["CDS_CONFIG"]
    roots = [Path(config.data_dir or default_data_dir()) / "backtests"]
    if config.backtests_dir:
        roots.append(Path(config.backtests_dir))
    return roots


def _backtest_choice() -> Path | None:
    """The backtest run picked by name (never a path from the request)."""
    name = (request.args.get("backtest") or "").strip()
    if not name:
        return None
    for folder in backtest_folders(_backtest_roots()):
        if folder.name == name:
            return folder
    raise ReportError("backtest: no such run folder")


def _report(period: Period, rule: str | None) -> dict[str, Any]:
    store: Store = current_app.extensions["cds_store"]
    context: ReportContext = current_app.extensions["cds_report_context"]
    folder = _backtest_choice()
    try:
        report = build_report(store, context, period, rule)
    except StoreUnavailable:
        raise CdsError(
            503,
            "The analytics database is unreachable; try again shortly",
            headers={"Retry-After": "5"},
        ) from None
    if folder is not None:
        try:
            report["backtest"] = beside(report, load_backtest(folder), folder.name)
        except BacktestError as exc:
            raise ReportError(f"backtest: {exc}") from None
    return report


def _error_page(message: str) -> tuple[str, int]:
    context: ReportContext = current_app.extensions["cds_report_context"]
    return render_template(
        "analytics/page.html",
        error=message,
        args=request.args,
        rule_ids=context.rule_ids(),
        backtests=[f.name for f in backtest_folders(_backtest_roots())],
        titles=COLUMN_TITLES,
        report=None,
    ), 400


def _page_data(template: str) -> Response | tuple[str, int]:
    context: ReportContext = current_app.extensions["cds_report_context"]
    try:
        period, rule = _filters()
        report = _report(period, rule)
    except ReportError as exc:
        return _error_page(str(exc))
    query = {"since": report["since"], "until": report["until"]}
    if rule:
        query["rule"] = rule
    if report.get("backtest"):
        query["backtest"] = report["backtest"]["folder"]
    weeks = [w["week"] for w in report["rules"][0]["weeks"]] if report["rules"] else []
    decision_rows = report["decisions"]["rules"]
    markers = report["decisions"]["markers"]
    details = [
        {
            "row": row,
            "anchor": f"rule-{index}",
            "reasons_chart": charts.rule_reasons(row, f"chart-reasons-{index}"),
            "rate_chart": charts.firing_rate(row, markers, f"chart-rate-{index}"),
        }
        for index, row in enumerate(decision_rows)
    ]
    html = render_template(
        template,
        error=None,
        report=report,
        rule=rule,
        args=query,
        rule_ids=context.rule_ids(),
        backtests=[f.name for f in backtest_folders(_backtest_roots())],
        titles=COLUMN_TITLES,
        tables={**tables(report), **decision_tables(report)},
        table_names=TABLE_NAMES,
        downloads={
            name: {
                fmt: url_for("analytics.download", name=name, fmt=fmt, **query)
                for fmt in ("csv", "json")
            }
            for name in ALL_TABLES
        },
        report_json=url_for("analytics.download", name="report", fmt="json", **query),
        print_url=url_for("analytics.printable", **query),
        totals=_totals(report),
        decisions=report["decisions"],
        details=details,
        decision_chart=charts.decision_outcomes(decision_rows),
        weekly_chart=charts.weekly_cards(report["rules"], weeks),
    )
    return Response(html, mimetype="text/html")


@analytics_bp.get("/analytics")
def page() -> Response | tuple[str, int]:
    return _page_data("analytics/page.html")


@analytics_bp.get("/analytics/print")
def printable() -> Response | tuple[str, int]:
    """One printable page per period for the committee (the browser prints it, or saves
    it as PDF): the decision table, the explanations, the markers and the outcome chart."""
    return _page_data("analytics/print.html")


def _totals(report: dict[str, Any]) -> dict[str, Any]:
    """Headline figures. All rules: each card once (its own rule's row); one rule: the
    cards that carried its concern, covered ones included."""
    rows = report["rules"]
    return {
        "calls": sum(s["calls"] for s in report["services"]),
        "cards": sum(r["cards"] if report["rule"] else r["own_cards"] for r in rows),
        "silent_rules": sorted({r["rule"] for r in rows if r["mode"] == "silent"}),
    }


@analytics_bp.get("/analytics/<name>.<fmt>")
def download(name: str, fmt: str) -> Response:
    if fmt not in {"csv", "json"} or (
        name not in ALL_TABLES and not (name == "report" and fmt == "json")
    ):
        raise CdsError(404, "Not found: the downloads are the tables' CSV and JSON links")
    try:
        period, rule = _filters()
        report = _report(period, rule)
    except ReportError as exc:
        raise CdsError(400, str(exc)) from None
    stem = f"governance-{name}-{report['since']}-{report['until']}" + (f"-{rule}" if rule else "")
    disposition = {"Content-Disposition": f'attachment; filename="{stem}.{fmt}"'}
    if name == "report":
        return Response(
            json.dumps(report, indent=2, ensure_ascii=False),
            mimetype="application/json",
            headers=disposition,
        )
    table: Table = {**tables(report), **decision_tables(report)}[name]
    if fmt == "csv":
        return Response(to_csv(table), mimetype="text/csv", headers=disposition)
    body = {
        "since": report["since"],
        "until": report["until"],
        "rule": rule,
        "table": name,
        "rows": to_json(table),
    }
    return Response(
        json.dumps(body, indent=2, ensure_ascii=False),
        mimetype="application/json",
        headers=disposition,
    )
