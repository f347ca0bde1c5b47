"""Governance per decision through real hook calls: order-select then order-sign of one draft
is one decision, each logged card carries its variant, a pseudonymous prescriber, the
knowledge version and its rule's settings digest, and nothing identifying leaves the page,
the print report or the downloads."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from conftest import SELECT, SIGN, make_app
from servers import DRUG_NAMES, PATIENT_ID, cards_body

USER_ID = "Practitioner/dr-Quimby-7788"
ENCOUNTER_ID = "enc-Quimby-4242"
DRAFT_ID = "draft-Quimby-0099"


def _bodies(patient_id: str = PATIENT_ID, draft_id: str = DRAFT_ID) -> tuple[Any, Any]:
    sign = cards_body(patient_id)
    sign["context"]["userId"] = USER_ID
    sign["context"]["encounterId"] = ENCOUNTER_ID
    for entry in sign["context"]["draftOrders"]["entry"]:
        entry["resource"]["id"] = draft_id
    select = copy.deepcopy(sign)
    select["hook"] = "order-select"
    select["hookInstance"] = "d2b7c3a0-0000-4000-8000-00000000aa01"
    select["context"]["selections"] = [f"MedicationRequest/{draft_id}"]
    return select, sign


def test_select_and_sign_of_one_draft_are_one_decision(tmp_path: Any) -> None:
    """Two hook calls (select, then sign) for one draft give two cards per rule but one
    firing per rule; the card log holds the variant, knowledge version, settings digest and a
    keyed prescriber, never the user id; a second draft is a second decision."""
    app = make_app(data_dir=str(tmp_path / "data"))
    client = app.test_client()
    select, sign = _bodies()
    shown = []
    for path, body in ((SELECT, select), (SIGN, sign)):
        response = client.post(path, json=body)
        assert response.status_code == 200
        shown.append({c["source"]["topic"]["code"] for c in response.get_json()["cards"]})
    assert "opioid-start-chronic-lbp" in shown[0] & shown[1]
    _, other_sign = _bodies(draft_id="draft-Quimby-0100")
    assert client.post(SIGN, json=other_sign).status_code == 200
    assert app.extensions["cds_card_log"].flush(10)
    store = app.extensions["cds_store"]
    rows = store.issued_cards()
    lbp = [r for r in rows if r["rule_id"] == "opioid-start-chronic-lbp"]
    assert len(lbp) == 3
    assert len({r["decision_key"] for r in lbp}) == 2  # select+sign share one key
    knowledge = app.extensions["cds_knowledge"].version
    for row in rows:
        assert row["variant"] and row["knowledge_version"] == knowledge
        assert row["settings_digest"] and len(row["settings_digest"]) == 16
        assert row["prescriber_key"] and USER_ID not in row["prescriber_key"]
        assert len(row["prescriber_key"]) == 64
    assert len({r["prescriber_key"] for r in rows}) == 1

    today = dt.datetime.now(dt.UTC).date().isoformat()
    report = client.get(f"/analytics/report.json?since={today}&until={today}").get_json()
    decision_rows = {(r["rule"], r["context"]): r for r in report["decisions"]["rules"]}
    row = decision_rows[("opioid-start-chronic-lbp", "ordering")]
    assert row["firings"] == 2 and row["shown"] == 2
    assert report["decisions"]["denominators"]["opioid_order_decisions"] == 2
    assert row["firings_per_100"] == 100.0
    assert row["no_response"] == 2 and row["no_feedback_from_ehr"] == 2
    app.extensions["cds_engine"].close()
    store.close()


def test_no_identifier_in_page_print_csv_or_json(tmp_path: Any) -> None:
    """After real calls and feedback, the page, the printable report, every CSV and JSON
    download hold no patient id, user id, encounter or draft id, drug name, pseudonymous key
    or free text the EHR sent."""
    app = make_app(data_dir=str(tmp_path / "data"))
    client = app.test_client()
    select, sign = _bodies()
    cards = []
    for path, body in ((SELECT, select), (SIGN, sign)):
        cards += client.post(path, json=body).get_json()["cards"]
    feedback = [
        {
            "card": cards[0]["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": "2026-12-07T10:00:00Z",
            "overrideReason": {
                "reason": {"code": f"{PATIENT_ID} {USER_ID} oxycodone", "system": "urn:x"}
            },
        },
        {
            "card": cards[-1]["uuid"],
            "outcome": "accepted",
            "outcomeTimestamp": "2026-12-07T10:05:00Z",
            "acceptedSuggestions": [{"id": s["uuid"]} for s in cards[-1].get("suggestions", [])],
        },
    ]
    # client text (here identifiers in a reason code) is refused, so none of it is stored
    assert client.post(SELECT + "/feedback", json={"feedback": feedback[:1]}).status_code == 400
    feedback[0]["overrideReason"] = {"reason": cards[0]["overrideReasons"][0]}
    assert client.post(SELECT + "/feedback", json={"feedback": feedback[:1]}).status_code == 200
    assert client.post(SIGN + "/feedback", json={"feedback": feedback[1:]}).status_code == 200
    assert app.extensions["cds_card_log"].flush(10)
    store = app.extensions["cds_store"]
    keys = {r["prescriber_key"] for r in store.issued_cards()}
    keys |= {r["decision_key"] for r in store.issued_cards()}
    keys |= {r["patient_key"] for r in store.issued_cards()}
    today = dt.datetime.now(dt.UTC).date().isoformat()
    query = f"since={today}&until={today}"
    urls = [f"/analytics?{query}", f"/analytics/print?{query}", f"/analytics/report.json?{query}"]
    urls += [
        f"/analytics/{name}.{fmt}?{query}"
        for name in (
            "rules",
            "override-reasons",
            "suggestions",
            "weeks",
            "decisions",
            "variants",
            "reason-classes",
            "firing-rates",
        )
        for fmt in ("csv", "json")
    ]
    texts = []
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        texts.append(response.get_data(as_text=True))
    everything = "\n".join(texts).lower()
    assert "which rule should we tune or retire" in everything
    assert "opioid-start-chronic-lbp" in everything
    for secret in (
        PATIENT_ID,
        USER_ID,
        "Quimby",
        ENCOUNTER_ID,
        DRAFT_ID,
        *DRUG_NAMES,
        *(k for k in keys if k),
    ):
        assert secret.lower() not in everything, secret
    app.extensions["cds_engine"].close()
    store.close()


def test_out_of_range_dates_are_a_400_page(tmp_path: Any) -> None:
    """Year-1 and year-9999 dates on /analytics, the print report and a download answer 400
    with a message, never a 500."""
    app = make_app(data_dir=str(tmp_path / "data"))
    client = app.test_client()
    for query in ("since=0001-01-01&until=0001-01-05", "until=9999-12-31", "since=9999-12-31"):
        for path in ("/analytics", "/analytics/print", "/analytics/decisions.csv"):
            response = client.get(f"{path}?{query}")
            assert response.status_code == 400, (path, query)
            assert "outside the dates a report covers" in response.get_data(as_text=True)
    response = client.get("/analytics?backtest=../../etc")
    assert response.status_code == 400
    assert "no such run folder" in response.get_data(as_text=True)
    app.extensions["cds_engine"].close()
    app.extensions["cds_store"].close()


def test_a_real_backtest_run_and_a_silent_rule_on_the_first_screen_and_report(
    tmp_path: Any, monkeypatch: Any, capsys: Any
) -> None:
    """`cds-service backtest fixtures/bulk/sample --out <data dir>/backtests/<name>` writes a
    run that /analytics lists and puts beside the live figures (per 100 opioid order
    decisions of the replay), and the silent opioid-naloxone-offer shows its would-be
    firings per 100 decisions on the first screen, in `cds-service report` and in the run."""
    import json
    import re
    from pathlib import Path

    from conftest import FIXTURES, SERVICE, fixture_request

    from cds_service.cli import main

    rule = "opioid-naloxone-offer"
    folder = FIXTURES / rule
    cases: dict[str, Any] = json.loads((folder / "cases.json").read_text("utf-8"))
    data = tmp_path / "data"
    app = make_app(data_dir=str(data))
    client = app.test_client()
    fired = 0
    for name, case in cases.items():
        body = fixture_request(folder, name, case)
        response = client.post(f"/cds-services/{SERVICE[case['hook']]}", json=body)
        assert response.status_code == 200
        fired += rule in case.get("silent_fires", [])
    assert fired >= 6
    assert app.extensions["cds_card_log"].flush(10)

    sample = Path(__file__).resolve().parents[2] / "fixtures" / "bulk" / "sample"
    run = data / "backtests" / "sample-run"
    assert main(["backtest", str(sample), "--out", str(run)]) == 0
    capsys.readouterr()
    summary = json.loads((run / "summary.json").read_text("utf-8"))
    opioid_orders = summary["backtest"]["opioid_orders"]
    assert summary["decisions"]["denominators"]["opioid_order_decisions"] == opioid_orders > 0
    replayed = {(r["rule"], r["context"]): r for r in summary["decisions"]["rules"]}
    lbp = replayed[("opioid-start-chronic-lbp", "ordering")]
    assert lbp["firings"] > 0
    assert lbp["firings_per_100"] == round(100 * lbp["firings"] / opioid_orders, 1)
    would_be = replayed[(rule, "ordering")]
    assert would_be["mode"] == "silent" and would_be["silent"] == would_be["firings"] > 0
    assert would_be["firings_per_100"] == round(100 * would_be["firings"] / opioid_orders, 1)

    today = dt.datetime.now(dt.UTC).date().isoformat()
    page = client.get(f"/analytics?since={today}&until={today}&backtest=sample-run")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<option value="sample-run" selected>sample-run</option>' in html
    table = html[
        html.index('id="decision-table"') : html.index(
            "</table>", html.index('id="decision-table"')
        )
    ]

    def cells(rule_id: str) -> dict[str, str]:
        start = table.index(f'<tr data-rule="{rule_id}" data-context="ordering"')
        row = table[start : table.index("</tr>", start)]
        return dict(re.findall(r'data-column="([a-z_0-9]+)"[^>]*>(.*?)</td>', row))

    silent_row = cells(rule)
    assert f'data-rule="{rule}" data-context="ordering" data-mode="silent"' in table
    assert silent_row["firings"] == str(fired)
    assert float(silent_row["firings_per_100"]) > 0
    assert silent_row["backtest_per_100"] == f"{would_be['firings_per_100']:.1f}"
    assert cells("opioid-start-chronic-lbp")["backtest_per_100"] == f"{lbp['firings_per_100']:.1f}"
    app.extensions["cds_card_log"].close()
    app.extensions["cds_store"].close()
    app.extensions["cds_engine"].close()

    monkeypatch.setenv("CDS_DATA_DIR", str(data))
    args = ["report", "--since", today, "--until", today, "--backtest", str(run)]
    assert main([*args, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    live = {(r["rule"], r["context"]): r for r in report["decisions"]["rules"]}
    assert live[(rule, "ordering")]["mode"] == "silent"
    assert live[(rule, "ordering")]["firings"] == live[(rule, "ordering")]["silent"] == fired
    assert live[(rule, "ordering")]["firings_per_100"] is not None
    beside = {(r["rule"], r["context"]): r for r in report["backtest"]["rules"]}
    assert beside[(rule, "ordering")]["backtest_per_100"] == would_be["firings_per_100"]
    assert main(args) == 0
    text = capsys.readouterr().out
    line = next(x for x in text.splitlines() if x.lstrip().startswith(rule[:20]) and "silent" in x)
    assert f" {fired} " in line
    assert max(len(x) for x in text.splitlines()) < 120
