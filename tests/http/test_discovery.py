"""Discovery and CORS: what the EHR and the sandbox see before any hook call."""

from __future__ import annotations

from conftest import CheckedClient

from cds_service.hooks.services import SERVICES


def test_discovery_lists_one_service_per_hook_with_prefetch(client: CheckedClient) -> None:
    """GET /cds-services lists patient-view, order-select and order-sign with stable ids."""
    body = client.get("/cds-services").get_json()
    by_hook = {s["hook"]: s for s in body["services"]}
    assert set(by_hook) == {"patient-view", "order-select", "order-sign"}
    assert by_hook["order-sign"]["id"] == "opioid-lbp-order-sign"
    for service in body["services"]:
        assert service["title"] and service["description"] and service["usageRequirements"]
        prefetch = service["prefetch"]
        assert prefetch["patient"] == "Patient/{{context.patientId}}"
        # every status of MedicationRequest: no status filter in the template
        assert prefetch["meds"] == "MedicationRequest?patient={{context.patientId}}"
        assert {"conditions", "procedures", "serviceRequests"} <= set(prefetch)


def test_discovery_is_served_from_the_registry(client: CheckedClient) -> None:
    """Adding a service to the registry is enough for discovery to list it."""
    ids = [s["id"] for s in client.get("/cds-services").get_json()["services"]]
    assert ids == [s.id for s in SERVICES]


def test_cors_preflight_on_all_three_endpoint_kinds(client: CheckedClient) -> None:
    """A browser client may preflight discovery, hook and feedback URLs with Authorization."""
    for path in (
        "/cds-services",
        "/cds-services/opioid-lbp-order-sign",
        "/cds-services/opioid-lbp-order-sign/feedback",
    ):
        response = client.client.options(
            path,
            headers={
                "Origin": "https://sandbox.cds-hooks.org",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] in {
            "*",
            "https://sandbox.cds-hooks.org",
        }
        allowed = response.headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed


def test_cors_header_on_errors_too(client: CheckedClient) -> None:
    """Even a 404 carries Access-Control-Allow-Origin so the browser can read the error."""
    response = client.post(
        "/cds-services/nope", {"x": 1}, headers={"Origin": "https://sandbox.cds-hooks.org"}
    )
    assert response.status_code == 404
    assert "Access-Control-Allow-Origin" in response.headers


def test_cors_origins_are_configurable() -> None:
    """With an explicit origin list, other origins get no CORS grant."""
    from conftest import make_app

    app = make_app(cors_origins=("https://ehr.example.org",))
    c = app.test_client()
    ok = c.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
    assert ok.headers.get("Access-Control-Allow-Origin") == "https://ehr.example.org"
    other = c.get("/cds-services", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in other.headers
