"""The files a new user relies on: compose file, Dockerfile, demo patients, CI script."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from conftest import ROOT

from cds_service.hooks.bundle_request import resolve_relative_dates


def test_compose_file_parses_and_references_exist() -> None:
    """docker-compose.yml is valid YAML, pins HAPI, and every file it mounts or builds exists."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    services = compose["services"]
    assert {"fhir", "seed", "cds"} <= set(services)
    image = services["fhir"]["image"]
    assert image.startswith("hapiproject/hapi:") and not image.endswith(":latest")
    build = services["cds"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    for volume in services["seed"]["volumes"]:
        source = volume.split(":")[0]
        assert (ROOT / source).exists(), source
    assert services["cds"]["command"][:2] == ["cds-service", "serve"]


def test_dockerfile_copies_what_the_wheel_needs() -> None:
    """The image build copies the package and the card templates it ships."""
    text = (ROOT / "Dockerfile").read_text("utf-8")
    for path in re.findall(r"^COPY (\S+)", text, flags=re.MULTILINE):
        assert (ROOT / path).exists(), path
    assert "COPY cards" in text


def test_demo_patients_are_transaction_bundles_with_puts() -> None:
    """The seeding job can POST each demo Bundle to HAPI as it is, and re-run safely."""
    demo = ROOT / "fixtures" / "fhir" / "demo"
    expected = json.loads((demo / "expected.json").read_text("utf-8"))
    assert len(expected) >= 5
    for name in expected:
        bundle = json.loads((demo / name).read_text("utf-8"))
        assert bundle["type"] == "transaction"
        for entry in bundle["entry"]:
            resource = entry["resource"]
            assert entry["request"] == {
                "method": "PUT",
                "url": f"{resource['resourceType']}/{resource['id']}",
            }


@pytest.mark.parametrize("shift", ["clock", "--today", "CDS_TODAY"])
def test_demo_patients_evaluate_as_documented_on_any_date(
    shift: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`cds-service evaluate` on each demo patient prints the cards expected.json lists, on
    the real date, a year ahead (--today) and two years ahead (CDS_TODAY): the demo patients'
    dates are relative to today, so the demo never expires."""
    from cds_service.cli import main

    demo = ROOT / "fixtures" / "fhir" / "demo"
    expected = json.loads((demo / "expected.json").read_text("utf-8"))
    today = dt.datetime.now(dt.UTC).date()
    monkeypatch.delenv("CDS_TODAY", raising=False)
    extra: list[str] = []
    if shift == "--today":
        extra = ["--today", (today + dt.timedelta(days=365)).isoformat()]
    elif shift == "CDS_TODAY":
        monkeypatch.setenv("CDS_TODAY", (today + dt.timedelta(days=730)).isoformat())
    for name, case in expected.items():
        assert main(["evaluate", str(demo / name), "--hook", case["hook"], *extra]) == 0
        cards = json.loads(capsys.readouterr().out)["cards"]
        assert [c["source"]["topic"]["code"] for c in cards] == case["cards"], (name, shift)


@pytest.mark.parametrize("today", ["2026-11-23", "2028-02-29", "2031-01-01"])
def test_seed_script_resolves_the_relative_dates_as_the_service_does(today: str) -> None:
    """scripts/seed-fhir.sh (POSIX sh, as the compose seed job runs it) posts each demo
    Bundle with its "@-Nd" dates resolved exactly as `evaluate` and `demo-traffic` resolve
    them (leap days and year ends included)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    posted: list[Any] = []

    class Fhir(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # /metadata
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            posted.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Fhir)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        result = subprocess.run(
            ["/bin/sh", str(ROOT / "scripts" / "seed-fhir.sh")],
            env={
                "PATH": os.environ["PATH"],
                "FHIR_BASE": f"http://127.0.0.1:{server.server_port}/fhir",
                "TODAY": today,
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.shutdown()
        thread.join(10)
    assert result.returncode == 0, result.stderr
    demo = ROOT / "fixtures" / "fhir" / "demo"
    files = sorted(demo.glob("demo-*.json"))
    want = [
        resolve_relative_dates(json.loads(p.read_text("utf-8")), dt.date.fromisoformat(today))
        for p in files
    ]
    assert posted == want
    assert "@" not in json.dumps(posted)
