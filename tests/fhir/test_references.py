"""References in every form real records write them, through the HTTP API: to the patient
(ownership) and to Medications (medicationReference)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import responses
from conftest import (
    ALPRAZOLAM,
    FHIR,
    FIXTURES,
    TODAY,
    CheckedClient,
    bundle_of,
    full_prefetch,
    make_app,
    rule_ids,
    sandbox,
    shipped,
)

from cds_service.fhir.read import parse_reference
from cds_service.fhir.record import UNUSABLE_OTHER_PATIENT, PatientRecord
from cds_service.hooks.bundle_request import request_from_bundle, resolve_relative_dates
from cds_service.hooks.request import parse_hook_request
from cds_service.hooks.services import SERVICES_BY_ID

SERVICE = {
    "patient-view": "opioid-lbp-patient-view",
    "order-select": "opioid-lbp-order-select",
    "order-sign": "opioid-lbp-order-sign",
}
SIGN = "/cds-services/opioid-lbp-order-sign"
MRN_SYSTEM = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14"
EHR = "https://ehr.example.org/fhir/R4"

# Firing fixtures whose cards depend on resources that name the patient (the low back pain
# Condition, a current benzodiazepine, the chart's opioid), plus one that stays silent only
# because the first-line steps on record are read.
CASES = [
    ("opioid-start-chronic-lbp", "fires-oxycodone-lbp-onset-29-weeks-ago.json"),
    ("opioid-benzodiazepine", "fires-oxycodone-draft-active-alprazolam.json"),
    ("first-line-therapy-not-tried", "fires-nsaid-missing-physical-therapy-done.json"),
    ("first-line-therapy-not-tried", "silent-both-steps-on-record.json"),
    ("demo", "demo-4-chart-oxycodone-and-clonazepam.json"),
]


def case_meta(folder: str, name: str) -> dict[str, Any]:
    index = "expected.json" if folder == "demo" else "cases.json"
    meta: dict[str, Any] = json.loads((FIXTURES / folder / index).read_text("utf-8"))[name]
    meta["fires"] = meta.get("fires", meta.get("cards"))
    return meta


def patient_bundle(folder: str, name: str) -> dict[str, Any]:
    """The fixture Bundle, its Patient given an MRN so logical references can match."""
    bundle: dict[str, Any] = resolve_relative_dates(
        json.loads((FIXTURES / folder / name).read_text("utf-8")),
        dt.date.fromisoformat(TODAY),
    )
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    patient["identifier"] = [{"system": MRN_SYSTEM, "value": "MRN-0042"}]
    return bundle


Rewrite = Callable[[dict[str, Any], str], dict[str, Any]]


def _urn_full_url(entry: dict[str, Any], pid: str) -> dict[str, Any]:
    entry["fullUrl"] = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, pid)}"
    return {"reference": entry["fullUrl"]}


def _contained(resource: dict[str, Any], _: str) -> dict[str, Any]:
    resource["contained"] = [
        {
            "resourceType": "Patient",
            "id": "p",
            "identifier": [{"system": MRN_SYSTEM, "value": "MRN-0042"}],
        }
    ]
    return {"reference": "#p"}


FORMS: dict[str, Rewrite] = {
    "urn:uuid of the Patient entry's fullUrl": lambda patient_entry, pid: _urn_full_url(
        patient_entry, pid
    ),
    "urn:uuid equal to the patient id": lambda _, pid: {"reference": f"urn:uuid:{pid}"},
    "absolute URL": lambda _, pid: {"reference": f"{EHR}/Patient/{pid}"},
    "absolute URL with _history": lambda _, pid: {"reference": f"{EHR}/Patient/{pid}/_history/3"},
    "bare id": lambda _, pid: {"reference": pid},
    "identifier only": lambda _, pid: {
        "identifier": {"system": MRN_SYSTEM, "value": "MRN-0042"},
        "display": "the patient",
    },
    "other server's id with our MRN": lambda _, pid: {
        "reference": "https://hie.example.net/fhir/Patient/x-981",
        "identifier": {"system": MRN_SYSTEM, "value": "MRN-0042"},
    },
}


def rewrite(bundle: dict[str, Any], form: str) -> dict[str, Any]:
    """Every subject/patient reference of the bundle rewritten in the given form."""
    bundle = copy.deepcopy(bundle)
    patient_entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    pid = patient_entry["resource"]["id"]
    made = FORMS[form](patient_entry, pid) if form in FORMS else None
    for entry in bundle["entry"]:
        resource = entry["resource"]
        for element in ("subject", "patient"):
            if isinstance(resource.get(element), dict):
                resource[element] = (
                    _contained(resource, pid) if form == "contained" else copy.deepcopy(made)
                )
    return bundle


def post_bundle(client: CheckedClient, bundle: dict[str, Any], hook: str) -> list[dict[str, Any]]:
    response = client.post(f"/cds-services/{SERVICE[hook]}", request_from_bundle(bundle, hook))
    assert response.status_code == 200, response.get_json()
    cards: list[dict[str, Any]] = response.get_json()["cards"]
    return cards


def comparable(cards: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (
            c["source"]["topic"]["code"],
            c["indicator"],
            c["summary"],
            c["detail"],
            json.dumps(c.get("suggestions", []), sort_keys=True).count('"label"'),
        )
        for c in cards
    ]


def hook_log(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    return [r for r in caplog.records if r.msg == "hook"][-1].__dict__


@pytest.mark.parametrize("form", [*FORMS, "contained"])
@pytest.mark.parametrize("folder,name", CASES, ids=[n for _, n in CASES])
def test_every_reference_form_gives_the_same_cards_as_patient_id(
    client: CheckedClient, caplog: pytest.LogCaptureFixture, folder: str, name: str, form: str
) -> None:
    """urn:uuid, absolute, bare, identifier and contained references to the patient give the
    cards that Patient/<id> gives, and nothing is counted as another patient's."""
    meta = case_meta(folder, name)
    bundle = patient_bundle(folder, name)
    baseline = post_bundle(client, bundle, meta["hook"])
    assert sorted(c["source"]["topic"]["code"] for c in baseline) == sorted(meta["fires"])
    with caplog.at_level(logging.INFO, logger="cds_service"):
        cards = post_bundle(client, rewrite(bundle, form), meta["hook"])
    assert comparable(cards) == comparable(baseline)
    anomalies = hook_log(caplog)["anomalies"]
    assert not [a for a in anomalies if "other-patient" in a or "unresolved" in a], anomalies


@pytest.mark.parametrize(
    "reference",
    [
        {"reference": "Patient/someone-else"},
        {"reference": f"{EHR}/Patient/someone-else/_history/1"},
        {"reference": "someone-else"},
        {"identifier": {"system": MRN_SYSTEM, "value": "MRN-9999"}},
        {
            "reference": f"{EHR}/Patient/someone-else",
            "identifier": {"system": MRN_SYSTEM, "value": "MRN-9999"},
        },
    ],
)
def test_resources_naming_another_patient_are_ignored_and_counted(
    client: CheckedClient, caplog: pytest.LogCaptureFixture, reference: dict[str, Any]
) -> None:
    """A low back pain Condition that names another patient, in any form, does not reach the
    rules (no card) and is counted in the log."""
    folder, name = CASES[0]
    bundle = patient_bundle(folder, name)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Condition":
            entry["resource"]["subject"] = reference
    with caplog.at_level(logging.INFO, logger="cds_service"):
        cards = post_bundle(client, bundle, "order-sign")
    assert shipped([c["source"]["topic"]["code"] for c in cards]) == []
    assert hook_log(caplog)["anomalies"].get("Condition:other-patient") == 1


def test_urn_of_another_patient_entry_is_ignored(client: CheckedClient) -> None:
    """A urn:uuid that resolves to a different Patient entry of the request is another
    patient's, even though no id is compared directly."""
    folder, name = CASES[0]
    bundle = patient_bundle(folder, name)
    stranger: dict[str, Any] = {
        "fullUrl": "urn:uuid:9c1f0b7e-0000-4000-8000-000000000001",
        "resource": {
            "resourceType": "Patient",
            "id": "stranger",
            "identifier": [{"system": MRN_SYSTEM, "value": "MRN-7"}],
        },
    }
    body = request_from_bundle(bundle, "order-sign")
    body["prefetch"]["patient"]["entry"].append(stranger)  # a Patient?_id= search of two
    for entry in body["prefetch"]["conditions"]["entry"]:
        entry["resource"]["subject"] = {"reference": stranger["fullUrl"].upper()}
    response = client.post(SIGN, body)
    assert shipped(rule_ids(response)) == []


def test_unresolvable_urn_is_kept_and_counted(
    client: CheckedClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A urn:uuid no entry carries is not proof of another patient: the resource is used (the
    prefetch searched this patient) and the unresolved reference is counted."""
    folder, name = CASES[0]
    bundle = patient_bundle(folder, name)
    baseline = post_bundle(client, bundle, "order-sign")
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Condition":
            entry["resource"]["subject"] = {"reference": f"urn:uuid:{uuid.uuid4()}"}
    with caplog.at_level(logging.INFO, logger="cds_service"):
        cards = post_bundle(client, bundle, "order-sign")
    assert comparable(cards) == comparable(baseline) and cards
    assert hook_log(caplog)["anomalies"].get("Condition.subject:unresolved") == 1


def _record(app: Any, body: dict[str, Any], service_id: str) -> PatientRecord:
    engine = app.extensions["cds_engine"]
    service = SERVICES_BY_ID[service_id]
    request = parse_hook_request(body, service, engine.config.max_bundle_entries)
    record: PatientRecord = engine.loader.load(request, service)
    return record


def _history(n_own: int, n_other: int) -> dict[str, Any]:
    own = [
        {
            "resourceType": "Condition",
            "id": f"c{i}",
            "subject": {"reference": "Patient/pt-1"},
            "code": {"text": "Low back pain"},
        }
        for i in range(n_own)
    ]
    other = [
        {
            "resourceType": "Condition",
            "id": f"x{i}",
            "subject": {"reference": f"urn:uuid:{uuid.UUID(int=i + 1)}"},
            "code": {"text": "Low back pain"},
        }
        for i in range(n_other)
    ]
    bundle = bundle_of(*own, *other)
    # the other patients are in the patient key's Bundle, so each urn resolves (to them)
    patients = bundle_of(
        {"resourceType": "Patient", "id": "pt-1"},
        *[{"resourceType": "Patient", "id": f"other-{i}"} for i in range(n_other)],
    )
    for i, entry in enumerate(patients["entry"][1:]):
        entry["fullUrl"] = f"urn:uuid:{uuid.UUID(int=i + 1)}"
    body = sandbox("order-sign-oxycodone.json")
    body.pop("fhirServer")
    body["prefetch"] = full_prefetch(conditions=bundle, patient=patients)
    return body


@pytest.mark.parametrize(
    "own,other,flagged",
    [
        (1, 3, True),  # 3 of 4 are someone else's
        (0, 5, True),
        (0, 2, False),  # too few to call the record unusable
        (4, 3, False),  # 3 of 7: not most of the record
        (3, 3, False),  # exactly half
    ],
)
def test_a_record_mostly_of_another_patient_is_flagged(
    caplog: pytest.LogCaptureFixture, own: int, other: int, flagged: bool
) -> None:
    """When most of the clinical resources (and at least 3) name another patient, the record
    says it is unusable and the hook log counts it; otherwise it does not."""
    app = make_app()
    body = _history(own, other)
    with caplog.at_level(logging.INFO, logger="cds_service"):
        response = CheckedClient(app.test_client()).post(SIGN, body)
    assert response.status_code == 200
    anomalies = hook_log(caplog)["anomalies"]
    assert anomalies.get("Condition:other-patient") == other
    assert ("record:mostly-other-patient" in anomalies) is flagged
    record = _record(app, body, "opioid-lbp-order-sign")
    assert record.unusable_reason == (UNUSABLE_OTHER_PATIENT if flagged else "")
    assert (record.other_patient_count, record.clinical_resource_count) == (other, own + other)
    assert len(record.of_type("Condition")) == own
    app.extensions["cds_engine"].close()


# --- medicationReference -------------------------------------------------------------------

ALPRAZOLAM_MED = {
    "resourceType": "Medication",
    "code": {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "308047",
                "display": "alprazolam 0.5 MG Oral Tablet",
            }
        ]
    },
}
OXY_MED = {
    "resourceType": "Medication",
    "code": {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "1049621",
                "display": "oxycodone hydrochloride 5 MG Oral Tablet",
            }
        ]
    },
}


def draft_naming(reference: str, *med_entries: dict[str, Any]) -> dict[str, Any]:
    """The sandbox oxycodone draft naming its drug by `reference`; an active alprazolam on
    record; `med_entries` added to the meds prefetch Bundle."""
    body = sandbox("order-sign-oxycodone.json")
    body["prefetch"] = full_prefetch(meds=bundle_of(ALPRAZOLAM))
    body["prefetch"]["meds"]["entry"] += list(med_entries)
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order.pop("medicationCodeableConcept")
    order["medicationReference"] = {"reference": reference}
    return body


def test_control_unresolved_draft_medication_gives_no_card(client: CheckedClient) -> None:
    """Without its Medication the draft is not known to be an opioid: no card (the control
    that makes the tests below able to fail)."""
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Medication/oxy", status=404)
        assert shipped(rule_ids(client.post(SIGN, draft_naming("Medication/oxy")))) == []


@pytest.mark.parametrize(
    "reference,entry",
    [
        (
            "urn:uuid:5b0e3c9a-6c55-4d1e-9a53-3f0d5c2b7e11",
            {"fullUrl": "urn:uuid:5b0e3c9a-6c55-4d1e-9a53-3f0d5c2b7e11", "resource": OXY_MED},
        ),
        (
            "urn:uuid:5B0E3C9A-6C55-4D1E-9A53-3F0D5C2B7E11",
            {"fullUrl": "urn:uuid:5b0e3c9a-6c55-4d1e-9a53-3f0d5c2b7e11", "resource": OXY_MED},
        ),
        (
            f"{EHR}/Medication/oxy/_history/2",
            {"fullUrl": f"{EHR}/Medication/oxy", "resource": dict(OXY_MED, id="oxy")},
        ),
        (f"{EHR}/Medication/oxy", {"resource": dict(OXY_MED, id="oxy")}),
        ("oxy", {"resource": dict(OXY_MED, id="oxy")}),
    ],
)
def test_medication_named_by_fullurl_absolute_or_bare_reference_is_found(
    client: CheckedClient, reference: str, entry: dict[str, Any]
) -> None:
    """A draft's Medication in the prefetch Bundle is found by urn:uuid (any case), absolute
    URL (with or without _history, any base) or bare id, without a FHIR call."""
    with responses.RequestsMock() as rsps:
        response = client.post(SIGN, draft_naming(reference, entry))
        assert len(rsps.calls) == 0
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]


def test_medication_in_the_draft_orders_bundle_is_found(client: CheckedClient) -> None:
    """A Medication sent inside context.draftOrders, named by its entry's urn:uuid, is read
    as the draft's drug and is not itself an order."""
    body = draft_naming("urn:uuid:0d1c0a77-1111-4aaa-8bbb-222233334444")
    body["context"]["draftOrders"]["entry"].append(
        {"fullUrl": "urn:uuid:0d1c0a77-1111-4aaa-8bbb-222233334444", "resource": OXY_MED}
    )
    with responses.RequestsMock():
        response = client.post(SIGN, body)
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]


def test_history_medication_named_by_urn_is_found(client: CheckedClient) -> None:
    """A benzodiazepine on record that names its Medication by urn:uuid counts as current."""
    body = sandbox("order-sign-oxycodone.json")
    history = dict(ALPRAZOLAM, medicationReference={"reference": "urn:uuid:aa-med-1"})
    history.pop("medicationCodeableConcept")
    meds = bundle_of(history)
    meds["entry"].append({"fullUrl": "urn:uuid:aa-med-1", "resource": ALPRAZOLAM_MED})
    body["prefetch"] = full_prefetch(meds=meds)
    with responses.RequestsMock():
        response = client.post(SIGN, body)
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]


def test_absolute_medication_url_on_the_fhir_server_is_fetched(client: CheckedClient) -> None:
    """An absolute Medication URL on the request's own FHIR server is read from it."""
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Medication/oxy", json=dict(OXY_MED, id="oxy"))
        response = client.post(SIGN, draft_naming(f"{FHIR}/Medication/oxy/_history/1"))
        assert len(rsps.calls) == 1
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]


def test_medication_url_on_another_server_is_not_fetched(
    client: CheckedClient, caplog: pytest.LogCaptureFixture
) -> None:
    """An absolute Medication URL on another server is never requested (the token stays
    home); it is counted as unresolved."""
    with responses.RequestsMock() as rsps, caplog.at_level(logging.INFO, logger="cds_service"):
        response = client.post(SIGN, draft_naming("https://elsewhere.example.com/Medication/oxy"))
        assert len(rsps.calls) == 0
    assert shipped(rule_ids(response)) == []
    assert hook_log(caplog)["anomalies"]["medicationReference:unresolved"] == 1


def test_evaluate_resolves_urn_references_of_a_patient_bundle(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    """`cds-service evaluate` on a patient Bundle whose references are urn:uuid fullUrls gives
    the same cards as with Patient/<id> references."""
    from cds_service.cli import main

    folder, name = CASES[0]
    bundle = patient_bundle(folder, name)
    outputs = []
    for variant in (bundle, rewrite(bundle, "urn:uuid of the Patient entry's fullUrl")):
        path = tmp_path / "bundle.json"
        path.write_text(json.dumps(variant), "utf-8")
        assert main(["evaluate", str(path), "--today", TODAY]) == 0
        outputs.append(comparable(json.loads(capsys.readouterr().out)["cards"]))
    assert outputs[0] == outputs[1] and outputs[0]


@pytest.mark.parametrize(
    "text,kind,rtype,rid",
    [
        ("Patient/p1", "relative", "Patient", "p1"),
        ("https://h.example/fhir/Patient/p1", "absolute", "Patient", "p1"),
        ("https://h.example/fhir/Patient/p1/_history/7", "absolute", "Patient", "p1"),
        ("Patient/p1/_history/7", "relative", "Patient", "p1"),
        ("urn:uuid:ABC", "urn", "", "ABC"),
        ("p1", "bare", "", "p1"),
        ("#m", "contained", "", "m"),
        ("Patient?identifier=x|1", "", "", ""),
        ("https://h.example/p1", "", "", ""),
    ],
)
def test_parse_reference_forms(text: str, kind: str, rtype: str, rid: str) -> None:
    """Each reference form is taken apart into kind, type and id."""
    parsed = parse_reference({"reference": text})
    assert (parsed.kind, parsed.resource_type, parsed.id) == (kind, rtype, rid)


def test_remembered_bundle_resolves_its_entries_in_the_order_remembered() -> None:
    """A Bundle remembered whole resolves its readable entries by Type/id and fullUrl, skips
    unreadable entries, and the first resource remembered under a key wins."""
    record = PatientRecord("p1")
    first = {"resourceType": "Condition", "id": "c1", "code": {"text": "first"}}
    record.remember(first, "urn:uuid:AAAA")
    later = {"resourceType": "Condition", "id": "c1", "code": {"text": "later"}}
    other = {"resourceType": "Procedure", "id": "x9"}
    record.remember_bundle(
        {
            "resourceType": "Bundle",
            "entry": [
                "junk",
                {"resource": {"id": "no-type"}},
                {"fullUrl": "urn:uuid:aaaa", "resource": later},
                {"fullUrl": "https://ehr.example/fhir/Procedure/x9", "resource": other},
            ],
        }
    )
    assert record.lookup("Condition/c1") is first
    assert record.lookup("urn:uuid:aaaa") is first
    assert record.lookup("https://ehr.example/fhir/Procedure/x9") is other
    assert record.lookup("Procedure/x9") is other
    assert record.lookup("None/no-type") is None
