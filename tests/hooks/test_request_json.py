"""A request body read as JSON: orjson where it accepts the bytes, and always the value the
standard library alone would give."""

from __future__ import annotations

import json

import pytest

from cds_service.errors import CdsError
from cds_service.hooks.request import read_json_bytes


@pytest.mark.parametrize(
    "raw",
    [
        b'{"value": 18446744073709551615}',
        b'{"value": 18446744073709551616}',
        b'{"value": -9223372036854775808}',
        b'{"value": -9223372036854775809}',
        b'{"value": -9999999999999999999}',
        b'{"value": 123456789012345678901234567890}',
        b'{"value": [1, 2.5, -3, "1234567890123456789012"]}',
    ],
)
def test_integers_of_any_size_read_as_the_standard_library_reads_them(raw: bytes) -> None:
    """An integer too large for 64 bits is an exact int, as json.loads gives it, not a float."""
    body = read_json_bytes(raw)
    assert body == json.loads(raw)
    assert type(body["value"]) is type(json.loads(raw)["value"])


def test_byte_order_mark_is_read_and_nan_refused() -> None:
    """A UTF-8 byte order mark is skipped; NaN (not JSON) is a 400."""
    assert read_json_bytes(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    with pytest.raises(CdsError) as refused:
        read_json_bytes(b'{"a": NaN}')
    assert refused.value.status == 400


def test_lone_surrogate_escape_becomes_a_replacement_character() -> None:
    """A lone surrogate escape is read as U+FFFD; a paired one as its character."""
    assert read_json_bytes(b'{"a": "x\\ud800y", "b": "\\ud83d\\ude00"}') == {
        "a": "x\ufffdy",
        "b": "\U0001f600",
    }
