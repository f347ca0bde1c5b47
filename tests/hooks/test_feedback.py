"""Feedback is bounded and checked before anything is stored: only cards this service issued
for this service id, reasons from the card's own catalogue, RFC 3339 timestamps, accepted
suggestions of that card; stored fields are the service's identifiers and catalogue codes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import FEEDBACK, SIGN, CheckedClient, card_ids_for, feedback_item
from flask import Flask
from servers import cards_body

from cds_service.hooks.feedback import CardIds, rfc3339

SIGN_ID = "opioid-lbp-order-sign"
SELECT_ID = "opioid-lbp-order-select"
CANARY = "Jane Canary MRN 4417-2210 DOB 1961-04-02"


def _rows(app: Flask, cards: set[str]) -> list[dict[str, Any]]:
    return [r for r in app.extensions["cds_store"].feedback_items() if r["card_uuid"] in cards]


def test_a_hundred_thousand_item_post_is_413_before_it_is_read(app: Flask) -> None:
    """A 100,000-item feedback body is refused 413 from its Content-Length, stored nothing."""
    ids = card_ids_for(app)
    item = feedback_item(ids)
    body = json.dumps({"feedback": [item] * 100_000}).encode()
    response = app.test_client().post(FEEDBACK, data=body, content_type="application/json")
    assert response.status_code == 413
    assert _rows(app, {item["card"]}) == []


def test_more_items_than_the_limit_is_413(app: Flask, client: CheckedClient) -> None:
    """101 small items (under the byte limit) are 413; 100 are stored."""
    ids = card_ids_for(app)
    items = [feedback_item(ids) for _ in range(101)]
    assert client.post(FEEDBACK, {"feedback": items}).status_code == 413
    assert _rows(app, {i["card"] for i in items}) == []
    assert client.post(FEEDBACK, {"feedback": items[:100]}).status_code == 200
    assert len(_rows(app, {i["card"] for i in items})) == 100


def _invalid(ids: CardIds) -> list[tuple[str, dict[str, Any], str]]:
    other_card = ids.card_uuid(SIGN_ID, "opioid-benzodiazepine")
    unusable_card = ids.card_uuid(SIGN_ID, "record-unusable")
    return [
        ("missing timestamp", {"outcomeTimestamp": None}, "outcomeTimestamp"),
        ("not a date", {"outcomeTimestamp": "yesterday"}, "outcomeTimestamp"),
        ("no time zone", {"outcomeTimestamp": "2026-11-22T13:20:13"}, "outcomeTimestamp"),
        ("impossible date", {"outcomeTimestamp": "2026-02-30T10:00:00Z"}, "outcomeTimestamp"),
        (
            "accepted without suggestions",
            {"outcome": "accepted", "overrideReason": None},
            "acceptedSuggestions",
        ),
        (
            "accepted suggestion of another card",
            {
                "outcome": "accepted",
                "overrideReason": None,
                "acceptedSuggestions": [{"id": ids.suggestion_uuid(other_card, 0)}],
            },
            "acceptedSuggestions[0].id",
        ),
        ("reason without a code", {"overrideReason": {"reason": {"system": "x"}}}, "code"),
        (
            "reason from another card's catalogue",
            {"overrideReason": {"reason": {"code": "refractory"}}},
            "overrideReason.reason.code",
        ),
        (
            "reason from another system",
            {"overrideReason": {"reason": {"code": "palliative", "system": "http://x.org"}}},
            "overrideReason.reason.system",
        ),
        ("card never issued", {"card": "7d776d0c-5b8e-4b8a-9d0e-1c2f3a4b5c6d"}, "card"),
        ("card for another service", {"card": ids.card_uuid(SELECT_ID, "x")}, "card"),
        ("card text", {"card": CANARY}, "card"),
        ("reason its card does not offer", {"card": unusable_card}, "reason.code"),
    ]


@pytest.mark.parametrize("case", range(13))
def test_an_invalid_item_is_400_naming_the_field_and_nothing_is_stored(
    app: Flask, client: CheckedClient, case: int
) -> None:
    """Each malformed item is 400 naming its field, and the valid item before it in the same
    POST is not stored either."""
    ids = card_ids_for(app)
    name, change, field = _invalid(ids)[case]
    good = feedback_item(ids, reason="palliative")
    bad = feedback_item(ids, reason="palliative")
    for key, value in change.items():
        if value is None:
            bad.pop(key, None)
        else:
            bad[key] = value
    if name == "card for another service":
        bad["card"] = ids.card_uuid(SELECT_ID, "opioid-benzodiazepine")
    response = client.post(FEEDBACK, {"feedback": [good, bad]})
    assert response.status_code == 400, name
    expression = response.get_json()["issue"][0]["expression"][0]
    assert expression.startswith("feedback[1].") and field in expression, (name, expression)
    assert _rows(app, {good["card"], str(bad.get("card"))}) == []


def test_stored_fields_are_issued_ids_and_catalogue_codes_never_client_text(
    app: Flask, client: CheckedClient
) -> None:
    """userComment, reason displays, unknown fields and the timestamp's own spelling are not
    stored: the row holds the card uuid, its rule, the code and the time in UTC."""
    ids = card_ids_for(app)
    item = feedback_item(ids, reason="taper-in-progress", at="2026-11-22T14:20:13.5+01:00")
    item["overrideReason"]["reason"]["display"] = CANARY
    item["overrideReason"]["userComment"] = CANARY
    item["note"] = CANARY
    assert client.post(FEEDBACK, {"feedback": [item]}).status_code == 200
    [row] = _rows(app, {item["card"]})
    assert CANARY not in json.dumps(row, default=str)
    assert row["override_reason"] == "taper-in-progress"
    assert row["rule_id"] == "opioid-benzodiazepine"
    assert row["outcome_timestamp"] == "2026-11-22T13:20:13.5Z"


def test_a_later_different_answer_is_a_new_row_and_a_resend_is_not(
    app: Flask, client: CheckedClient
) -> None:
    """A second override of the same card with another reason is kept; resending it is not."""
    ids = card_ids_for(app)
    first = feedback_item(ids, reason="taper-in-progress")
    second = {**feedback_item(ids, reason="palliative", card=first["card"])}
    for body in ([first], [second], [second, first]):
        assert client.post(FEEDBACK, {"feedback": body}).status_code == 200
    rows = _rows(app, {first["card"]})
    assert sorted(r["override_reason"] for r in rows) == ["palliative", "taper-in-progress"]


def test_feedback_on_a_card_the_hook_returned(app: Flask, client: CheckedClient) -> None:
    """The cards and suggestions a hook call returns are accepted as feedback, with the rule."""
    cards = client.post(SIGN, cards_body()).get_json()["cards"]
    card = next(c for c in cards if c.get("suggestions"))
    item = {
        "card": card["uuid"],
        "outcome": "accepted",
        "outcomeTimestamp": "2026-11-23T10:00:00Z",
        "acceptedSuggestions": [{"id": s["uuid"]} for s in card["suggestions"]],
    }
    assert client.post(FEEDBACK, {"feedback": [item]}).status_code == 200
    [row] = _rows(app, {card["uuid"]})
    assert row["rule_id"] == card["source"]["topic"]["code"]
    assert row["accepted_suggestions"] == [s["uuid"] for s in card["suggestions"]]


def test_card_ids_are_version_4_uuids_only_this_key_recognises() -> None:
    """Minted ids look like uuid4s; another key or another service id does not verify them."""
    ids = CardIds(b"k" * 32, ["rule-a", "rule-b"])
    card = ids.card_uuid("svc", "rule-b")
    assert card[14] == "4" and card[19] in "89ab"
    assert ids.rule_of("svc", card) == "rule-b"
    assert ids.rule_of("other", card) is None
    assert CardIds(b"j" * 32, ["rule-a", "rule-b"]).rule_of("svc", card) is None


@pytest.mark.parametrize(
    "value,expected",
    [
        ("2026-11-22T13:20:13.596Z", "2026-11-22T13:20:13.596Z"),
        ("2026-11-22t13:20:13z", "2026-11-22T13:20:13Z"),
        ("2026-11-22T08:20:13-05:00", "2026-11-22T13:20:13Z"),
        ("2026-11-22", None),
        ("9999-12-31T23:59:59-01:00", None),
        (1700000000, None),
    ],
)
def test_rfc3339_timestamps(value: Any, expected: str | None) -> None:
    """RFC 3339 date-times with a zone are re-written in UTC; anything else is refused."""
    assert rfc3339(value) == expected
