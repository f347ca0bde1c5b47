"""/analytics in-process: its own access check (loopback, or the admin token; never the EHR's
JWT), no CORS, escaping, downloads equal to the report, and no patient identifier, name,
drug name tied to a patient or token in the page or its downloads."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from analytics_seed import make_seed, write_seed
from conftest import bundle_of, close_app, full_prefetch, make_app
from flask import Flask
from jwt_keys import BASE, ISS, JWKS, token
from servers import DRUG_NAMES, PATIENT_ID, cards_body

from cds_service.analytics.report import Period, build_report
from cds_service.config import Config, ConfigError, from_env
from cds_service.store import Store
from cds_service.store.cardlog import CardLogEntry, HookCall, IssuedCard

ADMIN_TOKEN = "analytics-admin-token-5f2c9e1d7b"  # noqa: S105 - a test token
PERIOD = "since=2026-10-07&until=2026-11-15"
REMOTE = {"REMOTE_ADDR": "192.0.2.10"}
PATIENT_NAME = ("Zebulon", "Quixotic-Marchetti")
SIGN = "/cds-services/opioid-lbp-order-sign"


def _basic(password: str, user: str = "committee") -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


@pytest.fixture
def seeded_app(tmp_path: Path) -> Any:
    app = make_app(data_dir=str(tmp_path / "data"))
    write_seed(app.extensions["cds_store"], make_seed())
    yield app
    close_app(app)


def test_loopback_callers_only_without_a_token(seeded_app: Flask) -> None:
    """With no CDS_ANALYTICS_TOKEN the page, downloads and static files answer loopback
    callers and give anyone else the same 404 as an unknown path."""
    client = seeded_app.test_client()
    for path in ("/analytics", "/analytics/rules.csv", "/analytics/static/analytics.css"):
        assert client.get(path).status_code == 200, path
        remote = client.get(path, environ_base=REMOTE)
        assert remote.status_code == 404
        assert remote.get_json()["resourceType"] == "OperationOutcome"
    assert (
        client.get("/analytics", environ_base={"REMOTE_ADDR": "::ffff:127.0.0.1"}).status_code
        == 200
    )


def test_the_admin_token_is_required_from_everyone_when_configured(tmp_path: Path) -> None:
    """With a token, every caller (loopback too) must present it as a Basic password or a
    Bearer token; a missing or wrong one gets 401 asking for Basic credentials."""
    app = make_app(data_dir=str(tmp_path / "data"), analytics_token=ADMIN_TOKEN)
    client = app.test_client()
    missing = client.get("/analytics")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"].startswith('Basic realm="cds-analytics"')
    assert ADMIN_TOKEN not in missing.get_data(as_text=True)
    for headers in (
        _basic("wrong-token-wrong-token"),
        _basic(ADMIN_TOKEN[:-1]),
        {"Authorization": "Bearer " + ADMIN_TOKEN + "x"},
        {"Authorization": "Basic %%%notbase64"},
    ):
        assert client.get("/analytics", headers=headers).status_code == 401
    assert client.get("/analytics", headers=_basic(ADMIN_TOKEN)).status_code == 200
    assert (
        client.get(
            "/analytics/rules.json", headers=_basic(ADMIN_TOKEN, ""), environ_base=REMOTE
        ).status_code
        == 200
    )
    assert (
        client.get(
            "/analytics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, environ_base=REMOTE
        ).status_code
        == 200
    )
    close_app(app)


def test_the_ehr_jwt_alone_never_opens_the_page(tmp_path: Path) -> None:
    """With CDS client authentication on, a valid EHR JWT opens the hooks but not
    /analytics: 404 from a remote caller without a token configured, 401 with one."""
    issuers = tmp_path / "issuers.json"
    issuers.write_text(json.dumps([{"iss": ISS, "jwks": JWKS}]))
    common = {"auth": "required", "public_base_url": BASE, "trusted_issuers_file": str(issuers)}
    plain = make_app(data_dir=str(tmp_path / "a"), **common)
    guarded = make_app(data_dir=str(tmp_path / "b"), analytics_token=ADMIN_TOKEN, **common)
    for app, status in ((plain, 404), (guarded, 401)):
        client = app.test_client()
        hook = client.post(
            SIGN,
            json=cards_body(),
            headers={"Authorization": f"Bearer {token(path=SIGN)}"},
            environ_base=REMOTE,
        )
        assert hook.status_code == 200
        for path in ("/analytics", "/analytics/report.json"):
            jwt_only = {"Authorization": f"Bearer {token(path=path)}"}
            assert client.get(path, headers=jwt_only, environ_base=REMOTE).status_code == status
        close_app(app)


def test_no_cors_and_strict_headers_on_the_page(seeded_app: Flask) -> None:
    """Other sites' scripts, even the CDS Hooks sandbox's that the hooks grant, cannot read
    the figures (no CORS headers) and the page forbids external resources, framing and
    caching."""
    client = seeded_app.test_client()
    origin = {"Origin": "https://sandbox.cds-hooks.org"}
    page = client.get("/analytics", headers=origin)
    assert "Access-Control-Allow-Origin" not in page.headers
    assert (
        "Access-Control-Allow-Origin"
        not in client.get("/analytics/report.json", headers=origin).headers
    )
    assert "Access-Control-Allow-Origin" in client.get("/cds-services", headers=origin).headers
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["Cache-Control"] == "no-store"
    html = page.get_data(as_text=True)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing external


def test_downloads_are_the_report_tables(seeded_app: Flask) -> None:
    """Each table's CSV and JSON download holds exactly the report's rows for the filters
    given; the whole report downloads as the documented JSON object."""
    client = seeded_app.test_client()
    store: Store = seeded_app.extensions["cds_store"]
    import datetime as dt

    report = build_report(
        store,
        seeded_app.extensions["cds_report_context"],
        Period(dt.date(2026, 10, 7), dt.date(2026, 11, 15)),
        "opioid-benzodiazepine",
    )
    query = PERIOD + "&rule=opioid-benzodiazepine"
    whole = client.get(f"/analytics/report.json?{query}")
    assert whole.get_json() == report
    assert "attachment" in whole.headers["Content-Disposition"]
    rules_csv = list(
        csv.DictReader(
            io.StringIO(client.get(f"/analytics/rules.csv?{query}").get_data(as_text=True))
        )
    )
    assert [(r["rule"], r["service"], int(r["cards"]), int(r["accepted"])) for r in rules_csv] == [
        (r["rule"], r["service"], r["cards"], r["accepted"]) for r in report["rules"]
    ]
    weeks = client.get(f"/analytics/weeks.json?{query}").get_json()
    assert weeks["rows"] == [
        {"rule": r["rule"], "service": r["service"], **w}
        for r in report["rules"]
        for w in r["weeks"]
    ]
    reasons = list(
        csv.DictReader(
            io.StringIO(
                client.get(f"/analytics/override-reasons.csv?{query}").get_data(as_text=True)
            )
        )
    )
    assert [(r["code"], int(r["count"])) for r in reasons] == [
        (x["code"], x["count"]) for r in report["rules"] for x in r["override_reasons"]
    ]
    assert client.get("/analytics/secrets.csv").status_code == 404
    assert client.get("/analytics/report.csv").status_code == 404
    bad = client.get("/analytics/rules.csv?since=2026-13-01")
    assert bad.status_code == 400 and "since" in bad.get_json()["issue"][0]["diagnostics"]


def test_a_bad_filter_is_a_400_page_that_says_why(seeded_app: Flask) -> None:
    """A date that is not a date, a reversed period or a malformed rule id gives a 400 page
    naming the problem, with the form still there."""
    client = seeded_app.test_client()
    for query, words in (
        ("since=yesterday", "since: not a date"),
        ("since=2026-11-10&until=2026-11-01", "since is after until"),
        ("rule=%3Cscript%3E", "rule: not a rule id"),
    ):
        response = client.get(f"/analytics?{query}")
        assert response.status_code == 400
        html = response.get_data(as_text=True)
        assert words in html and '<form class="filters"' in html
        assert "<script>" not in html.replace("<script src=", "")


def test_everything_from_the_store_is_escaped(tmp_path: Path) -> None:
    """Markup in stored values (a rule id, a suggestion label) is shown as text in the
    tables and the SVG charts, never run."""
    import datetime as dt

    app = make_app(data_dir=str(tmp_path / "data"))
    store: Store = app.extensions["cds_store"]
    when = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)
    evil = '<script>alert("x")</script>'
    card = IssuedCard(
        "c-1",
        evil,
        "opioid-lbp-order-sign",
        "order-sign",
        "warning",
        when,
        "k" * 64,
        ({"uuid": "s-1", "key": "x", "label": f"<img src=x>{evil}"},),
    )
    store.write_card_log(
        [CardLogEntry(HookCall(when.date(), "opioid-lbp-order-sign", True), (card,))]
    )
    store.add_feedback(
        "opioid-lbp-order-sign",
        [
            {
                "card": "c-1",
                "outcome": "accepted",
                "outcomeTimestamp": "t",
                "acceptedSuggestions": ["s-1"],
                "overrideReason": "",
            }
        ],
    )
    html = (
        app.test_client().get("/analytics?since=2026-11-01&until=2026-11-08").get_data(as_text=True)
    )
    assert "&lt;script&gt;alert(" in html and "&lt;img src=x&gt;" in html
    assert evil not in html and "<img" not in html
    close_app(app)


def test_the_token_setting_is_checked_and_never_printed() -> None:
    """CDS_ANALYTICS_TOKEN must be long enough and is left out of the config's repr."""
    with pytest.raises(ConfigError, match="CDS_ANALYTICS_TOKEN"):
        from_env({"CDS_ANALYTICS_TOKEN": "short"})
    config = from_env({"CDS_ANALYTICS_TOKEN": ADMIN_TOKEN})
    assert config.analytics_token == ADMIN_TOKEN and ADMIN_TOKEN not in repr(config)
    assert Config().analytics_token == ""


def _named_body(patient_id: str) -> dict[str, Any]:
    body = cards_body(patient_id)
    body["prefetch"]["patient"] = {
        "resourceType": "Patient",
        "id": patient_id,
        "birthDate": "1970-01-01",
        "name": [{"given": [PATIENT_NAME[0]], "family": PATIENT_NAME[1]}],
    }
    return body


def test_page_and_downloads_never_show_patient_data_or_tokens(tmp_path: Path) -> None:
    """After real hook calls for a distinctively named patient (with drug-named suggestions,
    feedback accepting them, an override reason typed as free text naming the patient and
    drug (refused) and a comment naming them (not stored)), no page, CSV or JSON holds the
    patient id, name, drug names or any token."""
    app = make_app(data_dir=str(tmp_path / "data"), analytics_token=ADMIN_TOKEN)
    client = app.test_client()
    cards: list[dict[str, Any]] = []
    for suffix in ("", "-b", "-c"):
        response = client.post(SIGN, json=_named_body(PATIENT_ID + suffix))
        assert response.status_code == 200
        cards += response.get_json()["cards"]
    assert any(
        "oxycodone" in s["label"].lower() for c in cards for s in c.get("suggestions", [])
    )  # the rendered labels do name the drug
    with_suggestions = [c for c in cards if c.get("suggestions")]
    feedback = [
        {
            "card": c["uuid"],
            "outcome": "accepted",
            "outcomeTimestamp": f"2026-11-23T10:00:0{i % 10}Z",
            "acceptedSuggestions": [{"id": s["uuid"]} for s in c["suggestions"]],
        }
        for i, c in enumerate(with_suggestions[::2])
    ]
    overridden = [c for c in cards if c not in with_suggestions[::2]]
    free_text = [
        {
            "card": c["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-23T11:00:00Z",
            "overrideReason": {
                "reason": {
                    "code": f"{PATIENT_NAME[0]} {PATIENT_ID} oxycodone alprazolam",
                    "system": "urn:x",
                },
                "userComment": f"{PATIENT_NAME[0]} {PATIENT_ID}",
            },
        }
        for c in overridden
    ]
    # a reason typed as free text is refused at the door (400), so it is never stored
    assert client.post(SIGN + "/feedback", json={"feedback": free_text}).status_code == 400
    for item, card in zip(free_text, overridden, strict=True):
        item["overrideReason"]["reason"] = {"code": card["overrideReasons"][0]["code"]}
    feedback += free_text  # the catalogue code, with the comment naming the patient
    assert client.post(SIGN + "/feedback", json={"feedback": feedback}).status_code == 200
    assert app.extensions["cds_card_log"].flush(10)
    auth = _basic(ADMIN_TOKEN)
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date().isoformat()
    query = f"since={today}&until={today}"
    pages = [client.get(f"/analytics?{query}", headers=auth)]
    pages += [
        client.get(f"/analytics/{name}.{fmt}?{query}", headers=auth)
        for name in ("rules", "override-reasons", "suggestions", "weeks")
        for fmt in ("csv", "json")
    ]
    pages.append(client.get(f"/analytics/report.json?{query}", headers=auth))
    texts = []
    for response in pages:
        assert response.status_code == 200
        texts.append(response.get_data(as_text=True))
    everything = "\n".join(texts).lower()
    assert "remove the draft {drug} order" in everything  # the data is there, as templates
    assert f'"code": "{overridden[0]["overrideReasons"][0]["code"]}"' in everything  # counted
    for secret in (PATIENT_ID, *PATIENT_NAME, *DRUG_NAMES, ADMIN_TOKEN, "bearer ey"):
        assert secret.lower() not in everything, secret
    close_app(app)


def test_full_prefetch_patients_are_distinct_in_the_report(tmp_path: Path) -> None:
    """Three patients through real hook calls are three pseudonymous patients in the rows."""
    app = make_app(data_dir=str(tmp_path / "data"))
    client = app.test_client()
    for index in range(3):
        body = cards_body(f"p-{index}")
        assert client.post(SIGN, json=body).status_code == 200
    # a call without cards still counts as a call
    empty = {
        "hook": "order-sign",
        "hookInstance": "h",
        "context": {"userId": "Practitioner/1", "patientId": "p-9", "draftOrders": bundle_of()},
        "prefetch": full_prefetch("p-9"),
    }
    assert client.post(SIGN, json=empty).status_code == 200
    assert app.extensions["cds_card_log"].flush(10)
    report = client.get("/analytics/report.json").get_json()
    row = next(
        r
        for r in report["rules"]
        if r["rule"] == "opioid-benzodiazepine" and r["service"] == "opioid-lbp-order-sign"
    )
    assert (row["calls"], row["cards"], row["patients"]) == (4, 3, 3)
    close_app(app)
