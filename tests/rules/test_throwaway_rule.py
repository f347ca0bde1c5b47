"""A rule added by the recipe (docs/adding-a-rule.md) breaks no unrelated test.

The test writes a throwaway project in a temporary folder, exactly the files the recipe
names: a rule module (docstring, settings dataclass, `text`, `evaluate`), its settings entry,
its card file and its fixtures with cases.json. It then registers the rule with a fresh app
through the public seams (`create_app(rules=...)`, a settings file, `Knowledge.load(cards=
...)`) and runs the fixture-table checks over the shipped fixtures and the new ones; and it
runs whole suites (the fixture table, the engine, record loading, the sandbox bodies) in a
child pytest with the rule installed as if its line were in rules/registry.py
(CDS_TEST_EXTRA_RULES, see tests/conftest.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, ROOT, TODAY, CheckedClient, shared_knowledge
from test_rule_fixtures import check_case, check_fixture_folders, rule_dirs

from cds_service import create_app
from cds_service.cards import CardTemplates, cards_dir
from cds_service.config import Config
from cds_service.knowledge import Knowledge
from cds_service.rules.registry import default_rules

RULE_ID = "opioid-very-old-patient"

RULE_MODULE = '''"""opioid-very-old-patient: an opioid ordered for a patient aged 90 or over.

When: an opioid is being ordered (order-select: the selected drafts) for a patient whose age
      on the evaluation date is at least `min_age_years`.
Unless: no birth date is recorded; the draft is not an opioid.
Then: an info card naming the drug and the birth date.
Source: a throwaway rule for tests/rules/test_throwaway_rule.py (no guideline).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cds_service.facts import ClinicalFacts
from cds_service.findings import Finding, Line
from cds_service.knowledge.classifier import OPIOID
from cds_service.rules.lines import short_name, when
from cds_service.settings import RuleSettings, Settings

RULE_ID = "opioid-very-old-patient"


@dataclass(frozen=True)
class VeryOldSettings(RuleSettings):
    min_age_years: int


class OpioidVeryOldPatient:
    id = RULE_ID
    hooks = frozenset({"order-select", "order-sign"})
    settings_type: type[RuleSettings] = VeryOldSettings
    text: Mapping[str, frozenset[str]] = {
        "variant:very-old": frozenset({"drug", "age"}),
        "line:born": frozenset({"date"}),
    }

    def evaluate(self, facts: ClinicalFacts, settings: Settings) -> list[Finding]:
        own = settings.rule(RULE_ID, VeryOldSettings)
        born = facts.birth_date
        if born is None:
            return []
        today = facts.today
        age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
        opioids = [
            d for d in facts.drafts if d.in_focus and OPIOID in d.classification.classes
        ]
        if age < own.min_age_years or not opioids:
            return []
        values = {"drug": short_name(opioids[0]), "age": str(age)}
        return [Finding(RULE_ID, "very-old", values, (Line("born", {"date": when(born)}),))]
'''

CARD = {
    "rule_id": RULE_ID,
    "source": {
        "label": "Throwaway test rule",
        "url": "https://example.org/throwaway",
        "topic_display": "Opioid for a very old patient",
    },
    "links": [],
    "override_reasons": ["benefit-outweighs-risk"],
    "selection_behavior": "any",
    "priority": 45,
    "variants": {
        "very-old": {
            "indicator": "info",
            "summary": "{drug} for a patient aged {age}",
            "detail": "**Found in this patient's record**\n\n{evidence}",
        }
    },
    "lines": {"born": "Born {date}"},
}

SETTINGS = {"rules": {RULE_ID: {"enabled": True, "mode": "active", "min_age_years": 90}}}

OXYCODONE = ("Oxycodone Hydrochloride 5 MG Oral Tablet", "1049621")
NOT_OPIOIDS = {
    "ibuprofen": ("Ibuprofen 400 MG Oral Tablet", ""),
    "oxybutynin": ("Oxybutynin Chloride 5 MG Oral Tablet", ""),
}
DRUGS = {
    "oxycodone": OXYCODONE,
    "hydrocodone": ("Hydrocodone Bitartrate 5 MG / Acetaminophen 325 MG Oral Tablet", ""),
    "tramadol": ("Tramadol Hydrochloride 50 MG Oral Tablet", ""),
    "morphine": ("Morphine Sulfate 15 MG Oral Tablet", ""),
    **NOT_OPIOIDS,
}

# name: (birth date, hook, draft drugs, selected draft or "", rule fires, evidence)
SCENARIOS: dict[str, tuple[str | None, str, tuple[str, ...], str, bool]] = {
    "fires-oxycodone-aged-96": ("1930-01-01", "order-sign", ("oxycodone",), "", True),
    "fires-hydrocodone-aged-101": ("1925-06-01", "order-sign", ("hydrocodone",), "", True),
    "fires-tramadol-90-today": ("1936-11-23", "order-sign", ("tramadol",), "", True),
    "fires-morphine-aged-106": ("1920-02-02", "order-sign", ("morphine",), "", True),
    "fires-selected-oxycodone": ("1930-01-01", "order-select", ("oxycodone",), "d0", True),
    "fires-oxycodone-with-ibuprofen": (
        "1930-01-01",
        "order-sign",
        ("ibuprofen", "oxycodone"),
        "",
        True,
    ),
    "silent-90-tomorrow": ("1936-11-24", "order-sign", ("oxycodone",), "", False),
    "silent-aged-58": ("1968-03-14", "order-sign", ("oxycodone",), "", False),
    "silent-ibuprofen-only": ("1930-01-01", "order-sign", ("ibuprofen",), "", False),
    "silent-oxybutynin-look-alike": ("1930-01-01", "order-sign", ("oxybutynin",), "", False),
    "silent-no-birth-date": (None, "order-sign", ("oxycodone",), "", False),
    "silent-ibuprofen-selected": (
        "1930-01-01",
        "order-select",
        ("oxycodone", "ibuprofen"),
        "d1",
        False,
    ),
    "silent-chart-review": ("1930-01-01", "patient-view", (), "", False),
    "silent-aged-89": ("1937-01-01", "order-sign", ("hydrocodone",), "", False),
}


def _bundle(name: str, born: str | None, drugs: tuple[str, ...]) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": "vo-1", "gender": "unknown"}
    if born:
        patient["birthDate"] = born
    entries = [{"fullUrl": "urn:uuid:patient-vo-1", "resource": patient}]
    for index, drug in enumerate(drugs):
        text, code = DRUGS[drug]
        concept: dict[str, Any] = {"text": text}
        if code:
            concept["coding"] = [
                {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code}
            ]
        entries.append(
            {
                "fullUrl": f"urn:uuid:medicationrequest-d{index}",
                "resource": {
                    "resourceType": "MedicationRequest",
                    "id": f"d{index}",
                    "status": "draft",
                    "intent": "order",
                    "medicationCodeableConcept": concept,
                    "subject": {"reference": "Patient/vo-1"},
                    "authoredOn": TODAY,
                },
            }
        )
    return {"resourceType": "Bundle", "id": name, "type": "collection", "entry": entries}


def write_project(folder: Path) -> Path:
    """The recipe's files for the throwaway rule, in a project folder of their own."""
    package = folder / "throwaway_rules"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", "utf-8")
    (package / "opioid_very_old_patient.py").write_text(RULE_MODULE, "utf-8")
    (folder / "registry.txt").write_text(
        "throwaway_rules.opioid_very_old_patient:OpioidVeryOldPatient\n", "utf-8"
    )
    (folder / "settings.json").write_text(json.dumps(SETTINGS), "utf-8")
    (folder / "cards").mkdir()
    (folder / "cards" / f"{RULE_ID}.json").write_text(json.dumps(CARD), "utf-8")
    fixtures = folder / "fixtures" / RULE_ID
    fixtures.mkdir(parents=True)
    cases: dict[str, Any] = {}
    for name, (born, hook, drugs, selected, fires) in SCENARIOS.items():
        (fixtures / f"{name}.json").write_text(json.dumps(_bundle(name, born, drugs)), "utf-8")
        case: dict[str, Any] = {
            "description": f"Throwaway scenario {name.replace('-', ' ')}.",
            "hook": hook,
            "fires": [RULE_ID] if fires else [],
        }
        if selected:
            case["selections"] = [f"MedicationRequest/{selected}"]
        if fires:
            case["indicator"] = "info"
            case["evidence"] = ["Born "]
        cases[f"{name}.json"] = case
    (fixtures / "cases.json").write_text(json.dumps(cases, indent=1), "utf-8")
    return folder


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_project(tmp_path_factory.mktemp("throwaway") / "project")


def _rule(project: Path) -> Any:
    path = project / "throwaway_rules" / "opioid_very_old_patient.py"
    spec = importlib.util.spec_from_file_location("throwaway_opioid_very_old_patient", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module.OpioidVeryOldPatient()


def test_a_rule_added_by_the_recipe_passes_the_fixture_table_with_the_shipped_rules(
    project: Path, tmp_path: Path
) -> None:
    """A fresh app with the new rule registered, its settings file and its card file passes
    the fixture-table checks for its own fixtures and for every shipped fixture."""
    cards = tmp_path / "cards"
    shutil.copytree(cards_dir(), cards)
    shutil.copy(project / "cards" / f"{RULE_ID}.json", cards)
    base = shared_knowledge()
    knowledge = Knowledge(
        valuesets=base.valuesets,
        classifier=base.classifier,
        conditions=base.conditions,
        therapies=base.therapies,
        mme=base.mme,
        cards=CardTemplates(cards),
        allergies=base.allergies,
    )
    rules = (*default_rules(), _rule(project))
    config = Config(
        today=TODAY,
        data_dir=str(tmp_path / "data"),
        rule_settings_file=str(project / "settings.json"),
        log_level="WARNING",
    )
    app = create_app(config, rules=rules, knowledge=knowledge)
    client = CheckedClient(app.test_client())
    services = json.loads(app.extensions["cds_discovery"])["services"]
    sign = next(s for s in services if s["hook"] == "order-sign")
    assert CARD["source"]["topic_display"] in sign["description"]  # type: ignore[index]
    directories = rule_dirs([FIXTURES, project / "fixtures"])
    check_fixture_folders(directories, {r.id for r in rules})
    for directory in directories:
        for name, case in json.loads((directory / "cases.json").read_text("utf-8")).items():
            check_case(client, directory, name, case)
    app.extensions["cds_engine"].close()
    app.extensions["cds_store"].close()


def test_unrelated_suites_pass_with_a_rule_added_by_the_recipe(project: Path) -> None:
    """The fixture-table, engine, record-loading and sandbox suites pass unchanged with the
    new rule in the registry, the settings and the card templates."""
    env = dict(os.environ, CDS_TEST_EXTRA_RULES=str(project), CDS_HYPOTHESIS_PROFILE="fast")
    suites = [
        "tests/rules/test_rule_fixtures.py",
        "tests/hooks/test_engine.py",
        "tests/hooks/test_record_loading.py",
        "tests/hooks/test_sandbox_requests.py",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-x", "-p", "no:cacheprovider", *suites],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"[{RULE_ID}/fires-oxycodone-aged-96.json] PASSED" in result.stdout
