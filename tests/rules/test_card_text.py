"""Cards a busy clinician acts on in five seconds (docs/cards.md): every card the fixtures
produce is held to the budgets (summary, evidence lines, words; decision first, source last),
never names a sedating drug as advice, and shows the dose that matters; an NSAID is never
suggested where one is current or the record shows a contraindication."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES, SERVICE, CheckedClient, fixture_request

from cds_service.hooks.bundle_request import request_from_bundle

SUMMARY_MAX = 139  # "under 140 characters"
EVIDENCE_MAX = 3
# ~60 words of detail; the hard budget leaves room for long record-sourced drug names
# (e.g. "72 HR Fentanyl 0.025 MG/HR Transdermal System"), measured in docs/cards.md.
DETAIL_WORDS_MAX = 80
DETAIL_WORDS_TYPICAL = 66  # at least 3 in 4 cards stay within this

RULE_CASES = [
    (d, name, case)
    for d in sorted(p.parent for p in FIXTURES.glob("*/cases.json"))
    for name, case in json.loads((d / "cases.json").read_text("utf-8")).items()
]
DEMO = FIXTURES / "demo"
DEMO_CASES = [
    (DEMO, name, case)
    for name, case in json.loads((DEMO / "expected.json").read_text("utf-8")).items()
]
ALL_CASES = RULE_CASES + DEMO_CASES
IDS = [f"{d.name}/{n}" for d, n, _ in ALL_CASES]

SEDATING = re.compile(
    r"muscle relaxant|cyclobenzaprine|methocarbamol|tizanidine|baclofen|carisoprodol|"
    r"metaxalone|gabapentin|pregabalin|gabapentinoid|zolpidem|zopiclone|eszopiclone|"
    r"zaleplon|z-drug|hypnotic|diphenhydramine|hydroxyzine|promethazine|doxylamine|"
    r"antihistamine|tricyclic|amitriptyline|nortriptyline|doxepin",
    re.IGNORECASE,
)


def _cards(client: CheckedClient, directory: Path, name: str, case: dict[str, Any]) -> Any:
    body = fixture_request(directory, name, case)
    response = client.post(f"/cds-services/{SERVICE[case['hook']]}", body)
    assert response.status_code == 200
    return response.get_json()["cards"], body


def _words(markdown: str) -> int:
    plain = re.sub(r"\]\([^)]*\)", "]", markdown)  # a link's address is not read
    return len(re.findall(r"[^\s*_\-]\S*", plain))


def _resources(node: Any) -> Iterator[dict[str, Any]]:
    """Every object in a request body, depth first (resources, bundles, their parts)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _resources(value)
    elif isinstance(node, list):
        for value in node:
            yield from _resources(value)


def _record_drug_names(body: dict[str, Any]) -> list[str]:
    """Medication names in the request: the patient's own drugs may be named as evidence."""
    names: list[str] = []
    for node in _resources(body):
        concept = node.get("medicationCodeableConcept")
        if isinstance(concept, dict):
            names.append(str(concept.get("text", "")))
            names.extend(str(c.get("display", "")) for c in concept.get("coding", []))
        if node.get("resourceType") == "Medication":
            code = node.get("code", {})
            names.append(str(code.get("text", "")))
            names.extend(str(c.get("display", "")) for c in code.get("coding", []))
    return [n.lower() for n in names if n]


def test_every_fixture_card_meets_the_budgets(client: CheckedClient) -> None:
    """Every card of every rule and demo fixture: summary under 140 characters, the decision
    first (one bold line), at most three evidence lines, the guideline source last, and the
    detail within the word budget."""
    counts = []
    for directory, name, case in ALL_CASES:
        cards, _ = _cards(client, directory, name, case)
        for card in cards:
            where = f"{directory.name}/{name}: {card['source']['topic']['code']}"
            assert len(card["summary"]) <= SUMMARY_MAX, where
            assert not card["summary"].endswith("\u2026"), where  # never clipped mid-word
            paragraphs = card["detail"].split("\n\n")
            assert paragraphs[0].startswith("**"), where  # what to do, first
            assert paragraphs[-1].startswith("*") and paragraphs[-1].endswith("*"), where
            bullets = [ln for ln in card["detail"].splitlines() if ln.startswith("- ")]
            assert 1 <= len(bullets) <= EVIDENCE_MAX, where
            words = _words(card["detail"])
            assert words <= DETAIL_WORDS_MAX, (where, words)
            counts.append(words)
    assert len(counts) >= 40
    assert sum(c <= DETAIL_WORDS_TYPICAL for c in counts) >= 0.75 * len(counts), sorted(counts)


@pytest.mark.parametrize("directory,name,case", ALL_CASES, ids=IDS)
def test_no_card_names_a_sedating_drug_as_advice(
    client: CheckedClient, directory: Path, name: str, case: dict[str, Any]
) -> None:
    """No suggestion names a sedating drug class, and a line of card text names one only when
    it is the patient's own drug from the record (every card here is about an opioid, so the
    patient has a current or ordered CNS depressant)."""
    cards, body = _cards(client, directory, name, case)
    own = _record_drug_names(body)
    for card in cards:
        for suggestion in card.get("suggestions", []):
            text = json.dumps(suggestion)
            assert not SEDATING.search(text), (name, suggestion["label"])
        for line in [card["summary"], *card["detail"].splitlines()]:
            for match in SEDATING.finditer(line):
                term = match.group(0).lower()
                assert any(term in drug for drug in own), (name, line)


SEROTONERGIC = re.compile(
    r"tramadol|sertraline|fluoxetine|paroxetine|citalopram|escitalopram|fluvoxamine|"
    r"venlafaxine|desvenlafaxine|duloxetine|milnacipran|levomilnacipran|amitriptyline|"
    r"nortriptyline|imipramine|desipramine|doxepin|clomipramine|phenelzine|tranylcypromine|"
    r"isocarboxazid|selegiline|zoloft|prozac|paxil|celexa|lexapro|effexor|cymbalta|ultram",
    re.IGNORECASE,
)


def _current_or_drafted_names(body: dict[str, Any]) -> list[str]:
    """Drug names of active, on-hold or draft orders and active statements in the request."""
    names: list[str] = []
    for node in _resources(body):
        kind = node.get("resourceType")
        if kind in ("MedicationRequest", "MedicationStatement") and node.get("status") in (
            "active",
            "on-hold",
            "draft",
        ):
            names.extend(_record_drug_names({"resource": node}))
    return names


@pytest.mark.parametrize("directory,name,case", ALL_CASES, ids=IDS)
def test_no_snri_is_prompted_beside_a_serotonergic_drug(
    client: CheckedClient, directory: Path, name: str, case: dict[str, Any]
) -> None:
    """No card prompts duloxetine (an SNRI) when tramadol, an SSRI, SNRI, TCA or MAOI is current
    or ordered (serotonin syndrome)."""
    cards, body = _cards(client, directory, name, case)
    if not any(SEROTONERGIC.search(n) for n in _current_or_drafted_names(body)):
        return
    own = _record_drug_names(body)
    for card in cards:
        for line in [card["summary"], *card["detail"].splitlines()]:
            if "duloxetine" in line.lower():
                assert any("duloxetine" in drug for drug in own), (name, line)


def _patient() -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "safe-1", "birthDate": "1970-05-01"}


def _condition(system: str, code: str, text: str, rid: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": rid,
        "subject": {"reference": "Patient/safe-1"},
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "code": {"coding": [{"system": system, "code": code}], "text": text},
        "onsetDateTime": "2025-01-10",
    }


SCT = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
LBP = _condition(SCT, "279039007", "Low back pain", "lbp")


def _order(text: str, rid: str, status: str = "active", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "status": status,
        "intent": "order",
        "subject": {"reference": "Patient/safe-1"},
        "authoredOn": "2026-11-23" if status == "draft" else "2026-11-01",
        "medicationCodeableConcept": {"text": text},
        "dispenseRequest": {"expectedSupplyDuration": {"value": 30, "code": "d"}},
        **extra,
    }


def _dose(per_dose: float, times_a_day: int) -> dict[str, Any]:
    return {
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": times_a_day, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": per_dose, "unit": "tablet"}}],
            }
        ]
    }


OXY_DRAFT = _order("Oxycodone Hydrochloride 5 MG Oral Tablet", "d1", "draft", **_dose(1, 4))


def _sign(client: CheckedClient, *resources: dict[str, Any]) -> list[dict[str, Any]]:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:r-{i}", "resource": r}
            for i, r in enumerate((_patient(), *resources))
        ],
    }
    response = client.post(SERVICE_SIGN, request_from_bundle(bundle, "order-sign"))
    assert response.status_code == 200
    cards: list[dict[str, Any]] = response.get_json()["cards"]
    return cards


SERVICE_SIGN = f"/cds-services/{SERVICE['order-sign']}"


def _labels(cards: list[dict[str, Any]]) -> list[str]:
    return [s["label"] for c in cards for s in c.get("suggestions", [])]


@pytest.mark.parametrize(
    "barrier",
    [
        _condition(SCT, "431857002", "Chronic kidney disease stage 4", "ckd"),
        _condition(ICD, "N18.5", "Chronic kidney disease, stage 5", "ckd5"),
        _condition(ICD, "K92.2", "Gastrointestinal hemorrhage, unspecified", "gib"),
        _condition(SCT, "74474003", "Gastrointestinal hemorrhage", "gib2"),
        _order("Apixaban 5 MG Oral Tablet", "apx"),
        _order("Warfarin Sodium 5 MG Oral Tablet", "warf"),
        _order("Ibuprofen 600 MG Oral Tablet", "ibu"),
        _condition(ICD, "I50.9", "Heart failure, unspecified", "hf"),
        _condition(SCT, "84114007", "Heart failure", "hf2"),
        _condition(ICD, "I21.9", "Acute myocardial infarction, unspecified", "mi"),
        _condition(ICD, "I25.10", "Atherosclerotic heart disease of native coronary artery", "ihd"),
        _condition(ICD, "Z79.01", "Long term (current) use of anticoagulants", "z7901"),
        _condition(
            ICD, "Z79.02", "Long term (current) use of antithrombotics/antiplatelets", "z7902"
        ),
        _condition(ICD, "O09.90", "Supervision of high risk pregnancy, unspecified", "preg"),
        _condition(ICD, "Z33.1", "Pregnant state, incidental", "preg2"),
        _condition(SCT, "293586001", "Allergy to aspirin", "asa-allergy"),
        _condition(
            SCT, "293619005", "Allergy to non-steroidal anti-inflammatory agent", "nsaid-al"
        ),
        _condition(SCT, "407674008", "Aspirin-induced asthma", "aerd"),
        _order("Clopidogrel 75 MG Oral Tablet", "clop"),
        _order("Ticagrelor 90 MG Oral Tablet", "tica"),
    ],
    ids=[
        "ckd4-snomed",
        "ckd5-icd",
        "gi-bleed-icd",
        "gi-bleed-snomed",
        "apixaban",
        "warfarin",
        "nsaid",
        "heart-failure-icd",
        "heart-failure-snomed",
        "acute-mi-icd",
        "ischaemic-heart-disease-icd",
        "long-term-anticoagulant",
        "long-term-antiplatelet",
        "pregnancy-high-risk",
        "pregnancy-incidental",
        "aspirin-allergy",
        "nsaid-allergy",
        "aerd",
        "clopidogrel",
        "ticagrelor",
    ],
)
def test_no_nsaid_where_current_or_contraindicated(
    client: CheckedClient, barrier: dict[str, Any]
) -> None:
    """With CKD stage 4-5, a GI bleed, heart failure, ischaemic heart disease, pregnancy, an
    NSAID/aspirin allergy or AERD, an anticoagulant, an antiplatelet or an NSAID on record, no
    card suggests or advises naproxen: the alternative offered first is acetaminophen."""
    cards = _sign(client, LBP, OXY_DRAFT, barrier)
    assert cards, "the start card still fires"
    labels = _labels(cards)
    assert not any("naproxen" in label.lower() for label in labels)
    assert labels[0].startswith("Replace oxycodone with acetaminophen")
    advice = " ".join(c["detail"].split("\n\n")[0] for c in cards)
    assert "naproxen" not in advice


def test_naproxen_is_the_alternative_without_a_barrier(client: CheckedClient) -> None:
    """With no NSAID, anticoagulant, CKD 4-5 or GI bleed on record, naproxen is offered first
    (and a milder kidney stage does not block it)."""
    ckd3 = _condition(ICD, "N18.30", "Chronic kidney disease, stage 3", "ckd3")
    labels = _labels(_sign(client, LBP, OXY_DRAFT, ckd3))
    assert labels[0].startswith("Replace oxycodone with naproxen")


def test_with_an_nsaid_barrier_and_acetaminophen_current_the_draft_is_removed(
    client: CheckedClient,
) -> None:
    """When neither another NSAID nor more acetaminophen may be added, removing the opioid is
    offered (never a second NSAID or a second acetaminophen)."""
    cards = _sign(
        client,
        LBP,
        OXY_DRAFT,
        _order("Apixaban 5 MG Oral Tablet", "apx"),
        _order("Acetaminophen 500 MG Oral Tablet", "apap"),
    )
    labels = _labels(cards)
    assert "Remove the draft oxycodone order" in labels
    assert not any(("naproxen" in x or "acetaminophen" in x) for x in labels)


@pytest.mark.parametrize(
    "barrier",
    [
        _order("Oxycodone 5 MG / Acetaminophen 325 MG Oral Tablet", "percocet", **_dose(2, 4)),
        _condition(ICD, "K70.30", "Alcoholic cirrhosis of liver without ascites", "cirrhosis"),
        _condition(SCT, "19943007", "Cirrhosis of liver", "cirrhosis2"),
    ],
    ids=["acetaminophen-in-opioid-combination", "cirrhosis-icd", "cirrhosis-snomed"],
)
def test_no_acetaminophen_when_taken_in_a_combination_or_with_liver_disease(
    client: CheckedClient, barrier: dict[str, Any]
) -> None:
    """Acetaminophen already taken in an opioid combination, or liver disease, bars adding
    acetaminophen; with an NSAID barrier too, the action line names only PT/CBT."""
    apixaban = _order("Apixaban 5 MG Oral Tablet", "apx")
    cards = _sign(client, LBP, OXY_DRAFT, apixaban, barrier)
    labels = _labels(cards)
    assert not any(("naproxen" in x or "acetaminophen" in x) for x in labels), labels
    first_line = [
        c for c in cards if c["source"]["topic"]["code"] == "first-line-therapy-not-tried"
    ]
    advice = " ".join(c["detail"].split("\n\n")[0] for c in cards)
    assert not re.search(r"\b(start|add|prefer) (acetaminophen|naproxen)", advice.lower()), advice
    for card in first_line:
        assert "physical therapy or CBT" in card["detail"].split("\n\n")[0]


@pytest.mark.parametrize(
    "per_dose,times,expected",
    [
        (1, 4, ["30 MME/day (total 30 MME/day)"]),
        (2, 4, ["60 MME/day (total 60 MME/day: ≥ 50: reassess benefit)"]),
        (3, 4, ["90 MME/day (total 90 MME/day: ≥ 90: avoid or justify)"]),
    ],
)
def test_the_order_card_shows_mme_and_thresholds(
    client: CheckedClient, per_dose: int, times: int, expected: list[str]
) -> None:
    """The first card for an opioid order shows the order's MME/day, the total with it and the
    CDC 2022 threshold reached (50: reassess, naloxone; 90: avoid or justify)."""
    draft = _order(
        "Oxycodone Hydrochloride 5 MG Oral Tablet", "d1", "draft", **_dose(per_dose, times)
    )
    cards = _sign(client, LBP, draft)
    for text in expected:
        assert text in cards[0]["detail"], cards[0]["detail"]


def test_the_total_includes_a_current_opioid_and_an_unknown_dose_is_named(
    client: CheckedClient,
) -> None:
    """A current opioid counts in the total; a draft with no dosage is named unknown, never
    counted as 0."""
    current = _order("Morphine Sulfate 15 MG Oral Tablet", "mor", **_dose(1, 4))
    cards = _sign(client, LBP, OXY_DRAFT, current)
    assert "30 MME/day (total 90 MME/day: ≥ 90: avoid or justify)" in cards[0]["detail"]
    undosed = _order("Oxycodone Hydrochloride 5 MG Oral Tablet", "d1", "draft")
    cards = _sign(client, LBP, undosed)
    assert "MME unknown: the order has no dosage instructions (total unknown)" in cards[0]["detail"]
    partial = _sign(client, LBP, undosed, current)
    assert "(total at least 60 MME/day: ≥ 50" in partial[0]["detail"]


def test_a_refill_of_a_current_opioid_counts_once(client: CheckedClient) -> None:
    """A draft with the ingredients and form of a current opioid order replaces that regimen
    in the total instead of doubling it."""
    current = _order("Oxycodone Hydrochloride 5 MG Oral Tablet", "oxy", **_dose(2, 4))
    cards = _sign(client, LBP, OXY_DRAFT, current)
    assert "30 MME/day (total 30 MME/day)" in cards[0]["detail"], cards[0]["detail"]


def test_the_threshold_line_says_naloxone_is_on_record(client: CheckedClient) -> None:
    """At 50 MME/day or more the total names naloxone on record, and never says "offer
    naloxone" on a card that does not offer it one-click (the naloxone rule ships silent)."""
    draft = _order("Oxycodone Hydrochloride 5 MG Oral Tablet", "d1", "draft", **_dose(2, 4))
    cards = _sign(client, LBP, draft)
    assert "60 MME/day: ≥ 50: reassess benefit)" in cards[0]["detail"]
    for card in cards:
        offers = any("naloxone" in s["label"].lower() for s in card.get("suggestions", []))
        assert offers or "offer naloxone" not in card["detail"].lower(), card["detail"]
    naloxone = _order("Naloxone Hydrochloride 4 MG/ACTUAT Nasal Spray", "nal")
    cards = _sign(client, LBP, draft, naloxone)
    assert "60 MME/day: ≥ 50: reassess benefit; naloxone on record" in cards[0]["detail"]


def test_the_co_prescription_card_names_naloxone_once(client: CheckedClient) -> None:
    """With a benzodiazepine and naloxone on record at 60 MME/day, the co-prescription card
    states naloxone in its own line only, not again on the order's threshold."""
    draft = _order("Oxycodone Hydrochloride 5 MG Oral Tablet", "d1", "draft", **_dose(2, 4))
    alprazolam = _order("Alprazolam 0.5 MG Oral Tablet", "alp")
    naloxone = _order("Naloxone Hydrochloride 4 MG/ACTUAT Nasal Spray", "nal")
    cards = _sign(client, LBP, draft, alprazolam, naloxone)
    card = next(c for c in cards if c["source"]["topic"]["code"] == "opioid-benzodiazepine")
    assert card["detail"].lower().count("naloxone") == 1, card["detail"]
    assert "60 MME/day: ≥ 50: reassess benefit)" in card["detail"]


NO_NALOXONE = re.compile(r"no naloxone|naloxone: none", re.IGNORECASE)


def test_no_naloxone_is_said_on_one_card_only(client: CheckedClient) -> None:
    """Across every rule fixture, "no naloxone" is said (and naloxone offered) by one shown
    card at most: the chart summary leaves it to the co-prescription card."""
    from test_rule_fixtures import CASES

    for directory, name, case in CASES:
        cards, _ = _cards(client, directory, name, case)
        saying = [c for c in cards if NO_NALOXONE.search(c["summary"] + c.get("detail", ""))]
        offering = [
            c
            for c in cards
            if any("naloxone" in s["label"].lower() for s in c.get("suggestions", []))
        ]
        assert len(saying) <= 1 and len(offering) <= 1, (name, [c["summary"] for c in cards])
        assert {id(c) for c in offering} <= {id(c) for c in saying}, name


def test_the_chart_summary_keeps_its_naloxone_clause_when_it_is_alone(
    client: CheckedClient,
) -> None:
    """With no co-prescription card, the chart summary itself says no naloxone is on record
    and offers it; its count reads "1 current opioid order" (no "(s)")."""
    directory = FIXTURES / "opioid-safety-summary"
    cases = json.loads((directory / "cases.json").read_text("utf-8"))
    name = "fires-tramadol-current-no-duloxetine-prompt.json"
    cards, _ = _cards(client, directory, name, cases[name])
    (card,) = cards
    assert card["summary"].startswith("Opioid safety: 1 current opioid order, ")
    assert "no naloxone" in card["summary"] and "No naloxone on record: offer it." in card["detail"]
    assert [s["label"] for s in card["suggestions"]] == ["Co-prescribe naloxone 4 mg nasal spray"]


def test_an_extended_release_start_says_so(client: CheckedClient) -> None:
    """An ER/LA start names it in the order line and in the advice."""
    cards, _ = _cards(
        client,
        FIXTURES / "opioid-start-chronic-lbp",
        "fires-oxycontin-extended-release-start.json",
        json.loads((FIXTURES / "opioid-start-chronic-lbp" / "cases.json").read_text("utf-8"))[
            "fires-oxycontin-extended-release-start.json"
        ],
    )
    detail = cards[0]["detail"]
    assert "(ER/LA), 30 MME/day" in detail
    assert "not ER/LA" in detail.split("\n\n")[0]


def test_override_reasons_carry_a_class_and_the_hl7_code_where_one_matches() -> None:
    """Every override reason is {display, class, hl7?}: the class is one of the three the
    analytics group by, and hl7 (where present) is a code of the HL7 CDS Hooks 3.0 ballot's
    non-adherence reason code system; cards still offer display text from it."""
    from cds_service.cards import CardTemplates, cards_dir

    catalogue = json.loads((cards_dir() / "override-reasons.json").read_text("utf-8"))
    assert catalogue["hl7_system"] == (
        "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
    )
    assert catalogue["hl7_version"] == "3.0.0-ballot"
    classes = {code: r["class"] for code, r in catalogue["reasons"].items()}
    assert classes == {
        "palliative": "not-applicable",
        "established-elsewhere": "not-applicable",
        "first-line-tried-elsewhere": "not-applicable",
        "data-incorrect": "not-applicable",
        "nsaid-contraindicated": "not-applicable",
        "refractory": "clinical-judgement",
        "acute-flare-short-course": "clinical-judgement",
        "benefit-outweighs-risk": "patient-benefit",
        "taper-in-progress": "patient-benefit",
    }
    hl7 = {code: r.get("hl7") for code, r in catalogue["reasons"].items()}
    assert hl7["first-line-tried-elsewhere"] == "action-completed"
    assert hl7["refractory"] == "action-unsuccessful"
    assert hl7["data-incorrect"] is None  # no matching code: left out
    from cds_service.findings import Finding

    templates = CardTemplates()
    card = templates.render(
        Finding(
            "opioid-safety-summary",
            "summary",
            {
                "count": "1",
                "total": "30 MME/day",
                "action": "Reassess.",
                "naloxone": "None.",
            },
            (),
        )
    )
    assert {r["display"] for r in card["overrideReasons"]} >= {"Palliative or end-of-life care"}


def test_a_reason_without_a_known_class_stops_the_start(tmp_path: Path) -> None:
    """A catalogue entry with no display or an unknown class is refused at start-up."""
    import shutil

    from cds_service.cards import CardTemplates, TemplateError, cards_dir

    for path in cards_dir().glob("*.json"):
        shutil.copy(path, tmp_path / path.name)
    catalogue = json.loads((tmp_path / "override-reasons.json").read_text("utf-8"))
    catalogue["reasons"]["palliative"]["class"] = "other"
    (tmp_path / "override-reasons.json").write_text(json.dumps(catalogue))
    with pytest.raises(TemplateError, match="palliative"):
        CardTemplates(tmp_path)
