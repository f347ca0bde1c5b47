"""The patient and encounter context: deceased, and whether the order is for an inpatient stay."""

from __future__ import annotations

import datetime as dt

from cds_service.fhir.read import parse_date
from cds_service.fhir.record import PatientRecord

_INPATIENT_CLASSES = frozenset({"IMP", "ACUTE", "NONAC", "inpatient"})


def deceased(record: PatientRecord, today: dt.date) -> bool:
    patient = record.patient or {}
    if patient.get("deceasedBoolean") is True:
        return True
    died = parse_date(patient.get("deceasedDateTime"))
    return died is not None and died <= today


def inpatient_context(record: PatientRecord) -> bool:
    if not record.encounter_id:
        return False
    for encounter in record.of_type("Encounter"):
        if encounter.get("id") == record.encounter_id:
            klass = encounter.get("class")
            code = klass.get("code") if isinstance(klass, dict) else None
            return code in _INPATIENT_CLASSES
    return False
