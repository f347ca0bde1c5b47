"""JSON on the request path: orjson where it accepts the input, the standard library wherever
it refuses, so every answer is the one the standard library alone would give.

Parsing: orjson reads the raw bytes; anything it refuses (a BOM, NaN or Infinity, a number
out of its range, invalid or surrogate-encoded UTF-8, nesting deeper than 1,024) is parsed
again by the caller's standard-library path, whose errors and repairs are the service's
documented behaviour. Serialising: orjson writes compact UTF-8 (as
`json.dumps(..., separators=(",", ":"), ensure_ascii=False)` would); a value it does not
serialise itself (a non-string key, an integer past 64 bits, a dataclass or date the
standard library would refuse) goes to the standard library.

It imports nothing of the service, so every layer may use it (logs, the lowest, included);
it is therefore outside the import-linter layer list.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the fallback keeps working
    orjson = None  # type: ignore[assignment]

_PASSTHROUGH = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    if orjson is not None
    else 0
)


class _Refused(TypeError):
    pass


def _refuse(_value: Any) -> Any:
    raise _Refused


_DIGITS = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))  # each digit -> "0"
# orjson reads an integer outside [-2**63, 2**64 - 1] as a float, the standard library as an
# int: such an integer has at least 19 digits (-9223372036854775809 has 19).
_LONG_NUMBER = b"0" * 19


def loads_fast(raw: bytes) -> tuple[bool, Any]:
    """(True, value) when orjson parsed `raw`; (False, None) when the caller must parse it
    with the standard library (which then accepts or refuses it exactly as before). A body
    with a run of 19 digits goes to the standard library too (the integers orjson would read
    as floats; _LONG_NUMBER). That check is one C pass over the bytes, about a sixth of
    orjson's own time on a large chart."""
    if orjson is None or _LONG_NUMBER in raw.translate(_DIGITS):
        return False, None
    try:
        return True, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, None


def dumps_bytes(value: Any) -> bytes:
    """Compact UTF-8 JSON, byte for byte what the standard library writes for this value."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=_refuse, option=_PASSTHROUGH)
        except (_Refused, TypeError):
            pass
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps_log(value: Any) -> str:
    """A log line's JSON: compact, non-JSON values written as their str()."""
    if orjson is not None:
        try:
            return orjson.dumps(
                value,
                default=str,
                option=orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME,
            ).decode()
        except TypeError:
            pass
    return json.dumps(value, separators=(",", ":"), default=str)


def dumps_sorted(value: Any) -> bytes:
    """JSON with sorted keys, for digests (orjson's key order or the standard library's:
    the same value always gives the same bytes)."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=_refuse, option=_PASSTHROUGH | orjson.OPT_SORT_KEYS)
        except (_Refused, TypeError):
            pass
    return json.dumps(value, sort_keys=True).encode()
