"""The shared exclusions and clinical criteria, tested on their own (no HTTP, no rules)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from conftest import shared_knowledge

from cds_service.facts import ClinicalFacts, FactBuilder
from cds_service.fhir.record import PatientRecord
from cds_service.rules.alternatives import first_line_drug_trials, first_line_status
from cds_service.rules.criteria import chronic_low_back_pain, opioid_exposure
from cds_service.rules.exclusions import order_exclusion, oud_treatment, patient_exclusion
from cds_service.rules.registry import default_rules
from cds_service.settings import Exclusions, load_settings

TODAY = dt.date(2026, 11, 23)
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"


def condition(
    code: str,
    system: str = ICD,
    onset: str | None = "2026-01-01",
    status: str = "active",
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": code,
        "clinicalStatus": {"coding": [{"code": status}]},
        "code": {"coding": [{"system": system, "code": code}]},
    }
    if onset:
        resource["onsetDateTime"] = onset
    resource.update(extra)
    return resource


def order(
    text: str, status: str = "active", authored: str = "2026-11-01", days: int = 30, **extra: Any
) -> dict[str, Any]:
    resource = {
        "resourceType": "MedicationRequest",
        "id": text[:10],
        "status": status,
        "intent": "order",
        "authoredOn": authored,
        "medicationCodeableConcept": {"text": text},
        "dispenseRequest": {"expectedSupplyDuration": {"value": days, "code": "d"}},
    }
    resource.update(extra)
    return resource


SETTINGS = load_settings({r.id: r.settings_type for r in default_rules()})
BUILDER = FactBuilder(shared_knowledge(), SETTINGS)
ALL_ON = SETTINGS.rules["opioid-benzodiazepine"].exclusions


def excl(**off: bool) -> Exclusions:
    from dataclasses import replace

    return replace(ALL_ON, **off)


def facts_for(**record: Any) -> tuple[PatientRecord, ClinicalFacts]:
    drafts = record.pop("drafts", [])
    hook = record.pop("hook", "order-sign")
    resources = [r for group in record.values() if isinstance(group, list) for r in group]
    fields = {k: v for k, v in record.items() if not isinstance(v, list)}
    rec = PatientRecord.of("p", resources, **fields)
    rec.draft_orders = drafts
    rec.focus_orders = list(drafts)
    return rec, BUILDER.derive(rec, TODAY, ordering=hook != "patient-view")


@pytest.mark.parametrize(
    "conditions,patient,reason",
    [
        ([], {"birthDate": "2009-01-01"}, "under_18"),
        ([condition("C50.911")], None, "cancer"),
        ([condition("G89.3")], None, "cancer"),
        ([condition("D47.1")], None, "cancer"),
        ([condition("D57.1")], None, "sickle_cell"),
        ([condition("D5700")], None, "sickle_cell"),
        ([condition("417357006", SCT)], None, "sickle_cell"),
        ([condition("Z51.5")], None, "hospice"),
        ([condition("385763009", SCT)], None, "hospice"),
    ],
)
def test_patient_exclusions(conditions: list[Any], patient: Any, reason: str) -> None:
    """Each patient-level exclusion is recognised from its codes (dotted or not)."""
    _rec, facts = facts_for(conditions=conditions, patient=patient)
    assert reason in (patient_exclusion(facts, ALL_ON) or "")


@pytest.mark.parametrize(
    "conditions,patient",
    [
        ([condition("D57.3")], None),  # sickle cell trait is not disease
        ([condition("C50.911", status="resolved")], None),  # cancer in remission / resolved
        ([condition("C50.911", verificationStatus={"coding": [{"code": "refuted"}]})], None),
        ([], {"birthDate": "2008-11-23"}),  # 18 today
        ([condition("D12.5")], None),  # benign colon polyp: not a D37-D49 neoplasm
    ],
)
def test_not_excluded(conditions: list[Any], patient: Any) -> None:
    """Near misses do not exclude: trait, resolved or refuted cancer, an 18th birthday."""
    _rec, facts = facts_for(conditions=conditions, patient=patient)
    assert patient_exclusion(facts, ALL_ON) is None


def test_each_exclusion_can_be_switched_off() -> None:
    """With an exclusion switched off in the settings, it no longer applies."""
    _, facts = facts_for(conditions=[condition("C50.911")])
    assert patient_exclusion(facts, excl(cancer=False)) is None
    _rec, facts = facts_for(patient={"birthDate": "2010-01-01"})
    assert patient_exclusion(facts, excl(under_18=False)) is None


def test_hospice_service_request_excludes() -> None:
    """A hospice referral (ServiceRequest) excludes like a hospice condition."""
    referral = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "authoredOn": "2026-11-01",
        "code": {"coding": [{"system": SCT, "code": "385763009"}]},
    }
    _rec, facts = facts_for(service_requests=[referral])
    assert "hospice" in (patient_exclusion(facts, ALL_ON) or "")


@pytest.mark.parametrize(
    "draft,reason",
    [
        (
            order(
                "Oxycodone 5 MG Oral Tablet",
                status="draft",
                category=[{"coding": [{"code": "inpatient"}]}],
            ),
            "inpatient",
        ),
        (order("Morphine Sulfate 4 MG/ML Injectable Solution", status="draft"), "injectable"),
        (
            order(
                "Oxycodone 5 MG Oral Tablet",
                status="draft",
                category={"coding": [{"code": "inpatient"}]},
            ),
            "inpatient",
        ),  # object, not array
    ],
)
def test_order_exclusions(draft: dict[str, Any], reason: str) -> None:
    """Inpatient and injectable orders are outside ambulatory prescribing."""
    _, facts = facts_for(drafts=[draft])
    assert reason in (order_exclusion(facts.drafts[0], facts, ALL_ON) or "")
    assert order_exclusion(facts.drafts[0], facts, excl(inpatient_or_injectable=False)) is None


def test_community_oral_order_is_not_excluded() -> None:
    """An ordinary community oral order is in scope."""
    _, facts = facts_for(
        drafts=[
            order(
                "Oxycodone 5 MG Oral Tablet",
                status="draft",
                category=[{"coding": [{"code": "community"}]}],
            )
        ]
    )
    assert order_exclusion(facts.drafts[0], facts, ALL_ON) is None


def test_oud_treatment() -> None:
    """Buprenorphine for OUD, or methadone with an OUD diagnosis, is OUD treatment."""
    _, facts = facts_for(medication_requests=[order("Suboxone 8-2 mg film")])
    assert oud_treatment(facts, ALL_ON) == "oud_treatment"
    _, facts = facts_for(
        medication_requests=[order("Methadone 10 MG/ML Oral Solution")],
        conditions=[condition("F11.20")],
    )
    assert oud_treatment(facts, ALL_ON) == "oud_treatment"
    _, facts = facts_for(medication_requests=[order("Methadone 10 MG Oral Tablet")])
    assert oud_treatment(facts, ALL_ON) is None  # methadone for pain
    _, facts = facts_for(medication_requests=[order("Butrans 10 mcg/hr patch")])
    assert oud_treatment(facts, ALL_ON) is None  # buprenorphine patch treats pain


@pytest.mark.parametrize(
    "conditions,expected",
    [
        ([condition("279039007", SCT, onset="2026-05-01")], "chronic-by-onset 1 May 2026"),
        ([condition("278860009", SCT, onset="2026-11-20")], "chronic-coded-since"),
        (
            [condition("M54.50", onset="2026-11-20"), condition("G89.29", onset="2026-11-20")],
            "chronic-with-chronic-pain",
        ),
        (
            [condition("M5450", onset=None, recordedDate="2025-02-01")],
            "chronic-by-recorded 1 Feb 2025",
        ),
        (
            [condition("M54.16", onsetPeriod={"start": "2026-01-01"}, onset=None)],
            "chronic-by-onset 1 Jan 2026",
        ),
        ([condition("M51.16", onset="2025-10-01")], "chronic-by-onset 1 Oct 2025"),
        ([condition("S33.5XXA", onset="2026-07-01")], "chronic-by-onset 1 Jul 2026"),
        (
            [condition("M54.5", onset=None, onsetAge={"value": 50, "unit": "a"})],
            "chronic-by-onset 14 Mar 2018",
        ),
        (
            [
                {
                    "resourceType": "Condition",
                    "clinicalStatus": {"coding": [{"code": "recurrence"}]},
                    "code": {"text": "Chronic lumbago"},
                    "onsetDateTime": "2026-11-01",
                }
            ],
            "chronic-coded-since",
        ),
    ],
)
def test_chronic_low_back_pain(conditions: list[Any], expected: str) -> None:
    """Chronic LBP by code, by a chronic-pain pairing, or by onset over 12 weeks, with the date."""
    _, facts = facts_for(conditions=conditions, patient={"birthDate": "1968-03-14"})
    chronic = chronic_low_back_pain(facts, 84)
    assert chronic is not None
    key, _, date = expected.partition(" ")
    assert chronic.evidence.key == key
    assert date in str(chronic.evidence.values.get("date", ""))


@pytest.mark.parametrize(
    "conditions",
    [
        [condition("279039007", SCT, onset="2026-09-01")],  # 12 weeks minus a few days
        [condition("279039007", SCT, onset="2025-01-01", status="resolved")],
        [
            condition(
                "279039007",
                SCT,
                onset="2025-01-01",
                verificationStatus={"coding": [{"code": "entered-in-error"}]},
            )
        ],
        [condition("G89.29")],  # chronic pain without back pain
        [condition("M25.561", onset="2020-01-01")],  # knee pain
    ],
)
def test_not_chronic_low_back_pain(conditions: list[Any]) -> None:
    """Acute, resolved, erroneous or non-back pain is not chronic LBP."""
    _, facts = facts_for(conditions=conditions)
    assert chronic_low_back_pain(facts, 84) is None


@pytest.mark.parametrize(
    "history,naive",
    [
        ([], True),
        (
            [
                order(
                    "Oxycodone 5 MG Oral Tablet", status="completed", authored="2026-10-20", days=5
                )
            ],
            False,
        ),
        (
            [
                order(
                    "Oxycodone 5 MG Oral Tablet", status="completed", authored="2026-07-01", days=7
                )
            ],
            True,
        ),
        (
            [order("Oxycodone 5 MG Oral Tablet", status="entered-in-error", authored="2026-11-01")],
            True,
        ),
        ([order("Oxycodone 5 MG Oral Tablet", status="cancelled", authored="2026-11-01")], True),
        (
            [order("Oxycodone 5 MG Oral Tablet", status="stopped", authored="2026-09-10", days=30)],
            False,
        ),
        # a 7-day course that ended 100 days ago: the current-use allowance does not count
        (
            [
                order(
                    "Oxycodone 5 MG Oral Tablet", status="completed", authored="2026-08-08", days=7
                )
            ],
            True,
        ),
        # a 30-day supply ending 80 days ago still counts
        (
            [
                order(
                    "Oxycodone 5 MG Oral Tablet", status="completed", authored="2026-08-05", days=30
                )
            ],
            False,
        ),
        (
            [
                order(
                    "Codeine Phosphate 2 MG/ML / Guaifenesin 20 MG/ML Oral Solution",
                    authored="2026-11-01",
                )
            ],
            True,
        ),
    ],
)
def test_opioid_naive(history: list[Any], naive: bool) -> None:
    """An opioid supply overlapping the last 90 days counts (taken statuses only), measured
    from the end of the supply without the current-use allowance."""
    _, facts = facts_for(medication_requests=history)
    assert opioid_exposure(facts, 90).naive is naive


def test_draft_never_counts_as_exposure() -> None:
    """The opioid being ordered now does not make the patient non-naive."""
    _, facts = facts_for(drafts=[order("Oxycodone 5 MG Oral Tablet", status="draft")])
    assert opioid_exposure(facts, 90).naive


def test_first_line_drug_trials_skip_opioid_combinations() -> None:
    """Acetaminophen inside an opioid combination is not a first-line trial; alone it is."""
    since = TODAY - dt.timedelta(days=730)
    _, facts = facts_for(medication_requests=[order("Percocet 5/325", status="completed")])
    assert first_line_drug_trials(facts, since) == []
    _, facts = facts_for(
        medication_requests=[order("Acetaminophen 500 MG Oral Tablet", status="completed")]
    )
    assert len(first_line_drug_trials(facts, since)) == 1


def test_non_drug_therapies_by_snomed_cpt_and_text() -> None:
    """PT by SNOMED, acupuncture by CPT, CBT by text only; not-done and old ones ignored."""

    def procedure(
        code: dict[str, Any], date: str = "2026-06-01", status: str = "completed"
    ) -> dict[str, Any]:
        return {
            "resourceType": "Procedure",
            "status": status,
            "code": code,
            "performedDateTime": date,
        }

    _, facts = facts_for(
        procedures=[
            procedure({"coding": [{"system": SCT, "code": "91251008"}]}),
            procedure({"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "97810"}]}),
            procedure({"text": "Cognitive Behavioural Therapy, group"}),
            procedure({"coding": [{"system": SCT, "code": "91251008"}]}, status="not-done"),
            procedure({"coding": [{"system": SCT, "code": "91251008"}]}, date="2020-01-01"),
            procedure({"text": "Appendectomy"}),
        ]
    )
    status = first_line_status(facts, 730)
    steps = [t.step for t in facts.therapies if t.date and t.date.year == 2026]
    assert steps == ["exercise-physical-therapy", "acupuncture", "psychological-therapy"]
    assert len(status.therapy_lines) == 3 and not status.non_drug_missing


def test_a_drug_whose_text_disagrees_with_its_code_names_the_coded_product() -> None:
    """Card text shows the EHR's name and, when it contradicts the RxNorm code the MME was
    computed on, the coded product too; a matching name is shown alone."""
    from cds_service.findings import Line
    from cds_service.rules.lines import drug_label

    rxnorm = "http://www.nlm.nih.gov/research/umls/rxnorm"
    wrong = order(
        "x",
        medicationCodeableConcept={
            "text": "Percocet 5/325",
            "coding": [{"system": rxnorm, "code": "1049625"}],
        },
    )
    right = order(
        "y",
        medicationCodeableConcept={
            "text": "Percocet 10/325",
            "coding": [{"system": rxnorm, "code": "1049625"}],
        },
    )
    _, facts = facts_for(history=[wrong, right])
    labels = {u.resource["medicationCodeableConcept"]["text"]: drug_label(u) for u in facts.history}
    coded = labels["Percocet 5/325"]
    assert isinstance(coded, Line) and coded.key == "drug-coded-as"
    assert "oxycodone hydrochloride 10 MG" in str(coded.values["coded"])
    assert labels["Percocet 10/325"] == "Percocet 10/325"


def _aspirin_dose(tablets: float, every_hours: int) -> dict[str, Any]:
    return {
        "timing": {"repeat": {"frequency": 1, "period": every_hours, "periodUnit": "h"}},
        "doseAndRate": [{"doseQuantity": {"value": tablets, "unit": "tablet"}}],
    }


@pytest.mark.parametrize(
    ("extra", "trial"),
    [
        ({}, False),  # no dosage, no reason: daily antiplatelet aspirin is as likely
        ({"dosageInstruction": [_aspirin_dose(1, 24)]}, False),  # 325 mg/day
        ({"dosageInstruction": [_aspirin_dose(0.5, 24)]}, False),  # 162.5 mg/day
        ({"dosageInstruction": [_aspirin_dose(2, 6)]}, True),  # 2600 mg/day
        ({"dosageInstruction": [_aspirin_dose(1, 12)]}, True),  # 650 mg/day
        ({"reasonCode": [{"coding": [{"system": SCT, "code": "279039007"}]}]}, True),
    ],
)
def test_aspirin_is_a_trial_only_above_325_mg_a_day_or_for_pain(
    extra: dict[str, Any], trial: bool
) -> None:
    """Aspirin 325 mg counts as a first-line NSAID trial only with a pain reason or a dosage
    above 325 mg a day; without either it may be antiplatelet therapy."""
    from cds_service.rules.alternatives import is_first_line_analgesic

    _, facts = facts_for(history=[order("Aspirin 325 MG Oral Tablet", **extra)])
    (use,) = facts.history
    assert is_first_line_analgesic(use) is trial
