"""Worker memory under hostile input, against a real `cds-service serve` on loopback.

Prints the worker's resident set size (RSS, from /proc) at start (after a warm-up), after 20
calls whose draft order carries a distinct 4 MB medication name, and during and after N
(default 10,000) fuzzed requests: real sandbox bodies with subtrees replaced by random JSON,
long random names and codes (distinct every time, so no cache can answer twice), odd content
types, unknown paths and bodies that are not JSON. Every loop is bounded in count; the
service is started and stopped by the script (one worker, so the figures are one process).

    .venv/bin/python benchmarks/memory_budget.py [--fuzz 10000] [--threads 4]
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import random
import string
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fault_servers import ServedService, rss_bytes

SANDBOX = ROOT / "fixtures" / "fhir" / "sandbox"
PATHS = [
    "/cds-services/opioid-lbp-order-sign",
    "/cds-services/opioid-lbp-order-select",
    "/cds-services/opioid-lbp-patient-view",
    "/cds-services/opioid-lbp-order-sign/feedback",
]
MIB = 1024 * 1024


def load(name: str) -> Any:
    return json.loads((SANDBOX / name).read_text("utf-8"))


BASES = [
    load("order-sign-oxycodone.json"),
    load("patient-view.json"),
    load("order-select-empty-draft.json"),
]
for base in BASES:
    base.pop("fhirServer", None)  # no FHIR server is contacted while fuzzing
    # every key prefetched, so the rules run (and classify) on every call
    base["prefetch"] = {
        "patient": {
            "resourceType": "Patient",
            "id": base["context"]["patientId"],
            "birthDate": "1970-01-01",
        },
        **{
            key: {"resourceType": "Bundle", "type": "searchset", "entry": []}
            for key in ("meds", "procedures", "serviceRequests", "dispenses", "statements")
        },
        "conditions": load("order-sign-oxycodone.json")["prefetch"]["conditions"],
    }


def random_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choices(string.ascii_letters + " -/", k=size))


def random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.randrange(-(10**6), 10**6)
    if kind == 2:
        return random_text(rng, rng.choice([1, 10, 200, 5000, 60000]))
    if kind == 3:
        return rng.random() > 0.5
    if kind == 4:
        return rng.choice(["MedicationRequest", "Bundle", "oxycodone 5 MG", "active", "draft"])
    if kind in (5, 6):
        return {
            random_text(rng, rng.choice([3, 12])): random_json(rng, depth + 1)
            for _ in range(rng.randrange(4))
        }
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def paths_of(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(paths_of(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(paths_of(value, (*prefix, index)))
    return out


def with_name(body: Any, name: str, display: str, code: str) -> Any:
    """The body with its draft order's medication (or a condition) renamed."""
    draft = body.get("context", {}).get("draftOrders", {})
    for entry in draft.get("entry", []) if isinstance(draft, dict) else []:
        resource = entry.get("resource", {})
        if "medicationCodeableConcept" in resource:
            resource["medicationCodeableConcept"] = {
                "text": name,
                "coding": [
                    {
                        "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                        "code": code,
                        "display": display,
                    }
                ],
            }
    conditions = body.get("prefetch", {}).get("conditions")
    if isinstance(conditions, dict):
        for entry in conditions.get("entry", []):
            entry.get("resource", {})["code"] = {
                "text": display,
                "coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}],
            }
    return body


def fuzzed(rng: random.Random) -> tuple[str, str, bytes]:
    """(path, content type, body) of one fuzzed request."""
    roll = rng.random()
    if roll < 0.05:
        return (
            rng.choice(PATHS),
            "application/json",
            bytes(rng.randrange(256) for _ in range(rng.randrange(2000))),
        )
    if roll < 0.08:
        return ("/cds-services/" + quote(random_text(rng, 20)), "application/json", b"{}")
    if roll < 0.10:
        return rng.choice(PATHS), "text/plain", b"x" * rng.randrange(100000)
    body = copy.deepcopy(rng.choice(BASES))
    body = with_name(
        body,
        f"oxycodone {rng.randrange(1, 80)} MG "
        + random_text(rng, rng.choice([20, 400, 3000, 30000])),
        random_text(rng, rng.choice([30, 2000])),
        str(rng.randrange(10**9)),
    )
    for _ in range(rng.randrange(0, 3)):
        paths = [p for p in paths_of(body) if p]
        path = rng.choice(paths)
        node = body
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = random_json(rng)
    return rng.choice(PATHS[:3]), "application/json", json.dumps(body).encode()


def post(conn: http.client.HTTPConnection, path: str, ctype: str, body: bytes) -> int:
    conn.request("POST", path, body=body, headers={"Content-Type": ctype})
    response = conn.getresponse()
    response.read()
    if response.getheader("Connection") == "close":
        conn.close()
    return response.status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    with ServedService(workers=1, threads=8) as service:
        (worker,) = service.worker_pids()
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
        rng = random.Random(args.seed)
        for _ in range(200):  # warm-up: imports, pools, first caches
            body = with_name(
                copy.deepcopy(BASES[0]), "oxycodone 5 MG Oral Tablet", "Oxycodone 5 MG", "1049621"
            )
            post(conn, PATHS[0], "application/json", json.dumps(body).encode())
        time.sleep(0.5)
        start = rss_bytes(worker)
        print(f"worker RSS after warm-up: {start / MIB:.1f} MiB")

        statuses: dict[int, int] = {}
        for i in range(20):
            name = f"oxycodone {i + 1} MG " + random_text(rng, 4 * MIB)
            body = with_name(copy.deepcopy(BASES[0]), name, "Oxycodone", "1049621")
            status = post(conn, PATHS[0], "application/json", json.dumps(body).encode())
            statuses[status] = statuses.get(status, 0) + 1
        time.sleep(0.5)
        after_big = rss_bytes(worker)
        print(
            f"after 20 calls with distinct 4 MB drug names: {after_big / MIB:.1f} MiB "
            f"(+{(after_big - start) / MIB:.1f} MiB; statuses {statuses})"
        )

        peak = after_big
        done = 0
        lock = threading.Lock()
        fuzz_statuses: dict[int, int] = {}
        errors: list[str] = []
        started = time.monotonic()

        def client(seed: int, count: int) -> None:
            nonlocal peak, done
            local = random.Random(seed)
            c = http.client.HTTPConnection("127.0.0.1", service.port, timeout=30)
            for _ in range(count):
                path, ctype, payload = fuzzed(local)
                try:
                    status = post(c, path, ctype, payload)
                except (OSError, http.client.HTTPException) as exc:
                    status = -1
                    c.close()
                    with lock:
                        errors.append(
                            f"{type(exc).__name__} on {path} {ctype} {len(payload)} bytes"
                        )
                with lock:
                    fuzz_statuses[status] = fuzz_statuses.get(status, 0) + 1
                    done += 1
                    if done % 250 == 0:
                        peak = max(peak, rss_bytes(worker))
            c.close()

        per = args.fuzz // args.threads
        workers = [
            threading.Thread(target=client, args=(args.seed * 100 + t, per))
            for t in range(args.threads)
        ]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        time.sleep(0.5)
        end = rss_bytes(worker)
        peak = max(peak, end)
        took = time.monotonic() - started
        print(
            f"after {done} fuzzed requests ({took:.0f} s, statuses {dict(sorted(fuzz_statuses.items()))}):"
        )
        print(
            f"  peak {peak / MIB:.1f} MiB (+{(peak - start) / MIB:.1f} MiB over warm-up), "
            f"end {end / MIB:.1f} MiB (+{(end - start) / MIB:.1f} MiB)"
        )
        for line in errors[:10]:
            print(f"  client-visible error: {line}")
        conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
