"""Feedback (CDS Hooks 2.0 `/cds-services/{id}/feedback`): parsed and checked here, stored in
the shared store (cds_service.store).

Every item is checked before anything is stored, and a bad item refuses the whole POST (400
naming the field): the card must be one this service issued for this service id (its uuid
carries a keyed tag, see CardIds, so no lookup is needed and a card logged by another worker
or replica a moment ago is recognised too); the outcome is accepted or overridden;
`outcomeTimestamp` is an RFC 3339 date-time; `accepted` names at least one suggestion of that
card; an override reason is a code from the card's own catalogue (cards/<rule>.json). What is
stored is only what the service issued or catalogues: the card uuid, its rule, the outcome,
suggestion uuids, the reason code and the timestamp re-written in UTC; never client text
(userComment, displays, unknown fields).

Clients may batch and may resend; an item is identified by the whole answer (card, outcome,
timestamp, reason, suggestions), so a resent item is stored once whichever worker or replica
receives it, and a later different answer to the same card is stored as a new answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cds_service.errors import CdsError
from cds_service.ids import random_bytes, uuid_text

OUTCOMES = frozenset({"accepted", "overridden"})
MAX_SUGGESTIONS = 32  # suggestion uuids recognised per card (cards offer a handful)
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_CANONICAL_UUID = re.compile(
    r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
)


class CardIds:
    """Card and suggestion uuids the service recognises later without a lookup.

    A card uuid is a version-4 uuid whose first 8 bytes are random and whose last 8 carry
    HMAC-SHA256(key, service id, rule id, random part); a suggestion uuid is the HMAC of its
    card's uuid and its position. The key is derived from the pseudonym key, so every worker
    and replica sharing the store recognises the others' cards, and nobody without the key
    can make up a card id this service would accept.

    `key` may be several keys, newest first (a rotated pseudonym key ring): cards are issued
    under the first; cards issued under the others are still recognised, with their own
    suggestion uuids, so feedback on cards shown before a rotation is not refused.
    """

    def __init__(self, key: bytes | Sequence[bytes], rule_ids: Iterable[str]) -> None:
        keys = (key,) if isinstance(key, bytes) else tuple(key)
        self._keys = tuple(
            hmac.new(k, b"opioid-lbp-cds card ids v1", hashlib.sha256).digest() for k in keys
        )
        self._key = self._keys[0]
        self._rules = tuple(dict.fromkeys(rule_ids))
        # each key's HMAC state computed once, copied per message (7 -> 1.4 us per HMAC)
        self._states = {k: hmac.new(k, digestmod=hashlib.sha256) for k in self._keys}

    def _mac(self, key: bytes | None, message: bytes) -> bytes:
        state = self._states.get(key or self._key)
        if state is None:
            return hmac.new(key or self._key, message, hashlib.sha256).digest()
        state = state.copy()
        state.update(message)
        return state.digest()

    def _tag(self, service_id: str, rule_id: str, nonce: bytes, key: bytes | None = None) -> bytes:
        message = b"card\x1f" + service_id.encode() + b"\x1f" + rule_id.encode() + b"\x1f" + nonce
        tag = bytearray(self._mac(key, message)[:8])
        tag[0] = (tag[0] & 0x3F) | 0x80  # the uuid variant bits
        return bytes(tag)

    def card_uuid(self, service_id: str, rule_id: str) -> str:
        nonce = bytearray(random_bytes(8))  # os.urandom, read a chunk at a time (ids.py)
        nonce[6] = (nonce[6] & 0x0F) | 0x40  # version 4
        return uuid_text(bytes(nonce) + self._tag(service_id, rule_id, bytes(nonce)))

    def suggestion_uuid(self, card_uuid: str, index: int, key: bytes | None = None) -> str:
        message = f"suggestion\x1f{card_uuid}\x1f{index}".encode()
        raw = bytearray(self._mac(key, message)[:16])
        raw[6] = (raw[6] & 0x0F) | 0x40
        raw[8] = (raw[8] & 0x3F) | 0x80
        return uuid_text(bytes(raw))

    def rule_of(self, service_id: str, card_uuid: str) -> str | None:
        """The rule whose card this is, if this service issued it for `service_id`."""
        found = self._issued(service_id, card_uuid)
        return found[0] if found else None

    def _issued(self, service_id: str, card_uuid: str) -> tuple[str, bytes] | None:
        """(rule, key) of a card this service issued for `service_id` under any ring key."""
        if not _CANONICAL_UUID.match(card_uuid):
            return None
        raw = uuid.UUID(card_uuid).bytes
        nonce, tag = raw[:8], raw[8:]
        for key in self._keys:
            for rule_id in self._rules:
                if hmac.compare_digest(tag, self._tag(service_id, rule_id, nonce, key)):
                    return rule_id, key
        return None

    def suggestion_ids(self, card_uuid: str, service_id: str = "") -> dict[str, int]:
        """The suggestion uuids of a card, under the key it was issued with (the current
        key when `service_id` is not given or the card is not recognised)."""
        key = self._key
        if service_id and len(self._keys) > 1:
            found = self._issued(service_id, card_uuid)
            key = found[1] if found else key
        return {self.suggestion_uuid(card_uuid, i, key): i for i in range(MAX_SUGGESTIONS)}

    def stamp(self, service_id: str, cards: Iterable[Any]) -> dict[str, str]:
        """Give each rendered card (and its suggestions) its recognisable uuids, in place;
        returns old card uuid -> new, for whatever was keyed by the rendered uuid."""
        renamed: dict[str, str] = {}
        for card in cards:
            if not isinstance(card, dict):
                continue
            source = card.get("source")
            topic = source.get("topic") if isinstance(source, dict) else None
            rule_id = topic.get("code") if isinstance(topic, dict) else None
            if not isinstance(rule_id, str) or rule_id not in self._rules:
                continue
            new = self.card_uuid(service_id, rule_id)
            renamed[str(card.get("uuid"))] = new
            card["uuid"] = new
            for index, suggestion in enumerate(card.get("suggestions") or ()):
                if isinstance(suggestion, dict) and index < MAX_SUGGESTIONS:
                    suggestion["uuid"] = self.suggestion_uuid(card["uuid"], index)
        return renamed


class FeedbackTooLarge(CdsError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"At most {limit} feedback items per request; send them in parts")


def _bad(message: str, expression: str) -> CdsError:
    return CdsError(400, message, [expression])


def rfc3339(value: Any) -> str | None:
    """An RFC 3339 date-time re-written in UTC (`2026-12-07T10:00:00.5Z`), None if invalid."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    match = _RFC3339.match(value)
    if match is None:
        return None
    fraction = (match.group(7) or "")[:7]  # microseconds at most
    zone = match.group(8).upper()
    text = f"{value[:10]}T{value[11:19]}{fraction}{'+00:00' if zone == 'Z' else zone}"
    try:
        moment = dt.datetime.fromisoformat(text)
        utc = moment.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None
    stamp = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        stamp += f".{utc.microsecond:06d}".rstrip("0")
    return stamp + "Z"


def parse_feedback(
    body: Any,
    service_id: str,
    ids: CardIds,
    reason_codes: Mapping[str, frozenset[str]],
    reason_system: str,
    max_items: int,
) -> list[dict[str, Any]]:
    """The checked items (see the module docstring), or a CdsError (413 / 400)."""
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list):
        raise _bad("The body must be an object with a feedback array", "feedback")
    if len(body["feedback"]) > max_items:
        raise FeedbackTooLarge(max_items)
    items: list[dict[str, Any]] = []
    for index, item in enumerate(body["feedback"]):
        path = f"feedback[{index}]"
        if not isinstance(item, dict):
            raise _bad(f"{path} must be an object", path)
        card = item.get("card")
        rule = ids.rule_of(service_id, card) if isinstance(card, str) else None
        if not isinstance(card, str) or rule is None:
            raise _bad(
                f"{path}.card must be the uuid of a card this service ({service_id}) returned",
                f"{path}.card",
            )
        outcome = item.get("outcome")
        if not isinstance(outcome, str) or outcome not in OUTCOMES:  # a list is unhashable
            raise _bad(f"{path}.outcome must be accepted or overridden", f"{path}.outcome")
        timestamp = rfc3339(item.get("outcomeTimestamp"))
        if timestamp is None:
            raise _bad(
                f"{path}.outcomeTimestamp must be an RFC 3339 date-time with a time zone",
                f"{path}.outcomeTimestamp",
            )
        accepted = _accepted(item, path, outcome, ids, card, service_id)
        code = _reason(item, path, outcome, reason_codes.get(rule, frozenset()), reason_system)
        items.append(
            {
                "card": card,
                "rule": rule,
                "outcome": outcome,
                "acceptedSuggestions": accepted,
                "overrideReason": code,
                "outcomeTimestamp": timestamp,
            }
        )
    return items


def _accepted(
    item: dict[str, Any], path: str, outcome: str, ids: CardIds, card: str, service_id: str
) -> list[str]:
    field = f"{path}.acceptedSuggestions"
    raw = item.get("acceptedSuggestions")
    if outcome == "overridden":
        if raw not in (None, []):
            raise _bad(f"{field} is only for an accepted card", field)
        return []
    if not isinstance(raw, list) or not raw:
        raise _bad(f"{field}: an accepted card names the suggestions accepted", field)
    known = ids.suggestion_ids(card, service_id)
    chosen: dict[str, int] = {}
    for position, suggestion in enumerate(raw):
        sid = suggestion.get("id") if isinstance(suggestion, dict) else None
        if not isinstance(sid, str) or sid not in known:
            raise _bad(
                f"{field}[{position}].id must be the uuid of a suggestion of that card",
                f"{field}[{position}].id",
            )
        chosen[sid] = known[sid]
    return sorted(chosen, key=chosen.__getitem__)


def _reason(
    item: dict[str, Any],
    path: str,
    outcome: str,
    codes: frozenset[str],
    system: str,
) -> str:
    field = f"{path}.overrideReason"
    reason = item.get("overrideReason")
    if reason is None:
        return ""
    if outcome != "overridden":
        raise _bad(f"{field} is only for an overridden card", field)
    coding = reason.get("reason") if isinstance(reason, dict) else None
    if not isinstance(coding, dict):
        raise _bad(f"{field}.reason must be a Coding from the card's overrideReasons", field)
    code = coding.get("code")
    if not isinstance(code, str) or code not in codes:
        raise _bad(
            f"{field}.reason.code must be one of the card's override reasons",
            f"{field}.reason.code",
        )
    if coding.get("system", system) != system:
        raise _bad(f"{field}.reason.system must be {system}", f"{field}.reason.system")
    return code
