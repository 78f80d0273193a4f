"""The central store in PostgreSQL (psycopg 3, a connection pool per process): for a chain, with several
processes on one or several machines sharing one database.

Nothing here relies on a lock inside one process. Events are recorded once by their primary key
(`INSERT ... ON CONFLICT DO NOTHING`, the whole batch in one statement); a customer's writes are
serialized by a row lock on their `versions` row (see profiles.py), taken in sorted order; an
Idempotency-Key is claimed by inserting its row first, so a concurrent retry of the same batch waits for
the first to commit and then replays its answer.

Change-feed positions and concurrent writers. Feed entries take their `seq` from a sequence when they
are written, but transactions commit in another order: a reader that served seq 11 (committed) while seq
10 was still in flight would skip 10 for good. So each entry also records the id of the transaction
that wrote it (`xid`, pg_current_xact_id()), the feed is read in (xid, seq) order, and a read serves only
entries whose xid is below the xmin of its own snapshot (pg_snapshot_xmin(pg_current_snapshot())): every
transaction below xmin has finished, so all of their entries are visible now, and any transaction that
commits later has an xid >= that xmin, so its entries sort after everything served. A cursor is
`<epoch>.<xid>-<seq>`. The price: an entry waits to be served until every transaction older than its
own has finished (milliseconds normally; a long transaction anywhere on the server delays the feed
by its length). This was preferred over serializing feed writers with an advisory lock held until
commit, which would have put every profile change and every store's first sighting of a shopper in one
queue across all processes.

Long-poll: each process has one LISTEN connection; a transaction that writes feed entries sends
NOTIFY central_feed with the target stores, and the listener wakes the requests waiting for them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors, sql
from psycopg_pool import ConnectionPool, PoolTimeout

from sync import protocol as p
from sync.central.storage import pg_schema
from sync.central.storage import content as content_rules
from sync.central.storage import profiles as rules
from sync.central.storage.base import Storage
from sync.central.storage.coalesce import Coalescer
from sync.central.storage.common import (
    ALL_STORES,
    IDEMPOTENCY_TTL_S,
    RELEVANCE_REFRESH_S,
    DatabaseError,
    FeedPage,
    IdempotencyKeyReused,
    InvalidValue,
    Settings,
    Unavailable,
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

log = logging.getLogger("instore_central")

T = TypeVar("T")

CHANNEL = "central_feed"
NOTIFY_MAX = 7000  # bytes of target list in one NOTIFY payload (the limit is 8000); more: wake everyone
VACUUM_AFTER_S = 2.0  # an erasure's VACUUM runs this long after it, gathering the erasures meanwhile
VACUUM_EVERY_S = 60.0  # and at most this often
HORIZON_POLL_S = 0.02  # how often the horizon watcher looks while a committed feed entry waits for older ones
RETRIES = 3  # a transaction chosen as a deadlock victim (or a serialization failure) runs again

_INSERT_EVENTS = (
    "INSERT INTO events (store, event_id, seq, kind, type, source, zone, subject, customer, ts, data, received_at, "
    "central_received_at) SELECT %(store)s, u.*, %(now)s FROM unnest(%(event_id)b::text[], %(seq)b::int8[], "
    "%(kind)b::text[], %(type)b::text[], %(source)b::text[], %(zone)b::text[], %(subject)b::text[], "
    "%(customer)b::text[], %(ts)b::float8[], %(data)b::text[], %(received_at)b::float8[]) AS u "
    "ON CONFLICT DO NOTHING RETURNING event_id")  # %b: arrays go in binary, twice as fast to send

_PUSH_PLAIN = (
    "SELECT * FROM push_plain(%(store)s, %(now)s, %(key)s, %(hash)s, %(event_id)b::text[], %(seq)b::int8[], "
    "%(kind)b::text[], %(type)b::text[], %(source)b::text[], %(zone)b::text[], %(subject)b::text[], "
    "%(customer)b::text[], %(ts)b::float8[], %(data)b::text[], %(received_at)b::float8[], %(valid_ids)b::text[], "
    "%(valid_first)b::bool[], %(rejected)s, %(reasons)s::text[], %(counts)s::int8[], %(status)s, "
    "%(cust_ids)s::text[], %(cust_keys)s::text[], %(fresh_after)s, %(cutoff)s, %(unhomed)s, %(channel)s, "
    "%(notify)s)")
_FEED_COLUMNS = "xid, seq, customer_id, version, op"


def _store_feed(store: str, x: str, s: str, n: str) -> str:
    """A store's entries after (x, s), at most n: the broadcast ones and its own (SQL expressions given)."""
    return (f"(SELECT {_FEED_COLUMNS} FROM feed WHERE target = '*' AND (xid, seq) > ({x}, {s}) ORDER BY xid, seq "
            f"LIMIT {n}) UNION ALL (SELECT {_FEED_COLUMNS} FROM feed WHERE target = {store} AND (xid, seq) > "
            f"({x}, {s}) ORDER BY xid, seq LIMIT {n})")


_FEED_FOR_STORE = (
    f"SELECT f.xid, f.seq, f.customer_id, f.version, f.op, pr.body, "
    f"pg_snapshot_xmin(pg_current_snapshot())::text::bigint FROM ("
    f"{_store_feed('%(store)s', '%(x)s', '%(s)s', '%(n)s')}) f "
    f"LEFT JOIN profiles pr ON pr.customer_id = f.customer_id AND f.op = 'upsert' ORDER BY f.xid, f.seq LIMIT %(n)s")
# The pages of several stores in one statement (storage/coalesce.py): _FEED_FOR_STORE for each (store, position,
# limit), the rows tagged with the request's index.
_FEED_FOR_STORES = (
    f"SELECT q.i, f.xid, f.seq, f.customer_id, f.version, f.op, pr.body, "
    f"pg_snapshot_xmin(pg_current_snapshot())::text::bigint "
    f"FROM unnest(%(stores)s::text[], %(xs)s::bigint[], %(ss)s::bigint[], %(ns)s::int[]) "
    f"WITH ORDINALITY AS q(store, x, s, n, i) CROSS JOIN LATERAL (SELECT u.* FROM ("
    f"{_store_feed('q.store', 'q.x', 'q.s', 'q.n')}) u ORDER BY u.xid, u.seq LIMIT q.n) f "
    f"LEFT JOIN profiles pr ON pr.customer_id = f.customer_id AND f.op = 'upsert' ORDER BY q.i, f.xid, f.seq")
_FEED_ALL = (
    f"SELECT f.xid, f.seq, f.customer_id, f.version, f.op, pr.body, "
    f"pg_snapshot_xmin(pg_current_snapshot())::text::bigint FROM "
    f"(SELECT {_FEED_COLUMNS} FROM feed WHERE (xid, seq) > (%(x)s, %(s)s) ORDER BY xid, seq LIMIT %(n)s) f "
    f"LEFT JOIN profiles pr ON pr.customer_id = f.customer_id AND f.op = 'upsert' ORDER BY f.xid, f.seq LIMIT %(n)s")
_FEED_UPSERT = (
    "ON CONFLICT (target, customer_id) DO UPDATE SET seq = nextval('feed_seq'), "
    "xid = pg_current_xact_id()::text::bigint, version = excluded.version, op = excluded.op, "
    "final = excluded.final, changed_at = excluded.changed_at")


def redact(url: str) -> str:
    """The database URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://…"
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_CONTENT_FEED_PAGE = (
    "SELECT f.xid, f.seq, f.entity, pg_snapshot_xmin(pg_current_snapshot())::text::bigint FROM ("
    "(SELECT xid, seq, entity FROM content_feed WHERE target = '*' AND (xid, seq) > (%(x)s, %(s)s) "
    "ORDER BY xid, seq LIMIT %(n)s) UNION ALL "
    "(SELECT xid, seq, entity FROM content_feed WHERE target = %(store)s AND (xid, seq) > (%(x)s, %(s)s) "
    "ORDER BY xid, seq LIMIT %(n)s)) f ORDER BY f.xid, f.seq LIMIT %(n)s")


def _pg(query: str) -> str:
    """The content rules' `?` placeholders as psycopg's."""
    return query.replace("%", "%%").replace("?", "%s")


class PgRead:
    """A read snapshot (REPEATABLE READ) as the content rules (storage/content.py Db) use it."""

    for_update = ""

    def __init__(self, conn: psycopg.Connection[Any], now: float) -> None:
        self.conn = conn
        self.now = now

    def rows(self, query: str, params: Any = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(_pg(query) if not isinstance(params, dict) else query, params).fetchall()

    def run(self, query: str, params: tuple[Any, ...] = ()) -> int:
        raise AssertionError("a read snapshot does not write")

    def content_feed(self, target: str, entity: str) -> None:
        raise AssertionError("a read snapshot does not write")


class PgTx:
    """One PostgreSQL transaction, as the profile rules (profiles.Tx), the content rules (content.Db) and the
    push path use it."""

    for_update = " FOR UPDATE"

    def __init__(self, conn: psycopg.Connection[Any], settings: Settings, now: float) -> None:
        self.store: str | None = None  # the store whose push is being recorded
        self.conn = conn
        self.settings = settings
        self.now = now
        self.targets: set[str] = set()  # feed targets written: NOTIFY at commit, then wake local waiters
        self.vacuum: set[str] = set()  # tables an erasure deleted from
        self._versions: dict[str, int] = {}
        self._dirty: dict[str, int] = {}

    def mark(self) -> tuple[Any, ...]:
        """What this object remembers, to restore after a rollback to a savepoint (which also releases the
        row locks taken since: their versions must be read again)."""
        return dict(self._versions), dict(self._dirty), set(self.targets), set(self.vacuum)

    def restore(self, state: tuple[Any, ...]) -> None:
        versions, dirty, targets, vacuum = state
        self._versions, self._dirty, self.targets, self.vacuum = dict(versions), dict(dirty), set(targets), set(vacuum)

    def q(self, query: str, params: Any = None) -> psycopg.Cursor[Any]:
        return self.conn.execute(query, params)  # type: ignore[arg-type]

    # --- the content rules' SQL (storage/content.py) -----------------------------------------------------------

    def rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.q(_pg(query), params).fetchall()

    def run(self, query: str, params: tuple[Any, ...] = ()) -> int:
        return self.q(_pg(query), params).rowcount

    def content_feed(self, target: str, entity: str) -> None:
        self.q("INSERT INTO content_feed(target, entity, changed_at) VALUES (%s, %s, %s) ON CONFLICT (target, entity) "
               "DO UPDATE SET seq = nextval('content_feed_seq'), xid = pg_current_xact_id()::text::bigint, "
               "changed_at = excluded.changed_at", (target, entity, self.now))
        self.targets.add(target)

    # --- locks and versions -----------------------------------------------------------------------------------

    def lock(self, keys: list[str]) -> dict[str, int]:
        todo = sorted({k for k in keys if k not in self._versions})
        if todo:
            # Rows first (a placeholder at 0 for a customer never seen), then lock them in key order.
            self.q("INSERT INTO versions(erase_key, version) SELECT unnest(%s::text[]), 0 ON CONFLICT DO NOTHING",
                   (todo,))
            found = dict(self.q("SELECT erase_key, version FROM versions WHERE erase_key = ANY(%s) "
                                "ORDER BY erase_key FOR UPDATE", (todo,)).fetchall())
            for key in todo:
                self._versions[key] = int(found.get(key, 0))
        return {k: self._versions[k] for k in keys}

    def set_version(self, key: str, version: int) -> None:
        self._versions[key] = version
        self._dirty[key] = version

    def finish(self) -> None:
        """Before COMMIT: write the versions, and NOTIFY the stores whose feed grew."""
        if self._dirty:
            keys = list(self._dirty)
            self.q("INSERT INTO versions(erase_key, version) SELECT * FROM unnest(%s::text[], %s::bigint[]) "
                   "ON CONFLICT (erase_key) DO UPDATE SET version = excluded.version",
                   (keys, [self._dirty[k] for k in keys]))
            self._dirty.clear()
        if self.targets:
            payload = ",".join(sorted(self.targets))
            # "<xid>:<targets>": listeners wake those stores once this transaction's entries are servable.
            self.q("SELECT pg_notify(%s, pg_current_xact_id()::text || ':' || %s)",
                   (CHANNEL, payload if len(payload) <= NOTIFY_MAX else ALL_STORES))

    # --- profiles ---------------------------------------------------------------------------------------------

    def load(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        rows = self.q("SELECT customer_id, body FROM profiles WHERE customer_id = ANY(%s)", (list(ids),)).fetchall()
        return {cid: json.loads(body) for cid, body in rows}

    def find_by_key(self, key: str) -> str | None:
        row = self.q("SELECT customer_id FROM profiles WHERE erase_key = %s", (key,)).fetchone()
        return row[0] if row else None

    def owners(self, keys: list[str]) -> dict[str, str]:
        return dict(self.q("SELECT key, customer_id FROM identities WHERE key = ANY(%s)", (list(keys),)).fetchall())

    def claim_identities(self, customer_id: str, keys: list[str]) -> dict[str, str]:
        self.q("DELETE FROM identities WHERE customer_id = %s AND NOT (key = ANY(%s))", (customer_id, keys))
        if not keys:
            return {}
        # A key another transaction is inserting makes this insert wait for it: no two owners, ever.
        self.q("INSERT INTO identities(key, customer_id) SELECT unnest(%s::text[]), %s ON CONFLICT (key) DO NOTHING",
               (keys, customer_id))
        return dict(self.q("SELECT key, customer_id FROM identities WHERE key = ANY(%s) AND customer_id <> %s",
                           (keys, customer_id)).fetchall())

    def consent_times(self, customer_id: str) -> dict[str, float]:
        return dict(self.q("SELECT purpose, ts FROM consent_ts WHERE customer_id = %s", (customer_id,)).fetchall())

    def set_consent_time(self, customer_id: str, purpose: str, ts: float) -> None:
        self.q("INSERT INTO consent_ts(customer_id, purpose, ts) VALUES (%s, %s, %s) "
               "ON CONFLICT (customer_id, purpose) DO UPDATE SET ts = excluded.ts", (customer_id, purpose, ts))

    def recent_stores(self, customer_id: str, since: float) -> list[str]:
        return [r[0] for r in self.q("SELECT store FROM customer_stores WHERE customer_id = %s AND last_seen >= %s",
                                     (customer_id, since))]

    def write_profile(self, profile: dict[str, Any]) -> None:
        cid = profile["customer_id"]
        self.q("INSERT INTO profiles(customer_id, version, body, updated_at, erase_key, home_store) "
               "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (customer_id) DO UPDATE SET version = excluded.version, "
               "body = excluded.body, updated_at = excluded.updated_at, home_store = excluded.home_store",
               (cid, profile["version"], dumps(profile), self.now, p.erase_key(cid), profile.get("home_store")))

    def delete_customer(self, customer_id: str) -> None:
        for table in ("profiles", "identities", "consent_ts", "customer_stores", "feed", "orders"):
            self.q(sql.SQL("DELETE FROM {} WHERE customer_id = %s").format(sql.Identifier(table)), (customer_id,))
            self.vacuum.add(table)

    def anonymize_events(self, customer_id: str, keys: list[str]) -> int:
        # Rows stay (store counts, idempotency by event id); nothing in them points at the person any more.
        touched = self.q("UPDATE events SET customer = NULL, subject = NULL, data = NULL WHERE customer = %s "
                         "RETURNING tableoid::regclass::text", (customer_id,)).fetchall()
        if keys:
            touched += self.q("UPDATE events SET subject = NULL, data = NULL WHERE subject = ANY(%s) "
                              "RETURNING tableoid::regclass::text", (keys,)).fetchall()
        self.vacuum.update(r[0] for r in touched)
        return len(touched)

    def repoint_events(self, from_id: str, into_id: str) -> None:
        self.q("UPDATE events SET customer = %s WHERE customer = %s", (into_id, from_id))

    # --- the feed ---------------------------------------------------------------------------------------------

    def feed_targets(self, customer_id: str) -> dict[str, bool]:
        return dict(self.q("SELECT target, final FROM feed WHERE customer_id = %s", (customer_id,)).fetchall())

    def feed_write(self, customer_id: str, version: int, targets: dict[str, bool]) -> None:
        names = sorted(targets)
        self.q("DELETE FROM feed WHERE customer_id = %s OR (customer_id = %s AND NOT (target = ANY(%s)))",
               ("#" + p.erase_key(customer_id), customer_id, names))
        if names:
            self.q("INSERT INTO feed(target, customer_id, version, op, final, changed_at) "
                   "SELECT t, %s, %s, 'upsert', f, %s FROM unnest(%s::text[], %s::bool[]) AS u(t, f) " + _FEED_UPSERT,
                   (customer_id, version, self.now, names, [targets[t] for t in names]))
        self.targets.update(names)

    def feed_erase(self, key: str, version: int) -> None:
        self.q("INSERT INTO feed(target, customer_id, version, op, final, changed_at) "
               "VALUES (%s, %s, %s, 'erase', false, %s) " + _FEED_UPSERT, (ALL_STORES, "#" + key, version, self.now))
        self.targets.add(ALL_STORES)

    def feed_touch(self, store: str, rows: list[tuple[str, int]]) -> None:
        """A store newly concerned by these customers (id, version): one entry each at the end of its feed."""
        if not rows:
            return
        self.q("INSERT INTO feed(target, customer_id, version, op, final, changed_at) "
               "SELECT %s, c, v, 'upsert', false, %s FROM unnest(%s::text[], %s::bigint[]) AS u(c, v) " + _FEED_UPSERT,
               (store, self.now, [r[0] for r in rows], [r[1] for r in rows]))
        self.targets.add(store)

    # --- where shoppers were seen -------------------------------------------------------------------------

    def stale_sightings(self, store: str, customers: list[str]) -> list[str]:
        """The customers whose sighting at this store is not yet recorded, or not in the last few minutes."""
        fresh = {r[0] for r in self.q("SELECT customer_id FROM customer_stores WHERE store = %s AND "
                                      "customer_id = ANY(%s) AND last_seen >= %s",
                                      (store, customers, self.now - RELEVANCE_REFRESH_S))}
        return [c for c in customers if c not in fresh]

    def note_seen(self, store: str, customers: list[str]) -> None:
        """Record sightings (the customers locked by the caller, so a concurrent profile write either sees
        the sighting or is seen by it); a store newly concerned gets the profile at the end of its feed."""
        if not customers:
            return
        cutoff = self.now - self.settings.relevant_for_s
        rows = self.q(
            "INSERT INTO customer_stores AS cs (customer_id, store, first_seen, last_seen) "
            "SELECT c, %(store)s, %(now)s, %(now)s FROM unnest(%(ids)s::text[]) AS c "
            "ON CONFLICT (customer_id, store) DO UPDATE SET last_seen = excluded.last_seen, first_seen = CASE "
            "WHEN cs.last_seen < %(cutoff)s THEN excluded.first_seen ELSE cs.first_seen END "
            "RETURNING customer_id, first_seen = last_seen",
            {"store": store, "now": self.now, "ids": sorted(customers), "cutoff": cutoff}).fetchall()
        started = [cid for cid, new in rows if new]
        if not started:
            return
        found = self.q("SELECT customer_id, version, home_store FROM profiles WHERE customer_id = ANY(%s) "
                       "ORDER BY customer_id", (started,)).fetchall()
        self.feed_touch(store, [(cid, v) for cid, v, home in found
                                if home is not None or not self.settings.broadcast_unhomed])


def _record(tx: PgTx, store: str, valid: list[p.WireEvent]) -> tuple[list[str], list[str]]:
    """Insert the batch's events once each (one statement), note the shoppers seen, apply what applies;
    (accepted, duplicates)."""
    tx.store = store
    first: dict[str, p.WireEvent] = {}
    for e in valid:
        first.setdefault(e.event_id, e)
    unique = list(first.values())
    if not unique:
        return [], []
    columns: dict[str, list[Any]] = {
        "event_id": [e.event_id for e in unique], "seq": [e.seq for e in unique],
        "kind": [e.kind for e in unique], "type": [e.type for e in unique], "source": [e.source for e in unique],
        "zone": [e.zone for e in unique], "subject": [e.subject for e in unique],
        "customer": [e.customer for e in unique], "ts": [e.ts for e in unique],
        "data": [(e.data_json or dumps(e.data)) if e.data else None for e in unique],
        "received_at": [e.received_at for e in unique]}
    new_ids = {r[0] for r in tx.q(_INSERT_EVENTS, {"store": store, "now": tx.now, **columns})}
    accepted = [e.event_id for e in unique if e.event_id in new_ids]
    duplicates = [e.event_id for e in valid if first[e.event_id] is not e or e.event_id not in new_ids]
    new = [e for e in unique if e.event_id in new_ids]
    customers = sorted({e.customer for e in new if e.customer is not None})
    stale = tx.stale_sightings(store, customers) if customers else []
    special = [e for e in new if rules.applies(e)]
    keys = {k for e in special if (k := rules.customers_of(e)) is not None}
    keys.update(p.erase_key(c) for c in stale)
    if keys:
        tx.lock(sorted(keys))
    tx.note_seen(store, stale)
    if special:
        outcomes = rules.apply_events(tx, special)
        done = [(special[i], outcome) for i, outcome in sorted(outcomes.items())]
        tx.q("UPDATE events SET applied = u.applied FROM unnest(%s::text[], %s::float8[], %s::text[]) "
             "AS u(event_id, ts, applied) WHERE events.store = %s AND events.event_id = u.event_id "
             "AND events.ts = u.ts",
             ([e.event_id for e, _ in done], [e.ts for e, _ in done], [o for _, o in done], store))
    return accepted, duplicates


def _record_each(tx: PgTx, store: str, valid: list[tuple[int, p.WireEvent]],
                 ) -> tuple[list[str], list[str], list[p.Rejection]]:
    """The batch event by event, each in a savepoint: an unexpected error refuses that event alone."""
    accepted: list[str] = []
    duplicates: list[str] = []
    failed: list[p.Rejection] = []
    for index, e in valid:
        state = tx.mark()
        try:
            with tx.conn.transaction():
                a, d = _record(tx, store, [e])
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except Exception as exc:
            log.exception("store %s: event %d of a batch could not be recorded", store, index)
            tx.restore(state)
            failed.append(internal_rejection(e.event_id, index, exc, "failed on this event"))
            continue
        accepted += a
        duplicates += d
    return accepted, duplicates, failed


class PostgresStorage(Storage):
    """The central store's data in a PostgreSQL database (schema migrated at start)."""

    engine = "postgresql"

    def __init__(self, url: str, settings: Settings | None = None, *, listen: bool = True) -> None:
        self.url = url
        self.settings = settings or Settings()
        self.signal = FeedSignal()
        self._closed = threading.Event()
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                pg_schema.migrate(conn)
                row = conn.execute("SELECT value FROM meta WHERE key = 'feed_epoch'").fetchone()
                assert row is not None
                self.epoch = str(row[0])
        except pg_schema.SchemaTooNew as exc:
            raise DatabaseError(str(exc)) from None
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot use the central database {redact(url)}: {str(exc).strip()}; check --db "
                                "(postgresql://user:password@host:port/dbname) and that the server runs") from None
        self.pool = ConnectionPool(url, min_size=1, max_size=max(2, self.settings.pool_size),
                                   kwargs={"autocommit": True}, open=True, name="instore-central", timeout=30)
        self._vacuum_lock = threading.Lock()
        self._vacuum_due: set[str] = set()
        self._vacuum_timer: threading.Timer | None = None
        self._last_vacuum = 0.0
        self._listener: threading.Thread | None = None
        self._horizon_lock = threading.Lock()
        self._horizon_due: list[tuple[int, list[str]]] = []
        self._horizon_running = False
        self._feed_reads: Coalescer[tuple[str, int, int, int], list[tuple[Any, ...]]] = Coalescer(self._feed_rows)
        self.maintain(partitions_only=True)
        if listen:
            self.signal.live = False
            self._listener = threading.Thread(target=self._listen, name="central-feed-listen", daemon=True)
            self._listener.start()

    # --- plumbing ---------------------------------------------------------------------------------------------

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise Unavailable("the central database is busy or unreachable (no connection within 30 s); retry "
                              "later") from None
        except psycopg.OperationalError as exc:
            raise Unavailable(f"the central database is unreachable ({str(exc).strip()[:200]}); retry later") from None
        except psycopg.DataError as exc:  # a value PostgreSQL cannot hold (a NUL in a path or a key): the caller's
            raise InvalidValue(f"a value in the request cannot be stored or looked up ({str(exc).strip()[:120]}); "
                               "send text without NUL characters") from None

    def _transact(self, work: Callable[[PgTx], T], now: float | None = None) -> T:
        """Run work(tx) in one transaction; again (from the start) when chosen as a deadlock victim."""
        for attempt in range(RETRIES):
            tx: PgTx | None = None
            try:
                # Pipeline mode: statements whose results are not read go out together with the next one that
                # is read (or with COMMIT): fewer round trips, same transaction.
                with self._conn() as conn, conn.pipeline(), conn.transaction():
                    tx = PgTx(conn, self.settings, time.time() if now is None else now)
                    result = work(tx)
                    tx.finish()
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt + 1 == RETRIES:
                    raise
                log.info("a central write was a deadlock victim; running it again")
                time.sleep(0.01 * (attempt + 1))
                continue
            assert tx is not None
            if tx.targets and (self._listener is None or not self.signal.live):  # else the listener gets the NOTIFY
                self.signal.notify(tx.targets)
            if tx.vacuum:
                self._schedule_vacuum(tx.vacuum)
            return result
        raise AssertionError("unreachable")

    def _listen(self) -> None:
        """LISTEN on a connection of its own and wake this process's long-polls; on a lost connection the
        waiters look at the feed every second until it is back."""
        delay = 0.5
        while not self._closed.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
                    self.signal.live = True
                    self.signal.notify([ALL_STORES])  # whatever was missed while not listening
                    delay = 0.5
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=0.25):
                            xid, sep, targets = note.payload.partition(":")
                            if sep and digits(xid):
                                self.wake_when_servable(int(xid), targets.split(","))
                            else:  # a process of an older version
                                self.signal.notify(note.payload.split(","))
            except psycopg.Error as exc:
                self.signal.live = False
                if self._closed.is_set():
                    return
                log.warning("central store: lost the feed notifications (%s); long-polls look every second until "
                            "reconnected", str(exc).strip()[:200])
                self._closed.wait(delay)
                delay = min(delay * 2, 10.0)

    def await_horizon(self, xid: int, store: str | None = None) -> None:
        self.wake_when_servable(xid, [store or ALL_STORES])

    def wake_when_servable(self, xid: int, targets: list[str]) -> None:
        """Wake the waiters of `targets` once the feed entries of transaction `xid` are servable (every older
        transaction has finished). One thread per process watches the snapshot horizon for all of them:
        woken earlier, a few hundred long-polls would each read the feed, find the entry not yet servable
        and look again (while pushes keep transactions open, that is always)."""
        with self._horizon_lock:
            self._horizon_due.append((xid, targets))
            if self._horizon_running or self._closed.is_set():
                return
            self._horizon_running = True
        threading.Thread(target=self._watch_horizon, name="central-feed-horizon", daemon=True).start()

    def _watch_horizon(self) -> None:
        conn = None
        try:
            while not self._closed.is_set():
                with self._horizon_lock:
                    if not self._horizon_due:
                        self._horizon_running = False
                        return
                if conn is None:
                    conn = psycopg.connect(self.url, autocommit=True, connect_timeout=10)
                xmin = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()[0]
                with self._horizon_lock:
                    ready = [t for xid, targets in self._horizon_due if xid < xmin for t in targets]
                    self._horizon_due = [(xid, t) for xid, t in self._horizon_due if xid >= xmin]
                if ready:
                    self.signal.notify(ready)
                else:
                    self._closed.wait(HORIZON_POLL_S)
        except psycopg.Error as exc:  # wake everyone: they read the feed, and wait again if need be
            log.warning("central store: watching the feed's horizon failed (%s)", str(exc).strip()[:200])
            self.signal.notify([ALL_STORES])
        finally:
            with self._horizon_lock:
                self._horizon_running = False
                self._horizon_due = []
            if conn is not None:
                conn.close()

    def _schedule_vacuum(self, tables: set[str]) -> None:
        """VACUUM what an erasure deleted from, soon and at most once a minute (see the README: until then
        the deleted rows remain as dead tuples)."""
        with self._vacuum_lock:
            self._vacuum_due |= tables
            if self._vacuum_timer is not None or self._closed.is_set():
                return
            delay = max(VACUUM_AFTER_S, self._last_vacuum + VACUUM_EVERY_S - time.monotonic())
            self._vacuum_timer = threading.Timer(delay, self.vacuum_now)
            self._vacuum_timer.daemon = True
            self._vacuum_timer.start()

    def vacuum_now(self) -> list[str]:
        """Run the pending VACUUM now (outside any transaction); returns the tables vacuumed."""
        with self._vacuum_lock:
            tables = sorted(self._vacuum_due)
            self._vacuum_due.clear()
            self._vacuum_timer = None
            self._last_vacuum = time.monotonic()
        done = []
        for table in tables:
            try:
                with self._conn() as conn:
                    conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier(table)))
                done.append(table)
            except (psycopg.Error, DatabaseError) as exc:
                log.warning("VACUUM %s after an erasure failed (%s); autovacuum will get to it", table,
                            str(exc).strip()[:200])
        return done

    # --- life cycle -------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._closed.set()
        with self._vacuum_lock:
            timer, self._vacuum_timer = self._vacuum_timer, None
        if timer is not None:
            timer.cancel()
        if self._listener is not None:
            self._listener.join(3)
        self.pool.close()

    def ping(self) -> None:
        with self._conn() as conn:
            conn.execute("SELECT 1")

    def is_empty(self) -> bool:
        with self._conn() as conn:
            return conn.execute("SELECT NOT EXISTS (SELECT 1 FROM versions WHERE version > 0)").fetchone()[0]

    def maintain(self, now: float | None = None, *, partitions_only: bool = False) -> dict[str, Any]:
        """Partitions for the days around `now`, retention (whole days dropped), expired idempotency keys
        and sightings. One process at a time (a session advisory lock); the others skip."""
        now = time.time() if now is None else now
        days = self.settings.retention_days
        cutoff = now - days * 86400.0 if days else None
        out: dict[str, Any] = {"created_partitions": [], "dropped_partitions": [], "events_deleted": 0}
        with self._conn() as conn:
            if not conn.execute("SELECT pg_try_advisory_lock(%s)", (pg_schema.MAINTENANCE_LOCK,)).fetchone()[0]:
                return {**out, "skipped": True}
            try:
                if not partitions_only:
                    with conn.transaction():
                        if cutoff is not None:
                            out["events_deleted"] = conn.execute("DELETE FROM events_default WHERE ts < %s",
                                                                 (cutoff,)).rowcount
                        out["idempotency_deleted"] = conn.execute("DELETE FROM idempotency WHERE created_at < %s",
                                                                  (now - IDEMPOTENCY_TTL_S,)).rowcount
                        out["relevance_deleted"] = conn.execute(
                            "DELETE FROM customer_stores WHERE last_seen < %s",
                            (now - self.settings.relevant_for_s,)).rowcount
                with conn.transaction():
                    conn.execute("SET LOCAL lock_timeout = '5s'")
                    existing = pg_schema.partitions(conn)
                    today = pg_schema.day_of(now)
                    for offset in range(-pg_schema.PARTITIONS_BEHIND, pg_schema.PARTITIONS_AHEAD + 1):
                        day = today + timedelta(days=offset)
                        name = pg_schema.partition_name(day)
                        ends = pg_schema.day_start(day) + pg_schema.DAY_S
                        if name not in existing and (cutoff is None or ends > cutoff):
                            pg_schema.create_partition(conn, day)
                            out["created_partitions"].append(name)
                    if cutoff is not None:
                        for name, day in sorted(existing.items()):
                            if pg_schema.day_start(day) + pg_schema.DAY_S <= cutoff:
                                pg_schema.drop_partition(conn, name)
                                out["dropped_partitions"].append(name)
            except psycopg.Error as exc:
                log.warning("central store maintenance failed (%s); it runs again later", str(exc).strip()[:300])
                out["error"] = str(exc).strip()[:300]
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (pg_schema.MAINTENANCE_LOCK,))
        return out

    # --- events -----------------------------------------------------------------------------------------------

    def push_events(self, store: str, raw: list[Any], idempotency_key: str | None = None,
                    body_hash: str | None = None, now: float | None = None,
                    health: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        parsed = parse_events(raw, store)
        invalid = [x for x in parsed if not isinstance(x, p.WireEvent)]
        valid = [(i, x) for i, x in enumerate(parsed) if isinstance(x, p.WireEvent)]

        def work(tx: PgTx, isolate: bool) -> tuple[dict[str, Any], bool]:
            key = idempotency_key
            if key is not None:
                claimed = tx.q("INSERT INTO idempotency(store, key, body_hash, created_at) VALUES (%s, %s, %s, %s) "
                               "ON CONFLICT DO NOTHING RETURNING 1", (store, key, body_hash, tx.now)).fetchone()
                if claimed is None:  # a first request with this key committed (a concurrent one waited for it)
                    old = tx.q("SELECT body_hash, response FROM idempotency WHERE store = %s AND key = %s",
                               (store, key)).fetchone()
                    if old is not None and old[0] != body_hash:
                        raise IdempotencyKeyReused(
                            f"Idempotency-Key {key!r} was used before with a different batch: use a new key for a "
                            "new batch, the same key only to retry the same batch")
                    if old is not None and old[1] is not None:
                        return json.loads(old[1]), True
                    key = None
            failed: list[p.Rejection] = []
            if isolate:
                accepted, duplicates, failed = _record_each(tx, store, valid)
            else:
                accepted, duplicates = _record(tx, store, [e for _, e in valid])
            rejected = sorted(invalid + failed, key=lambda r: r["index"])
            counts = rejection_counts(rejected)
            if counts:
                tx.q("INSERT INTO rejections(store, reason, count) SELECT %s, r, n FROM unnest(%s::text[], "
                     "%s::bigint[]) AS u(r, n) ON CONFLICT (store, reason) DO UPDATE SET "
                     "count = rejections.count + excluded.count", (store, list(counts), list(counts.values())))
            record = health_record(health, tx.now)
            tx.q("INSERT INTO store_status(store, last_push_at, events_total, status, updated_at) "
                 "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (store) DO UPDATE SET last_push_at = excluded.last_push_at, "
                 "events_total = store_status.events_total + excluded.events_total, "
                 "status = coalesce(excluded.status, store_status.status), "
                 "updated_at = coalesce(excluded.updated_at, store_status.updated_at)",
                 (store, tx.now, len(accepted), record, tx.now if record else None))
            answer = {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}
            if key is not None:
                tx.q("UPDATE idempotency SET response = %s WHERE store = %s AND key = %s", (dumps(answer), store, key))
            return answer, False

        if not any(rules.applies(e) for _, e in valid):
            plain = self._push_plain(store, [e for _, e in valid], invalid, idempotency_key, body_hash, now, health)
            if plain is not None:
                return plain
        try:
            return self._transact(lambda tx: work(tx, False), now)
        except (Unavailable, IdempotencyKeyReused, psycopg.OperationalError, psycopg.InterfaceError):
            raise  # unreachable database, deadlock victim thrice, disk full, a reused key: the push fails whole
        except Exception:
            # A bug on one event must not refuse the batch: its transaction rolled back, it runs again event by
            # event, each in a savepoint, refusing only the guilty (no savepoint on the common path: fewer trips).
            log.exception("store %s: recording a batch failed; recording it event by event", store)
            return self._transact(lambda tx: work(tx, True), now)

    def _push_plain(self, store: str, valid: list[p.WireEvent], invalid: list[p.Rejection], key: str | None,
                    body_hash: str | None, now: float | None,
                    health: dict[str, Any] | None) -> tuple[dict[str, Any], bool] | None:
        """A push whose events change no profile, in one statement (`push_plain`, pg_schema.py): one round
        trip instead of one per step. None when the general path must take it: its Idempotency-Key was
        claimed before (replay or refusal), or something unexpected went wrong (nothing was written)."""
        first: dict[str, p.WireEvent] = {}
        for e in valid:
            first.setdefault(e.event_id, e)
        unique = list(first.values())
        customers = sorted({e.customer for e in unique if e.customer is not None})
        rejected = sorted(invalid, key=lambda r: r["index"])
        counts = rejection_counts(rejected)
        for attempt in range(RETRIES):
            at = time.time() if now is None else now
            params = {
                "store": store, "now": at, "key": key, "hash": body_hash,
                "event_id": [e.event_id for e in unique], "seq": [e.seq for e in unique],
                "kind": [e.kind for e in unique], "type": [e.type for e in unique],
                "source": [e.source for e in unique], "zone": [e.zone for e in unique],
                "subject": [e.subject for e in unique], "customer": [e.customer for e in unique],
                "ts": [e.ts for e in unique],
                "data": [(e.data_json or dumps(e.data)) if e.data else None for e in unique],
                "received_at": [e.received_at for e in unique],
                "valid_ids": [e.event_id for e in valid], "valid_first": [first[e.event_id] is e for e in valid],
                "rejected": dumps(rejected), "reasons": list(counts), "counts": list(counts.values()),
                "status": health_record(health, at), "cust_ids": customers,
                "cust_keys": [p.erase_key(c) for c in customers], "fresh_after": at - RELEVANCE_REFRESH_S,
                "cutoff": at - self.settings.relevant_for_s, "unhomed": self.settings.broadcast_unhomed,
                "channel": CHANNEL, "notify": store if len(store) <= NOTIFY_MAX else ALL_STORES}
            try:
                with self._conn() as conn:
                    row = conn.execute(_PUSH_PLAIN, params).fetchone()
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt + 1 == RETRIES:
                    return None
                log.info("a central push was a deadlock victim; running it again")
                time.sleep(0.01 * (attempt + 1))
                continue
            except (Unavailable, psycopg.OperationalError, psycopg.InterfaceError):
                raise
            except Exception:
                log.exception("store %s: a plain push failed; recording it the general way", store)
                return None
            assert row is not None
            claimed, new_ids, touched = row
            if not claimed:
                return None
            fresh = set(new_ids)
            accepted = [e.event_id for e in unique if e.event_id in fresh]
            duplicates = [e.event_id for e in valid if first[e.event_id] is not e or e.event_id not in fresh]
            if touched and (self._listener is None or not self.signal.live):  # else the listener gets the NOTIFY
                self.signal.notify({store})
            return {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}, False
        return None

    def list_events(self, store: str | None, after: int, limit: int) -> dict[str, Any]:
        query = ("SELECT rseq AS received_seq, store, event_id, seq, kind, type, source, zone, subject, customer, ts, "
                 "data, received_at, central_received_at, applied FROM events WHERE rseq > %s")
        params: list[Any] = [after]
        if store:
            query += " AND store = %s"
            params.append(store)
        query += " ORDER BY rseq LIMIT %s"
        params.append(limit + 1)
        with self._conn() as conn:
            cur = conn.execute(query, params)
            names = [d.name for d in cur.description or []]
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
        more = len(rows) > limit
        rows = rows[:limit]
        for row in rows:
            row["data"] = json.loads(row["data"]) if row["data"] else None
        return {"events": rows, "next_after": rows[-1]["received_seq"] if rows else after, "more": more}

    # --- profiles ---------------------------------------------------------------------------------------------

    def upsert_profiles(self, items: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
        return self._transact(lambda tx: rules.upsert(tx, [dict(i) for i in items]), now)

    def get_profile(self, customer_id: str, *, store: str | None = None,
                    now: float | None = None) -> dict[str, Any] | None:
        with self._conn() as conn:
            row = conn.execute("SELECT body FROM profiles WHERE customer_id = %s", (customer_id,)).fetchone()
        if row is None:
            return None
        if store is not None:
            self._note_fetch(store, customer_id, now)
        return json.loads(row[0])

    def _note_fetch(self, store: str, customer_id: str, now: float | None) -> None:
        """An on-demand fetch: the store holds the profile now, so it must hear of its changes."""
        def work(tx: PgTx) -> None:
            if tx.stale_sightings(store, [customer_id]):
                tx.lock([p.erase_key(customer_id)])
                tx.note_seen(store, [customer_id])

        self._transact(work, now)

    def erase(self, customer_id: str, now: float | None = None) -> dict[str, Any]:
        return self._transact(lambda tx: rules.erase(tx, customer_id), now)

    def merge(self, from_id: str, into_id: str, now: float | None = None) -> dict[str, Any]:
        return self._transact(lambda tx: rules.merge(tx, from_id, into_id), now)

    def resolve(self, keys: list[str]) -> dict[str, str]:
        with self._conn() as conn:
            return dict(conn.execute("SELECT key, customer_id FROM identities WHERE key = ANY(%s)",
                                     (keys,)).fetchall())

    def export(self, customer_id: str) -> dict[str, Any] | None:
        with self._conn() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")  # one snapshot for all
            row = conn.execute("SELECT body, updated_at FROM profiles WHERE customer_id = %s", (customer_id,)).fetchone()
            profile = json.loads(row[0]) if row else None
            keys = [r[0] for r in conn.execute("SELECT key FROM identities WHERE customer_id = %s ORDER BY key",
                                               (customer_id,))]
            consents = dict(conn.execute("SELECT purpose, ts FROM consent_ts WHERE customer_id = %s",
                                         (customer_id,)).fetchall())
            stores = [{"store": s, "first_seen": f, "last_seen": last} for s, f, last in conn.execute(
                "SELECT store, first_seen, last_seen FROM customer_stores WHERE customer_id = %s ORDER BY store",
                (customer_id,))]
            feed = [{"target": t, "version": v, "op": o, "changed_at": c} for t, v, o, c in conn.execute(
                "SELECT target, version, op, changed_at FROM feed WHERE customer_id = %s ORDER BY xid, seq",
                (customer_id,))]
            subjects = list(dict.fromkeys([*keys, *((profile or {}).get("identities") or [])]))
            cur = conn.execute(
                "SELECT rseq AS received_seq, store, event_id, seq, kind, type, source, zone, subject, customer, ts, "
                "data, received_at, central_received_at, applied FROM events WHERE customer = %s OR subject = ANY(%s) "
                "ORDER BY rseq", (customer_id, subjects))
            names = [d.name for d in cur.description or []]
            events = [dict(zip(names, r)) for r in cur.fetchall()]
        if profile is None and not events and not stores:
            return None
        for e in events:
            e["data"] = json.loads(e["data"]) if e["data"] else None
        return export_document(customer_id, profile, row[1] if row else None, keys, consents, stores, feed, events)

    # --- change feed ------------------------------------------------------------------------------------------

    def _cursor(self, xid: int, seq: int) -> str:
        return f"{self.epoch}.{xid}-{seq}"

    def _position(self, since: str | None) -> tuple[int, int, bool]:
        """A feed cursor (either feed's) as (transaction id, sequence, reset: it came from another database)."""
        position, reset = split_cursor(since, self.epoch)
        if position is None:
            return 0, 0, reset
        x, dash, s = position.partition("-")
        if not (dash and digits(x) and digits(s) and len(x) <= 18 and len(s) <= 18):
            raise invalid_cursor(str(since))
        return int(x), int(s), reset

    def _feed_rows(self, asked: Sequence[tuple[str, int, int, int]]) -> list[list[tuple[Any, ...]]]:
        """The feed rows of several (store, xid, seq, limit) requests, in one statement."""
        if len(asked) == 1:
            store, xid, seq, n = asked[0]
            with self._conn() as conn:
                return [conn.execute(_FEED_FOR_STORE, {"x": xid, "s": seq, "n": n, "store": store}).fetchall()]
        columns = list(zip(*asked))
        params = {"stores": list(columns[0]), "xs": list(columns[1]), "ss": list(columns[2]), "ns": list(columns[3])}
        out: list[list[tuple[Any, ...]]] = [[] for _ in asked]
        with self._conn() as conn:
            for row in conn.execute(_FEED_FOR_STORES, params):
                out[row[0] - 1].append(row[1:])
        return out

    def feed_page(self, since: str | None, limit: int, store: str | None) -> FeedPage:
        xid, seq, reset = self._position(since)
        if store is None:
            with self._conn() as conn:
                rows = conn.execute(_FEED_ALL, {"x": xid, "s": seq, "n": limit + 1}).fetchall()
        else:  # the stores woken by one change read together
            rows = self._feed_reads.call((store, xid, seq, limit + 1))
        served: list[tuple[Any, ...]] = []
        pending_xid = None
        for row in rows:
            if row[0] >= row[6]:  # its transaction is at or above this snapshot's xmin: not yet safe to serve
                pending_xid = int(row[0])
                break
            served.append(row)
        more = len(served) > limit
        served = served[:limit]
        last = (served[-1][0], served[-1][1]) if served else (xid, seq)
        answer = page_answer([(r[2], r[3], r[4], r[5]) for r in served], self._cursor(*last), more)
        if reset:
            answer["reset"] = True
        return FeedPage(answer, pending=pending_xid is not None, pending_xid=pending_xid)

    # --- campaigns, catalogue, assets (storage/content.py) -----------------------------------------------------

    def content_write(self, work: Callable[[Any], T], now: float | None = None) -> T:
        """Content writes (admin edits, rare) take one lock, so content-feed positions follow commit order and an
        entity's version (its newest position) grows in the order stores see its changes."""

        def locked(tx: PgTx) -> T:
            tx.q("SELECT pg_advisory_xact_lock(%s)", (pg_schema.CONTENT_LOCK,)).fetchone()
            return work(tx)

        return self._transact(locked, now)

    def content_read(self, work: Callable[[Any], T]) -> T:
        with self._conn() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return work(PgRead(conn, time.time()))

    def content_page(self, since: str | None, limit: int, store: str) -> FeedPage:
        xid, seq, reset = self._position(since)

        def read(db: PgRead) -> FeedPage:
            rows = db.rows(_CONTENT_FEED_PAGE, {"x": xid, "s": seq, "n": limit + 1, "store": store})
            served: list[tuple[Any, ...]] = []
            pending_xid = None
            for row in rows:
                if row[0] >= row[3]:  # its transaction may not have finished: served once every older one has
                    pending_xid = int(row[0])
                    break
                served.append(row)
            more = len(served) > limit
            served = served[:limit]
            last = (served[-1][0], served[-1][1]) if served else (xid, seq)
            answer = {"changes": content_rules.resolve_entries(db, store, [(int(r[1]), r[2]) for r in served]),
                      "next": self._cursor(*last), "more": more}
            if reset:
                answer["reset"] = True
            return FeedPage(answer, pending=pending_xid is not None, pending_xid=pending_xid)

        return self.content_read(read)

    # --- fleet ------------------------------------------------------------------------------------------------

    def note_store(self, store: str, *, pulled: bool = False, now: float | None = None) -> None:
        now = time.time() if now is None else now
        column = sql.Identifier("last_pull_at" if pulled else "last_push_at")
        with self._conn() as conn:
            conn.execute(sql.SQL("INSERT INTO store_status(store, {c}) VALUES (%s, %s) ON CONFLICT (store) "
                                 "DO UPDATE SET {c} = excluded.{c}").format(c=column), (store, now))

    def note_pulls(self, pulls: dict[str, float]) -> None:
        if not pulls:
            return
        with self._conn() as conn:
            conn.execute("INSERT INTO store_status(store, last_pull_at) SELECT * FROM unnest(%s::text[], "
                         "%s::float8[]) ON CONFLICT (store) DO UPDATE SET last_pull_at = "
                         "greatest(store_status.last_pull_at, excluded.last_pull_at)",
                         (list(pulls), list(pulls.values())))

    def store_rows(self) -> list[dict[str, Any]]:
        with self._conn() as conn:
            rows = conn.execute("SELECT store, last_push_at, last_pull_at, events_total, status, updated_at "
                                "FROM store_status ORDER BY store").fetchall()
        return [store_row(*r) for r in rows]

    def stores_pushing(self, since: float) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT count(*) FROM store_status WHERE last_push_at >= %s", (since,)).fetchone()
        return int(row[0]) if row else 0

    def store_rejections(self, store: str) -> dict[str, int]:
        with self._conn() as conn:
            return dict(conn.execute("SELECT reason, count FROM rejections WHERE store = %s ORDER BY reason",
                                     (store,)).fetchall())

    def stats(self) -> dict[str, Any]:
        with self._conn() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            one = lambda query: conn.execute(query).fetchone()[0]  # noqa: E731
            by_store = dict(conn.execute("SELECT store, events_total FROM store_status WHERE events_total > 0 "
                                         "ORDER BY store").fetchall())
            rejected: dict[str, dict[str, int]] = {}
            for store, reason, count in conn.execute("SELECT store, reason, count FROM rejections "
                                                     "ORDER BY store, reason"):
                rejected.setdefault(store, {})[reason] = count
            last = conn.execute("SELECT xid, seq FROM feed ORDER BY xid DESC, seq DESC LIMIT 1").fetchone()
            return {
                "engine": self.engine,
                "profiles": one("SELECT count(*) FROM profiles"),
                "identities": one("SELECT count(*) FROM identities"),
                "erased": one("SELECT count(*) FROM feed WHERE op = 'erase'"),
                "changes": one("SELECT count(*) FROM feed"),
                "feed_cursor": self._cursor(*(last or (0, 0))),
                "events": {"total": sum(by_store.values()), "by_store": by_store},
                "rejected": rejected,
            }
