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
import os
import sys

from cds_service.cli.backtest import _backtest
from cds_service.cli.common import _Fail
from cds_service.cli.offline import _classify, _evaluate, _mme, _terminology
from cds_service.cli.serve import _serve
from cds_service.cli.store import _db, _demo_traffic, _report


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
