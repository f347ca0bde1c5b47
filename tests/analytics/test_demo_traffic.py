"""`cds-service demo-traffic` against a real `cds-service serve`: the report then shows the
calls, cards, patients, outcomes and reasons that were played, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from servers import Service

from cds_service.analytics.demo import DemoError, _as_new_patient, demo_dir, play
from cds_service.config import Config
from cds_service.store import open_store


def test_demo_traffic_fills_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two rounds of the demo patients through a running service: the report's totals are
    exactly what demo-traffic says it sent (cards, accepted, overridden, no response), with
    ranked catalogue reasons and each round's patients counted as new patients."""
    from cds_service.cli import main

    # no fixed CDS_TODAY: the demo patients' dates are relative to the clock on both sides
    env = {"CDS_DATA_DIR": str(tmp_path / "data"), "CDS_TODAY": ""}
    service = Service(env).start()
    try:
        assert main(["demo-traffic", "--url", service.base, "--rounds", "2"]) == 0
        sent = json.loads(capsys.readouterr().out)
    finally:
        service.stop()  # the worker writes its queued card log on the way out
    assert sent["hook_calls"] == 2 * 9  # 4 order-sign patients x 2 hooks + 1 chart review
    assert sent["accepted"] > 0 and sent["overridden"] > 0 and sent["no_response"] > 0
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["report", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["rules"]
    assert sum(r["own_cards"] for r in rows) == sent["cards"]
    store = open_store(Config(data_dir=env["CDS_DATA_DIR"]))
    outcomes = {i["card_uuid"]: i["outcome"] for i in store.feedback_items()}
    cards = store.issued_cards()
    store.close()
    assert all(i in {c["card_uuid"] for c in cards} for i in outcomes)  # all linked
    assert len(cards) == sent["cards"]
    assert sum(o == "accepted" for o in outcomes.values()) == sent["accepted"]
    assert sum(o == "overridden" for o in outcomes.values()) == sent["overridden"]
    for row in rows:  # each row's outcomes add up to its cards
        assert row["accepted"] + row["overridden"] + row["no_response"] == row["cards"]
    assert sum(s["calls"] for s in report["services"]) == sent["hook_calls"]
    benzo = {r["service"]: r["patients"] for r in rows if r["rule"] == "opioid-benzodiazepine"}
    assert benzo["opioid-lbp-order-select"] == 2 * 2  # demo-1 and demo-3, new each round
    # one decision, one answer: a card answered at order-select is not asked again at
    # order-sign, however fast the answer came (the decision link is written at once)
    assert benzo.get("opioid-lbp-order-sign", 0) <= 2 * 2
    reasons = [x for r in rows for x in r["override_reasons"]]
    assert reasons and all(x["code"] not in ("other", "none") for x in reasons)
    # per decision: order-select + order-sign of one patient's draft count once
    decisions = {(r["rule"], r["context"]): r for r in report["decisions"]["rules"]}
    for rule in ("opioid-start-chronic-lbp", "opioid-benzodiazepine"):
        own = {r["service"]: r["own_cards"] for r in rows if r["rule"] == rule}
        assert own["opioid-lbp-order-select"] > 0
        # each decision is shown first at order-select (new patients each round); its
        # order-sign repeat, when unanswered, is the same decision, not a second firing
        assert decisions[(rule, "ordering")]["firings"] == own["opioid-lbp-order-select"]
        assert own.get("opioid-lbp-order-sign", 0) <= own["opioid-lbp-order-select"]
    assert report["decisions"]["concentration"]["firings"]["prescribers"] > 1
    classes = {c["class"] for r in report["decisions"]["rules"] for c in r["reasons"] if c["count"]}
    assert classes and "unclassified" not in classes


def test_demo_patients_ship_and_are_renamed_per_round() -> None:
    """The demo patients are found (packaged or in the checkout) and a round's copy renames
    the patient everywhere it is referenced."""
    folder = demo_dir()
    expected = json.loads((folder / "expected.json").read_text("utf-8"))
    bundle = json.loads((folder / next(iter(expected))).read_text("utf-8"))
    renamed = json.dumps(_as_new_patient(bundle, "-r7"))
    assert '"Patient/demo-rivera-r7"' in renamed and '"Patient/demo-rivera"' not in renamed
    assert '"id": "demo-rivera-r7"' in renamed


def test_demo_traffic_says_why_it_cannot_run(tmp_path: Path) -> None:
    """No service at the URL, or a folder without demo patients, is a clear error."""
    from servers import free_port

    with pytest.raises(DemoError, match="cannot reach"):
        play(f"http://127.0.0.1:{free_port()}", rounds=1)
    with pytest.raises(DemoError, match="cannot read the demo patients"):
        play("http://127.0.0.1:9", str(tmp_path), rounds=1)


def test_the_wheel_ships_the_page_and_the_demo_patients() -> None:
    """The page's template and assets sit inside the package, the demo patients are
    force-included in the wheel, and the Docker build copies every force-included folder."""
    import tomllib

    from conftest import ROOT

    package = ROOT / "cds_service" / "http"
    for name in (
        "templates/analytics/page.html",
        "templates/analytics/decisions.html",
        "templates/analytics/print.html",
        "static/analytics.css",
        "static/print.css",
        "static/analytics.js",
        "static/favicon.svg",
    ):
        assert (package / name).is_file(), name
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    included = project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert included["fixtures/fhir/demo"] == "cds_service/demo"
    dockerfile = (ROOT / "Dockerfile").read_text("utf-8")
    for source in included:
        assert f"COPY {source} " in dockerfile, source
    assert any(
        p.startswith("playwright") for p in project["project"]["optional-dependencies"]["test"]
    )
