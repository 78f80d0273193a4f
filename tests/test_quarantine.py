"""A message that crashes the edge is set aside after two crashes: a restart cannot loop on it, and the
messages around it are recorded. A real `instore-edge run`, restarted as systemd would, and a real broker;
the crash is injected (INSTORE_EDGE_TEST_FAULTS, test-only): no real input crashes the edge any more."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import requests

from conftest import now_ms, wait_until
from edge.faults import CRASH_EXIT

P = "instore/teststore"
CRASH = {"INSTORE_EDGE_TEST_FAULTS": "crash:CRASH-ME"}


def _query(db_path: Path, sql: str) -> list[tuple]:
    try:
        with sqlite3.connect(db_path, timeout=10) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def _healthz(port: int) -> int | None:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code
    except requests.ConnectionError:  # not listening yet
        return None


def test_a_message_that_crashes_the_edge_twice_is_quarantined_and_the_rest_are_recorded(edge_process, mqtt_client,
                                                                                       tmp_path):
    edge = edge_process()
    db = tmp_path / "edge.db"
    status = mqtt_client()
    status.subscribe(f"{P}/edge/status")
    edge.start(CRASH)
    status.wait_for(lambda t, d: d["state"] == "online", timeout=20)

    t = now_ms()
    good = [(f"{P}/qr/scanner-1", {"id": f"g{i}", "ts": t + i, "code": f"LOYALTY-{i}"}) for i in range(40)]
    poison = (f"{P}/qr/scanner-1", {"id": "poison", "ts": t, "code": "CRASH-ME"})
    mqtt_client("quarantine-publisher", clean=False).publish_many([*good[:20], poison, *good[20:]])

    assert edge.proc.wait(30) == CRASH_EXIT  # the first crash: the whole batch in flight is suspect
    edge.start(CRASH)
    assert edge.proc.wait(30) == CRASH_EXIT  # it comes back, is processed alone, crashes again
    edge.start(CRASH)
    wait_until(lambda: len(_query(db, "SELECT 1 FROM events WHERE kind = 'qr'")) == 40, timeout=30,
               what="every good message recorded")
    dead = _query(db, "SELECT topic, reason, payload_excerpt FROM deadletters")
    assert [(topic, reason) for topic, reason, _ in dead] == [(f"{P}/qr/scanner-1", "quarantined")]
    assert "CRASH-ME" in dead[0][2]
    assert _query(db, "SELECT event_id FROM events WHERE event_id = 'qr:scanner-1:poison'") == []
    assert _query(db, "SELECT count(*) FROM failed_attempts") == [(0,)]  # settled messages leave no count behind
    wait_until(lambda: _healthz(edge.port) == 200, what="healthz")
    assert edge.proc.poll() is None

    # Acknowledged with its dead letter: the next start does not see it again.
    assert edge.terminate() == 0
    edge.start(CRASH)
    # This process's own answer (an "online" of an earlier start may still be queued on the status client).
    wait_until(lambda: _healthz(edge.port) == 200, timeout=20, what="the restarted edge's healthz")
    time.sleep(1.0)
    assert edge.proc.poll() is None
    assert len(_query(db, "SELECT 1 FROM deadletters")) == 1
    assert edge.terminate() == 0
