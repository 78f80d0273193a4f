"""The service with its sync worker against a real central store: crash during a push, on-demand fetch,
consent revocation and erasure reaching what a screen shows."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import requests

from conftest import EdgeHandle, now_ms, sighting, wait_until
from sync.central import CentralServer

P = "instore/teststore"
STORE_TOKEN = "fnVeje4si8LvClI0ewCOVLVz"
CENTRAL_ADMIN = "central-admin-token-0000"


def start_central(tmp_path: Path) -> CentralServer:
    return CentralServer(tmp_path / "central.db", CENTRAL_ADMIN, {"teststore": STORE_TOKEN}, port=0).start()


def central_event_ids(url: str) -> list[str]:
    ids, after = [], 0
    while True:
        page = requests.get(f"{url}/v1/admin/events", params={"store": "teststore", "limit": 5000, "after": after},
                            headers={"Authorization": f"Bearer {CENTRAL_ADMIN}"}, timeout=10).json()
        ids += [e["event_id"] for e in page["events"]]
        after = page["next_after"]
        if not page["more"]:
            return ids


def edge_event_ids(db_path: str) -> list[str]:
    with sqlite3.connect(db_path, timeout=10) as conn:
        return [r[0] for r in conn.execute("SELECT event_id FROM events ORDER BY seq")]


def cached(db_path: str, customer: str) -> bool:
    """The edge holds the customer's profile in its cache."""
    with sqlite3.connect(db_path, timeout=10) as conn:
        return conn.execute("SELECT 1 FROM profiles WHERE customer_id = ?", (customer,)).fetchone() is not None


def test_kill_9_during_a_push_loses_nothing_and_duplicates_nothing_at_the_central(edge_process, mqtt_client,
                                                                                   tmp_path):
    central = start_central(tmp_path)
    try:
        edge = edge_process(central={"url": central.url, "token": STORE_TOKEN, "push_batch": 50},
                            zones=[{"id": "entrance", "exit_after_s": 600.0}, {"id": "shoes", "exit_after_s": 600.0}])
        edge.start()
        status = mqtt_client()
        status.subscribe(f"{P}/edge/status")
        status.wait_for(lambda t, d: d["state"] == "online", timeout=20)  # subscribed: nothing published is lost
        n = 4000
        items = [(f"{P}/beacon/gw-shoes", sighting(now_ms() - n + i, minor=i % 300)) for i in range(n)]
        publisher = mqtt_client("push-publisher", clean=False)
        thread = threading.Thread(target=publisher.publish_many, args=(items,))
        thread.start()
        wait_until(lambda: len(central_event_ids(central.url)) >= 500, timeout=60, what="pushes under way")
        edge.kill9()
        thread.join(120)
        at_kill = len(central_event_ids(central.url))
        edge.start()
        db = str(tmp_path / "edge.db")
        wait_until(lambda: sum(1 for i in edge_event_ids(db) if not i.startswith("p:")) >= n, timeout=120,
                   what="every sighting recorded after the restart")
        wait_until(lambda: len(central_event_ids(central.url)) >= len(edge_event_ids(db)), timeout=120,
                   what="the outbox drained to the central store")
        at_central = central_event_ids(central.url)
        assert at_kill < len(at_central)
        assert len(at_central) == len(set(at_central))  # each event once
        assert at_central == edge_event_ids(db)  # and in the edge's order
        # Its pushes carried its health: the central's fleet view knows its version, readiness and backlog.
        [row] = requests.get(f"{central.url}/v1/admin/stores", headers={"Authorization": f"Bearer {CENTRAL_ADMIN}"},
                             timeout=10).json()["stores"]
        assert row["store"] == "teststore" and row["version"] and row["health_at"] and not row["quiet"]
        assert isinstance(row["ready"], bool) and isinstance(row["outbox_pending"], int)
        assert row["dead_threads"] == [] and abs(row["clock_offset_s"]) < 5
        assert edge.terminate() == 0
    finally:
        central.stop()


def test_profiles_drive_the_screen_with_consent_and_stop_when_revoked_or_erased(make_config, mqtt_client,
                                                                                 tmp_path):
    central = start_central(tmp_path)
    admin = {"Authorization": f"Bearer {CENTRAL_ADMIN}"}
    rules = [
        {"id": "kiosk-hello", "priority": 20, "ttl_s": 30.0,
         "when": {"event": "kiosk.identify", "known": True},
         "show": {"content_id": "hello", "screens": ["shoes-1"], "data": {"title": "Ciao {first_name}"}}},
        {"id": "kiosk-welcome", "priority": 10, "ttl_s": 30.0,
         "when": {"event": "kiosk.identify"},
         "show": {"content_id": "welcome", "screens": ["shoes-1"], "data": {"title": "Welcome"}}},
    ]
    edge = EdgeHandle(make_config(rules=rules, central={"url": central.url, "token": STORE_TOKEN,
                                                        "pull_interval_s": 3600.0}))
    try:
        wait_until(lambda: edge.service.sync.status()["last_pull"], what="first pull")
        # The profile appears centrally after the edge's pull: the edge learns it only on demand.
        r = requests.post(f"{central.url}/v1/admin/profiles", headers=admin, timeout=10, json={
            "customer_id": "C-0100", "first_name": "Giulia", "tier": "gold",
            "consents": {"personalization": True, "marketing": False}, "identities": ["device:app-100"]})
        assert r.status_code in (200, 201), r.text
        screen = mqtt_client()
        screen.subscribe(f"{P}/display/shoes-1/content")
        pub = mqtt_client()

        def identify(i: int) -> dict:
            pub.publish(f"{P}/kiosk/kiosk-1/event", {"id": f"k-{i}", "ts": now_ms(), "type": "identify",
                                                      "customer": "C-0100", "session": f"s-{i}"})
            return screen.wait_for(lambda t, d: d.get("ts", 0) and d["content_id"] in ("hello", "welcome"))[1]

        # Cache miss: zone content now, the profile is fetched in the background meanwhile.
        first = identify(1)
        assert first["content_id"] == "welcome" and "customer" not in first
        wait_until(lambda: cached(edge.cfg.db.path, "C-0100"), what="on-demand fetch")
        second = identify(2)
        assert second["content_id"] == "hello" and second["data"]["title"] == "Ciao Giulia"
        assert second["customer"] == "C-0100"

        # Consent revoked centrally: no personal content after one pull.
        requests.post(f"{central.url}/v1/admin/profiles", headers=admin, timeout=10, json={
            "customer_id": "C-0100", "consents": {"personalization": False}}).raise_for_status()
        edge.service.sync.pull_once()
        # The personal greeting leaves the screen at once, without waiting for its ttl.
        screen.wait_for(lambda t, d: d["content_id"] == "playlist")
        third = identify(3)
        assert third["content_id"] == "welcome" and "customer" not in third

        # Erased centrally: gone from the device after one pull.
        requests.delete(f"{central.url}/v1/admin/profiles/C-0100", headers=admin, timeout=10).raise_for_status()
        edge.service.sync.pull_once()
        time.sleep(0.3)
        with sqlite3.connect(edge.cfg.db.path) as conn:
            assert conn.execute("SELECT count(*) FROM profiles WHERE customer_id='C-0100'").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM events WHERE customer='C-0100'").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM identities WHERE customer_id='C-0100'").fetchone()[0] == 0
    finally:
        edge.stop()
        central.stop()


def test_readiness_reports_sync_and_a_wrong_token_is_refused_clearly(make_config, tmp_path):
    central = start_central(tmp_path)
    edge = EdgeHandle(make_config(central={"url": central.url, "token": "02EjVU60hmV9MbEltcXU2pCA"}))
    try:
        edge.service.sync.wake()
        wait_until(lambda: edge.service.sync.status()["auth_ok"] is False, what="token refused")
        checks = edge.get("/readyz", token=None).json()["checks"]
        assert checks["sync"]["ok"] is False and "token" in checks["sync"]["detail"]
    finally:
        edge.stop()
        central.stop()
