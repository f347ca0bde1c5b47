"""Checks of CDS Hooks 2.0 rules that a JSON Schema cannot state.

Used by the tests on every response body they see; each function returns a list of problems
(empty when the body complies).
"""

from __future__ import annotations

from typing import Any

SUMMARY_MAX = 139


def empty_values(node: Any, path: str = "$") -> list[str]:
    """Paths of null, empty-string, empty-array and empty-object values (the spec forbids them)."""
    problems: list[str] = []
    if node is None or node == "" or node == [] or node == {}:
        return [path]
    if isinstance(node, dict):
        for key, value in node.items():
            problems.extend(empty_values(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            problems.extend(empty_values(value, f"{path}[{index}]"))
    return problems


def card_problems(card: dict[str, Any], path: str = "card") -> list[str]:
    problems: list[str] = []
    summary = card.get("summary")
    if not isinstance(summary, str) or not summary or len(summary) > SUMMARY_MAX:
        problems.append(f"{path}.summary must be 1..{SUMMARY_MAX} characters")
    if not card.get("uuid"):
        problems.append(f"{path}.uuid missing (feedback and Dismiss need it)")
    suggestions = card.get("suggestions") or []
    behavior = card.get("selectionBehavior")
    if suggestions and behavior not in {"at-most-one", "any"}:
        problems.append(f"{path}.selectionBehavior required with suggestions")
    if behavior is not None and not suggestions:
        problems.append(f"{path}.selectionBehavior without suggestions")
    if behavior == "at-most-one" and sum(1 for s in suggestions if s.get("isRecommended")) > 1:
        problems.append(f"{path}: more than one isRecommended with at-most-one")
    for index, suggestion in enumerate(suggestions):
        if not suggestion.get("uuid"):
            problems.append(f"{path}.suggestions[{index}].uuid missing")
    for index, reason in enumerate(card.get("overrideReasons") or []):
        if not reason.get("display"):
            problems.append(f"{path}.overrideReasons[{index}].display missing")
    for index, link in enumerate(card.get("links") or []):
        if "appContext" in link and link.get("type") != "smart":
            problems.append(f"{path}.links[{index}].appContext only allowed on smart links")
    topic = (card.get("source") or {}).get("topic")
    if topic is not None and not topic.get("code"):
        problems.append(f"{path}.source.topic.code missing")
    return problems


def response_problems(body: Any) -> list[str]:
    if not isinstance(body, dict) or not isinstance(body.get("cards"), list):
        return ["response must be an object with a cards array"]
    problems = [p for p in empty_values(body) if p != "$.cards"]
    uuids: set[str] = set()
    for index, card in enumerate(body["cards"]):
        problems.extend(card_problems(card, f"cards[{index}]"))
        for uid in [card.get("uuid")] + [s.get("uuid") for s in card.get("suggestions") or []]:
            if uid in uuids:
                problems.append(f"cards[{index}]: uuid {uid} repeated")
            uuids.add(uid)
    return problems


def discovery_problems(body: Any) -> list[str]:
    if not isinstance(body, dict) or not isinstance(body.get("services"), list):
        return ["discovery must be an object with a services array"]
    problems = empty_values(body)
    ids = [s.get("id") for s in body["services"]]
    if len(ids) != len(set(ids)):
        problems.append("service ids repeat")
    return problems
