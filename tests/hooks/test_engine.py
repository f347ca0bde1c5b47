"""Rule isolation, card rendering and logging hygiene."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import ALPRAZOLAM, SIGN, CheckedClient, bundle_of, full_prefetch, sandbox

from cds_service import create_app
from cds_service.cards import CardTemplates, TemplateError, clip_summary, escape_markdown, prune
from cds_service.config import Config
from cds_service.facts import ClinicalFacts
from cds_service.findings import Finding, Line, SuggestionSpec
from cds_service.rules.base import Rule
from cds_service.rules.registry import default_rules
from cds_service.settings import RuleSettings, Settings, SettingsError


def _body() -> dict[str, Any]:
    body = sandbox("order-sign-oxycodone.json")
    body["prefetch"] = full_prefetch(meds=bundle_of(ALPRAZOLAM))
    return body


def _rule(rule_id: str) -> Rule:
    return next(rule for rule in default_rules() if rule.id == rule_id)


class BrokenRule:
    """A rule that raises: the engine must isolate it."""

    id = "opioid-safety-summary"  # reuses that rule's settings and template
    hooks = frozenset({"order-sign"})
    settings_type: type[RuleSettings] = _rule("opioid-safety-summary").settings_type
    text: Mapping[str, frozenset[str]] = _rule("opioid-safety-summary").text

    def evaluate(self, facts: ClinicalFacts, settings: Settings) -> list[Finding]:
        raise KeyError("Alex Rivera")  # a message quoting patient data must not be logged


def test_a_failing_rule_does_not_take_the_other_cards_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An exception inside one rule is logged; the other rules' cards still come back."""
    rules = (*(r for r in default_rules() if r.id != BrokenRule.id), BrokenRule())
    app = create_app(Config(today="2026-11-23"), rules=rules)
    client = CheckedClient(app.test_client())
    with caplog.at_level(logging.INFO, logger="cds_service"):
        response = client.post(SIGN, _body())
    assert response.status_code == 200
    assert "opioid-benzodiazepine" in [
        c["source"]["topic"]["code"] for c in response.get_json()["cards"]
    ]
    failure = next(r for r in caplog.records if r.msg == "rule-failed")
    assert failure.__dict__["rule"] == "opioid-safety-summary"
    assert failure.__dict__["error"] == "KeyError" and failure.__dict__["unexpected"] is True
    assert failure.__dict__["error_id"]
    assert "Alex Rivera" not in caplog.text


def test_rules_can_be_disabled_by_settings() -> None:
    """A rule switched off in the settings gives no card; the default app still fires it."""
    from conftest import make_app

    app = create_app(
        Config(today="2026-11-23"),
        settings_overrides={"rules": {"opioid-benzodiazepine": {"enabled": False}}},
    )
    response = app.test_client().post(SIGN, json=_body())
    codes = [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]
    assert "opioid-benzodiazepine" not in codes
    default = make_app().test_client().post(SIGN, json=_body()).get_json()
    assert next(c["source"]["topic"]["code"] for c in default["cards"]) == "opioid-benzodiazepine"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rules": {"opioid-benzodiazepine": {"enabled": "yes"}}}, "expected true or false"),
        ({"rules": {"first-line-therapy-not-tried": {"lookbak_days": 3}}}, "unknown setting"),
        ({"medication_activity": {"grace_days": -1}}, "whole number"),
        ({"rules": {"opioid-safety-summary": {"lookback_days": 3, "colour": "red"}}}, "colour"),
    ],
)
def test_bad_settings_stop_the_app_at_start_up(overrides: dict[str, Any], message: str) -> None:
    """A misspelt key or a wrong type, inside a registered rule too, is refused when the app
    is built."""
    with pytest.raises(SettingsError, match=message):
        create_app(Config(today="2026-11-23"), settings_overrides=overrides)


def test_settings_of_a_rule_that_is_not_registered_are_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Settings naming a rule the app does not run do not stop start-up; a warning names it."""
    overrides = {"rules": {"no-such-rule": {"enabled": True, "anything": 1}}}
    with caplog.at_level(logging.WARNING, logger="cds_service"):
        app = create_app(Config(today="2026-11-23"), settings_overrides=overrides)
    assert "no-such-rule" not in app.extensions["cds_engine"].settings.rules
    warning = next(r for r in caplog.records if r.msg == "settings-ignored")
    assert warning.__dict__["rules"] == ["no-such-rule"]
    fewer = tuple(r for r in default_rules() if r.id != "opioid-safety-summary")
    with caplog.at_level(logging.WARNING, logger="cds_service"):
        create_app(Config(today="2026-11-23"), rules=fewer)
    assert any(
        r.msg == "settings-ignored" and r.__dict__["rules"] == ["opioid-safety-summary"]
        for r in caplog.records
    )


def _templates_with(tmp_path: Path, rule_id: str, edit: Any) -> CardTemplates:
    import json
    import shutil

    from cds_service.cards import cards_dir

    shutil.copytree(cards_dir(), tmp_path / "cards")
    path = tmp_path / "cards" / f"{rule_id}.json"
    template = json.loads(path.read_text("utf-8"))
    edit(template)
    path.write_text(json.dumps(template), "utf-8")
    return CardTemplates(tmp_path / "cards")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda t: t["variants"]["opioid-start"].update(summary="Start of {drgu}"),
            "unknown placeholder",
        ),
        (
            lambda t: t["variants"]["opioid-start"].update(summary="Opioid start", detail="x"),
            "leaves out placeholder",
        ),
        (
            lambda t: t["lines"].update({"chronic-coded": "Chronic: {conditon}"}),
            "unknown placeholder",
        ),
        (lambda t: t["lines"].pop("opioid-naive"), "not both in the template"),
        (lambda t: t["variants"].pop("extended-release-start"), "differ from the rule"),
        (
            lambda t: t["variants"]["opioid-start"].update(summary_short=["Start of {drgu}"]),
            "summary_short uses unknown placeholder",
        ),
    ],
)
def test_a_template_that_does_not_match_its_rule_is_refused(
    tmp_path: Path, edit: Any, message: str
) -> None:
    """A misspelt or missing placeholder, line or variant stops the service at start-up."""
    from cds_service.hooks.pipeline import RecordCheck
    from cds_service.rules.lines import SHARED_LINES

    templates = _templates_with(tmp_path, "opioid-start-chronic-lbp", edit)
    with pytest.raises(TemplateError, match=message):
        templates.check_against([*default_rules(), RecordCheck()], SHARED_LINES)


def test_a_summary_short_that_is_not_a_list_of_texts_is_refused(tmp_path: Path) -> None:
    """A variant's shorter summaries must be a list of texts: the templates refuse to load."""
    with pytest.raises(TemplateError, match="summary_short must list texts"):
        _templates_with(
            tmp_path,
            "opioid-start-chronic-lbp",
            lambda t: t["variants"]["opioid-start"].update(summary_short="Opioid start"),
        )


def test_logs_hold_no_patient_data_or_tokens(
    client: CheckedClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Patient id, name, birth date, drug names and the FHIR token never reach the logs."""
    import responses

    body = _body()
    body["context"]["patientId"] = "pt-secret-9"
    body["prefetch"]["patient"] = {
        "resourceType": "Patient",
        "id": "pt-secret-9",
        "name": [{"family": "Zyzzyva", "given": ["Quentin"]}],
        "birthDate": "1961-07-13",
    }
    body["prefetch"].pop("procedures")
    body["fhirAuthorization"] = {
        "access_token": "tok-abc-123",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "x",
    }
    with responses.RequestsMock() as rsps:
        rsps.get(
            re.compile(r"http://127\.0\.0\.1:8081/Procedure\?patient=pt-secret-9.*"), status=500
        )
        with caplog.at_level(logging.DEBUG):
            client.post(SIGN, body)
            client.post(
                SIGN,
                {
                    "hook": "order-sign",
                    "hookInstance": "x",
                    "context": {"patientId": "pt-secret-9"},
                },
            )
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for secret in (
        "pt-secret-9",
        "Zyzzyva",
        "Quentin",
        "1961-07-13",
        "tok-abc-123",
        "Alprazolam",
        "Oxycodone",
    ):
        assert secret not in text, secret
    assert any(r.msg == "hook" for r in caplog.records)


def test_summary_is_clipped_to_139_characters() -> None:
    """A summary that would exceed 139 characters is clipped with an ellipsis."""
    clipped = clip_summary("x" * 300)
    assert len(clipped) == 139 and clipped.endswith("\u2026")
    assert clip_summary("short  and\nspaced") == "short and spaced"


def test_long_drug_names_take_the_shorter_summary_not_a_clipped_one() -> None:
    """With drug names too long for 139 characters the card uses the variant's first shorter
    wording that fits, so the decision words at the end are never cut."""
    templates = CardTemplates()
    long_names = "buprenorphine / naloxone, methadone, " * 3

    def summary(opioids: str) -> str:
        finding = Finding(
            "opioid-benzodiazepine",
            "moud-benzodiazepine",
            {
                "opioids": opioids,
                "depressants": "amitriptyline / chlordiazepoxide",
                "action": Line("act-moud", {"opioids": "x", "depressants": "y"}),
                "naloxone_status": Line("naloxone-not-on-record"),
            },
            (Line("being-ordered", {"drug": "a"}),),
        )
        text: str = templates.render(finding)["summary"]
        return text

    assert summary("buprenorphine").startswith("Opioid use disorder treatment (buprenorphine)")
    medium = summary("buprenorphine / naloxone, methadone")
    assert medium.startswith("OUD treatment (buprenorphine / naloxone, methadone) with a benzo")
    longest = summary(long_names)
    assert longest == "OUD treatment with a benzodiazepine: do not stop treatment; coordinate care"


def test_patient_text_cannot_inject_markdown() -> None:
    """Links, images and HTML in EHR drug names are shown as text."""
    escaped = escape_markdown("Oxy [click](http://evil) ![x](y) <script>")
    assert "[click](" not in escaped and "<script>" not in escaped


def test_ordinary_drug_names_are_not_escaped() -> None:
    """Parentheses, hyphens and dots in a drug name stay readable as plain text."""
    name = "oxyCODONE (ROXICODONE) 5 MG tablet - 1.5 tabs #30"
    assert escape_markdown(name) == name


def test_prune_removes_empty_values() -> None:
    """None, empty strings, lists and objects are dropped, recursively."""
    assert prune({"a": None, "b": "", "c": [], "d": {"e": None}, "f": [None, 1]}) == {"f": [1]}


def test_rendering_gives_fresh_uuids_every_time() -> None:
    """Two renders of the same finding never share a card or suggestion uuid."""
    templates = CardTemplates()
    finding = Finding(
        "opioid-benzodiazepine",
        "opioid-benzodiazepine",
        {
            "opioids": "oxycodone",
            "depressants": "alprazolam",
            "action": Line("act-opioid-new", {"depressants": "alprazolam"}),
            "naloxone_status": Line("naloxone-not-on-record"),
        },
        (Line("being-ordered", {"drug": "a"}),),
        (SuggestionSpec("naloxone", {"patient_id": "p"}),),
    )
    one, two = templates.render(finding), templates.render(finding)
    assert one["uuid"] != two["uuid"]
    assert one["suggestions"][0]["uuid"] != two["suggestions"][0]["uuid"]
    assert one["selectionBehavior"] == "any"
    assert all(r["display"] for r in one["overrideReasons"])


def test_card_templates_ship_with_the_package() -> None:
    """An installed (non-editable) package finds its card templates inside itself."""
    import cds_service
    from cds_service.cards import cards_dir

    directory = cards_dir()
    assert (directory / "opioid-benzodiazepine.json").is_file()
    if "site-packages" in cds_service.__file__:
        assert "site-packages" in str(directory)


def test_a_silent_rule_is_evaluated_but_never_shown() -> None:
    """A rule in silent mode still produces its card for the issued-card log, but the EHR
    never receives it; switching modes is a settings change."""
    app = create_app(
        Config(today="2026-11-23"),
        settings_overrides={"rules": {"opioid-benzodiazepine": {"mode": "silent"}}},
    )
    result = app.extensions["cds_engine"].evaluate("opioid-lbp-order-sign", _body())
    assert result.status == 200 and result.body == {"cards": []}
    assert "opioid-benzodiazepine" in [c["source"]["topic"]["code"] for c in result.silent_cards]
    assert "opioid-benzodiazepine" in result.log["silent_cards"]
    with pytest.raises(SettingsError, match="active, silent"):
        create_app(
            Config(today="2026-11-23"),
            settings_overrides={"rules": {"opioid-benzodiazepine": {"mode": "quiet"}}},
        )
