"""The SQLite file: schema migrations, the single writer's operations, and read queries.

One thread (the pipeline) owns the write connection and commits in groups; readers (HTTP) open their
own connections, which WAL lets run beside the writer. The writer uses synchronous=FULL because its
commit gates the MQTT acknowledgement: an acked event must survive a power cut, and with group commit
the extra fsync costs nothing measurable.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import sqlite_utils

from edge.model import EdgeError, Event

Migration = Callable[[sqlite_utils.Database], None]


def _v1(db: sqlite_utils.Database) -> None:
    """The first schema: event log, outbox, dead letters, presence, decisions, displays."""
    db["events"].create({
        "seq": int, "event_id": str, "kind": str, "type": str, "source": str, "zone": str, "subject": str,
        "customer": str, "ts": float, "received_at": float, "data": str,
    }, pk="seq", not_null={"event_id", "kind", "source", "ts", "received_at"})
    db.execute("CREATE UNIQUE INDEX idx_events_event_id ON events(event_id)")
    db["events"].create_index(["kind", "seq"])
    db["events"].create_index(["ts"])
    db["outbox"].create({"event_seq": int}, pk="event_seq")
    db["deadletters"].create({
        "id": int, "topic": str, "reason": str, "detail": str, "payload_excerpt": str, "received_at": float,
    }, pk="id")
    db["presence"].create({
        "subject": str, "zone": str, "gateway": str, "entered_at": float, "last_seen": float, "customer": str,
    }, pk="subject")
    db["decisions"].create({
        "id": int, "ts": float, "screen": str, "content_id": str, "rule_id": str, "reason": str,
        "event_id": str, "customer": str, "expires_at": float, "payload": str,
    }, pk="id")
    db["decisions"].create_index(["screen", "id"])
    db["displays"].create({"screen": str, "payload": str, "priority": int, "expires_at": float, "updated_at": float},
                          pk="screen")
    db["kv"].create({"key": str, "value": str}, pk="key")


def _v2(db: sqlite_utils.Database) -> None:
    """Presence survives a restart with its visit: visit id and start, and the engine's state (JSON)."""
    db["presence"].add_column("visit_id", str)
    db["presence"].add_column("visit_started_at", float)
    db["presence"].add_column("state", str)


def _v3(db: sqlite_utils.Database) -> None:
    """Decisions keep their explanation as data (rule, matched inputs, variant, target): JSON in `extra`."""
    db["decisions"].add_column("extra", str)


_V4_SQL = """
CREATE TABLE IF NOT EXISTS profiles (
    customer_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    profile TEXT NOT NULL,
    first_name TEXT,
    consent_personalization INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    last_seen REAL
);
CREATE INDEX IF NOT EXISTS idx_profiles_last_seen ON profiles(last_seen);
CREATE TABLE IF NOT EXISTS identities (
    key TEXT PRIMARY KEY,
    customer_id TEXT,
    via TEXT,
    learned_at REAL
);
CREATE INDEX IF NOT EXISTS idx_identities_customer_id ON identities(customer_id);
CREATE TABLE IF NOT EXISTS sync_state (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS sync_rejects (
    event_seq INTEGER PRIMARY KEY,
    event_id TEXT,
    reason TEXT NOT NULL,
    detail TEXT,
    rejected_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sync_tombstones (
    customer_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    erased_at REAL NOT NULL
);
"""


def _v4(db: sqlite_utils.Database) -> None:
    """Sync and identity: the profile context cache, identities, sync cursor, rejects and tombstones.

    A frozen copy of sync.client's schema at this version (later changes get their own migration)."""
    for stmt in _V4_SQL.split(";"):
        if stmt.strip():
            db.execute(stmt)


_V5_SQL = """
CREATE TABLE IF NOT EXISTS qr_uses (token_id TEXT PRIMARY KEY, kind TEXT NOT NULL, used_at REAL NOT NULL, by TEXT);
CREATE TABLE IF NOT EXISTS qr_handoffs (
    token_id TEXT PRIMARY KEY, kiosk TEXT NOT NULL, session TEXT NOT NULL, customer TEXT, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pickups (
    order_id TEXT PRIMARY KEY, customer_id TEXT, state TEXT NOT NULL, collected_at REAL NOT NULL, bay TEXT,
    by TEXT, token_id TEXT
);
CREATE TABLE IF NOT EXISTS returns (
    rma_id TEXT PRIMARY KEY, state TEXT NOT NULL, completed_at REAL NOT NULL, by TEXT, token_id TEXT
);
"""


def _v5(db: sqlite_utils.Database) -> None:
    """QR journeys (edge/journeys.py): single-use token uses, kiosk handoffs, pickups collected, returns."""
    for stmt in _V5_SQL.split(";"):
        if stmt.strip():
            db.execute(stmt)


def _v6(db: sqlite_utils.Database) -> None:
    """Erasure: tombstones of erasures asked here stay `pending` until the central store confirms them;
    partial indexes find a customer's events and decisions without reading the whole log."""
    if "pending" not in db["sync_tombstones"].columns_dict:  # sync.client.ensure_schema may have made it
        db.execute("ALTER TABLE sync_tombstones ADD COLUMN pending INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX IF NOT EXISTS idx_events_customer ON events(customer) WHERE customer IS NOT NULL")
    db.execute("CREATE INDEX IF NOT EXISTS idx_decisions_customer ON decisions(customer) WHERE customer IS NOT NULL")


def _v7(db: sqlite_utils.Database) -> None:
    """Failed attempts of messages a crash interrupted, by digest of topic and payload (edge/quarantine.py)."""
    db.execute("CREATE TABLE IF NOT EXISTS failed_attempts (digest BLOB PRIMARY KEY, attempts INTEGER NOT NULL, "
               "updated_at REAL NOT NULL)")


# Append only: a newer binary upgrades an older file by running the steps it has not seen.
MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(EdgeError):
    """The database file cannot be used."""


BUSY_TIMEOUT_MS = 30000
WIPE_BUSY_MS = 50  # how long one attempt to truncate the WAL waits for readers (the writer waits meanwhile)


def connect(path: str | Path, *, writer: bool = False) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are explicit) with WAL.

    The writer deletes with secure_delete: what it deletes or overwrites is zeroed in the page (free
    pages too), so an erased shopper's bytes do not linger in the file; `truncate_wal` then removes the
    old page images from the WAL."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA synchronous={'FULL' if writer else 'NORMAL'}")
    if writer:
        conn.execute("PRAGMA secure_delete=ON")
    return conn


def truncate_wal(conn: sqlite3.Connection, busy_ms: int = WIPE_BUSY_MS) -> bool:
    """Copy the WAL into the database and truncate it to zero bytes, so the page images it held (a
    shopper's rows before their erasure) are gone; True when done. A reader still on an older snapshot
    makes it fail after `busy_ms`: call again later. Outside a transaction, on the write connection."""
    conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    try:
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.OperationalError:
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return busy == 0


def schema_version(db: sqlite_utils.Database) -> int:
    if "schema_version" not in db.table_names():
        return 0
    row = db.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file to SCHEMA_VERSION; returns the version it had. Refuses files from a newer binary."""
    db = sqlite_utils.Database(conn)
    if "schema_version" not in db.table_names():
        db["schema_version"].create({"version": int, "applied_at": str}, pk="version")
    before = schema_version(db)
    if before > SCHEMA_VERSION:
        raise StoreError(f"the database has schema version {before}, newer than this instore-edge "
                         f"understands ({SCHEMA_VERSION}): upgrade instore-edge or restore a backup")
    for version in range(before + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version - 1](db)
            conn.execute("INSERT INTO schema_version(version, applied_at) VALUES (?, datetime('now'))", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return before


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


_compact = json.JSONEncoder(separators=(",", ":")).encode  # built once, not per call like dumps(separators=)
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

    def want_wipe(self) -> None:
        """Deleted personal data must leave the WAL too: truncate it after this transaction commits."""
        if self.wipe_due_since is None:
            self.wipe_due_since = time.monotonic()
            self._next_wipe = 0.0

    def wipe_wal(self) -> bool | None:
        """After a commit: truncate the WAL when an erasure asked for it. None when nothing was due or it
        is not time to retry yet; True when done; False when readers held it up (retried with back-off)."""
        if self.wipe_due_since is None or self.conn.in_transaction:
            return None
        now = time.monotonic()
        if now < self._next_wipe:
            return None
        if truncate_wal(self.conn):
            self.wipe_due_since = None
            return True
        self._next_wipe = now + min(5.0, 0.1 + (now - self.wipe_due_since) / 4)
        return False

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
                                    e.received_at, _compact(e.data) if e.data else None))
        if cur.rowcount == 0:
            return None
        seq = cur.lastrowid
        if outbox:
            self._outbox.append(seq)
        return seq

    def insert_deadletters(self, rows: Iterable[tuple[str, str, str, str, float]]) -> None:
        self.conn.executemany(
            "INSERT INTO deadletters(topic, reason, detail, payload_excerpt, received_at) VALUES (?,?,?,?,?)", rows)

    def upsert_presence(self, rows: Iterable[tuple[str, str | None, str | None, float, float, str | None]]) -> None:
        self.conn.executemany(
            "INSERT INTO presence(subject, zone, gateway, entered_at, last_seen, customer) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT(subject) DO UPDATE SET zone=excluded.zone, gateway=excluded.gateway, "
            "entered_at=excluded.entered_at, last_seen=excluded.last_seen, customer=excluded.customer", rows)

    def upsert_presence_v2(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Presence rows from PresenceTracker.take_changes_v2: the six columns + visit_id, visit_started_at, state."""
        self.conn.executemany(
            "INSERT INTO presence(subject, zone, gateway, entered_at, last_seen, customer, visit_id, "
            "visit_started_at, state) VALUES (?,?,?,?,?,?,?,?,?) "
            "ON CONFLICT(subject) DO UPDATE SET zone=excluded.zone, gateway=excluded.gateway, "
            "entered_at=excluded.entered_at, last_seen=excluded.last_seen, customer=excluded.customer, "
            "visit_id=excluded.visit_id, visit_started_at=excluded.visit_started_at, state=excluded.state", rows)

    def delete_presence(self, subjects: Iterable[str]) -> None:
        self.conn.executemany("DELETE FROM presence WHERE subject = ?", ((s,) for s in subjects))

    def insert_decision(self, row: dict[str, Any]) -> None:
        self.conn.execute(
            "INSERT INTO decisions(ts, screen, content_id, rule_id, reason, event_id, customer, expires_at, payload, "
            "extra) VALUES (:ts, :screen, :content_id, :rule_id, :reason, :event_id, :customer, :expires_at, "
            ":payload, :extra)", {"extra": None, **row})

    def upsert_display(self, screen: str, payload: str, priority: int, expires_at: float | None, now: float) -> None:
        self.conn.execute(
            "INSERT INTO displays(screen, payload, priority, expires_at, updated_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT(screen) DO UPDATE SET payload=excluded.payload, priority=excluded.priority, "
            "expires_at=excluded.expires_at, updated_at=excluded.updated_at", (screen, payload, priority, expires_at, now))


def outbox_stats(conn: sqlite3.Connection, now: float) -> tuple[int, float | None]:
    """(pending events, age of the oldest in seconds), in O(log n): events enter the outbox in seq order
    and leave it from the front, so its seqs are contiguous and a count(*) over millions is not needed."""
    lo, hi = conn.execute("SELECT min(event_seq), max(event_seq) FROM outbox").fetchone()
    if lo is None:
        return 0, None
    row = conn.execute("SELECT received_at FROM events WHERE seq = ?", (lo,)).fetchone()
    return hi - lo + 1, (max(0.0, now - row[0]) if row and row[0] is not None else None)


def row_to_event_dict(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    if out.get("data"):
        out["data"] = json.loads(out["data"])
    return out
