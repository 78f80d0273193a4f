"""A thread that dies fails /healthz and makes `instore-edge run` exit non-zero, so systemd restarts it:
never a process that looks alive and is deaf."""

from __future__ import annotations

import pytest

from conftest import now_ms, wait_until
from edge.watchdog import EXIT_THREAD_DIED

P = "instore/teststore"


def test_a_writer_that_dies_fails_healthz_with_its_name(edge):
    assert edge.get("/healthz", token=None).json()["status"] == "ok"
    edge.service.conn.close()  # a real fault: the writer's connection is gone, every write raises
    body = wait_until(lambda: (r := edge.get("/healthz", token=None)).status_code == 503 and r.json(),
                      what="healthz to fail")
    assert body["status"] == "failed"
    assert body["dead_threads"]["pipeline-writer"].startswith("ProgrammingError in ")


@pytest.mark.parametrize("thread", ["pipeline-writer", "mqtt", "http", "housekeeping"])
def test_a_thread_that_dies_makes_the_edge_exit_non_zero(edge_process, mqtt_client, thread):
    """The death is injected (INSTORE_EDGE_TEST_FAULTS, test-only); the writer and paho's loop die at the
    first message they handle, the others when they start."""
    edge = edge_process()
    status = mqtt_client()
    status.subscribe(f"{P}/edge/status")
    edge.start({"INSTORE_EDGE_TEST_FAULTS": f"thread:{thread}"})
    if thread in ("pipeline-writer", "mqtt"):
        status.wait_for(lambda t, d: d["state"] == "online", timeout=20)
        mqtt_client().publish(f"{P}/qr/scanner-1", {"id": "q1", "ts": now_ms(), "code": "LOYALTY-1"})
    assert edge.proc.wait(30) == EXIT_THREAD_DIED
    log = edge.log_path.read_text()
    assert f"thread(s) died: {thread} (InjectedFault in edge/faults.py" in log
