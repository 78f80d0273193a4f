"""Edge ⇄ central sync against the real reference central store and a real edge pipeline.

The central store runs in-process (CentralServer on a free port); failures are real too: a port with
nothing listening (central down), a flaky HTTP proxy in front of the central store (500s, answers that
come after the client gave up, connections closed before the answer), and a socket server that accepts
and never answers (central hangs).
"""

from __future__ import annotations

import http.server
import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from edge.broker import free_port
from edge.config import Config
from edge.uplink import Uplink, sync_settings
from sync.central import CentralServer
from sync.client import SyncClient
from sync.local import ProfileUpsert
from sync.report import status_lines
from sync.protocol import erase_key
from tests.conftest import wait_until

CENTRAL_ADMIN = "central-admin-token-0123456789"
STORE_TOKEN = "Rl8E55vNgGSC3kCf7ewTOV-J"
STORE = "teststore"
FAST = dict(backoff_base_s=0.01, backoff_cap_s=0.05, push_idle_s=0.05, push_linger_s=0.0, push_timeout_s=2.0)


# --- helpers ----------------------------------------------------------------------------------------------


def start_central(tmp_path: Path, port: int = 0) -> CentralServer:
    return CentralServer(tmp_path / "central.db", CENTRAL_ADMIN, {STORE: STORE_TOKEN}, port=port).start()


def admin(central_url: str, method: str, path: str, **kw: Any) -> requests.Response:
    r = requests.request(method, central_url + path, headers={"Authorization": f"Bearer {CENTRAL_ADMIN}"},
                         timeout=30, **kw)
    r.raise_for_status()
    return r


def central_events(central_url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        page = admin(central_url, "GET", "/v1/admin/events",
                     params={"store": STORE, "limit": 5000, "after": after}).json()
        out += page["events"]
        after = page["next_after"]
        if not page["more"]:
            return out


def produce(service: Any, n: int, start: int = 0, **fields: Any) -> None:
    """n events straight into events + outbox through the writer (as the pipeline records them)."""
    done = threading.Event()
    now = time.time()

    def task(writer: Any) -> None:
        conn = writer.conn
        for i in range(start, start + n):
            cur = conn.execute(
                "INSERT INTO events(event_id, kind, type, source, zone, subject, customer, ts, received_at, data) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                (f"ev-{i:06d}", fields.get("kind", "window"), "touch", "window-1", "entrance",
                 fields.get("subject"), fields.get("customer"), fields.get("ts", now), now,
                 json.dumps({"i": i, "session": f"s{i % 7}"})))
            conn.execute("INSERT INTO outbox(event_seq) VALUES (?)", (cur.lastrowid,))

    service.inbox.submit_task(task, done.set)
    assert done.wait(30)


def in_writer(service: Any, fn: Callable[[Any], Any]) -> None:
    """fn(write connection) in the edge's writer; returns once committed (so earlier writes are too)."""
    done = threading.Event()
    service.inbox.submit_task(lambda writer: fn(writer.conn) and None, done.set)
    assert done.wait(30)


def query(cfg: Config, sql: str, params: tuple = ()) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(cfg.db.path, timeout=10) as conn:
        return conn.execute(sql, params).fetchall()


def assert_all_arrived_in_order(central_url: str, n: int) -> None:
    events = central_events(central_url)
    ids = [e["event_id"] for e in events]
    assert len(ids) == n, f"{len(ids)} events at the central store, expected {n}"
    assert ids == [f"ev-{i:06d}" for i in range(n)], "events arrived out of order or twice"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == n


@pytest.fixture
def service(make_config: Callable[..., Config]) -> Iterator[Callable[..., Any]]:
    """An edge App with its pipeline writer running (no MQTT/HTTP needed for sync)."""
    from edge.app import App

    made: list[Any] = []

    def make(url: str, token: str = STORE_TOKEN, **central: Any) -> Any:
        cfg = make_config(central={"url": url, "token": token, "push_batch": 500, "pull_interval_s": 3600,
                                   **central})
        svc = App(cfg)
        svc.pipeline.start()
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.pipeline.stop()
        svc.conn.close()


@pytest.fixture
def clients() -> Iterator[Callable[..., SyncClient]]:
    made: list[SyncClient] = []

    def make(svc: Any, *, start: bool = True, max_profiles: int | None = None, **kw: Any) -> SyncClient:
        local = svc.uplink
        if max_profiles is not None:  # the edge's side of sync with a smaller profile cache (below config's least)
            local = Uplink(svc.cfg.db.path, svc.inbox.submit_task, remember=local.remember,
                           profiles_changed=local.profiles_changed, erase_by_key=local.erase_by_key,
                           max_profiles=max_profiles, profile_ttl_s=local.profile_ttl_s,
                           readiness=local.readiness, dead_threads=local.dead_threads)
        c = SyncClient(sync_settings(svc.cfg, **{**FAST, **kw}), local, svc.metrics)
        made.append(c)
        if start:
            c.start()
        return c

    yield make
    for c in made:
        c.stop()


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralServer]:
    c = start_central(tmp_path)
    yield c
    c.stop()


class Proxy:
    """Forwards each request to the central store (`handle` may do otherwise), on its own port."""

    def __init__(self, target: str) -> None:
        self.target = target
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                proxy.handle(self, self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            do_GET = do_POST = _handle

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, h: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        self.reply(h, self.forward(h, h.path, body))

    def forward(self, h: http.server.BaseHTTPRequestHandler, path: str, body: bytes) -> requests.Response:
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() in ("authorization", "content-type", "idempotency-key")}
        return requests.request(h.command, self.target + path, headers=headers, data=body or None, timeout=60)

    @staticmethod
    def reply(h: http.server.BaseHTTPRequestHandler, r: requests.Response) -> None:
        h.send_response(r.status_code)
        h.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
        if "Idempotent-Replayed" in r.headers:
            h.send_header("Idempotent-Replayed", r.headers["Idempotent-Replayed"])
        h.send_header("Content-Length", str(len(r.content)))
        h.end_headers()
        h.wfile.write(r.content)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FlakyProxy(Proxy):
    """Forwards to the central store, failing every other request: a 500 (not forwarded), an answer later
    than the client waits (forwarded: the central store has the batch), a connection closed before the
    answer (forwarded too)."""

    MODES = ("500", "late", "close")

    def __init__(self, target: str, late_s: float) -> None:
        self.late_s = late_s
        self.count = 0
        self.failures: dict[str, int] = {m: 0 for m in self.MODES}
        self.lock = threading.Lock()
        super().__init__(target)

    def handle(self, h: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        with self.lock:
            n = self.count
            self.count += 1
        mode = None if n % 2 == 0 else self.MODES[(n // 2) % 3]
        if mode == "500":
            self.failures[mode] += 1
            h.send_response(500)
            h.send_header("Content-Type", "application/json")
            h.end_headers()
            h.wfile.write(b'{"error": {"code": "internal_error", "message": "flaky"}}')
            return
        r = self.forward(h, h.path, body)
        if mode is not None:
            self.failures[mode] += 1
            if mode == "late":
                time.sleep(self.late_s)
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.reply(h, r)


class CentralWithoutStreams(Proxy):
    """The central store as a release before feed streams answered: the `stream` parameter never reaches it
    (an older central ignores a parameter it does not know), so a feed request is answered as a long-poll."""

    def __init__(self, target: str) -> None:
        self.streams_asked = 0
        super().__init__(target)

    def handle(self, h: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        path, _, query = h.path.partition("?")
        params = [kv for kv in query.split("&") if kv]
        kept = [kv for kv in params if not kv.startswith("stream=")]
        self.streams_asked += len(params) - len(kept)
        self.reply(h, self.forward(h, path + ("?" + "&".join(kept) if kept else ""), body))


class HangingServer:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def stop(self) -> None:
        self._stop = True
        self.sock.close()
        for c in self.conns:
            c.close()


def profile(cid: str, **fields: Any) -> dict[str, Any]:
    return {"customer_id": cid, "first_name": "Anna", "consents": {"personalization": True, "marketing": False},
            "identities": [f"device:app-{cid}"], **fields}


# --- push -----------------------------------------------------------------------------------------------


def test_backlog_built_while_central_is_down_arrives_once_and_in_order(tmp_path: Path, service, clients) -> None:
    port = free_port()
    svc = service(f"http://127.0.0.1:{port}")
    client = clients(svc)
    produce(svc, 10_000)
    wait_until(lambda: client.status()["errors"]["push"], what="a failed push while the central store is down")
    st = client.status()
    assert st["outbox_pending"] == 10_000 and st["last_push_success"] is None
    assert "cannot reach the central store" in st["last_error"]
    central = start_central(tmp_path, port)
    try:
        wait_until(lambda: client.status()["outbox_pending"] == 0, timeout=30, what="the outbox to drain")
        assert_all_arrived_in_order(central.url, 10_000)
        st = client.status()
        assert st["last_push_success"] is not None and st["outbox_oldest_age_s"] is None
        assert "instore_edge_sync_last_success_timestamp" in svc.metrics.render()
    finally:
        client.stop()  # its keep-alive connections would hold the central server's stop
        central.stop()


def test_flaky_central_every_other_request_fails_still_exactly_once_in_order(central, service, clients) -> None:
    proxy = FlakyProxy(central.url, late_s=0.6)
    try:
        svc = service(proxy.url)
        client = clients(svc, push_timeout_s=0.3)
        produce(svc, 10_000)
        wait_until(lambda: client.status()["outbox_pending"] == 0, timeout=40, what="the outbox to drain")
        assert_all_arrived_in_order(central.url, 10_000)
        assert all(proxy.failures[m] > 0 for m in proxy.MODES), proxy.failures
        # Batches the central store recorded but whose answer was lost were sent again with the same
        # Idempotency-Key: the central store replayed its first answer instead of recording them twice.
        assert client.status()["replayed_batches"] > 0
    finally:
        proxy.stop()


def test_rejected_events_are_recorded_never_dropped_silently(central, service, clients) -> None:
    svc = service(central.url)
    client = clients(svc)
    produce(svc, 3)
    produce(svc, 1, start=3, ts=time.time() * 1000)  # milliseconds: the central store refuses it
    produce(svc, 2, start=4)
    wait_until(lambda: client.status()["outbox_pending"] == 0, what="the outbox to drain")
    rows = query(svc.cfg, "SELECT event_id, reason, detail FROM sync_rejects")
    assert len(rows) == 1 and rows[0][0] == "ev-000003" and rows[0][1] == "invalid_value"
    assert "milliseconds" in rows[0][2]
    assert [e["event_id"] for e in central_events(central.url)] == [f"ev-{i:06d}" for i in (0, 1, 2, 4, 5)]
    assert client.status()["rejected_total"] == 1


def test_wrong_token_is_refused_with_a_clear_error(central, service, clients) -> None:
    svc = service(central.url, token="Iw2sc0k3IwdtQ479UKP5Dmlh")
    client = clients(svc)
    produce(svc, 5)
    wait_until(lambda: client.status()["auth_ok"] is False, what="the central store to refuse the token")
    st = client.status()
    assert "central refused the store token" in st["last_error"] and "[central].token" in st["last_error"]
    assert st["outbox_pending"] == 5 and st["last_push_success"] is None
    assert central_events(central.url) == []


# --- pull -----------------------------------------------------------------------------------------------


def test_erase_and_consent_revocation_propagate_within_one_pull(central, service, clients) -> None:
    admin(central.url, "POST", "/v1/admin/profiles", json={"profiles": [profile("c-1"), profile("c-2")]})
    svc = service(central.url)
    client = clients(svc, start=False)
    assert client.pull_once() == 2
    assert query(svc.cfg, "SELECT customer_id, consent_personalization, first_name FROM profiles ORDER BY 1") == \
        [("c-1", 1, "Anna"), ("c-2", 1, "Anna")]
    assert query(svc.cfg, "SELECT key, customer_id, via FROM identities ORDER BY 1") == \
        [("device:app-c-1", "c-1", "central"), ("device:app-c-2", "c-2", "central")]

    done = threading.Event()

    def local_traces(writer: Any) -> None:  # what the edge holds about c-1 from its visit
        c = writer.conn
        c.execute("INSERT INTO presence(subject, zone, gateway, entered_at, last_seen, customer) "
                  "VALUES ('device:app-c-1', 'entrance', 'gw-entrance', 1, 2, 'c-1')")
        c.execute("INSERT INTO events(event_id, kind, source, subject, customer, ts, received_at, data) "
                  "VALUES ('k1', 'kiosk', 'kiosk-1', 'device:app-c-1', 'c-1', 1e9, 1e9, '{\"item\": \"x\"}')")
        c.execute("INSERT INTO events(event_id, kind, source, subject, customer, ts, received_at, data) "
                  "VALUES ('b1', 'beacon', 'gw-entrance', 'device:app-c-1', NULL, 1e9, 1e9, '{\"rssi\": -60}')")
        c.execute("INSERT INTO decisions(ts, screen, content_id, rule_id, reason, customer, payload) "
                  "VALUES (1, 'entrance-1', 'welcome', 'r', 'x', 'c-1', '{}')")

    svc.inbox.submit_task(local_traces, done.set)
    assert done.wait(10)

    admin(central.url, "DELETE", "/v1/admin/profiles/c-1")
    admin(central.url, "POST", "/v1/admin/profiles", json={"customer_id": "c-2",
                                                           "consents": {"personalization": False}})
    assert client.pull_once() == 2
    assert query(svc.cfg, "SELECT customer_id FROM profiles") == [("c-2",)]
    assert query(svc.cfg, "SELECT consent_personalization FROM profiles") == [(0,)]
    assert json.loads(query(svc.cfg, "SELECT profile FROM profiles")[0][0])["consents"]["personalization"] is False
    assert query(svc.cfg, "SELECT key FROM identities") == [("device:app-c-2",)]
    assert query(svc.cfg, "SELECT subject, customer FROM presence") == [("device:app-c-1", None)] or \
        query(svc.cfg, "SELECT count(*) FROM presence WHERE customer = 'c-1'") == [(0,)]
    assert query(svc.cfg, "SELECT event_id, subject, customer, data FROM events ORDER BY event_id") == \
        [("b1", None, None, None), ("k1", None, None, None)]
    assert query(svc.cfg, "SELECT count(*) FROM decisions WHERE customer IS NOT NULL") == [(0,)]
    # A stale copy of the erased profile (an on-demand fetch that raced the erasure) is not resurrected.
    stale = profile("c-1", version=1)
    svc.uplink.cache_profile(ProfileUpsert("c-1", 1, stale)).result(10)
    assert query(svc.cfg, "SELECT count(*) FROM profiles WHERE customer_id = 'c-1'") == [(0,)]
    assert client.pull_once() == 0
    assert client.status()["cursor"]


def test_an_erasure_asked_at_the_store_reaches_the_central_and_nothing_brings_the_shopper_back_meanwhile(
        central, service, clients) -> None:
    admin(central.url, "POST", "/v1/admin/profiles", json={"profiles": [profile("c-1"), profile("c-2")]})
    svc = service(central.url)
    client = clients(svc, start=False)
    assert client.pull_once() == 2
    assert svc.erase("c-1")
    assert query(svc.cfg, "SELECT count(*) FROM profiles WHERE customer_id = 'c-1'") == [(0,)]
    [(key, pending)] = query(svc.cfg, "SELECT customer_id, pending FROM sync_tombstones")
    assert (key, pending) == (erase_key("c-1"), 1)
    assert client.status()["erasures_pending"] == 1
    # The request to the central store waits in the outbox, by hash: the id is nowhere in the event.
    [(kind, customer, subject, data)] = query(svc.cfg, "SELECT e.kind, e.customer, e.subject, e.data FROM outbox o "
                                                       "JOIN events e ON e.seq = o.event_seq")
    assert (kind, customer, subject, json.loads(data)) == ("erasure", None, None, {"customer_hash": erase_key("c-1")})

    # Before the central store hears of it, everything it says about c-1 is refused: a newer version in the
    # change feed, an identity resolution, an on-demand fetch, even a full resync.
    admin(central.url, "POST", "/v1/admin/profiles", json={"customer_id": "c-1", "tier": "gold"})
    assert client.pull_once() == 0
    matches = client.resolve(["device:app-c-1"])
    assert matches == {"device:app-c-1": "c-1"}  # the central store still knows the device
    svc.uplink.store_identity_matches(matches).result(10)
    assert client.fetch_profile("c-1") is not None
    in_writer(svc, lambda conn: None)  # the fetched profile's write has run by now
    # A full resync (the central store's feed restarted: a cursor from another database).
    in_writer(svc, lambda conn: conn.execute("UPDATE sync_state SET value = 'feed0.1' WHERE key = 'cursor'"))
    assert client.pull_once() == 1  # c-2 again; c-1 still refused
    assert query(svc.cfg, "SELECT count(*) FROM profiles WHERE customer_id = 'c-1'") == [(0,)]
    assert query(svc.cfg, "SELECT count(*) FROM identities WHERE customer_id = 'c-1'") == [(0,)]
    assert query(svc.cfg, "SELECT pending FROM sync_tombstones") == [(1,)]

    # Pushed: the central store erases c-1 and feeds the erasure back; the tombstone is confirmed.
    assert client.push_once() == 1
    assert requests.get(f"{central.url}/v1/profiles/c-1", headers={"Authorization": f"Bearer {STORE_TOKEN}"},
                        timeout=10).status_code == 404
    [asked] = [e for e in central_events(central.url) if e["kind"] == "erasure"]
    assert (asked["customer"], asked["subject"], asked["data"], asked["applied"]) == \
        (None, None, {"customer_hash": erase_key("c-1")}, "erasure")
    assert client.pull_once() == 1
    assert query(svc.cfg, "SELECT customer_id, pending FROM sync_tombstones") == [(erase_key("c-1"), 0)]
    assert client.status()["erasures_pending"] == 0
    # A later sign-up under the same id is a new profile, with a newer version: learned again.
    admin(central.url, "POST", "/v1/admin/profiles", json=profile("c-1"))
    assert client.pull_once() == 1
    assert query(svc.cfg, "SELECT customer_id FROM profiles ORDER BY 1") == [("c-1",), ("c-2",)]


def test_feed_reset_resyncs_and_cache_is_bounded_keeping_present_shoppers(central, service, clients) -> None:
    admin(central.url, "POST", "/v1/admin/profiles", json={"profiles": [profile(f"c-{i}") for i in range(6)]})
    svc = service(central.url)
    client = clients(svc, start=False, max_profiles=3)
    done = threading.Event()
    svc.inbox.submit_task(lambda w: w.conn.execute(
        "INSERT INTO presence(subject, zone, gateway, entered_at, last_seen, customer) "
        "VALUES ('device:app-c-0', 'entrance', 'gw-entrance', 1, 2, 'c-0')"), done.set)
    assert done.wait(10)
    client.pull_once()
    cached = {r[0] for r in query(svc.cfg, "SELECT customer_id FROM profiles")}
    assert len(cached) == 3 and "c-0" in cached  # present: never evicted, though seen long ago
    assert {r[0] for r in query(svc.cfg, "SELECT customer_id FROM identities")} == cached

    # A cursor from another central database: the feed restarts with reset, the edge resyncs fully.
    in_writer(svc, lambda conn: conn.execute("UPDATE sync_state SET value = 'feedfeed.999' WHERE key = 'cursor'"))
    assert client.pull_once() >= 6
    assert client.status()["cursor"].split(".")[0] != "feedfeed"
    assert len(query(svc.cfg, "SELECT customer_id FROM profiles")) == 3


def test_an_idle_store_waits_at_the_central_and_a_change_arrives_without_polling(central, service, clients) -> None:
    svc = service(central.url, pull_interval_s=0.2)
    client = clients(svc)
    wait_until(lambda: client.status()["last_pull"], what="the first pull")
    # Idle, the store's pull waits at the central store (long-poll) instead of asking every 0.2 s.
    wait_until(lambda: central.store.signal.waiting == 1, what="a pull waiting at the central store")
    asked = client.status()["last_pull_attempt"]
    time.sleep(1.0)
    assert client.status()["last_pull_attempt"] == asked and central.store.signal.waiting == 1
    admin(central.url, "POST", "/v1/admin/profiles", json=profile("c-new", home_store=STORE))
    wait_until(lambda: query(svc.cfg, "SELECT count(*) FROM profiles WHERE customer_id = 'c-new'") == [(1,)],
               what="the new profile at the store")
    # The request stays open (a stream): the next changes come on it, one after another, without asking again.
    for n in range(3):
        admin(central.url, "POST", "/v1/admin/profiles", json=profile(f"c-next-{n}", home_store=STORE))
        wait_until(lambda: query(svc.cfg, f"SELECT count(*) FROM profiles WHERE customer_id = 'c-next-{n}'")
                   == [(1,)], what=f"change {n + 1} after the first at the store")
    assert client.status()["last_pull_attempt"] == asked
    # Stopping does not wait for a pull held at the central store.
    wait_until(lambda: central.store.signal.waiting == 1, what="the next pull waiting")
    started = time.monotonic()
    client.stop()
    assert time.monotonic() - started < 5


def test_a_store_follows_a_central_without_feed_streams_by_long_polling(central, service, clients) -> None:
    older = CentralWithoutStreams(central.url)
    try:
        svc = service(older.url, pull_interval_s=0.2)
        clients(svc)
        wait_until(lambda: central.store.signal.waiting == 1, what="a pull waiting at the central store")
        for n in range(3):  # each answered page, then a new request
            admin(central.url, "POST", "/v1/admin/profiles", json=profile(f"c-old-{n}", home_store=STORE))
            wait_until(lambda: query(svc.cfg, f"SELECT count(*) FROM profiles WHERE customer_id = 'c-old-{n}'")
                       == [(1,)], what=f"change {n + 1} at the store")
        wait_until(lambda: older.streams_asked >= 4, what="a new request after each answered page")
    finally:
        older.stop()


def test_a_store_with_nothing_to_push_still_reports_its_health(central, service, clients, monkeypatch) -> None:
    """An empty push carries the report at start and then every HEALTH_EVERY_S: a quiet store is heard."""
    from sync import protocol

    monkeypatch.setattr(protocol, "HEALTH_EVERY_S", 0.5)
    svc = service(central.url)
    clients(svc)  # over the edge's own side of the link (edge.uplink), which says how the edge is

    def row() -> dict[str, Any]:
        stores = admin(central.url, "GET", "/v1/admin/stores").json()["stores"]
        return next(r for r in stores if r["store"] == STORE)

    wait_until(lambda: row()["health_at"], what="the first health report")
    first = row()
    assert first["events_total"] == 0 and first["outbox_pending"] == 0 and first["version"]
    assert first["deadletters_last_hour"] == 0 and first["dead_threads"] == [] and first["breaker"] == "closed"
    assert first["ready"] is False and "broker" in first["not_ready"]  # this edge runs without MQTT
    wait_until(lambda: row()["health_at"] > first["health_at"], what="a later heartbeat")


@pytest.mark.parametrize("budget, asked", [(0.0, None), (0.5, 2.0)], ids=["within-budget", "over-budget"])
def test_a_fleet_over_the_centrals_push_budget_pushes_less_often_and_loses_nothing(
        tmp_path: Path, service, clients, budget: float, asked: float | None) -> None:
    """A central with more stores pushing than its push budget asks each for a longer interval (here one
    store against half a push a second: every 2 s); the edge follows it, its events arriving whole and in
    order in fewer pushes. Within the budget nothing is asked and the edge pushes as events come."""
    from sync.central.storage import Settings

    central = CentralServer(tmp_path / "central.db", CENTRAL_ADMIN, {STORE: STORE_TOKEN}, port=0,
                            settings=Settings(push_budget=budget)).start()
    try:
        svc = service(central.url)
        client = clients(svc)
        for k in range(25):  # 5 s of events, 4 every 0.2 s
            produce(svc, 4, start=4 * k)
            time.sleep(0.2)
        wait_until(lambda: len(central_events(central.url)) == 100, timeout=30, what="every event at the central")
        assert_all_arrived_in_order(central.url, 100)
        assert client.status()["push_every_s"] == asked
        shown = status_lines(client.status(), now=time.time(), tz=ZoneInfo("UTC"), source="the edge", live=True)
        assert any(line.startswith("push interval") and "every 2 s" in line for line in shown) == bool(asked)
        scraped = requests.get(f"{central.url}/metrics", timeout=10).text  # what the chain's IT sees
        assert f"instore_central_push_interval_seconds {asked or 1.0}" in scraped
        pushes = sorted({e["central_received_at"] for e in central_events(central.url)})
        gaps = [b - a for a, b in zip(pushes, pushes[1:])]
        if asked:
            assert len(pushes) <= 5 and min(gaps) >= asked - 0.2, gaps
        else:
            assert len(pushes) >= 8, gaps
    finally:
        central.stop()


# --- on-demand fetch ----------------------------------------------------------------------------------------


def test_fetch_and_resolve_cache_what_they_find(central, service, clients) -> None:
    admin(central.url, "POST", "/v1/admin/profiles", json=profile("c-9", identities=["loyalty:999"]))
    svc = service(central.url)
    client = clients(svc)
    prof = client.fetch_profile("c-9")
    assert prof is not None and prof["first_name"] == "Anna"
    assert client.fetch_profile("nobody") is None
    wait_until(lambda: query(svc.cfg, "SELECT 1 FROM profiles WHERE customer_id = 'c-9'"),
               what="the fetched profile to be cached")
    assert client.resolve(["loyalty:999", "loyalty:000"]) == {"loyalty:999": "c-9"}
    admin(central.url, "POST", "/v1/admin/profiles", json=profile("c-10", identities=["loyalty:1010"]))
    client.request_resolution(["loyalty:1010"])
    wait_until(lambda: query(svc.cfg, "SELECT customer_id FROM identities WHERE key = 'loyalty:1010'") == [("c-10",)],
               what="the resolved identity to be stored")
    assert client.breaker.state == "closed"


def test_fetch_times_out_cleanly_when_central_hangs_and_the_breaker_opens(service, clients) -> None:
    hang = HangingServer()
    try:
        svc = service(hang.url, fetch_timeout_ms=200)
        client = clients(svc, start=False, breaker_threshold=3, breaker_cooldown_s=0.5)
        for _ in range(3):
            t0 = time.monotonic()
            assert client.fetch_profile("c-1") is None
            assert 0.15 <= time.monotonic() - t0 < 0.6
        assert client.breaker.state == "open"
        assert client.status()["breaker"] == "open"
        t0 = time.monotonic()
        assert client.fetch_profile("c-1") is None and client.resolve(["loyalty:1"]) is None
        client.request_resolution(["loyalty:1"])
        assert time.monotonic() - t0 < 0.05  # open: no request at all
        time.sleep(0.55)
        assert client.breaker.state == "half_open"
        t0 = time.monotonic()
        assert client.fetch_profile("c-1") is None  # the one trial request, which fails again
        assert time.monotonic() - t0 < 0.6
        assert client.breaker.state == "open"
        assert "did not answer" in client.status()["errors"]["fetch"]
    finally:
        hang.stop()


# --- sync below the edge ------------------------------------------------------------------------------------

SYNC_WITHOUT_EDGE = r'''
import json, sys, time
from concurrent.futures import Future


class NoEdge:
    """Any import of the edge package fails, as on a machine that has sync alone."""

    def find_spec(self, name, path=None, target=None):
        if name == "edge" or name.startswith("edge."):
            raise ImportError(f"sync imported {name}")
        return None


sys.meta_path.insert(0, NoEdge())
import pkgutil, importlib, sync
for info in pkgutil.walk_packages(sync.__path__, "sync."):  # the central store and the HTTP plumbing too
    importlib.import_module(info.name)
from sync.client import SyncClient, SyncSettings
from sync.local import Applied, EdgeHealth, LocalCounts, OutboxBatch, OutboxStats


def committed(value=None):
    done = Future()
    done.set_result(value)
    return done


class MemoryLocal:
    """sync.local.Local in memory: three events in the outbox, a profile cache, identity matches."""

    def __init__(self):
        now = time.time()
        self.outbox = {seq: json.dumps({"event_id": f"m-{seq}", "kind": "window", "ts": now, "seq": seq,
                                        "source": "window-1"}) for seq in (1, 2, 3)}
        self.profiles, self.matches, self.kept_cursor = {}, {}, None

    def outbox_batch(self, after_seq, limit):
        seqs = sorted(s for s in self.outbox if s > after_seq)[:limit]
        return OutboxBatch(tuple(seqs), tuple(f"m-{s}" for s in seqs), tuple(self.outbox[s] for s in seqs)) \
            if seqs else None

    def outbox_stats(self):
        return OutboxStats(len(self.outbox), None)

    def cursor(self):
        return self.kept_cursor

    def counts(self):
        return LocalCounts(0, len(self.profiles), 0)

    def health(self):
        return EdgeHealth(ready=True, deadletters_last_hour=2)

    def settle(self, delivered, refused):
        for seq in [*delivered, *(r.seq for r in refused)]:
            del self.outbox[seq]
        return committed()

    def apply_changes(self, changes, *, resync, feed_reset):
        for u in changes.upserts:
            self.profiles[u.customer_id] = dict(u.profile)
        self.kept_cursor = changes.cursor
        return committed(Applied(len(changes.upserts)))

    def cache_profile(self, profile):
        self.profiles[profile.customer_id] = dict(profile.profile)
        return committed(Applied(1))

    def store_identity_matches(self, matches):
        self.matches.update(matches)
        return committed()

    def drop_stale_profiles(self, since):
        return committed()

    def evict_profiles(self):
        return committed(0)


url, token, store = sys.argv[1:4]
local = MemoryLocal()
client = SyncClient(SyncSettings(store_id=store, url=url, token=token), local)
pushed = client.push_once()
pulled = client.pull_once()
local.profiles.clear()
fetched = client.fetch_profile("c-7")
status = client.status()
client.stop()
print(json.dumps({"pushed": pushed, "pulled": pulled, "fetched": fetched and fetched["first_name"],
                  "cached": sorted(local.profiles), "outbox": len(local.outbox), "cursor": status["cursor"],
                  "edge_modules": sorted(m for m in sys.modules if m.split(".")[0] == "edge")}))
'''


def test_sync_pushes_pulls_and_fetches_without_the_edge_package(central) -> None:
    """sync/ sits below the edge: with `edge` unimportable, every sync module loads and a client works
    through its narrow interface (sync.local.Local), here an in-memory one."""
    import subprocess
    import sys

    admin(central.url, "POST", "/v1/admin/profiles", json=profile("c-7"))
    out = subprocess.run([sys.executable, "-c", SYNC_WITHOUT_EDGE, central.url, STORE_TOKEN, STORE],
                         capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["edge_modules"] == []
    assert (result["pushed"], result["outbox"]) == (3, 0)
    assert [e["event_id"] for e in central_events(central.url)] == ["m-1", "m-2", "m-3"]
    assert result["pulled"] == 1 and result["cursor"]
    assert (result["fetched"], result["cached"]) == ("Anna", ["c-7"])
    # Its push carried what the edge said of itself (Local.health) beside sync's own figures (the outbox
    # as it was when the three events left).
    [row] = [r for r in admin(central.url, "GET", "/v1/admin/stores").json()["stores"] if r["store"] == STORE]
    assert (row["ready"], row["deadletters_last_hour"], row["outbox_pending"]) == (True, 2, 3) and row["version"]
