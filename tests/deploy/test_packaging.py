"""The files a new user relies on: compose file, Dockerfile, demo patients, CI script."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import yaml
from conftest import ROOT


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


def test_demo_patients_evaluate_as_documented() -> None:
    """`cds-service evaluate` on each demo patient prints the documented cards."""
    demo = ROOT / "fixtures" / "fhir" / "demo"
    expected = json.loads((demo / "expected.json").read_text("utf-8"))
    for name, case in expected.items():
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "cds_service.cli",
                "evaluate",
                str(demo / name),
                "--hook",
                case["hook"],
                "--today",
                "2026-11-23",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        cards = json.loads(result.stdout)["cards"]
        assert [c["source"]["topic"]["code"] for c in cards] == case["cards"], name
