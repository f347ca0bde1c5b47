"""Hook latency and throughput over real HTTP, as an EHR sees them, against a parse-only echo.

    python benchmarks/http_latency.py [--runs 7] [--sizes 20,1000,5000] [--seconds 3]
                                      [--auth] [--env KEY=VALUE ...]

Starts `cds-service serve --workers 1 --threads 8` (its defaults otherwise: card log,
metrics and logging on) and, as the floor, a bare Flask app under gunicorn with the same
worker model (one gthread worker, 8 threads, keep-alive 5 s) whose endpoint parses the body
with `request.get_json()` and answers a constant (benchmarks/bare_app.py: no
re-serialisation). Both on free loopback ports.

Bodies are realistic order-sign requests (benchmarks/realistic.py: conditions, procedures,
a fullUrl on every entry) with 20, 1,000 and 5,000 prefetched orders; the patient id,
hookInstance and draft id differ on every call.

Latency: one keep-alive connection per server; for each size, `--runs` rounds, each round a
block of calls to the echo and a block to the service (which goes first alternates), the
median of each block, and the round's ratio service / echo. Printed: the medians over the
rounds, the median ratio and the range of the rounds' ratios (the noise).

Throughput (20 orders): 8 client threads, one keep-alive connection each, for `--seconds`
per block, echo and service blocks interleaved over `--runs` rounds; calls per second and
the ratio service / echo (median over the rounds).

--auth: the service runs with CDS_AUTH=required (a local JWKS server, a fresh signed JWT
with its own jti on every call: cached JWKS, replay claim stored); the echo gets the same
Authorization header and ignores it. Run with and without it to see what auth costs.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from realistic import BodyTemplate

SIGN = "/cds-services/opioid-lbp-order-sign"
CLOSED: dict[str, int] = {}  # path -> answers that said `Connection: close`
BLOCK = {20: 60, 1000: 8, 5000: 3}  # calls per latency block


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(
    process: subprocess.Popen[bytes], port: int, path: str, method: str = "GET"
) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request(method, path, body=b"{}" if method == "POST" else None)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} did not start")


class Target:
    """One server: where to post, and a keep-alive connection per calling thread."""

    def __init__(self, name: str, port: int, path: str) -> None:
        self.name, self.port, self.path = name, port, path

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)


def call(
    conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
) -> tuple[float, bytes]:
    """One POST; (ms, response body). Raises unless 200; counts answers that closed the
    connection (http.client then opens a new one for the next call, as an EHR would)."""
    start = time.perf_counter()
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
    except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
        # the server closed an idle keep-alive connection (after its keep-alive timeout):
        # open a new one and send again, as an EHR's HTTP client does
        CLOSED["idle"] = CLOSED.get("idle", 0) + 1
        conn.close()
        start = time.perf_counter()
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
    data = response.read()
    ms = (time.perf_counter() - start) * 1000
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {data[:300]!r}")
    if response.getheader("Connection", "").lower() == "close":
        CLOSED[path] = CLOSED.get(path, 0) + 1
    return ms, data


class Calls:
    """Varied bodies and headers: a new patient id, hookInstance, draft id (and JWT) per call."""

    def __init__(self, template: BodyTemplate, auth: Callable[[], str] | None) -> None:
        self.template = template
        self.auth = auth
        self.counter = itertools.count()

    def next(self) -> tuple[bytes, dict[str, str]]:
        n = next(self.counter)
        body = self.template.render(f"pt-{n % 997}", str(uuid.uuid4()), f"draft-{n}")
        headers = {"Content-Type": "application/json"}
        if self.auth is not None:
            headers["Authorization"] = f"Bearer {self.auth()}"
        return body, headers


def latency_block(target: Target, conn: http.client.HTTPConnection, calls: Calls, n: int) -> float:
    times = []
    for _ in range(n):
        body, headers = calls.next()
        ms, _ = call(conn, target.path, body, headers)
        times.append(ms)
    return statistics.median(times)


def throughput_block(target: Target, calls: Calls, threads: int, seconds: float) -> float:
    """Calls per second with `threads` clients, each on its own keep-alive connection."""
    done = [0] * threads
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop_at = [0.0]
    start_gate = threading.Barrier(threads + 1)

    def client(i: int) -> None:
        conn = target.connect()
        try:
            start_gate.wait()
            while time.perf_counter() < stop_at[0]:
                with lock:
                    body, headers = calls.next()
                call(conn, target.path, body, headers)
                done[i] += 1
        except BaseException as exc:  # noqa: BLE001 - reported after the block
            errors.append(exc)
        finally:
            conn.close()

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    start = time.perf_counter()
    stop_at[0] = start + seconds
    start_gate.wait()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{target.name}: {errors[0]!r}")
    return sum(done) / elapsed


class AuthSetup:
    """A JWKS server on loopback and a trusted-issuers file; token() signs a fresh JWT."""

    def __init__(self, audience: str) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric import ec

        self.jwt = jwt
        self.key = ec.generate_private_key(ec.SECP256R1())
        public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        public.update({"kid": "bench-1", "alg": "ES256", "use": "sig"})
        jwks = json.dumps({"keys": [public]}).encode()
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(jwks)))
                self.end_headers()
                self.wfile.write(jwks)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.issuer = "https://ehr.example.org"
        self.jku = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.audience = audience
        self.issuers_file = Path(tempfile.mkdtemp(prefix="bench-auth-")) / "issuers.json"
        self.issuers_file.write_text(
            json.dumps([{"iss": self.issuer, "jwks_url": self.jku}]), "utf-8"
        )

    def token(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": "bench-client",
            "aud": self.audience,
            "exp": now + 300,
            "iat": now,
            "jti": str(uuid.uuid4()),
        }
        return str(self.jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "bench-1"}))

    def close(self) -> None:
        self.server.shutdown()


def start_servers(
    args: argparse.Namespace, auth: AuthSetup | None, service_port: int, bare_port: int
) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "CDS_TODAY": "2026-11-23",
        "CDS_DATA_DIR": tempfile.mkdtemp(prefix="bench-data-"),
    }
    env.pop("CDS_AUTH", None)
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    if auth is not None:
        env.update(
            {
                "CDS_AUTH": "required",
                "CDS_TRUSTED_ISSUERS_FILE": str(auth.issuers_file),
                "CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{service_port}",
            }
        )
    service = subprocess.Popen(
        [str(bin_dir / "cds-service"), "serve", "--port", str(service_port), "--workers", "1"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    bare = subprocess.Popen(
        [
            str(bin_dir / "gunicorn"),
            "--bind",
            f"127.0.0.1:{bare_port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "8",
            "--keep-alive",
            "5",
            "--preload",
            "--chdir",
            str(Path(__file__).resolve().parent),
            "bare_app:app",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    return service, bare


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7, help="interleaved rounds per figure")
    parser.add_argument("--sizes", default="20,1000,5000")
    parser.add_argument("--seconds", type=float, default=3.0, help="per throughput block")
    parser.add_argument("--threads", type=int, default=8, help="throughput client threads")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--auth", action="store_true", help="CDS_AUTH=required with JWTs")
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the service (repeatable)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    service_port, bare_port = free_port(), free_port()
    auth = AuthSetup(f"http://127.0.0.1:{service_port}{SIGN}") if args.auth else None
    service, bare = start_servers(args, auth, service_port, bare_port)
    token = auth.token if auth is not None else None
    try:
        wait_until_up(service, service_port, "/healthz")
        wait_until_up(bare, bare_port, "/echo", "POST")
        targets = (Target("echo", bare_port, "/echo"), Target("service", service_port, SIGN))
        conns = {t.name: t.connect() for t in targets}
        print(
            f"service: cds-service serve --workers 1 --threads 8"
            f"{' (CDS_AUTH=required)' if auth else ''}; echo: gunicorn gthread 1x8, parse-only"
        )
        print(
            f"{'orders':>7} {'body KB':>8} {'cards':>5} {'echo ms':>8} {'hook ms':>8}"
            f" {'ratio':>6} {'ratio range':>12}"
        )
        for n in sizes:
            calls = Calls(BodyTemplate(n), token)
            body, _ = calls.next()
            # warm up both with one block's worth of calls (first-call costs, caches filled on
            # first use, the interpreter's specialisation): a serving worker is warm
            for target in targets:
                for _ in range(BLOCK.get(n, 5)):
                    call(conns[target.name], target.path, *calls.next())
            _, answer = call(conns["service"], SIGN, *calls.next())
            cards = len(json.loads(answer)["cards"])
            medians: dict[str, list[float]] = {"echo": [], "service": []}
            ratios = []
            for run in range(args.runs):
                block: dict[str, float] = {}
                for target in targets if run % 2 == 0 else targets[::-1]:
                    block[target.name] = latency_block(
                        target, conns[target.name], calls, BLOCK.get(n, 5)
                    )
                    medians[target.name].append(block[target.name])
                ratios.append(block["service"] / block["echo"])
            print(
                f"{n:>7} {len(body) / 1024:>8.0f} {cards:>5} "
                f"{statistics.median(medians['echo']):>8.2f} "
                f"{statistics.median(medians['service']):>8.2f} "
                f"{statistics.median(ratios):>6.2f} "
                f"{min(ratios):>5.2f}-{max(ratios):<5.2f}"
            )
        for conn in conns.values():
            conn.close()
        if not args.no_throughput:
            calls = Calls(BodyTemplate(20), token)
            rates: dict[str, list[float]] = {"echo": [], "service": []}
            ratios = []
            for run in range(args.runs):
                block = {}
                for target in targets if run % 2 == 0 else targets[::-1]:
                    block[target.name] = throughput_block(target, calls, args.threads, args.seconds)
                    rates[target.name].append(block[target.name])
                ratios.append(block["service"] / block["echo"])
            print(
                f"throughput, 20 orders, {args.threads} client threads: "
                f"echo {statistics.median(rates['echo']):.0f}/s, "
                f"service {statistics.median(rates['service']):.0f}/s, "
                f"ratio {statistics.median(ratios):.2f} "
                f"(range {min(ratios):.2f}-{max(ratios):.2f})"
            )
        print(f"answers with Connection: close: {CLOSED or 'none'}")
    finally:
        for process in (service, bare):
            process.terminate()
        for process in (service, bare):
            process.wait(20)
        if auth is not None:
            auth.close()


if __name__ == "__main__":
    main()
