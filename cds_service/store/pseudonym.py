"""The pseudonymous patient key: HMAC-SHA256 of (fhirServer, patient id) with a secret key.

The same patient on the same FHIR server always gets the same key, so alert and override
rates can be counted per patient, but the key cannot be turned back into an id without the
secret. The secret comes from CDS_PSEUDONYM_KEY or CDS_PSEUDONYM_KEY_FILE; the embedded
default generates one into the data directory, readable by its owner only.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger("cds_service.store")

KEY_FILE_NAME = "pseudonym.key"
MIN_KEY_BYTES = 16
# Keys that were published as examples (an old docker-compose.yml default): refused at start.
WELL_KNOWN_KEYS = frozenset({b"local-demo-pseudonym-key-not-for-production"})


class Pseudonymizer:
    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the pseudonym key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def derived_key(self, purpose: bytes) -> bytes:
        """A key for another purpose (e.g. card ids), independent of the patient keys."""
        return hmac.new(self._key, b"derive\x1f" + purpose, hashlib.sha256).digest()

    def patient_key(self, fhir_server: str, patient_id: str) -> str:
        # surrogatepass: an id with a lone surrogate (no UTF-8 form) still gets its own key
        message = f"{fhir_server.rstrip('/')}\x1f{patient_id}".encode("utf-8", "surrogatepass")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def key(self, domain: str, fhir_server: str, *parts: str) -> str:
        """A keyed pseudonym of something else than a patient (a prescriber, an encounter,
        a draft order, an ordering decision): the domain keeps the kinds apart."""
        message = "\x1f".join((domain, fhir_server.rstrip("/"), *parts)).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def prescriber_key(self, fhir_server: str, user_id: str) -> str | None:
        """The pseudonymous prescriber (context.userId, keyed like patients); None without."""
        return self.key("prescriber", fhir_server, user_id) if user_id else None


def read_key_file(path: Path) -> bytes:
    key = path.read_bytes().strip()
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("pseudonym-key-file-readable-by-others", extra={"reason": oct(mode & 0o777)})
    return key


def generated_key(directory: Path) -> bytes:
    """The key in `directory`, created with mode 0600 on first use. Safe when several
    processes start at once: the file appears complete (link of a finished temp file) or not
    at all, and whoever loses the race reads the winner's key."""
    path = directory / KEY_FILE_NAME
    if path.exists():
        return read_key_file(path)
    temp = directory / f".{KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return read_key_file(path)
