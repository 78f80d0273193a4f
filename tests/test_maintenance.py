"""Data lifecycle: retention purge through the writer, online backup and restore, erasure over HTTP, and the
schema migration path from the first schema to the current one."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlite_utils

from edge import maintenance
from edge.broker import free_port
from edge.config import Config
from edge.store.db import StoreError, connect
from edge.store.schema import MIGRATIONS, SCHEMA_VERSION
from edge.store.writer import Writer, open_writer
from tests.conftest import ADMIN, EdgeHandle

DAY = 86400.0


def run_task(service, fn: Callable[[Writer], object]) -> object:
    """Run fn in the pipeline's writer thread (the one way to write) and wait for its commit."""
    box: dict[str, object] = {}
    done = threading.Event()
    service.inbox.submit_task(lambda w: box.__setitem__("value", fn(w)), done.set)
    assert done.wait(10), "the writer did not commit the task"
    return box.get("value")


def insert(w: Writer, received_at: float, *, synced: bool, kind: str = "qr") -> int:
    cur = w.conn.execute("INSERT INTO events(event_id, kind, type, source, ts, received_at) VALUES (?,?,?,?,?,?)",
                         (uuid.uuid4().hex, kind, "scan", "scanner-1", received_at, received_at))
    if not synced:
        w.conn.execute("INSERT INTO outbox(event_seq) VALUES (?)", (cur.lastrowid,))
    return cur.lastrowid


def test_purge_deletes_old_synced_and_keeps_unsynced(make_config: Callable[..., Config]) -> None:
    from edge.app import App

    service = App(make_config(privacy={"retention_days": 30})).start(http=False)
    try:
        now = time.time()
        old, recent = now - 40 * DAY, now - 1 * DAY

        def setup(w: Writer) -> dict[str, list[int]]:
            seqs = {"old_synced": [insert(w, old, synced=True) for _ in range(3)],
                    "old_unsynced": [insert(w, old, synced=False) for _ in range(2)],
                    "recent_unsynced": [insert(w, recent, synced=False)],
                    "recent_synced": []}
            w.conn.execute("INSERT INTO decisions(ts, screen, content_id) VALUES (?, 'entrance-1', 'a'), "
                           "(?, 'entrance-1', 'b')", (old, recent))
            w.conn.executemany("INSERT INTO deadletters(topic, reason, detail, payload_excerpt, received_at) "
                               "VALUES ('t', 'not_json', '', '', ?)", [(old,), (recent,)])
            return seqs

        seqs = run_task(service, setup)
        before = service.conn.execute("SELECT count(*) FROM events").fetchone()[0]
        result = run_task(service, lambda w: maintenance.purge_expired_detail(
            w.conn, service.cfg.privacy.retention_days, now))
        assert result.events == 3 and result.decisions == 1 and result.deadletters == 1

        conn = connect(service.cfg.db.path)
        left = {r[0] for r in conn.execute("SELECT seq FROM events")}
        assert not left & set(seqs["old_synced"])
        assert set(seqs["old_unsynced"]) <= left, "an event the central store never received was purged"
        assert set(seqs["recent_unsynced"]) <= left
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == before - 3
        assert [r[0] for r in conn.execute("SELECT content_id FROM decisions")] == ["b"]
        assert conn.execute("SELECT count(*) FROM deadletters").fetchone()[0] == 1
        # The outbox is untouched: its seqs still point at their events.
        assert conn.execute("SELECT count(*) FROM outbox o LEFT JOIN events e ON e.seq = o.event_seq "
                            "WHERE e.seq IS NULL").fetchone()[0] == 0
        conn.close()
        # Once the old events are synced (leave the outbox), the next purge takes them too.
        run_task(service, lambda w: w.conn.executemany("DELETE FROM outbox WHERE event_seq = ?",
                                                        [(s,) for s in seqs["old_unsynced"]]))
        assert run_task(service, lambda w: maintenance.purge_expired(w.conn, 30, now)) == 2
        # The limit bounds one call; repeated calls finish the job.
        run_task(service, lambda w: [insert(w, old, synced=True) for _ in range(5)])
        assert run_task(service, lambda w: maintenance.purge_expired(w.conn, 30, now, limit=2)) == 2
        assert run_task(service, lambda w: maintenance.purge_expired(w.conn, 30, now, limit=10)) == 3
    finally:
        service.stop()


def test_the_hourly_purge_leaves_no_byte_of_what_it_deleted_in_the_files(make_config: Callable[..., Config]) -> None:
    """Retention deletes old events; their bytes must leave the file and the WAL too (secure_delete, then
    the WAL truncated after the purge's commit)."""
    from edge.app import App

    service = App(make_config(privacy={"retention_days": 30})).start(http=False)
    db = Path(service.cfg.db.path)
    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    marker = b"kiosk-note-XQJZ-3318"

    def old_events(w: Writer) -> None:
        for i in range(200):
            cur = w.conn.execute("INSERT INTO events(event_id, kind, type, source, ts, received_at, data) "
                                 "VALUES (?,?,?,?,?,?,?)", (uuid.uuid4().hex, "kiosk", "note", "kiosk-1",
                                                           time.time() - 40 * DAY, time.time() - 40 * DAY,
                                                           f'{{"note": "{marker.decode()}-{i}"}}'))
            assert cur.lastrowid

    try:
        run_task(service, old_events)
        with closing(sqlite3.connect(db)) as other:  # what SQLite's auto-checkpoint does after a while
            other.execute("PRAGMA wal_checkpoint(PASSIVE)")
        assert sum(f.read_bytes().count(marker) for f in files if f.exists()) >= 200
        service._purge_expired()
        deadline = time.monotonic() + 10
        while (found := sum(f.read_bytes().count(marker) for f in files if f.exists())) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert found == 0, f"{found} copies of purged data still on disk"
        with closing(connect(db)) as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    finally:
        service.stop()


def test_purge_without_a_transaction_runs_its_own(tmp_path: Path) -> None:
    conn = open_writer(tmp_path / "edge.db")
    w = Writer(conn)
    w.begin()
    insert(w, time.time() - 10 * DAY, synced=True)
    w.commit()
    assert maintenance.purge_expired(conn, 5) == 1
    assert not conn.in_transaction
    conn.close()


def test_backup_while_writing_then_restore(tmp_path: Path, make_config: Callable[..., Config]) -> None:
    from edge.app import App

    cfg = make_config()
    service = App(cfg).start(http=False)
    stop = threading.Event()
    written = [0]

    def writer_load() -> None:
        while not stop.is_set():
            run_task(service, lambda w: [insert(w, time.time(), synced=False) for _ in range(200)])
            written[0] += 200

    run_task(service, lambda w: [insert(w, time.time(), synced=False) for _ in range(5000)])
    load = threading.Thread(target=writer_load)
    load.start()
    try:
        time.sleep(0.2)
        before = written[0]
        info = maintenance.backup(cfg.db.path, tmp_path / "backups" / "edge-backup.db", pages_per_step=8)
        after = written[0]
    finally:
        stop.set()
        load.join(20)
        service.stop()
    assert before > 0 and after > before, "the writer did not keep writing during the backup"
    out = sqlite3.connect(info["path"])
    assert out.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    events = out.execute("SELECT count(*) FROM events").fetchone()[0]
    assert events == info["events"]
    assert 5000 + before <= events <= 5000 + after + 200
    # A consistent snapshot: the outbox and the events agree, no half-applied transaction.
    assert out.execute("SELECT count(*) FROM outbox").fetchone()[0] == events
    assert out.execute("SELECT count(*) FROM outbox o LEFT JOIN events e ON e.seq = o.event_seq "
                       "WHERE e.seq IS NULL").fetchone()[0] == 0
    out.close()
    assert not list((tmp_path / "backups").glob("*.partial"))

    # Restore: a service started on the backup file sees its events.
    restored = App(make_config(db={"path": info["path"]})).start(http=False)
    try:
        assert restored.conn.execute("SELECT count(*) FROM events").fetchone()[0] == events
        run_task(restored, lambda w: insert(w, time.time(), synced=False))  # and writes on
    finally:
        restored.stop()


def test_backup_refuses_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        maintenance.backup(tmp_path / "missing.db", tmp_path / "b.db")
    open_writer(tmp_path / "edge.db").close()
    with pytest.raises(ValueError):
        maintenance.backup(tmp_path / "edge.db", tmp_path / "edge.db")


def test_erase_via_http(edge: EdgeHandle) -> None:
    base = maintenance.http_base(edge.cfg.http.host, edge.service.http_port)
    ok, message = maintenance.erase_via_http(base, ADMIN, "cust-42")
    assert ok, message
    assert "cust-42" in message
    ok, message = maintenance.erase_via_http(base, "wrong-token-0123456789", "cust-42")
    assert not ok and "HTTP 40" in message, message
    ok, message = maintenance.erase_via_http(base, None, "cust-42")
    assert not ok and "admin token" in message
    ok, message = maintenance.erase_via_http(f"http://127.0.0.1:{free_port()}", ADMIN, "cust-42", timeout=3)
    assert not ok and "cannot reach the edge" in message


def test_http_base() -> None:
    assert maintenance.http_base("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert maintenance.http_base("::", 80) == "http://[::1]:80"
    assert maintenance.http_base("192.168.1.5", 8080) == "http://192.168.1.5:8080"


def _first_schema_file(path: Path) -> None:
    """A database as the first release made it: only MIGRATIONS[0] applied, schema_version = 1."""
    conn = connect(path, writer=True)
    db = sqlite_utils.Database(conn)
    db["schema_version"].create({"version": int, "applied_at": str}, pk="version")
    MIGRATIONS[0](db)
    conn.execute("INSERT INTO schema_version(version, applied_at) VALUES (1, datetime('now'))")
    conn.execute("INSERT INTO events(event_id, kind, type, source, zone, ts, received_at) "
                 "VALUES ('e1', 'qr', 'scan', 'scanner-1', 'entrance', 1.0, 1.0)")
    conn.execute("INSERT INTO outbox(event_seq) VALUES (1)")
    conn.execute("INSERT INTO presence(subject, zone, gateway, entered_at, last_seen) "
                 "VALUES ('b:1', 'entrance', 'gw-entrance', 1.0, 2.0)")
    conn.execute("INSERT INTO decisions(ts, screen, content_id, reason) VALUES (1.0, 'entrance-1', 'autumn', 'r')")
    conn.close()


def test_migration_from_the_first_schema(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _first_schema_file(path)
    conn = open_writer(path)
    try:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == list(range(1, SCHEMA_VERSION + 1))
        assert conn.execute("SELECT event_id FROM events").fetchall() == [("e1",)]
        assert conn.execute("SELECT event_seq FROM outbox").fetchall() == [(1,)]
        row = conn.execute("SELECT subject, zone, visit_id, state FROM presence").fetchone()
        assert row == ("b:1", "entrance", None, None)
        assert conn.execute("SELECT content_id, extra FROM decisions").fetchone() == ("autumn", None)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"profiles", "identities", "sync_state", "sync_rejects", "sync_tombstones"} <= tables
    finally:
        conn.close()
    # Opening again is a no-op.
    open_writer(path).close()


def test_migrated_file_runs_in_a_service(tmp_path: Path, make_config: Callable[..., Config]) -> None:
    from edge.app import App

    path = tmp_path / "old.db"
    _first_schema_file(path)
    service = App(make_config(db={"path": str(path)})).start(http=False)
    try:
        # (The restored presence row may add its own zone events: e1 must be among the events.)
        ids = run_task(service, lambda w: [r[0] for r in w.conn.execute("SELECT event_id FROM events")])
        assert "e1" in ids
        run_task(service, lambda w: maintenance.purge_expired(w.conn, 1, time.time()))
        ids = run_task(service, lambda w: [r[0] for r in w.conn.execute("SELECT event_id FROM events")])
        assert "e1" in ids  # old, but still in the outbox: kept
    finally:
        service.stop()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = open_writer(path)
    conn.execute("INSERT INTO schema_version(version, applied_at) VALUES (?, datetime('now'))",
                 (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreError, match=r"newer than this instore-edge") as exc:
        open_writer(path)
    assert str(SCHEMA_VERSION + 1) in str(exc.value) and "backup" in str(exc.value)


def test_backup_and_erase_commands_work_against_a_running_edge(edge_process, mqtt_client, tmp_path):
    """The store-IT commands as typed: `instore-edge backup` and `instore-edge erase` on a live edge."""
    import sqlite3 as _sqlite3
    import subprocess
    import sys

    from conftest import ROOT, now_ms, wait_until

    edge = edge_process()
    edge.start()
    status = mqtt_client()
    status.subscribe("instore/teststore/edge/status")
    status.wait_for(lambda t, d: d["state"] == "online", timeout=20)
    mqtt_client().publish("instore/teststore/kiosk/kiosk-1/event",
                          {"ts": now_ms(), "type": "identify", "customer": "C-0555", "session": "s-5"})
    db = tmp_path / "edge.db"

    def customers() -> int:
        with _sqlite3.connect(db) as conn:
            return conn.execute("SELECT count(*) FROM events WHERE customer = 'C-0555'").fetchone()[0]

    wait_until(customers, timeout=20, what="the identify event")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edge.cli", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)

    out = cli("backup", "-c", str(edge.config_path), str(tmp_path / "backup.db"))
    assert out.returncode == 0, out.stderr
    assert "integrity ok" in out.stdout
    with _sqlite3.connect(tmp_path / "backup.db") as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE customer = 'C-0555'").fetchone()[0] == 1

    out = cli("erase", "C-0555", "-c", str(edge.config_path))
    assert out.returncode == 0, out.stderr
    assert customers() == 0
    assert edge.terminate() == 0
