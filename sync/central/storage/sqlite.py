"""The central store in one SQLite file: the embedded engine (pilots, the demo, tests).

Writers run inside BEGIN IMMEDIATE, which SQLite serializes across threads and processes alike, so
"insert if new, then apply" is atomic and an event retried through two processes at once is recorded
once. (One write connection per process, shared under a lock, only queues this process's threads without
SQLite's busy-wait polling: correctness does not depend on it.) Because writers are serialized, the
feed's AUTOINCREMENT sequence is assigned in commit order: a cursor at seq n has seen every change that
will ever have a seq <= n, so `seq > cursor` never skips a change committed late.

Readers use their own WAL connections (one per thread) and never wait for the writer. The writer runs with
synchronous=FULL: a 200 to a push lets the edge delete its outbox rows, so the events it acknowledges must
survive a power cut. It deletes with secure_delete (deleted bytes are zeroed in their page and in free
pages); after an erasure the WAL is truncated, since its old page images hold the erased rows.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from sync import protocol as p
from sync.central.storage import content as content_rules
from sync.central.storage import profiles as rules
from sync.central.storage.base import Storage
from sync.central.storage.common import (
    ALL_STORES,
    IDEMPOTENCY_TTL_S,
    RELEVANCE_REFRESH_S,
    DatabaseError,
    FeedPage,
    IdempotencyKeyReused,
    Settings,
    digits,
    dumps,
    export_document,
    health_record,
    internal_rejection,
    invalid_cursor,
    page_answer,
    parse_events,
    rejection_counts,
    split_cursor,
    store_row,
)
from sync.central.storage.wakeup import FeedSignal
from sync.scrub import Check, Scrub
from sync.scrub import truncate_wal as truncate

Migration = Callable[[sqlite3.Connection], None]
T = TypeVar("T")

log = logging.getLogger("instore_central")

BUSY_TIMEOUT_MS = 30000
WIPE_WAIT_S = 5.0  # how long the writer retries truncating the WAL after an erasure before the next write does
WATCH_EVERY_S = 0.15  # how often a process with long-polls waiting looks for other processes' feed changes
SQL_CHUNK = 500


def _v1(conn: sqlite3.Connection) -> None:
    """Profiles, their identity index, the compacted change feed, received events, idempotency keys."""
    db = sqlite_utils.Database(conn)
    db["meta"].create({"key": str, "value": str}, pk="key")
    conn.execute("INSERT INTO meta(key, value) VALUES ('feed_epoch', ?)", (secrets.token_hex(4),))
    db["profiles"].create({"customer_id": str, "version": int, "body": str, "updated_at": float},
                          pk="customer_id", not_null={"version", "body"})
    db["identities"].create({"key": str, "customer_id": str}, pk="key", not_null={"customer_id"})
    db["identities"].create_index(["customer_id"])
    # When each consent purpose was last set, so an older consent event arriving late does not win.
    db["consent_ts"].create({"customer_id": str, "purpose": str, "ts": float}, pk=("customer_id", "purpose"))
    # AUTOINCREMENT: seq values are cursors and must never be reused after a compaction delete.
    conn.execute("CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, customer_id TEXT NOT NULL UNIQUE, "
                 "version INTEGER NOT NULL, op TEXT NOT NULL, changed_at REAL NOT NULL)")
    conn.execute("CREATE TABLE events (rseq INTEGER PRIMARY KEY AUTOINCREMENT, store TEXT NOT NULL, "
                 "event_id TEXT NOT NULL, seq INTEGER, kind TEXT NOT NULL, type TEXT, source TEXT, zone TEXT, "
                 "subject TEXT, customer TEXT, ts REAL NOT NULL, data TEXT, received_at REAL, "
                 "central_received_at REAL NOT NULL, applied TEXT, UNIQUE(store, event_id))")
    db["events"].create_index(["customer"])
    db["events"].create_index(["subject"])
    db["idempotency"].create({"store": str, "key": str, "body_hash": str, "response": str, "created_at": float},
                             pk=("store", "key"))
    db["idempotency"].create_index(["created_at"])
    db["rejections"].create({"store": str, "reason": str, "count": int}, pk=("store", "reason"))


def _v2(conn: sqlite3.Connection) -> None:
    """Erasures keep no trace of the id: each profile's erase key (indexed) finds the customer a store asks
    to erase by hash, and the feed keeps an erased customer under '#' + erase key, not under the id."""
    conn.create_function("erase_key", 1, p.erase_key, deterministic=True)
    conn.execute("ALTER TABLE profiles ADD COLUMN erase_key TEXT")
    conn.execute("UPDATE profiles SET erase_key = erase_key(customer_id)")
    conn.execute("CREATE INDEX idx_profiles_erase_key ON profiles(erase_key)")
    conn.execute("UPDATE changes SET customer_id = '#' || erase_key(customer_id) WHERE op = 'erase'")


def _v3(conn: sqlite3.Connection) -> None:
    """Chain scale: a feed entry per (target store, customer), versions kept per erase key (the lock and the
    tombstone of every customer ever written), where each shopper was seen, a row per store, and indexes
    for retention (event time) and per-store listing."""
    conn.execute("CREATE TABLE versions (erase_key TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    conn.execute("INSERT INTO versions(erase_key, version) SELECT erase_key, version FROM profiles "
                 "WHERE erase_key IS NOT NULL")
    conn.execute("INSERT INTO versions(erase_key, version) SELECT substr(customer_id, 2), version FROM changes "
                 "WHERE op = 'erase' ON CONFLICT(erase_key) DO UPDATE SET "
                 "version = max(version, excluded.version)")
    conn.execute("CREATE TABLE feed (seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, "
                 "customer_id TEXT NOT NULL, version INTEGER NOT NULL, op TEXT NOT NULL, "
                 "final INTEGER NOT NULL DEFAULT 0, changed_at REAL NOT NULL, UNIQUE(target, customer_id))")
    conn.execute("INSERT INTO feed(seq, target, customer_id, version, op, changed_at) "
                 "SELECT seq, '*', customer_id, version, op, changed_at FROM changes ORDER BY seq")
    # Positions keep growing past every seq the old feed ever handed out (cursors in the field).
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    if row is not None:
        if conn.execute("SELECT 1 FROM sqlite_sequence WHERE name = 'feed'").fetchone():
            conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = 'feed'", (row[0],))
        else:
            conn.execute("INSERT INTO sqlite_sequence(name, seq) VALUES ('feed', ?)", (row[0],))
    conn.execute("DROP TABLE changes")
    conn.execute("CREATE INDEX idx_feed_target_seq ON feed(target, seq)")
    conn.execute("CREATE INDEX idx_feed_customer ON feed(customer_id)")
    conn.execute("ALTER TABLE profiles ADD COLUMN home_store TEXT")
    conn.execute("CREATE TABLE customer_stores (customer_id TEXT NOT NULL, store TEXT NOT NULL, "
                 "first_seen REAL NOT NULL, last_seen REAL NOT NULL, PRIMARY KEY (customer_id, store))")
    conn.execute("CREATE INDEX idx_customer_stores_last_seen ON customer_stores(last_seen)")
    conn.execute("CREATE TABLE store_status (store TEXT PRIMARY KEY, last_push_at REAL, last_pull_at REAL, "
                 "events_total INTEGER NOT NULL DEFAULT 0, status TEXT, updated_at REAL)")
    conn.execute("INSERT INTO store_status(store, last_push_at, events_total) "
                 "SELECT store, max(central_received_at), count(*) FROM events GROUP BY store")
    conn.execute("CREATE INDEX idx_events_store_rseq ON events(store, rseq)")
    conn.execute("CREATE INDEX idx_events_ts ON events(ts)")


def _v4(conn: sqlite3.Connection) -> None:
    """Campaigns, catalogue, assets and orders (storage/content.py), and the content feed the stores pull."""
    for statement in content_rules.CONTENT_SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("CREATE TABLE content_feed (seq INTEGER PRIMARY KEY AUTOINCREMENT, target TEXT NOT NULL, "
                 "entity TEXT NOT NULL, changed_at REAL NOT NULL, UNIQUE(target, entity))")
    conn.execute("CREATE INDEX idx_content_feed_target_seq ON content_feed(target, seq)")



# Append only: a newer binary upgrades an older file by running the steps it has not seen.
MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: str | Path, *, writer: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, waiting on locks up to 30 s.

    The writer deletes with secure_delete (deleted bytes are zeroed in their page and in free pages);
    after an erasure `truncate_wal` removes the old page images from the WAL."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA synchronous={'FULL' if writer else 'NORMAL'}")
    if writer:
        conn.execute("PRAGMA secure_delete=ON")
    conn.row_factory = sqlite3.Row
    return conn


def truncate_wal(conn: sqlite3.Connection, busy_ms: int = 50) -> bool:
    """sync.scrub.truncate_wal with the central's timeouts (the erased rows' old page images leave the WAL)."""
    return truncate(conn, busy_ms, busy_after_ms=BUSY_TIMEOUT_MS)


def _schema_version(conn: sqlite3.Connection) -> int:
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone():
        return 0
    return int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SqliteRead:
    """A read snapshot as the content rules (storage/content.py Db) use it."""

    for_update = ""

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self.conn = conn
        self.now = now

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(sql, params).fetchall()]

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        raise AssertionError("a read snapshot does not write")

    def content_feed(self, target: str, entity: str) -> None:
        raise AssertionError("a read snapshot does not write")


class SqliteTx:
    """One BEGIN IMMEDIATE transaction, as the profile rules (profiles.Tx), the content rules (content.Db) and
    the push path use it."""

    for_update = ""

    def __init__(self, conn: sqlite3.Connection, settings: Settings, now: float) -> None:
        self.store: str | None = None  # the store whose push is being recorded
        self.conn = conn
        self.settings = settings
        self.now = now
        self.targets: set[str] = set()  # feed targets written: their long-polls are woken after commit
        self.erased = False
        self.erased_values: set[str] = set()  # to look for in the file's bytes after the commit
        self._versions: dict[str, int] = {}

    def mark(self) -> tuple[Any, ...]:
        """What this object remembers, to restore after a ROLLBACK TO SAVEPOINT forgets the writes since."""
        return dict(self._versions), set(self.targets), self.erased, set(self.erased_values)

    def restore(self, state: tuple[Any, ...]) -> None:
        versions, targets, erased, values = state
        self._versions, self.targets, self.erased = dict(versions), set(targets), erased
        self.erased_values = set(values)

    # --- the content rules' SQL (storage/content.py) -----------------------------------------------------------

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(sql, params).fetchall()]

    def run(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    def content_feed(self, target: str, entity: str) -> None:
        # Delete, then insert: AUTOINCREMENT gives the entry a new position at the end of the feed.
        self.conn.execute("DELETE FROM content_feed WHERE target = ? AND entity = ?", (target, entity))
        self.conn.execute("INSERT INTO content_feed(target, entity, changed_at) VALUES (?,?,?)",
                          (target, entity, self.now))
        self.targets.add(target)

    # --- locks and versions (writers are serialized: the lock is the transaction itself) -------------------

    def lock(self, keys: list[str]) -> dict[str, int]:
        todo = [k for k in dict.fromkeys(keys) if k not in self._versions]
        for chunk in _chunks(todo):
            found = dict(self.conn.execute(f"SELECT erase_key, version FROM versions WHERE erase_key IN "
                                           f"({_marks(len(chunk))})", chunk).fetchall())
            for key in chunk:
                self._versions[key] = int(found.get(key, 0))
        return {k: self._versions[k] for k in keys}

    def set_version(self, key: str, version: int) -> None:
        self._versions[key] = version
        self.conn.execute("INSERT INTO versions(erase_key, version) VALUES (?, ?) ON CONFLICT(erase_key) "
                          "DO UPDATE SET version = excluded.version", (key, version))

    # --- profiles ---------------------------------------------------------------------------------------------

    def load(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(list(dict.fromkeys(ids))):
            for cid, body in self.conn.execute(f"SELECT customer_id, body FROM profiles WHERE customer_id IN "
                                               f"({_marks(len(chunk))})", chunk):
                out[cid] = json.loads(body)
        return out

    def find_by_key(self, key: str) -> str | None:
        row = self.conn.execute("SELECT customer_id FROM profiles WHERE erase_key = ?", (key,)).fetchone()
        return row[0] if row else None

    def owners(self, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for chunk in _chunks(keys):
            out.update(self.conn.execute(f"SELECT key, customer_id FROM identities WHERE key IN "
                                         f"({_marks(len(chunk))})", chunk).fetchall())
        return out

    def claim_identities(self, customer_id: str, keys: list[str]) -> dict[str, str]:
        taken = {k: c for k, c in self.owners(keys).items() if c != customer_id}
        self.conn.execute("DELETE FROM identities WHERE customer_id = ?", (customer_id,))
        self.conn.executemany("INSERT INTO identities(key, customer_id) VALUES (?, ?)",
                              ((k, customer_id) for k in keys if k not in taken))
        return taken

    def consent_times(self, customer_id: str) -> dict[str, float]:
        return dict(self.conn.execute("SELECT purpose, ts FROM consent_ts WHERE customer_id = ?",
                                      (customer_id,)).fetchall())

    def set_consent_time(self, customer_id: str, purpose: str, ts: float) -> None:
        self.conn.execute("INSERT OR REPLACE INTO consent_ts(customer_id, purpose, ts) VALUES (?,?,?)",
                          (customer_id, purpose, ts))

    def recent_stores(self, customer_id: str, since: float) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT store FROM customer_stores WHERE customer_id = ? AND "
                                                "last_seen >= ?", (customer_id, since))]

    def write_profile(self, profile: dict[str, Any]) -> None:
        cid = profile["customer_id"]
        self.conn.execute("INSERT INTO profiles(customer_id, version, body, updated_at, erase_key, home_store) "
                          "VALUES (?,?,?,?,?,?) ON CONFLICT(customer_id) DO UPDATE SET version=excluded.version, "
                          "body=excluded.body, updated_at=excluded.updated_at, home_store=excluded.home_store",
                          (cid, profile["version"], dumps(profile), self.now, p.erase_key(cid),
                           profile.get("home_store")))

    def delete_customer(self, customer_id: str) -> None:
        row = self.conn.execute("SELECT body FROM profiles WHERE customer_id = ?", (customer_id,)).fetchone()
        body = json.loads(row[0]) if row and row[0] else {}
        keys = [r[0] for r in self.conn.execute("SELECT key FROM identities WHERE customer_id = ?", (customer_id,))]
        self.note_erased([customer_id], keys, [body.get("first_name")])
        for table, column in (("profiles", "customer_id"), ("identities", "customer_id"),
                              ("consent_ts", "customer_id"), ("customer_stores", "customer_id"),
                              ("feed", "customer_id"), ("orders", "customer_id")):
            self.conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (customer_id,))
        self.erased = True

    def anonymize_events(self, customer_id: str, keys: list[str]) -> int:
        # Rows stay (store counts, idempotency by event id); nothing in them points at the person any more.
        n = self.conn.execute("UPDATE events SET customer = NULL, subject = NULL, data = NULL WHERE customer = ?",
                              (customer_id,)).rowcount
        for chunk in _chunks(keys):
            n += self.conn.execute(f"UPDATE events SET subject = NULL, data = NULL WHERE subject IN "
                                   f"({_marks(len(chunk))})", chunk).rowcount
        self.erased = True
        self.note_erased([customer_id], keys)
        return n

    def note_erased(self, ids: list[str], keys: list[str], names: Iterable[Any] = ()) -> None:
        """What the file's bytes are checked for after the commit (sync/scrub.py), as the edge does: the ids, the
        identity keys and the device ids in them (6 characters or more: shorter ones occur anywhere by chance),
        first names of 4 or more."""
        values = [*ids, *keys, *(k.partition(":")[2] for k in keys)]
        self.erased_values.update(v for v in values if len(v) >= 6)
        self.erased_values.update(n for n in names if isinstance(n, str) and len(n) >= 4)

    def repoint_events(self, from_id: str, into_id: str) -> None:
        self.conn.execute("UPDATE events SET customer = ? WHERE customer = ?", (into_id, from_id))

    # --- the feed ---------------------------------------------------------------------------------------------

    def feed_targets(self, customer_id: str) -> dict[str, bool]:
        return {t: bool(f) for t, f in self.conn.execute("SELECT target, final FROM feed WHERE customer_id = ?",
                                                           (customer_id,))}

    def feed_write(self, customer_id: str, version: int, targets: dict[str, bool]) -> None:
        # Delete, then insert: AUTOINCREMENT gives each entry a new position at the end of the feed.
        self.conn.execute("DELETE FROM feed WHERE customer_id IN (?, ?)", (customer_id, "#" + p.erase_key(customer_id)))
        self.conn.executemany("INSERT INTO feed(target, customer_id, version, op, final, changed_at) "
                              "VALUES (?,?,?,'upsert',?,?)",
                              ((t, customer_id, version, int(final), self.now) for t, final in sorted(targets.items())))
        self.targets.update(targets)

    def feed_erase(self, key: str, version: int) -> None:
        self.conn.execute("DELETE FROM feed WHERE customer_id = ?", ("#" + key,))
        self.conn.execute("INSERT INTO feed(target, customer_id, version, op, final, changed_at) "
                          "VALUES (?,?,?,'erase',0,?)", (ALL_STORES, "#" + key, version, self.now))
        self.targets.add(ALL_STORES)
        self.erased = True

    def feed_touch(self, store: str, rows: list[tuple[str, int]]) -> None:
        """A store newly concerned by these customers (id, version): one entry each at the end of its feed."""
        for cid, version in rows:
            self.conn.execute("DELETE FROM feed WHERE target = ? AND customer_id = ?", (store, cid))
            self.conn.execute("INSERT INTO feed(target, customer_id, version, op, final, changed_at) "
                              "VALUES (?,?,?,'upsert',0,?)", (store, cid, version, self.now))
        if rows:
            self.targets.add(store)

    # --- where shoppers were seen -------------------------------------------------------------------------

    def note_seen(self, store: str, customers: list[str]) -> None:
        """Customers seen at (or fetched by) a store: remember it; when that starts the store's interest in
        them, append their profile to the store's feed (its cursor may have passed their last change)."""
        now, cutoff = self.now, self.now - self.settings.relevant_for_s
        started: list[str] = []
        for cid in customers:
            row = self.conn.execute("SELECT last_seen FROM customer_stores WHERE customer_id = ? AND store = ?",
                                    (cid, store)).fetchone()
            if row is not None and row[0] >= now - RELEVANCE_REFRESH_S:
                continue
            if row is None or row[0] < cutoff:
                started.append(cid)
            self.conn.execute("INSERT INTO customer_stores(customer_id, store, first_seen, last_seen) VALUES (?,?,?,?) "
                              "ON CONFLICT(customer_id, store) DO UPDATE SET last_seen = excluded.last_seen, "
                              "first_seen = CASE WHEN last_seen < ? THEN excluded.first_seen ELSE first_seen END",
                              (cid, store, now, now, cutoff))
        rows: list[tuple[str, int]] = []
        for chunk in _chunks(started):
            for cid, version, home in self.conn.execute(
                    f"SELECT customer_id, version, home_store FROM profiles WHERE customer_id IN "
                    f"({_marks(len(chunk))})", chunk):
                if home is None and self.settings.broadcast_unhomed:
                    continue  # every store hears of it already
                rows.append((cid, version))
        self.feed_touch(store, rows)


def _chunks(items: list[Any], n: int = SQL_CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class SqliteStorage(Storage):
    """The central store's data in one SQLite file (created when absent)."""

    engine = "sqlite"

    def __init__(self, path: str | Path, settings: Settings | None = None) -> None:
        self.path = Path(path)
        self.settings = settings or Settings()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = connect(self.path, writer=True)
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseError(f"cannot open the central database {self.path}: {exc}; check --db and that "
                                "its folder is writable") from exc
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._wipe_due = True  # a migration may have rewritten erased rows: start with a clean WAL
        self._scrub: Scrub | None = None  # an erasure's values, until the file is checked for them
        self.erasure_checks = {"clean": 0, "rebuilt": 0, "unverified": 0}
        self.epoch = str(self._conn.execute("SELECT value FROM meta WHERE key = 'feed_epoch'").fetchone()[0])
        self.signal = FeedSignal()
        self.signal.on_first_waiter = self._watch
        self._watching = False
        self._closed = threading.Event()
        with self._lock:
            self._wipe()

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION in one transaction; refuse files from a newer program."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
            before = _schema_version(conn)
            if before > SCHEMA_VERSION:
                raise DatabaseError(f"the central database has schema version {before}, newer than this "
                                    f"program understands ({SCHEMA_VERSION}): upgrade instore-edge")
            for version in range(before + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version - 1](conn)
                conn.execute("INSERT INTO schema_version(version, applied_at) VALUES (?, datetime('now'))",
                             (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._conn.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "reader", None)
        if conn is None:
            conn = connect(self.path)
            self._local.reader = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def _write(self, now: float | None = None) -> Iterator[SqliteTx]:
        """One write transaction (BEGIN IMMEDIATE); rolled back on any error. After the commit the waiting
        long-polls are woken, and after an erasure the WAL is truncated."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            tx = SqliteTx(conn, self.settings, time.time() if now is None else now)
            try:
                yield tx
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if tx.erased:
                self._wipe_due = True
            if tx.erased_values:
                if self._scrub is None:
                    self._scrub = Scrub(set(tx.erased_values))
                else:
                    self._scrub.add(tx.erased_values)
            if self._wipe_due:
                self._wipe()
        if tx.targets:
            self.signal.notify(tx.targets)

    def _wipe(self) -> None:
        """Truncate the WAL, waiting up to WIPE_WAIT_S for readers on older snapshots (under the lock);
        if they take longer, the next write tries again. Then, after an erasure, check the file's bytes for the
        erased values and rebuild what still holds a copy (sync/scrub.py: secure_delete misses the bytes a
        b-tree page split leaves behind), truncating again after each rebuild."""
        deadline = time.monotonic() + WIPE_WAIT_S
        while True:
            while not truncate_wal(self._conn):
                if time.monotonic() > deadline:
                    log.warning("the WAL still holds erased data: a reader keeps an old snapshot open; retrying at "
                                "the next write")
                    return
                time.sleep(0.05)
            if self._scrub is None:
                break
            try:
                check = self._scrub.step(self._conn)
            except (OSError, sqlite3.Error) as exc:  # the erasure is committed: its check is retried at the next write
                log.warning("could not check the file's bytes after an erasure (%s); retrying at the next write", exc)
                return
            if check is None:
                continue  # something was rebuilt: truncate the WAL and look again
            self._scrub = None
            self._report(check)
            break
        self._wipe_due = False

    def _report(self, check: Check) -> None:
        """The verdict on an erasure's bytes, to the log (where, never what) and to the stats."""
        where = ", ".join(map(str, check.found[:5])) + (" …" if len(check.found) > 5 else "")
        if not check.clean:
            self.erasure_checks["unverified"] += 1
            log.error("an erasure's data is still in the central database file after %s (%s): copies at %s",
                      "; ".join(check.actions) or "no rebuild", f"{check.seconds:.2f}s", where)
        elif check.found:
            self.erasure_checks["rebuilt"] += 1
            log.info("an erasure left copies outside live rows (%s); rebuilt (%s) in %.2fs: the file is clean",
                     where, "; ".join(check.actions), check.seconds)
        else:
            self.erasure_checks["clean"] += 1

    def _watch(self) -> None:
        """While long-polls wait here, look for feed entries other processes commit (this process's own
        commits wake them directly): one cheap query every WATCH_EVERY_S for all waiters together."""
        with self._readers_lock:
            if self._watching or self._closed.is_set():
                return
            self._watching = True
        threading.Thread(target=self._watch_loop, name="central-feed-watch", daemon=True).start()

    def _watch_loop(self) -> None:
        conn = connect(self.path)
        try:
            last = conn.execute("SELECT coalesce(max(seq), 0) FROM feed").fetchone()[0]
            last_content = conn.execute("SELECT coalesce(max(seq), 0) FROM content_feed").fetchone()[0]
            idle_since: float | None = None
            while not self._closed.wait(WATCH_EVERY_S):
                if self.signal.waiting == 0:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 5.0:
                        break
                    continue
                idle_since = None
                rows = conn.execute("SELECT seq, target FROM feed WHERE seq > ?", (last,)).fetchall()
                if rows:
                    last = max(r[0] for r in rows)
                    self.signal.notify({r[1] for r in rows})
                rows = conn.execute("SELECT seq, target FROM content_feed WHERE seq > ?", (last_content,)).fetchall()
                if rows:
                    last_content = max(r[0] for r in rows)
                    self.signal.notify({r[1] for r in rows})
        except sqlite3.Error:
            log.warning("the central store stopped watching its feed for other processes' changes", exc_info=True)
        finally:
            conn.close()
            with self._readers_lock:
                self._watching = False
            if self.signal.waiting and not self._closed.is_set():
                self._watch()

    # --- life cycle -------------------------------------------------------------------------------------------

    def ping(self) -> None:
        try:
            self._reader().execute("SELECT 1 FROM meta LIMIT 1").fetchone()
        except sqlite3.Error as exc:
            raise DatabaseError(f"the central database {self.path} cannot be read: {exc}") from exc

    def is_empty(self) -> bool:
        conn = self._reader()
        return conn.execute("SELECT count(*) FROM versions WHERE version > 0").fetchone()[0] == 0

    def maintain(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        out: dict[str, Any] = {"events_deleted": 0, "dropped_partitions": []}
        with self._write(now) as tx:
            conn = tx.conn
            if self.settings.retention_days:
                out["events_deleted"] = conn.execute("DELETE FROM events WHERE ts < ?",
                                                     (now - self.settings.retention_days * 86400.0,)).rowcount
            out["idempotency_deleted"] = conn.execute("DELETE FROM idempotency WHERE created_at < ?",
                                                      (now - IDEMPOTENCY_TTL_S,)).rowcount
            out["relevance_deleted"] = conn.execute("DELETE FROM customer_stores WHERE last_seen < ?",
                                                    (now - self.settings.relevant_for_s,)).rowcount
        return out

    # --- events -----------------------------------------------------------------------------------------------

    def push_events(self, store: str, raw: list[Any], idempotency_key: str | None = None,
                    body_hash: str | None = None, now: float | None = None,
                    health: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        parsed = parse_events(raw, store)  # validation runs before taking the write lock
        with self._write(now) as tx:
            tx.store = store
            conn = tx.conn
            now = tx.now
            if idempotency_key is not None:
                row = conn.execute("SELECT body_hash, response FROM idempotency WHERE store = ? AND key = ?",
                                   (store, idempotency_key)).fetchone()
                if row is not None:
                    if row[0] != body_hash:
                        raise IdempotencyKeyReused(
                            f"Idempotency-Key {idempotency_key!r} was used before with a different batch: "
                            "use a new key for a new batch, the same key only to retry the same batch")
                    return json.loads(row[1]), True
            record = health_record(health, now)
            state = tx.mark()
            conn.execute("SAVEPOINT batch")
            try:
                accepted, duplicates, failed = self._record(tx, store, parsed)
            except sqlite3.OperationalError:
                raise  # disk full, I/O: the whole push fails and the edge retries it
            except Exception:
                # A bug on one event must not refuse the batch: redo it event by event, refusing only the guilty.
                log.exception("store %s: recording a batch failed; recording it event by event", store)
                conn.execute("ROLLBACK TO batch")
                tx.restore(state)
                accepted, duplicates, failed = self._record_each(tx, store, parsed)
            conn.execute("RELEASE batch")
            rejected = sorted([x for x in parsed if not isinstance(x, p.WireEvent)] + failed,
                              key=lambda r: r["index"])
            conn.executemany("INSERT INTO rejections(store, reason, count) VALUES (?,?,?) "
                             "ON CONFLICT(store, reason) DO UPDATE SET count = count + excluded.count",
                             ((store, reason, n) for reason, n in rejection_counts(rejected).items()))
            conn.execute("INSERT INTO store_status(store, last_push_at, events_total, status, updated_at) "
                         "VALUES (?,?,?,?,?) ON CONFLICT(store) DO UPDATE SET last_push_at = excluded.last_push_at, "
                         "events_total = events_total + excluded.events_total, "
                         "status = coalesce(excluded.status, status), updated_at = coalesce(excluded.updated_at, "
                         "updated_at)", (store, now, len(accepted), record, now if record else None))
            answer = {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}
            if idempotency_key is not None:
                conn.execute("INSERT INTO idempotency(store, key, body_hash, response, created_at) VALUES (?,?,?,?,?)",
                             (store, idempotency_key, body_hash, dumps(answer), now))
        return answer, False

    @staticmethod
    def _insert(tx: SqliteTx, store: str, e: p.WireEvent) -> int | None:
        """Record an event once; its rseq, or None when (store, event id) is already there."""
        cur = tx.conn.execute(
            "INSERT OR IGNORE INTO events(store, event_id, seq, kind, type, source, zone, subject, customer, "
            "ts, data, received_at, central_received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (store, e.event_id, e.seq, e.kind, e.type, e.source, e.zone, e.subject, e.customer, e.ts,
             (e.data_json or dumps(e.data)) if e.data else None, e.received_at, tx.now))
        return int(cur.lastrowid or 0) if cur.rowcount else None

    def _record(self, tx: SqliteTx, store: str, parsed: list[p.WireEvent | p.Rejection],
                ) -> tuple[list[str], list[str], list[p.Rejection]]:
        """Insert the batch's valid events once each, note the shoppers seen, apply what applies."""
        accepted: list[str] = []
        duplicates: list[str] = []
        new: list[tuple[p.WireEvent, int]] = []
        for e in parsed:
            if not isinstance(e, p.WireEvent):
                continue
            rseq = self._insert(tx, store, e)
            if rseq is None:
                duplicates.append(e.event_id)
                continue
            accepted.append(e.event_id)
            new.append((e, rseq))
        customers = sorted({e.customer for e, _ in new if e.customer is not None})
        if customers:
            tx.note_seen(store, customers)
        outcomes = rules.apply_events(tx, [e for e, _ in new])
        tx.conn.executemany("UPDATE events SET applied = ? WHERE rseq = ?",
                            ((outcome, new[i][1]) for i, outcome in outcomes.items()))
        return accepted, duplicates, []

    def _record_each(self, tx: SqliteTx, store: str, parsed: list[p.WireEvent | p.Rejection],
                     ) -> tuple[list[str], list[str], list[p.Rejection]]:
        """The batch event by event, each in a savepoint: an unexpected error refuses that event alone."""
        accepted: list[str] = []
        duplicates: list[str] = []
        failed: list[p.Rejection] = []
        for index, e in enumerate(parsed):
            if not isinstance(e, p.WireEvent):
                continue
            state = tx.mark()
            tx.conn.execute("SAVEPOINT event")
            try:
                rseq = self._insert(tx, store, e)
                if rseq is None:
                    duplicates.append(e.event_id)
                else:
                    if e.customer is not None:
                        tx.note_seen(store, [e.customer])
                    outcome = rules.apply_events(tx, [e]).get(0)
                    if outcome is not None:
                        tx.conn.execute("UPDATE events SET applied = ? WHERE rseq = ?", (outcome, rseq))
                    accepted.append(e.event_id)
            except sqlite3.OperationalError:
                raise
            except Exception as exc:
                log.exception("store %s: event %d of a batch could not be recorded", store, index)
                tx.conn.execute("ROLLBACK TO event")
                tx.restore(state)
                failed.append(internal_rejection(e.event_id, index, exc, "failed on this event"))
            tx.conn.execute("RELEASE event")
        return accepted, duplicates, failed

    def list_events(self, store: str | None, after: int, limit: int) -> dict[str, Any]:
        sql = ("SELECT rseq AS received_seq, store, event_id, seq, kind, type, source, zone, subject, customer, ts, "
               "data, received_at, central_received_at, applied FROM events WHERE rseq > ?")
        params: list[Any] = [after]
        if store:
            sql += " AND store = ?"
            params.append(store)
        sql += " ORDER BY rseq LIMIT ?"
        params.append(limit + 1)
        rows = [dict(r) for r in self._reader().execute(sql, params)]
        more = len(rows) > limit
        rows = rows[:limit]
        for row in rows:
            row["data"] = json.loads(row["data"]) if row["data"] else None
        return {"events": rows, "next_after": rows[-1]["received_seq"] if rows else after, "more": more}

    # --- profiles ---------------------------------------------------------------------------------------------

    def upsert_profiles(self, items: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
        with self._write(now) as tx:
            return rules.upsert(tx, items)

    def get_profile(self, customer_id: str, *, store: str | None = None,
                    now: float | None = None) -> dict[str, Any] | None:
        row = self._reader().execute("SELECT body FROM profiles WHERE customer_id = ?", (customer_id,)).fetchone()
        if row is None:
            return None
        if store is not None:
            self._note_fetch(store, customer_id, now)
        return json.loads(row[0])

    def _note_fetch(self, store: str, customer_id: str, now: float | None) -> None:
        """An on-demand fetch: the store holds the profile now, so it must hear of its changes."""
        now = time.time() if now is None else now
        row = self._reader().execute("SELECT last_seen FROM customer_stores WHERE customer_id = ? AND store = ?",
                                     (customer_id, store)).fetchone()
        if row is not None and row[0] >= now - RELEVANCE_REFRESH_S:
            return
        with self._write(now) as tx:
            tx.note_seen(store, [customer_id])

    def erase(self, customer_id: str, now: float | None = None) -> dict[str, Any]:
        with self._write(now) as tx:
            return rules.erase(tx, customer_id)

    def merge(self, from_id: str, into_id: str, now: float | None = None) -> dict[str, Any]:
        with self._write(now) as tx:
            return rules.merge(tx, from_id, into_id)

    def resolve(self, keys: list[str]) -> dict[str, str]:
        conn = self._reader()
        matches: dict[str, str] = {}
        for chunk in _chunks(keys):
            matches.update(conn.execute(f"SELECT key, customer_id FROM identities WHERE key IN "
                                        f"({_marks(len(chunk))})", chunk).fetchall())
        return matches

    def export(self, customer_id: str) -> dict[str, Any] | None:
        conn = self._reader()
        conn.execute("BEGIN")  # one snapshot for every table
        try:
            row = conn.execute("SELECT body, version, updated_at FROM profiles WHERE customer_id = ?",
                               (customer_id,)).fetchone()
            profile = json.loads(row[0]) if row else None
            keys = [r[0] for r in conn.execute("SELECT key FROM identities WHERE customer_id = ?", (customer_id,))]
            consents = {r[0]: r[1] for r in conn.execute("SELECT purpose, ts FROM consent_ts WHERE customer_id = ?",
                                                           (customer_id,))}
            stores = [dict(r) for r in conn.execute("SELECT store, first_seen, last_seen FROM customer_stores "
                                                    "WHERE customer_id = ? ORDER BY store", (customer_id,))]
            feed = [dict(r) for r in conn.execute("SELECT target, version, op, changed_at FROM feed "
                                                  "WHERE customer_id = ? ORDER BY seq", (customer_id,))]
            subjects = list(dict.fromkeys([*keys, *((profile or {}).get("identities") or [])]))
            sql = ("SELECT rseq AS received_seq, store, event_id, seq, kind, type, source, zone, subject, customer, "
                   "ts, data, received_at, central_received_at, applied FROM events WHERE customer = ?")
            params: list[Any] = [customer_id]
            if subjects:
                sql += f" OR subject IN ({_marks(len(subjects))})"
                params += subjects
            events = [dict(r) for r in conn.execute(sql + " ORDER BY rseq", params)]
        finally:
            conn.execute("COMMIT")
        if profile is None and not events and not stores:
            return None
        for e in events:
            e["data"] = json.loads(e["data"]) if e["data"] else None
        return export_document(customer_id, profile, row[2] if row else None, keys, consents, stores, feed, events)

    # --- change feed ------------------------------------------------------------------------------------------

    def _cursor(self, seq: int) -> str:
        return f"{self.epoch}.{seq}"

    def _position(self, since: str | None) -> tuple[int, bool]:
        """A feed cursor (either feed's) as (sequence, reset: it came from another database)."""
        position, reset = split_cursor(since, self.epoch)
        if position is None:
            return 0, reset
        if not digits(position) or len(position) > 18:
            raise invalid_cursor(str(since))
        return int(position), reset

    def feed_page(self, since: str | None, limit: int, store: str | None) -> FeedPage:
        after, reset = self._position(since)
        cols = "seq, customer_id, version, op"
        if store is None:
            inner = f"SELECT {cols} FROM feed WHERE seq > :after ORDER BY seq LIMIT :n"
        else:
            inner = (f"SELECT * FROM (SELECT {cols} FROM feed WHERE target = '*' AND seq > :after ORDER BY seq "
                     f"LIMIT :n) UNION ALL SELECT * FROM (SELECT {cols} FROM feed WHERE target = :store AND "
                     f"seq > :after ORDER BY seq LIMIT :n)")
        # One statement: one consistent snapshot of feed and profiles.
        rows = self._reader().execute(
            f"SELECT f.seq, f.customer_id, f.version, f.op, pr.body FROM ({inner}) f LEFT JOIN profiles pr "
            "ON pr.customer_id = f.customer_id AND f.op = 'upsert' ORDER BY f.seq LIMIT :n",
            {"after": after, "n": limit + 1, "store": store}).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        answer = page_answer([(r[1], r[2], r[3], r[4]) for r in rows],
                             self._cursor(rows[-1][0] if rows else after), more)
        if reset:
            answer["reset"] = True
        return FeedPage(answer)

    # --- campaigns, catalogue, assets (storage/content.py) -----------------------------------------------------

    def content_write(self, work: Callable[[Any], T], now: float | None = None) -> T:
        with self._write(now) as tx:
            return work(tx)

    def content_read(self, work: Callable[[Any], T]) -> T:
        conn = self._reader()
        conn.execute("BEGIN")  # one snapshot for every table
        try:
            return work(SqliteRead(conn, time.time()))
        finally:
            conn.execute("COMMIT")

    def content_page(self, since: str | None, limit: int, store: str) -> FeedPage:
        after, reset = self._position(since)

        def read(db: SqliteRead) -> FeedPage:
            rows = db.rows("SELECT seq, entity FROM (SELECT * FROM (SELECT seq, entity FROM content_feed WHERE "
                           "target = '*' AND seq > :after ORDER BY seq LIMIT :n) UNION ALL SELECT * FROM (SELECT seq, "
                           "entity FROM content_feed WHERE target = :store AND seq > :after ORDER BY seq LIMIT :n)) "
                           "ORDER BY seq LIMIT :n", {"after": after, "n": limit + 1, "store": store})  # type: ignore
            more = len(rows) > limit
            rows = rows[:limit]
            answer = {"changes": content_rules.resolve_entries(db, store, rows),
                      "next": self._cursor(rows[-1][0] if rows else after), "more": more}
            if reset:
                answer["reset"] = True
            return FeedPage(answer)

        return self.content_read(read)

    # --- fleet ------------------------------------------------------------------------------------------------

    def note_store(self, store: str, *, pulled: bool = False, now: float | None = None) -> None:
        now = time.time() if now is None else now
        column = "last_pull_at" if pulled else "last_push_at"
        with self._write(now) as tx:
            tx.conn.execute(f"INSERT INTO store_status(store, {column}) VALUES (?, ?) ON CONFLICT(store) "
                            f"DO UPDATE SET {column} = excluded.{column}", (store, now))

    def note_pulls(self, pulls: dict[str, float]) -> None:
        if not pulls:
            return
        with self._write() as tx:
            tx.conn.executemany("INSERT INTO store_status(store, last_pull_at) VALUES (?, ?) ON CONFLICT(store) "
                                "DO UPDATE SET last_pull_at = max(coalesce(last_pull_at, 0), excluded.last_pull_at)",
                                list(pulls.items()))

    def store_rows(self) -> list[dict[str, Any]]:
        rows = self._reader().execute("SELECT store, last_push_at, last_pull_at, events_total, status, updated_at "
                                      "FROM store_status ORDER BY store").fetchall()
        return [store_row(*r) for r in rows]

    def stores_pushing(self, since: float) -> int:
        row = self._reader().execute("SELECT count(*) FROM store_status WHERE last_push_at >= ?", (since,)).fetchone()
        return int(row[0]) if row else 0

    def store_rejections(self, store: str) -> dict[str, int]:
        return dict(self._reader().execute("SELECT reason, count FROM rejections WHERE store = ? ORDER BY reason",
                                           (store,)).fetchall())

    def stats(self) -> dict[str, Any]:
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
            by_store = {r[0]: r[1] for r in conn.execute("SELECT store, events_total FROM store_status "
                                                         "WHERE events_total > 0 ORDER BY store")}
            rejected: dict[str, dict[str, int]] = {}
            for store, reason, count in conn.execute("SELECT store, reason, count FROM rejections "
                                                     "ORDER BY store, reason"):
                rejected.setdefault(store, {})[reason] = count
            out = {
                "engine": self.engine,
                "profiles": one("SELECT count(*) FROM profiles"),
                "identities": one("SELECT count(*) FROM identities"),
                "erased": one("SELECT count(*) FROM feed WHERE op = 'erase'"),
                "changes": one("SELECT count(*) FROM feed"),
                "feed_cursor": self._cursor(one("SELECT coalesce(max(seq), 0) FROM feed")),
                "events": {"total": sum(by_store.values()), "by_store": by_store},
                "rejected": rejected,
                "erasure_checks": dict(self.erasure_checks),  # the file's bytes after each erasure (sync/scrub.py)
            }
        finally:
            conn.execute("COMMIT")
        return out
