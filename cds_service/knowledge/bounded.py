"""Memory bounded in bytes: clipped names and byte-budgeted caches.

A drug or condition name longer than CDS_MAX_NAME_CHARS is clipped before matching (no real
name comes near it), so neither the matchers nor the caches ever hold request text of
unbounded size. Caches are keyed by a 16-byte digest of the clipped concept and hold at most
CDS_CACHE_MAX_BYTES (estimated) each, least recently used first out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import threading
from typing import Any, Generic, TypeVar

from cachetools import LRUCache

from cds_service.fhir.read import JSON, concept_key

K = TypeVar("K")
V = TypeVar("V")

MAX_CODINGS = 20  # codings of one concept looked at (real concepts carry 1-5)


def clip_concept(concept: JSON, limit: int) -> JSON:
    """The parts of a CodeableConcept the matchers read (text; system, code and display of
    the first MAX_CODINGS codings), each string clipped to `limit` characters."""

    def clip(value: Any) -> Any:
        return value[:limit] if isinstance(value, str) else value

    out: JSON = {}
    if "text" in concept:
        out["text"] = clip(concept["text"])
    coding = concept.get("coding")
    if isinstance(coding, list):
        out["coding"] = [
            {k: clip(c[k]) for k in ("system", "code", "display") if k in c}
            if isinstance(c, dict)
            else c
            for c in coding[:MAX_CODINGS]
        ]
    elif coding is not None:
        out["coding"] = (
            {k: clip(coding[k]) for k in ("system", "code", "display") if k in coding}
            if isinstance(coding, dict)
            else coding
        )
    return out


def concept_digest(clipped: JSON) -> bytes:
    """A 16-byte key for a clipped concept (the same strings give the same key)."""
    text = repr(concept_key(clipped))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def approx_bytes(value: Any, _depth: int = 0) -> int:
    """Rough deep size of cached values (strings, numbers, tuples, sets, dicts, dataclasses)."""
    size = sys.getsizeof(value)
    if _depth > 6:
        return size
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return size
    if isinstance(value, dict):
        return size + sum(
            approx_bytes(k, _depth + 1) + approx_bytes(v, _depth + 1) for k, v in value.items()
        )
    if isinstance(value, (tuple, list, set, frozenset)):
        return size + sum(approx_bytes(v, _depth + 1) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return size + sum(
            approx_bytes(getattr(value, f.name), _depth + 1) for f in dataclasses.fields(value)
        )
    return size


class BoundedCache(Generic[K, V]):
    """A thread-safe LRU cache holding at most `max_bytes` (estimated: key plus value)."""

    def __init__(self, max_bytes: int) -> None:
        self._cache: LRUCache[K, tuple[V, int]] = LRUCache(
            maxsize=max(1, max_bytes), getsizeof=lambda item: item[1]
        )
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._cache.get(key)
        return None if hit is None else hit[0]

    def put(self, key: K, value: V) -> None:
        size = approx_bytes(key) + approx_bytes(value) + 64  # + the cache's own bookkeeping
        if size > self._cache.maxsize:
            return
        with self._lock:
            self._cache[key] = (value, size)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    @property
    def bytes(self) -> int:
        with self._lock:
            return int(self._cache.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)


SMALL_CHARS = 256  # a concept whose strings add up to no more than this is "ordinary"
_SMALL_ENTRY_BYTES = 2048


def _chars(key: tuple[Any, ...]) -> int:
    total = 0
    for part in key:
        if isinstance(part, str):
            total += len(part)
        elif isinstance(part, tuple):
            for value in part:
                if isinstance(value, str):
                    total += len(value)
    return total


class ConceptCache(Generic[V]):
    """Results per CodeableConcept, bounded in bytes, fast for ordinary concepts.

    An ordinary concept (a few codings, short strings: every real drug or condition name) is
    looked up by its strings directly, as cheaply as a dict; its entries share half the byte
    budget and are dropped together when that half is full. Anything larger is clipped to
    `max_chars` per string and keyed by a 16-byte digest in a least-recently-used cache holding
    the other half, so no request text of unbounded size is ever kept."""

    def __init__(self, max_bytes: int, max_chars: int) -> None:
        self.max_chars = max_chars
        self._small: dict[tuple[Any, ...], tuple[V, int]] = {}
        self._small_bytes = 0
        self._small_budget = max(1, max_bytes // 2)
        self._big: BoundedCache[bytes, V] = BoundedCache(max(1, max_bytes - max_bytes // 2))
        self._lock = threading.Lock()

    def lookup(self, concept: JSON, compute: Any) -> V:
        key = concept_key(concept)
        hit = self._small.get(key)
        if hit is not None:
            return hit[0]
        chars = _chars(key) if len(key) <= MAX_CODINGS + 1 else SMALL_CHARS + 1
        if chars <= SMALL_CHARS:
            value: V = compute(concept)
            # an upper bound for an ordinary entry (its strings appear in the key and, at
            # most twice more, in the result; the rest of a result is a few small objects,
            # mostly shared with the code tables), cheaper than walking the result
            size = _SMALL_ENTRY_BYTES + 4 * chars
            with self._lock:
                if self._small_bytes + size > self._small_budget:
                    self._small = {}
                    self._small_bytes = 0
                self._small[key] = (value, size)
                self._small_bytes += size
            return value
        clipped = clip_concept(concept, self.max_chars)
        digest = concept_digest(clipped)
        cached = self._big.get(digest)
        if cached is None:
            cached = compute(clipped)
            self._big.put(digest, cached)
        return cached

    def clear(self) -> None:
        with self._lock:
            self._small = {}
            self._small_bytes = 0
        self._big.clear()

    @property
    def bytes(self) -> int:
        return self._small_bytes + self._big.bytes

    def __len__(self) -> int:
        return len(self._small) + len(self._big)
