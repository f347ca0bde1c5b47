"""Random ids for cards and suggestions: uuid text from os.urandom, read a chunk at a time per
thread (uuid.uuid4() makes one system call per uuid; a response has several). Imports nothing
of the service, like jsonfast.py: any layer may use it."""

from __future__ import annotations

import os
import threading

_random = threading.local()
RANDOM_CHUNK = 1024  # random bytes read per os.urandom call (64 uuids)


def _forget_random() -> None:
    _random.__dict__.clear()


os.register_at_fork(after_in_child=_forget_random)  # a worker never repeats its parent's


def random_bytes(count: int) -> bytes:
    """`count` bytes from os.urandom, read RANDOM_CHUNK at a time per thread: one system
    call serves the uuids of many cards and suggestions (uuid4() makes one per uuid). A
    forked process starts afresh, so no two workers hand out the same bytes."""
    state = _random.__dict__
    chunk: bytes | None = state.get("chunk")
    at: int = state.get("at", 0)
    if chunk is None or at + count > len(chunk):
        chunk, at = os.urandom(max(RANDOM_CHUNK, count)), 0
        state["chunk"] = chunk
    state["at"] = at + count
    return chunk[at : at + count]


def uuid_text(raw: bytes) -> str:
    """16 bytes as a uuid's canonical text (what str(uuid.UUID(bytes=raw)) gives)."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def random_uuid() -> str:
    """A random (version 4) uuid's text, as str(uuid.uuid4()) would give."""
    raw = random_bytes(16)
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[(raw[8] >> 4) & 3]}{h[17:20]}-{h[20:32]}"
