"""The central store served by waitress on a thread: what the CLI (one worker), the demo and test fixtures start."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path

from sync.central.app import QUIET_AFTER_S, create_app
from sync.central.content import MAX_ASSET_BYTES
from sync.central.demo_data import load_demo_data
from sync.central.storage import Housekeeper, Settings, Storage
from sync.protocol import MAX_BODY_BYTES

log = logging.getLogger("instore_central")

SPARE_THREADS = 16  # HTTP threads beyond two per store (admin calls, on-demand fetches)


def auto_threads(stores: int) -> int:
    """HTTP threads for a process: a long-polling store holds one while it waits and may push meanwhile, so two
    per store and spares (a waiting thread costs memory, no CPU; with fewer, pushes queue behind long-polls)."""
    return 2 * stores + SPARE_THREADS


class CentralServer:
    """create_app() behind waitress on `host:port` (port 0 picks a free one; see `.port` after start()).

    `db` is a SQLite file path or a postgresql:// URL (or an open Storage)."""

    def __init__(self, db: str | Path | Storage, admin_token: str, store_tokens: Mapping[str, str], *,
                 host: str = "127.0.0.1", port: int = 8600, demo_data: bool = False, threads: int | None = None,
                 settings: Settings | None = None, quiet_after_s: float = QUIET_AFTER_S) -> None:
        self.app = create_app(db, admin_token, store_tokens, settings=settings, quiet_after_s=quiet_after_s)
        self.store: Storage = self.app.extensions["central_store"]
        self.host = host
        self.requested_port = port
        self.demo_data = demo_data
        self.threads = threads or auto_threads(len(store_tokens))
        self.port = 0
        self.demo_loaded = 0
        self._server = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> CentralServer:
        from sync.httpserver import ServerLimits, create_server

        if self.demo_data:
            self.demo_loaded = load_demo_data(self.store)
            if self.demo_loaded:
                log.info("loaded the demo data set: %d profiles", self.demo_loaded)
        # Bodies over the cap (an asset's, the largest) get a JSON 413 before they are read; the app refuses
        # a batch of events over MAX_BODY_BYTES. No per-client connection cap: stores
        # may reach the central store through one load balancer or NAT address.
        limits = ServerLimits(max_body_bytes=max(MAX_BODY_BYTES, MAX_ASSET_BYTES), connection_limit=max(1000, 2 * self.threads),
                              per_client=None, idle_timeout_s=75.0)
        self._server = create_server(self.app, host=self.host, port=self.requested_port, threads=self.threads,
                                     limits=limits, ident="instore-central")
        self.port = self._server.effective_port  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._serve, name="central-http", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        assert self._server is not None
        try:
            self._server.run()
        except OSError:
            if not self._stopped.is_set():  # closing the listener on stop ends the loop this way
                log.exception("central HTTP server failed")

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.store.signal.close()  # long-polls answer now, so their threads are free to stop
        if self._server is not None:
            self._server.task_dispatcher.shutdown(timeout=5)  # type: ignore[attr-defined]
            self._server.close()
        if self._thread is not None:
            self._thread.join(5)
        keeper: Housekeeper | None = self.app.extensions.get("central_housekeeper")
        if keeper is not None:
            keeper.stop()
        self.store.close()
