"""`cds-service evaluate | classify | mme | terminology`: the knowledge and the engine, offline."""

from __future__ import annotations

import argparse
import json
import sys

from cds_service.cli.common import _config, _Fail, _read_json


def _evaluate(args: argparse.Namespace) -> int:
    from cds_service import create_app
    from cds_service.hooks.services import SERVICES

    body = _read_json(args.request)
    config = _config()
    if args.today:
        config = config.with_overrides({"today": args.today})
    from cds_service.hooks.bundle_request import request_from_bundle, resolve_relative_dates

    # demo data: "@-30d" dates are relative to the evaluation date (--today, else CDS_TODAY,
    # else the clock)
    body = resolve_relative_dates(body, config.clinical_today())
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        body = request_from_bundle(body, args.hook)
    service_id = args.service
    if not service_id:
        hook = body.get("hook") if isinstance(body, dict) else None
        service_id = next((s.id for s in SERVICES if s.hook == hook), "")
        if not service_id:
            print(
                "cds-service: the request names no hook this service answers; pass --service",
                file=sys.stderr,
            )
            return 2
    app = create_app(
        config.with_overrides(
            {"log_level": "WARNING", "database_url": "sqlite://", "card_log": False}
        )
    )  # offline: nothing kept
    result = app.extensions["cds_engine"].evaluate(service_id, body)
    print(json.dumps(result.body, indent=2, ensure_ascii=False))
    return 0 if result.status == 200 else 1


def _classify(args: argparse.Namespace) -> int:
    from cds_service.knowledge import Knowledge
    from cds_service.knowledge.classifier import ANALGESIC_ROLES

    classifier = Knowledge.load(_config().valuesets_dir or None).classifier
    term = args.term.strip()
    system, sep, code = term.partition("|")
    if sep and (system.startswith(("http://", "https://", "urn:")) or system == ""):
        result = classifier.classify_code(system, code.strip())
    else:
        result = classifier.classify_text(term)
    data = result.as_json()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0 if result.ingredients else 1
    if not result.ingredients:
        print(f"unclassified: {result.unclassified_reason}")
        return 1
    print(f"label: {result.label}")
    for ing in result.ingredients:
        strength = (
            f"{ing.strength_value:g} {ing.strength_unit}"
            if ing.strength_value is not None
            else "strength not stated"
        )
        classes = ", ".join(sorted(ing.classes)) or "no monitored class"
        print(f"  {ing.name} (RxCUI {ing.rxcui or 'n/a'}): {classes}; {strength}")
    print(f"classes: {', '.join(sorted(result.classes)) or 'none'}")
    print(f"dose form: {result.dose_form or 'not stated'}; route: {result.route or 'not stated'}")
    print(f"extended-release / long-acting: {'yes' if result.extended_release else 'no'}")
    print(f"decided from: {result.how}")
    if result.analgesic_role:
        print(f"first-line drug trial: {ANALGESIC_ROLES[result.analgesic_role]}")
    return 0


def _mme(args: argparse.Namespace) -> int:
    from cds_service.fhir.record import PatientRecord
    from cds_service.knowledge import Knowledge
    from cds_service.knowledge.dosing import mme_for

    order = _read_json(args.order)
    if not isinstance(order, dict) or order.get("resourceType") not in {
        "MedicationRequest",
        "MedicationStatement",
    }:
        print("cds-service: the file must hold one MedicationRequest", file=sys.stderr)
        return 2
    table = args.table or _config().mme_table
    medication = PatientRecord(patient_id="").medication_for(order)
    knowledge = Knowledge.load(_config().valuesets_dir or None)
    classification = knowledge.classifier.classify_order(order, medication)
    result = mme_for(order, classification, knowledge.mme, table)
    if args.json:
        print(json.dumps({"table": table, **result.as_json()}, indent=2))
        return 0
    label = classification.label or "(unnamed medication)"
    print(f"{label}  [{table}]")
    for dose in result.ingredients:
        basis = (
            f"{dose.dose_mcg_per_hour:g} mcg/h x {dose.factor:g}"
            if dose.factor_basis == "mcg/h" and dose.dose_mcg_per_hour is not None
            else f"{dose.daily_dose_mg:g} mg/day x {dose.factor:g}"
        )
        print(f"  {dose.name}: {basis} = {dose.mme_per_day:g} MME/day")
    if result.mme_per_day is not None:
        print(f"MME/day: {result.mme_per_day:g}")
    elif result.excluded:
        print(f"not counted: {result.reason}")
    else:
        print(result.reason)
    if result.reason and result.mme_per_day is not None:
        print(f"note: {result.reason}")
    return 0


def _terminology(args: argparse.Namespace) -> int:
    from cds_service.knowledge import admin
    from cds_service.knowledge.valuesets import ValueSetError, load_valuesets

    folder = _config().valuesets_dir
    try:
        if args.action == "list":
            lines = admin.list_lines(load_valuesets(folder or None))
        elif args.action == "lookup":
            lines = admin.lookup_lines(args.target or "", folder or None)
        elif args.from_server:
            from cds_service.knowledge.server_import import import_from_server

            if not args.valueset:
                raise ValueSetError("--from-server needs --valueset CANONICAL")
            lines = import_from_server(args.from_server, args.valueset, folder)
        else:
            lines = admin.import_dir(args.target or "", folder)
    except ValueSetError as exc:
        what = "refused, nothing replaced" if args.action == "import" else "failed"
        raise _Fail(f"terminology {args.action} {what}: {exc}") from None
    print("\n".join(lines))
    return 0
