"""FactBuilder: composes the domain modules into one ClinicalFacts per request.

Adding a FHIR resource type to the facts: declare its prefetch key (hooks/services.py, with
the completeness domain it feeds), read it in the domain module it belongs to (record.of_type),
and add the derived field to ClinicalFacts (model.py). Nothing here names a prefetch key.
"""

from __future__ import annotations

import datetime as dt

from cds_service.facts.allergies import allergies_on_record
from cds_service.facts.conditions import conditions_on_record
from cds_service.facts.context import deceased, inpatient_context
from cds_service.facts.end_of_life import end_of_life_evidence
from cds_service.facts.indications import with_indications
from cds_service.facts.medications import draft_uses, medication_history
from cds_service.facts.model import ClinicalFacts, Completeness, MedicationUse
from cds_service.facts.therapies import therapies_on_record
from cds_service.fhir.read import parse_date
from cds_service.fhir.record import Domain, PatientRecord
from cds_service.knowledge import Knowledge
from cds_service.knowledge.dosing import MmeResult, mme_for
from cds_service.settings import Settings


class FactBuilder:
    """Derives ClinicalFacts from a PatientRecord with the app's knowledge and settings."""

    def __init__(self, knowledge: Knowledge, settings: Settings) -> None:
        self.knowledge = knowledge
        self.settings = settings
        self.activity = settings.medication_activity

    def derive(self, record: PatientRecord, today: dt.date, ordering: bool) -> ClinicalFacts:
        """The facts on `today`; `ordering`: orders are being written (order-select/sign)."""
        knowledge = self.knowledge
        classify = knowledge.classifier.classify_order
        categories_of = knowledge.conditions.categories
        birth = parse_date(record.patient.get("birthDate")) if record.patient else None
        conditions = conditions_on_record(record, today, birth, categories_of)
        return ClinicalFacts(
            today=today,
            patient_id=record.patient_id,
            ordering=ordering,
            history=with_indications(
                tuple(medication_history(record, today, classify, self.activity)),
                record,
                knowledge.conditions.is_pain,
            ),
            drafts=with_indications(
                tuple(draft_uses(record, today, classify, self.activity)),
                record,
                knowledge.conditions.is_pain,
            ),
            conditions=tuple(conditions),
            therapies=tuple(
                therapies_on_record(
                    record, knowledge.therapies.step, knowledge.therapies.step_labels
                )
            ),
            end_of_life=tuple(
                end_of_life_evidence(
                    record,
                    conditions,
                    today,
                    categories_of,
                    self.settings.end_of_life_recent_days,
                )
            ),
            allergies=tuple(allergies_on_record(record, knowledge.allergies.classes)),
            birth_date=birth,
            deceased=deceased(record, today),
            inpatient_context=inpatient_context(record),
            completeness=Completeness(
                medication_history=(
                    "partial" if Domain.MEDICATION_ORDERS in record.partial else "complete"
                ),
                dispenses_and_statements=not record.missing_any(Domain.MEDICATIONS_OUTSIDE),
                therapies=not record.missing_all(Domain.THERAPIES),
                allergies=not (
                    record.missing_any(Domain.ALLERGIES) or Domain.ALLERGIES in record.partial
                ),
                unusable_reason=record.unusable_reason,
            ),
            mme_calculator=self._mme,
            activity=self.activity,
        )

    def _mme(self, use: MedicationUse) -> MmeResult:
        return mme_for(
            use.resource, use.classification, self.knowledge.mme, self.settings.mme_table
        )
