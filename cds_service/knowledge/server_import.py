"""`cds-service terminology import --from-server URL --valueset CANONICAL`: fetch a value set's
expansion from a FHIR R4 terminology service (Ontoserver, Snowstorm, HAPI, VSAC's FHIR API)
with `GET [base]/ValueSet/$expand?url=CANONICAL&offset=N&count=M`, page by page until
`expansion.total` codes are in hand, and install it like a file import (admin.import_dir):
validated, staged, all or nothing, read by the service at its next start. Provenance is kept in
the installed file: `meta.source` is the server and `_imported` says when, from where and in
how many pages. Run by an operator, never on the request path."""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from cds_service.knowledge.valuesets import ValueSetError, manifest

PAGE_SIZE = 1000
MAX_PAGES = 500  # 500,000 codes: far beyond any set this service uses
TIMEOUT_SECONDS = 60.0
_FHIR_JSON = "application/fhir+json"


def _outcome_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        issues = body.get("issue") or []
        texts = [
            str(i.get("diagnostics") or (i.get("details") or {}).get("text") or "")
            for i in issues
            if isinstance(i, dict)
        ]
        return "; ".join(t for t in texts if t)
    return ""


def _page(
    session: requests.Session, endpoint: str, canonical: str, offset: int, count: int
) -> dict[str, Any]:
    try:
        response = session.get(
            endpoint,
            params={"url": canonical, "offset": str(offset), "count": str(count)},
            headers={"Accept": _FHIR_JSON},
            timeout=TIMEOUT_SECONDS,
        )
    except requests.RequestException as exc:
        raise ValueSetError(f"{endpoint}: cannot be reached ({exc.__class__.__name__})") from None
    if response.status_code != 200:
        detail = _outcome_text(response)
        raise ValueSetError(
            f"{endpoint}: $expand answered HTTP {response.status_code}"
            + (f" ({detail})" if detail else "")
        )
    try:
        document = response.json()
    except ValueError:
        raise ValueSetError(f"{endpoint}: $expand did not answer JSON") from None
    if not isinstance(document, dict) or document.get("resourceType") != "ValueSet":
        raise ValueSetError(f"{endpoint}: $expand did not answer a ValueSet")
    expansion = document.get("expansion")
    if not isinstance(expansion, dict):
        raise ValueSetError(f"{endpoint}: the ValueSet has no expansion")
    return document


def _key(item: Any) -> tuple[str, str]:
    if not isinstance(item, dict):
        return ("", "")
    return (str(item.get("system", "")), str(item.get("code", "")))


def fetch_expansion(
    server: str,
    canonical: str,
    page_size: int | None = None,
    session: requests.Session | None = None,
) -> dict[str, Any]:
    """The whole expansion of `canonical` from the terminology server at `server`, every page
    joined, as one ValueSet with its provenance."""
    parts = urlsplit(server)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueSetError(f"{server}: give the server's FHIR base URL (http:// or https://)")
    known = {e["url"] for e in manifest()["sets"]}
    if canonical not in known:
        raise ValueSetError(
            f"{canonical} is not a value set this service uses (see `cds-service terminology list`)"
        )
    endpoint = server.rstrip("/") + "/ValueSet/$expand"
    page_size = page_size or PAGE_SIZE
    session = session or requests.Session()
    contains: list[Any] = []
    seen: set[tuple[str, str]] = set()
    first: dict[str, Any] | None = None
    total: int | None = None
    pages = 0
    while pages < MAX_PAGES:
        document = _page(session, endpoint, canonical, len(contains), page_size)
        pages += 1
        first = first or document
        expansion = document["expansion"]
        page_total = expansion.get("total")
        if isinstance(page_total, int) and not isinstance(page_total, bool):
            total = page_total
        items = expansion.get("contains") or []
        if not isinstance(items, list):
            raise ValueSetError(f"{endpoint}: expansion.contains is not a list")
        new = [i for i in items if _key(i) not in seen]
        seen.update(_key(i) for i in new)
        contains += new
        if total is None or len(contains) >= total:
            break
        if not new:
            raise ValueSetError(
                f"{endpoint}: the server stopped at {len(contains)} of {total} codes "
                "(does it support offset and count?)"
            )
    else:
        raise ValueSetError(f"{endpoint}: more than {MAX_PAGES} pages")
    if first is None:  # the loop runs at least once
        raise ValueSetError(f"{endpoint}: no answer")
    if first.get("url") not in (None, canonical):
        raise ValueSetError(f"{endpoint}: answered {first.get('url')}, not {canonical}")
    timestamp = first["expansion"].get("timestamp") or dt.datetime.now(dt.UTC).isoformat()
    out = {
        key: first[key]
        for key in ("resourceType", "id", "url", "version", "name", "title", "status", "date")
        if key in first
    }
    out["url"] = canonical
    out.setdefault("date", timestamp)
    out["meta"] = {"source": server}
    out["_imported"] = {
        "from": endpoint,
        "valueset": canonical,
        "on": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "pages": pages,
        "page_size": page_size,
        "by": "cds-service terminology import --from-server",
    }
    out["expansion"] = {
        "identifier": first["expansion"].get("identifier", ""),
        "timestamp": timestamp,
        "total": len(contains),
        "contains": contains,
    }
    return out


def import_from_server(
    server: str, canonical: str, valuesets_dir: str, page_size: int | None = None
) -> list[str]:
    """Fetch the expansion and install it like a file import (all or nothing)."""
    from cds_service.knowledge.admin import import_dir

    document = fetch_expansion(server, canonical, page_size)
    with tempfile.TemporaryDirectory() as incoming:
        path = Path(incoming) / "from-server.json"
        path.write_text(json.dumps(document, ensure_ascii=False), "utf-8")
        lines = import_dir(incoming, valuesets_dir)
    pages = document["_imported"]["pages"]
    count = len(document["expansion"]["contains"])
    return [f"fetched {canonical} from {server}: {count} codes in {pages} page(s)", *lines]
