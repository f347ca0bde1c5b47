"""Record semantics through HTTP, as fires / silent pairs: outside-prescriber statements, the
end of supply, referral statuses, hospice wherever it is recorded, deceased patients, the
order's own reason, records that belong to someone else, and the say-it-once card set.

Each scenario is a patient Bundle built by the helpers below (readable as a chart), turned
into a hook request the way `cds-service evaluate` does it."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import CheckedClient, shipped

from cds_service.hooks.bundle_request import request_from_bundle

SCT = "http://snomed.info/sct"
SIGN = "/cds-services/opioid-lbp-order-sign"
VIEW = "/cds-services/opioid-lbp-patient-view"
PID = "sem-1"


def patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": PID, "birthDate": "1970-05-01", **extra}


def subject() -> dict[str, str]:
    return {"reference": f"Patient/{PID}"}


def lbp(onset: str = "2026-11-10", rid: str = "lbp", chronic: bool = False) -> dict[str, Any]:
    code, text = (
        ("278860009", "Chronic low back pain") if chronic else ("279039007", "Low back pain")
    )
    return {
        "resourceType": "Condition",
        "id": rid,
        "subject": subject(),
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": SCT, "code": code, "display": text}], "text": text},
        "onsetDateTime": onset,
    }


def order(
    text: str,
    status: str = "active",
    authored: str = "2026-11-01",
    days: int = 30,
    rid: str = "",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": rid or text.split()[0].lower(),
        "status": status,
        "intent": "order",
        "subject": subject(),
        "authoredOn": authored,
        "medicationCodeableConcept": {"text": text},
        "dispenseRequest": {"expectedSupplyDuration": {"value": days, "code": "d"}},
        **extra,
    }


def draft(text: str = "Oxycodone Hydrochloride 5 MG Oral Tablet", **extra: Any) -> dict[str, Any]:
    return order(text, status="draft", authored="2026-11-23", days=5, rid="d1", **extra)


def statement(
    text: str,
    status: str = "active",
    start: str = "2025-10-19",
    asserted: str = "2026-11-16",
    rid: str = "st1",
) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": rid,
        "status": status,
        "subject": subject(),
        "medicationCodeableConcept": {"text": text},
        "effectivePeriod": {"start": start},
        "dateAsserted": asserted,
    }


def referral(text: str, status: str, date: str = "2026-11-01") -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": f"sr-{status}",
        "status": status,
        "intent": "order",
        "subject": subject(),
        "authoredOn": date,
        "code": {"text": text},
    }


def chart(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:{r['resourceType'].lower()}-{i}", "resource": r}
            for i, r in enumerate(resources)
        ],
    }


def cards_for(
    client: CheckedClient, bundle: dict[str, Any], hook: str = "order-sign"
) -> list[dict[str, Any]]:
    body = request_from_bundle(bundle, hook)
    response = client.post(VIEW if hook == "patient-view" else SIGN, body)
    assert response.status_code == 200, response.get_json()
    cards: list[dict[str, Any]] = response.get_json()["cards"]
    return cards


def rules_of(cards: list[dict[str, Any]]) -> list[str]:
    return [c["source"]["topic"]["code"] for c in cards]


DIAZEPAM = "Diazepam 5 MG Oral Tablet"
OXYCODONE = "Oxycodone Hydrochloride 5 MG Oral Tablet"


@pytest.mark.parametrize(("asserted", "fires"), [("2026-11-16", True), ("2025-10-19", False)])
def test_outside_benzodiazepine_reported_taking_counts_while_confirmed(
    client: CheckedClient, asserted: str, fires: bool
) -> None:
    """An active statement started 400 days ago and confirmed last week is current use (a new
    opioid order is a co-prescription); the same statement last confirmed a year ago is not."""
    cards = cards_for(
        client, chart(patient(), lbp(), draft(), statement(DIAZEPAM, asserted=asserted))
    )
    assert ("opioid-benzodiazepine" in rules_of(cards)) is fires
    if fires:
        detail = cards[0]["detail"]
        assert "on the patient's medication list, confirmed 16 Nov 2026" in detail


@pytest.mark.parametrize(
    ("status", "start_card"),
    [("active", False), ("stopped", True), ("not-taken", True), ("entered-in-error", True)],
)
def test_outside_opioid_reported_taking_is_not_a_new_start(
    client: CheckedClient, status: str, start_card: bool
) -> None:
    """An opioid the patient reports taking (active, confirmed last week) means the new order is
    not an opioid start; stopped long ago, never taken or entered in error it does not."""
    reported = statement(
        OXYCODONE, status=status, asserted="2025-10-19" if status == "stopped" else "2026-11-16"
    )
    cards = cards_for(
        client, chart(patient(), lbp("2025-01-10"), draft("Tramadol 50 MG Oral Tablet"), reported)
    )
    assert ("opioid-start-chronic-lbp" in rules_of(cards)) is start_card


@pytest.mark.parametrize(
    ("authored", "days", "start_card"),
    [
        ("2026-08-08", 7, True),  # a 7-day course that ended 100 days ago
        ("2026-08-05", 30, False),  # a 30-day supply that ended 80 days ago
    ],
)
def test_opioid_naive_look_back_measures_from_the_end_of_supply(
    client: CheckedClient, authored: str, days: int, start_card: bool
) -> None:
    """The 90-day look-back starts where the supply ended, with no current-use allowance."""
    cards = cards_for(
        client,
        chart(
            patient(),
            lbp("2025-01-10"),
            draft(),
            order(OXYCODONE, status="completed", authored=authored, days=days, rid="old"),
        ),
    )
    assert ("opioid-start-chronic-lbp" in rules_of(cards)) is start_card


@pytest.mark.parametrize(
    ("intent", "exposure"),
    [
        ("proposal", False),
        ("plan", True),
        ("option", False),
        ("directive", False),
        ("order", True),
        ("original-order", True),
        ("reflex-order", True),
        ("filler-order", True),
        ("instance-order", True),
        (None, True),
    ],
)
def test_only_an_order_intent_is_opioid_exposure(
    client: CheckedClient, intent: str | None, exposure: bool
) -> None:
    """An active opioid request that only proposes (or is an option) is not a prescription:
    the patient stays opioid-naive; a plan (a documented home medication), any order intent,
    or none given, counts."""
    prior = order(OXYCODONE, authored="2026-10-24", days=7, rid="prior")
    if intent is None:
        del prior["intent"]
    else:
        prior["intent"] = intent
    cards = cards_for(client, chart(patient(), lbp("2025-01-10"), draft(), prior))
    assert ("opioid-start-chronic-lbp" in rules_of(cards)) is not exposure


@pytest.mark.parametrize(
    ("status", "counted"),
    [
        ("revoked", False),
        ("entered-in-error", False),
        ("draft", False),
        ("active", True),
        ("completed", True),
        ("on-hold", True),
    ],
)
def test_referral_status_decides_whether_a_step_was_taken(
    client: CheckedClient, status: str, counted: bool
) -> None:
    """A revoked, erroneous or unsigned PT referral is no first-line step; an active, completed
    or on-hold one is."""
    bundle = chart(
        patient(),
        lbp(),
        draft(),
        order("Ibuprofen 600 MG Oral Tablet", status="completed", authored="2026-10-01"),
        referral("Referral to physical therapy", status),
    )
    body = request_from_bundle(bundle, "order-sign")
    # a draft-status referral in the history is not this order set's referral
    body["context"]["draftOrders"]["entry"] = [
        e
        for e in body["context"]["draftOrders"]["entry"]
        if e["resource"]["resourceType"] == "MedicationRequest"
    ]
    if status == "draft":
        body["prefetch"]["serviceRequests"]["entry"].append(
            {"resource": referral("Referral to physical therapy", status)}
        )
    response = client.post(SIGN, body)
    fired = rules_of(response.get_json()["cards"])
    assert ("first-line-therapy-not-tried" in fired) is not counted


HOSPICE = {
    "coding": [{"system": SCT, "code": "385763009", "display": "Hospice care"}],
    "text": "Hospice care",
}


@pytest.mark.parametrize(
    ("encounter", "silenced"),
    [
        ({"status": "in-progress", "period": {"start": "2026-11-01"}}, True),
        ({"status": "finished", "period": {"start": "2021-01-01", "end": "2021-03-01"}}, False),
    ],
)
def test_hospice_recorded_as_an_encounter(
    client: CheckedClient, encounter: dict[str, Any], silenced: bool
) -> None:
    """Current hospice enrolment recorded as an Encounter silences the rules; a hospice
    episode that ended years ago does not."""
    resource = {
        "resourceType": "Encounter",
        "id": "enc-h",
        "subject": subject(),
        "class": {"code": "HH"},
        "type": [HOSPICE],
        **encounter,
    }
    cards = cards_for(
        client, chart(patient(), lbp("2025-01-10"), draft(), resource, order(DIAZEPAM, rid="dz"))
    )
    assert (shipped(rules_of(cards)) == []) is silenced


@pytest.mark.parametrize(
    ("status", "silenced"), [("active", True), ("completed", False), ("revoked", False)]
)
def test_terminal_care_recorded_as_a_care_plan(
    client: CheckedClient, status: str, silenced: bool
) -> None:
    """An active palliative / terminal care plan silences the rules; a finished one does not."""
    plan = {
        "resourceType": "CarePlan",
        "id": "cp1",
        "status": status,
        "intent": "plan",
        "subject": subject(),
        "title": "Palliative care plan",
        "category": [HOSPICE],
    }
    cards = cards_for(client, chart(patient(), lbp("2025-01-10"), draft(), plan))
    assert (shipped(rules_of(cards)) == []) is silenced


@pytest.mark.parametrize(
    ("extra", "silent"),
    [
        ({"deceasedDateTime": "2026-11-20"}, True),
        ({"deceasedBoolean": True}, True),
        ({"deceasedBoolean": False}, False),
        ({}, False),
    ],
)
def test_a_deceased_patient_gets_no_cards(
    client: CheckedClient, extra: dict[str, Any], silent: bool
) -> None:
    """A patient recorded as deceased gets no cards; a living one does."""
    cards = cards_for(
        client, chart(patient(**extra), lbp("2025-01-10"), draft(), order(DIAZEPAM, rid="dz"))
    )
    assert (cards == []) is silent


@pytest.mark.parametrize(
    ("reason", "fires"),
    [
        (
            {
                "reasonCode": [
                    {"coding": [{"system": SCT, "code": "279039007"}], "text": "Low back pain"}
                ]
            },
            True,
        ),
        ({"reasonReference": [{"reference": "Condition/lbp-x"}]}, True),
        ({}, False),
    ],
)
def test_the_orders_own_reason_is_evidence_of_low_back_pain(
    client: CheckedClient, reason: dict[str, Any], fires: bool
) -> None:
    """With no back pain on the problem list, the order's reasonCode or reasonReference still
    tells the first-line rule the opioid is for low back pain."""
    unlisted = lbp(rid="lbp-x")
    unlisted["clinicalStatus"] = {"coding": [{"code": "inactive"}]}  # not on the active list
    cards = cards_for(client, chart(patient(), draft(**reason), unlisted))
    assert ("first-line-therapy-not-tried" in rules_of(cards)) is fires
    if fires:
        assert "low back pain" in cards[0]["summary"].lower()


def test_co_prescription_is_first_and_the_low_back_pain_card_says_both(
    client: CheckedClient,
) -> None:
    """Oxycodone with a current benzodiazepine for chronic LBP and nothing tried first: two
    cards, co-prescription first, one LBP card that also names the missing first-line steps and
    the first-line rule it covers; no suggestion repeated."""
    cards = cards_for(
        client,
        chart(patient(), lbp("2025-01-10", chronic=True), draft(), order(DIAZEPAM, rid="dz")),
    )
    assert shipped(rules_of(cards)) == ["opioid-benzodiazepine", "opioid-start-chronic-lbp"]
    start = cards[1]
    assert start["extension"]["opioid-lbp-cds.covers"] == ["first-line-therapy-not-tried"]
    assert "physical therapy or CBT (neither on record)" in start["detail"]
    labels = [s["label"] for c in cards for s in c.get("suggestions", [])]
    assert len(labels) == len(set(labels))
    co = cards[0]["detail"]
    assert "back pain" not in co  # the benzodiazepine may be for anything (epilepsy here)
    assert "current through" in co  # the basis for calling it current
    assert "\\(" not in co and "\\)" not in co


def test_first_line_card_alone_when_the_start_rule_does_not_apply(client: CheckedClient) -> None:
    """Acute low back pain: no start card, so the first-line card is shown on its own."""
    cards = cards_for(client, chart(patient(), lbp("2026-11-10"), draft()))
    assert shipped(rules_of(cards)) == ["first-line-therapy-not-tried"]
    assert "extension" not in cards[0]


def _other(resource: dict[str, Any]) -> dict[str, Any]:
    return {**resource, "subject": {"reference": "Patient/someone-else"}}


def test_a_record_that_is_mostly_another_patients_says_so(client: CheckedClient) -> None:
    """When most of the record sent refers to another patient, the service says the checks
    could not be run instead of answering with no cards."""
    bundle = chart(
        patient(),
        _other(lbp("2025-01-10")),
        draft(),
        _other(order(DIAZEPAM, rid="dz")),
        _other(order("Ibuprofen 600 MG Oral Tablet", rid="ib")),
        _other(referral("Physical therapy", "active")),
    )
    cards = cards_for(client, bundle)
    assert shipped(rules_of(cards)) == ["record-unusable"]
    assert "4 of 4 clinical records" in cards[0]["detail"]
    normal = cards_for(
        client, chart(patient(), lbp("2025-01-10"), draft(), order(DIAZEPAM, rid="dz"))
    )
    assert "record-unusable" not in rules_of(normal)


# --- Second review: advice that must not harm, and records read as they are written --------

MELOXICAM = "Meloxicam 15 MG Oral Tablet"


def test_a_long_running_nsaid_started_before_the_look_back_counts(client: CheckedClient) -> None:
    """Meloxicam current since 2023 (90 days x 20 repeats) is a first-line drug on record: the
    card does not call the NSAID missing nor suggest a second NSAID."""
    nsaid = order(
        MELOXICAM,
        authored="2023-06-01",
        days=90,
        rid="mel",
        dispenseRequest={
            "expectedSupplyDuration": {"value": 90, "code": "d"},
            "numberOfRepeatsAllowed": 20,
        },
    )
    cards = cards_for(client, chart(patient(), lbp(), draft(), nsaid))
    text = " ".join(c.get("detail", "") for c in cards)
    assert "Missing: no NSAID" not in text
    labels = [s["label"] for c in cards for s in c.get("suggestions", [])]
    assert not any("naproxen" in label for label in labels)


def test_a_current_nsaid_means_remove_the_opioid_not_add_naproxen(client: CheckedClient) -> None:
    """Chronic LBP with naproxen current: the start card offers acetaminophen instead of the
    opioid draft (the safer alternative first), never a replacement that would be a second
    NSAID."""
    cards = cards_for(
        client,
        chart(
            patient(), lbp("2025-01-10"), draft(), order("Naproxen 500 MG Oral Tablet", rid="nap")
        ),
    )
    start = next(c for c in cards if c["source"]["topic"]["code"] == "opioid-start-chronic-lbp")
    labels = [s["label"] for s in start.get("suggestions", [])]
    assert (
        labels[0]
        == "Replace oxycodone with acetaminophen 1,000 mg up to three times daily as needed"
    )
    assert not any("naproxen" in label for label in labels)


def test_a_patient_already_on_an_opioid_is_not_told_to_switch(client: CheckedClient) -> None:
    """A renewal for a patient taking oxycodone: the first-line card adds therapy alongside,
    names the current opioid, and never offers to swap the opioid for naproxen."""
    cards = cards_for(
        client,
        chart(
            patient(),
            lbp("2025-01-10", chronic=True),
            draft(),
            order(OXYCODONE, authored="2026-11-01", rid="oxy"),
        ),
    )
    assert shipped(rules_of(cards)) == ["first-line-therapy-not-tried"]
    card = cards[0]
    assert "alongside the current opioid; never stop it abruptly" in card["detail"]
    assert "current through" in card["detail"]
    assert not any("naproxen" in s["label"] for s in card.get("suggestions", []))


@pytest.mark.parametrize(
    ("status", "start_card"), [("stopped", True), ("completed", True), ("active", False)]
)
def test_a_statement_that_says_it_stopped_ended_at_its_last_confirmation(
    client: CheckedClient, status: str, start_card: bool
) -> None:
    """Oxycodone reported as stopped (no end date) and last confirmed in June ended then: more
    than 90 days ago, so the new order is an opioid start; an active one is current."""
    reported = statement(OXYCODONE, status=status, start="2026-01-01", asserted="2026-06-01")
    if status == "active":
        reported["dateAsserted"] = "2026-11-16"
    cards = cards_for(
        client, chart(patient(), lbp("2025-01-10"), draft("Tramadol 50 MG Oral Tablet"), reported)
    )
    assert ("opioid-start-chronic-lbp" in rules_of(cards)) is start_card


def test_one_action_on_one_draft_is_offered_once(client: CheckedClient) -> None:
    """Oxycodone and lorazepam drafts with a naproxen draft: "remove the oxycodone draft"
    appears on one card only."""
    bundle = chart(
        patient(),
        lbp("2025-01-10"),
        draft(),
        order("Lorazepam 1 MG Oral Tablet", status="draft", rid="lz"),
        order("Naproxen 500 MG Oral Tablet", status="draft", rid="np"),
    )
    cards = cards_for(client, bundle)
    labels = [s["label"] for c in cards for s in c.get("suggestions", [])]
    assert labels.count("Remove the draft oxycodone order") == 1
    assert len(labels) == len(set(labels))


def test_an_opioid_ordered_and_on_the_medication_list_is_counted_once(
    client: CheckedClient,
) -> None:
    """An active oxycodone order and the same drug on the medication list: one current opioid
    in the chart summary, its MME not doubled."""
    bundle = chart(
        patient(),
        lbp("2025-01-10"),
        order(
            OXYCODONE,
            rid="oxy",
            dosageInstruction=[
                {
                    "timing": {"repeat": {"frequency": 4, "period": 1, "periodUnit": "d"}},
                    "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
                }
            ],
        ),
        statement(OXYCODONE),
    )
    cards = cards_for(client, bundle, "patient-view")
    summary = next(c for c in cards if c["source"]["topic"]["code"] == "opioid-safety-summary")
    assert summary["summary"].startswith("Opioid safety: 1 current opioid")
    assert "total 30 MME/day" in summary["detail"]


@pytest.mark.parametrize(
    ("encounter", "silenced"),
    [
        (
            {
                "status": "finished",
                "type": [HOSPICE],
                "period": {"start": "2026-11-22", "end": "2026-11-22"},
            },
            True,
        ),  # a home hospice visit
        (
            {
                "status": "finished",
                "class": {"code": "IMP"},
                "period": {"start": "2026-11-01", "end": "2026-11-20"},
                "hospitalization": {
                    "dischargeDisposition": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/discharge-disposition",
                                "code": "hosp",
                            }
                        ]
                    }
                },
            },
            True,
        ),  # discharged to hospice, code only
        (
            {
                "status": "finished",
                "type": [HOSPICE],
                "period": {"start": "2024-01-01", "end": "2024-02-01"},
            },
            False,
        ),
    ],
)
def test_hospice_recorded_as_a_finished_encounter(
    client: CheckedClient, encounter: dict[str, Any], silenced: bool
) -> None:
    """A recent hospice visit or a discharge to hospice (coded only) silences the rules; a
    hospice episode that ended years ago does not."""
    resource = {"resourceType": "Encounter", "id": "enc-2", "subject": subject(), **encounter}
    cards = cards_for(client, chart(patient(), lbp("2025-01-10"), draft(), resource))
    assert (shipped(rules_of(cards)) == []) is silenced


@pytest.mark.parametrize(
    ("plan", "silenced"),
    [
        ({"category": [{"coding": [{"system": SCT, "code": "736373009"}]}]}, True),
        ({"description": "Discussed palliative care options; wishes to continue treatment"}, False),
        ({"activity": [{"detail": {"status": "cancelled", "code": HOSPICE}}]}, False),
        ({"activity": [{"detail": {"status": "in-progress", "code": HOSPICE}}]}, True),
    ],
)
def test_care_plans_count_by_their_codes_and_title_not_free_text(
    client: CheckedClient, plan: dict[str, Any], silenced: bool
) -> None:
    """A palliative care plan by its SNOMED CT category or an active hospice activity silences
    the rules; a description that only discusses palliative care, or a cancelled activity,
    does not."""
    resource = {
        "resourceType": "CarePlan",
        "id": "cp2",
        "status": "active",
        "intent": "plan",
        "subject": subject(),
        **plan,
    }
    cards = cards_for(client, chart(patient(), lbp("2025-01-10"), draft(), resource))
    assert (shipped(rules_of(cards)) == []) is silenced


def test_a_critical_start_card_comes_before_a_gabapentinoid_note(client: CheckedClient) -> None:
    """Extended-release oxycodone with current gabapentin: the critical start card first, the
    softer CNS-depressant card after it."""
    cards = cards_for(
        client,
        chart(
            patient(),
            lbp("2025-01-10"),
            draft("12 HR Oxycodone Hydrochloride 10 MG Extended Release Oral Tablet"),
            order("Gabapentin 300 MG Oral Capsule", rid="gaba"),
        ),
    )
    assert shipped(rules_of(cards)) == ["opioid-start-chronic-lbp", "opioid-benzodiazepine"]
    assert [c["indicator"] for c in cards] == ["critical", "info"]


def test_a_resolved_condition_named_as_the_reason_is_not_chronic_pain(
    client: CheckedClient,
) -> None:
    """The order names a low back pain resolved in 2024: it is low back pain (first-line card)
    but its old onset does not make the pain chronic (no start card)."""
    resolved = lbp("2024-01-01", rid="old")
    resolved["clinicalStatus"] = {"coding": [{"code": "resolved"}]}
    cards = cards_for(
        client, chart(patient(), resolved, draft(reasonReference=[{"reference": "Condition/old"}]))
    )
    assert shipped(rules_of(cards)) == ["first-line-therapy-not-tried"]


def test_an_undated_dispense_is_not_current(client: CheckedClient) -> None:
    """A dispensed alprazolam with no date cannot show current use: no co-prescription card."""
    dispense = {
        "resourceType": "MedicationDispense",
        "id": "md1",
        "status": "completed",
        "subject": subject(),
        "medicationCodeableConcept": {"text": "Alprazolam 1 MG"},
    }
    cards = cards_for(client, chart(patient(), lbp(), draft(), dispense))
    assert "opioid-benzodiazepine" not in rules_of(cards)


def test_a_brand_name_in_brackets_reads_as_written(client: CheckedClient) -> None:
    """'[Xanax]' in an RxNorm name is shown without backslashes."""
    cards = cards_for(
        client,
        chart(patient(), lbp(), draft(), order("Alprazolam 0.5 MG Oral Tablet [Xanax]", rid="xa")),
    )
    co = next(c for c in cards if c["source"]["topic"]["code"] == "opioid-benzodiazepine")
    assert "[Xanax]" in co["detail"] and "\\[" not in co["detail"]


def test_a_silent_first_line_rule_still_leaves_one_card_attributed_to_both() -> None:
    """With the first-line rule silent, the shown start card still names it as covered, and
    no separate first-line card is logged as silent."""
    from conftest import TODAY, shared_knowledge

    from cds_service import create_app
    from cds_service.config import Config

    app = create_app(
        Config(today=TODAY),
        knowledge=shared_knowledge(),
        settings_overrides={"rules": {"first-line-therapy-not-tried": {"mode": "silent"}}},
    )
    body = request_from_bundle(chart(patient(), lbp("2025-01-10"), draft()), "order-sign")
    result = app.extensions["cds_engine"].evaluate("opioid-lbp-order-sign", body)
    assert shipped(rules_of(result.body["cards"])) == ["opioid-start-chronic-lbp"]
    assert result.body["cards"][0]["extension"]["opioid-lbp-cds.covers"] == [
        "first-line-therapy-not-tried"
    ]
    assert shipped(rules_of(result.silent_cards)) == []


def test_a_benzodiazepine_ordered_and_on_the_medication_list_is_named_once(
    client: CheckedClient,
) -> None:
    """The same diazepam as an active order and a medication-list entry: the co-prescription
    card names it once, on the order's basis."""
    cards = cards_for(
        client, chart(patient(), lbp(), draft(), order(DIAZEPAM, rid="dz"), statement(DIAZEPAM))
    )
    co = next(c for c in cards if c["source"]["topic"]["code"] == "opioid-benzodiazepine")
    assert co["detail"].count(DIAZEPAM) == 1
    assert "the patient reports taking it" not in co["detail"]
