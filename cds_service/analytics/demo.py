"""`cds-service demo-traffic`: realistic hook calls and feedback against a running service,
so the report and /analytics have something to show on a fresh machine.

Each round sees every demo patient (fixtures/fhir/demo, shipped in the wheel as
cds_service/demo) once, as a new patient (the patient id gets a round suffix, so the report
counts distinct patients): order-select then order-sign for the order-sign patients,
patient-view for the chart-review one. Each card then gets feedback the way clinicians give
it: about 40% accepted (with the card's first suggestion, if it has one), about 35%
overridden with one of the reasons the card offers (each reason has its class in
cards/override-reasons.json), the rest no response. Each patient's order-select and
order-sign share one encounter and draft (one ordering decision), written by one of a few
demo prescribers (context.userId), some busier than others, so the per-decision figures and
the prescriber concentration have something to show. The generator is seeded, so a run is
repeatable. The service must run with CDS_AUTH=off (a local demo). The demo patients' dates
are relative to today ("@-30d"), resolved against `today` (pass the service's CDS_TODAY when
it runs with one).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
from importlib import resources
from pathlib import Path
from typing import Any

import requests

from cds_service.hooks.bundle_request import request_from_bundle, resolve_relative_dates

TIMEOUT = 30.0
# demo prescribers and how often each writes (a few write most orders, as in practice)
PRESCRIBERS = tuple(f"Practitioner/demo-prescriber-{i}" for i in range(1, 11))
PRESCRIBER_WEIGHTS = (30, 15, 10, 8, 7, 6, 5, 4, 3, 2)


class DemoError(Exception):
    """The demo cannot run; the message says why."""


def demo_dir() -> Path:
    """The demo patients: inside the installed package, or fixtures/fhir/demo in a checkout."""
    packaged = resources.files("cds_service").joinpath("demo")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent.parent / "fixtures" / "fhir" / "demo"


def load_demo(folder: Path, today: dt.date) -> list[tuple[str, dict[str, Any], str]]:
    """(file name, patient Bundle with its dates resolved against `today`, hook) for each
    demo patient listed in the folder's expected.json."""
    try:
        expected = json.loads((folder / "expected.json").read_text("utf-8"))
        return [
            (
                name,
                resolve_relative_dates(json.loads((folder / name).read_text("utf-8")), today),
                case["hook"],
            )
            for name, case in expected.items()
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DemoError(f"cannot read the demo patients in {folder}: {exc}") from None


def _as_new_patient(bundle: dict[str, Any], suffix: str) -> dict[str, Any]:
    """The bundle with its patient renamed (id and every reference to it)."""
    patient = next(
        (
            e["resource"]
            for e in bundle.get("entry", [])
            if e.get("resource", {}).get("resourceType") == "Patient"
        ),
        None,
    )
    if patient is None:
        return copy.deepcopy(bundle)
    old = f"Patient/{patient['id']}"
    text = json.dumps(bundle).replace(f'"{old}"', f'"{old}{suffix}"')
    renamed: dict[str, Any] = json.loads(text)
    for entry in renamed["entry"]:
        if entry["resource"].get("resourceType") == "Patient":
            entry["resource"]["id"] = patient["id"] + suffix
    return renamed


class _Client:
    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.session = requests.Session()

    def post(self, path: str, body: Any) -> Any:
        try:
            response = self.session.post(self.base + path, json=body, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise DemoError(f"cannot reach {self.base}: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise DemoError(
                f"POST {path} answered {response.status_code}: {_diagnostics(response)}"
            )
        return response.json()

    def services(self) -> dict[str, str]:
        """hook -> service id, from discovery."""
        try:
            response = self.session.get(self.base + "/cds-services", timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise DemoError(f"cannot reach {self.base}: {type(exc).__name__}") from None
        if response.status_code == 401:
            raise DemoError(
                "the service requires CDS client authentication (CDS_AUTH="
                "required); play the demo against a local service with "
                "CDS_AUTH=off"
            )
        if response.status_code != 200:
            raise DemoError(f"GET /cds-services answered {response.status_code}")
        return {s["hook"]: s["id"] for s in response.json().get("services", [])}


def _diagnostics(response: requests.Response) -> str:
    try:
        return str(response.json()["issue"][0]["diagnostics"])[:300]
    except (ValueError, KeyError, IndexError, TypeError):
        return response.text[:300]


def play(
    url: str,
    fixtures: str | None = None,
    rounds: int = 6,
    seed: int = 13,
    today: str | dt.date | None = None,
) -> dict[str, int]:
    """Play `rounds` rounds of hook calls and feedback; returns what was sent. The demo
    patients' relative dates count from `today` (an ISO date; default: the clock)."""
    if rounds < 1:
        raise DemoError("--rounds must be at least 1")
    if today is None or today == "":
        today = dt.datetime.now(dt.UTC).date()
    if isinstance(today, str):
        try:
            today = dt.date.fromisoformat(today)
        except ValueError:
            raise DemoError(f"--today: {today!r} is not an ISO date") from None
    patients = load_demo(Path(fixtures) if fixtures else demo_dir(), today)
    client = _Client(url)
    services = client.services()
    rng = random.Random(seed)  # noqa: S311 - demo traffic, not security
    sent = {
        "hook_calls": 0,
        "cards": 0,
        "accepted": 0,
        "overridden": 0,
        "no_response": 0,
        "patients": 0,
    }
    for round_number in range(rounds):
        for name, bundle, hook in patients:
            renamed = _as_new_patient(bundle, f"-r{round_number}")
            sent["patients"] += 1
            hooks = ["order-select", "order-sign"] if hook == "order-sign" else [hook]
            prescriber = rng.choices(PRESCRIBERS, PRESCRIBER_WEIGHTS)[0]
            encounter = f"demo-encounter-{round_number}-{name}"
            for current in hooks:
                service = services.get(current)
                if service is None:
                    raise DemoError(f"the service offers no {current} service")
                request = request_from_bundle(renamed, current)
                request["context"]["userId"] = prescriber
                if current != "patient-view":
                    request["context"]["encounterId"] = encounter
                body = client.post(f"/cds-services/{service}", request)
                sent["hook_calls"] += 1
                feedback = []
                for card in body.get("cards", []):
                    sent["cards"] += 1
                    item = _feedback(card, rng)
                    if item is None:
                        sent["no_response"] += 1
                        continue
                    sent[item["outcome"]] += 1
                    feedback.append(item)
                if feedback:
                    client.post(f"/cds-services/{service}/feedback", {"feedback": feedback})
    return sent


def _feedback(card: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    roll = rng.random()
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    reasons = card.get("overrideReasons") or []
    suggestions = card.get("suggestions") or []
    if roll < 0.40 and suggestions:  # accepting means taking one of the card's suggestions
        return {
            "card": card["uuid"],
            "outcome": "accepted",
            "outcomeTimestamp": stamp,
            "acceptedSuggestions": [{"id": suggestions[0]["uuid"]}],
        }
    if roll < 0.75 and reasons:
        return {
            "card": card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": stamp,
            "overrideReason": {"reason": rng.choice(reasons)},
        }
    return None
