"""Erasure leaves nothing behind: not in the tables, not in memory, not in the bytes of the SQLite files
(old page images in the WAL, free pages), on the edge and on the central store; an erasure asked at a
store reaches the central store and every other store, and the edge never re-learns the shopper.

A real broker, the edge as a real `instore-edge run` process, the reference central store on HTTP, and
a second store's edge in-process."""

from __future__ import annotations

import contextlib
import random
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import ADMIN, KIOSK, EdgeHandle, MqttHelper, now_ms, store_config, wait_until
from edge.app import App
from edge.broker import free_port
from edge.config import parse_config
from edge.privacy import erase_rows
from edge.store.db import truncate_wal
from edge.store.writer import open_writer
from sync.central import CentralServer
from sync.local import FeedErasure, ProfileChanges
from sync.protocol import erase_key

P = "instore/teststore"
CUSTOMER = "cust-ZQXW-4711"
FIRST_NAME = "Zebulonia"
DEVICE = "zq-phone-88"  # the shopper's phone, as a BLE gateway reports it: subject device:zq-phone-88
CENTRAL_ADMIN = "bT5nW2xQ9rLk7VzH3cYp8DsM"
STORE_TOKENS = {"teststore": "Hq4Lx8Wn2Tz6Rb9Vk3Yc7PdJ", "otherstore": "Nw7Pz3Kq9Xc2Lv6Rt8Hb4YmF"}
QR_SECRET = "Gk2Vr8Tz5Qw3Nx9Lc6Hb7PyD"
RULES = [
    {"id": "kiosk-hello", "priority": 20, "ttl_s": 600.0, "when": {"event": "kiosk.identify", "known": True},
     "show": {"content_id": "hello", "screens": ["shoes-1"], "data": {"title": "Hello {first_name}"}}},
    {"id": "shoes-hi", "priority": 20, "ttl_s": 600.0, "when": {"zone": "shoes", "event": "zone_enter", "known": True},
     "show": {"content_id": "hi", "screens": ["entrance-1"], "data": {"title": "Hi {first_name}"}}},
]
CONTENT = [{"id": "autumn", "title": "Autumn collection"}, {"id": "news", "title": "New arrivals"},
           {"id": "welcome", "title": "Welcome!"}, {"id": "hello", "title": "Hello"}, {"id": "hi", "title": "Hi"}]


def traces(*paths: Path, needles: tuple[str, ...] = (CUSTOMER, FIRST_NAME)) -> dict[str, int]:
    """How often each needle occurs in the raw bytes of the files (UTF-8, UTF-16 LE and BE)."""
    found: dict[str, int] = {}
    for path in paths:
        data = path.read_bytes() if path.exists() else b""
        for needle in needles:
            for enc in ("utf-8", "utf-16-le", "utf-16-be"):
                n = data.count(needle.encode(enc))
                if n:
                    found[f"{path.name}:{needle}:{enc}"] = n
    return found


def wait_clean(files: list[Path], needles: tuple[str, ...] = (CUSTOMER, FIRST_NAME), timeout: float = 10) -> float:
    """Seconds until no needle is left in the files; fails with what is still there."""
    start = time.monotonic()
    while traces(*files, needles=needles):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"still on disk after {timeout}s: {traces(*files, needles=needles)}")
        time.sleep(0.05)
    return time.monotonic() - start


def sqlite_files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def central_admin(central: CentralServer, method: str, path: str, **kw: Any) -> requests.Response:
    return requests.request(method, central.url + path, headers={"Authorization": f"Bearer {CENTRAL_ADMIN}"},
                            timeout=10, **kw)


def start_central(tmp_path: Path) -> CentralServer:
    central = CentralServer(tmp_path / "central.db", CENTRAL_ADMIN, STORE_TOKENS, port=0).start()
    r = central_admin(central, "POST", "/v1/admin/profiles", json={
        "customer_id": CUSTOMER, "first_name": FIRST_NAME, "tier": "gold", "segments": ["outdoor"],
        "consents": {"personalization": True, "marketing": True}, "identities": [f"device:{DEVICE}"],
        "wishlist": ["boot-7"]})
    assert r.status_code == 200, r.text
    return central


def context(url: str) -> dict[str, Any]:
    r = requests.get(f"{url}/kiosk/kiosk-1/context", params={"customer": CUSTOMER},
                     headers={"Authorization": f"Bearer {KIOSK}"}, timeout=10)
    r.raise_for_status()
    return r.json()


def admin_get(url: str, path: str, **params: Any) -> Any:
    r = requests.get(url + path, params=params, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    r.raise_for_status()
    return r.json()


def sighting(ts_ms: int, rssi: int = -55) -> dict[str, Any]:
    return {"ts": ts_ms, "beacon": {"type": "device", "id": DEVICE}, "rssi": rssi}


def test_an_erasure_at_the_store_leaves_no_byte_of_the_shopper_and_reaches_the_central_and_other_stores(
        edge_process, broker, tmp_path: Path) -> None:
    central = start_central(tmp_path)
    other = None
    try:
        # A second store that knows the shopper too (from the change feed).
        other_db = tmp_path / "other" / "edge.db"
        other = EdgeHandle(parse_config(store_config(
            tmp_path, broker.port, store={"id": "otherstore"},
            db={"path": str(other_db)}, mqtt={"client_id": "edge-otherstore"},
            central={"url": central.url, "token": STORE_TOKENS["otherstore"], "pull_interval_s": 0.5}), env={}))
        edge = edge_process(rules=RULES, content=CONTENT, qr={"secret": QR_SECRET},
                            central={"url": central.url, "token": STORE_TOKENS["teststore"],
                                     "pull_interval_s": 1.0},
                            zones=[{"id": "entrance", "exit_after_s": 600.0}, {"id": "shoes", "exit_after_s": 600.0}])
        edge.start()
        url = f"http://127.0.0.1:{edge.port}"
        wait_until(lambda: _ready(url), timeout=30, what="the edge to serve")
        wait_until(lambda: context(url).get("first_name") == FIRST_NAME, timeout=30, what="the profile pulled")
        wait_until(lambda: context(other.url).get("first_name") == FIRST_NAME, timeout=30,
                   what="the other store to pull the profile")

        pub = MqttHelper(broker.port)
        screen = MqttHelper(broker.port)
        screen.subscribe(f"{P}/display/#")
        try:
            # Seen by a gateway, identified at the kiosk, greeted by name, a handoff to the phone, a receipt,
            # and a message from a kiosk the edge cannot read (dead letter) that names the shopper.
            for i in range(3):
                pub.publish(f"{P}/beacon/gw-shoes", sighting(now_ms() + i))
            pub.publish(f"{P}/kiosk/kiosk-1/event", {"id": "k-1", "ts": now_ms(), "type": "identify",
                                                      "customer": CUSTOMER, "session": "sess-77"})
            screen.wait_for(lambda t, d: t.endswith("/shoes-1/content") and d.get("data", {}).get("title")
                            == f"Hello {FIRST_NAME}", timeout=20)
            pub.publish(f"{P}/pos/till-1", {"id": "r-1", "ts": now_ms(), "customer": CUSTOMER,
                                             "items": ["boot-7"], "total": 129.0})
            pub.publish(f"{P}/kiosk/kiosk-1/event", {"id": "k-2", "ts": "the day before yesterday",
                                                      "type": "identify", "customer": CUSTOMER})
            r = requests.post(f"{url}/kiosk/kiosk-1/handoff", json={"session": "sess-77", "customer": CUSTOMER},
                              headers={"Authorization": f"Bearer {KIOSK}"}, timeout=10)
            assert r.status_code == 201, r.text
            wait_until(lambda: any(CUSTOMER in (d.get("payload_excerpt") or "")
                                   for d in admin_get(url, "/api/v1/deadletters")["deadletters"]),
                       what="the dead letter")
            wait_until(lambda: any(e.get("customer") == CUSTOMER for e in admin_get(
                url, "/api/v1/events", kind="pos")["events"]), what="the receipt")
            wait_until(lambda: any(e.get("customer") == CUSTOMER for e in central_admin(
                central, "GET", "/v1/admin/events", params={"limit": 5000}).json()["events"]),
                what="the shopper's events at the central store")
            # Right of access: the store and the central store each export what they hold about the shopper.
            mine = admin_get(url, f"/api/v1/customers/{CUSTOMER}/export")
            assert mine["profile"]["profile"]["first_name"] == FIRST_NAME
            assert f"device:{DEVICE}" in [i["key"] for i in mine["identities"]]
            assert {"kiosk", "pos"} <= {e["kind"] for e in mine["events"]} and mine["decisions"] and mine["handoffs"]
            theirs = central_admin(central, "GET", f"/v1/admin/profiles/{CUSTOMER}/export").json()
            assert theirs["profile"]["first_name"] == FIRST_NAME and theirs["consents"]["marketing"]["granted"]
            assert theirs["events"] and [s["store"] for s in theirs["stores"]] == ["teststore"]
            # Profile updates leave old versions behind; then the pages reach edge.db itself (what SQLite's
            # auto-checkpoint does after a busy while), so free pages and the file are tested, not just the WAL.
            for n in range(1, 4):
                central_admin(central, "POST", "/v1/admin/profiles",
                              json={"customer_id": CUSTOMER, "cart": [f"sku-{i}" for i in range(n)]})
                wait_until(lambda: len(context(url)["cart"]) == n, timeout=20, what=f"profile version {n} pulled")
            edge_files = sqlite_files(tmp_path / "edge.db")
            with contextlib.closing(sqlite3.connect(edge_files[0], timeout=10)) as conn:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            before = traces(*edge_files)
            assert any(k.startswith("edge.db:") for k in before), before
            assert sum(before.values()) > 0, "the test must start with the shopper on disk"

            r = requests.delete(f"{url}/api/v1/customers/{CUSTOMER}", headers={"Authorization": f"Bearer {ADMIN}"},
                                timeout=35)
            assert r.status_code == 200, r.text
            # Within seconds: no byte of the id or the first name in edge.db, edge.db-wal, edge.db-shm.
            took = wait_clean(edge_files)
            print(f"\nbefore the erasure {before}; {took:.2f}s after it: 0 traces in "
                  f"{ {p.name: p.stat().st_size for p in edge_files if p.exists()} } bytes")
            # Its export holds nothing about them now, only that an erasure is on record (by hash).
            left = admin_get(url, f"/api/v1/customers/{CUSTOMER}/export")
            assert (left["profile"], left["identities"], left["events"], left["decisions"]) == (None, [], [], [])
            assert left["erasure"] is not None
            # Nor in what the edge serves from memory.
            assert context(url)["first_name"] is None and context(url)["known"] is False
            shown = admin_get(url, "/api/v1/displays")["displays"]
            assert CUSTOMER not in str(shown) and FIRST_NAME not in str(shown)
            assert CUSTOMER not in str(admin_get(url, "/api/v1/presence"))

            # The central store erased the shopper (it was asked through the outbox, by hash) and fed the
            # erasure to every store: the other store forgets them too, bytes included.
            wait_until(lambda: central_admin(central, "GET", f"/v1/profiles/{CUSTOMER}").status_code == 404,
                       timeout=20, what="the central store to erase the profile")
            assert central_admin(central, "GET", f"/v1/admin/profiles/{CUSTOMER}/export").status_code == 404
            feed = central_admin(central, "GET", "/v1/profiles/changes", params={"limit": 5000}).json()["changes"]
            assert {"customer_hash": erase_key(CUSTOMER), "op": "erase"}.items() <= \
                next(c for c in feed if c.get("op") == "erase").items()
            wait_until(lambda: context(other.url)["known"] is False, timeout=20,
                       what="the other store to erase the profile")
            wait_clean(sqlite_files(other_db))
            wait_clean(sqlite_files(tmp_path / "central.db"), (CUSTOMER, FIRST_NAME, DEVICE))

            # The shopper's phone walks past a gateway again: an anonymous visitor now, never the erased
            # customer (the edge neither remembers nor re-learns the device from the central store).
            # (The first sighting makes the edge ask the central store who the phone is; the next ones come
            # after that answer would have arrived.)
            for i in range(3):
                pub.publish(f"{P}/beacon/gw-entrance", sighting(now_ms() + 10 + i, rssi=-50))
                time.sleep(1.5)
            later = [e for e in admin_get(url, "/api/v1/events", kind="beacon")["events"]
                     if e["source"] == "gw-entrance"]
            assert len(later) == 3 and all(e["customer"] is None for e in later), later
            assert not traces(*edge_files)
        finally:
            pub.close()
            screen.close()
        assert edge.terminate() == 0
    finally:
        if other is not None:
            other.stop()
        central.stop()


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_an_erasure_after_a_database_error_clears_the_presence_the_edge_uses(edge: EdgeHandle, mqtt_client) -> None:
    """A failed write makes the writer restore its state from the file; an erasure after that must still clear
    the shopper from the presence the edge decides with and keeps writing, not from a stale copy of it."""
    customer, phone = "cust-STALE-0815", "stale-phone-42"
    pub = mqtt_client()
    pub.publish(f"{P}/kiosk/kiosk-1/event", {"id": "i1", "ts": now_ms(), "type": "identify", "customer": customer,
                                             "identity": f"device:{phone}", "session": "s-1"})
    phone_seen = {"ts": now_ms(), "beacon": {"type": "device", "id": phone}, "rssi": -50}
    pub.publish(f"{P}/beacon/gw-entrance", phone_seen)

    def present() -> list[dict[str, Any]]:
        return [p for p in edge.get("/api/v1/presence").json()["presence"] if p["subject"] == f"device:{phone}"]

    wait_until(lambda: [p["customer"] for p in present()] == [customer], what="the phone present as the customer")

    # A real database error: another connection holds the file, so the writer's next batch fails and is retried.
    lock = sqlite3.connect(edge.cfg.db.path, timeout=1, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        edge.service.pipeline.writer.conn.execute("PRAGMA busy_timeout=100")
        pub.publish(f"{P}/beacon/gw-entrance", {**phone_seen, "ts": now_ms()})
        wait_until(lambda: not edge.service.pipeline.healthy, what="the writer to notice")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_until(lambda: edge.service.pipeline.healthy, what="the writer to recover")

    assert requests.delete(f"{edge.url}/api/v1/customers/{customer}", headers={"Authorization": f"Bearer {ADMIN}"},
                           timeout=30).status_code == 200
    for _ in range(8):  # the phone is still in the store: its presence is written again, every second
        pub.publish(f"{P}/beacon/gw-entrance", {**phone_seen, "ts": now_ms()})
        time.sleep(0.3)
    assert [p["customer"] for p in present()] == [None]
    assert edge.service.pipeline.presence.state[f"device:{phone}"].customer is None
    assert customer not in str(edge.get("/api/v1/events", params={"limit": 1000}).json())


# --- bytes that b-tree rebalancing moved: what secure_delete alone misses ------------------------------------


def build_store_log(db: Path, events: int = 5000, customers: int = 500) -> list[str]:
    """A store's log whose index on events(customer) filled in random customer order (as shoppers come), and a
    profile cache whose rows changed size over versions: page splits and merges moved cells, leaving copies
    of them in the gaps of the pages they left. Returns the customer ids."""
    ids = [f"cust-{c:05d}" for c in range(customers)]
    rnd = random.Random(7)
    with contextlib.closing(open_writer(db)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO events(event_id, kind, source, zone, subject, customer, ts, received_at, data) "
                         "VALUES (?,'beacon','gw-shoes','shoes',?,?,?,?,'{\"rssi\":-60}')",
                         ((f"e-{i:06d}", f"device:phone-{c[5:]}", c, 1.7e9 + i, 1.7e9 + i)
                          for i, c in enumerate(rnd.choice(ids) for _ in range(events))))
        conn.executemany("INSERT INTO profiles(customer_id, version, profile, first_name, consent_personalization, "
                         "updated_at) VALUES (?,1,?,?,1,0)",
                         ((c, f'{{"customer_id":"{c}","first_name":"{name(c)}"}}', name(c)) for c in ids))
        conn.executemany("INSERT INTO identities(key, customer_id, via, learned_at) VALUES (?,?,'central',0)",
                         ((f"device:phone-{c[5:]}", c) for c in ids))
        conn.execute("COMMIT")
        for version in (2, 3):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE profiles SET version = ?, profile = ? WHERE customer_id = ?",
                             ((version, f'{{"customer_id":"{c}","first_name":"{name(c)}","cart":'
                               f'[{",".join(["1234567"] * rnd.randrange(12))}]}}', c)
                              for c in ids if rnd.random() < .5))
            conn.execute("COMMIT")
        assert truncate_wal(conn)
    return ids


def name(customer: str) -> str:
    return f"Nm{customer[5:]}q"


def shopper_bytes(customer: str) -> tuple[str, ...]:
    return customer, name(customer), f"device:phone-{customer[5:]}"


def left_on_disk(db: Path, customers: list[str]) -> list[str]:
    data = b"".join(p.read_bytes() for p in sqlite_files(db) if p.exists())
    return [c for c in customers if any(v.encode() in data for v in shopper_bytes(c))]


def test_an_erasure_leaves_no_copy_that_b_tree_rebalancing_moved_into_a_page_gap(tmp_path: Path) -> None:
    """secure_delete zeroes deleted cells and freed pages, not the old bytes a page split or merge leaves in
    the gap of a page it moved cells out of: the erasure checks the file for what it erased and rebuilds
    what still holds a copy, and every other shopper's data stays."""
    db = tmp_path / "edge.db"
    customers = build_store_log(db)
    victims = customers[::2]
    # The hole is real: on a copy of the file, the erasure's SQL with secure_delete and a truncated WAL leaves
    # copies of erased shoppers in the file.
    copy = tmp_path / "copy" / "edge.db"
    copy.parent.mkdir()
    shutil.copyfile(db, copy)
    with contextlib.closing(open_writer(copy)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        erase_rows(conn, victims)
        conn.execute("COMMIT")
        assert truncate_wal(conn)
    assert left_on_disk(copy, victims), "the test must start with copies that secure_delete misses"

    svc = App(parse_config(store_config(tmp_path, free_port()), env={}))
    svc.pipeline.start()
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            others = "SELECT customer, count(*) FROM events WHERE customer IS NOT NULL GROUP BY customer"
            kept = [r for r in conn.execute(others) if r[0] not in victims]
            # Erasures from the central store's change feed, by erase key, in one transaction.
            svc.uplink.apply_changes(ProfileChanges(erasures=tuple(FeedErasure(erase_key(c), 5) for c in victims)),
                                     resync=False, feed_reset=False).result(60)
            wait_until(lambda: svc.pipeline.writer.wipe_due_since is None, timeout=30, what="the file checked")

            assert left_on_disk(db, victims) == []
            assert conn.execute(others).fetchall() == kept
            assert conn.execute("SELECT count(*) FROM profiles").fetchone()[0] == len(customers) - len(victims)
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        check = svc.pipeline.last_erasure_check
        assert check is not None and check.clean and check.found and check.actions, check
        assert svc.readiness()["erasure"]["ok"] is True
    finally:
        svc.pipeline.stop()
        svc.conn.close()


def test_an_erasure_whose_copies_cannot_be_rebuilt_away_is_reported_never_claimed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Copies in an index the edge cannot rebuild (its collation is not the edge's: REINDEX and VACUUM both
    fail) stay: the edge says so, in the log (never the shopper), the metric and /readyz."""
    db = tmp_path / "edge.db"
    ids = [f"who-{i:05d}" for i in range(10000)]
    random.Random(3).shuffle(ids)
    with contextlib.closing(open_writer(db)) as conn:
        conn.create_collation("folded", lambda a, b: (a.lower() > b.lower()) - (a.lower() < b.lower()))
        conn.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)")
        conn.execute("CREATE INDEX idx_notes_body ON notes(body COLLATE folded)")
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO notes(body) VALUES (?)", [(i,) for i in ids])
        conn.execute("COMMIT")
        conn.execute("DELETE FROM notes WHERE substr(body, -1) IN ('0', '2', '4', '6', '8')")
        assert truncate_wal(conn)
    data = db.read_bytes()
    left = [i for i in ids if int(i[-1]) % 2 == 0 and i.encode() in data]
    assert left, "the test must start with copies of deleted rows in the index's page gaps"
    victim = left[0]

    svc = App(parse_config(store_config(tmp_path, free_port()), env={}))
    svc.pipeline.start()
    try:
        assert svc.erase(victim)
        wait_until(lambda: svc.pipeline.writer.wipe_due_since is None, timeout=30, what="the file checked")
        check = svc.pipeline.last_erasure_check
        assert check is not None and not check.clean
        assert {t.btree for t in check.left} == {"idx_notes_body"}
        assert [a.split(":")[:2] for a in check.actions] == [["failed", " rebuild"], ["failed", " VACUUM"]]
        ready = svc.readiness()["erasure"]
        assert ready["ok"] is False and ready["unverified"] == 1
        metrics = svc.metrics.render()
        assert "instore_edge_erasures_unverified 1.0" in metrics
        assert 'instore_edge_erasure_rebuilds_total{how="failed"} 2.0' in metrics
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert any("erasure incomplete on disk" in e and "idx_notes_body" in e for e in errors), errors
        assert victim not in caplog.text
    finally:
        svc.pipeline.stop()
        svc.conn.close()


def test_an_erasure_the_edge_stopped_before_checking_is_finished_at_the_next_start(tmp_path: Path) -> None:
    """A reader holds the WAL, so the writer cannot truncate it nor check the file before the edge stops: the
    next start finds the check due (the values are not kept) and rewrites the file before ingest."""
    db = tmp_path / "edge.db"
    victims = build_store_log(db)[::2]
    cfg = parse_config(store_config(tmp_path, free_port()), env={})
    svc = App(cfg)
    svc.pipeline.start()
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM events").fetchone()  # an old snapshot: no WAL truncation meanwhile
        svc.uplink.apply_changes(ProfileChanges(erasures=tuple(FeedErasure(erase_key(c), 5) for c in victims)),
                                 resync=False, feed_reset=False).result(60)
    finally:
        svc.pipeline.stop()
        svc.conn.close()
        reader.close()
    assert svc.pipeline.last_erasure_check is None
    assert left_on_disk(db, victims), "the test must stop the edge with copies of erased data in the file"

    again = App(cfg)
    try:
        assert left_on_disk(db, victims) == []
        assert again.conn.execute("SELECT count(*) FROM kv WHERE key = 'erasure_check_due'").fetchone()[0] == 0
        assert again.conn.execute("SELECT count(*) FROM profiles").fetchone()[0] == len(victims)
        assert again.readiness()["erasure"]["ok"] is True
    finally:
        again.conn.close()


def test_the_store_export_needs_the_admin_token_and_says_when_it_holds_nothing(edge) -> None:
    assert edge.get(f"/api/v1/customers/{CUSTOMER}/export", token=None).status_code == 401
    assert edge.get(f"/api/v1/customers/{CUSTOMER}/export", token=KIOSK).status_code == 403
    r = edge.get(f"/api/v1/customers/{CUSTOMER}/export")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
