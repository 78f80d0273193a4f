"""The single writer: opens the write connection on a migrated file, and does the pipeline's writes on it."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edge.jsontext import compact
from edge.model import Event
from edge.store.db import StoreError, connect, truncate_wal
from edge.store.schema import migrate
from sync.scrub import Check, Scrub

# A row of `kv` while an erasure's bytes are not yet checked (no value kept: the check's values live in memory
# only); found at start, it means the edge stopped before the check (see Writer.finish_interrupted_check).
CHECK_DUE_KEY = "erasure_check_due"


def open_writer(path: str | Path) -> sqlite3.Connection:
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(p, writer=True)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open the database {p}: {exc}; check db.path and that the folder is "
                         "writable by the service user") from exc
    migrate(conn)
    return conn


_INSERT_EVENT = ("INSERT OR IGNORE INTO events(event_id, kind, type, source, zone, subject, customer, ts, received_at, "
                 "data) VALUES (?,?,?,?,?,?,?,?,?,?)")


class Writer:
    """The write operations of the pipeline thread, on its own connection; call inside begin()/commit()."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.cur = conn.cursor()  # one cursor for the per-event statements, not a new one per row
        self._outbox: list[int] = []
        # Set by an erasure or a purge: the WAL still holds the deleted rows' old pages (see wipe_wal).
        self.wipe_due_since: float | None = None
        self._next_wipe = 0.0
        self.scrub: Scrub | None = None  # an erasure's values, until the file is checked for them
        self.checked: Check | None = None  # the last verdict on an erasure's bytes, until the pipeline reports it

    def want_wipe(self, values: Iterable[str] = ()) -> None:
        """Deleted personal data must leave the WAL too: truncate it after this transaction commits. With an
        erasure's values (edge.privacy says which), the file is then checked for them and what still holds
        them rebuilt (sync/scrub.py): secure_delete misses the bytes b-tree rebalancing left behind.
        Inside the transaction: with values, it notes in the file that a check is due."""
        values = set(values)
        if values:
            self.conn.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, '1')", (CHECK_DUE_KEY,))
            if self.scrub is None:
                self.scrub = Scrub(values)
            else:
                self.scrub.add(values)
        if self.wipe_due_since is None:
            self.wipe_due_since = time.monotonic()
            self._next_wipe = 0.0

    def wipe_wal(self) -> bool | None:
        """After a commit: truncate the WAL when an erasure or a purge asked for it, then check an erasure's
        values are gone from the file (rebuilding what holds them and truncating again: `checked` gets the
        verdict). None when nothing was due or it is not time to retry yet; True when done; False when
        readers held the truncation up (retried with back-off, as is a check that raised)."""
        if self.wipe_due_since is None or self.conn.in_transaction:
            return None
        now = time.monotonic()
        if now < self._next_wipe:
            return None
        self._next_wipe = now + min(5.0, 0.1 + (now - self.wipe_due_since) / 4)  # unless this attempt finishes
        while True:
            if not truncate_wal(self.conn):
                return False
            if self.scrub is None:
                break
            check = self.scrub.step(self.conn)
            if check is not None:
                self.scrub, self.checked = None, check
                if check.clean:
                    self.conn.execute("DELETE FROM kv WHERE key = ?", (CHECK_DUE_KEY,))
                break
        self.wipe_due_since = None
        return True

    def finish_interrupted_check(self) -> float | None:
        """At start, before the pipeline: when the edge stopped before checking an erasure's bytes (or the
        check found copies it could not remove), VACUUM (every page written anew from the live rows: what
        removes such copies; the values were not kept, so they cannot be looked for) and truncate the WAL.
        Returns the seconds it took, None when nothing was due; raises sqlite3.Error when VACUUM failed."""
        if not self.conn.execute("SELECT 1 FROM kv WHERE key = ?", (CHECK_DUE_KEY,)).fetchone():
            return None
        t0 = time.perf_counter()
        self.conn.execute("PRAGMA secure_delete=ON")
        self.conn.execute("VACUUM")
        self.conn.execute("DELETE FROM kv WHERE key = ?", (CHECK_DUE_KEY,))
        truncate_wal(self.conn, busy_ms=5000)
        return time.perf_counter() - t0

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        if self._outbox:
            # the batch's outbox rows in one statement (one sqlite3_step: one GIL release, not one per row)
            self.cur.execute("INSERT INTO outbox(event_seq) SELECT value FROM json_each(?)",
                             ("[" + ",".join(map(str, self._outbox)) + "]",))
            self._outbox.clear()
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        self._outbox.clear()
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def savepoint(self, name: str) -> int:
        """Start a savepoint inside the transaction; returns the mark to roll back to."""
        self.conn.execute(f"SAVEPOINT {name}")
        return len(self._outbox)

    def rollback_to(self, name: str, mark: int) -> None:
        """Undo everything since the savepoint, the outbox rows still to write included."""
        self.conn.execute(f"ROLLBACK TO {name}")
        del self._outbox[mark:]

    def release(self, name: str) -> None:
        self.conn.execute(f"RELEASE {name}")

    def insert_event(self, e: Event, *, outbox: bool = True) -> int | None:
        """Record an event once; returns its seq, or None when the event_id was already recorded.
        Its outbox row is written at commit, in the same transaction."""
        cur = self.cur
        cur.execute(_INSERT_EVENT, (e.event_id, e.kind, e.type, e.source, e.zone, e.subject, e.customer, e.ts,
                                    e.received_at, compact(e.data) if e.data else None))
        if cur.rowcount == 0:
            return None
        seq = cur.lastrowid
        if outbox:
            self._outbox.append(seq)
        return seq

    def insert_deadletters(self, rows: Iterable[tuple[str, str, str, str, float]]) -> None:
        self.conn.executemany(
            "INSERT INTO deadletters(topic, reason, detail, payload_excerpt, received_at) VALUES (?,?,?,?,?)", rows)

    def upsert_presence(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Presence rows from PresenceTracker.take_changes (its COLUMNS)."""
        self.conn.executemany(
            "INSERT INTO presence(subject, zone, gateway, entered_at, last_seen, customer, visit_id, "
            "visit_started_at, state) VALUES (?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(subject) DO UPDATE SET zone=excluded.zone, gateway=excluded.gateway, "
            "entered_at=excluded.entered_at, last_seen=excluded.last_seen, customer=excluded.customer, "
            "visit_id=excluded.visit_id, visit_started_at=excluded.visit_started_at, state=excluded.state", rows)

    def delete_presence(self, subjects: Iterable[str]) -> None:
        self.conn.executemany("DELETE FROM presence WHERE subject = ?", ((s,) for s in subjects))

    def insert_decision(self, row: tuple[Any, ...]) -> None:
        """(ts, screen, content_id, rule_id, reason, event_id, customer, expires_at, payload, extra)."""
        self.cur.execute("INSERT INTO decisions(ts, screen, content_id, rule_id, reason, event_id, customer, expires_at, "
                         "payload, extra) VALUES (?,?,?,?,?,?,?,?,?,?)", row)

    def upsert_displays(self, rows: Iterable[tuple[str, str, int, float | None, float]]) -> None:
        """(screen, payload, priority, expires_at, updated_at): what each display shows now."""
        self.conn.executemany(
            "INSERT INTO displays(screen, payload, priority, expires_at, updated_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT(screen) DO UPDATE SET payload=excluded.payload, priority=excluded.priority, "
            "expires_at=excluded.expires_at, updated_at=excluded.updated_at", rows)
