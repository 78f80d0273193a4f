"""`instore-edge central --workers N`: N worker processes on one port, under gunicorn's pre-fork arbiter.

Each worker builds its own app after the fork (its own database connections, its own LISTEN connection
for the feed): nothing the correctness depends on is shared between processes, so a worker killed with
-9 mid-push loses nothing (its transaction rolls back; the edge retries the batch with the same
Idempotency-Key and event ids) and the arbiter starts another.

The worker class is gthread: a thread pool per worker. A long-polling store holds one thread while it
waits, blocked on an Event (no CPU, no database connection), so a worker needs about one thread per
store plus spares; a few hundred idle threads cost some memory and nothing else. An event-loop worker
(gevent) would hold waiting requests more cheaply still, but would need psycopg and the SQLite engine to
run under monkey-patching; at a few hundred stores per central that is not worth it.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

log = logging.getLogger("instore_central")

KEEPALIVE_S = 75  # stores push and pull over one kept-alive connection


class CentralApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn with options from a dict instead of its own command line; `factory()` builds each worker's app."""

    def __init__(self, factory: Callable[[], Any], options: dict[str, Any]) -> None:
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.factory()


def serve(factory: Callable[[], Any], *, host: str, port: int, workers: int, threads: int,
          on_ready: Callable[[int], None], verbose: bool = False) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code. `on_ready(port)` runs once the port listens."""

    def when_ready(server: Any) -> None:
        on_ready(int(server.LISTENERS[0].sock.getsockname()[1]))

    def post_worker_init(worker: Any) -> None:
        # On SIGTERM, answer the waiting long-polls first: the worker then stops within its graceful time.
        original = worker.handle_exit

        def handle_exit(sig: int, frame: Any) -> None:
            store = _store(worker)
            if store is not None:
                store.signal.close()
            original(sig, frame)

        signal.signal(signal.SIGTERM, handle_exit)
        # Everything loaded so far (modules, the app, the pool) lives as long as the worker: out of the
        # collector's sight. A full collection then walks only what requests made, and it holds the
        # interpreter lock (every thread of the worker waits) a fraction as long (bench/fleet.py).
        gc.collect()
        gc.freeze()

    def child_exit(server: Any, worker: Any) -> None:
        from sync.central.metrics import mark_dead

        mark_dead(worker.pid)

    def worker_exit(server: Any, worker: Any) -> None:
        store = _store(worker)
        if store is not None:
            keeper = worker.wsgi.extensions.get("central_housekeeper")
            if keeper is not None:
                keeper.stop()
            store.close()

    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "worker_class": "gthread",
        "threads": threads,
        "keepalive": KEEPALIVE_S,
        "timeout": 60,  # the arbiter's heartbeat; gthread's main loop beats while requests wait
        "graceful_timeout": 10,
        "limit_request_field_size": 32 * 1024,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "debug" if verbose else "warning",
        "proc_name": "instore-central",
        "when_ready": when_ready,
        "post_worker_init": post_worker_init,
        "worker_exit": worker_exit,
        "child_exit": child_exit,
    }
    try:
        CentralApplication(factory, options).run()
    except SystemExit as exc:  # the arbiter exits the process when it halts
        return int(exc.code or 0)
    return 0


def _store(worker: Any) -> Any:
    extensions = getattr(getattr(worker, "wsgi", None), "extensions", None) or {}
    return extensions.get("central_store")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run `instore-edge central --workers N ...`")
