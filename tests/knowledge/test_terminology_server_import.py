"""`cds-service terminology import --from-server URL --valueset CANONICAL` against a loopback
FHIR terminology server stub that speaks ValueSet/$expand with offset/count paging: installed
like a file import, with provenance, and it changes what fires."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import FIXTURES, SIGN, fixture_request, make_app
from test_terminology_import import NEW_CODE, OPIOID_SET, newer_opioid_set

import cds_service.knowledge.server_import as server_import
from cds_service.cli import main
from cds_service.fhir.read import RXNORM

CANONICAL = "http://fhir.org/guides/cdc/opioid-cds/ValueSet/" + OPIOID_SET


class ExpandStub(BaseHTTPRequestHandler):
    """GET /fhir/ValueSet/$expand?url=...&offset=N&count=M, as Ontoserver or HAPI answer it."""

    document: ClassVar[dict[str, Any]] = {}
    requests_seen: ClassVar[list[dict[str, list[str]]]] = []
    ignore_offset = False

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        type(self).requests_seen.append(query)
        if parts.path != "/fhir/ValueSet/$expand" or query.get("url") != [CANONICAL]:
            self._send(
                404,
                {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "not-found", "diagnostics": "unknown"}],
                },
            )
            return
        offset = 0 if self.ignore_offset else int(query.get("offset", ["0"])[0])
        count = int(query.get("count", ["1000"])[0])
        everything = self.document["expansion"]["contains"]
        page = dict(self.document)
        page["expansion"] = {
            "identifier": "urn:uuid:stub-expansion",
            "timestamp": "2026-11-30T00:00:00Z",
            "total": len(everything),
            "offset": offset,
            "contains": everything[offset : offset + count],
        }
        self._send(200, page)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def stub() -> Iterator[str]:
    """The stub server on a free loopback port; its base URL."""
    document = newer_opioid_set()
    document.pop("expansion")
    document["expansion"] = newer_opioid_set()["expansion"]
    ExpandStub.document = document
    ExpandStub.requests_seen = []
    ExpandStub.ignore_offset = False
    server = ThreadingHTTPServer(("127.0.0.1", 0), ExpandStub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    server.shutdown()
    server.server_close()


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "valuesets"
    folder.mkdir()
    monkeypatch.setenv("CDS_VALUESETS_DIR", str(folder))
    return folder


def new_code_order_sign() -> dict[str, Any]:
    """Chronic low back pain and a draft opioid named only by the code the server adds."""
    directory = FIXTURES / "opioid-start-chronic-lbp"
    case = {"hook": "order-sign"}
    body = fixture_request(directory, "fires-xodol-code-only.json", case)
    for entry in body["context"]["draftOrders"]["entry"]:
        concept = entry["resource"]["medicationCodeableConcept"]
        concept["coding"] = [{"system": RXNORM, "code": NEW_CODE}]
    return body


def fired(app: Any, body: dict[str, Any]) -> list[str]:
    response = app.test_client().post(SIGN, json=body)
    assert response.status_code == 200
    return sorted(c["source"]["topic"]["code"] for c in response.get_json()["cards"])


def test_import_from_server_pages_installs_with_provenance_and_changes_what_fires(
    stub: str, target: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The expansion is fetched in pages (offset/count), installed with the server as its
    source, and after the restart an order carrying only the new code is an opioid start."""
    body = new_code_order_sign()
    assert "opioid-start-chronic-lbp" not in fired(make_app(), body)
    argv = ["terminology", "import", "--from-server", stub, "--valueset", CANONICAL]
    monkeypatch.setattr(server_import, "PAGE_SIZE", 100)
    assert main(argv) == 0
    out = capsys.readouterr().out
    total = len(ExpandStub.document["expansion"]["contains"])
    assert f"{total} codes in {-(-total // 100)} page(s)" in out
    offsets = [int(q["offset"][0]) for q in ExpandStub.requests_seen]
    assert offsets == list(range(0, total, 100))
    installed = json.loads((target / f"{OPIOID_SET}.json").read_text("utf-8"))
    assert installed["meta"]["source"] == stub
    assert installed["_imported"]["valueset"] == CANONICAL
    assert installed["expansion"]["total"] == total
    app = make_app(valuesets_dir=str(target))  # the restart
    assert "opioid-start-chronic-lbp" in fired(app, body)


def test_a_server_error_or_unknown_set_is_refused_and_nothing_installed(
    stub: str, target: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A value set the service does not use, or a server answering an OperationOutcome,
    is refused with the reason; nothing is installed."""
    unknown = ["terminology", "import", "--from-server", stub, "--valueset"]
    assert main([*unknown, "http://example.org/ValueSet/x"]) != 0
    assert "not a value set this service uses" in capsys.readouterr().err
    other = "http://fhir.org/guides/cdc/opioid-cds/ValueSet/benzodiazepine-medications"
    assert main([*unknown, other]) != 0
    assert "HTTP 404 (unknown)" in capsys.readouterr().err
    assert not list(target.glob("*.json"))


def test_a_server_that_ignores_offset_is_refused(
    stub: str, target: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that keeps sending the first page never yields a partial set."""
    ExpandStub.ignore_offset = True
    monkeypatch.setattr(server_import, "PAGE_SIZE", 100)
    argv = ["terminology", "import", "--from-server", stub, "--valueset", CANONICAL]
    assert main(argv) != 0
    assert "does it support offset and count" in capsys.readouterr().err
    assert not (target / f"{OPIOID_SET}.json").exists()
