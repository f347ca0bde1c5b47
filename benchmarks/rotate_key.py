"""How long `cds-service db rotate-key` takes: N hook calls (one card and one order call
each) logged under one key, then every row re-keyed to a ring with a second key.

    .venv/bin/python benchmarks/rotate_key.py [N]
"""

from __future__ import annotations

import datetime as dt
import secrets
import sys
import tempfile
import time
import uuid

from cds_service.config import Config
from cds_service.store import open_store
from cds_service.store.cardlog import CardLogEntry, HookCall, IssuedCard, OrderCall

K0, K1 = "benchmark-key-zero-0123456789abcdef", "benchmark-key-one-0123456789abcdef"


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/cds.sqlite3"
        store = open_store(Config(database_url=url, pseudonym_key=K0))
        now = dt.datetime.now(dt.UTC)
        for start in range(0, count, 1000):
            entries = []
            for _ in range(min(1000, count - start)):
                key = secrets.token_hex(32)
                order = OrderCall(
                    now, "svc", "order-sign", key, True, key, (key,), (key, key), ("opioid",), key
                )
                card = IssuedCard(
                    str(uuid.uuid4()), "rule", "svc", "order-sign", "warning", now, key, (),
                    decision=key, decision_key=key, prescriber_key=key,
                )  # fmt: skip
                entries.append(CardLogEntry(HookCall(now.date(), "svc", True, order), (card,)))
            store.write_card_log(entries)
        store.close()
        store = open_store(Config(database_url=url, pseudonym_key=K1, pseudonym_previous_keys=K0))
        started = time.perf_counter()
        done = store.rotate_keys()
        seconds = time.perf_counter() - started
        rows = sum(v for k, v in done.items() if k != "unknown")
        print(
            f"sqlite: {count} hook calls ({rows} rows: {done}) re-keyed in {seconds:.1f} s "
            f"({rows / seconds:,.0f} rows/s)"
        )
        store.close()


if __name__ == "__main__":
    main()
