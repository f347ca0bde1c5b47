"""Shared test set-up: the app from create_app with a fixed clinical date, and a client whose
every response is checked against the CDS Hooks schema and the spec's extra rules."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import logging
import os
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings

from cds_service import create_app
from cds_service.config import Config
from cds_service.hooks.feedback import CardIds
from cds_service.hooks.spec_checks import discovery_problems, response_problems
from cds_service.knowledge import Knowledge
from cds_service.store import writer as card_log_writer

# Hypothesis: a fast profile by default; .ci/run sets CDS_HYPOTHESIS_PROFILE=thorough.
settings.register_profile(
    "fast", max_examples=60, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.register_profile(
    "thorough", max_examples=4000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("CDS_HYPOTHESIS_PROFILE", "fast"))

# The card-log writer's idle thread looks at its stop flag every IDLE_POLL seconds: at the
# production 0.5 s, closing each test's app waited up to half a second (minutes over the suite).
card_log_writer.IDLE_POLL = 0.02

TODAY = "2026-11-23"
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "fhir"
FHIR = "http://127.0.0.1:8081"
SIGN = "/cds-services/opioid-lbp-order-sign"
SELECT = "/cds-services/opioid-lbp-order-select"
VIEW = "/cds-services/opioid-lbp-patient-view"
FEEDBACK = SIGN + "/feedback"
SERVICE = {
    "patient-view": "opioid-lbp-patient-view",
    "order-select": "opioid-lbp-order-select",
    "order-sign": "opioid-lbp-order-sign",
}  # hook -> service id


def install_extra_rules(folder: Path) -> list[Path]:
    """Add the rules of a throwaway project folder the way the recipe adds one (docs/adding-a-
    rule.md): each line of `registry.txt` ("module:Class", importable from the folder) joins
    the registry, `settings.json` overlays the packaged settings, `cards/*.json` join the card
    templates; returns the folder's fixture root (fixtures/<rule id>/). Used when
    CDS_TEST_EXTRA_RULES names such a folder (tests/rules/test_throwaway_rule.py runs whole
    suites that way)."""
    import importlib
    import sys

    import cds_service.cards as cards_module
    import cds_service.rules.registry as registry
    import cds_service.settings as settings_module

    sys.path.insert(0, str(folder))
    extra = []
    for line in (folder / "registry.txt").read_text("utf-8").split():
        module, name = line.split(":")
        extra.append(getattr(importlib.import_module(module), name)())
    shipped_rules, shipped_defaults = registry.default_rules, settings_module.packaged_defaults
    own_settings = json.loads((folder / "settings.json").read_text("utf-8"))
    templates = [json.loads(p.read_text("utf-8")) for p in sorted(folder.glob("cards/*.json"))]
    shipped_init = cards_module.CardTemplates.__init__

    def default_rules() -> tuple[Any, ...]:
        return (*shipped_rules(), *extra)

    def packaged_defaults() -> dict[str, Any]:
        data = shipped_defaults()
        data["rules"] = {**data["rules"], **own_settings["rules"]}
        return data

    def init(self: Any, directory: Path | None = None) -> None:
        shipped_init(self, directory)
        for template in templates:
            self._check(template, template["rule_id"])
            self.templates[template["rule_id"]] = template

    registry.default_rules = default_rules
    settings_module.packaged_defaults = packaged_defaults
    cards_module.CardTemplates.__init__ = init  # type: ignore[method-assign]
    return [folder / "fixtures"]


# Where the fixture table (tests/rules/test_rule_fixtures.py) finds rule fixture folders
# (<root>/<rule id>/cases.json): the shipped ones, plus a throwaway project's.
FIXTURE_ROOTS = [FIXTURES]
if os.environ.get("CDS_TEST_EXTRA_RULES"):
    FIXTURE_ROOTS += install_extra_rules(Path(os.environ["CDS_TEST_EXTRA_RULES"]))

_SCHEMA = json.loads(
    resources.files("cds_service").joinpath("schemas/cds-hooks-2.0.schema.json").read_text("utf-8")
)
_VALIDATORS = {
    name: jsonschema.Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": _SCHEMA["$defs"]})
    for name in ("discovery", "request", "response", "feedback", "operationOutcome")
}


def schema_errors(kind: str, body: Any) -> list[str]:
    return [e.message for e in _VALIDATORS[kind].iter_errors(body)]


def check_body(status: int, body: Any, path: str = "") -> None:
    """Every body the service sends must be valid: cards by the spec, errors as OperationOutcome."""
    if status == 200 and path.endswith("/cds-services"):
        assert schema_errors("discovery", body) == []
        assert discovery_problems(body) == []
    elif status == 200 and path.endswith("/feedback"):
        assert body == {}
    elif status == 200:
        assert schema_errors("response", body) == [], body
        assert response_problems(body) == [], body
    else:
        assert schema_errors("operationOutcome", body) == [], body


@pytest.fixture(autouse=True, scope="session")
def _private_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Apps built without a data directory keep their database in a temporary one, never in
    the home directory of whoever runs the tests."""
    import os

    previous = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("data-home"))
    yield
    if previous is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = previous


def load_fixture(*parts: str) -> Any:
    return json.loads(FIXTURES.joinpath(*parts).read_text("utf-8"))


def sandbox(name: str) -> dict[str, Any]:
    body: dict[str, Any] = load_fixture("sandbox", name)
    return copy.deepcopy(body)


_KNOWLEDGE: list[Knowledge] = []


def shared_knowledge() -> Knowledge:
    """The packaged knowledge, loaded once for the whole test run (apps built from a config
    with its own CDS_VALUESETS_DIR load their own)."""
    if not _KNOWLEDGE:
        _KNOWLEDGE.append(Knowledge.load())
    return _KNOWLEDGE[0]


def make_app(**overrides: Any) -> Flask:
    base = {"today": TODAY, "log_level": "INFO"}
    base.update(overrides)
    config = Config().with_overrides(base)
    knowledge = None if config.valuesets_dir else shared_knowledge()
    return create_app(config, knowledge=knowledge)


class CheckedClient:
    """A test client that validates every response body it receives."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        if body is not None:
            kwargs["json"] = body
        response = self.client.post(path, **kwargs)
        self._check(response, path)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.client.get(path, **kwargs)
        self._check(response, path)
        return response

    def open(self, path: str, **kwargs: Any) -> Any:
        response = self.client.open(path, **kwargs)
        self._check(response, path)
        return response

    @staticmethod
    def _check(response: Any, path: str) -> None:
        assert response.status_code < 500
        if response.status_code == 200 and not response.data:
            return  # CORS preflight
        assert response.mimetype == "application/json"
        check_body(response.status_code, response.get_json(), path)


def close_app(application: Flask) -> None:
    """Stop what an app runs beside its requests: FHIR fetch threads, the card-log writer (it
    writes what is queued first) and the store's connections."""
    application.extensions["cds_engine"].close()
    if application.extensions.get("cds_card_log") is not None:
        application.extensions["cds_card_log"].close()
    application.extensions["cds_store"].close()


@contextlib.contextmanager
def serve_app(application: Flask) -> Iterator[str]:
    """The app served on a free loopback port by a thread (for a browser); yields its base
    URL, then stops the server and closes the app."""
    import threading

    from werkzeug.serving import make_server

    httpd = make_server("127.0.0.1", 0, application, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(10)
        close_app(application)


@pytest.fixture
def app() -> Iterator[Flask]:
    application = make_app()
    yield application
    close_app(application)


@pytest.fixture
def client(app: Flask) -> CheckedClient:
    return CheckedClient(app.test_client())


def empty_bundle() -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": []}


def bundle_of(*resources_: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources_],
    }


ALL_KEYS = (
    "patient",
    "meds",
    "conditions",
    "procedures",
    "serviceRequests",
    "dispenses",
    "statements",
    "encounters",
    "carePlans",
    "allergies",
)


def full_prefetch(patient_id: str = "pt-1", **keys: Any) -> dict[str, Any]:
    """Every prefetch key filled (empty unless given), so no FHIR call is needed."""
    prefetch: dict[str, Any] = {k: empty_bundle() for k in ALL_KEYS}
    prefetch["patient"] = {"resourceType": "Patient", "id": patient_id, "birthDate": "1970-01-01"}
    prefetch.update(keys)
    return prefetch


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def no_unexpected_errors() -> Iterator[None]:
    """Fail if the service logs anything at ERROR or an event marked unexpected (a bug the
    caller would otherwise only see as a 500, or not at all for an isolated rule)."""
    logger = logging.getLogger("cds_service")
    handler = _Collect()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(level or logging.WARNING, logging.WARNING))
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    bad = [
        (r.msg, r.__dict__.get("error"), r.__dict__.get("where"))
        for r in handler.records
        if r.levelno >= logging.ERROR or r.__dict__.get("unexpected")
    ]
    assert not bad, bad


# --- Shared request builders and readers (used by several test modules) ------------------------

ALPRAZOLAM = {
    "resourceType": "MedicationRequest",
    "id": "alp",
    "status": "active",
    "intent": "order",
    "subject": {"reference": "Patient/pt-1"},
    "authoredOn": "2026-11-10",
    "medicationCodeableConcept": {"text": "Alprazolam 0.5 MG Oral Tablet"},
    "dispenseRequest": {"expectedSupplyDuration": {"value": 30, "code": "d"}},
}


def sign_body(**prefetch: Any) -> dict[str, Any]:
    """The sandbox order-sign body with the given prefetch (and its fhirServer)."""
    body = sandbox("order-sign-oxycodone.json")
    body["prefetch"] = prefetch
    return body


def rule_ids(response: Any) -> list[str]:
    """The rule id of each card in a hook response, in order."""
    return [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]


SHIPPED_RULES = frozenset(
    {"opioid-benzodiazepine", "opioid-start-chronic-lbp", "first-line-therapy-not-tried"}
    | {"opioid-safety-summary", "record-unusable"}
)


def shipped(ids: list[str]) -> list[str]:
    """The cards of the rules these tests were written about, in order: a rule added later
    (and its cards) never breaks a test that is not about the rule set."""
    return [rule for rule in ids if rule in SHIPPED_RULES]


def diagnostics(response: Any) -> str:
    """The first issue's diagnostics of an OperationOutcome response."""
    return str(response.get_json()["issue"][0]["diagnostics"])


def fhir_search(rtype: str) -> re.Pattern[str]:
    """The search URL the service reads `rtype` with for patient pt-1."""
    return re.compile(rf"{re.escape(FHIR)}/{rtype}\?patient=pt-1.*")


def register_rest(rsps: Any, skip: tuple[str, ...] = ()) -> None:
    """Empty answers for every read of pt-1's record except the resource types in `skip`."""
    if "Patient" not in skip:
        rsps.get(f"{FHIR}/Patient/pt-1", json={"resourceType": "Patient", "id": "pt-1"})
    for rtype in (
        "MedicationRequest",
        "Condition",
        "Procedure",
        "ServiceRequest",
        "MedicationDispense",
        "MedicationStatement",
    ):
        if rtype not in skip:
            rsps.get(fhir_search(rtype), json=empty_bundle())


def read_bundle(path: Path, today: str = TODAY) -> Any:
    """A fixture Bundle with its relative dates ("@-30d", the demo patients') resolved."""
    from cds_service.hooks.bundle_request import resolve_relative_dates

    bundle = json.loads(path.read_text("utf-8"))
    return resolve_relative_dates(bundle, dt.date.fromisoformat(today))


def fixture_request(directory: Path, name: str, case: dict[str, Any]) -> dict[str, Any]:
    """A rule fixture Bundle as the hook request its cases.json entry describes."""
    from cds_service.hooks.bundle_request import request_from_bundle

    bundle = read_bundle(directory / name)
    body = request_from_bundle(bundle, case["hook"])
    if "selections" in case:
        body["context"]["selections"] = case["selections"]
    if "encounterId" in case:  # the hook's encounter (an inpatient stay, say)
        body["context"]["encounterId"] = case["encounterId"]
    return body


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One throwaway PostgreSQL server on loopback for the whole run (tests/servers.py, which
    imports this module, hence the late import); each module gets its own database on it."""
    from servers import start_postgres

    server = start_postgres()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def postgres(postgres_server: Any) -> Any:
    """The session's PostgreSQL server with a fresh database of this module's own as its
    `url`/`database` (`new_database()` gives more)."""
    return postgres_server.module_view()


def seeded_store(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pseudonym_key: str,
    write: Any,
) -> Iterator[Any]:
    """For a fixture parametrized by backend ("sqlite", "postgresql"): a fresh store that
    `write(store)` seeded, closed afterwards."""
    store = fresh_store(request.param, request, tmp_path_factory.mktemp("seeded"), pseudonym_key)
    write(store)
    yield store
    store.close()


def fresh_store(
    backend: str, request: pytest.FixtureRequest, folder: Path, pseudonym_key: str
) -> Any:
    """An empty store at the head migration: SQLite in `folder`, or ("postgresql") a new
    database on the session's throwaway PostgreSQL server, with `pseudonym_key`."""
    from cds_service.store import open_store

    if backend == "sqlite":
        return open_store(Config(data_dir=str(folder / "data")))
    url = request.getfixturevalue("postgres").new_database("s", migrated=True)
    return open_store(Config(database_url=url, pseudonym_key=pseudonym_key))


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _unavailable(reason: str) -> None:
    """Skip a test whose tool is missing, except in CI (.ci/run installs it): fail there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: .ci/run must install it")
    pytest.skip(reason)


def open_page(browser: Any, url: str, **context_options: Any) -> tuple[Any, Any, list[str]]:
    """A new browser context (`context_options`: viewport, java_script_enabled, ...) with a
    page at `url` (answered 200) and the list its console errors and page errors go to."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    response = page.goto(url)
    assert response is not None and response.status == 200
    return context, page, problems


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where browser tests save screenshots: $CDS_TEST_SCREENSHOTS (docs/ for the README's
    picture) or a temporary folder."""
    folder = os.environ.get("CDS_TEST_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium (the distribution's, never a downloaded one) driven by Playwright
    for the whole run; each test opens its own context or page."""
    import shutil

    executable = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if executable is None:
        _unavailable("Chromium (/usr/bin/chromium) is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def card_ids_for(app_or_key: Flask | str) -> CardIds:
    """The app's card-id minter, or the one a server started with this pseudonym key uses."""
    if isinstance(app_or_key, Flask):
        ids: CardIds = app_or_key.extensions["cds_card_ids"]
        return ids
    from cds_service.cards import CardTemplates
    from cds_service.store.pseudonym import Pseudonymizer

    key = Pseudonymizer(app_or_key.encode()).derived_key(b"card-ids")
    return CardIds(key, CardTemplates().templates)


def feedback_item(
    ids: CardIds,
    outcome: str = "overridden",
    *,
    service_id: str = SERVICE["order-sign"],
    rule_id: str = "opioid-benzodiazepine",
    at: str = "2026-11-22T13:20:13.596Z",
    reason: str | None = "benefit-outweighs-risk",
    card: str | None = None,
) -> dict[str, Any]:
    """A valid feedback item for a card minted as the service mints them (or for `card`)."""
    card = card or ids.card_uuid(service_id, rule_id)
    item: dict[str, Any] = {"card": card, "outcome": outcome, "outcomeTimestamp": at}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": ids.suggestion_uuid(card, 0)}]
    elif reason is not None:
        item["overrideReason"] = {
            "reason": {"system": "urn:opioid-lbp-cds:override-reason", "code": reason}
        }
    return item
