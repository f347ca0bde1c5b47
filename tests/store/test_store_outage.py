"""The database stops in the middle of a run: hook calls still answer 200 with cards, lost
card-log writes are counted, the replay check fails closed (503), and all recovers when the
database is back."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from conftest import card_ids_for, feedback_item, shipped
from jwt_keys import BASE, ISS, JWKS, token
from servers import PostgresServer, Service, cards_body, start_all, start_postgres, stop_all

from cds_service.config import Config
from cds_service.store import database_url, migrate
from cds_service.store.engine import make_engine

SIGN = "/cds-services/opioid-lbp-order-sign"
KEY = "outage-test-pseudonym-key-0123456789"


def eventually(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PostgresServer, Service, Service]]:
    home = tmp_path_factory.mktemp("outage")
    postgres = start_postgres()
    engine = make_engine(database_url(Config(database_url=postgres.url)), 5.0)
    migrate.upgrade(engine)
    engine.dispose()
    issuers = Path(home) / "issuers.json"
    issuers.write_text(json.dumps([{"iss": ISS, "jwks": JWKS}]))
    common = {
        "CDS_DATABASE_URL": postgres.url,
        "CDS_PSEUDONYM_KEY": KEY,
        "XDG_DATA_HOME": str(home),
        "CDS_DATABASE_TIMEOUT": "1",
    }
    open_service = Service(common)
    auth_service = Service(
        {
            **common,
            "CDS_AUTH": "required",
            "CDS_PUBLIC_BASE_URL": BASE,
            "CDS_TRUSTED_ISSUERS_FILE": str(issuers),
        }
    )
    try:
        start_all([open_service, auth_service])
        yield postgres, open_service, auth_service
    finally:
        stop_all([open_service, auth_service])
        postgres.cleanup()


def test_hook_calls_survive_a_database_outage(
    setup: tuple[PostgresServer, Service, Service],
) -> None:
    """Stop PostgreSQL mid-run: hooks answer 200 with cards, the card log keeps its entries
    and retries (nothing lost), readiness and authenticated calls answer 503, feedback asks
    to be resent; after a restart every card of the outage is written."""
    postgres, service, auth_service = setup
    url = service.base + SIGN
    assert requests.post(url, json=cards_body(), timeout=30).json()["cards"]
    assert eventually(lambda: service.metric("cds_card_log_written_total") >= 2)
    assert requests.get(service.base + "/readyz", timeout=5).status_code == 200

    before_outage = service.metric("cds_card_log_written_total")
    postgres.stop("immediate")
    for _ in range(20):
        response = requests.post(url, json=cards_body(), timeout=30)
        assert response.status_code == 200
        assert len(shipped([c["source"]["topic"]["code"] for c in response.json()["cards"]])) == 2
    assert eventually(lambda: service.metric("cds_store_failures_total", operation="card_log") > 0)
    assert service.metric("cds_card_log_lost_total", reason="store-unavailable") == 0
    assert service.metric("cds_card_log_lost_total", reason="queue-full") == 0

    ready = requests.get(service.base + "/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["resourceType"] == "OperationOutcome"
    refused = requests.post(
        auth_service.base + SIGN,
        json=cards_body(),
        timeout=30,
        headers={"Authorization": f"Bearer {token(path=SIGN)}"},
    )
    assert refused.status_code == 503
    assert refused.json()["issue"][0]["code"] == "transient"
    assert refused.headers["Retry-After"]
    feedback = requests.post(
        url + "/feedback",
        timeout=30,
        json={"feedback": [feedback_item(card_ids_for(KEY))]},
    )
    assert feedback.status_code == 503

    postgres.start()
    # the 40 cards issued during the outage were kept and are written once it is back
    assert eventually(lambda: service.metric("cds_card_log_written_total") >= before_outage + 40)
    written = service.metric("cds_card_log_written_total")
    assert eventually(lambda: requests.get(service.base + "/readyz", timeout=5).status_code == 200)

    def logged_again() -> bool:
        requests.post(url, json=cards_body(), timeout=30)
        return service.metric("cds_card_log_written_total") > written

    assert eventually(logged_again)
    assert (
        requests.post(
            auth_service.base + SIGN,
            json=cards_body(),
            timeout=30,
            headers={"Authorization": f"Bearer {token(path=SIGN)}"},
        ).status_code
        == 200
    )
