"""Privacy: the one place that knows where a shopper is held, erases them from all of it, and exports it.

An erasure removes the shopper from every table (profile, identity keys, presence link, decisions, who
collected a pickup or scanned a handoff; their events keep only what is not personal, and events, dead
letters and sync rejects that quote the id, an identity key or the first name lose that text), from every
in-memory trace (the domain parts' `forget`: identity map, presence, profile cache and activity, cap
counters, displays showing them), and from the bytes on disk: the writer deletes with secure_delete, and
after the commit truncates the WAL and checks the file for the values erased here (`Erased.values`),
rebuilding what still holds a copy (Writer.want_wipe, sync/scrub.py). A tombstone keeps the erasure
by hash only (sync.protocol.erase_key). Erasing runs in the writer thread, inside its transaction.

Two ways in: `erase` (asked at this store: DELETE /api/v1/customers/<id>; the tombstone stays pending and
an `erasure` event asks the central store to erase the shopper everywhere) and `erase_by_key` (erasures
the central store fed, by erase key, through edge/uplink.py). The tombstones are this module's too: they
say whom the edge must not learn again (`still_erased`) until the erasure is confirmed and old.
`profiles_changed` is the consent side: a profile that no longer allows personal content clears the
displays showing it at once. `export_customer` is the right of access: what the same tables hold about one
shopper (GET /api/v1/customers/<id>/export), read by any thread on its own connection.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from edge.config import Config
from edge.domain.displays import Displays
from edge.domain.shoppers import CustomerContext
from edge.model import Event
from edge.store.db import chunks, marks
from edge.store.profiles import cached_version, cached_versions
from edge.store.writer import Writer
from sync import protocol as p

TOMBSTONE_MIN_S = 30 * 24 * 3600.0  # a confirmed tombstone is kept at least this long (see expire_tombstones)
_EXCERPT_ERASED = "(removed by an erasure)"
# The byte check of the file looks for values this long at least: shorter ones occur in any file by chance.
TRACE_MIN_CHARS = 4
# Where a customer id may sit on the edge (customer ids by column), for an erasure that names a hash.
_CUSTOMER_COLUMNS = (("profiles", "customer_id"), ("identities", "customer_id"), ("presence", "customer"),
                     ("events", "customer"), ("decisions", "customer"), ("pickups", "customer_id"),
                     ("qr_handoffs", "customer"), ("staff_audit", "customer_id"), ("staff_feed", "customer_id"))


@dataclass(frozen=True, slots=True)
class Erased:
    """What erase_rows removed: each customer's identity keys (what memory may hold them under), and the
    values whose bytes must not stay in the file (ids, identity keys and their ids, first names)."""

    keys: dict[str, list[str]]
    values: tuple[str, ...]


class Forgets(Protocol):
    """A part that keeps something of shoppers in memory, and drops it on erasure."""

    def forget(self, customer: str, keys: Sequence[str]) -> None:
        """Drop what is kept under the customer id and under their identity keys (phones, kiosk sessions)."""


class Privacy:
    """Erasure across tables, memory and disk; consent changes on the displays. Writer thread only."""

    def __init__(self, cfg: Config, writer: Writer, forgets: Sequence[Forgets], *, shoppers: CustomerContext,
                 displays: Displays) -> None:
        self.cfg = cfg
        self.writer = writer
        self.forgets = tuple(forgets)
        self.shoppers = shoppers
        self.displays = displays

    def erase(self, customer: str, now: float) -> None:
        """Erase a shopper asked here, and ask the central store to erase them everywhere (an outbox event,
        by hash, pushed in seq order after what was recorded before). Until the central store confirms, the
        pending tombstone keeps the edge from learning them again."""
        conn = self.writer.conn
        self.erase_customers(conn, [(customer, cached_version(conn, customer))], now, pending=True)
        self.writer.insert_event(Event(event_id=f"erasure:{secrets.token_hex(12)}", kind=p.ERASURE_KIND,
                                       source="edge", ts=now, received_at=now,
                                       data={"customer_hash": p.erase_key(customer)}))

    def erase_by_key(self, conn: sqlite3.Connection, erases: Sequence[tuple[str, int]], now: float, *,
                     force: bool = False) -> int:
        """Erasures the central store fed (change feed, by erase key): those newer than the tombstone held
        (any, with `force`: a full resync; always one confirming a pending tombstone) erase whoever this
        device holds under the key, and keep (or confirm) the tombstone. Returns how many were taken."""
        held = _tombstones(conn, [key for key, _ in erases])
        take: list[tuple[str, int]] = []
        for key, v in erases:
            erased_v, pending = held.get(key, (-1, False))
            if force or pending or v > erased_v:
                take.append((key, v))
        if not take:
            return 0
        found = customers_by_key(conn, {key for key, _ in take})
        targets = [(cid, v) for key, v in take for cid in found.get(key, [])]
        # A profile fetched since the erasure was fed (re-created, a newer version) stays.
        newer = cached_versions(conn, [cid for cid, _ in targets])
        self.erase_customers(conn, [(cid, v) for cid, v in targets if newer.get(cid, -1) < v], now)
        _tombstone(conn, take, now, pending=False)
        return len(take)

    def erase_customers(self, conn: sqlite3.Connection, erases: list[tuple[str, int]], now: float, *,
                        pending: bool = False) -> None:
        """Remove customers from every table, every in-memory trace and (after the commit) the WAL; remember
        each erasure as a tombstone (hash only), `pending` when asked here until the central store confirms."""
        if not erases:
            return
        erased = erase_rows(conn, [cid for cid, _ in erases])
        _tombstone(conn, ((p.erase_key(cid), v) for cid, v in erases), now, pending=pending)
        # The rows' old page images are still in the WAL, and b-tree rebalancing may have left copies of their
        # bytes in the file: after the commit, the WAL goes and the file is checked for these values.
        self.writer.want_wipe(erased.values)
        for cid, _ in erases:
            for part in self.forgets:
                part.forget(cid, erased.keys.get(cid, ()))

    def profiles_changed(self, conn: sqlite3.Connection, customers: list[str]) -> None:
        """Profile upserts from the central store: re-read them; a revoked consent clears the displays now."""
        self.shoppers.invalidate(customers)
        for customer in customers:
            if self.shoppers.personal(customer) is None:
                self.displays.forget(customer)


def erase_rows(conn: sqlite3.Connection, ids: list[str]) -> Erased:
    """Remove customers from every edge table: profile, identity keys, presence link, event content
    (pseudonymized: customer, subject and data cleared, also where the data quotes the id), decisions, who
    collected a pickup or took a handoff, dead letters and sync rejects quoting them. Returns their identity
    keys and the values the file must then be checked for."""
    by_customer: dict[str, list[str]] = {}
    names: list[str] = []
    for chunk in chunks(ids):
        for key, cid in conn.execute(f"SELECT key, customer_id FROM identities WHERE customer_id IN ({marks(chunk)})",
                                     chunk):
            by_customer.setdefault(cid, []).append(key)
        names += [r[0] for r in conn.execute(f"SELECT first_name FROM profiles WHERE customer_id IN ({marks(chunk)}) "
                                             "AND first_name IS NOT NULL", chunk)]
    keys = [k for ks in by_customer.values() for k in ks]
    # What a device may have quoted in free text: the id, an identity key (and its value: a phone's id as
    # the gateway reported it), the first name. Short ones would match unrelated text.
    quoted = list(dict.fromkeys([*ids, *keys, *(k.partition(":")[2] for k in keys)]))
    distinctive = [q for q in quoted if len(q) >= 6]
    for chunk in chunks(ids):
        ins = marks(chunk)
        conn.execute(f"DELETE FROM profiles WHERE customer_id IN ({ins})", chunk)
        conn.execute(f"DELETE FROM identities WHERE customer_id IN ({ins})", chunk)
        conn.execute(f"UPDATE presence SET customer = NULL WHERE customer IN ({ins})", chunk)
        conn.execute(f"UPDATE events SET customer = NULL, subject = NULL, data = NULL WHERE customer IN ({ins})",
                     chunk)
        conn.execute(f"UPDATE decisions SET customer = NULL, extra = NULL, payload = NULL "
                     f"WHERE customer IN ({ins})", chunk)
        # The store keeps that an order was collected (and a handoff made), never by whom.
        conn.execute(f"UPDATE pickups SET customer_id = NULL WHERE customer_id IN ({ins})", chunk)
        conn.execute(f"UPDATE qr_handoffs SET customer = NULL WHERE customer IN ({ins})", chunk)
        # Staff views stay audited, of a hash (edge/staff/audit.py); the associates' feed forgets them.
        for cid in chunk:
            conn.execute("UPDATE staff_audit SET customer_id = ? WHERE customer_id = ?", (p.erase_key(cid), cid))
        conn.execute(f"DELETE FROM staff_feed WHERE customer_id IN ({ins})", chunk)
    # Anonymous history of the shopper's devices and sessions, and data quoting the id: one pass over the log.
    for key_chunk, text_chunk in _pairs(keys, distinctive):
        where = f"subject IN ({marks(key_chunk) or 'NULL'})"
        if text_chunk:
            where += f" OR (data IS NOT NULL AND {_instr_any('data', len(text_chunk))})"
        conn.execute(f"UPDATE events SET subject = NULL, data = NULL WHERE {where}", [*key_chunk, *text_chunk])
    for chunk in chunks([q for q in [*quoted, *names] if len(q) >= 3], 200):
        n = len(chunk)
        conn.execute(f"UPDATE deadletters SET payload_excerpt = '', detail = ? "
                     f"WHERE {_instr_any('payload_excerpt', n)} OR {_instr_any('detail', n)}",
                     [_EXCERPT_ERASED, *chunk, *chunk])
        conn.execute(f"UPDATE sync_rejects SET detail = NULL WHERE {_instr_any('detail', n)}", chunk)
    values = dict.fromkeys(v for v in [*distinctive, *ids, *names] if len(v) >= TRACE_MIN_CHARS)
    return Erased(by_customer, tuple(values))


def export_customer(conn: sqlite3.Connection, customer_id: str) -> dict[str, Any] | None:
    """Everything this device holds about a shopper, read in one snapshot (the tables an erasure clears:
    the cached profile, identity keys, events naming them or one of their keys, decisions taken for them,
    presence, pickups and kiosk handoffs, staff views of their data (edge/staff/audit.py); and whether an
    erasure of them is on record, by hash). None when
    it holds nothing."""
    conn.execute("BEGIN")
    try:
        profiles = _rows(conn, "SELECT profile, version, updated_at, last_seen FROM profiles WHERE customer_id = ?",
                         [customer_id], ("profile",))
        identities = _rows(conn, "SELECT key, via, learned_at FROM identities WHERE customer_id = ? ORDER BY key",
                           [customer_id])
        keys = [i["key"] for i in identities]
        by_key = f" OR subject IN ({marks(keys)})" if keys else ""
        events = _rows(conn, f"SELECT * FROM events WHERE customer = ?{by_key} ORDER BY seq", [customer_id, *keys],
                       ("data",))
        decisions = _rows(conn, "SELECT * FROM decisions WHERE customer = ? ORDER BY id", [customer_id],
                          ("payload", "extra"))
        presence = _rows(conn, f"SELECT * FROM presence WHERE customer = ?{by_key}", [customer_id, *keys], ("state",))
        pickups = _rows(conn, "SELECT * FROM pickups WHERE customer_id = ?", [customer_id])
        handoffs = _rows(conn, "SELECT * FROM qr_handoffs WHERE customer = ?", [customer_id])
        erased = _rows(conn, "SELECT version, erased_at, pending FROM sync_tombstones WHERE customer_id = ?",
                       [p.erase_key(customer_id)])
        staff_views = _rows(conn, "SELECT staff_id, action, at FROM staff_audit WHERE customer_id IN (?, ?) "
                            "ORDER BY id", [customer_id, p.erase_key(customer_id)])
    finally:
        conn.execute("COMMIT")
    if not any((profiles, identities, events, decisions, presence, pickups, handoffs, erased, staff_views)):
        return None
    return {"customer_id": customer_id, "exported_at": time.time(), "profile": profiles[0] if profiles else None,
            "identities": identities, "events": events, "decisions": decisions, "presence": presence,
            "pickups": pickups, "handoffs": handoffs, "erasure": erased[0] if erased else None,
            "staff_views": staff_views}


def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any],
          json_columns: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Rows as dicts, the JSON columns decoded (left as text when they are not JSON)."""
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        item = dict(zip(names, row))
        for col in json_columns:
            if isinstance(item.get(col), str):
                try:
                    item[col] = json.loads(item[col])
                except ValueError:
                    pass
        out.append(item)
    return out


def customers_by_key(conn: sqlite3.Connection, keys: set[str]) -> dict[str, list[str]]:
    """erase key → the customer ids this device holds anything about under that key (the partial indexes
    on events and decisions keep this to the customers' rows, not the whole log)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    union = " UNION ".join(f"SELECT {col} FROM {table} WHERE {col} IS NOT NULL"
                           for table, col in _CUSTOMER_COLUMNS if table in tables)
    found: dict[str, list[str]] = {}
    for (cid,) in conn.execute(union):
        key = p.erase_key(cid)
        if key in keys:
            found.setdefault(key, []).append(cid)
    return found


# --- tombstones: erasures by erase key (sync.protocol.erase_key), never by id ---------------------------------


def _tombstone(conn: sqlite3.Connection, rows: Iterable[tuple[str, int]], now: float, *, pending: bool) -> None:
    """(erase key, version) tombstones; a confirmed one (pending False) clears the pending mark."""
    conn.executemany("INSERT INTO sync_tombstones(customer_id, version, erased_at, pending) VALUES (?,?,?,?) "
                     "ON CONFLICT(customer_id) DO UPDATE SET version=max(version, excluded.version), "
                     "erased_at=excluded.erased_at, pending=excluded.pending",
                     ((key, v, now, 1 if pending else 0) for key, v in rows))


def _tombstones(conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, tuple[int, bool]]:
    """erase key → (version, pending) for the keys that have a tombstone."""
    out: dict[str, tuple[int, bool]] = {}
    for chunk in chunks(keys):
        out.update((k, (v, bool(pending))) for k, v, pending in conn.execute(
            f"SELECT customer_id, version, pending FROM sync_tombstones WHERE customer_id IN ({marks(chunk)})",
            chunk))
    return out


def still_erased(conn: sqlite3.Connection, versions: Mapping[str, int], *, force: bool = False) -> set[str]:
    """Of these customers (id → the version about to be learned; -1 for none), those the edge must not
    learn: erased here and not yet confirmed by the central store (whatever the version, even with
    `force`), or erased at that version or a later one (a stale copy of an erased profile)."""
    by_key = {p.erase_key(c): c for c in versions}
    out: set[str] = set()
    for key, (erased_v, pending) in _tombstones(conn, list(by_key)).items():
        customer = by_key[key]
        if pending or (not force and versions[customer] <= erased_v):
            out.add(customer)
    return out


def pending_count(conn: sqlite3.Connection) -> int:
    """Erasures asked here that the central store has not confirmed yet."""
    return conn.execute("SELECT count(*) FROM sync_tombstones WHERE pending = 1").fetchone()[0]


def forget_confirmed_tombstones(conn: sqlite3.Connection) -> None:
    """The change feed restarted (another central database): its erasures will come again; erasures asked
    here and not yet confirmed stay."""
    conn.execute("DELETE FROM sync_tombstones WHERE pending = 0")


def expire_tombstones(conn: sqlite3.Connection, now: float, profile_ttl_s: float) -> None:
    """Confirmed tombstones go once no stale copy can come back: older than the profile cache's TTL and
    TOMBSTONE_MIN_S. Erasures asked here stay until the central store confirms them (it always does, by
    feeding them back)."""
    conn.execute("DELETE FROM sync_tombstones WHERE erased_at < ? AND pending = 0",
                 (now - max(profile_ttl_s, TOMBSTONE_MIN_S),))


def _instr_any(column: str, n: int) -> str:
    return "(" + " OR ".join([f"instr({column}, ?) > 0"] * n) + ")"


def _pairs(keys: list[str], texts: list[str]) -> Iterable[tuple[Sequence[str], Sequence[str]]]:
    """Chunks of both lists side by side (at least one pair when either has items)."""
    key_chunks, text_chunks = list(chunks(keys, 400)), list(chunks(texts, 100))
    for i in range(max(len(key_chunks), len(text_chunks))):
        yield (key_chunks[i] if i < len(key_chunks) else []), (text_chunks[i] if i < len(text_chunks) else [])
