"""Test helpers that run real processes on loopback: a throwaway PostgreSQL server and
`cds-service serve`, plus a hook body that makes cards with suggestions."""

from __future__ import annotations

import contextlib
import copy
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import bundle_of, full_prefetch, sandbox
from jwt_keys import BASE, ISS, JWKS

PATIENT_ID = "pt-secret-4711"  # looked for in every file the service writes: must never appear
DRUG_NAMES = ("oxycodone", "alprazolam")


def cards_body(patient_id: str = PATIENT_ID) -> dict[str, Any]:
    """An order-sign request that fires three cards, two with drug-named suggestions."""
    subject = {"reference": f"Patient/{patient_id}"}
    alprazolam = {
        "resourceType": "MedicationRequest",
        "id": "alp",
        "status": "active",
        "intent": "order",
        "subject": subject,
        "authoredOn": "2026-11-10",
        "medicationCodeableConcept": {"text": "Alprazolam 0.5 MG Oral Tablet"},
        "dispenseRequest": {
            "expectedSupplyDuration": {
                "value": 30,
                "code": "d",
                "system": "http://unitsofmeasure.org",
                "unit": "days",
            }
        },
    }
    back_pain = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": subject,
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M54.50"}],
            "text": "Low back pain",
        },
        "onsetDateTime": "2025-01-01",
    }
    body = sandbox("order-sign-oxycodone.json")
    body.pop("fhirServer")
    body["context"]["patientId"] = patient_id
    for entry in body["context"]["draftOrders"]["entry"]:
        entry["resource"]["subject"] = copy.deepcopy(subject)
    body["prefetch"] = full_prefetch(
        patient_id, meds=bundle_of(alprazolam), conditions=bundle_of(back_pain)
    )
    return body


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server binaries on this machine, if any."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name)
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def require_postgres() -> Path:
    bindir = postgres_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries are missing: .ci/run must install them")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    return bindir


class PostgresServer:
    """initdb + pg_ctl in a temporary directory, listening on 127.0.0.1 only, with password
    authentication; run as an unprivileged user when the tests run as root."""

    user = "cds"
    password = "pw-for-tests"  # noqa: S105 - a throwaway loopback test server
    database = "cds"

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cds-pg-"))
        self.data = self.root / "data"
        self.uid: int | None = None
        self.gid: int | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    entry = pwd.getpwnam(name)
                except KeyError:
                    continue
                self.uid, self.gid = entry.pw_uid, entry.pw_gid
                break
            else:
                pytest.fail("running as root and no unprivileged user to run PostgreSQL")
            os.chown(self.root, self.uid, self.gid)
        os.chmod(self.root, 0o700)

    def _run(self, *args: str) -> None:
        subprocess.run(
            list(args),
            check=True,
            capture_output=True,
            timeout=120,
            user=self.uid,
            group=self.gid,
            cwd=self.root,
        )

    def init(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password)
        if self.uid is not None:
            os.chown(pwfile, self.uid, self.gid or 0)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        )
        pwfile.unlink()

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} "
            "-c unix_socket_directories='' -c fsync=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self, name: str | None = None) -> None:
        """Create the database `name` (by default this server's `database`)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            dbname="postgres",
            autocommit=True,
        ) as connection:
            connection.execute(f"CREATE DATABASE {name or self.database}")

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def new_database(self, prefix: str = "t", migrated: bool = False) -> str:
        """A fresh, empty database on this server, as a postgresql:// URL (with `migrated`,
        upgraded to the head migration)."""
        import uuid

        name = prefix + uuid.uuid4().hex[:12]
        self.create_database(name)
        url = self.url.rsplit("/", 1)[0] + "/" + name
        if migrated:
            migrate_database(url)
        return url

    def module_view(self) -> PostgresServer:
        """This server with a fresh database of its own as `url`/`database`: what one test
        module sees of the session's server (tests/conftest.py `postgres`)."""
        view = copy.copy(self)
        view.database = self.new_database("mod").rsplit("/", 1)[1]
        return view

    def cleanup(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def migrate_database(url: str) -> None:
    """Upgrade the database at `url` to the head migration, as `cds-service db upgrade`."""
    from cds_service.config import Config
    from cds_service.store import database_url, migrate
    from cds_service.store.engine import make_engine

    engine = make_engine(database_url(Config(database_url=url)), 5.0, statement_timeout=False)
    migrate.upgrade(engine)
    engine.dispose()


def start_postgres() -> PostgresServer:
    server = PostgresServer(require_postgres())
    try:
        server.init()
        server.start()
        server.create_database()
    except BaseException:
        server.cleanup()
        raise
    return server


class Service:
    """`cds-service serve` in a subprocess on a free loopback port."""

    def __init__(self, env: dict[str, str], workers: int = 1, threads: int = 4) -> None:
        self.env = {**os.environ, "CDS_TODAY": "2026-11-23", "CDS_LOG_LEVEL": "WARNING", **env}
        self.workers = workers
        self.threads = threads
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkdtemp(prefix="cds-serve-")) / "stderr.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        return self.launch().wait_ready()

    def launch(self) -> Service:
        """Start the process without waiting for it (wait_ready does): start_all launches
        several at once, so they import and bind side by side."""
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cds_service.cli",
                "serve",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--threads",
                str(self.threads),
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )
        return self

    def wait_ready(self) -> Service:
        """Wait until the launched process answers /healthz (at most 60 s)."""
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"cds-service exited: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("cds-service did not start")

    def stop(self) -> None:
        self.terminate()
        self.wait_stopped()

    def terminate(self) -> None:
        """Send SIGTERM (the card-log writer flushes) without waiting: see stop_all."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self) -> None:
        """Wait for a terminated process to exit (20 s, then SIGKILL)."""
        if self.process is not None:
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on GET /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(f"{self.base}/metrics", timeout=5).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total


def authenticated_service(home: Path, pseudonym_key: str, database_url: str = "") -> Service:
    """`cds-service serve` (2 workers x 4 threads) with authentication required (the test
    issuer's inline JWKS), its data under `home`, on `database_url` or the embedded SQLite."""
    issuers = home / "issuers.json"
    issuers.write_text(json.dumps([{"iss": ISS, "jwks": JWKS}]))
    env = {
        "CDS_AUTH": "required",
        "CDS_PUBLIC_BASE_URL": BASE,
        "CDS_TRUSTED_ISSUERS_FILE": str(issuers),
        "CDS_PSEUDONYM_KEY": pseudonym_key,
        "XDG_DATA_HOME": str(home / "xdg"),
    }
    if database_url:
        env["CDS_DATABASE_URL"] = database_url
    return Service(env, workers=2, threads=4)


def start_all(services: list[Service]) -> None:
    """Start several services side by side (each stopped again if any fails to start)."""
    try:
        for service in services:
            service.launch()
        for service in services:
            service.wait_ready()
    except BaseException:
        stop_all(services)
        raise


def stop_all(services: list[Service]) -> None:
    """SIGTERM every service at once, then wait for each to exit."""
    for service in services:
        service.terminate()
    for service in services:
        service.wait_stopped()


def feedback_storm(
    service: Service,
    pseudonym_key: str,
    seconds: float,
    feedback_clients: int = 8,
    items: int = 100,
    hook_clients: int = 2,
    authenticated: bool = True,
) -> dict[str, Any]:
    """`feedback_clients` clients post `items`-item feedback (valid, distinct cards) and
    `hook_clients` clients make hook calls (each with a fresh token, so a replay claim),
    all for `seconds`. Returns the statuses, hook latencies and the uuids of the cards the
    hook calls returned (what the card log must hold afterwards)."""
    import statistics
    import threading

    from conftest import card_ids_for, feedback_item
    from jwt_keys import token

    ids = card_ids_for(pseudonym_key)
    until = time.monotonic() + seconds
    lock = threading.Lock()
    out: dict[str, Any] = {
        "feedback_statuses": [],
        "feedback_items": 0,
        "hook_statuses": [],
        "hook_seconds": [],
        "cards": set(),
    }
    sign = "/cds-services/opioid-lbp-order-sign"

    def headers(path: str) -> dict[str, str]:
        if not authenticated:
            return {}
        return {"Authorization": f"Bearer {token(path=path)}"}

    def feedback_client() -> None:
        session = requests.Session()
        while time.monotonic() < until:
            body = {"feedback": [feedback_item(ids) for _ in range(items)]}
            try:
                status = session.post(
                    service.base + sign + "/feedback",
                    json=body,
                    headers=headers(sign + "/feedback"),
                    timeout=30,
                ).status_code
            except requests.RequestException:
                status = 0
            with lock:
                out["feedback_statuses"].append(status)
                out["feedback_items"] += items if status == 200 else 0

    def hook_client() -> None:
        session = requests.Session()
        body = cards_body()
        while time.monotonic() < until:
            started = time.perf_counter()
            try:
                response = session.post(
                    service.base + sign, json=body, headers=headers(sign), timeout=30
                )
                status = response.status_code
                cards = {c["uuid"] for c in response.json().get("cards", ())}
            except (requests.RequestException, ValueError):
                status, cards = 0, set()
            with lock:
                out["hook_statuses"].append(status)
                out["hook_seconds"].append(time.perf_counter() - started)
                out["cards"] |= cards

    threads = [threading.Thread(target=feedback_client) for _ in range(feedback_clients)]
    threads += [threading.Thread(target=hook_client) for _ in range(hook_clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = sorted(out["hook_seconds"]) or [0.0]
    out["hook_p50"] = statistics.median(latencies)
    out["hook_p99"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    out["hook_max"] = latencies[-1]
    return out
