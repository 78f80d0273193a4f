"""The composition root: builds every part of the running edge once, in dependency order, and runs its threads.

Nothing is wired after construction: each part gets what it talks to as constructor arguments. The writer's
`Inbox` comes first, so that MQTT, sync and HTTP can hand it work before the pipeline that drains it exists;
the domain parts next (the pipeline becomes their one owner), then privacy, sync (edge.uplink, the edge's
side of the link, and the client over it), MQTT, the pages and the pipeline. `App` is also what the HTTP
layer and the pages see of the edge (edge.web.ports.Edge, edge.pages.ports.Store): thin methods that hand
each request to the part that owns the answer.

One process, a handful of threads: paho's network loop, the pipeline writer, the HTTP server, sync (push,
pull, resolve), housekeeping; the watchdog has the process exit (EXIT_THREAD_DIED) when one dies.
"""

from __future__ import annotations

import gc
import logging
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from flask import Flask

from edge import faults
from edge.config import Config
from edge.domain.campaigns import Campaigns
from edge.domain.catalogue import Catalogue, ProductError
from edge.domain.displays import Displays
from edge.domain.gateways import GatewayHealth
from edge.domain.identity import Identity
from edge.domain.journeys import Journeys
from edge.domain.presence import PresenceTracker
from edge.domain.rules import RuleEngine
from edge.domain.shoppers import CustomerContext, Shopper
from edge.maintenance import purge_expired
from edge.metrics import Metrics
from edge.model import Decision, Event, Message
from edge.pipeline import Inbox, Pipeline, rows
from edge.privacy import Privacy
from edge.qr import Signer, Token
from edge.staff.desk import Desk
from edge.staff.feed import Feed
from edge.store.db import connect
from edge.store.queries import outbox_stats
from edge.store.writer import Writer, open_writer
from edge.uplink import Uplink, asset_cache, sync_settings
from edge.watchdog import EXIT_THREAD_DIED, WATCH_S, Watchdog
from edge.web import campaigns as campaigns_web
from edge.web import create_app
from edge.wire.mqtt import MqttLink
from edge.pages import Pages
from edge.pages.staff import StaffStreams, create_blueprint as staff_blueprint
from sync.client import THREADS as SYNC_THREADS, SyncClient
from sync.clients import TrustedProxies
from sync.httpserver import ServerLimits, create_server

log = logging.getLogger(__name__)

STAFF_STREAMS = 8  # associates' phones with the live feed open at once (each holds a server thread)
CAMPAIGN_CLOCK_S = 1.0  # schedules are checked this often (a switch shows within about a second)
IMPRESSIONS_EVERY_S = 60.0  # campaign impressions are reported this often while there are any
FETCH_IN_FLIGHT_MAX = 100  # on-demand profile fetches at once; more misses wait for the next event


class CentralLink:
    """The central store as the pipeline needs it (edge.pipeline.Central): never blocking the writer."""

    def __init__(self, sync: SyncClient) -> None:
        self.sync = sync
        self._fetching: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="profile-fetch")

    def wake(self) -> None:
        self.sync.wake()

    def resolve(self, keys: list[str]) -> None:
        try:
            self.sync.request_resolution(keys)
        except Exception:  # the central store is optional: offline means anonymous, not broken
            log.exception("cannot queue an identity resolution")

    def fetch(self, customers: list[str]) -> None:
        """A cache miss for an identified shopper: ask the central store in the background; until the profile
        arrives (or if the store is offline) the shopper gets what is cached, or zone content."""
        for customer in customers:
            if customer in self._fetching or len(self._fetching) > FETCH_IN_FLIGHT_MAX:
                continue
            self._fetching.add(customer)

            def fetch(customer: str = customer) -> None:
                try:
                    self.sync.fetch_profile(customer)
                finally:
                    self._fetching.discard(customer)

            self._pool.submit(fetch)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


GC_GEN0 = 10_000  # allocations between young collections (Python's default: 700)


def tune_gc() -> None:
    """For the service, once everything is built: what exists now (modules, config, caches) is never garbage,
    so collections stop walking it (gc.freeze), and young collections come every 10,000 allocations instead
    of 700. The writer allocates a few objects per event, nearly all freed by reference counting at once;
    with the defaults the collector took 5-10% of its CPU (bench/pipeline.py)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0, gen1, gen2)


def server_threads(cfg: Config) -> int:
    """HTTP worker threads. Each open page stream (SSE) holds one: two per screen and kiosk (a reloaded page's
    stream lingers until its client is noticed gone), one client's share, and 8 for pages and the API."""
    return 8 + cfg.http.streams_per_client + 2 * (len(cfg.screens) + len(cfg.kiosks)) + STAFF_STREAMS


class App:
    """The running edge: every part built once, here."""

    def __init__(self, cfg: Config, *, on_decision: Callable[[Decision], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`clock`: the time campaign schedules are evaluated at (tests move it)."""
        self.cfg = cfg
        self.clock = clock
        self.metrics = Metrics()
        self.conn = open_writer(cfg.db.path)
        writer = Writer(self.conn)
        self.inbox = Inbox()
        self.signer = Signer.from_config(cfg)
        self.trusted_proxies = TrustedProxies(cfg.http.trusted_proxies)

        presence = PresenceTracker(cfg, rows(self.conn, "SELECT * FROM presence"))
        identity = Identity(cfg, self.conn)
        # The one catalogue every page reads: TOML products and the central's (kept in the products table).
        self.catalogue = Catalogue(cfg, self.conn)
        # Decisions run in the writer thread: profiles are read through the writer's connection.
        shoppers = CustomerContext(cfg, self.conn, catalogue=self.catalogue)
        rules = RuleEngine(cfg, shoppers)
        displays = Displays(cfg, rows(self.conn, "SELECT * FROM displays"))
        self.assets = asset_cache(cfg)
        self.campaigns = Campaigns(cfg, rules, displays, has_asset=self.assets.has, clock=clock,
                                   catalogue=self.catalogue)
        self.campaigns.reload(self.conn)
        journeys = Journeys(cfg, self.signer, self.metrics, self.catalogue)
        gateways = GatewayHealth(cfg)
        self.privacy = Privacy(cfg, writer, (presence, identity, rules, shoppers, displays), shoppers=shoppers,
                               displays=displays)

        self.uplink = Uplink(cfg.db.path, self.inbox.submit_task, remember=identity.remember,
                             profiles_changed=self.privacy.profiles_changed, erase_by_key=self.privacy.erase_by_key,
                             max_profiles=cfg.central.cache_max_profiles, profile_ttl_s=cfg.central.cache_ttl_s,
                             readiness=self.readiness, dead_threads=self.dead_threads, campaigns=self.campaigns,
                             assets=self.assets)
        self.sync = SyncClient(sync_settings(cfg), self.uplink, self.metrics, assets=self.assets)
        self.central = CentralLink(self.sync) if self.sync.enabled else None
        self.mqtt = MqttLink(cfg, self.inbox.put, backlog=self.inbox.qsize, retained=displays.publications)
        # The staff feed has its own STAFF_STREAMS threads: the kiosk and signage streams never take them.
        self.pages = Pages(cfg, self.metrics, server_threads=server_threads(cfg) - STAFF_STREAMS,
                           catalogue=self.catalogue)
        self.catalogue.listeners.append(self.pages.on_catalogue)
        self.pipeline = Pipeline(cfg, self.inbox, writer, self.metrics, presence=presence, identity=identity,
                                 shoppers=shoppers, rules=rules, displays=displays, journeys=journeys,
                                 gateways=gateways, link=self.mqtt, central=self.central, on_decision=on_decision,
                                 on_display=self.pages.on_display, campaigns=self.campaigns)

        self._finish_interrupted_check(writer)
        # The staff app (edge/staff/): its feed follows the event log; its desk writes through the writer.
        self.staff_feed = Feed(cfg, self.run_in_writer, catalogue=self.catalogue)
        self.desk = Desk(cfg, self.signer, self.run_in_writer, self.inbox.put,
                         self.central.fetch if self.central is not None else None,
                         self.central.wake if self.central is not None else None, catalogue=self.catalogue)
        self.staff_streams = StaffStreams(STAFF_STREAMS)

        self.http_server: Any = None
        self.http_port: int | None = None
        self._http_thread: threading.Thread | None = None
        self._housekeeping_thread: threading.Thread | None = None
        self._campaign_thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.watchdog = Watchdog()
        self.watchdog.watch("pipeline-writer", lambda: self.pipeline.thread)
        self.watchdog.watch("housekeeping", lambda: self._housekeeping_thread)
        self.watchdog.watch("campaign-clock", lambda: self._campaign_thread)
        self.watchdog.watch("http", lambda: self._http_thread)
        self.watchdog.watch("staff-feed", lambda: self.staff_feed.thread)
        self.watchdog.watch("mqtt", lambda: self.mqtt.thread)
        for name in SYNC_THREADS:
            self.watchdog.watch(name, partial(self.sync.thread, name))
        self.metrics.gauge("instore_edge_mqtt_connected", lambda: 1.0 if self.mqtt.connected.is_set() else 0.0)
        self.metrics.gauge("instore_edge_outbox_pending", self._outbox_pending)
        self.metrics.gauge("instore_edge_campaigns_applied", lambda: float(len(self.campaigns.applied)))
        self.metrics.gauge("instore_edge_assets_cache_bytes", lambda: float(self.assets.size()))
        self.metrics.gauge("instore_edge_outbox_capacity_ratio",
                           lambda: self._outbox_pending() / self.cfg.central.outbox_max_events)

    def _finish_interrupted_check(self, writer: Writer) -> None:
        """An erasure whose bytes the edge stopped before checking: the file is rebuilt before ingest starts."""
        try:
            took = writer.finish_interrupted_check()
        except sqlite3.Error as exc:
            self.pipeline.erasures_unverified += 1
            log.error("the edge stopped before checking an erasure's bytes, and VACUUM failed (%s): copies of erased "
                      "data may be left in %s; free disk space (VACUUM needs about the file's size) and restart",
                      exc, self.cfg.db.path)
            return
        if took is not None:
            log.warning("the edge stopped before checking an erasure's bytes (or left copies it could not remove): "
                        "VACUUM rewrote %s from the live rows in %.1f s (the erased values are not kept, so this "
                        "cannot look for them)", self.cfg.db.path, took)

    # --- what HTTP and the pages ask of the edge (edge.web.ports.Edge, edge.pages.ports.Store) -----------------

    @property
    def stopping(self) -> bool:
        return self._stopped.is_set()

    def submit(self, msg: Message) -> None:
        self.inbox.put(msg)

    def run_in_writer(self, fn: Callable[[Writer], Any], timeout: float = 10.0) -> Any:
        return self.inbox.run(fn, timeout)

    def record_event(self, event: Event, timeout: float = 10.0) -> bool:
        """Record an event the edge itself makes (a shopper's action on a landing page) in the log and the
        outbox, and wake the push: True when new, False when its id was recorded already (a double submit)."""
        seq = self.inbox.run(lambda writer: writer.insert_event(event), timeout)
        self.sync.wake()
        return seq is not None

    def erase(self, customer: str, timeout: float = 30.0) -> bool:
        """Remove a shopper from every table, every in-memory state and the file's bytes on this device, and
        ask the central store to erase them everywhere (edge.privacy); True once committed."""
        try:
            self.inbox.run(lambda writer: self.privacy.erase(customer, time.time()), timeout)
        except (TimeoutError, RuntimeError):
            return False
        self.sync.wake()
        return True

    def consume(self, tok: Token, by: str) -> bool:
        return self.pipeline.journeys.consume(tok, by, self.inbox.run)

    def mint_handoff(self, kiosk: str, session: str, customer: str | None) -> str:
        return self.pipeline.journeys.mint_handoff(kiosk, session, customer, self.inbox.run)

    def personal(self, customer: str | None) -> Shopper | None:
        return self.pipeline.shoppers.personal(customer)

    def kiosk_view(self, code: str) -> dict[str, Any]:
        return self.pipeline.shoppers.kiosk_view(code)

    def products_for(self, zone: str | None) -> list[dict[str, Any]]:
        return self.catalogue.for_zone(zone)

    def apply_product(self, entry: dict[str, Any], timeout: float = 10.0) -> bool:
        """One content-feed product entry applied in the writer's transaction (edge.domain.catalogue): True when
        it changed the catalogue; ProductError (its message says what to fix) when malformed."""
        def apply(writer: Writer) -> bool | ProductError:
            try:
                return self.catalogue.apply_product(entry, writer.conn)
            except ProductError as exc:  # validated before any write: nothing to roll back
                return exc

        result = self.inbox.run(apply, timeout)
        if isinstance(result, ProductError):
            raise result
        return bool(result)

    def displays(self) -> dict[str, dict[str, Any]]:
        return self.pipeline.displays.all()

    def display(self, ident: str) -> dict[str, Any] | None:
        return self.pipeline.displays.snapshot(ident)

    def fallback(self, ident: str) -> dict[str, Any]:
        return self.pipeline.displays.fallback(ident)

    def gateways(self) -> list[dict[str, Any]]:
        return self.pipeline.gateways.report()

    def sync_status(self) -> dict[str, Any]:
        return self.sync.status()

    def dead_threads(self) -> dict[str, str]:
        return self.watchdog.dead()

    def readiness(self) -> dict[str, dict[str, Any]]:
        checks: dict[str, dict[str, Any]] = {}
        connected = self.mqtt.connected.is_set()
        checks["broker"] = {"ok": connected, "detail": "connected" if connected else
                            (self.mqtt.last_error or f"not connected to {self.cfg.mqtt.host}:{self.cfg.mqtt.port}")}
        checks["db"] = {"ok": self.pipeline.healthy, "detail": self.pipeline.last_error or "writable"}
        lag = self.pipeline.lag()
        checks["ingest"] = {"ok": lag < 30, "lag_s": round(lag, 3)}
        unverified = self.pipeline.erasures_unverified
        checks["erasure"] = {"ok": unverified == 0, "unverified": unverified,
                             "detail": "erased data found on disk after an erasure: see the log" if unverified else
                             "every erasure verified gone from the database file"}
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

    def create_app(self) -> Flask:
        app = create_app(self)
        app.register_blueprint(campaigns_web.blueprint(self, self.assets))
        self.pages.register(app, self)
        app.register_blueprint(staff_blueprint(self, self.desk, self.staff_feed, self.staff_streams))
        return app

    # --- threads ---------------------------------------------------------------------------------------------

    def _outbox_pending(self) -> float:
        conn = connect(self.cfg.db.path)
        try:
            return float(outbox_stats(conn, time.time())[0])
        finally:
            conn.close()

    def _purge_expired(self) -> None:
        """Retention, in the writer thread, in batches so ingest never waits long behind it."""
        days, total = self.cfg.privacy.retention_days, 0
        while not self._stopped.is_set():
            def purge(w: Writer) -> int:
                n = purge_expired(w.conn, days, time.time(), limit=20000)
                if n:
                    w.want_wipe()  # the purged rows' old pages leave the WAL too
                return n

            try:
                purged = self.inbox.run(purge, 120)
            except (TimeoutError, RuntimeError):
                break
            total += purged
            if purged < 20000:
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

    def _campaign_clock(self) -> None:
        """Campaign schedules switch at the right local time (a writer task when one enters or leaves its
        schedule), and impressions go to the outbox every IMPRESSIONS_EVERY_S."""
        faults.thread_start("campaign-clock")
        last_report = time.monotonic()
        while not self._stopped.wait(CAMPAIGN_CLOCK_S):
            try:
                if self.campaigns.due(self.clock()):
                    self.inbox.submit_task(lambda writer: self.campaigns.tick(writer))
                if time.monotonic() - last_report >= IMPRESSIONS_EVERY_S:
                    last_report = time.monotonic()
                    self.inbox.submit_task(self._report_impressions)
            except Exception:
                log.exception("the campaign clock failed; retrying")

    def _report_impressions(self, writer: Writer) -> None:
        """Campaign impressions since the last report (kept in the database, so a restart neither repeats nor
        skips a window)."""
        now = self.clock()
        row = writer.conn.execute("SELECT value FROM sync_state WHERE key = 'impressions_to'").fetchone()
        since = float(row[0]) if row else now - IMPRESSIONS_EVERY_S
        if self.campaigns.report_impressions(writer, since, now):
            self.sync.wake()
        writer.conn.execute("INSERT INTO sync_state(key, value) VALUES ('impressions_to', ?) "
                            "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (repr(now),))

    def start(self, *, http: bool = True) -> App:
        log.info("starting store %s: db %s, broker %s:%s", self.cfg.store.id, self.cfg.db.path,
                 self.cfg.mqtt.host, self.cfg.mqtt.port)
        self.pipeline.start()
        self.desk.start()
        self.staff_feed.start()
        self.sync.start()
        self._housekeeping_thread = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        self._housekeeping_thread.start()
        self._campaign_thread = threading.Thread(target=self._campaign_clock, name="campaign-clock", daemon=True)
        self._campaign_thread.start()
        self.mqtt.start()
        if http:
            self._start_http()
        return self

    def _start_http(self) -> None:
        app = self.create_app()
        http = self.cfg.http
        limits = ServerLimits(max_body_bytes=self.cfg.limits.http_body_bytes,
                              connection_limit=http.connection_limit, per_client=http.connections_per_client,
                              request_timeout_s=http.request_timeout_s, idle_timeout_s=http.idle_timeout_s,
                              trusted=self.trusted_proxies)
        self.http_server = create_server(
            app, host=http.host, port=http.port, threads=server_threads(self.cfg), limits=limits,
            ident="instore-edge",
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
        try:
            self.pages.close()  # first, while HTTP still serves: the pages reconnect to the next process
            self.staff_streams.close_all()
            self.staff_feed.notify()
        except Exception:
            log.exception("ending the page streams failed")
        if self.http_server is not None:
            # Let requests in flight finish first: a worker finishing after close() writes to the closed
            # trigger and waitress logs a traceback.
            self.http_server.task_dispatcher.shutdown(timeout=5)  # type: ignore[attr-defined]
            self.http_server.close()
            # close() only stops accepting: have the server's loop close the connections still open (idle
            # keep-alive ones too), or a browser reuses them and talks to a service that has stopped.
            for channel in list(self.http_server._map.values()):  # type: ignore[attr-defined]
                channel.will_close = True
        self.mqtt.stop_taking()  # unacked messages stay with the broker
        self.sync.stop()
        self.staff_feed.stop()
        if self.central is not None:
            self.central.close()
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
