"""`cds-service backtest`: replay the rules over a Bulk FHIR export."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cds_service.cli.common import _config, _Fail
from cds_service.config import ConfigError


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
