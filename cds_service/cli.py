"""`cds-service serve | evaluate | classify | mme | terminology | db | report | demo-traffic |
backtest`:
run the service, answer one hook request file offline, show how a medication is classified and
what MME an order comes to, manage the value sets in use (`terminology list | lookup |
import`), manage the database (`db upgrade`, `db current`, `db purge`), print the governance
report, or play demo traffic against a running service.

`evaluate` takes a CDS Hooks request body, or a patient Bundle (its draft MedicationRequests
become the draft orders of the simulated --hook).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cds_service.config import Config, ConfigError, from_env
from cds_service.net import is_loopback_host


class _Fail(Exception):
    """A command-line problem: its message is printed and the command exits with 2."""


def _read_json(path: str) -> Any:
    from cds_service.errors import CdsError
    from cds_service.hooks.request import read_json_bytes

    try:
        return read_json_bytes(Path(path).read_bytes())
    except OSError as exc:
        raise _Fail(f"cannot read {path}: {exc}") from None
    except CdsError as exc:
        raise _Fail(f"cannot read {path}: {exc.message}") from None


def _config() -> Config:
    try:
        return from_env()
    except ConfigError as exc:
        raise _Fail(str(exc)) from None


def _fewer_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core), and a
    large request parsed in one keeps that memory resident after it is freed; two arenas
    keep a worker's resident memory near what it uses (MALLOC_ARENA_MAX, set at run time
    before any request thread exists). Not glibc: nothing to do."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        return


def _serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    from cds_service import create_app

    config = _config().with_overrides({"worker_threads": args.threads})
    _fewer_malloc_arenas()
    if config.fhir_max_fallback_calls <= 0:
        # Half the request threads may wait on FHIR servers; the rest stay free for calls
        # whose data was prefetched.
        config = config.with_overrides({"fhir_max_fallback_calls": max(1, args.threads // 2)})
    host = args.host.strip("[]")
    if config.auth == "required":
        print("cds-service: CDS client authentication is required (JWT).", file=sys.stderr)
    elif not is_loopback_host(host):
        if not args.insecure:
            print(
                f"cds-service: refusing to listen on {args.host} without authentication of "
                "CDS clients. Bind 127.0.0.1, or pass --insecure if a gateway in front of this "
                "service authenticates the EHR.",
                file=sys.stderr,
            )
            return 2
        print(
            f"cds-service: WARNING: listening on {args.host} with no authentication of CDS "
            "clients (--insecure).",
            file=sys.stderr,
        )
    else:
        print(
            "cds-service: WARNING: CDS client authentication is off (CDS_AUTH=off; loopback only).",
            file=sys.stderr,
        )

    # metrics in multiprocess mode: set before prometheus_client is imported
    metrics_dir, own_metrics_dir = _metrics_dir(config)
    config = config.with_overrides({"prometheus_multiproc_dir": metrics_dir})
    from cds_service.http.auth import AuthConfigError
    from cds_service.http.hygiene import remember_request
    from cds_service.http.server import FrontLimits, front_worker
    from cds_service.store import StoreSchemaError

    try:
        app = create_app(config)
    except (AuthConfigError, ConfigError, StoreSchemaError) as exc:
        print(f"cds-service: {exc}", file=sys.stderr)
        return 2
    bind = [
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for port in (args.port, config.ops_port)
        if port
    ]
    writer = app.extensions.get("cds_card_log")

    def worker_exit(_server: Any, _worker: Any) -> None:
        if writer is not None:
            writer.close(timeout=5.0)  # write what is queued before the worker goes

    def child_exit(_server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": bind,
                "worker_exit": worker_exit,
                "child_exit": child_exit,
                "workers": args.workers,
                # gthread that reads each request whole on its event loop before a thread
                # takes it (slow clients), within a byte budget, answering gunicorn's own
                # errors with an OperationOutcome
                "worker_class": front_worker(FrontLimits.from_config(config)),
                "threads": args.threads,
                "preload_app": True,
                "timeout": 30,
                "graceful_timeout": 10,
                "keepalive": 5,
                "accesslog": None,
                "loglevel": "warning",
                "limit_request_line": 8190,
                "pre_request": remember_request,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    print(f"cds-service: discovery at http://{bind[0]}/cds-services", file=sys.stderr)
    try:
        Server().run()
    finally:
        if own_metrics_dir:
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _metrics_dir(config: Config) -> tuple[str, bool]:
    """PROMETHEUS_MULTIPROC_DIR for this server (a fresh private directory unless configured;
    a configured one is emptied, as prometheus_client requires between runs)."""
    import os
    import tempfile

    if config.prometheus_multiproc_dir:
        directory = Path(config.prometheus_multiproc_dir)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        path, own = str(directory), False
    else:
        path, own = tempfile.mkdtemp(prefix="cds-metrics-"), True
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path, own


def _db(args: argparse.Namespace) -> int:
    from cds_service.store import database_url, open_store
    from cds_service.store.engine import file_lock_upgrade as lock_upgrade
    from cds_service.store.engine import make_engine
    from cds_service.store.errors import StoreSchemaError, StoreUnavailable
    from cds_service.store.migrate import revisions, upgrade

    config = _config()
    try:
        url = database_url(config)
    except ConfigError as exc:
        raise _Fail(str(exc)) from None
    shown = url.render_as_string(hide_password=True)
    if args.action == "purge":
        try:
            store = open_store(config)
            print(json.dumps(store.purge()))
        except (ConfigError, StoreSchemaError, StoreUnavailable) as exc:
            raise _Fail(str(exc)) from None
        return 0
    if args.action == "rotate-key":
        return _rotate_key(args, config)
    if args.new_key_file:
        raise _Fail("--new-key-file is for `db rotate-key`")
    if url.get_backend_name() == "sqlite" and url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = make_engine(url, config.database_timeout, statement_timeout=False)
    try:
        if args.action == "upgrade" and url.get_backend_name() == "sqlite" and url.database:
            lock_upgrade(engine, Path(url.database).parent / ".migrate.lock")
        elif args.action == "upgrade":
            upgrade(engine)
        current, head = revisions(engine)
    except Exception as exc:  # noqa: BLE001 - reported by type; the URL may hold a password
        raise _Fail(f"{shown}: {type(exc).__name__}") from None
    finally:
        engine.dispose()
    print(f"{shown}: schema at {current or 'nothing'} (this release: {head})")
    return 0 if current == head else 1


def _rotate_key(args: argparse.Namespace, config: Any) -> int:
    """db rotate-key: optionally add a key to the key file's ring, then re-key the store's
    pseudonyms to the ring's current key (docs/hardening.md "Key rotation")."""
    from cds_service.store import open_store
    from cds_service.store.errors import StoreSchemaError, StoreUnavailable
    from cds_service.store.keys import key_file_path
    from cds_service.store.pseudonym import MIN_KEY_BYTES, append_key, read_key_ring

    try:
        if args.new_key_file:
            new = read_key_ring(Path(args.new_key_file))[-1]
            if len(new) < MIN_KEY_BYTES:
                raise _Fail(f"{args.new_key_file}: the key must be at least {MIN_KEY_BYTES} bytes")
            target = key_file_path(config)
            if target is None:
                raise _Fail(
                    "the key comes from CDS_PSEUDONYM_KEY: rotate by moving it to the end of "
                    "CDS_PSEUDONYM_PREVIOUS_KEYS and setting the new key as CDS_PSEUDONYM_KEY "
                    "on every replica, then run `cds-service db rotate-key`"
                )
            if new in read_key_ring(target):
                raise _Fail(f"{args.new_key_file}: that key is already in the ring")
            try:
                append_key(target, new)
            except OSError as exc:
                raise _Fail(
                    f"{target}: cannot add the key ({exc.strerror}); add it as the last line "
                    "of the key file (or Secret) yourself, restart every replica, then run "
                    "`cds-service db rotate-key`"
                ) from None
            print(f"added a key to {target}: restart every replica, then run this again")
        store = open_store(config)
        before = store.key_ids()
        done = store.rotate_keys()
        print(
            json.dumps(
                {
                    "key_id": store.pseudonymizer.key_id,
                    "rows_by_key_id_before": before,
                    "rekeyed": done,
                }
            )
        )
    except OSError as exc:
        raise _Fail(f"{exc.filename}: {exc.strerror}") from None
    except (ConfigError, StoreSchemaError, StoreUnavailable) as exc:
        raise _Fail(str(exc)) from None
    return 1 if done["unknown"] else 0


def _report(args: argparse.Namespace) -> int:
    import datetime as dt

    from cds_service.analytics import report as rep
    from cds_service.analytics.decisions import BacktestError, beside, load_backtest
    from cds_service.analytics.tables import committee_text, decision_tables, tables, to_csv
    from cds_service.knowledge.valuesets import ValueSetError, load_valuesets
    from cds_service.rules.registry import default_rules
    from cds_service.settings import SettingsError, load_settings
    from cds_service.store import StoreSchemaError, StoreUnavailable, database_url, open_store

    config = _config()
    rules = default_rules()
    try:
        period = rep.Period.parse(args.since, args.until, dt.datetime.now(dt.UTC).date())
        settings = load_settings(
            {r.id: r.settings_type for r in rules}, config.rule_settings_file, config.mme_table
        )
        summary = load_backtest(Path(args.backtest)) if args.backtest else None
        knowledge = load_valuesets(config.valuesets_dir or None).version
        shown = database_url(config).render_as_string(hide_password=True)
        store = open_store(config)
    except (
        rep.ReportError,
        SettingsError,
        ConfigError,
        StoreSchemaError,
        StoreUnavailable,
        BacktestError,
        ValueSetError,
    ) as exc:
        raise _Fail(str(exc)) from None
    context = rep.context_for(rules, settings.rules, knowledge_version=knowledge)
    try:
        report = rep.build_report(store, context, period, args.rule)
    except StoreUnavailable as exc:
        raise _Fail(str(exc)) from None
    finally:
        store.close()
    report["database"] = shown
    if summary is not None:
        report["backtest"] = beside(report, summary, Path(args.backtest).name)
    if args.format == "json":
        print(json.dumps(report, indent=2, ensure_ascii=False))
    elif args.format == "csv":
        sys.stdout.write(to_csv({**tables(report), **decision_tables(report)}[args.table]))
    else:
        print(
            f"Governance report {report['since']} to {report['until']}"
            + (f", rule {args.rule}" if args.rule else "")
        )
        print(f"Database: {shown}")
        print(f"Knowledge version: {knowledge}")
        print()
        print(committee_text(report))
    return 0


def _demo_traffic(args: argparse.Namespace) -> int:
    from cds_service.analytics.demo import DemoError, play

    try:
        summary = play(
            args.url,
            args.fixtures,
            rounds=args.rounds,
            seed=args.seed,
            today=args.today or _config().today,
        )
    except DemoError as exc:
        raise _Fail(str(exc)) from None
    print(json.dumps(summary, indent=2))
    return 0


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


def _backtest(args: argparse.Namespace) -> int:
    """`backtest SOURCE`, or `backtest generate --patients N --seed S --out DIR`."""
    import datetime as dt

    if args.source == "generate":
        from cds_service.population.generate import generate

        if not args.out:
            raise _Fail("backtest generate: --out DIR is required")
        try:
            counts = generate(
                Path(args.out),
                args.patients,
                args.seed,
                Path(args.templates) if args.templates else None,
                args.gzip,
            )
        except (ValueError, OSError) as exc:
            raise _Fail(f"backtest generate: {exc}") from None
        print(json.dumps({"out": args.out, "resources": counts}, indent=2))
        return 0
    from cds_service.population.replay import Options
    from cds_service.population.run import BacktestError, Run, default_out, execute, print_summary

    config = _config()
    try:
        since = dt.date.fromisoformat(args.since) if args.since else None
        until = dt.date.fromisoformat(args.until) if args.until else None
    except ValueError:
        raise _Fail("--since/--until: not a date (YYYY-MM-DD)") from None
    run = Run(
        source=Path(args.source),
        out=Path(args.out) if args.out else default_out(config),
        options=Options(since, until, args.fhir_server, args.patient_view),
        rules=tuple(r for part in args.rules or () for r in part.split(",") if r),
        engine=args.engine,
        workers=args.workers,
        memory_mb=args.memory_mb,
        spark_master=args.spark_master,
    )
    try:
        summary = execute(run, config)
    except (BacktestError, ConfigError) as exc:
        raise _Fail(str(exc)) from None
    print_summary(summary, run.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cds-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the CDS Hooks service (gunicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=2)
    serve.add_argument("--threads", type=int, default=8)
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address without client authentication",
    )
    serve.set_defaults(func=_serve)

    evaluate = sub.add_parser("evaluate", help="print the response to a hook request file")
    evaluate.add_argument("request", help="a CDS Hooks request body (JSON file)")
    evaluate.add_argument("--service", help="service id (default: the service for its hook)")
    evaluate.add_argument("--today", help="evaluation date, YYYY-MM-DD (default: today)")
    evaluate.add_argument(
        "--hook",
        default="order-sign",
        choices=["patient-view", "order-select", "order-sign"],
        help="hook to simulate when the file is a patient Bundle",
    )
    evaluate.set_defaults(func=_evaluate)

    classify = sub.add_parser(
        "classify", help="what the classifier concludes for a drug name or SYSTEM|CODE"
    )
    classify.add_argument("term", help='a name ("oxyCODONE 5 MG tablet") or SYSTEM|CODE')
    classify.add_argument("--json", action="store_true", help="machine-readable output")
    classify.set_defaults(func=_classify)

    mme = sub.add_parser("mme", help="daily dose and MME of one MedicationRequest (JSON file)")
    mme.add_argument("order", help="a MedicationRequest as a JSON file")
    mme.add_argument("--json", action="store_true", help="machine-readable output")
    mme.add_argument(
        "--table",
        choices=["cdc-2022", "cdc-2016"],
        help="conversion factors (default: CDS_MME_TABLE or cdc-2022)",
    )
    mme.set_defaults(func=_mme)

    terminology = sub.add_parser(
        "terminology",
        help="value sets in use: list | lookup SYSTEM|CODE | import DIR | "
        "import --from-server URL --valueset CANONICAL",
    )
    terminology.add_argument("action", choices=["list", "lookup", "import"])
    terminology.add_argument(
        "target",
        nargs="?",
        help="SYSTEM|CODE (lookup) or a folder of "
        "FHIR ValueSet expansions (import into CDS_VALUESETS_DIR)",
    )
    terminology.add_argument(
        "--from-server",
        metavar="URL",
        help="import: a FHIR R4 terminology server's base URL; ValueSet/$expand is fetched "
        "page by page (offset/count)",
    )
    terminology.add_argument(
        "--valueset", metavar="CANONICAL", help="import --from-server: the value set's url"
    )
    terminology.set_defaults(func=_terminology)
    db = sub.add_parser("db", help="database schema and retention (CDS_DATABASE_URL)")
    db.add_argument(
        "action",
        choices=["upgrade", "current", "purge", "rotate-key"],
        help="upgrade: migrate to this release's schema; current: show the schema "
        "version; purge: delete rows past CDS_RETENTION_DAYS now; rotate-key: re-key stored "
        "pseudonyms to the key ring's current key (docs/hardening.md)",
    )
    db.add_argument(
        "--new-key-file",
        metavar="FILE",
        help="rotate-key: first add this file's key as the newest key of the key file's ring",
    )
    db.set_defaults(func=_db)

    report = sub.add_parser(
        "report",
        help="governance report per rule: calls, cards, patients, outcomes, "
        "override reasons, suggestions accepted, weekly trend",
    )
    report.add_argument("--since", help="first day, YYYY-MM-DD (default: 12 weeks to --until)")
    report.add_argument("--until", help="last day, YYYY-MM-DD (default: today, UTC)")
    report.add_argument("--rule", help="one rule id (default: every rule)")
    report.add_argument("--format", choices=["table", "csv", "json"], default="table")
    report.add_argument(
        "--table",
        choices=[
            "rules",
            "override-reasons",
            "suggestions",
            "weeks",
            "decisions",
            "variants",
            "reason-classes",
            "firing-rates",
        ],
        default="rules",
        help="the table printed by --format csv (default: rules, per card; decisions: per "
        "ordering decision)",
    )
    report.add_argument(
        "--backtest",
        metavar="DIR",
        help="a backtest run folder (its summary.json): its figures beside the live ones",
    )
    report.set_defaults(func=_report)

    demo = sub.add_parser(
        "demo-traffic",
        help="play the demo patients' hook calls and feedback against a "
        "running service (CDS_AUTH=off), for the report and /analytics",
    )
    demo.add_argument(
        "--url",
        default="http://127.0.0.1:8080",
        help="the service's base URL (default: http://127.0.0.1:8080)",
    )
    demo.add_argument(
        "--fixtures",
        help="a folder of demo patient Bundles with an "
        "expected.json (default: the demo patients shipped in the package)",
    )
    demo.add_argument(
        "--rounds",
        type=int,
        default=6,
        help="times each demo patient is seen, each time as a new patient",
    )
    demo.add_argument("--seed", type=int, default=13, help="random seed of the feedback")
    demo.add_argument(
        "--today",
        help="the date the demo patients' relative dates (@-30d) count from, as the service's "
        "CDS_TODAY (default: CDS_TODAY, else the clock)",
    )
    demo.set_defaults(func=_demo_traffic)

    backtest = sub.add_parser(
        "backtest",
        help="replay a FHIR Bulk Data export's opioid and benzodiazepine orders through the "
        "rules (what each rule would have fired); `backtest generate` writes a synthetic export",
    )
    backtest.add_argument(
        "source", help="a folder of *.ndjson[.gz] files or patient Bundles, or `generate`"
    )
    backtest.add_argument("--since", help="first order day, YYYY-MM-DD")
    backtest.add_argument("--until", help="last order day, YYYY-MM-DD")
    backtest.add_argument("--rules", nargs="*", help="rule ids to run (default: all)")
    backtest.add_argument("--engine", choices=["local", "spark"], default="local")
    backtest.add_argument(
        "--out", help="output folder (default: backtests/<timestamp> in the data directory)"
    )
    backtest.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="processes evaluating (local), or N of local[N] (spark); default: every core",
    )
    backtest.add_argument(
        "--memory-mb", type=int, default=512, help="DuckDB's memory limit (local engine)"
    )
    backtest.add_argument("--spark-master", default="", help="default: local[*]")
    backtest.add_argument(
        "--patient-view", action="store_true", help="also replay patient-view once a month"
    )
    backtest.add_argument(
        "--fhir-server", default="", help="the FHIR base the export came from (pseudonym input)"
    )
    backtest.add_argument("--patients", type=int, default=1000, help="generate: patients")
    backtest.add_argument("--seed", type=int, default=1, help="generate: random seed")
    backtest.add_argument("--templates", help="generate: folder of patient Bundles")
    backtest.add_argument("--gzip", action="store_true", help="generate: write .ndjson.gz")
    backtest.set_defaults(func=_backtest)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except _Fail as exc:
        print(f"cds-service: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
