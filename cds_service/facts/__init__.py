"""Clinical facts derived once per request from the patient record; the only thing rules see.

A rule never reads prefetch keys, the hook or HTTP: what it needs is here, computed once,
one module per clinical domain:
- medications.py: what each order, dispense and statement means on the date (status table,
  supply windows, current use and its basis);
- conditions.py: active conditions in the rules' categories, onset and chronicity, the
  order's own reason;
- therapies.py: first-line non-drug steps on record;
- allergies.py: drug allergies and intolerances that bar a non-opioid alternative;
- end_of_life.py: hospice, palliative and terminal care wherever the chart records it;
- context.py: deceased, inpatient encounter;
- model.py: ClinicalFacts and its parts; builder.py composes them.
"""

from __future__ import annotations

from cds_service.facts.builder import FactBuilder
from cds_service.facts.conditions import active_condition, category_codes
from cds_service.facts.dates import format_day
from cds_service.facts.medications import (
    MEDICATION_STATUS,
    oud_treatment_names,
    request_window,
    treats_opioid_use_disorder,
)
from cds_service.facts.model import (
    AllergyFact,
    ClinicalFacts,
    Completeness,
    ConditionFact,
    EndOfLifeEvidence,
    MedicationUse,
    TherapyOnRecord,
)

__all__ = [
    "MEDICATION_STATUS",
    "AllergyFact",
    "ClinicalFacts",
    "Completeness",
    "ConditionFact",
    "EndOfLifeEvidence",
    "FactBuilder",
    "MedicationUse",
    "TherapyOnRecord",
    "active_condition",
    "category_codes",
    "format_day",
    "oud_treatment_names",
    "request_window",
    "treats_opioid_use_disorder",
]
