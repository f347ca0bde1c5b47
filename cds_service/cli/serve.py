"""`cds-service serve`: the service under gunicorn (with the buffering front worker)."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from pathlib import Path
from typing import Any

from cds_service import GC_THRESHOLDS
from cds_service.cli.common import _config
from cds_service.config import Config, ConfigError
from cds_service.net import is_loopback_host

# The served worker's garbage collector (create_app has frozen everything built at start-up
# and set GC_THRESHOLDS). A collection of the young generation scans every container
# allocated since the last one that is still alive: between calls that is a few thousand
# objects, during a 5,000-order call the request's own ~150,000 (two collections per call,
# ~10-19 ms). So in the worker the young generation collects on its own only past
# GC_WORKER_YOUNG (more than the largest accepted body holds), and after each answer is
# sent the young generation is collected if it holds more than GC_THRESHOLDS[0]: the cyclic
# garbage calls leave (~14 objects each: Werkzeug's request <-> environ) is freed as often
# as before, when the request's own objects are gone and the collection is cheap.
GC_WORKER_YOUNG = 1_000_000
_YOUNG_AFTER_CALL = GC_THRESHOLDS[0]
_OLDER = GC_THRESHOLDS[1:]  # young collections per middle one, middle ones per old one


def _gc_worker_init(_worker: Any) -> None:
    """gunicorn post_worker_init: the young generation's own threshold raised (above)."""
    gc.set_threshold(GC_WORKER_YOUNG, *GC_THRESHOLDS[1:])


def _gc_after_request(_worker: Any, _req: Any, _environ: Any, _resp: Any) -> None:
    """gunicorn post_request (the answer is sent): collect the young generation when it holds
    more than GC_THRESHOLDS[0] containers, and the older generations as CPython itself
    would (its own collections never come: the young count never reaches GC_WORKER_YOUNG):
    the middle one every GC_THRESHOLDS[1] young collections, the old one every
    GC_THRESHOLDS[2] middle ones. Without that, cycles alive at a collection (the request
    just answered, concurrent calls) moved to the middle generation and were never freed."""
    young, middle, old = gc.get_count()
    if young > _YOUNG_AFTER_CALL:
        generation = 0
        if middle + 1 > _OLDER[0]:  # this collection counts as one more for the middle one
            generation = 1
            if old + 1 > _OLDER[1]:
                generation = 2
        gc.collect(generation)


def _fewer_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core), and a
    large request parsed in one keeps that memory resident after it is freed; two arenas
    keep a worker's resident memory near what it uses (MALLOC_ARENA_MAX, set at run time
    before any request thread exists). Not glibc: nothing to do."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or os.environ.get("MALLOC_ARENA_MAX"):
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        return


def _serve(args: argparse.Namespace) -> int:
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    from cds_service import create_app

    config = _config().with_overrides({"worker_threads": args.threads})
    _fewer_malloc_arenas()
    if config.fhir_max_fallback_calls <= 0:
        # Half the request threads may wait on FHIR servers; the rest stay free for calls
        # whose data was prefetched.
        config = config.with_overrides({"fhir_max_fallback_calls": max(1, args.threads // 2)})
    host = args.host.strip("[]")
    if config.auth == "required":
        print("cds-service: CDS client authentication is required (JWT).", file=sys.stderr)
    elif not is_loopback_host(host):
        if not args.insecure:
            print(
                f"cds-service: refusing to listen on {args.host} without authentication of "
                "CDS clients. Bind 127.0.0.1, or pass --insecure if a gateway in front of this "
                "service authenticates the EHR.",
                file=sys.stderr,
            )
            return 2
        print(
            f"cds-service: WARNING: listening on {args.host} with no authentication of CDS "
            "clients (--insecure).",
            file=sys.stderr,
        )
    else:
        print(
            "cds-service: WARNING: CDS client authentication is off (CDS_AUTH=off; loopback only).",
            file=sys.stderr,
        )

    # metrics in multiprocess mode: set before prometheus_client is imported
    metrics_dir, own_metrics_dir = _metrics_dir(config)
    config = config.with_overrides({"prometheus_multiproc_dir": metrics_dir})
    from cds_service.http.auth import AuthConfigError
    from cds_service.http.hygiene import remember_request
    from cds_service.http.server import FrontLimits, front_worker
    from cds_service.store import StoreSchemaError

    try:
        app = create_app(config)
    except (AuthConfigError, ConfigError, StoreSchemaError) as exc:
        print(f"cds-service: {exc}", file=sys.stderr)
        return 2
    bind = [
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for port in (args.port, config.ops_port)
        if port
    ]
    writer = app.extensions.get("cds_card_log")

    def worker_exit(_server: Any, _worker: Any) -> None:
        if writer is not None:
            writer.close(timeout=5.0)  # write what is queued before the worker goes

    def child_exit(_server: Any, worker: Any) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": bind,
                "worker_exit": worker_exit,
                "child_exit": child_exit,
                "workers": args.workers,
                # gthread that reads each request whole on its event loop before a thread
                # takes it (slow clients), within a byte budget, answering gunicorn's own
                # errors with an OperationOutcome
                "worker_class": front_worker(FrontLimits.from_config(config)),
                "threads": args.threads,
                "preload_app": True,
                "timeout": 30,
                "graceful_timeout": 10,
                "keepalive": 5,
                "accesslog": None,
                "loglevel": "warning",
                "limit_request_line": 8190,
                "pre_request": remember_request,
                "post_worker_init": _gc_worker_init,
                "post_request": _gc_after_request,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    print(f"cds-service: discovery at http://{bind[0]}/cds-services", file=sys.stderr)
    try:
        Server().run()
    finally:
        if own_metrics_dir:
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _metrics_dir(config: Config) -> tuple[str, bool]:
    """PROMETHEUS_MULTIPROC_DIR for this server (a fresh private directory unless configured;
    a configured one is emptied, as prometheus_client requires between runs)."""
    import os
    import tempfile

    if config.prometheus_multiproc_dir:
        directory = Path(config.prometheus_multiproc_dir)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink()
        path, own = str(directory), False
    else:
        path, own = tempfile.mkdtemp(prefix="cds-metrics-"), True
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path, own
