"""The card gallery: every card the fixtures produce, as a clinician sees it, in one markdown
page for clinical review (docs/card-gallery.md; docs/cards.md says how cards are written).

    python scripts/card_gallery.py > docs/card-gallery.md

The cards come from the card templates (cards/*.json) and the fixtures (fixtures/fhir): the
CDS Hooks sandbox's own request flow first (the sandbox's oxycodone order for a patient with
chronic low back pain who takes alprazolam), then the demo patients, then every firing rule
fixture. Silent-mode cards (logged for governance, never shown) are included and marked.
The page is deterministic (fixed clinical date, no uuids): a test checks it is up to date.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "fhir"
TODAY = "2026-11-23"  # the date the fixtures are written for
SERVICES = {
    "order-select": "opioid-lbp-order-select",
    "order-sign": "opioid-lbp-order-sign",
    "patient-view": "opioid-lbp-patient-view",
}
ICON = {
    "critical": "\u26d4 critical",
    "warning": "\u26a0\ufe0f warning",
    "info": "\u2139\ufe0f info",
}

ALPRAZOLAM = {
    "resourceType": "MedicationRequest",
    "id": "alp",
    "status": "active",
    "intent": "order",
    "subject": {"reference": "Patient/pt-1"},
    "authoredOn": "2026-11-10",
    "medicationCodeableConcept": {"text": "Alprazolam 0.5 MG Oral Tablet"},
    "dispenseRequest": {"expectedSupplyDuration": {"value": 30, "code": "d"}},
}
CHRONIC_LBP = {
    "resourceType": "Condition",
    "id": "lbp",
    "subject": {"reference": "Patient/pt-1"},
    "clinicalStatus": {"coding": [{"code": "active"}]},
    "code": {
        "coding": [{"system": "http://snomed.info/sct", "code": "279039007"}],
        "text": "Low back pain",
    },
    "onsetDateTime": "2026-05-01",
}


def _bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def sandbox_flow_request() -> dict[str, Any]:
    """The CDS Hooks sandbox's order-sign body (Rx View, oxycodone; its quirks included) for
    a patient with chronic low back pain who takes alprazolam, with the data it asks the FHIR
    server for prefetched instead."""
    body: dict[str, Any] = json.loads(
        (FIXTURES / "sandbox" / "order-sign-oxycodone.json").read_text("utf-8")
    )
    body = copy.deepcopy(body)
    body.pop("fhirServer", None)
    body["prefetch"] = {
        "patient": {"resourceType": "Patient", "id": "pt-1", "birthDate": "1968-03-14"},
        "meds": _bundle(ALPRAZOLAM),
        "conditions": _bundle(CHRONIC_LBP),
    }
    for key in (
        "dispenses",
        "statements",
        "procedures",
        "referrals",
        "encounters",
        "carePlans",
        "allergies",
    ):
        body["prefetch"][key] = _bundle()
    return body


def _engine() -> Any:
    from cds_service import create_app
    from cds_service.config import Config

    app = create_app(
        Config(today=TODAY, database_url="sqlite://", card_log=False, log_level="WARNING")
    )
    return app.extensions["cds_engine"]


def evaluate(engine: Any, hook: str, body: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """(cards shown, silent-mode cards) for one hook call."""
    result = engine.evaluate(SERVICES[hook], body)
    if result.status != 200:
        raise RuntimeError(f"{hook}: status {result.status}")
    return list(result.body["cards"]), list(result.silent_cards)


def _fixture_request(directory: Path, name: str, case: dict[str, Any]) -> dict[str, Any]:
    import datetime as dt

    from cds_service.hooks.bundle_request import request_from_bundle, resolve_relative_dates

    bundle = json.loads((directory / name).read_text("utf-8"))
    # the demo patients' dates are relative ("@-30d"): resolved against the fixture date
    bundle = resolve_relative_dates(bundle, dt.date.fromisoformat(TODAY))
    body: dict[str, Any] = request_from_bundle(bundle, case["hook"])
    if "selections" in case:
        body["context"]["selections"] = case["selections"]
    return body


def scenarios() -> list[tuple[str, str, str, dict[str, Any]]]:
    """(section, title, hook, request) of every scenario in the gallery, in order."""
    out = [
        (
            "The CDS Hooks sandbox flow",
            "Rx View: oxycodone ordered for chronic low back pain, alprazolam current",
            "order-sign",
            sandbox_flow_request(),
        )
    ]
    demo = FIXTURES / "demo"
    for name, case in json.loads((demo / "expected.json").read_text("utf-8")).items():
        out.append(
            ("Demo patients", case["description"], case["hook"], _fixture_request(demo, name, case))
        )
    for directory in sorted(p.parent for p in FIXTURES.glob("*/cases.json")):
        cases = json.loads((directory / "cases.json").read_text("utf-8"))
        for name, case in cases.items():
            if name.startswith("fires-"):
                title = f"{case['description']} (`{name}`)"
                body = _fixture_request(directory, name, case)
                out.append((f"Rule fixtures: {directory.name}", title, case["hook"], body))
    return out


def _quote(text: str) -> list[str]:
    return [f"> {line}" if line else ">" for line in text.splitlines()]


def card_markdown(card: dict[str, Any], silent: bool = False) -> list[str]:
    """One card as the clinician sees it: indicator and summary, the detail (markdown), the
    suggestion buttons, the links and the override reasons."""
    rule = card["source"]["topic"]["code"]
    mode = " \u00b7 *silent mode: logged for review, not shown*" if silent else ""
    lines = [f"> **{ICON[card['indicator']]} \u00b7 {card['summary']}**", ">"]
    lines += _quote(card.get("detail", ""))
    buttons = [s["label"] for s in card.get("suggestions", [])]
    if buttons:
        lines += [">", "> " + " ".join(f"`[ {label} ]`" for label in buttons)]
    links = [link["label"] for link in card.get("links", [])]
    if links:
        lines += [">", "> More: " + "; ".join(links)]
    reasons = [r["display"] for r in card.get("overrideReasons", [])]
    if reasons:
        lines += [">", "> Override reasons: " + "; ".join(reasons)]
    lines += [">", f"> <sub>{card['source']['label']} \u00b7 rule `{rule}`{mode}</sub>", ""]
    return lines


def gallery() -> str:
    engine = _engine()
    out = [
        "# Card gallery",
        "",
        "Every card the service's fixtures produce, as a clinician sees it (the summary, the",
        "detail, the suggestion buttons, the links and the override reasons offered). Generated",
        "from the card templates (`cards/*.json`) and the fixtures (`fixtures/fhir`) by",
        "`python scripts/card_gallery.py > docs/card-gallery.md`; a test fails when this page",
        f"is out of date. Clinical date of the fixtures: {TODAY}. How cards are written:",
        "[cards.md](cards.md).",
        "",
    ]
    section = ""
    try:
        for heading, title, hook, body in scenarios():
            if heading != section:
                out += [f"## {heading}", ""]
                section = heading
            shown, silent = evaluate(engine, hook, body)
            out += [f"### {title}", "", f"*{hook}*", ""]
            if not shown and not silent:
                out += ["No card.", ""]
            for card in shown:
                out += card_markdown(card)
            for card in silent:
                out += card_markdown(card, silent=True)
    finally:
        engine.close()
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    sys.stdout.write(gallery())
    return 0


if __name__ == "__main__":
    sys.exit(main())
