"""Drug labels and the shared card lines (cards/lines.json) every rule names a drug or a date
with.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from cds_service.facts import MedicationUse, format_day
from cds_service.findings import Line, Text

# Placeholders of the shared lines (cards/lines.json), checked against it at start-up.
SHARED_LINES: Mapping[str, frozenset[str]] = {
    "no-date": frozenset(),
    "being-ordered": frozenset({"drug"}),
    "being-ordered-er": frozenset({"drug"}),
    "being-ordered-dose": frozenset({"drug", "mme", "total"}),
    "being-ordered-dose-flag": frozenset({"drug", "mme", "total", "threshold"}),
    "drug-er": frozenset({"drug"}),
    "drug-coded-as": frozenset({"drug", "coded"}),
    "dose-mme": frozenset({"mme"}),
    "dose-mme-unknown": frozenset({"reason"}),
    "order-total-known": frozenset({"mme"}),
    "order-total-partial": frozenset({"mme"}),
    "order-total-none": frozenset(),
    "mme-threshold-50": frozenset(),
    "mme-threshold-50-naloxone-on-record": frozenset(),
    "mme-threshold-90": frozenset(),
    "current-medication": frozenset({"drug", "basis"}),
    "basis-supply": frozenset({"start", "supply_days", "until"}),
    "basis-supply-refills": frozenset({"start", "supply_days", "until", "fills"}),
    "basis-validity": frozenset({"until"}),
    "basis-undated": frozenset({"start", "until"}),
    "basis-dispensed": frozenset({"start", "supply_days", "until"}),
    "basis-dispensed-assumed": frozenset({"start", "until"}),
    "basis-statement-period": frozenset({"until"}),
    "basis-statement-confirmed": frozenset({"confirmed"}),
    "basis-draft": frozenset(),
    "lbp-onset": frozenset({"condition", "date"}),
    "lbp-recorded": frozenset({"condition", "date"}),
    "lbp-order-reason": frozenset({"condition"}),
    "lbp-undated": frozenset({"condition"}),
    "first-line-drug-found": frozenset({"drug", "date"}),
    "first-line-drug-before-window": frozenset({"drug", "date", "since", "until"}),
    "first-line-drug-now": frozenset({"drug"}),
    "first-line-therapy-done": frozenset({"therapy", "date"}),
    "first-line-therapy-ordered": frozenset({"therapy", "date"}),
    "first-line-therapy-now": frozenset({"therapy"}),
    "first-line-drug-missing": frozenset({"since"}),
    "first-line-both-missing": frozenset({"since"}),
    "first-line-non-drug-missing": frozenset({"since"}),
    "first-line-non-drug-unknown": frozenset(),
    "second-line-not-tried": frozenset(),
    "record-orders-only": frozenset(),
    "allergy-on-record": frozenset({"allergy"}),
    "allergies-not-checked": frozenset(),
}


def when(day: dt.date | None) -> Text:
    return format_day(day) if day else Line("no-date")


def drug_label(use: MedicationUse) -> Text:
    """A drug as the EHR wrote it; when that text names other ingredients or strengths than
    the RxNorm code (which decides the class and the MME), the coded product as well."""
    label = use.classification.label or use.name
    coded = use.classification.coded_label
    return Line("drug-coded-as", {"drug": label, "coded": coded}) if coded else label


def short_name(use: MedicationUse) -> str:
    """A drug's short name for card text: its ingredients without acetaminophen."""
    return (
        " / ".join(n for n in use.classification.names if n != "acetaminophen")
        or use.classification.label
    )
