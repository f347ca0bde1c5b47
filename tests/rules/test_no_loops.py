"""No loops: every suggestion the service offers, applied to the draft set as an EHR applies a
CDS Hooks suggestion (every action: create adds the resource as a draft, delete removes the
draft), then order-sign: no new card, the accepted suggestion is not offered again, and a
suggestion that resolves the concern (replace or remove the draft) leaves no card of that
rule. A chart (patient-view) suggestion, once signed, is on record: the chart card no longer
offers it."""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, SERVICE, CheckedClient, read_bundle

from cds_service.hooks.bundle_request import request_from_bundle

TEMPLATES = [
    k
    for k in json.loads((FIXTURES.parent.parent / "cards" / "suggestions.json").read_text("utf-8"))
    if not k.startswith("_")
]
RESOLVING = {"replace-with-naproxen", "replace-with-acetaminophen", "remove-draft"}
LABEL_PREFIX = {
    "remove-draft": "Remove the draft",
    "naloxone": "Co-prescribe naloxone",
    "replace-with-naproxen": "Replace",
    "replace-with-acetaminophen": "Replace",
    "refer-physical-therapy": "Refer to physical therapy",
    "refer-cbt": "Refer for cognitive behavioral therapy",
}


def _key(label: str) -> str:
    if label.startswith("Replace"):
        return "replace-with-naproxen" if "naproxen" in label else "replace-with-acetaminophen"
    return next(k for k, prefix in LABEL_PREFIX.items() if label.startswith(prefix))


def _cases() -> list[tuple[Path, str, dict[str, Any]]]:
    out = []
    for directory in sorted(p.parent for p in FIXTURES.glob("*/cases.json")):
        for name, case in json.loads((directory / "cases.json").read_text("utf-8")).items():
            if name.startswith("fires-"):
                out.append((directory, name, case))
    demo = FIXTURES / "demo"
    for name, case in json.loads((demo / "expected.json").read_text("utf-8")).items():
        out.append((demo, name, case))
    return out


def _post(client: CheckedClient, bundle: dict[str, Any], hook: str, case: dict[str, Any]) -> Any:
    body = request_from_bundle(bundle, hook)
    if hook == "order-select" and "selections" in case:
        body["context"]["selections"] = case["selections"]
    response = client.post(f"/cds-services/{SERVICE[hook]}", body)
    assert response.status_code == 200
    return response.get_json()["cards"]


def _apply(bundle: dict[str, Any], suggestion: dict[str, Any], chart: bool) -> dict[str, Any]:
    out = copy.deepcopy(bundle)
    for index, action in enumerate(suggestion["actions"]):
        if action["type"] == "delete":
            rtype, rid = action["resourceId"].split("/", 1)
            out["entry"] = [
                e
                for e in out["entry"]
                if not (
                    e["resource"]["resourceType"] == rtype
                    and e["resource"].get("id") == rid
                    and e["resource"].get("status") == "draft"
                )
            ]
        elif action["type"] == "create":
            resource = copy.deepcopy(action["resource"])
            resource["id"] = f"accepted-{index}"
            if chart:  # signed: on record from today
                resource["status"] = "active"
                resource["authoredOn"] = "2026-11-23"
            out["entry"].append({"fullUrl": f"urn:uuid:accepted-{index}", "resource": resource})
    return out


def _rules(cards: list[dict[str, Any]]) -> set[str]:
    return {c["source"]["topic"]["code"] for c in cards}


def _covered(cards: list[dict[str, Any]]) -> set[str]:
    return {r for c in cards for r in c.get("extension", {}).get("opioid-lbp-cds.covers", [])}


def _offers(client: CheckedClient) -> dict[str, list[Any]]:
    """Every suggestion offered on the fixtures, by template key."""
    found: dict[str, list[Any]] = defaultdict(list)
    for directory, name, case in _cases():
        bundle = read_bundle(directory / name)
        cards = _post(client, bundle, case["hook"], case)
        for card in cards:
            for suggestion in card.get("suggestions", []):
                found[_key(suggestion["label"])].append(
                    (f"{directory.name}/{name}", bundle, case, cards, card, suggestion)
                )
    return found


_OFFERS: dict[str, list[Any]] = {}


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_suggestion_applied_draws_no_new_card(client: CheckedClient, template: str) -> None:
    """Each suggestion template, wherever a fixture card offers it, applied and signed: no new
    card, no repeat of the suggestion, and no card of that rule when it resolves the concern."""
    if not _OFFERS:
        _OFFERS.update(_offers(client))
    offers = _OFFERS.get(template, [])
    assert offers, f"no fixture card offers {template}"
    for where, bundle, case, before, card, suggestion in offers:
        rule = card["source"]["topic"]["code"]
        chart = case["hook"] == "patient-view"
        hook = "patient-view" if chart else "order-sign"
        after = _post(client, _apply(bundle, suggestion, chart), hook, {})
        assert _rules(after) <= _rules(before) | _covered(before), (where, template)
        labels = [s["label"] for c in after for s in c.get("suggestions", [])]
        assert suggestion["label"] not in labels, (where, template)
        if template in RESOLVING:
            assert rule not in _rules(after), (where, template, [c["summary"] for c in after])
