"""What CDS_AUTH=required adds to a 20-order hook call: JWT verification and the replay claim.

    python benchmarks/auth_overhead.py [--calls 400] [--rounds 7]

Two apps in one process, built alike except for CDS_AUTH (required: a trusted issuer with
its JWKS, the replay claim in the default SQLite store); the same realistic 20-order bodies
(benchmarks/realistic.py, varied per call) go to both in interleaved rounds, each call with a
freshly signed ES256 JWT (its own jti) signed before the clock starts. Printed: the median
CPU time of the request thread per call (time.thread_time, which other processes' load
disturbs far less than wall time), with and without auth, and the difference; the medians
over the rounds. Also the wall time of the verification alone (Authenticator.verify).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from realistic import BodyTemplate

from cds_service import create_app
from cds_service.config import Config

BASE = "https://cds.example.org"
SIGN = "/cds-services/opioid-lbp-order-sign"
ISSUER = "https://ehr.example.org"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=400, help="calls per app per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    key = ec.generate_private_key(ec.SECP256R1())
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    public.update({"kid": "bench-1", "alg": "ES256", "use": "sig"})
    issuers = Path(tempfile.mkdtemp(prefix="bench-auth-")) / "issuers.json"
    issuers.write_text(json.dumps([{"iss": ISSUER, "jwks": {"keys": [public]}}]), "utf-8")
    common = {"today": "2026-11-23", "log_level": "INFO", "public_base_url": BASE}
    apps = {
        "off": create_app(Config().with_overrides({**common, "data_dir": tempfile.mkdtemp()})),
        "on": create_app(
            Config().with_overrides(
                {
                    **common,
                    "data_dir": tempfile.mkdtemp(),
                    "auth": "required",
                    "trusted_issuers_file": str(issuers),
                }
            )
        ),
    }
    import logging
    import os

    for handler in logging.getLogger("cds_service").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - for the process's life
    clients = {name: app.test_client() for name, app in apps.items()}
    template = BodyTemplate(20)
    counter = iter(range(10**9))

    def token() -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": "bench",
            "aud": f"{BASE}{SIGN}",
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "bench-1"})

    def calls(name: str, n: int) -> list[float]:
        cpu = []
        for _ in range(n):
            i = next(counter)
            body = template.render(f"pt-{i % 997}", str(uuid.uuid4()), f"draft-{i}")
            headers = {"Authorization": f"Bearer {token()}"}
            start = time.thread_time()
            response = clients[name].post(
                SIGN, data=body, content_type="application/json", headers=headers
            )
            cpu.append(time.thread_time() - start)
            assert response.status_code == 200, response.get_data(as_text=True)[:200]
        return cpu

    for name in clients:
        calls(name, 20)  # warm up
    medians: dict[str, list[float]] = {"off": [], "on": []}
    for round_ in range(args.rounds):
        for name in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
            medians[name].append(statistics.median(calls(name, args.calls)) * 1000)
    off, on = statistics.median(medians["off"]), statistics.median(medians["on"])
    diffs = [b - a for a, b in zip(medians["off"], medians["on"], strict=True)]
    print(f"20-order hook call, request-thread CPU: auth off {off:.2f} ms, on {on:.2f} ms")
    print(
        f"auth adds {statistics.median(diffs):.2f} ms per call "
        f"(rounds: {min(diffs):.2f} to {max(diffs):.2f})"
    )
    authenticator = apps["on"].extensions["cds_auth"]
    tokens = [token() for _ in range(args.calls)]
    start = time.perf_counter()
    for t in tokens:
        authenticator.verify(f"Bearer {t}", SIGN)
    each = (time.perf_counter() - start) / len(tokens) * 1000
    print(f"Authenticator.verify alone (signature, claims, replay claim): {each:.2f} ms wall")


if __name__ == "__main__":
    main()
