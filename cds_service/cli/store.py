"""`cds-service db | report | demo-traffic`: the database, the governance report, demo traffic."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cds_service.cli.common import _config, _Fail
from cds_service.config import ConfigError


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
