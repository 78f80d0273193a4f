"""The running service: one process, a handful of threads (paho loop, pipeline writer, HTTP server)."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Flask

from edge import faults
from edge.clients import TrustedProxies
from edge.config import Config
from edge.context import CustomerContext
from edge.model import FALLBACK_PRIORITY, Event, Publication
from edge.identity import Identity
from edge.wire.mqtt import MqttLink
from edge.metrics import Metrics
from edge.outputs import Displays
from edge.pipeline import Pipeline
from edge.presence import PresenceTracker
from edge.rules import RuleEngine
from edge.store.db import connect
from edge.store.queries import outbox_stats
from edge.store.writer import Writer, open_writer
from edge.watchdog import EXIT_THREAD_DIED, WATCH_S, Watchdog
from sync.client import SyncClient

log = logging.getLogger("instore_edge")


def _rows(conn: sqlite3.Connection, sql: str) -> list[dict[str, Any]]:
    cur = conn.execute(sql)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur]


class Service:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.metrics = Metrics()
        self.conn = open_writer(cfg.db.path)
        self.writer = Writer(self.conn)
        self.presence = PresenceTracker(cfg, _rows(self.conn, "SELECT * FROM presence"))
        # Decisions run in the writer thread: the context reads profiles through the writer's connection.
        self.context = CustomerContext(cfg, self.conn)
        self.rules = RuleEngine(cfg, self.context, kiosk_output=True)
        self.displays = Displays(cfg, _rows(self.conn, "SELECT * FROM displays"))
        self.pipeline = Pipeline(cfg, self.writer, self.presence, self.rules, self.displays, self.metrics)
        self.identity = Identity(cfg, self.conn)
        self.pipeline.identity = self.identity
        self.sync = SyncClient(cfg, cfg.db.path, self.pipeline.submit_task, self.metrics,
                               max_profiles=cfg.central.cache_max_profiles, profile_ttl_s=cfg.central.cache_ttl_s)
        self.identity.remote = self.sync.request_resolution if self.sync.enabled else None
        self.sync.identity_hooks.append(lambda conn, key, customer, via: self.identity.remember(key, customer))
        self.sync.profile_hooks.append(self._profiles_changed)
        self.sync.erase_hooks.append(self._forget_customer)
        self.pipeline.commit_listeners.append(lambda res: self.sync.wake() if res.recorded else None)
        self._fetching: set[str] = set()
        self._fetch_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="profile-fetch")
        if self.sync.enabled:
            self.context.on_miss = self._fetch_in_background
        self.mqtt = MqttLink(cfg, self.pipeline.submit, on_connected=self._publish_all_displays)
        self.mqtt.backlog = self.pipeline.queue.qsize
        self.pipeline.ack = self.mqtt.ack
        self.pipeline.publish = self.mqtt.publish
        self.http_hooks: list[Callable[[Flask], None]] = []
        # Run first on stop, while HTTP still serves (kiosk_ui ends its page streams there).
        self.stop_hooks: list[Callable[[], None]] = []
        from edge import journeys

        # Gateway health: the state their status topics report and when each last heard anything.
        self.gateway_state: dict[str, str] = {}
        self.gateway_last_heard: dict[str, float] = {}
        self.pipeline.event_hooks.append(self._gateway_health)
        self.pipeline.event_hooks.append(journeys.event_hook(self))
        self.http_hooks.append(lambda app: journeys.register(app, self))
        self._register_ui()
        self.http_server: Any = None
        self.trusted_proxies = TrustedProxies(cfg.http.trusted_proxies)
        self._http_thread: threading.Thread | None = None
        self._housekeeping_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.watchdog = Watchdog()
        self.watchdog.watch("pipeline-writer", lambda: self.pipeline._thread)
        self.watchdog.watch("housekeeping", lambda: self._housekeeping_thread)
        self.watchdog.watch("http", lambda: self._http_thread)
        self.watchdog.watch("mqtt", lambda: self.mqtt.thread)
        for i, name in enumerate(("sync-push", "sync-pull", "sync-resolve")):
            self.watchdog.watch(name, lambda i=i: self.sync._threads[i] if len(self.sync._threads) > i else None)
        self.metrics.gauge("instore_edge_mqtt_connected", lambda: 1.0 if self.mqtt.connected.is_set() else 0.0)
        self.metrics.gauge("instore_edge_outbox_pending", self._outbox_pending)
        self.metrics.gauge("instore_edge_outbox_capacity_ratio",
                           lambda: self._outbox_pending() / self.cfg.central.outbox_max_events)

    def _fetch_in_background(self, customer: str) -> None:
        """A cache miss for an identified shopper: ask the central store without blocking the writer; until
        the profile arrives (or if the store is offline) the shopper gets what is cached, or zone content."""
        if customer in self._fetching or len(self._fetching) > 100:
            return
        self._fetching.add(customer)

        def fetch() -> None:
            try:
                self.sync.fetch_profile(customer)
            finally:
                self._fetching.discard(customer)

        self._fetch_pool.submit(fetch)

    def _forget_customer(self, conn: sqlite3.Connection, customer: str) -> None:
        """Erasure (from the central store or `DELETE /api/v1/customers/<id>`): drop every in-memory trace too,
        and have the WAL truncated after the commit (the rows' old page images are still in it)."""
        self.writer.want_wipe()
        keys = [key for key, owner in self.identity.known.items() if owner == customer]
        self.identity.forget_customer(conn, customer)
        for subject, st in list(self.presence.state.items()):
            if st.customer == customer:
                self.presence.set_customer(subject, None)
        for who in (customer, *keys):  # caps and recent activity kept under their phone or kiosk session too
            self.rules.forget(who)
            self.context.forget(who)
        self._clear_screens_of(customer)
        from edge import journeys

        journeys.forget_customer(conn, customer)  # keeps the pickup record, drops who collected it

    def _profiles_changed(self, conn: sqlite3.Connection, customers: list[str]) -> None:
        """Profile upserts from the central store: re-read them; a revoked consent clears the screens now."""
        self.context.invalidate(customers)
        for customer in customers:
            shopper = self.context.profile(customer)
            if shopper is None or not shopper.personalization:
                self._clear_screens_of(customer)

    def _clear_screens_of(self, customer: str) -> None:
        """Screens showing this customer's personal content return to their playlist (writer thread)."""
        now = time.time()
        for screen, payload in self.displays.clear_customer(customer):
            self.writer.upsert_display(screen, json.dumps(payload), FALLBACK_PRIORITY, None, now)
            self.mqtt.publish(f"{self.cfg.prefix}/display/{screen}/content", payload, retain=True)
            self.displays.notify(screen, payload)

    def erase(self, customer: str, timeout: float = 30.0) -> bool:
        """Remove a shopper from every table, every in-memory state and the file's bytes on this device, and
        ask the central store to erase them everywhere (an outbox event, by hash); True once committed.
        Until the central store confirms, a pending tombstone keeps the edge from learning them again."""
        from sync.client import erase_customers, queue_central_erasure

        def task(writer: Writer) -> None:
            now = time.time()
            row = writer.conn.execute("SELECT version FROM profiles WHERE customer_id = ?", (customer,)).fetchone()
            erase_customers(writer.conn, [(customer, row[0] if row else 0)], now, hooks=[self._forget_customer],
                            pending=True)
            queue_central_erasure(writer, customer, now)

        done = threading.Event()
        self.pipeline.submit_task(task, done.set)
        if not done.wait(timeout):
            return False
        self.sync.wake()
        return True

    def _register_ui(self) -> None:
        try:
            from kiosk_ui import register
        except ImportError:
            return
        self.http_hooks.append(lambda app: register(app, self))

    def _outbox_pending(self) -> float:
        conn = connect(self.cfg.db.path)
        try:
            return float(outbox_stats(conn, time.time())[0])
        finally:
            conn.close()

    def _gateway_health(self, event: Event, writer: Writer) -> list[Publication]:
        if event.kind == "gateway_status":
            state = str(event.data.get("state", "unknown"))
            if self.gateway_state.get(event.source) != state:
                log.log(logging.WARNING if state == "offline" else logging.INFO, "gateway %s is %s",
                        event.source, state)
            self.gateway_state[event.source] = state
        elif event.kind == "beacon":
            self.gateway_last_heard[event.source] = event.received_at
        return []

    def gateways(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every configured gateway: its reported state and seconds since it last sent a sighting."""
        now = time.time() if now is None else now
        out = []
        for g in self.cfg.gateways:
            heard = self.gateway_last_heard.get(g.id)
            out.append({"id": g.id, "zone": g.zone, "format": g.format,
                        "state": self.gateway_state.get(g.id, "unknown"),
                        "silent_s": None if heard is None else round(now - heard, 1)})
        return out

    def _purge_expired(self) -> None:
        """Retention, in the writer thread, in batches so ingest never waits long behind it."""
        from edge.maintenance import purge_expired

        days, total = self.cfg.privacy.retention_days, 0
        while not self._stopped.is_set():
            box: list[int] = []
            done = threading.Event()
            def purge(w: Writer) -> None:
                box.append(purge_expired(w.conn, days, time.time(), limit=20000))
                if box[-1]:
                    w.want_wipe()  # the purged rows' old pages leave the WAL too

            self.pipeline.submit_task(purge, done.set)
            if not done.wait(120) or not box:
                break
            total += box[0]
            if box[0] < 20000:
                break
        if total:
            log.info("retention: purged %d rows older than %d days", total, days)

    def _housekeeping(self) -> None:
        """Every 30 s: say loudly when the outbox nears its bound (the central store has been away long);
        every hour: retention (synced events older than privacy.retention_days)."""
        faults.thread_start("housekeeping")
        last_purge = time.monotonic()
        while not self._stopped.wait(30.0):
            if time.monotonic() - last_purge >= 3600:
                last_purge = time.monotonic()
                self._purge_expired()
            try:
                conn = connect(self.cfg.db.path)
                try:
                    pending, age = outbox_stats(conn, time.time())
                finally:
                    conn.close()
            except sqlite3.Error:
                continue
            bound = self.cfg.central.outbox_max_events
            if pending >= 0.9 * bound:
                log.warning("outbox nearly full: %d of %d events not yet accepted by the central store, the oldest "
                            "%.0f h old; check the uplink and [central] (nothing is dropped: raise "
                            "central.outbox_max_events if the disk allows)", pending, bound, (age or 0) / 3600)

    def _publish_all_displays(self) -> None:
        """After every (re)connect: make the retained content of every screen match our state."""
        for screen, payload in self.displays.all().items():
            self.mqtt.publish(f"{self.cfg.prefix}/display/{screen}/content", payload, retain=True)

    def create_app(self) -> Flask:
        from edge.http import create_app

        return create_app(self)

    def readiness(self) -> dict[str, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {}
        connected = self.mqtt.connected.is_set()
        checks["broker"] = {"ok": connected, "detail": "connected" if connected else
                            (self.mqtt.last_error or f"not connected to {self.cfg.mqtt.host}:{self.cfg.mqtt.port}")}
        checks["db"] = {"ok": self.pipeline.healthy, "detail": self.pipeline.last_error or "writable"}
        lag = self.pipeline.lag()
        checks["ingest"] = {"ok": lag < 30, "lag_s": round(lag, 3)}
        gws = self.gateways()
        offline = [g["id"] for g in gws if g["state"] == "offline"]
        # Informational: one gateway down degrades presence in a zone, not the edge itself.
        checks["gateways"] = {"ok": True, "offline": offline,
                              "never_heard": [g["id"] for g in gws if g["silent_s"] is None]}
        if self.sync.enabled:
            st = self.sync.status()
            age = st["outbox_oldest_age_s"] or 0.0
            # Offline is normal for a while (the outbox holds days): not ready only once it is long or refused.
            full = st["outbox_pending"] >= 0.9 * self.cfg.central.outbox_max_events
            checks["sync"] = {"ok": st["auth_ok"] is not False and age < 3600 and not full,
                              "outbox_full": full,
                              "outbox_pending": st["outbox_pending"], "oldest_pending_s": round(age, 1),
                              "breaker": st["breaker"], "detail": st["last_error"] or "ok"}
        return checks

    def start(self, *, http: bool = True) -> Service:
        log.info("starting store %s: db %s, broker %s:%s", self.cfg.store.id, self.cfg.db.path,
                 self.cfg.mqtt.host, self.cfg.mqtt.port)
        self.pipeline.start()
        self.sync.start()
        self._housekeeping_thread = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        self._housekeeping_thread.start()
        self.mqtt.start()
        if http:
            self._start_http()
        return self

    def _start_http(self) -> None:
        from edge.httpserver import ServerLimits, create_server

        app = self.create_app()
        http = self.cfg.http
        # Each open page stream (SSE) holds a thread: two per screen and kiosk (a reloaded page's stream
        # lingers until its client is noticed gone), one client's share, and 8 for pages and the API.
        threads = 8 + http.streams_per_client + 2 * (len(self.cfg.screens) + len(self.cfg.kiosks))
        limits = ServerLimits(max_body_bytes=self.cfg.limits.http_body_bytes,
                              connection_limit=http.connection_limit, per_client=http.connections_per_client,
                              request_timeout_s=http.request_timeout_s, idle_timeout_s=http.idle_timeout_s,
                              trusted=self.trusted_proxies)
        self.http_server = create_server(
            app, host=http.host, port=http.port, threads=threads, limits=limits, ident="instore-edge",
            on_drop=lambda reason: self.metrics.inc("instore_edge_http_connections_dropped_total", reason=reason))
        self.metrics.gauge("instore_edge_http_connections", lambda: float(len(self.http_server.active_channels)))
        self.http_port = self.http_server.effective_port
        self._http_thread = threading.Thread(target=self._serve_http, name="http", daemon=True)
        self._http_thread.start()
        log.info("HTTP on http://%s:%s/", http.host, self.http_port)

    def _serve_http(self) -> None:
        faults.thread_start("http")
        try:
            self.http_server.run()
        except OSError:
            if not self._stopped.is_set():  # closing the listener on stop ends the loop this way
                log.exception("HTTP server failed")

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.watchdog.stopping = True
        log.info("stopping")
        for hook in self.stop_hooks:
            try:
                hook()
            except Exception:
                log.exception("stop hook failed")
        if self.http_server is not None:
            # Let requests in flight finish first: a worker finishing after close() writes to the closed
            # trigger and waitress logs a traceback.
            self.http_server.task_dispatcher.shutdown(timeout=5)  # type: ignore[attr-defined]
            self.http_server.close()
            # close() only stops accepting: have the server's loop close the connections still open (idle
            # keep-alive ones too), or a browser reuses them and talks to a service that has stopped.
            for channel in list(self.http_server._map.values()):  # type: ignore[attr-defined]
                channel.will_close = True
        self.mqtt.client.on_message = None  # stop taking new messages; unacked ones stay with the broker
        self.sync.stop()
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)
        self.pipeline.stop()
        self.mqtt.stop()
        self.conn.close()
        log.info("stopped")

    def run_forever(self) -> int:
        """Run until SIGTERM/SIGINT (systemd stop, Ctrl-C): 0; or until a thread dies: EXIT_THREAD_DIED, so
        systemd restarts a whole process rather than leave one that looks alive and is deaf."""
        done = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            log.info("received signal %s", signal.Signals(signum).name)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            self.start()
        except OSError as exc:
            log.error("cannot start: %s", exc)
            return 1
        code = 0
        while not done.wait(WATCH_S):
            dead = self.watchdog.dead()
            if dead:
                log.critical("thread(s) died: %s; exiting (code %d) so that the service manager restarts the edge",
                             ", ".join(f"{name} ({why})" for name, why in dead.items()), EXIT_THREAD_DIED)
                code = EXIT_THREAD_DIED
                break
        stopper = threading.Thread(target=self.stop, name="stop", daemon=True)
        stopper.start()
        stopper.join(30)  # a half-dead service may not stop cleanly: exit anyway (unacked messages stay queued)
        return code

