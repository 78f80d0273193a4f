"""No accepted event is lost: kill -9 of the edge mid-flood, and a broker restart mid-stream.

Shaped like Mosquitto's persistence tests: crash, restart, check every message arrived exactly once."""

from __future__ import annotations

import sqlite3
import threading
import time

from conftest import now_ms, sighting, wait_until

P = "instore/teststore"


def _count(db_path: str) -> tuple[int, int]:
    try:
        with sqlite3.connect(db_path, timeout=10) as conn:
            total, distinct = conn.execute(
                "SELECT count(*), count(DISTINCT event_id) FROM events WHERE kind='beacon'").fetchone()
            return total, distinct
    except sqlite3.OperationalError:  # the file or its tables do not exist yet
        return 0, 0


def _flood(n: int, base_ms: int) -> list[tuple[str, dict]]:
    """n distinct sightings: 500 beacons seen over and over, each sighting at its own time."""
    gateways = ["gw-entrance", "gw-shoes"]
    return [(f"{P}/beacon/{gateways[i % 2]}", sighting(base_ms + i, minor=i % 500, rssi=-50 - i % 40))
            for i in range(n)]


def test_kill_9_during_a_flood_of_20000_events_then_restart_records_exactly_20000(edge_process, mqtt_client,
                                                                                   tmp_path):
    edge = edge_process(zones=[{"id": "entrance", "exit_after_s": 600.0}, {"id": "shoes", "exit_after_s": 600.0}])
    db_path = str(tmp_path / "edge.db")
    edge.start()
    status = mqtt_client()
    status.subscribe(f"{P}/edge/status")
    status.wait_for(lambda t, d: d["state"] == "online", timeout=20)

    n = 20_000
    publisher = mqtt_client("flood-publisher", clean=False)
    thread = threading.Thread(target=publisher.publish_many, args=(_flood(n, now_ms() - n),))
    thread.start()
    # Let the edge commit part of the flood, then pull the plug.
    wait_until(lambda: _count(db_path)[0] >= 3000, timeout=60, what="part of the flood committed")
    edge.kill9()
    killed_at = _count(db_path)[0]
    assert killed_at < n, "the flood finished before the kill: the test proves nothing"
    status.wait_for(lambda t, d: d["state"] == "offline", timeout=60)  # the broker sent the last will
    thread.join(180)
    assert not thread.is_alive()

    edge.start()
    wait_until(lambda: _count(db_path)[0] >= n, timeout=120, what="all events after restart")
    time.sleep(1.0)  # anything extra (a duplicate) would show up now
    assert _count(db_path) == (n, n)
    assert edge.terminate() == 0


def test_broker_restart_mid_stream_loses_nothing(edge, broker, mqtt_client):
    n = 6000
    publisher = mqtt_client("stream-publisher", clean=False)
    items = _flood(n, now_ms() - n)
    thread = threading.Thread(target=publisher.publish_many, args=(items,), kwargs={"window": 200})
    thread.start()
    wait_until(lambda: _count(edge.cfg.db.path)[0] >= 1000, timeout=60, what="part of the stream")
    broker.restart()
    thread.join(180)
    assert not thread.is_alive()
    wait_until(lambda: _count(edge.cfg.db.path)[0] >= n, timeout=90, what="the whole stream")
    time.sleep(1.0)
    assert _count(edge.cfg.db.path) == (n, n)
    assert edge.service.mqtt.connects >= 2
