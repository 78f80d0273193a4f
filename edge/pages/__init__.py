"""The pages people see, served: signage player, kiosk, store-IT dashboard (blueprint.py) and the staff app
(staff.py), registered on the edge's Flask app, with their open streams (SSE, streams.py).

What the browser gets (templates, scripts, styles, vendored) lives in `kiosk_ui/`; this package is the Python
that renders and serves it, taking the running edge through small ports (`ports.py`).
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask

from edge.config import Config
from edge.domain.catalogue import Catalogue
from edge.metrics import Metrics
from edge.pages.blueprint import create_blueprint
from edge.pages.ports import Store
from edge.pages.streams import Hub
from edge.pages.views import product_view, screen_view

RESERVED_THREADS = 4  # server threads kept for pages and the API, never taken by streams
STREAMS_PER_TARGET = 2


class Pages:
    """The pages and their open streams (SSE): built before the pipeline, which tells them every display change."""

    def __init__(self, cfg: Config, metrics: Metrics, *, server_threads: int, catalogue: Catalogue | None = None) -> None:
        self.cfg = cfg
        self.catalogue = catalogue
        self.max_streams = max(1, server_threads - RESERVED_THREADS)
        self.hub = Hub(lambda target, payload: screen_view(cfg, payload, every_language=target[0] == "kiosk",
                                                           catalogue=catalogue),
                       max_streams=lambda: self.max_streams,
                       per_target=STREAMS_PER_TARGET, per_client=cfg.http.streams_per_client)
        metrics.gauge("instore_edge_page_streams", lambda: float(self.hub.count()))

    def on_display(self, ident: str, payload: dict[str, Any]) -> None:
        """A screen's or kiosk's content changed (after the commit): push it to the pages showing it."""
        self.hub.on_display(ident, payload)

    def on_catalogue(self, skus: list[str]) -> None:
        """Products changed (a price, a name, availability): every open kiosk and signage page gets them
        (`catalogue` event) and re-renders what shows them. Called in the writer thread: never blocks."""
        if self.catalogue is None:
            return
        changed = [product_view(self.cfg, self.catalogue, sku) for sku in skus]
        self.hub.broadcast("catalogue", {"products": [p for p in changed if p is not None],
                                         "deleted": [sku for sku in skus if sku not in self.catalogue]})

    def register(self, app: Flask, store: Store) -> None:
        """Add the pages and their streams to the edge app."""
        app.register_blueprint(create_blueprint(store, self.hub, self.max_streams))
        app.extensions["kiosk_ui"] = self.hub  # the open page streams (tests, status page)

    def close(self) -> None:
        """Before the HTTP server closes: end every stream, so the pages reconnect to the next process."""
        self.hub.close_all()
        deadline = time.monotonic() + 2.0
        while self.hub.count() and time.monotonic() < deadline:
            time.sleep(0.02)
