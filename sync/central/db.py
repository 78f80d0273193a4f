"""The central store's SQLite file: schema, the locked write transactions, and the read queries.

Writes from waitress's threads are serialized by one lock around one write connection and run inside
BEGIN IMMEDIATE, so "insert if new, then apply" is atomic: an event retried by four threads at once is
recorded (and applied) once. Readers open their own WAL connections and never wait for the writer.
The writer runs with synchronous=FULL: a 200 to a push lets the edge delete its outbox rows, so the
events it acknowledges must survive a power cut.

The change feed keeps one row per customer, the latest: each write deletes the customer's previous
change and appends a new one with a fresh AUTOINCREMENT seq (never reused). A client holding cursor c
therefore sees every customer whose latest change is newer than c, with the profile as it is now.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlite_utils

from sync import protocol as p

Migration = Callable[[sqlite3.Connection], None]
log = logging.getLogger("instore_central")

log = logging.getLogger("instore_central")

IDEMPOTENCY_TTL_S = 24 * 3600
BUSY_TIMEOUT_MS = 30000
WIPE_WAIT_S = 5.0  # how long the writer retries truncating the WAL after an erasure before the next write does
TIER_RANK = {tier: rank for rank, tier in enumerate(p.TIERS)}


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


# Append only: a newer binary upgrades an older file by running the steps it has not seen.
MIGRATIONS: list[Migration] = [_v1, _v2]
SCHEMA_VERSION = len(MIGRATIONS)


class CentralError(Exception):
    """Base of the errors the HTTP layer turns into JSON answers."""

    status = 400
    code = "bad_request"


class DatabaseError(CentralError):
    """The database file cannot be used."""

    status = 500
    code = "database_error"


class NotFound(CentralError):
    """No such profile."""

    status = 404
    code = "not_found"


class Conflict(CentralError):
    """The request contradicts what the store holds (an identity owned by another customer, ...)."""

    status = 409
    code = "conflict"


class IdempotencyKeyReused(CentralError):
    """An Idempotency-Key sent again with a different body."""

    status = 422
    code = "idempotency_key_reused"


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
    """Checkpoint the WAL into the file and truncate it to zero bytes; False while a reader holds an older
    snapshot (after waiting `busy_ms`). On the write connection, outside a transaction."""
    conn.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    try:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    except sqlite3.OperationalError:
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return busy == 0


def feed_key(customer_id: str) -> str:
    """Where the change feed keeps an erased customer: '#' + erase key ('#' starts no customer id)."""
    return "#" + p.erase_key(customer_id)


def _schema_version(conn: sqlite3.Connection) -> int:
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone():
        return 0
    return int(conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _union(first: Iterable[Any], second: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys([*first, *second]))


class CentralStore:
    """The central profile store's data: one locked writer connection, a reader connection per caller."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = connect(self.path, writer=True)
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise DatabaseError(f"cannot open the central database {self.path}: {exc}; check --db and that "
                                "its folder is writable") from exc
        self._lock = threading.Lock()
        self._wipe_due = True  # a migration may have rewritten erased rows: start with a clean WAL
        self.epoch = str(self._conn.execute("SELECT value FROM meta WHERE key = 'feed_epoch'").fetchone()[0])
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
        with self._lock:
            self._conn.close()

    def reader(self) -> sqlite3.Connection:
        return connect(self.path)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction at a time (BEGIN IMMEDIATE under the lock); rolled back on any error.
        After an erasure committed, the WAL is truncated (its old page images hold the erased rows)."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            if self._wipe_due:
                self._wipe()

    def _wipe(self) -> None:
        """Truncate the WAL, waiting up to WIPE_WAIT_S for readers on older snapshots (under the lock);
        if they take longer, the next write tries again."""
        deadline = time.monotonic() + WIPE_WAIT_S
        while not truncate_wal(self._conn):
            if time.monotonic() > deadline:
                log.warning("the WAL still holds erased data: a reader keeps an old snapshot open; retrying at "
                            "the next write")
                return
            time.sleep(0.05)
        self._wipe_due = False

    # --- profiles (inside a write transaction) --------------------------------------------------------

    @staticmethod
    def _load(conn: sqlite3.Connection, customer_id: str) -> dict[str, Any] | None:
        row = conn.execute("SELECT body FROM profiles WHERE customer_id = ?", (customer_id,)).fetchone()
        return json.loads(row[0]) if row else None

    @staticmethod
    def _next_version(conn: sqlite3.Connection, customer_id: str | None, key: str | None = None) -> int:
        """Versions only grow, across erasure and re-creation too (the feed's tombstone remembers, by hash)."""
        fkey = key or feed_key(customer_id or "")
        row = conn.execute("SELECT max(v) FROM (SELECT version AS v FROM profiles WHERE customer_id = ? "
                           "UNION ALL SELECT version FROM changes WHERE customer_id IN (?, ?))",
                           (customer_id, customer_id, fkey)).fetchone()
        return int(row[0] or 0) + 1

    @staticmethod
    def _record_change(conn: sqlite3.Connection, customer_id: str | None, version: int, op: str, *,
                       key: str | None = None) -> None:
        """The customer's one feed entry: an upsert under the id, an erasure under '#' + erase key only."""
        fkey = key or feed_key(customer_id or "")
        conn.execute("DELETE FROM changes WHERE customer_id IN (?, ?)", (customer_id, fkey))
        conn.execute("INSERT INTO changes(customer_id, version, op, changed_at) VALUES (?,?,?,?)",
                     (customer_id if op == "upsert" else fkey, version, op, time.time()))

    def _save(self, conn: sqlite3.Connection, profile: dict[str, Any], *, check_identities: bool = True) -> None:
        """Write a profile with the next version, re-index its identities, append its change."""
        cid = profile["customer_id"]
        keys = profile["identities"]
        if check_identities and keys:
            marks = ",".join("?" * len(keys))
            owned = conn.execute(f"SELECT key, customer_id FROM identities WHERE key IN ({marks}) "
                                 "AND customer_id != ?", (*keys, cid)).fetchall()
            if owned:
                key, owner = owned[0]
                raise Conflict(f"identity {key!r} belongs to customer {owner!r}: remove it there first, or merge "
                               f"the two profiles (POST /v1/admin/profiles/merge)")
        profile["version"] = self._next_version(conn, cid)
        conn.execute("INSERT INTO profiles(customer_id, version, body, updated_at, erase_key) VALUES (?,?,?,?,?) "
                     "ON CONFLICT(customer_id) DO UPDATE SET version=excluded.version, body=excluded.body, "
                     "updated_at=excluded.updated_at",
                     (cid, profile["version"], _dumps(profile), time.time(), p.erase_key(cid)))
        conn.execute("DELETE FROM identities WHERE customer_id = ?", (cid,))
        conn.executemany("INSERT OR REPLACE INTO identities(key, customer_id) VALUES (?, ?)", ((k, cid) for k in keys))
        self._record_change(conn, cid, profile["version"], "upsert")

    def upsert_profiles(self, items: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
        """Create or update profiles, all or none: given fields replace stored ones, consents merge per
        purpose. Each profile's version is bumped. Items must have passed protocol.validate_profile.

        Consents set on an existing profile are dated `now`; a consent event from a store applies only
        when it was captured after the newest dated decision for that purpose (last writer wins by ts).
        """
        now = time.time() if now is None else now
        saved = []
        with self.write() as conn:
            for fields in items:
                cid = fields["customer_id"]
                stored = self._load(conn, cid)
                profile = stored or dict(p.empty_profile(cid))
                for key, value in fields.items():
                    if key == "consents":
                        profile["consents"] = {**profile["consents"], **value}
                        if stored is not None:
                            # A decision at `now`: consent events captured before it no longer override it.
                            # A new profile's consents are its initial state, not a dated decision.
                            conn.executemany(
                                "INSERT OR REPLACE INTO consent_ts(customer_id, purpose, ts) VALUES (?,?,?)",
                                ((cid, purpose, now) for purpose in value))
                    elif key != "version":
                        profile[key] = value
                self._save(conn, profile)
                saved.append(profile)
        return saved

    def erase(self, customer_id: str) -> dict[str, Any]:
        """Delete a profile, anonymize its events, feed an `erase` change. Erasing twice is harmless."""
        with self.write() as conn:
            profile = self._load(conn, customer_id)
            if profile is None:
                row = conn.execute("SELECT version FROM changes WHERE customer_id = ? AND op = 'erase'",
                                   (feed_key(customer_id),)).fetchone()
                if row is None:
                    raise NotFound(f"no profile {customer_id!r}")
                return {"customer_id": customer_id, "version": row[0], "op": "erase", "already_erased": True,
                        "events_anonymized": 0}
            version, anonymized = self._erase(conn, profile, anonymize=True)
        return {"customer_id": customer_id, "version": version, "op": "erase", "events_anonymized": anonymized}

    def _erase(self, conn: sqlite3.Connection, profile: dict[str, Any], *, anonymize: bool) -> tuple[int, int]:
        """Delete the profile and its index rows, append the erase change; returns (version, events anonymized)."""
        cid = profile["customer_id"]
        version = self._next_version(conn, cid)
        conn.execute("DELETE FROM profiles WHERE customer_id = ?", (cid,))
        conn.execute("DELETE FROM identities WHERE customer_id = ?", (cid,))
        conn.execute("DELETE FROM consent_ts WHERE customer_id = ?", (cid,))
        anonymized = 0
        if anonymize:
            # Rows stay (store counts, idempotency by event id); nothing in them points at the person any more.
            anonymized = conn.execute("UPDATE events SET customer = NULL, subject = NULL, data = NULL "
                                      "WHERE customer = ?", (cid,)).rowcount
            keys = profile.get("identities") or []
            if keys:
                marks = ",".join("?" * len(keys))
                anonymized += conn.execute(f"UPDATE events SET subject = NULL, data = NULL WHERE subject IN ({marks})",
                                           keys).rowcount
        self._record_change(conn, cid, version, "erase")
        self._wipe_due = True
        return version, anonymized

    def _erase_by_key(self, conn: sqlite3.Connection, key: str) -> str:
        """A store asked for an erasure by erase key: erase the customer it names, and feed the erasure to
        every store in any case (the asking store keeps the shopper's tombstone pending until it sees it)."""
        row = conn.execute("SELECT customer_id FROM profiles WHERE erase_key = ?", (key,)).fetchone()
        profile = self._load(conn, row[0]) if row is not None else None
        if profile is not None:
            self._erase(conn, profile, anonymize=True)
            return "erasure"
        fkey = "#" + key
        known = conn.execute("SELECT 1 FROM changes WHERE customer_id = ?", (fkey,)).fetchone() is not None
        self._record_change(conn, None, self._next_version(conn, None, fkey), "erase", key=fkey)
        return "erasure:already_erased" if known else "erasure:unknown_customer"

    def merge(self, from_id: str, into_id: str) -> dict[str, Any]:
        """Fold profile `from_id` into `into_id` (same person, two records) and erase `from_id`.

        Lists are united (identities, segments, wishlist, cart; orders by order_id); `into` keeps its
        name, preferences and consents where it has them (the surviving record is the one the customer
        manages), the higher tier wins, and `from`'s events are re-pointed to `into`.
        """
        if from_id == into_id:
            raise CentralError(f"cannot merge {from_id!r} into itself: name two different customers")
        with self.write() as conn:
            src, dst = self._load(conn, from_id), self._load(conn, into_id)
            for cid, prof in ((from_id, src), (into_id, dst)):
                if prof is None:
                    raise NotFound(f"no profile {cid!r}")
            assert src is not None and dst is not None
            for key in ("identities", "segments", "wishlist", "cart"):
                dst[key] = _union(dst[key], src[key])
            orders = {o["order_id"]: o for o in src["orders_ready"]}
            orders.update({o["order_id"]: o for o in dst["orders_ready"]})
            dst["orders_ready"] = list(orders.values())
            dst["preferences"] = {**src["preferences"], **dst["preferences"]}
            dst["first_name"] = dst["first_name"] or src["first_name"]
            tiers = [t for t in (dst["tier"], src["tier"]) if t]
            dst["tier"] = max(tiers, key=lambda t: TIER_RANK.get(t, -1)) if tiers else None
            conn.execute("UPDATE events SET customer = ? WHERE customer = ?", (into_id, from_id))
            erased_version, _ = self._erase(conn, src, anonymize=False)
            self._save(conn, dst, check_identities=False)
        return {"profile": dst, "erased": {"customer_id": from_id, "version": erased_version}}

    # --- events ---------------------------------------------------------------------------------------

    def push_events(self, store: str, raw: list[Any], idempotency_key: str | None = None,
                    body_hash: str | None = None) -> tuple[dict[str, Any], bool]:
        """Record a batch once per event id and apply consent / identity_link events.

        Returns (answer, replayed): with an Idempotency-Key seen before for this store, the first
        answer is returned as it was. Validation runs before taking the write lock.
        """
        parsed: list[p.WireEvent | p.InvalidEvent] = []
        for obj in raw:
            try:
                parsed.append(p.WireEvent.from_dict(obj))
            except p.InvalidEvent as exc:
                parsed.append(exc)
            except Exception as exc:  # a validation bug refuses this event, not the batch
                log.exception("store %s: validating an event failed", store)
                parsed.append(p.InvalidEvent("internal_error", f"the central store could not check this event "
                                                               f"({type(exc).__name__}); its log has the details"))
        now = time.time()
        accepted: list[str] = []
        duplicates: list[str] = []
        rejected: list[p.Rejection] = []
        with self.write() as conn:
            if idempotency_key is not None:
                row = conn.execute("SELECT body_hash, response FROM idempotency WHERE store = ? AND key = ?",
                                   (store, idempotency_key)).fetchone()
                if row is not None:
                    if row[0] != body_hash:
                        raise IdempotencyKeyReused(
                            f"Idempotency-Key {idempotency_key!r} was used before with a different batch: "
                            "use a new key for a new batch, the same key only to retry the same batch")
                    return json.loads(row[1]), True
            conn.execute("SAVEPOINT batch")
            try:
                self._record_events(conn, store, raw, parsed, now, accepted, duplicates, rejected, isolate=False)
            except sqlite3.OperationalError:
                raise  # disk full, I/O: the whole push fails and the edge retries it
            except Exception:
                # A bug on one event must not refuse the batch: redo it event by event, refusing only the guilty.
                log.exception("store %s: recording a batch failed; recording it event by event", store)
                conn.execute("ROLLBACK TO batch")
                accepted.clear()
                duplicates.clear()
                rejected.clear()
                self._record_events(conn, store, raw, parsed, now, accepted, duplicates, rejected, isolate=True)
            conn.execute("RELEASE batch")
            if rejected:
                reasons: dict[str, int] = {}
                for r in rejected:
                    reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
                conn.executemany("INSERT INTO rejections(store, reason, count) VALUES (?,?,?) "
                                 "ON CONFLICT(store, reason) DO UPDATE SET count = count + excluded.count",
                                 ((store, reason, n) for reason, n in reasons.items()))
            answer = {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}
            if idempotency_key is not None:
                conn.execute("DELETE FROM idempotency WHERE created_at < ?", (now - IDEMPOTENCY_TTL_S,))
                conn.execute("INSERT INTO idempotency(store, key, body_hash, response, created_at) VALUES (?,?,?,?,?)",
                             (store, idempotency_key, body_hash, _dumps(answer), now))
        return answer, False

    def _record_events(self, conn: sqlite3.Connection, store: str, raw: list[Any],
                       parsed: list[p.WireEvent | p.InvalidEvent], now: float, accepted: list[str],
                       duplicates: list[str], rejected: list[p.Rejection], *, isolate: bool) -> None:
        """Insert (once) and apply each valid event; with `isolate`, each in a savepoint, so an unexpected
        error refuses that event alone (reason internal_error) and the rest are recorded."""
        for index, (obj, item) in enumerate(zip(raw, parsed)):
            if isinstance(item, p.InvalidEvent):
                rejected.append(p.Rejection(id=_echo_id(obj), index=index, reason=item.reason, detail=item.detail))
                continue
            if not isolate:
                self._record_one(conn, store, item, now, accepted, duplicates)
                continue
            conn.execute("SAVEPOINT event")
            try:
                self._record_one(conn, store, item, now, accepted, duplicates)
            except sqlite3.OperationalError:
                raise
            except Exception as exc:
                log.exception("store %s: event %d of a batch could not be recorded", store, index)
                conn.execute("ROLLBACK TO event")
                rejected.append(p.Rejection(id=item.event_id, index=index, reason="internal_error",
                                            detail=f"the central store failed on this event ({type(exc).__name__}); "
                                                   "its log has the details"))
            conn.execute("RELEASE event")

    def _record_one(self, conn: sqlite3.Connection, store: str, e: p.WireEvent, now: float, accepted: list[str],
                    duplicates: list[str]) -> None:
        cur = conn.execute(
            "INSERT OR IGNORE INTO events(store, event_id, seq, kind, type, source, zone, subject, customer, "
            "ts, data, received_at, central_received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (store, e.event_id, e.seq, e.kind, e.type, e.source, e.zone, e.subject, e.customer, e.ts,
             _dumps(e.data) if e.data else None, e.received_at, now))
        if cur.rowcount == 0:
            duplicates.append(e.event_id)
            return
        applied = self._apply(conn, e)
        if applied is not None:
            conn.execute("UPDATE events SET applied = ? WHERE rseq = ?", (applied, cur.lastrowid))
        accepted.append(e.event_id)

    def _apply(self, conn: sqlite3.Connection, e: p.WireEvent) -> str | None:
        """What a newly recorded event does to profiles; returns the outcome kept with the event."""
        if e.is_consent:
            if e.customer is None:
                return "consent:no_customer"
            profile = self._load(conn, e.customer)
            if profile is None:
                return "consent:unknown_customer"
            consent = e.consent or {}
            changed = False
            for purpose, granted in consent.items():
                if purpose not in p.CONSENT_PURPOSES:
                    continue
                row = conn.execute("SELECT ts FROM consent_ts WHERE customer_id = ? AND purpose = ?",
                                   (e.customer, purpose)).fetchone()
                if row is not None and row[0] > e.ts:
                    continue  # a newer decision is already recorded (events from two stores, out of order)
                conn.execute("INSERT OR REPLACE INTO consent_ts(customer_id, purpose, ts) VALUES (?,?,?)",
                             (e.customer, purpose, e.ts))
                if profile["consents"].get(purpose) is not granted:
                    profile["consents"][purpose] = granted
                    changed = True
            if not changed:
                return "consent:unchanged"
            self._save(conn, profile, check_identities=False)
            return "consent"
        if e.kind == p.ERASURE_KIND:
            return self._erase_by_key(conn, e.data["customer_hash"])
        if e.kind == p.IDENTITY_LINK_KIND:
            assert e.customer is not None and e.link_key is not None
            if e.link_key.startswith(p.EPHEMERAL_KEY_PREFIXES):
                return "identity_link:ephemeral"
            owner = conn.execute("SELECT customer_id FROM identities WHERE key = ?", (e.link_key,)).fetchone()
            if owner is not None:
                return "identity_link:unchanged" if owner[0] == e.customer else "identity_link:conflict"
            profile = self._load(conn, e.customer)
            if profile is None:
                return "identity_link:unknown_customer"
            profile["identities"] = _union(profile["identities"], [e.link_key])
            self._save(conn, profile, check_identities=False)
            return "identity_link"
        return None

    # --- reads (on a reader connection) ---------------------------------------------------------------

    @staticmethod
    def get_profile(conn: sqlite3.Connection, customer_id: str) -> dict[str, Any] | None:
        return CentralStore._load(conn, customer_id)

    def cursor(self, seq: int) -> str:
        return f"{self.epoch}.{seq}"

    def parse_cursor(self, since: str | None) -> tuple[int, bool]:
        """(seq, reset): a cursor from another database (epoch differs) restarts the feed from 0."""
        if not since:
            return 0, False
        epoch, dot, seq = since.rpartition(".")
        if not (seq.isascii() and seq.isdigit()) or len(seq) > 18 or (dot and not epoch):  # "¹".isdigit() too
            raise CentralError(f"invalid cursor {since[:40]!r}: pass the `next` value of a previous answer, "
                               "or no `since` to start from the beginning")
        if dot and epoch != self.epoch:
            return 0, True
        return int(seq), False

    def changes(self, conn: sqlite3.Connection, since: str | None, limit: int) -> dict[str, Any]:
        after, reset = self.parse_cursor(since)
        # One statement: one consistent snapshot of feed and profiles.
        rows = conn.execute("SELECT c.seq, c.customer_id, c.version, c.op, p.body FROM changes c "
                            "LEFT JOIN profiles p ON p.customer_id = c.customer_id AND c.op = 'upsert' "
                            "WHERE c.seq > ? ORDER BY c.seq LIMIT ?", (after, limit + 1)).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        changes: list[dict[str, Any]] = []
        for row in rows:
            change: dict[str, Any]
            if row["op"] == "erase":  # by hash: the central store keeps no trace of an erased id
                change = {"customer_hash": row["customer_id"].removeprefix("#"), "version": row["version"],
                          "op": "erase"}
            else:
                change = {"customer_id": row["customer_id"], "version": row["version"], "op": row["op"]}
                if row["body"] is not None:
                    change["profile"] = json.loads(row["body"])
            changes.append(change)
        answer: dict[str, Any] = {"changes": changes, "next": self.cursor(rows[-1]["seq"] if rows else after),
                                  "more": more}
        if reset:
            answer["reset"] = True
        return answer

    @staticmethod
    def resolve(conn: sqlite3.Connection, keys: list[str]) -> dict[str, str]:
        matches: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start:start + 500]
            marks = ",".join("?" * len(chunk))
            matches.update(conn.execute(f"SELECT key, customer_id FROM identities WHERE key IN ({marks})", chunk))
        return matches

    @staticmethod
    def list_events(conn: sqlite3.Connection, store: str | None, after: int, limit: int) -> dict[str, Any]:
        sql = ("SELECT rseq AS received_seq, store, event_id, seq, kind, type, source, zone, subject, customer, ts, "
               "data, received_at, central_received_at, applied FROM events WHERE rseq > ?")
        params: list[Any] = [after]
        if store:
            sql += " AND store = ?"
            params.append(store)
        sql += " ORDER BY rseq LIMIT ?"
        params.append(limit + 1)
        rows = [dict(r) for r in conn.execute(sql, params)]
        more = len(rows) > limit
        rows = rows[:limit]
        for row in rows:
            row["data"] = json.loads(row["data"]) if row["data"] else None
        return {"events": rows, "next_after": rows[-1]["received_seq"] if rows else after, "more": more}

    def stats(self, conn: sqlite3.Connection) -> dict[str, Any]:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        by_store = {r[0]: r[1] for r in
                    conn.execute("SELECT store, count(*) FROM events GROUP BY store ORDER BY store")}
        rejected: dict[str, dict[str, int]] = {}
        for store, reason, count in conn.execute("SELECT store, reason, count FROM rejections ORDER BY store, reason"):
            rejected.setdefault(store, {})[reason] = count
        last = one("SELECT max(seq) FROM changes")
        return {
            "profiles": one("SELECT count(*) FROM profiles"),
            "identities": one("SELECT count(*) FROM identities"),
            "erased": one("SELECT count(*) FROM changes WHERE op = 'erase'"),
            "changes": one("SELECT count(*) FROM changes"),
            "feed_cursor": self.cursor(last or 0),
            "events": {"total": sum(by_store.values()), "by_store": by_store},
            "rejected": rejected,
        }

    def is_empty(self) -> bool:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM changes").fetchone()[0] == 0


def _echo_id(obj: Any) -> str | None:
    """A refused event's id as the answer may repeat it: only a usable string (stored as UTF-8, bounded)."""
    event_id = obj.get("event_id") if isinstance(obj, dict) else None
    if type(event_id) is not str or not 0 < len(event_id) <= p.MAX_EVENT_ID_LEN:
        return None
    if p.lone_surrogate(event_id) is not None:
        return None
    return event_id


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()
