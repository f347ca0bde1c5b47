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
            if isinstance(c, dict) else c
            for c in coding[:MAX_CODINGS]
        ]
    elif coding is not None:
        out["coding"] = ({k: clip(coding[k]) for k in ("system", "code", "display")
                          if k in coding} if isinstance(coding, dict) else coding)
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
        return size + sum(approx_bytes(k, _depth + 1) + approx_bytes(v, _depth + 1)
                          for k, v in value.items())
    if isinstance(value, (tuple, list, set, frozenset)):
        return size + sum(approx_bytes(v, _depth + 1) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return size + sum(approx_bytes(getattr(value, f.name), _depth + 1)
                          for f in dataclasses.fields(value))
    return size


class BoundedCache(Generic[K, V]):
    """A thread-safe LRU cache holding at most `max_bytes` (estimated: key plus value)."""

    def __init__(self, max_bytes: int) -> None:
        self._cache: LRUCache[K, tuple[V, int]] = LRUCache(
            maxsize=max(1, max_bytes), getsizeof=lambda item: item[1])
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

    @property
    def bytes(self) -> int:
        with self._lock:
            return int(self._cache.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
