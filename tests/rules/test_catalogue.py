"""The rule catalogue in docs/rules.md and the discovery descriptions come from the rules' own
metadata, so neither can go stale when a rule is added, changed or switched off."""

from __future__ import annotations

import json

from conftest import ROOT, TODAY

from cds_service import create_app
from cds_service.config import Config
from cds_service.rules.catalogue import SECTIONS, catalogue, main, replaced, rule_doc
from cds_service.rules.registry import default_rules


def test_docs_rule_catalogue_is_generated_from_the_rules() -> None:
    """docs/rules.md holds exactly the catalogue the registered rules generate (regenerate
    with `python -m cds_service.rules.catalogue --write docs/rules.md`)."""
    assert main(["--check", str(ROOT / "docs" / "rules.md")]) == 0


def test_a_changed_rule_makes_the_catalogue_stale() -> None:
    """Dropping a rule changes the generated catalogue, so the check above can fail."""
    document = (ROOT / "docs" / "rules.md").read_text("utf-8")
    fewer = catalogue(default_rules()[:-1])
    assert replaced(document, fewer) != document


def test_every_rule_documents_when_unless_then_and_source() -> None:
    """Each registered rule's module docstring starts "<rule id>: <headline>" and has When,
    Unless, Then and Source sections (the recipe's docstring)."""
    for rule in default_rules():
        doc = rule_doc(rule)
        assert len(doc["headline"]) > 10, rule.id
        for section in SECTIONS:
            assert len(doc.get(section, "")) > 10, (rule.id, section)


def test_discovery_describes_what_the_active_rules_check() -> None:
    """Each service's discovery description names the topic of every enabled, active rule
    on its hook (from the rule's card file), and not a rule switched off or silent."""
    app = create_app(
        Config(today=TODAY, database_url="sqlite://", card_log=False),
        settings_overrides={
            "rules": {
                "first-line-therapy-not-tried": {"enabled": False},
                "opioid-safety-summary": {"mode": "silent"},
            }
        },
    )
    topics = {
        rule_id: template["source"]["topic_display"]
        for rule_id, template in app.extensions["cds_knowledge"].cards.templates.items()
    }
    services = json.loads(app.extensions["cds_discovery"])["services"]
    by_hook = {s["hook"]: s["description"] for s in services}
    assert topics["opioid-benzodiazepine"] in by_hook["patient-view"]
    assert topics["opioid-start-chronic-lbp"] in by_hook["order-sign"]
    assert topics["opioid-start-chronic-lbp"] not in by_hook["patient-view"]
    assert topics["first-line-therapy-not-tried"] not in by_hook["order-sign"]
    assert topics["opioid-safety-summary"] not in by_hook["patient-view"]
    app.extensions["cds_engine"].close()
    app.extensions["cds_store"].close()
