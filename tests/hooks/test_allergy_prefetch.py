"""The allergies prefetch key: declared by the ordering services, read from prefetch or the
FHIR server, and an allergy list that could not be read never reads as "no allergies"."""

from __future__ import annotations

from typing import Any

import pytest
import responses
from conftest import (
    FHIR,
    SELECT,
    SIGN,
    CheckedClient,
    bundle_of,
    fhir_search,
    full_prefetch,
    sandbox,
    sign_body,
)

SCT = "http://snomed.info/sct"
NOT_CHECKED = "Allergies not checked"
NAPROXEN = "Replace oxycodone with naproxen 500 mg twice daily as needed"
ACETAMINOPHEN = "Replace oxycodone with acetaminophen 1,000 mg up to three times daily as needed"
IBUPROFEN_ALLERGY = {
    "resourceType": "AllergyIntolerance",
    "id": "ai-1",
    "clinicalStatus": {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                "code": "active",
            }
        ]
    },
    "code": {"coding": [{"system": SCT, "code": "293619005", "display": "Allergy to ibuprofen"}]},
    "patient": {"reference": "Patient/pt-1"},
}


def body(**keys: Any) -> dict[str, Any]:
    """The sandbox oxycodone order for low back pain, every other key prefetched."""
    conditions = sandbox("order-sign-oxycodone.json")["prefetch"]["conditions"]
    prefetch = full_prefetch(conditions=conditions)
    for name, value in keys.items():
        if value is ...:
            prefetch.pop(name)
        else:
            prefetch[name] = value
    return sign_body(**prefetch)


ADVICE = {"opioid-start-chronic-lbp", "first-line-therapy-not-tried"}


def first_line(client: CheckedClient, request: dict[str, Any]) -> dict[str, Any]:
    """The card advising first-line therapy instead of the opioid (an opioid start for chronic
    low back pain here: the sandbox patient's pain began in 2025)."""
    response = client.post(SIGN, request)
    assert response.status_code == 200, response.get_json()
    cards = response.get_json()["cards"]
    card: dict[str, Any] = next(c for c in cards if c["source"]["topic"]["code"] in ADVICE)
    return card


def labels(card: dict[str, Any]) -> list[str]:
    return [s["label"] for s in card.get("suggestions", [])]


def test_ordering_services_declare_the_allergies_key(client: CheckedClient) -> None:
    """order-select and order-sign ask for AllergyIntolerance; the chart review does not."""
    services = {s["hook"]: s for s in client.get("/cds-services").get_json()["services"]}
    template = "AllergyIntolerance?patient={{context.patientId}}"
    assert services["order-sign"]["prefetch"]["allergies"] == template
    assert services["order-select"]["prefetch"]["allergies"] == template
    assert "allergies" not in services["patient-view"]["prefetch"]
    assert "AllergyIntolerance" in services["order-sign"]["usageRequirements"]


def test_a_prefetched_nsaid_allergy_bars_naproxen(client: CheckedClient) -> None:
    """With an ibuprofen allergy prefetched no FHIR call is made and acetaminophen is offered."""
    with responses.RequestsMock() as rsps:
        card = first_line(client, body(allergies=bundle_of(IBUPROFEN_ALLERGY)))
        assert len(rsps.calls) == 0
    assert ACETAMINOPHEN in labels(card) and NAPROXEN not in labels(card)
    # the advice says why (the allergy line itself comes after the three lines that decide
    # an opioid-start card, so the opioid-naive line is never pushed off by it)
    assert "acetaminophen (an NSAID is current or contraindicated)" in card["detail"]
    assert "Opioid-naive" in card["detail"]


def test_an_empty_allergy_list_offers_naproxen(client: CheckedClient) -> None:
    """A prefetched, empty allergy list is complete: naproxen, and no 'not checked' line."""
    card = first_line(client, body())
    assert NAPROXEN in labels(card)
    assert NOT_CHECKED.lower() not in card["detail"].lower()


def test_allergies_not_prefetched_are_fetched_from_the_fhir_server(client: CheckedClient) -> None:
    """Without the key the service searches AllergyIntolerance (all statuses, large pages);
    the allergy found bars naproxen."""
    with responses.RequestsMock() as rsps:
        rsps.get(fhir_search("AllergyIntolerance"), json=bundle_of(IBUPROFEN_ALLERGY))
        card = first_line(client, body(allergies=...))
        urls = [str(c.request.url) for c in rsps.calls]
    assert urls == [f"{FHIR}/AllergyIntolerance?patient=pt-1&_count=500"]
    assert ACETAMINOPHEN in labels(card) and NAPROXEN not in labels(card)


def test_order_select_reads_allergies_too(client: CheckedClient) -> None:
    """The order-select service fetches the allergy list it was not given."""
    request = body(allergies=...)
    request["hook"] = "order-select"
    request["context"]["selections"] = ["MedicationRequest/request-123"]
    with responses.RequestsMock() as rsps:
        rsps.get(fhir_search("AllergyIntolerance"), json=bundle_of(IBUPROFEN_ALLERGY))
        response = client.post(SELECT, request)
        assert len(rsps.calls) == 1
    assert response.status_code == 200
    offered = [s["label"] for c in response.get_json()["cards"] for s in c.get("suggestions", [])]
    assert ACETAMINOPHEN in offered and NAPROXEN not in offered


@pytest.mark.parametrize(
    "status",
    [500, 403, 404],
)
def test_a_failed_allergy_read_says_allergies_were_not_checked(
    client: CheckedClient, status: int
) -> None:
    """When the FHIR server cannot give the allergy list the card still comes, and says the
    allergies were not checked next to the alternative it offers."""
    with responses.RequestsMock() as rsps:
        rsps.get(fhir_search("AllergyIntolerance"), status=status)
        card = first_line(client, body(allergies=...))
    assert NAPROXEN in labels(card)
    assert NOT_CHECKED.lower() in card["detail"].lower()


@pytest.mark.parametrize(
    "value",
    [
        {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "forbidden"}]},
        "not a bundle",
        {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"id": "x"}}]},
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [],
            "link": [{"relation": "next", "url": f"{FHIR}/AllergyIntolerance?page=2"}],
        },
    ],
    ids=["operation-outcome", "junk", "unreadable-entry", "next-page-not-followed"],
)
def test_an_unreadable_allergy_prefetch_is_not_an_empty_list(
    client: CheckedClient, value: Any
) -> None:
    """An allergies prefetch that cannot be read (an OperationOutcome, junk, an entry that is
    not a resource, a page whose next page cannot be fetched) with no FHIR access says the
    allergies were not checked: it never reads as "no allergies"."""
    request = body(allergies=value)
    request.pop("fhirServer")
    card = first_line(client, request)
    assert NOT_CHECKED.lower() in card["detail"].lower()


def test_no_line_when_no_drug_alternative_is_offered(client: CheckedClient) -> None:
    """An unread allergy list is not mentioned when the card offers no drug to check it for
    (an NSAID and acetaminophen are both current)."""
    ibuprofen = {
        "resourceType": "MedicationRequest",
        "id": "ibu",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/pt-1"},
        "authoredOn": "2026-11-20",
        "medicationCodeableConcept": {"text": "Ibuprofen 600 MG Oral Tablet"},
        "dispenseRequest": {"expectedSupplyDuration": {"value": 30, "unit": "days"}},
    }
    tylenol = dict(ibuprofen, id="apap", medicationCodeableConcept={"text": "Tylenol 500 mg"})
    request = body(allergies="not a bundle", meds=bundle_of(ibuprofen, tylenol))
    request.pop("fhirServer")
    response = client.post(SIGN, request)
    assert response.status_code == 200
    assert all(NOT_CHECKED.lower() not in c["detail"].lower() for c in response.get_json()["cards"])
