"""Rule isolation, card rendering and logging hygiene."""

from __future__ import annotations

import logging
import re
import types
from typing import Any

import pytest
from conftest import ALPRAZOLAM, SIGN, CheckedClient, bundle_of, full_prefetch, rule_ids, sandbox

from cds_service import rules
from cds_service.cards import CardTemplates, clip_summary, escape_markdown, prune
from cds_service.rules import Finding, SuggestionSpec


def _body() -> dict[str, Any]:
    body = sandbox("order-sign-oxycodone.json")
    body["prefetch"] = full_prefetch(meds=bundle_of(ALPRAZOLAM))
    return body


def test_a_failing_rule_does_not_take_the_other_cards_down(
        client: CheckedClient, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """An exception inside one rule is logged; the other rules' cards still come back."""
    def explode(*_: Any) -> list[Finding]:
        raise KeyError("Alex Rivera")  # a message quoting patient data must not be logged

    broken = types.SimpleNamespace(RULE_ID="broken-rule", HOOKS=frozenset({"order-sign"}),
                                   evaluate=explode)
    monkeypatch.setattr(rules, "RULES", (broken, *rules.RULES))
    with caplog.at_level(logging.INFO, logger="cds_service"):
        response = client.post(SIGN, _body())
    assert response.status_code == 200
    assert rule_ids(response) == ["opioid-benzodiazepine"]
    failure = next(r for r in caplog.records if r.msg == "rule-failed")
    assert failure.__dict__["rule"] == "broken-rule" and failure.__dict__["error"] == "KeyError"
    assert "Alex Rivera" not in caplog.text


def test_rules_can_be_disabled_by_settings() -> None:
    """A rule switched off in the settings file gives no card."""
    from conftest import make_app

    settings = rules.load_settings()
    settings["rules"]["opioid-benzodiazepine"]["enabled"] = False
    from cds_service import create_app
    from cds_service.config import Config

    app = create_app(Config(today="2026-11-23"), rule_settings=settings)
    response = app.test_client().post(SIGN, json=_body())
    assert response.get_json() == {"cards": []}
    default = make_app().test_client().post(SIGN, json=_body()).get_json()
    assert [c["source"]["topic"]["code"] for c in default["cards"]] == ["opioid-benzodiazepine"]


def test_logs_hold_no_patient_data_or_tokens(client: CheckedClient,
                                             caplog: pytest.LogCaptureFixture) -> None:
    """Patient id, name, birth date, drug names and the FHIR token never reach the logs."""
    import responses

    body = _body()
    body["context"]["patientId"] = "pt-secret-9"
    body["prefetch"]["patient"] = {"resourceType": "Patient", "id": "pt-secret-9",
                                   "name": [{"family": "Zyzzyva", "given": ["Quentin"]}],
                                   "birthDate": "1961-07-13"}
    body["prefetch"].pop("procedures")
    body["fhirAuthorization"] = {"access_token": "tok-abc-123", "token_type": "Bearer",
                                 "expires_in": 300, "scope": "patient/*.read", "subject": "x"}
    with responses.RequestsMock() as rsps:
        rsps.get(re.compile(r"http://127\.0\.0\.1:8081/Procedure\?patient=pt-secret-9.*"),
                 status=500)
        with caplog.at_level(logging.DEBUG):
            client.post(SIGN, body)
            client.post(SIGN, {"hook": "order-sign", "hookInstance": "x",
                               "context": {"patientId": "pt-secret-9"}})
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for secret in ("pt-secret-9", "Zyzzyva", "Quentin", "1961-07-13", "tok-abc-123",
                   "Alprazolam", "Oxycodone"):
        assert secret not in text, secret
    assert any(r.msg == "hook" for r in caplog.records)


def test_summary_is_clipped_to_139_characters() -> None:
    """A summary that would exceed 139 characters is clipped with an ellipsis."""
    clipped = clip_summary("x" * 300)
    assert len(clipped) == 139 and clipped.endswith("\u2026")
    assert clip_summary("short  and\nspaced") == "short and spaced"


def test_patient_text_cannot_inject_markdown() -> None:
    """Links, images and HTML in EHR drug names are shown as text."""
    escaped = escape_markdown("Oxy [click](http://evil) ![x](y) <script>")
    assert "[click](" not in escaped and "<script>" not in escaped


def test_prune_removes_empty_values() -> None:
    """None, empty strings, lists and objects are dropped, recursively."""
    assert prune({"a": None, "b": "", "c": [], "d": {"e": None}, "f": [None, 1]}) == {"f": [1]}


def test_rendering_gives_fresh_uuids_every_time() -> None:
    """Two renders of the same finding never share a card or suggestion uuid."""
    templates = CardTemplates()
    finding = Finding("opioid-benzodiazepine", "opioid-benzodiazepine",
                      {"opioids": "oxycodone", "depressants": "alprazolam"}, ("a", "b"),
                      (SuggestionSpec("naloxone", {"patient_id": "p"}),))
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
