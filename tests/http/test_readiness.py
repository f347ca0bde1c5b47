"""/readyz means ready: the store takes a real write (probed at most every few seconds), the
knowledge is loaded and the worker has a request thread to spare; /healthz stays simple."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import close_app, make_app
from flask import Flask
from sqlalchemy import event


def _status(app: Flask, path: str = "/readyz") -> int:
    return int(app.test_client().get(path).status_code)


def test_a_store_that_reads_but_cannot_write_is_not_ready(tmp_path: Path) -> None:
    """A database that answers SELECT 1 but refuses writes (as on a full disk or a read-only
    volume) makes /readyz 503, while /healthz stays 200."""
    app = make_app(data_dir=str(tmp_path / "data"))
    store = app.extensions["cds_store"]
    store.engine.dispose()

    @event.listens_for(store.engine, "connect")
    def _read_only(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA query_only=ON")

    store.ping()  # reading still works
    assert _status(app) == 503
    body = app.test_client().get("/readyz").get_json()
    assert "cannot take a write" in body["issue"][0]["diagnostics"]
    assert _status(app, "/healthz") == 200
    close_app(app)


def test_the_write_probe_is_rate_limited(tmp_path: Path) -> None:
    """Twenty readiness polls in a row cost one probe write."""
    app = make_app(data_dir=str(tmp_path / "data"))
    store = app.extensions["cds_store"]
    calls: list[int] = []
    real = store.write_probe

    def counting() -> None:
        calls.append(1)
        real()

    store.write_probe = counting
    assert [_status(app) for _ in range(20)] == [200] * 20
    assert len(calls) == 1
    close_app(app)


def test_a_saturated_worker_is_not_ready(tmp_path: Path) -> None:
    """With every request thread of the worker busy, /readyz is 503; with one free, 200."""
    app = make_app(data_dir=str(tmp_path / "data"), worker_threads=2)
    inflight = app.extensions["cds_inflight"]
    inflight.enter()
    assert _status(app) == 200  # one busy, this probe on the other
    inflight.enter()
    assert _status(app) == 503
    inflight.leave()
    inflight.leave()
    assert _status(app) == 200
    assert inflight.count == 0  # every request, readiness included, is counted out again
    close_app(app)


def test_knowledge_not_loaded_is_not_ready(tmp_path: Path) -> None:
    """Without loaded card templates /readyz is 503."""
    app = make_app(data_dir=str(tmp_path / "data"))
    del app.extensions["cds_engine"]
    assert _status(app) == 503
    app.extensions["cds_store"].close()
