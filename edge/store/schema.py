"""Every table of the edge database, and the migrations that make them: the one place that knows the schema.

Append only: a newer binary upgrades an older file by running the steps it has not seen; a file from a
newer binary is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import sqlite_utils

from edge.store.db import StoreError

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
    """Sync and identity: the profile context cache, identities, sync cursor, rejects and tombstones
    (written through edge/uplink.py: SQL in store/outbox.py, store/profiles.py and edge/privacy.py; later
    changes get their own migration)."""
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
    if "pending" not in db["sync_tombstones"].columns_dict:  # older sync code created the table itself
        db.execute("ALTER TABLE sync_tombstones ADD COLUMN pending INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX IF NOT EXISTS idx_events_customer ON events(customer) WHERE customer IS NOT NULL")
    db.execute("CREATE INDEX IF NOT EXISTS idx_decisions_customer ON decisions(customer) WHERE customer IS NOT NULL")


def _v7(db: sqlite_utils.Database) -> None:
    """Failed attempts of messages a crash interrupted, by digest of topic and payload (edge/quarantine.py)."""
    db.execute("CREATE TABLE IF NOT EXISTS failed_attempts (digest BLOB PRIMARY KEY, attempts INTEGER NOT NULL, "
               "updated_at REAL NOT NULL)")


def _products_catalogue(db: sqlite_utils.Database) -> None:
    """The central's products (edge/domain/catalogue.py): the latest version per SKU, deletes kept as tombstones
    (deleted = 1) so a late older entry never brings a product back."""
    db.execute("CREATE TABLE IF NOT EXISTS products (sku TEXT PRIMARY KEY, version INTEGER NOT NULL, "
               "deleted INTEGER NOT NULL DEFAULT 0, product TEXT, updated_at REAL NOT NULL)")


_STAFF_APP_SQL = """
CREATE TABLE IF NOT EXISTS staff (
    staff_id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, pin_hash TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1, created_at REAL NOT NULL, failed_pins INTEGER NOT NULL DEFAULT 0,
    locked_until REAL, session_epoch INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS staff_audit (
    id INTEGER PRIMARY KEY, staff_id TEXT NOT NULL, customer_id TEXT NOT NULL, action TEXT NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_staff_audit_customer ON staff_audit(customer_id);
CREATE TABLE IF NOT EXISTS staff_feed (
    id INTEGER PRIMARY KEY, rev INTEGER NOT NULL, kind TEXT NOT NULL, customer_id TEXT, dedupe TEXT NOT NULL,
    data TEXT NOT NULL, created_at REAL NOT NULL, claimed_by TEXT, claimed_at REAL, done_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS idx_staff_feed_rev ON staff_feed(rev);
CREATE INDEX IF NOT EXISTS idx_staff_feed_dedupe ON staff_feed(dedupe, created_at);
CREATE INDEX IF NOT EXISTS idx_staff_feed_customer ON staff_feed(customer_id) WHERE customer_id IS NOT NULL;
"""


def _staff_app(db: sqlite_utils.Database) -> None:
    """The staff app (edge/staff/): accounts with PIN hashes, the audit log of staff views of shoppers, the
    associates' live feed (each change bumps `rev`, the SSE event id a reconnecting phone resumes from)."""
    for stmt in _STAFF_APP_SQL.split(";"):
        if stmt.strip():
            db.execute(stmt)


_CAMPAIGNS_SQL = """
CREATE TABLE IF NOT EXISTS campaigns (
    id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    campaign_version INTEGER,
    op TEXT NOT NULL,
    body TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    received_at REAL NOT NULL,
    applied_version INTEGER,
    applied_body TEXT,
    applied_at REAL
)
"""


def _campaigns(db: sqlite_utils.Database) -> None:
    """Campaigns from the central store's content channel (edge/store/campaigns.py): the latest
    entry received per campaign (`version`: its position in the channel; `campaign_version`: the campaign's own
    version, what reports name) with its state (pending / applied / refused / withdrawn) and the version
    applied (what screens show). The channel's products go to the `products` table (edge/domain/catalogue.py)."""
    for stmt in _CAMPAIGNS_SQL.split(";"):
        if stmt.strip():
            db.execute(stmt)


def _lean_event_indexes(db: sqlite_utils.Database) -> None:
    """Every index an event enters costs each insert and each commit (issue #16): the kind index leaves out the
    sightings, nine events in ten (found by seq; a query by another kind says `kind <> 'beacon'`,
    edge.store.queries.NOT_SIGHTING), and the ts index, which no query used, goes."""
    db.execute("DROP INDEX IF EXISTS idx_events_ts")
    db.execute("DROP INDEX IF EXISTS idx_events_kind_seq")
    db.execute("CREATE INDEX IF NOT EXISTS idx_events_kind ON events(kind, seq) WHERE kind <> 'beacon'")


# Append only: a newer binary upgrades an older file by running the steps it has not seen.
MIGRATIONS: list[Migration] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _products_catalogue, _staff_app, _campaigns,
              _lean_event_indexes]
SCHEMA_VERSION = len(MIGRATIONS)


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
