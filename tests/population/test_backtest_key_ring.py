"""The backtest keys patients and prescribers with the store's rotated key ring."""

from __future__ import annotations

from types import SimpleNamespace

from cds_service.config import Config
from cds_service.population.replay import Options, Replayer
from cds_service.population.run import pseudonym_key
from cds_service.store.pseudonym import Pseudonymizer, rekey

K0 = b"first-pseudonym-key-0123456789abcdef"
K1 = b"second-pseudonym-key-0123456789abcdef"
BASE = "https://fhir.example.org/r4"


def _replayer(key: bytes) -> Replayer:
    engine = SimpleNamespace(settings=None)
    return Replayer(engine, SimpleNamespace(classifier=None), key, Options(fhir_server=BASE))


def test_backtest_pseudonyms_follow_the_live_key_ring() -> None:
    """With CDS_PSEUDONYM_PREVIOUS_KEYS set, the backtest's patient key equals the live
    store's under the same ring, and its other keys are the single-key ones re-keyed by the
    newer key (so backtest and live figures still describe the same patients)."""
    ring = pseudonym_key(Config(pseudonym_key=K1.decode(), pseudonym_previous_keys=K0.decode()))
    assert ring.split(b"\n") == [K0, K1]
    live = Pseudonymizer((K0, K1))
    rotated, single = _replayer(ring), _replayer(K0)
    assert rotated.pseudonym("patient", "p1") == live.patient_key(BASE, "p1")
    assert rotated.pseudonym("patient", "p1") != single.pseudonym("patient", "p1")
    assert rotated.pseudonym("order", "o1") == rekey(K1, single.pseudonym("order", "o1"))
    assert pseudonym_key(Config(pseudonym_key=K0.decode())) == K0
