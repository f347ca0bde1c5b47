"""Card and suggestion ids (ids.py): version-4 uuid text as the uuid module writes it, never
repeated within a process, and a forked worker never hands out its parent's random bytes."""

from __future__ import annotations

import os
import uuid

from cds_service.ids import random_bytes, random_uuid, uuid_text


def test_random_uuids_are_version_4_text_and_distinct() -> None:
    """Each id parses as a version-4, RFC 4122 uuid and prints back as itself; 5,000 differ."""
    made = [random_uuid() for _ in range(5000)]
    for text in made[:200]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
    assert len(set(made)) == len(made)


def test_uuid_text_is_the_uuid_modules_text() -> None:
    """16 bytes print as str(uuid.UUID(bytes=...)) prints them."""
    for _ in range(100):
        raw = os.urandom(16)
        assert uuid_text(raw) == str(uuid.UUID(bytes=raw))


def test_a_forked_child_does_not_repeat_its_parents_bytes() -> None:
    """After a fork the child reads fresh random bytes, not the rest of the parent's chunk."""
    random_bytes(16)  # the parent now holds a chunk with bytes left in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next bytes and leave at once
        os.write(write, random_bytes(32))
        os._exit(0)
    os.close(write)
    child = os.read(read, 32)
    os.close(read)
    os.waitpid(pid, 0)
    assert child != random_bytes(32)  # the parent's next bytes, from the same chunk
