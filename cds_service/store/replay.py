"""The JWT replay cache on the shared store (the ReplayCache interface of http/auth.py)."""

from __future__ import annotations

from cds_service.errors import ReplayCacheUnavailable
from cds_service.store.db import Store
from cds_service.store.errors import StoreUnavailable


class StoreReplayCache:
    def __init__(self, store: Store) -> None:
        self._store = store

    def check_and_store(self, issuer: str, jti: str, expires_at: float) -> bool:
        try:
            return self._store.claim_jti(issuer, jti, expires_at)
        except StoreUnavailable:
            raise ReplayCacheUnavailable("replay cache unavailable") from None
