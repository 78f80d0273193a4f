"""The central store's PostgreSQL schema: migrations applied at start, and the daily partitions of `events`.

Migrations run in one transaction under a transaction-scoped advisory lock, so two processes starting
at once (two workers, two machines) apply each step exactly once: the second waits, then finds the
schema current. Append only, like the SQLite ones.

`events` is partitioned by RANGE on the event's own time (`ts`, epoch seconds), one partition per UTC day
(`events_dYYYYMMDD`) plus `events_default` for anything outside the partitions made so far. Uniqueness is
(store, event_id, ts): PostgreSQL requires a partitioned table's unique keys to contain the partition
key, and the event time is the one that is the same on every retry of an event (the edge resends it as it
recorded it), so a retry always lands in the same partition and is recognised; partitioning by arrival
time would split a retry that crosses midnight into two rows. Retention drops whole days.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("instore_central")

MIGRATION_LOCK = 0x1CE12_0001  # advisory lock ids of this application
MAINTENANCE_LOCK = 0x1CE12_0002
CONTENT_LOCK = 0x1CE12_0003  # content-feed writers, one at a time (postgres.py content_write)
DAY_S = 86400
PARTITIONS_BEHIND = 7  # days before today that get a partition of their own (older events: the default one)
PARTITIONS_AHEAD = 7

_V1 = """
CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO meta(key, value) VALUES ('feed_epoch', substr(md5(random()::text || clock_timestamp()::text), 1, 8));

CREATE TABLE profiles (
    customer_id text PRIMARY KEY,
    version bigint NOT NULL,
    body text NOT NULL,
    updated_at double precision NOT NULL,
    erase_key text NOT NULL UNIQUE,
    home_store text
);
CREATE TABLE identities (key text PRIMARY KEY, customer_id text NOT NULL);
CREATE INDEX identities_customer ON identities (customer_id);
CREATE TABLE consent_ts (
    customer_id text NOT NULL, purpose text NOT NULL, ts double precision NOT NULL,
    PRIMARY KEY (customer_id, purpose)
);
-- One row per customer ever written, by erase key: the lock of their writes and the versions' high mark
-- (it outlives an erasure: the hash and a number, no trace of the id).
CREATE TABLE versions (erase_key text PRIMARY KEY, version bigint NOT NULL);

-- The change feed: one entry per (target, customer); position (xid, seq), see postgres.py.
CREATE SEQUENCE feed_seq;
CREATE TABLE feed (
    target text NOT NULL,
    customer_id text NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('feed_seq'),
    xid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    version bigint NOT NULL,
    op text NOT NULL,
    final boolean NOT NULL DEFAULT false,
    changed_at double precision NOT NULL,
    PRIMARY KEY (target, customer_id)
);
CREATE INDEX feed_target_position ON feed (target, xid, seq);
CREATE INDEX feed_position ON feed (xid, seq);
CREATE INDEX feed_customer ON feed (customer_id);

CREATE TABLE customer_stores (
    customer_id text NOT NULL, store text NOT NULL,
    first_seen double precision NOT NULL, last_seen double precision NOT NULL,
    PRIMARY KEY (customer_id, store)
);
CREATE INDEX customer_stores_store ON customer_stores (store, customer_id);
CREATE INDEX customer_stores_last_seen ON customer_stores (last_seen);

CREATE SEQUENCE events_rseq;
CREATE TABLE events (
    rseq bigint NOT NULL DEFAULT nextval('events_rseq'),
    store text NOT NULL,
    event_id text NOT NULL,
    seq bigint,
    kind text NOT NULL,
    type text,
    source text,
    zone text,
    subject text,
    customer text,
    ts double precision NOT NULL,
    data text,
    received_at double precision,
    central_received_at double precision NOT NULL,
    applied text,
    PRIMARY KEY (store, event_id, ts)
) PARTITION BY RANGE (ts);
CREATE TABLE events_default PARTITION OF events DEFAULT;
-- The admin listing (received order, per store) and the erasure path (customer, device keys).
CREATE INDEX events_rseq_idx ON events (rseq);
CREATE INDEX events_store_rseq ON events (store, rseq);
CREATE INDEX events_customer ON events (customer) WHERE customer IS NOT NULL;
CREATE INDEX events_subject ON events (subject) WHERE subject IS NOT NULL;

CREATE TABLE idempotency (
    store text NOT NULL, key text NOT NULL, body_hash text NOT NULL, response text,
    created_at double precision NOT NULL,
    PRIMARY KEY (store, key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);
CREATE TABLE rejections (store text NOT NULL, reason text NOT NULL, count bigint NOT NULL, PRIMARY KEY (store, reason));
CREATE TABLE store_status (
    store text PRIMARY KEY,
    last_push_at double precision,
    last_pull_at double precision,
    events_total bigint NOT NULL DEFAULT 0,
    status text,
    updated_at double precision
);
"""

def _content_schema() -> str:
    """Campaigns, catalogue, assets and orders: the SQLite engine's tables in PostgreSQL's types, and the
    content feed with its (xid, seq) positions (see postgres.py)."""
    from sync.central.storage.content import CONTENT_SCHEMA

    tables = (CONTENT_SCHEMA.replace("BLOB", "bytea").replace("REAL", "double precision")
              .replace("INTEGER", "bigint").replace("TEXT", "text"))
    return tables + """;
CREATE SEQUENCE content_feed_seq;
CREATE TABLE content_feed (
    target text NOT NULL,
    entity text NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('content_feed_seq'),
    xid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    changed_at double precision NOT NULL,
    PRIMARY KEY (target, entity)
);
CREATE INDEX content_feed_target_position ON content_feed (target, xid, seq);
"""


# A plain push (no event that changes a profile: see postgres.py push_events) in one statement, so one round
# trip to the server: claim the Idempotency-Key, insert the events once each, note the shoppers seen (their
# versions rows locked in key order, as profiles.py does), put a profile at the end of the feed of a store
# newly concerned by it, count rejections, the store's status, and the answer kept for a retry. On a
# 2-core machine at 300 stores the same steps as seven statements held each pooled connection ~120 ms,
# mostly waiting for the client's next statement (docs/scale.md).
_PUSH_PLAIN = """
CREATE FUNCTION push_plain(
    p_store text, p_now double precision, p_key text, p_hash text,
    p_event_id text[], p_seq bigint[], p_kind text[], p_type text[], p_source text[], p_zone text[],
    p_subject text[], p_customer text[], p_ts double precision[], p_data text[], p_received_at double precision[],
    p_valid_ids text[], p_valid_first boolean[], p_rejected text, p_reasons text[], p_counts bigint[],
    p_status text, p_cust_ids text[], p_cust_keys text[], p_fresh_after double precision,
    p_cutoff double precision, p_broadcast_unhomed boolean, p_channel text, p_notify text,
    OUT claimed boolean, OUT new_ids text[], OUT touched boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    seen_customers text[];
    stale text[];
    started text[];
    answer text;
BEGIN
    claimed := true;
    touched := false;
    IF p_key IS NOT NULL THEN
        INSERT INTO idempotency(store, key, body_hash, created_at) VALUES (p_store, p_key, p_hash, p_now)
            ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN  -- a first request with this key committed: the caller replays or refuses it
            claimed := false;
            RETURN;
        END IF;
    END IF;
    WITH ins AS (
        INSERT INTO events (store, event_id, seq, kind, type, source, zone, subject, customer, ts, data,
                            received_at, central_received_at)
        SELECT p_store, u.*, p_now FROM unnest(p_event_id, p_seq, p_kind, p_type, p_source, p_zone, p_subject,
                                               p_customer, p_ts, p_data, p_received_at) AS u
        ON CONFLICT DO NOTHING RETURNING event_id, customer)
    SELECT coalesce(array_agg(event_id), '{}'),
           array_agg(DISTINCT customer) FILTER (WHERE customer IS NOT NULL)
      INTO new_ids, seen_customers FROM ins;
    IF seen_customers IS NOT NULL THEN
        SELECT array_agg(c ORDER BY c) INTO stale FROM unnest(seen_customers) AS c
         WHERE NOT EXISTS (SELECT 1 FROM customer_stores cs WHERE cs.store = p_store AND cs.customer_id = c
                           AND cs.last_seen >= p_fresh_after);
    END IF;
    IF stale IS NOT NULL THEN
        -- their writes' lock: a concurrent profile write either sees this sighting or is seen by it
        INSERT INTO versions(erase_key, version)
            SELECT k, 0 FROM unnest(p_cust_ids, p_cust_keys) AS x(c, k) WHERE c = ANY(stale) ORDER BY k
            ON CONFLICT DO NOTHING;
        PERFORM 1 FROM versions WHERE erase_key IN (
            SELECT k FROM unnest(p_cust_ids, p_cust_keys) AS x(c, k) WHERE c = ANY(stale))
            ORDER BY erase_key FOR UPDATE;
        WITH noted AS (
            INSERT INTO customer_stores AS cs (customer_id, store, first_seen, last_seen)
            SELECT c, p_store, p_now, p_now FROM unnest(stale) AS c
            ON CONFLICT (customer_id, store) DO UPDATE SET last_seen = excluded.last_seen, first_seen = CASE
                WHEN cs.last_seen < p_cutoff THEN excluded.first_seen ELSE cs.first_seen END
            RETURNING customer_id, first_seen = last_seen AS fresh)
        SELECT array_agg(customer_id) FILTER (WHERE fresh) INTO started FROM noted;
        IF started IS NOT NULL THEN
            INSERT INTO feed(target, customer_id, version, op, final, changed_at)
                SELECT p_store, pr.customer_id, pr.version, 'upsert', false, p_now FROM profiles pr
                 WHERE pr.customer_id = ANY(started) AND (pr.home_store IS NOT NULL OR NOT p_broadcast_unhomed)
                 ORDER BY pr.customer_id
                ON CONFLICT (target, customer_id) DO UPDATE SET seq = nextval('feed_seq'),
                    xid = pg_current_xact_id()::text::bigint, version = excluded.version, op = excluded.op,
                    final = excluded.final, changed_at = excluded.changed_at;
            IF FOUND THEN
                touched := true;
                PERFORM pg_notify(p_channel, pg_current_xact_id()::text || ':' || p_notify);
            END IF;
        END IF;
    END IF;
    IF cardinality(p_reasons) > 0 THEN
        INSERT INTO rejections(store, reason, count) SELECT p_store, r, n FROM unnest(p_reasons, p_counts) AS u(r, n)
            ON CONFLICT (store, reason) DO UPDATE SET count = rejections.count + excluded.count;
    END IF;
    INSERT INTO store_status(store, last_push_at, events_total, status, updated_at)
        VALUES (p_store, p_now, cardinality(new_ids), p_status, CASE WHEN p_status IS NULL THEN NULL ELSE p_now END)
        ON CONFLICT (store) DO UPDATE SET last_push_at = excluded.last_push_at,
            events_total = store_status.events_total + excluded.events_total,
            status = coalesce(excluded.status, store_status.status),
            updated_at = coalesce(excluded.updated_at, store_status.updated_at);
    IF p_key IS NOT NULL THEN
        -- the answer a retry gets: accepted (first of their id, new), the rest duplicates, in batch order
        SELECT '{"accepted":' || coalesce(to_json(array_agg(v.id ORDER BY v.n) FILTER (WHERE v.fresh)), '[]')::text
               || ',"duplicates":' || coalesce(to_json(array_agg(v.id ORDER BY v.n) FILTER (WHERE NOT v.fresh)),
                                               '[]')::text
               || ',"rejected":' || p_rejected || '}'
          INTO answer
          FROM (SELECT u.id, u.n, u.is_first AND f.id IS NOT NULL AS fresh
                  FROM unnest(p_valid_ids, p_valid_first) WITH ORDINALITY AS u(id, is_first, n)
                  LEFT JOIN unnest(new_ids) AS f(id) ON f.id = u.id) AS v;
        UPDATE idempotency SET response = answer WHERE store = p_store AND key = p_key;
    END IF;
END
$fn$;
"""

MIGRATIONS: list[str] = [_V1, _content_schema(), _PUSH_PLAIN]
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(Exception):
    """The database was migrated by a newer program."""


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Bring the database to SCHEMA_VERSION (one transaction, advisory-locked); returns the version before."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version int PRIMARY KEY, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        before = int(row[0]) if row else 0
        if before > SCHEMA_VERSION:
            raise SchemaTooNew(f"the central database has schema version {before}, newer than this program "
                               f"understands ({SCHEMA_VERSION}): upgrade instore-edge")
        for version in range(before + 1, SCHEMA_VERSION + 1):
            conn.execute(MIGRATIONS[version - 1])
            conn.execute("INSERT INTO schema_version(version) VALUES (%s)", (version,))
    return before


def day_of(ts: float) -> dt.date:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).date()


def day_start(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())


def partition_name(day: dt.date) -> str:
    return f"events_d{day:%Y%m%d}"


def partitions(conn: psycopg.Connection[Any]) -> dict[str, dt.date]:
    """The daily partitions that exist: name → day."""
    rows = conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                        "WHERE i.inhparent = 'events'::regclass").fetchall()
    out: dict[str, dt.date] = {}
    for (name,) in rows:
        if name.startswith("events_d") and len(name) == 16:
            out[name] = dt.datetime.strptime(name[8:], "%Y%m%d").date()
    return out


def create_partition(conn: psycopg.Connection[Any], day: dt.date) -> None:
    """Make the day's partition: a new table, the day's rows moved out of the default partition, then
    ATTACH (which takes a lock that lets inserts go on, unlike CREATE TABLE ... PARTITION OF). In the
    caller's transaction."""
    name = sql.Identifier(partition_name(day))
    lo, hi = day_start(day), day_start(day) + DAY_S
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE events INCLUDING DEFAULTS)").format(name))
    conn.execute(sql.SQL("WITH moved AS (DELETE FROM events_default WHERE ts >= %s AND ts < %s RETURNING *) "
                         "INSERT INTO {} SELECT * FROM moved").format(name), (lo, hi))
    conn.execute(sql.SQL("ALTER TABLE events ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})")
                 .format(name, sql.Literal(lo), sql.Literal(hi)))


def drop_partition(conn: psycopg.Connection[Any], name: str) -> None:
    conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
