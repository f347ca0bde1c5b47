"""Feedback (CDS Hooks 2.0 `/cds-services/{id}/feedback`): parsed and checked here, stored in
the shared store (cds_service.store).

Clients may batch and may resend; an item is identified by (card uuid, outcome,
outcomeTimestamp), so a resent item is stored once, whichever worker or replica receives it.
"""

from __future__ import annotations

from typing import Any

from cds_service.errors import CdsError

OUTCOMES = frozenset({"accepted", "overridden"})


def _bad(message: str, expression: str) -> CdsError:
    return CdsError(400, message, [expression])


def parse_feedback(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list):
        raise _bad("The body must be an object with a feedback array", "feedback")
    items: list[dict[str, Any]] = []
    for index, item in enumerate(body["feedback"]):
        path = f"feedback[{index}]"
        if not isinstance(item, dict):
            raise _bad(f"{path} must be an object", path)
        card = item.get("card")
        if not isinstance(card, str) or not card.strip():
            raise _bad(f"{path}.card must be the card's uuid", f"{path}.card")
        outcome = item.get("outcome")
        if not isinstance(outcome, str) or outcome not in OUTCOMES:  # a list is unhashable
            raise _bad(f"{path}.outcome must be accepted or overridden", f"{path}.outcome")
        accepted = item.get("acceptedSuggestions", [])
        if not isinstance(accepted, list) or not all(
            isinstance(s, dict) and isinstance(s.get("id"), str) for s in accepted
        ):
            raise _bad(
                f"{path}.acceptedSuggestions must be objects with an id",
                f"{path}.acceptedSuggestions",
            )
        reason = item.get("overrideReason")
        code = ""
        if reason is not None:
            coding = reason.get("reason") if isinstance(reason, dict) else None
            if not isinstance(reason, dict) or (
                coding is not None and not isinstance(coding, dict)
            ):
                raise _bad(f"{path}.overrideReason must be an object", f"{path}.overrideReason")
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                code = coding["code"]
        timestamp = item.get("outcomeTimestamp")
        items.append(
            {
                "card": card.strip()[:128],
                "outcome": outcome,
                "acceptedSuggestions": [s["id"][:128] for s in accepted],
                "overrideReason": code[:128],
                "outcomeTimestamp": timestamp[:64] if isinstance(timestamp, str) else "",
            }
        )
    return items
