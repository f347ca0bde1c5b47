"""Parsing a CDS Hooks 2.0 hook request into a HookRequest, with clear 400s for what cannot be used.

Strict where the service cannot work without a field (hook, hookInstance, context.patientId,
draftOrders on order hooks); lenient on the FHIR resources themselves, which are repaired
and read field by field later.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cds_service.errors import CdsError
from cds_service.fhir.read import JSON
from cds_service.hooks.services import Service
from cds_service.jsonfast import loads_fast

ORDER_HOOKS = frozenset({"order-select", "order-sign"})


@dataclass
class HookRequest:
    hook: str
    hook_instance: str
    patient_id: str
    user_id: str
    encounter_id: str
    fhir_server: str | None
    access_token: str | None
    prefetch: dict[str, Any]
    draft_orders: list[JSON]
    selections: frozenset[str] | None  # order-select only: "Type/id" of the focused orders
    anomalies: Counter[str] = field(default_factory=Counter)
    draft_full_urls: dict[int, str] = field(default_factory=dict)  # id(resource) -> fullUrl


def _bad(message: str, expression: str) -> CdsError:
    return CdsError(400, message, [expression])


def _not_json(_constant: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _without_lone_surrogates(node: Any) -> Any:
    """The same JSON with each lone surrogate (legal as a JSON escape, but not a character:
    it cannot be encoded, quoted into a URL or sent back) replaced by U+FFFD."""
    if isinstance(node, str):
        return _LONE_SURROGATE.sub("\ufffd", node)
    if isinstance(node, list):
        return [_without_lone_surrogates(v) for v in node]
    if isinstance(node, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in node.items()}
    return node


def read_json_bytes(raw: bytes) -> Any:
    """A request body as JSON, or a CdsError 400 saying why it cannot be read. NaN and
    Infinity (not JSON) are refused; lone surrogate escapes become U+FFFD (the walk that
    replaces them runs only when the body holds a surrogate escape at all). orjson parses
    what it accepts (nothing it accepts has a lone surrogate); the rest takes this path."""
    parsed, body = loads_fast(raw)
    if parsed:
        return body
    try:
        # Strict UTF-8 (RFC 8259): json.loads(bytes) would let encoded surrogates through.
        body = json.loads(raw.decode("utf-8-sig"), parse_constant=_not_json)
    except RecursionError:
        raise CdsError(400, "The request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError):
        raise CdsError(400, "The request body is not valid JSON") from None
    if _SURROGATE_ESCAPE.search(raw):
        try:
            body = _without_lone_surrogates(body)
        except RecursionError:
            raise CdsError(400, "The request body is nested too deeply") from None
    return body


def _string(container: JSON, key: str, path: str, required: bool) -> str:
    value = container.get(key)
    if value is None:
        if required:
            raise _bad(f"{path} is required", path)
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _bad(f"{path} must be a non-empty string", path)
    return value.strip()


def _draft_orders(
    context: JSON, max_entries: int, anomalies: Counter[str], full_urls: dict[int, str]
) -> list[JSON]:
    bundle = context.get("draftOrders")
    if bundle is None:
        raise _bad("context.draftOrders is required for this hook", "context.draftOrders")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise _bad("context.draftOrders must be a FHIR Bundle", "context.draftOrders")
    entries = bundle.get("entry", [])
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise _bad("context.draftOrders.entry must be an array", "context.draftOrders.entry")
    if len(entries) > max_entries:
        raise CdsError(
            413,
            f"context.draftOrders holds more than {max_entries} entries",
            ["context.draftOrders.entry"],
        )
    orders: list[JSON] = []
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            orders.append(resource)
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str) and full_url:
                full_urls[id(resource)] = full_url
        else:
            anomalies["draftOrders.entry:unreadable"] += 1
    return orders


def _selections(context: JSON, anomalies: Counter[str]) -> frozenset[str] | None:
    raw = context.get("selections")
    if raw is None:
        # Spec-required; without it every draft is treated as selected rather than refusing.
        anomalies["context.selections:missing"] += 1
        return None
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise _bad("context.selections must be an array of strings", "context.selections")
    return frozenset(s.strip() for s in raw)


def parse_hook_request(body: Any, service: Service, max_entries: int) -> HookRequest:
    if not isinstance(body, dict):
        raise CdsError(400, "The request body must be a JSON object (a CDS Hooks request)")
    anomalies: Counter[str] = Counter()
    hook = _string(body, "hook", "hook", required=True)
    if hook != service.hook:
        raise _bad(f"unexpected hook: this service answers '{service.hook}'", "hook")
    hook_instance = _string(body, "hookInstance", "hookInstance", required=True)
    context = body.get("context")
    if not isinstance(context, dict):
        raise _bad("context is required and must be an object", "context")
    patient_id = _string(context, "patientId", "context.patientId", required=True)
    user_id = _string(context, "userId", "context.userId", required=False)
    if not user_id:
        anomalies["context.userId:missing"] += 1
    encounter_id = _string(context, "encounterId", "context.encounterId", required=False)

    fhir_server = body.get("fhirServer")
    if fhir_server is not None and (not isinstance(fhir_server, str) or not fhir_server.strip()):
        raise _bad("fhirServer must be a URL string", "fhirServer")
    access_token = None
    auth = body.get("fhirAuthorization")
    if auth is not None:
        if not isinstance(auth, dict):
            raise _bad("fhirAuthorization must be an object", "fhirAuthorization")
        if fhir_server is None:
            raise _bad("fhirAuthorization requires fhirServer", "fhirServer")
        token = auth.get("access_token")
        if not isinstance(token, str) or not token:
            raise _bad(
                "fhirAuthorization.access_token is required", "fhirAuthorization.access_token"
            )
        token_type = auth.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise _bad(
                "fhirAuthorization.token_type must be Bearer", "fhirAuthorization.token_type"
            )
        access_token = token

    prefetch = body.get("prefetch")
    if prefetch is None:
        prefetch = {}
    if not isinstance(prefetch, dict):
        raise _bad("prefetch must be an object", "prefetch")

    draft_orders: list[JSON] = []
    selections: frozenset[str] | None = None
    full_urls: dict[int, str] = {}
    if hook in ORDER_HOOKS:
        draft_orders = _draft_orders(context, max_entries, anomalies, full_urls)
        if hook == "order-select":
            selections = _selections(context, anomalies)

    return HookRequest(
        hook=hook,
        hook_instance=hook_instance,
        patient_id=patient_id,
        user_id=user_id,
        encounter_id=encounter_id,
        fhir_server=fhir_server.strip().rstrip("/") if isinstance(fhir_server, str) else None,
        access_token=access_token,
        prefetch=prefetch,
        draft_orders=draft_orders,
        selections=selections,
        anomalies=anomalies,
        draft_full_urls=full_urls,
    )


def selected(request: HookRequest, resource: JSON) -> bool:
    """Whether a draft order is in focus: on order-select only the selected ones are."""
    if request.selections is None:
        return True
    rid = resource.get("id")
    rtype = resource.get("resourceType")
    if isinstance(rid, str) and f"{rtype}/{rid}" in request.selections:
        return True
    # a draft without an id can only be named by its entry's fullUrl (urn:uuid:...)
    full_url = request.draft_full_urls.get(id(resource))
    return full_url is not None and full_url in request.selections


__all__ = ["ORDER_HOOKS", "HookRequest", "parse_hook_request", "selected"]
