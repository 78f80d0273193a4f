"""The writer survives anything: a message it cannot take is a dead letter with its reason, never a dead
thread, and the rest of its batch is recorded. Real broker, real edge (in-process or `instore-edge run`)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import requests

from conftest import ADMIN, KIOSK, now_ms, sighting, wait_until
from edge import faults

P = "instore/teststore"


def _query(db_path: Path | str, sql: str, *params: object) -> list[tuple]:
    try:
        with sqlite3.connect(db_path, timeout=10) as conn:
            return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # the file or its tables do not exist yet
        return []


def _healthz(port: int) -> int | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code
    except requests.ConnectionError:  # not listening yet
        return None


def test_a_lone_surrogate_on_mqtt_is_dead_lettered_and_ingest_goes_on_across_a_restart(edge_process, mqtt_client,
                                                                                        tmp_path):
    edge = edge_process()
    db = tmp_path / "edge.db"
    status = mqtt_client()
    status.subscribe(f"{P}/edge/status")
    edge.start()
    status.wait_for(lambda t, d: d["state"] == "online", timeout=20)
    pub = mqtt_client()
    # Valid JSON text: a lone surrogate escape. It used to kill the writer thread (UnicodeEncodeError on insert).
    pub.publish(f"{P}/qr/scanner-1", b'{"id": "x\\ud800", "ts": %d, "code": "x"}' % now_ms())
    pub.publish(f"{P}/qr/scanner-1", {"id": "after", "ts": now_ms(), "code": "LOYALTY-1"})
    wait_until(lambda: _query(db, "SELECT event_id FROM events WHERE kind = 'qr'") == [("qr:scanner-1:after",)],
               timeout=20, what="the event after the bad one")
    dead = _query(db, "SELECT topic, reason, detail FROM deadletters")
    assert [(t, r) for t, r, _ in dead] == [(f"{P}/qr/scanner-1", "invalid_value")]
    assert dead[0][2].startswith("id: a lone surrogate")
    wait_until(lambda: _healthz(edge.port) == 200, what="healthz")

    # The bad message was acknowledged with its dead letter: after a restart it is not delivered again.
    assert edge.terminate() == 0
    edge.start()
    status.wait_for(lambda t, d: d["state"] == "online", timeout=20)
    pub.publish(f"{P}/qr/scanner-1", {"id": "after-restart", "ts": now_ms(), "code": "LOYALTY-2"})
    wait_until(lambda: len(_query(db, "SELECT 1 FROM events WHERE kind = 'qr'")) == 2, timeout=20,
               what="the event after the restart")
    time.sleep(0.5)
    assert len(_query(db, "SELECT 1 FROM deadletters")) == 1
    wait_until(lambda: _healthz(edge.port) == 200, what="healthz")
    assert edge.terminate() == 0


def test_a_lone_surrogate_posted_to_the_events_api_is_refused_and_the_writer_goes_on(edge):
    headers = {"Authorization": f"Bearer {KIOSK}", "Content-Type": "application/json"}
    body = '{"kind": "window", "device": "window-1", "event": {"ts": %d, "type": "touch", "session": "\\ud800"}}'
    r = requests.post(edge.url + "/api/v1/events", data=body % now_ms(), headers=headers, timeout=15)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_value"
    assert r.json()["error"]["message"].startswith("event.session: a lone surrogate")

    good = {"kind": "window", "device": "window-1", "event": {"ts": now_ms(), "type": "touch", "session": "s-1"}}
    r = requests.post(edge.url + "/api/v1/events", json=good, headers=headers, timeout=15)
    assert r.status_code == 201, r.text
    assert [e["data"]["session"] for e in edge.events(kind="window")] == ["s-1"]
    assert edge.get("/healthz", token=None).status_code == 200


def test_a_message_that_raises_is_dead_lettered_alone_and_its_batch_is_recorded(edge, mqtt_client):
    """A bug hit by one message (injected: no real input raises any more) takes back that message's rows and
    presence, and only those; the writer goes on."""
    faults.configure("raise:BOOM")
    try:
        pub = mqtt_client()
        t = now_ms()
        items: list[tuple[str, dict]] = [(f"{P}/beacon/gw-entrance", sighting(t + i, minor=i)) for i in range(1, 30)]
        items.insert(15, (f"{P}/beacon/gw-entrance", {**sighting(t, minor=99), "note": "BOOM"}))
        pub.publish_many(items)
        wait_until(lambda: len(edge.events(kind="beacon")) == 29, what="the 29 good sightings")
        rows = wait_until(lambda: edge.get("/api/v1/deadletters").json()["deadletters"], what="the dead letter")
        assert [(r["reason"], r["topic"]) for r in rows] == [("internal_error", f"{P}/beacon/gw-entrance")]
        assert rows[0]["detail"].startswith("InjectedFault in edge/faults.py")
        assert "BOOM" in rows[0]["payload_excerpt"]
        # Its sighting and the presence it caused were rolled back, on disk and in memory.
        minors = {e["subject"].rsplit(":", 1)[1] for e in edge.events() if e.get("subject")}
        assert "99" not in minors and len(minors) == 29
        assert not any(s.endswith(":99") for s in edge.service.pipeline.presence.state)
        presence = edge.get("/api/v1/presence").json()["presence"]
        assert len(presence) == 29 and not any(p["subject"].endswith(":99") for p in presence)

        # Over HTTP the same bug is a 500 naming the dead letter, not a "recorded".
        headers = {"Authorization": f"Bearer {ADMIN}"}
        bad = {"kind": "qr", "device": "scanner-1", "event": {"id": "b1", "ts": now_ms(), "code": "BOOM"}}
        r = requests.post(edge.url + "/api/v1/events", json=bad, headers=headers, timeout=15)
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    finally:
        faults.configure("")
    pub.publish(f"{P}/beacon/gw-shoes", sighting(now_ms(), minor=200))
    wait_until(lambda: len(edge.events(kind="beacon")) == 30, what="a sighting after the failures")
    assert edge.get("/healthz", token=None).status_code == 200
    metrics = edge.get("/metrics", token=None).text
    assert 'instore_edge_deadletters_total{reason="internal_error"} 2' in metrics


def test_an_unwritable_database_keeps_the_batch_unacknowledged_instead_of_dead_lettering_it(edge, mqtt_client):
    """Disk full or I/O errors are no message's fault: nothing is dead-lettered, and the batch is recorded once
    the database can be written again."""
    lock = sqlite3.connect(edge.cfg.db.path, timeout=1, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # another process holds the file: the writer's BEGIN IMMEDIATE fails
    try:
        edge.service.pipeline.writer.conn.execute("PRAGMA busy_timeout=100")
        pub = mqtt_client()
        pub.publish(f"{P}/qr/scanner-1", {"id": "held", "ts": now_ms(), "code": "LOYALTY-9"})
        wait_until(lambda: not edge.service.pipeline.healthy, what="the writer to notice")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_until(lambda: [e["event_id"] for e in edge.events(kind="qr")] == ["qr:scanner-1:held"], what="the event")
    assert edge.get("/api/v1/deadletters").json()["deadletters"] == []
    assert json.loads(edge.get("/readyz", token=None).text)["checks"]["db"]["ok"]
