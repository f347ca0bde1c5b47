"""Memory bounded in bytes: names clipped before matching, caches with a byte budget."""

from __future__ import annotations

import gc
import http.client
import json
from typing import Any

import pytest
from conftest import full_prefetch, sandbox
from fault_servers import ServedService, rss_bytes

from cds_service import GC_THRESHOLDS
from cds_service.cli.serve import GC_WORKER_YOUNG, _gc_after_request, _gc_worker_init
from cds_service.config import ConfigError, from_env
from cds_service.knowledge import Knowledge
from cds_service.knowledge.bounded import BoundedCache, clip_concept

MIB = 1024 * 1024


def test_a_4_mb_drug_name_is_clipped_before_matching() -> None:
    """A 4 MB medication text is classified from its first characters and its label is
    clipped, so nothing of its size is kept."""
    knowledge = Knowledge.load()
    knowledge.classifier.bound_memory(512, MIB)
    result = knowledge.classifier.classify_text("oxycodone 5 MG Oral Tablet " + "x" * 4 * MIB)
    assert "opioid-analgesic" in result.classes
    assert len(result.label) <= 512


def test_classification_cache_stays_within_its_byte_budget() -> None:
    """2,000 distinct long names leave the classification cache under its byte budget."""
    knowledge = Knowledge.load()
    knowledge.classifier.bound_memory(512, 256 * 1024)
    for i in range(2000):
        knowledge.classifier.classify_text(f"oxycodone {i} MG " + "y" * 400)
    cache = knowledge.classifier._cache
    assert 0 < cache.bytes <= 256 * 1024
    assert len(cache) < 2000  # the oldest were dropped


def test_condition_cache_stays_within_its_byte_budget() -> None:
    """Distinct long condition names leave the condition cache under its byte budget, and a
    long name is still matched on its first characters."""
    knowledge = Knowledge.load()
    knowledge.conditions.bound_memory(512, 128 * 1024)
    for i in range(1500):
        found = knowledge.conditions.categories(
            {"text": f"chronic low back pain {i} " + "z" * 100_000}
        )
        assert "low-back-pain" in found
    assert 0 < knowledge.conditions._cache.bytes <= 128 * 1024


def test_therapy_step_cache_stays_within_its_byte_budget() -> None:
    """Distinct long procedure names leave the therapy-step cache under its byte budget, a long
    name is still matched on its first characters, and a cached answer (a step or none) is
    the one computed."""
    knowledge = Knowledge.load()
    knowledge.therapies.bound_memory(512, 128 * 1024)
    for i in range(1500):
        concept = {"text": f"physical therapy {i} " + "z" * 100_000}
        assert knowledge.therapies.step(concept) == "exercise-physical-therapy"
        assert knowledge.therapies.step(concept) == "exercise-physical-therapy"
    assert 0 < knowledge.therapies._cache.bytes <= 128 * 1024
    for _ in range(2):
        assert knowledge.therapies.step({"text": "Pelvic floor physical therapy"}) is None
        assert knowledge.therapies.step({"text": "Plain radiography"}) is None


def test_bounded_cache_drops_least_recently_used_and_refuses_oversized_values() -> None:
    """The byte-budgeted cache evicts the least recently used entry and never stores an entry
    larger than its whole budget."""
    cache: BoundedCache[str, str] = BoundedCache(1500)
    cache.put("a", "x" * 500)
    cache.put("b", "x" * 500)
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", "x" * 500)
    assert cache.get("b") is None and cache.get("a") is not None
    cache.put("huge", "x" * 5000)
    assert cache.get("huge") is None


def test_clip_concept_keeps_only_what_matchers_read() -> None:
    """A concept is cut to its text and the first 20 codings, each string clipped."""
    concept = {
        "text": "t" * 1000,
        "extension": [{"url": "u" * 10_000}],
        "coding": [{"system": "s", "code": "c" * 900, "display": "d" * 900, "userSelected": True}]
        * 50,
    }
    clipped = clip_concept(concept, 100)
    assert clipped["text"] == "t" * 100
    assert len(clipped["coding"]) == 20
    assert clipped["coding"][0] == {"system": "s", "code": "c" * 100, "display": "d" * 100}
    assert "extension" not in clipped


def test_calls_with_distinct_4_mb_drug_names_leave_the_worker_flat() -> None:
    """Hook calls whose drug names are distinct 4 MB texts leave a real `cds-service serve`
    worker flat: once the allocator has settled (10 such calls, which raise its high-water
    mark by 5-25 MiB depending on which threads served them), 25 more grow it by under
    20 MiB. Keeping those names (a cache holding texts rather than digests and clipped
    names) would grow it by 100 MiB."""
    body = sandbox("order-sign-oxycodone.json")
    body.pop("fhirServer")
    body["prefetch"] = full_prefetch(conditions=body["prefetch"]["conditions"])
    order = body["context"]["draftOrders"]["entry"][0]["resource"]
    with ServedService(workers=1, threads=4) as service:
        (worker,) = service.worker_pids()
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)

        def post(n: int | None = None) -> int:
            if n is not None:
                order["medicationCodeableConcept"] = {
                    "text": f"oxycodone {n} MG " + chr(65 + n % 26) * (4 * MIB)
                }
            conn.request(
                "POST",
                "/cds-services/opioid-lbp-order-sign",
                body=json.dumps(body),
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            return response.status

        for _ in range(20):
            assert post() == 200  # warm-up with the usual name
        for n in range(1, 11):
            assert post(n) == 200  # the allocator reaches its high-water mark
        start = rss_bytes(worker)
        for n in range(11, 36):
            assert post(n) == 200
        grown = rss_bytes(worker) - start
        conn.close()
    assert grown < 20 * MIB


def test_limits_are_read_from_the_environment_and_checked() -> None:
    """The new limits come from CDS_* variables, and a non-positive deadline is refused."""
    config = from_env(
        {
            "CDS_FHIR_SERVER_MAX_CALLS": "5",
            "CDS_ADMISSION_WAIT": "0.1",
            "CDS_CACHE_MAX_BYTES": "1000",
            "CDS_FHIR_BREAKER_FAILURES": "0",
        }
    )
    assert (
        config.fhir_server_max_calls,
        config.admission_wait,
        config.cache_max_bytes,
        config.fhir_breaker_failures,
    ) == (5, 0.1, 1000, 0)
    with pytest.raises(ConfigError, match="CDS_FHIR_DEADLINE"):
        from_env({"CDS_FHIR_DEADLINE": "0"})


def test_served_worker_collects_the_young_generation_after_a_call_past_the_bound() -> None:
    """A served worker's young generation collects on its own only past GC_WORKER_YOUNG, and
    after each answer it is collected when it holds more than GC_THRESHOLDS[0] containers
    (and left alone below that), so cyclic garbage is freed as often as before."""
    saved = gc.get_threshold()
    try:
        _gc_worker_init(None)
        assert gc.get_threshold() == (GC_WORKER_YOUNG, *GC_THRESHOLDS[1:])
        gc.collect()
        few: list[list[int]] = [[] for _ in range(100)]
        below = gc.get_count()[0]
        _gc_after_request(None, None, None, None)
        assert gc.get_count()[0] >= below  # below the bound: not collected
        many: list[list[int]] = [[] for _ in range(GC_THRESHOLDS[0] + 1_000)]
        assert gc.get_count()[0] > GC_THRESHOLDS[0]  # no collection on its own at 50,000
        _gc_after_request(None, None, None, None)
        assert gc.get_count()[0] < 100
        assert len(few) + len(many) > GC_THRESHOLDS[0]
    finally:
        gc.set_threshold(*saved)


def test_served_worker_collects_the_older_generations_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cycle that was alive at a collection after a call (moved to an older generation) is
    freed by later calls' collections: the middle and old generations are collected as
    CPython would, every few young collections (thresholds made small for the test)."""
    import weakref

    from cds_service.cli import serve

    monkeypatch.setattr(serve, "_YOUNG_AFTER_CALL", 100)
    monkeypatch.setattr(serve, "_OLDER", (2, 2))

    class Node:
        other: Any = None

    was_enabled = gc.isenabled()
    gc.disable()  # only the after-call collections run
    try:
        gc.collect()
        cycle = Node()
        cycle.other = Node()
        cycle.other.other = cycle
        alive = weakref.ref(cycle)
        live: list[list[int]] = [[] for _ in range(200)]
        _gc_after_request(None, None, None, None)  # the cycle is alive: it is moved on
        del cycle, live
        for _ in range(20):
            if alive() is None:
                break
            live = [[] for _ in range(200)]
            _gc_after_request(None, None, None, None)
            del live
        assert alive() is None
    finally:
        if was_enabled:
            gc.enable()
