"""HeldUnreader: the bytes of a request the front worker read whole are handed to gunicorn's
parser once, read back piece by piece in order, and the socket takes over where they end."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from gunicorn.config import Config  # type: ignore[import-untyped]
from gunicorn.http.parser import RequestParser  # type: ignore[import-untyped]

from cds_service.http.server import HeldUnreader

BODY = bytes(range(256)) * 4000  # 1 MB, not a multiple of the 64 KiB pieces


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(5)
    yield a, b
    a.close()
    b.close()


def _send_later(sock: socket.socket, data: bytes) -> threading.Thread:
    sender = threading.Thread(target=sock.sendall, args=(data,))
    sender.start()
    return sender


def test_held_bytes_then_the_socket_in_order(pair: tuple[socket.socket, socket.socket]) -> None:
    """A body partly held and partly still on the socket reads back whole, in order, in
    64 KiB pieces, with nothing read past its end."""
    a, b = pair
    unreader = HeldUnreader(a)
    unreader.unread(BODY[:700_000])
    sender = _send_later(b, BODY[700_000:] + b"NEXT")
    got = b""
    while len(got) < len(BODY):
        left = len(BODY) - len(got)
        got += unreader.read(min(65536, left), read_ahead=left)
    sender.join()
    assert got == BODY
    assert unreader.read(4) == b"NEXT"


def test_unread_of_what_was_read_and_of_other_bytes(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Putting back what was just read gives it again; other bytes put back come first."""
    unreader = HeldUnreader(pair[0], b"abcdefgh")
    first = unreader.read(5)
    assert first == b"abcde"
    unreader.unread(first[2:])
    assert unreader.read(3) == b"cde"
    unreader.unread(b"XY")
    assert unreader.read(2) == b"XY"
    assert unreader.take_buffered() == b"fgh"
    assert unreader.take_buffered() == b""


def test_read_without_size_is_one_piece(pair: tuple[socket.socket, socket.socket]) -> None:
    """A read without a size returns at most one piece of the held bytes (a chunk, as a
    socket read would), and a zero-size read nothing."""
    unreader = HeldUnreader(pair[0], BODY)
    assert unreader.read(0) == b""
    assert unreader.read() == BODY[: HeldUnreader.piece]
    assert unreader.take_buffered() == BODY[HeldUnreader.piece :]


def test_take_buffered_keeps_gunicorns_buffer_behind(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Bytes gunicorn's own buffer holds (read ahead from the socket) come after the held
    ones when the worker takes what is buffered."""
    a, b = pair
    unreader = HeldUnreader(a)
    b.sendall(b"0123456789")
    assert unreader.read(4, read_ahead=10) == b"0123"  # 4567... stay in gunicorn's buffer
    unreader.unread(b"held")
    assert unreader.take_buffered() == b"held456789"


def test_gunicorn_parses_requests_from_held_bytes(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """gunicorn's parser reads a held request (head and a 1 MB body) and then the next
    request from the socket on the same connection."""
    a, b = pair
    parser = RequestParser(Config(), a, ("127.0.0.1", 1))
    head = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    parser.unreader = HeldUnreader(a, head + BODY)
    request = next(parser)
    assert request.path == "/x"
    assert request.body.read() == BODY
    b.sendall(b"GET /y HTTP/1.1\r\nHost: h\r\n\r\n")
    assert next(parser).path == "/y"


def test_spill_hands_held_bytes_to_gunicorns_buffer(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """After an answer, the bytes still held (a pipelined request) move to gunicorn's own
    buffer, where gthread looks for a request that is already read."""
    unreader = HeldUnreader(pair[0], b"first|GET /next")
    assert unreader.read(6) == b"first|"
    unreader.spill()
    assert unreader.buf.getvalue() == b"GET /next"
    assert unreader.read(4) == b"GET "
    assert unreader.take_buffered() == b"/next"
