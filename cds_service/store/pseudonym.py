"""The pseudonymous patient key: HMAC-SHA256 of (fhirServer, patient id) with a secret key.

The same patient on the same FHIR server always gets the same key, so alert and override
rates can be counted per patient, but the key cannot be turned back into an id without the
secret. The secret comes from CDS_PSEUDONYM_KEY or CDS_PSEUDONYM_KEY_FILE; the embedded
default generates one into the data directory, readable by its owner only.

Key rotation (docs/hardening.md "Key rotation"): the secret is a key ring, oldest key first.
A pseudonym under the ring k0..kn is the HMAC under k0 (as before rotation existed), re-keyed
by each later key: R_i(v) = HMAC-SHA256(k_i, "rekey" | v). A stored pseudonym made under an
older ring can therefore be brought to the current ring from the stored value alone (no
patient id needed): `cds-service db rotate-key` does that, row by row, using the key id each
row was written with. Linking an id to a stored pseudonym needs every key of the ring.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("cds_service.store")

KEY_FILE_NAME = "pseudonym.key"
MIN_KEY_BYTES = 16
# Keys that were published as examples (an old docker-compose.yml default): refused at start.
WELL_KNOWN_KEYS = frozenset({b"local-demo-pseudonym-key-not-for-production"})


def key_id(key: bytes) -> str:
    """A short public name of a key (it reveals nothing usable about the key)."""
    return hashlib.sha256(b"cds-pseudonym-key-id\x1f" + key).hexdigest()[:16]


def rekey(key: bytes, value: str) -> str:
    """One rotation step of a stored pseudonym (hex) to the next key of the ring."""
    return hmac.new(key, b"rekey\x1f" + value.encode(), hashlib.sha256).hexdigest()


class Pseudonymizer:
    """Keyed pseudonyms under a key ring (oldest first; a single key is a ring of one)."""

    def __init__(self, key: bytes | Sequence[bytes]) -> None:
        ring = (key,) if isinstance(key, bytes) else tuple(key)
        if not ring:
            raise ValueError("the pseudonym key ring is empty")
        for each in ring:
            if len(each) < MIN_KEY_BYTES:
                raise ValueError(f"the pseudonym key must be at least {MIN_KEY_BYTES} bytes")
        if len(set(ring)) != len(ring):
            raise ValueError("the pseudonym key ring holds the same key twice")
        self._ring = ring
        self._key = ring[0]  # the first HMAC; later keys re-key its result
        self._later = ring[1:]
        # each key's HMAC state computed once, copied per message (7 -> 1.4 us per HMAC)
        self._first = hmac.new(self._key, digestmod=hashlib.sha256)
        self._later_states = tuple(hmac.new(k, digestmod=hashlib.sha256) for k in self._later)
        self.key_ids = tuple(key_id(k) for k in ring)  # the ring's ids, oldest first
        self.key_id = self.key_ids[-1]  # stored with each pseudonym written now

    def derived_key(self, purpose: bytes) -> bytes:
        """A key for another purpose (e.g. card ids) from the newest key, independent of the
        patient keys."""
        return self.derived_keys(purpose)[0]

    def derived_keys(self, purpose: bytes) -> tuple[bytes, ...]:
        """The purpose's key from every key of the ring, newest first (the first one issues;
        all of them still verify what was issued before a rotation)."""
        return tuple(
            hmac.new(k, b"derive\x1f" + purpose, hashlib.sha256).digest()
            for k in reversed(self._ring)
        )

    def finish(self, value: str) -> str:
        """A pseudonym made with the ring's first key, re-keyed through the later ones."""
        for later in self._later_states:
            state = later.copy()
            state.update(b"rekey\x1f" + value.encode())
            value = state.hexdigest()  # rekey(later key, value)
        return value

    def _mac(self, message: bytes) -> str:
        """HMAC-SHA256 of `message` under the ring's first key, hex."""
        state = self._first.copy()
        state.update(message)
        return state.hexdigest()

    def rekey_from(self, stored_key_id: str | None, value: str) -> str | None:
        """`value`, stored under the ring state `stored_key_id` (None: before key ids, the
        first key), brought to the current key; None when that key id is not in the ring."""
        index = 0 if stored_key_id is None else _index(self.key_ids, stored_key_id)
        if index is None:
            return None
        for later in self._ring[index + 1 :]:
            value = rekey(later, value)
        return value

    def patient_key(self, fhir_server: str, patient_id: str) -> str:
        # surrogatepass: an id with a lone surrogate (no UTF-8 form) still gets its own key
        message = f"{fhir_server.rstrip('/')}\x1f{patient_id}".encode("utf-8", "surrogatepass")
        return self.finish(self._mac(message))

    def base_patient_key(self, fhir_server: str, patient_id: str) -> str:
        """The patient key under the ring's first key only (an input to other digests,
        which are then finished themselves)."""
        message = f"{fhir_server.rstrip('/')}\x1f{patient_id}".encode("utf-8", "surrogatepass")
        return self._mac(message)

    def key(self, domain: str, fhir_server: str, *parts: str) -> str:
        """A keyed pseudonym of something else than a patient (a prescriber, an encounter,
        a draft order, an ordering decision): the domain keeps the kinds apart."""
        message = "\x1f".join((domain, fhir_server.rstrip("/"), *parts)).encode()
        return self.finish(self._mac(message))

    def prescriber_key(self, fhir_server: str, user_id: str) -> str | None:
        """The pseudonymous prescriber (context.userId, keyed like patients); None without."""
        return self.key("prescriber", fhir_server, user_id) if user_id else None


def _index(ids: Sequence[str], wanted: str) -> int | None:
    try:
        return ids.index(wanted)
    except ValueError:
        return None


def read_key_file(path: Path) -> bytes:
    """The current (last) key of a key file."""
    return read_key_ring(path)[-1]


def read_key_ring(path: Path) -> tuple[bytes, ...]:
    """A key file's keys, one a line, oldest first (blank lines and `#` comments ignored);
    a file of one line is a ring of one key, as before rotation existed."""
    data = path.read_bytes()
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("pseudonym-key-file-readable-by-others", extra={"reason": oct(mode & 0o777)})
    keys = tuple(
        line.strip()
        for line in data.splitlines()
        if line.strip() and not line.strip().startswith(b"#")
    )
    return keys or (b"",)


def append_key(path: Path, key: bytes) -> None:
    """Add `key` as the ring's newest key, atomically (a complete new file renamed over the
    old one, mode 0600)."""
    old = path.read_bytes()
    if old and not old.endswith(b"\n"):
        old += b"\n"
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(old + key.strip() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def generated_key(directory: Path) -> bytes:
    """The current key of the generated key file (see generated_ring)."""
    return generated_ring(directory)[-1]


def generated_ring(directory: Path) -> tuple[bytes, ...]:
    """The key in `directory`, created with mode 0600 on first use. Safe when several
    processes start at once: the file appears complete (link of a finished temp file) or not
    at all, and whoever loses the race reads the winner's key."""
    path = directory / KEY_FILE_NAME
    if path.exists():
        return read_key_ring(path)
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
    return read_key_ring(path)
