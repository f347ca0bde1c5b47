"""`cds-service terminology import | list | lookup` and CDS_VALUESETS_DIR: a newer expansion
replaces the packaged set of the same url at the next start; a broken or empty one is refused
and nothing is replaced."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from conftest import make_app

from cds_service.cli import main
from cds_service.fhir.read import RXNORM
from cds_service.knowledge.classifier import OPIOID
from cds_service.knowledge.products import load_classifier
from cds_service.knowledge.valuesets import load_valuesets

OPIOID_SET = "opioid-analgesics-with-ambulatory-misuse-potential"
NEW_CODE = "990000001"  # not a real RxNorm code: proves the new expansion is what is read


def packaged(set_id: str) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(
        resources.files("cds_service.knowledge")
        .joinpath(f"data/valuesets/{set_id}.json")
        .read_text("utf-8")
    )
    return raw


def newer_opioid_set() -> dict[str, Any]:
    document = packaged(OPIOID_SET)
    document.pop("_generated")
    document["date"] = "2026-10-01T00:00:00-04:00"
    document["version"] = "20261001"
    document["expansion"]["contains"].append(
        {
            "system": RXNORM,
            "code": NEW_CODE,
            "display": "oxycodone hydrochloride 7.5 MG Oral Tablet",
        }
    )
    document["expansion"]["total"] = len(document["expansion"]["contains"])
    return document


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An import source folder and the CDS_VALUESETS_DIR target; the packaged knowledge is
    re-installed afterwards."""
    source, target = tmp_path / "incoming", tmp_path / "valuesets"
    source.mkdir()
    target.mkdir()
    monkeypatch.setenv("CDS_VALUESETS_DIR", str(target))
    return source, target


def write(folder: Path, name: str, body: Any) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    (folder / name).write_text(text, "utf-8")


def test_newer_expansion_replaces_the_packaged_set_after_restart(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """After import, `list` shows the new date and the local file; a restarted service
    classifies the new code, and discovery shows the new knowledge version."""
    source, target = folders
    write(source, "opioids-2026.json", newer_opioid_set())
    packaged_version = load_valuesets().version
    assert main(["terminology", "import", str(source)]) == 0
    assert (target / f"{OPIOID_SET}.json").exists()
    capsys.readouterr()
    assert main(["terminology", "list"]) == 0
    listing = capsys.readouterr().out
    block = listing.split("OPIOID_ANALGESICS_WITH_AMBULATORY_MISUSE_POTENTIAL:")[1].split("\n")[0]
    assert "date 2026-10-01" in block and "version 20261001" in block and "local file" in block
    before = make_app()  # a service started before the import keeps what it loaded
    assert (
        before.extensions["cds_knowledge"].classifier.classify_code(RXNORM, NEW_CODE).classes
        == frozenset()
    )
    app = make_app(valuesets_dir=str(target))  # the restart
    result = app.extensions["cds_knowledge"].classifier.classify_code(RXNORM, NEW_CODE)
    assert OPIOID in result.classes and result.ingredients[0].strength_value == 7.5
    knowledge = app.test_client().get("/cds-services").get_json()["extension"]["knowledge"]
    assert knowledge["version"] != packaged_version
    entry = next(v for v in knowledge["valueSets"] if v["name"].startswith("OPIOID_ANALG"))
    assert entry["date"].startswith("2026-10-01") and entry["source"] == "local"
    capsys.readouterr()
    assert main(["terminology", "lookup", f"rxnorm|{NEW_CODE}"]) == 0
    assert "classified from the code: opioid-analgesic" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name,body,message",
    [
        ("broken.json", '{"resourceType": "ValueSet", "url": ', "not valid JSON"),
        (
            "empty.json",
            {
                "resourceType": "ValueSet",
                "url": "http://fhir.org/guides/cdc/opioid-cds/ValueSet/" + OPIOID_SET,
                "expansion": {"contains": []},
            },
            "holds no codes",
        ),
        (
            "no-expansion.json",
            {
                "resourceType": "ValueSet",
                "url": "http://fhir.org/guides/cdc/opioid-cds/ValueSet/" + OPIOID_SET,
            },
            "has no expansion",
        ),
        (
            "partial.json",
            {
                "resourceType": "ValueSet",
                "url": "http://fhir.org/guides/cdc/opioid-cds/ValueSet/" + OPIOID_SET,
                "expansion": {"total": 600, "contains": [{"system": RXNORM, "code": "1049621"}]},
            },
            "partial expansion",
        ),
        (
            "no-system.json",
            {
                "resourceType": "ValueSet",
                "url": "http://fhir.org/guides/cdc/opioid-cds/ValueSet/" + OPIOID_SET,
                "expansion": {"contains": [{"code": "1049621"}]},
            },
            "has no system",
        ),
        (
            "unknown.json",
            {
                "resourceType": "ValueSet",
                "url": "http://example.org/ValueSet/x",
                "expansion": {"contains": [{"system": RXNORM, "code": "1"}]},
            },
            "not a value set this service uses",
        ),
        ("patient.json", {"resourceType": "Patient"}, "not a FHIR ValueSet"),
    ],
)
def test_a_bad_file_is_refused_and_the_old_set_stays(
    folders: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    name: str,
    body: Any,
    message: str,
) -> None:
    """A malformed, empty, partial or unknown set is refused with a clear message; nothing in
    the override folder changes, even for the good file imported alongside it."""
    source, target = folders
    write(source, "good.json", newer_opioid_set())
    assert main(["terminology", "import", str(source)]) == 0
    installed = (target / f"{OPIOID_SET}.json").read_text("utf-8")
    newer = newer_opioid_set()
    newer["date"] = "2027-01-01"
    write(source, "good.json", newer)
    write(source, name, body)
    capsys.readouterr()
    assert main(["terminology", "import", str(source)]) == 2
    error = capsys.readouterr().err
    assert "refused, nothing replaced" in error and message in error and name in error
    assert (target / f"{OPIOID_SET}.json").read_text("utf-8") == installed
    assert load_valuesets(str(target)).tables[OPIOID_SET].date.startswith("2026-10-01")


def test_import_needs_the_folder_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without CDS_VALUESETS_DIR nothing is installed and the message names the setting."""
    monkeypatch.delenv("CDS_VALUESETS_DIR", raising=False)
    write(tmp_path, "vs.json", newer_opioid_set())
    assert main(["terminology", "import", str(tmp_path)]) == 2
    assert "CDS_VALUESETS_DIR" in capsys.readouterr().err


def test_a_missing_folder_setting_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CDS_VALUESETS_DIR naming no folder stops the command with a message naming the setting."""
    monkeypatch.setenv("CDS_VALUESETS_DIR", str(tmp_path / "missing"))
    assert main(["terminology", "list"]) == 2
    assert "CDS_VALUESETS_DIR" in capsys.readouterr().err


def test_an_empty_import_folder_is_refused(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder with no ValueSet files is refused."""
    source, _ = folders
    assert main(["terminology", "import", str(source)]) == 2
    assert "no ValueSet JSON files" in capsys.readouterr().err


def test_lookup_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    """`lookup` names the set holding a code, or the override that removed it, with reasons."""
    assert main(["terminology", "lookup", "icd10cm|D57.3"]) == 0
    out = capsys.readouterr().out
    assert "removed by override (sickle cell trait" in out and "categories: none" in out
    assert main(["terminology", "lookup", "http://snomed.info/sct|127040003"]) == 0
    out = capsys.readouterr().out
    assert "SICKLE_CELL_DISEASES: listed" in out and "sickle-cell-disease" in out
    assert main(["terminology", "lookup", "icd10cm|C50.911"]) == 0
    assert "listed" in capsys.readouterr().out
    assert main(["terminology", "lookup", "nonsense"]) == 2


def test_list_shows_every_set_with_provenance_and_overrides(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`list` prints the knowledge version, and each set's url, date, counts and overrides."""
    assert main(["terminology", "list"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("knowledge version ")
    assert out.count("  url: http://fhir.org/guides/cdc/opioid-cds/ValueSet/") == 19
    assert "override: remove D57.3" in out and "override: add D57.1" in out


def test_a_local_set_without_packaged_entries_is_parsed_at_start_up(tmp_path: Path) -> None:
    """Codes only a newer local expansion holds are parsed once when the classifier loads."""
    write(tmp_path, "opioids.json", newer_opioid_set())
    classifier = load_classifier(str(tmp_path))
    assert classifier.classify_code(RXNORM, NEW_CODE).names == ("oxycodone",)
