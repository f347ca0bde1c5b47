"""Keep-alive after early errors, against a real `cds-service serve` on loopback: a 404, 405,
415 or 413 answered without reading a large body must not break the client's connection."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator

import pytest
from conftest import full_prefetch, sandbox
from fault_servers import ServedService

SIGN = "/cds-services/opioid-lbp-order-sign"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def service() -> Iterator[ServedService]:
    with ServedService(
        env={"CDS_MAX_BODY_BYTES": str(4 * MIB), "CDS_HTTP_DRAIN_MAX_BYTES": str(8 * MIB)}
    ) as served:
        yield served


def _next_call_works(conn: http.client.HTTPConnection) -> bool:
    conn.request("GET", "/cds-services")
    response = conn.getresponse()
    response.read()
    return response.status == 200


@pytest.mark.parametrize(
    ("method", "path", "content_type", "size", "status"),
    [
        ("POST", "/cds-services/no-such-service", "application/json", 2 * MIB, 404),
        ("POST", "/cds-services", "application/json", 2 * MIB, 405),
        ("PUT", SIGN, "application/json", 2 * MIB, 405),
        ("POST", SIGN, "text/plain", 2 * MIB, 415),
        ("POST", SIGN, "application/json", 6 * MIB, 413),
    ],
)
def test_early_error_on_a_large_body_keeps_the_connection_usable(
    service: ServedService, method: str, path: str, content_type: str, size: int, status: int
) -> None:
    """The early 4xx is read in full, says keep-alive, and the next call on the same
    connection gets its answer (the unread body was drained)."""
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    conn.request(method, path, body=b" " * size, headers={"Content-Type": content_type})
    response = conn.getresponse()
    body = json.loads(response.read())
    assert response.status == status
    assert body["resourceType"] == "OperationOutcome"
    assert response.getheader("Connection") == "keep-alive"
    assert _next_call_works(conn)
    assert _next_call_works(conn)
    conn.close()


def test_valid_call_after_an_early_error_on_the_same_connection(service: ServedService) -> None:
    """A real hook call succeeds on a connection whose previous request was a 404 with a body."""
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    conn.request(
        "POST", "/cds-services/nope", body=b"x" * MIB, headers={"Content-Type": "application/json"}
    )
    conn.getresponse().read()
    body = sandbox("order-sign-oxycodone.json")
    body.pop("fhirServer")
    body["prefetch"] = full_prefetch(conditions=body["prefetch"]["conditions"])
    conn.request("POST", SIGN, body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert "cards" in json.loads(response.read())
    conn.close()


def test_body_over_the_drain_limit_is_answered_with_connection_close(
    service: ServedService,
) -> None:
    """A body larger than CDS_HTTP_DRAIN_MAX_BYTES is not drained: the answer says
    `Connection: close`, so the client knows to open a new connection for its next call."""
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    conn.putrequest("POST", "/cds-services/nope")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(64 * MIB))
    conn.endheaders()
    conn.send(b" " * 1024)  # the client stops after 1 KiB of its declared 64 MiB
    response = conn.getresponse()
    response.read()
    assert response.status == 404
    assert response.getheader("Connection") == "close"
    conn.close()
    fresh = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    assert _next_call_works(fresh)
    fresh.close()


def _hook_body(n: int) -> bytes:
    body = sandbox("order-sign-oxycodone.json")
    body.pop("fhirServer")
    body["prefetch"] = full_prefetch(conditions=body["prefetch"]["conditions"])
    body["hookInstance"] = f"keep-alive-{n}"
    return json.dumps(body).encode()


def test_hook_and_feedback_calls_share_one_connection(service: ServedService) -> None:
    """Successful hook and feedback calls answer keep-alive, and several of them travel over
    one TCP connection (the client never had to reconnect)."""
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    local_ports = set()
    for n in range(4):
        conn.request("POST", SIGN, body=_hook_body(n), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        cards = json.loads(response.read())["cards"]
        assert response.status == 200
        assert response.getheader("Connection") != "close"
        assert conn.sock is not None  # http.client drops the socket after `Connection: close`
        local_ports.add(conn.sock.getsockname()[1])
    card = next(c for c in cards if c.get("suggestions"))  # a card this service issued
    item = {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-23T10:00:00Z"}
    item["acceptedSuggestions"] = [{"id": card["suggestions"][0]["uuid"]}]
    feedback = {"feedback": [item]}
    conn.request(
        "POST",
        f"{SIGN}/feedback",
        body=json.dumps(feedback),
        headers={"Content-Type": "application/json"},
    )
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    assert response.getheader("Connection") != "close"
    assert conn.sock is not None
    local_ports.add(conn.sock.getsockname()[1])
    assert _next_call_works(conn)
    local_ports.add(conn.sock.getsockname()[1])
    assert len(local_ports) == 1
    conn.close()
