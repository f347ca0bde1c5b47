"""The database engine and the Store's plumbing: the URL from the configuration, engine
creation (SQLite pragmas, PostgreSQL statement timeout), the private SQLite file, the
migration under a file lock, and StoreEngine (transactions, statements compiled once and run
on a pooled DBAPI connection) that every part of the Store builds on.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

from cds_service.config import Config, ConfigError, default_data_dir
from cds_service.store import migrate
from cds_service.store.cardlog import SuggestionLabels
from cds_service.store.errors import StoreUnavailable
from cds_service.store.pseudonym import Pseudonymizer

log = logging.getLogger("cds_service.store")

DB_FILE_NAME = "cds.sqlite3"
UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    sa_exc.DisconnectionError,
)


def database_url(config: Config) -> URL:
    """The SQLAlchemy URL for the configured database (postgresql:// -> psycopg 3)."""
    raw = config.database_url.strip()
    if not raw:
        directory = Path(config.data_dir or default_data_dir())
        return URL.create("sqlite", database=str(directory / DB_FILE_NAME))
    try:
        url = make_url(raw)
    except sa_exc.ArgumentError:
        raise ConfigError("CDS_DATABASE_URL: not a database URL") from None
    backend = url.get_backend_name()
    if backend in {"postgresql", "postgres"}:
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return url
    raise ConfigError(
        f"CDS_DATABASE_URL: {backend} is not supported (use postgresql:// or sqlite:///path)"
    )


def in_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def sqlite_pool_size(threads: int) -> int:
    """Pooled connections of a SQLite engine: one per request thread (a replay claim each)
    plus the card-log writer, the readiness probe and /analytics, so a loaded worker never
    opens and closes overflow connections (and their PRAGMAs) call after call."""
    return max(8, threads) + 4


def make_engine(
    url: URL, timeout: float, statement_timeout: bool = True, threads: int = 0
) -> Engine:
    """The engine; `threads` is the request threads of a worker (0 = unknown)."""
    if url.get_backend_name() == "sqlite":
        if in_memory(url):
            return create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        size = sqlite_pool_size(threads)
        engine = create_engine(
            url,
            pool_size=size,
            max_overflow=size,
            pool_timeout=timeout,
            connect_args={"timeout": timeout, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            # the report's sorts (one row per firing, analytics/report.py) stay in memory
            # instead of spilling to temporary files
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

        return engine
    connect_args: dict[str, Any] = {"connect_timeout": max(1, round(timeout))}
    if statement_timeout:
        connect_args["options"] = f"-c statement_timeout={max(1000, int(timeout * 5000))}"
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_timeout=timeout,
        connect_args=connect_args,
    )


def owner_only(path: Path, mode: int) -> None:
    """Make a data directory (0700) or database file (0600) private to its owner, whatever
    mode it had before; a path this process does not own is reported, not fatal."""
    try:
        if path.stat().st_mode & 0o777 != mode:
            path.chmod(mode)
    except OSError as exc:
        log.warning(
            "data-path-mode-not-set", extra={"reason": f"{oct(mode)}: {exc.strerror or exc}"}
        )


def create_private(path: Path) -> None:
    """Create the SQLite file with mode 0600 before SQLite does (its -wal and -shm files take
    the database file's mode), so it is never readable by others, not even briefly."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(f"CDS_DATA_DIR: cannot create {path} ({exc.strerror})") from None
    os.close(fd)


def file_lock_upgrade(engine: Engine, lock_path: Path) -> None:
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            migrate.upgrade(engine)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# a statement compiled once: SQL, positional, parameter order, value conversions
Prepared = tuple[str, bool, list[str], dict[str, Any]]


def as_dicts(result: Any) -> list[dict[str, Any]]:
    """Rows as dicts, the column names looked up once per result (not once per row)."""
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result]


class StoreEngine:
    """The plumbing every part of the Store shares: the engine, transactions that raise
    StoreUnavailable, statements compiled once and run on a pooled DBAPI connection."""

    def __init__(
        self,
        engine: Engine,
        pseudonymizer: Pseudonymizer,
        labels: SuggestionLabels,
        retention_days: int,
        *,
        embedded: bool,
    ) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.pseudonymizer = pseudonymizer
        self.labels = labels
        self.retention_days = retention_days
        self.embedded = embedded
        self._pid = os.getpid()
        self._claim: Prepared | None = None  # the replay claim, compiled
        self._answered: dict[int, Prepared] = {}  # the answers query per number of keys
        self._link_decisions: dict[int, Prepared] = {}  # record_decisions' insert per count
        self._many_prepared: dict[str, Prepared] = {}  # the card log's inserts, compiled
        dbapi = engine.dialect.loaded_dbapi
        # the driver's own errors, for statements run on a raw DBAPI connection
        self._dbapi_unavailable: tuple[type[BaseException], ...] = (
            dbapi.OperationalError,
            dbapi.InterfaceError,
        )
        self._connect_unavailable = (*UNAVAILABLE, *self._dbapi_unavailable)
        # a SQLite file's hot statements run on each thread's own DBAPI connection
        # (_run_hot); PostgreSQL keeps the pool (its server counts every connection)
        self._thread_connections = self.dialect == "sqlite" and not in_memory(engine.url)
        self._local = threading.local()
        self._hot_lock = threading.Lock()
        self._hot_generation = 0  # bumped by close_hot_connections: older ones are gone
        self._hot_open: list[Any] = []  # every thread's connection, closed by the Store
        self._forked_away: list[Any] = []  # a parent's connections: never closed here

    # --- plumbing ---
    def _insert(self, table: Any) -> Any:
        module: Any = postgresql if self.dialect == "postgresql" else sqlite
        return module.insert(table)

    def _check_fork(self) -> None:
        """A gunicorn worker (forked after create_app) must not reuse the parent's
        connections: drop them from this process's pool, leaving the parent's intact."""
        pid = os.getpid()
        if pid != self._pid:
            self._pid = pid
            self.engine.dispose(close=False)
            # a fresh lock: the parent's may have been held by another thread at the fork
            self._hot_lock = threading.Lock()
            with self._hot_lock:  # the parent's thread connections: left open, unused
                self._forked_away += self._hot_open
                self._hot_open = []

    @contextmanager
    def _begin(self, operation: str) -> Iterator[Connection]:
        self._check_fork()
        try:
            with self.engine.begin() as connection:
                yield connection
        except UNAVAILABLE as exc:
            error = type(getattr(exc, "orig", None) or exc).__name__
            log.warning("store-unavailable", extra={"reason": operation, "error": error})
            raise StoreUnavailable(f"{operation}: database unavailable") from None

    def _prepared(self, statement: Any) -> Prepared:
        """A statement compiled for this database once: (SQL, positional, parameter order,
        the dialect's value conversions per parameter, e.g. SQLite's float for a Float)."""
        compiled = statement.compile(dialect=self.engine.dialect)
        processors = dict(getattr(compiled, "_bind_processors", None) or {})
        return (
            str(compiled),
            bool(compiled.positional),
            list(compiled.positiontup or []),
            processors,
        )

    @staticmethod
    def _params(prepared: Prepared, named: dict[str, Any] | list[dict[str, Any]]) -> list[Any]:
        """Each parameter set as the driver takes it: the value conversions applied (only to
        the parameters that have one) and, for a positional statement, in order."""
        _sql, positional, order, processors = prepared
        sets = named if isinstance(named, list) else [named]
        if positional:
            if not processors:
                return [[one[name] for name in order] for one in sets]
            steps = [(name, processors.get(name)) for name in order]
            return [
                [one[name] if process is None else process(one[name]) for name, process in steps]
                for one in sets
            ]
        if not processors:
            return list(sets)
        converted = []
        for one in sets:
            one = dict(one)
            for name, process in processors.items():
                if name in one:
                    one[name] = process(one[name])
            converted.append(one)
        return converted

    def _run_hot(
        self,
        operation: str,
        prepared: Prepared,
        named: dict[str, Any],
        commit: bool = False,
    ) -> list[Any]:
        """_run_raw for one statement on every call (the answers query, the decision links,
        the replay claim), with one parameter set (in autocommit a statement is atomic by
        itself; several sets would not be): on a SQLite file it runs on this thread's own
        DBAPI connection, taken from the pool once and kept, so a call pays no pool
        checkout, check-in or reset-on-return rollback. A statement that commits leaves no
        transaction open and a plain read opens none, so nothing is rolled back; an error
        drops the connection (the next call takes a fresh one), and a forked worker never
        uses its parent's."""
        if not self._thread_connections:
            return self._run_raw(operation, prepared, named, commit)
        params = self._params(prepared, named)
        self._check_fork()
        connection = self._thread_connection(operation)
        try:
            cursor = connection.cursor()
            try:
                rows: list[Any] = []
                cursor.execute(prepared[0], params[0])
                if cursor.description is not None:  # an insert without RETURNING: none
                    rows = cursor.fetchall()
            finally:
                cursor.close()
            if commit:
                connection.commit()
            elif connection.in_transaction:
                connection.rollback()
            return rows
        except self._dbapi_unavailable as exc:
            self._drop_thread_connection(connection)
            self._unavailable(operation, exc)
        except BaseException:
            self._drop_thread_connection(connection)  # in an unknown state: not reused
            raise

    def _thread_connection(self, operation: str) -> Any:
        local = self._local
        if (
            getattr(local, "pid", None) == self._pid
            and getattr(local, "generation", None) == self._hot_generation
        ):
            return local.connection
        try:
            proxied = self.engine.raw_connection()  # the pool's connect: its PRAGMAs
        except self._connect_unavailable as exc:
            self._unavailable(operation, exc)
        proxied.detach()  # this thread's own from now on; the pool opens another if needed
        connection: Any = proxied.dbapi_connection
        # autocommit: each hot statement is one atomic statement (no BEGIN/COMMIT calls)
        connection.isolation_level = None
        with self._hot_lock:
            if getattr(local, "pid", None) not in (None, self._pid):
                self._forked_away.append(local.connection)  # closing it could harm the parent
            self._hot_open.append(connection)
            local.connection, local.pid = connection, self._pid
            local.generation = self._hot_generation
        return connection

    def _drop_thread_connection(self, connection: Any) -> None:
        with self._hot_lock:
            self._local.pid = None
            if connection in self._hot_open:
                self._hot_open.remove(connection)
        with contextlib.suppress(Exception):  # a broken connection may refuse to close
            connection.close()

    def close_hot_connections(self) -> None:
        """Close every thread's own connection (the Store's close)."""
        with self._hot_lock:
            connections, self._hot_open = self._hot_open, []
            self._hot_generation += 1
        for connection in connections:
            with contextlib.suppress(Exception):  # closing at shutdown is best effort
                connection.close()

    def _run_raw(
        self,
        operation: str,
        prepared: Prepared,
        named: dict[str, Any] | list[dict[str, Any]],
        commit: bool = False,
    ) -> list[Any]:
        """Run a prepared statement on a pooled DBAPI connection (committed when `commit`);
        its rows. A list of parameter sets runs the statement once per set in one
        transaction and fetches nothing. A database that cannot be reached raises
        StoreUnavailable, as _begin does."""
        sql = prepared[0]
        params = self._params(prepared, named)
        self._check_fork()
        try:
            raw = self.engine.raw_connection()
        except self._connect_unavailable as exc:  # a pool's connect error comes unwrapped
            self._unavailable(operation, exc)
        try:
            cursor = raw.cursor()
            try:
                rows: list[Any] = []
                if isinstance(named, list):
                    for one_set in params:
                        cursor.execute(sql, one_set)
                else:
                    cursor.execute(sql, params[0])
                    if cursor.description is not None:  # an insert without RETURNING: none
                        rows = list(cursor.fetchall())
            finally:
                cursor.close()
            if commit:
                raw.commit()
            return rows
        except self._dbapi_unavailable as exc:
            raw.invalidate()  # a broken connection is not returned to the pool
            self._unavailable(operation, exc)
        finally:
            raw.close()  # back to the pool, which rolls back whatever is left open

    @staticmethod
    def _unavailable(operation: str, exc: BaseException) -> NoReturn:
        error = type(getattr(exc, "orig", None) or exc).__name__
        log.warning("store-unavailable", extra={"reason": operation, "error": error})
        raise StoreUnavailable(f"{operation}: database unavailable") from None
