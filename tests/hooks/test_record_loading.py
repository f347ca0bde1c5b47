"""Loading the patient record: the four prefetch states, the FHIR fallback, paging, deadlines."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import requests
import responses
from conftest import (
    ALPRAZOLAM,
    FHIR,
    SIGN,
    CheckedClient,
    bundle_of,
    empty_bundle,
    fhir_search,
    full_prefetch,
    make_app,
    register_rest,
    rule_ids,
    shipped,
    sign_body,
)


def test_absent_keys_are_fetched_from_the_fhir_server(client: CheckedClient) -> None:
    """A key the client left out is read from fhirServer; its data reaches the rules."""
    with responses.RequestsMock() as rsps:
        rsps.get(fhir_search("MedicationRequest"), json=bundle_of(ALPRAZOLAM))
        register_rest(rsps, skip=("MedicationRequest",))
        response = client.post(SIGN, sign_body())
        fetched = {str(call.request.url).split("?")[0].rsplit("/", 1)[-1] for call in rsps.calls}
    assert response.status_code == 200
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]
    assert {"MedicationRequest", "Condition", "pt-1"} <= fetched


def test_prefetched_keys_are_not_fetched(client: CheckedClient) -> None:
    """With every key prefetched the FHIR server is never called."""
    with responses.RequestsMock() as rsps:
        response = client.post(SIGN, sign_body(**full_prefetch(meds=bundle_of(ALPRAZOLAM))))
        assert len(rsps.calls) == 0
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]


def test_null_prefetch_means_no_data_and_no_fetch(client: CheckedClient) -> None:
    """A null key means the client has no such data: nothing is fetched, no card fires."""
    prefetch = full_prefetch()
    prefetch["meds"] = None
    with responses.RequestsMock() as rsps:
        response = client.post(SIGN, sign_body(**prefetch))
        assert len(rsps.calls) == 0
    assert response.status_code == 200 and shipped(rule_ids(response)) == []


@pytest.mark.parametrize(
    "failed",
    [
        {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]},
        bundle_of(
            {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "exception"}],
            }
        ),
        "garbage",
        [1, 2, 3],
    ],
)
def test_failed_prefetch_is_treated_as_absent(client: CheckedClient, failed: Any) -> None:
    """An OperationOutcome (alone or in a Bundle) or junk in a key makes the service fetch it."""
    prefetch = full_prefetch()
    prefetch["meds"] = failed
    with responses.RequestsMock() as rsps:
        rsps.get(fhir_search("MedicationRequest"), json=bundle_of(ALPRAZOLAM))
        response = client.post(SIGN, sign_body(**prefetch))
        assert len(rsps.calls) == 1
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]


def test_failed_prefetch_without_fhir_access_is_412(client: CheckedClient) -> None:
    """An OperationOutcome in a required key with no fhirServer to ask is 412 naming the key."""
    prefetch = full_prefetch()
    prefetch["meds"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    body = sign_body(**prefetch)
    body.pop("fhirServer")
    response = client.post(SIGN, body)
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.meds"]


def test_missing_required_keys_without_fhir_server_are_412(client: CheckedClient) -> None:
    """No prefetch and no fhirServer: 412 naming every required key."""
    body = sign_body()
    body.pop("fhirServer")
    response = client.post(SIGN, body)
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == [
        "prefetch.patient",
        "prefetch.meds",
        "prefetch.conditions",
    ]


def test_missing_optional_keys_do_not_block_advice(client: CheckedClient) -> None:
    """Procedures and the like are optional: without them the card still comes back."""
    prefetch = full_prefetch(meds=bundle_of(ALPRAZOLAM))
    for key in ("procedures", "serviceRequests", "dispenses", "statements"):
        prefetch.pop(key)
    body = sign_body(**prefetch)
    body.pop("fhirServer")
    response = client.post(SIGN, body)
    assert response.status_code == 200 and shipped(rule_ids(response)) == ["opioid-benzodiazepine"]


def test_next_link_is_followed_with_fhir_access(client: CheckedClient) -> None:
    """A prefetched Bundle with a next link is completed from the FHIR server."""
    page1 = empty_bundle()
    page1["link"] = [{"relation": "next", "url": f"{FHIR}/MedicationRequest?page=2"}]
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/MedicationRequest?page=2", json=bundle_of(ALPRAZOLAM))
        response = client.post(SIGN, sign_body(**full_prefetch(meds=page1)))
        assert len(rsps.calls) == 1
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]


def test_fetched_search_is_paged(client: CheckedClient) -> None:
    """A fetched search that pages is read page by page up to the cap."""
    page1 = empty_bundle()
    page1["link"] = [{"relation": "next", "url": f"{FHIR}/MedicationRequest?page=2"}]
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/MedicationRequest?page=2", json=bundle_of(ALPRAZOLAM))
        rsps.get(fhir_search("MedicationRequest"), json=page1)
        register_rest(rsps, skip=("MedicationRequest",))
        response = client.post(SIGN, sign_body())
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]


def test_endless_paging_stops_at_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    """A server that always says 'next' is read at most CDS_FHIR_MAX_PAGES pages; data partial."""
    app = make_app(fhir_max_pages=3)
    client = CheckedClient(app.test_client())
    looping = empty_bundle()
    looping["link"] = [{"relation": "next", "url": f"{FHIR}/MedicationRequest?page=n"}]
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/MedicationRequest?page=n", json=looping)
        with caplog.at_level(logging.INFO, logger="cds_service"):
            response = client.post(SIGN, sign_body(**full_prefetch(meds=looping)))
        assert len(rsps.calls) == 2
    assert response.status_code == 200
    hook_logs = [r for r in caplog.records if r.msg == "hook"]
    assert hook_logs[-1].__dict__["partial"] == ["medication-orders"]


def test_next_link_without_fhir_access_marks_data_partial(
    client: CheckedClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Without FHIR access a paged Bundle is used as it is and the key is logged as partial."""
    page1 = bundle_of(ALPRAZOLAM)
    page1["link"] = [{"relation": "next", "url": f"{FHIR}/MedicationRequest?page=2"}]
    body = sign_body(**full_prefetch(meds=page1))
    body.pop("fhirServer")
    with caplog.at_level(logging.INFO, logger="cds_service"):
        response = client.post(SIGN, body)
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]
    assert [r for r in caplog.records if r.msg == "hook"][-1].__dict__["partial"] == [
        "medication-orders"
    ]


def test_next_link_to_another_origin_is_not_followed(client: CheckedClient) -> None:
    """A next link pointing at another host is never followed (the token stays home)."""
    page1 = bundle_of(ALPRAZOLAM)
    page1["link"] = [{"relation": "next", "url": "http://127.0.0.2:9999/MedicationRequest?p=2"}]
    with responses.RequestsMock() as rsps:
        response = client.post(SIGN, sign_body(**full_prefetch(meds=page1)))
        assert len(rsps.calls) == 0
    assert response.status_code == 200


def test_bearer_token_is_sent_to_the_fhir_server(client: CheckedClient) -> None:
    """fhirAuthorization's access token is sent as a Bearer header on fallback reads."""
    body = sign_body(**{k: v for k, v in full_prefetch().items() if k != "meds"})
    body["fhirAuthorization"] = {
        "access_token": "secret-token-123",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds-service",
    }
    with responses.RequestsMock() as rsps:
        rsps.get(fhir_search("MedicationRequest"), json=empty_bundle())
        client.post(SIGN, body)
        assert rsps.calls[0].request.headers["Authorization"] == "Bearer secret-token-123"


def test_sandbox_without_token_reads_an_open_server(client: CheckedClient) -> None:
    """The sandbox sends fhirServer without fhirAuthorization: no Authorization header is sent."""
    with responses.RequestsMock() as rsps:
        register_rest(rsps)
        client.post(SIGN, sign_body())
        assert rsps.calls and all("Authorization" not in c.request.headers for c in rsps.calls)


def test_redirects_are_not_followed(client: CheckedClient) -> None:
    """A redirect from the FHIR server is a failed read, never followed to another host."""
    body = sign_body(**{k: v for k, v in full_prefetch().items() if k != "meds"})
    with responses.RequestsMock() as rsps:
        rsps.get(
            fhir_search("MedicationRequest"),
            status=302,
            headers={"Location": "http://127.0.0.9/steal"},
        )
        response = client.post(SIGN, body)
        assert len(rsps.calls) == 1
    assert response.status_code == 412


@pytest.mark.parametrize(
    "failure", ["401", "500", "timeout", "connection", "malformed", "not-fhir", "operation-outcome"]
)
def test_fhir_failures_end_in_412(client: CheckedClient, failure: str) -> None:
    """401, 500, timeouts, refused connections and junk from the FHIR server: 412, no hang."""
    body = sign_body(**{k: v for k, v in full_prefetch().items() if k != "meds"})
    with responses.RequestsMock() as rsps:
        url = fhir_search("MedicationRequest")
        if failure in {"401", "500"}:
            rsps.get(url, status=int(failure), json={"resourceType": "OperationOutcome"})
        elif failure == "timeout":
            rsps.get(url, body=requests.exceptions.ReadTimeout("slow"))
        elif failure == "connection":
            rsps.get(url, body=requests.exceptions.ConnectionError("refused"))
        elif failure == "malformed":
            rsps.get(url, body="{not json", content_type="application/fhir+json")
        elif failure == "not-fhir":
            rsps.get(url, json=[1, 2])
        else:
            rsps.get(url, json={"resourceType": "OperationOutcome", "issue": []})
        response = client.post(SIGN, body)
    assert response.status_code == 412
    assert response.get_json()["issue"][0]["expression"] == ["prefetch.meds"]


def test_slow_call_is_cut_at_the_deadline_while_others_run_in_parallel() -> None:
    """One FHIR read that hangs is abandoned at the deadline; the others were read in parallel."""
    app = make_app(fhir_deadline=0.6, fhir_read_timeout=5.0)
    client = CheckedClient(app.test_client())

    def slow(_: Any) -> tuple[int, dict[str, str], str]:
        time.sleep(2.5)
        return 200, {}, '{"resourceType": "Bundle", "entry": []}'

    def medium(_: Any) -> tuple[int, dict[str, str], str]:
        time.sleep(0.3)
        return 200, {}, '{"resourceType": "Bundle", "entry": []}'

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.GET, fhir_search("Procedure"), callback=slow)
        for rtype in (
            "MedicationRequest",
            "Condition",
            "ServiceRequest",
            "MedicationDispense",
            "MedicationStatement",
            "Encounter",
            "CarePlan",
        ):
            rsps.add_callback(responses.GET, fhir_search(rtype), callback=medium)
        rsps.get(f"{FHIR}/Patient/pt-1", json={"resourceType": "Patient", "id": "pt-1"})
        started = time.monotonic()
        response = client.post(SIGN, sign_body())
        elapsed = time.monotonic() - started
    # five 0.3 s reads in series would take 1.5 s; in parallel they fit in the 0.6 s deadline,
    # and the hanging optional read does not hold the answer.
    assert response.status_code == 200
    assert elapsed < 1.4


def test_slow_required_read_gives_412_within_the_deadline() -> None:
    """A required key whose read hangs is answered 412 soon after the deadline."""
    app = make_app(fhir_deadline=0.4, fhir_read_timeout=5.0)
    client = CheckedClient(app.test_client())

    def slow(_: Any) -> tuple[int, dict[str, str], str]:
        time.sleep(2.0)
        return 200, {}, '{"resourceType": "Bundle", "entry": []}'

    body = sign_body(**{k: v for k, v in full_prefetch().items() if k != "meds"})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(responses.GET, fhir_search("MedicationRequest"), callback=slow)
        started = time.monotonic()
        response = client.post(SIGN, body)
        elapsed = time.monotonic() - started
    assert response.status_code == 412
    assert elapsed < 1.5


def test_non_allowlisted_fhir_server_is_never_contacted(client: CheckedClient) -> None:
    """fhirServer outside the allowlist (default: loopback only) is not called: 412."""
    body = sign_body()
    body["fhirServer"] = "https://fhir.example.com/r4"
    with responses.RequestsMock() as rsps:
        response = client.post(SIGN, body)
        assert len(rsps.calls) == 0
    assert response.status_code == 412


@pytest.mark.parametrize(
    "server,allowed",
    [
        ("http://127.0.0.1:8081", True),
        ("http://localhost:8080/fhir", True),
        ("http://[::1]:8080/fhir", True),
        ("http://10.0.0.5/fhir", False),
        ("http://169.254.169.254/latest", False),
        ("https://fhir.example.com/r4", False),
        ("file:///etc/passwd", False),
        ("http://user:pw@127.0.0.1/fhir", False),
    ],
)
def test_default_allowlist_is_loopback_only(server: str, allowed: bool) -> None:
    """The default policy allows loopback FHIR bases only."""
    from cds_service.config import Config
    from cds_service.fhir.client import FhirAccessPolicy

    assert FhirAccessPolicy(Config()).allows(server) is allowed


def test_configured_allowlist_requires_https_for_remote_servers() -> None:
    """A listed remote base is allowed over https, not over plain http unless configured."""
    from cds_service.config import Config
    from cds_service.fhir.client import FhirAccessPolicy

    policy = FhirAccessPolicy(
        Config(fhir_allowlist=("https://fhir.example.com/r4", "http://fhir.example.com/r4"))
    )
    assert policy.allows("https://fhir.example.com/r4")
    assert policy.allows("https://fhir.example.com/r4/")
    assert not policy.allows("https://fhir.example.com/r4evil")
    assert not policy.allows("https://fhir.example.com.evil.org/r4")
    assert not policy.allows("http://fhir.example.com/r4")


def test_oversized_fhir_response_is_refused() -> None:
    """A FHIR response larger than CDS_FHIR_MAX_RESPONSE_BYTES is not read into memory."""
    app = make_app(fhir_max_response_bytes=1000)
    client = CheckedClient(app.test_client())
    big = bundle_of(*[dict(ALPRAZOLAM, id=f"a{i}") for i in range(50)])
    body = sign_body(**{k: v for k, v in full_prefetch().items() if k != "meds"})
    with responses.RequestsMock() as rsps:
        rsps.get(fhir_search("MedicationRequest"), json=big)
        response = client.post(SIGN, body)
    assert response.status_code == 412


MED_OXY_ER = {
    "resourceType": "Medication",
    "id": "med-1",
    "code": {
        "coding": [
            {
                "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "code": "1049593",
                "display": "12 HR Oxycodone Hydrochloride 60 MG Extended Release Oral Tablet",
            }
        ]
    },
}


def _draft_with_reference(reference: str, contained: list[Any] | None = None) -> dict[str, Any]:
    body = sign_body(**full_prefetch(meds=bundle_of(ALPRAZOLAM)))
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    order.pop("medicationCodeableConcept")
    order["medicationReference"] = {"reference": reference}
    if contained:
        order["contained"] = contained
    return body


def test_medication_reference_to_contained_medication(client: CheckedClient) -> None:
    """A draft naming its drug through a contained Medication is classified."""
    body = _draft_with_reference("#med-1", [MED_OXY_ER])
    with responses.RequestsMock():
        response = client.post(SIGN, body)
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]


def test_medication_reference_to_prefetched_medication(client: CheckedClient) -> None:
    """A Medication included in the prefetched Bundle resolves the reference."""
    body = _draft_with_reference("Medication/med-1")
    body["prefetch"]["meds"]["entry"].append(
        {"resource": MED_OXY_ER, "search": {"mode": "include"}}
    )
    with responses.RequestsMock():
        response = client.post(SIGN, body)
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]


def test_medication_reference_is_fetched(client: CheckedClient) -> None:
    """A Medication neither contained nor prefetched is read from the FHIR server."""
    body = _draft_with_reference("Medication/med-1")
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Medication/med-1", json=MED_OXY_ER)
        response = client.post(SIGN, body)
        assert len(rsps.calls) == 1
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]


def test_unresolvable_medication_reference_is_quiet(client: CheckedClient) -> None:
    """A reference that cannot be resolved yields no guess and no error."""
    body = _draft_with_reference("Medication/missing")
    with responses.RequestsMock() as rsps:
        rsps.get(f"{FHIR}/Medication/missing", status=404)
        response = client.post(SIGN, body)
    assert response.status_code == 200 and shipped(rule_ids(response)) == []


def test_resources_of_another_patient_are_ignored(client: CheckedClient) -> None:
    """A benzodiazepine order whose subject is another patient never triggers a card."""
    other = dict(ALPRAZOLAM, subject={"reference": "Patient/someone-else"})
    response = client.post(SIGN, sign_body(**full_prefetch(meds=bundle_of(other))))
    assert shipped(rule_ids(response)) == []


def test_fallback_searches_ask_for_large_pages(client: CheckedClient) -> None:
    """The service's own searches ask for 500 per page, so long histories need few pages."""
    with responses.RequestsMock() as rsps:
        register_rest(rsps)
        client.post(SIGN, sign_body())
        urls = [str(c.request.url) for c in rsps.calls]
    searches = [u for u in urls if "?" in u]
    assert searches and all("_count=500" in u for u in searches)
    assert any(u.endswith("/Patient/pt-1") for u in urls)


# --- Encounter and CarePlan: more places the chart records hospice and terminal care --------

HOSPICE_ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "enc-hospice",
    "status": "in-progress",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
    "type": [
        {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "385763009", "display": "Hospice care"}
            ]
        }
    ],
    "subject": {"reference": "urn:uuid:pt-1"},
    "period": {"start": "2026-10-01"},
}
TERMINAL_CARE_PLAN = {
    "resourceType": "CarePlan",
    "id": "cp-terminal",
    "status": "active",
    "intent": "plan",
    "category": [
        {
            "coding": [
                {
                    "system": "http://snomed.info/sct",
                    "code": "182964004",
                    "display": "Terminal care",
                }
            ]
        }
    ],
    "subject": {"reference": f"{FHIR}/Patient/pt-1"},
}


def load_record(body: dict[str, Any], service_id: str = "opioid-lbp-order-sign") -> Any:
    """The PatientRecord the service builds for a request (the loader the HTTP route uses)."""
    from cds_service.hooks.request import parse_hook_request
    from cds_service.hooks.services import SERVICES_BY_ID

    app = make_app()
    engine = app.extensions["cds_engine"]
    service = SERVICES_BY_ID[service_id]
    try:
        return engine.loader.load(
            parse_hook_request(body, service, engine.config.max_bundle_entries), service
        )
    finally:
        engine.close()


def test_discovery_lists_encounter_and_care_plan_keys(client: CheckedClient) -> None:
    """Every service asks for the patient's Encounters and CarePlans as optional prefetch."""
    services = client.get("/cds-services").get_json()["services"]
    assert len(services) == 3
    for service in services:
        assert service["prefetch"]["encounters"] == "Encounter?patient={{context.patientId}}"
        assert service["prefetch"]["carePlans"] == "CarePlan?patient={{context.patientId}}"
        assert "Encounter and CarePlan" in service["usageRequirements"]


def test_prefetched_encounters_and_care_plans_are_read(client: CheckedClient) -> None:
    """Prefetched Encounters and CarePlans reach the record's buckets with no FHIR call; one
    of another patient is left out."""
    other = dict(HOSPICE_ENCOUNTER, id="enc-other", subject={"reference": "Patient/pt-2"})
    body = sign_body(
        **full_prefetch(
            encounters=bundle_of(HOSPICE_ENCOUNTER, other), carePlans=bundle_of(TERMINAL_CARE_PLAN)
        )
    )
    with responses.RequestsMock() as rsps:
        assert client.post(SIGN, body).status_code == 200
        assert len(rsps.calls) == 0
        record = load_record(body)
    assert [e["id"] for e in record.of_type("Encounter")] == ["enc-hospice"]
    assert [c["id"] for c in record.of_type("CarePlan")] == ["cp-terminal"]
    assert record.anomalies["Encounter:other-patient"] == 1
    assert not record.unavailable


def test_encounters_and_care_plans_are_fetched_when_not_prefetched(client: CheckedClient) -> None:
    """Without the keys the service searches the FHIR server for them (all statuses, large
    pages) and the answers reach the record."""
    prefetch = full_prefetch()
    prefetch.pop("encounters")
    prefetch.pop("carePlans")
    body = sign_body(**prefetch)
    with responses.RequestsMock() as rsps:
        rsps.get(fhir_search("Encounter"), json=bundle_of(HOSPICE_ENCOUNTER))
        rsps.get(fhir_search("CarePlan"), json=bundle_of(TERMINAL_CARE_PLAN))
        assert client.post(SIGN, body).status_code == 200
        urls = sorted(str(c.request.url) for c in rsps.calls)
        record = load_record(body)
    assert urls == [
        f"{FHIR}/CarePlan?patient=pt-1&_count=500",
        f"{FHIR}/Encounter?patient=pt-1&_count=500",
    ]
    assert [e["id"] for e in record.of_type("Encounter")] == ["enc-hospice"]
    assert [c["id"] for c in record.of_type("CarePlan")] == ["cp-terminal"]


def test_unobtainable_encounters_are_optional(caplog: pytest.LogCaptureFixture) -> None:
    """A failed Encounter or CarePlan read never blocks advice: the keys are logged as
    unavailable and the card still comes back."""
    prefetch = full_prefetch(meds=bundle_of(ALPRAZOLAM))
    prefetch.pop("encounters")
    prefetch.pop("carePlans")
    client = CheckedClient(make_app().test_client())
    with responses.RequestsMock() as rsps, caplog.at_level(logging.INFO, logger="cds_service"):
        rsps.get(fhir_search("Encounter"), status=500)
        rsps.get(fhir_search("CarePlan"), status=403)
        response = client.post(SIGN, sign_body(**prefetch))
    assert shipped(rule_ids(response)) == ["opioid-benzodiazepine"]
    hook = [r for r in caplog.records if r.msg == "hook"][-1].__dict__
    assert hook["unavailable"] == ["carePlans", "encounters"]


def test_null_encounter_key_means_none_and_no_fetch() -> None:
    """A null encounters/carePlans key is an empty, complete answer: nothing is fetched."""
    body = sign_body(**full_prefetch(encounters=None, carePlans=None))
    with responses.RequestsMock() as rsps:
        record = load_record(body)
        assert len(rsps.calls) == 0
    assert (
        record.of_type("Encounter") == []
        and record.of_type("CarePlan") == []
        and not record.unavailable
    )


def test_resources_of_another_patient_are_taken_out_in_order_and_duplicates_count_once() -> None:
    """Among one type's resources, those naming another patient are left out and counted,
    one that cannot be told is kept and counted, the rest keep their order, a resource in
    two Bundles is filed once, and a type with nothing kept has no resources."""

    def encounter(rid: str, subject: dict[str, Any] | None) -> dict[str, Any]:
        out = dict(HOSPICE_ENCOUNTER, id=rid)
        out.pop("subject", None)
        if subject is not None:
            out["subject"] = subject
        return out

    own = {"reference": "Patient/pt-1"}
    encounters = [
        encounter("e1", own),
        encounter("e2", {"reference": "Patient/pt-2"}),
        encounter("e3", {"reference": "Group/g1"}),
        encounter("e4", None),
        encounter("e5", {"reference": "https://other.example/fhir/Patient/pt-9"}),
        encounter("e6", own),
        encounter("e1", own),
    ]
    care_plan = dict(TERMINAL_CARE_PLAN, subject={"reference": "Patient/pt-3"})
    body = sign_body(
        **full_prefetch(encounters=bundle_of(*encounters), carePlans=bundle_of(care_plan))
    )
    record = load_record(body)
    assert [e["id"] for e in record.of_type("Encounter")] == ["e1", "e3", "e4", "e6"]
    assert record.anomalies["Encounter:other-patient"] == 2
    assert record.anomalies["Encounter.subject:unresolved"] == 1
    assert record.anomalies["CarePlan:other-patient"] == 1
    assert record.of_type("CarePlan") == [] and "CarePlan" not in record.resources
