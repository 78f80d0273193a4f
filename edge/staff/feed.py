"""The associates' live feed: what in the store needs a person, derived from the event log as it grows.

A follower thread reads the events committed since its cursor (kv `staff_feed_cursor`) and turns some of them
into feed items, written with the cursor in one writer task (so a restart neither loses nor repeats one):

- `pickup-arrival`: a shopper whose profile has an order ready for this store (`orders_ready`, with no
  `store` or this one) and not yet collected is sighted (visit_start / zone_enter of one of their identities);
- `assist-request`: an `assist` event (the kiosk's "call an associate" button, a QR landing page);
- `return-expected`: a sighted shopper whose profile has an order with a return requested
  (`orders[].state` = "return_requested", or `returns_expected: [{"order_id", ...}]`);
- `known-arrival`: a shopper who chose to be recognised (personalization consent) entered.

Each item changes `rev` when made, claimed or done: rev is the SSE event id, so a phone that lost Wi-Fi
resumes from the last rev it saw (Last-Event-ID) and gets each change once. Items are deduplicated per order,
kiosk session or visit. Without consent an item carries only what the service needs (the order, the bay).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge import faults
from edge.config import Config
from edge.domain.catalogue import Catalogue
from edge.domain.shoppers import Shopper, consented
from edge.store.db import connect
from edge.store.profiles import cached_profile, json_object
from edge.store.writer import Writer

log = logging.getLogger(__name__)

KINDS = ("pickup-arrival", "assist-request", "return-expected", "known-arrival")
CURSOR_KEY = "staff_feed_cursor"
POLL_S = 0.2
BATCH = 2000
ARRIVALS = ("visit_start", "zone_enter")
RETURN_STATES = ("return_requested", "return_expected")
DEDUPE_S = {"pickup-arrival": 12 * 3600.0, "return-expected": 12 * 3600.0, "known-arrival": 4 * 3600.0,
            "assist-request": 120.0}
PROFILE_WAIT_S = 10.0  # a sighted customer whose profile is being fetched is looked at again this long
OPEN_S = 12 * 3600.0  # what a phone gets when it connects without a Last-Event-ID: items this recent
RunInWriter = Callable[[Callable[[Writer], Any], float], Any]


@dataclass(slots=True)
class Candidate:
    """A feed item to make unless one with the same `dedupe` is still open and recent."""

    kind: str
    dedupe: str
    customer: str | None
    data: dict[str, Any]


@dataclass(slots=True)
class _Waiting:
    row: dict[str, Any]
    since: float


@dataclass
class Feed:
    """The follower thread and what streams wait on; claims and dones go through here too."""

    cfg: Config
    run: RunInWriter
    changed: threading.Condition = field(default_factory=threading.Condition)
    thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _waiting: dict[str, _Waiting] = field(default_factory=dict)

    catalogue: Catalogue | None = None  # the edge's one catalogue (edge.app passes it)

    def __post_init__(self) -> None:
        self.catalogue = self.catalogue or Catalogue(self.cfg)
        self.zones = {z.id: z.name or z.id for z in self.cfg.zones}

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="staff-feed", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.notify()
        if self.thread is not None:
            self.thread.join(5)

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def wait(self, timeout: float) -> None:
        with self.changed:
            self.changed.wait(timeout)

    # --- the follower thread ---
    def _run(self) -> None:
        faults.thread_start("staff-feed")
        conn = connect(self.cfg.db.path)
        try:
            cursor = self._cursor(conn)
            while not self._stop.wait(POLL_S):
                try:
                    cursor = self.step(conn, cursor)
                except (TimeoutError, RuntimeError, sqlite3.Error) as exc:
                    log.warning("staff feed: cannot follow the event log now (%s); retrying", exc)
                    time.sleep(1.0)
                except Exception:  # a bug on one event must not stop the feed: skip past that batch
                    log.exception("staff feed: deriving items failed; skipping events %d..", cursor + 1)
                    cursor = int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
        finally:
            conn.close()

    def _cursor(self, conn: sqlite3.Connection) -> int:
        row = conn.execute("SELECT value FROM kv WHERE key = ?", (CURSOR_KEY,)).fetchone()
        if row is not None:
            return int(row[0])
        last = int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
        return last  # a new feed starts now: history is not replayed onto phones

    def step(self, conn: sqlite3.Connection, cursor: int) -> int:
        """Derive items from the events after `cursor`; write them and the new cursor; returns it."""
        top = int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
        now = time.time()
        rows: list[dict[str, Any]] = []
        if top > cursor:
            top = min(top, cursor + BATCH)
            # Arrivals of anonymous shoppers (nearly all of them) make no item: left in SQLite, not made into dicts.
            cur = conn.execute("SELECT seq, kind, type, source, zone, subject, customer, data, received_at FROM events "
                               "WHERE seq > ? AND seq <= ? AND ((kind IN ('visit_start', 'zone_enter') AND customer "
                               "<> '') OR type = 'assist') ORDER BY seq", (cursor, top))
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r)) for r in cur]
        candidates: list[Candidate] = []
        for key, waiting in list(self._waiting.items()):
            if now - waiting.since > PROFILE_WAIT_S:
                del self._waiting[key]
            elif cached_profile(conn, waiting.row["customer"]) is not None:
                del self._waiting[key]
                candidates += self.derive(conn, waiting.row)
        for row in rows:
            candidates += self.derive(conn, row)
        if top <= cursor and not candidates:
            return cursor
        new_cursor = max(top, cursor)

        def write(w: Writer) -> int:
            made = sum(insert(w.conn, c, now) for c in candidates)
            w.conn.execute("INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                           "value = excluded.value", (CURSOR_KEY, str(new_cursor)))
            return made

        if self.run(write, 10.0):
            self.notify()
        return new_cursor

    def derive(self, conn: sqlite3.Connection, row: dict[str, Any]) -> list[Candidate]:
        """The feed items one event makes (none for most)."""
        data = json_object(row.get("data"))
        if row["type"] == "assist":
            zone = row.get("zone") or data.get("zone")
            where = row["source"]
            return [Candidate("assist-request", f"assist:{where}:{data.get('session') or row.get('subject') or ''}",
                              row.get("customer"),
                              {"source": where, "zone": zone, "zone_name": self.zones.get(zone or "", zone),
                               "session": data.get("session")})]
        customer = row.get("customer")
        if not customer or data.get("staff") or data.get("asset"):
            return []
        raw = cached_profile(conn, customer)
        if raw is None:
            self._waiting.setdefault(customer, _Waiting(row, time.time()))
            return []
        shopper = Shopper.from_profile(customer, raw)
        personal = consented(shopper, self.cfg.privacy.require_consent)
        name = shopper.first_name if personal else None
        zone = row.get("zone")
        base = {"zone": zone, "zone_name": self.zones.get(zone or "", zone), "name": name}
        out: list[Candidate] = []
        collected = _collected(conn, [str(o.get("order_id")) for o in shopper.orders_ready])
        for order in shopper.orders_ready:
            order_id = str(order.get("order_id") or "")
            store = order.get("store")
            if not order_id or order_id in collected or (store and store != self.cfg.store.id):
                continue
            items = [self.catalogue.product(str(s))["name"] for s in order.get("items") or [] if isinstance(s, str)]
            out.append(Candidate("pickup-arrival", f"pickup:{order_id}", customer,
                                 {**base, "order_id": order_id, "bay": order.get("pickup_bay") or order.get("bay"),
                                  "items": items}))
        for order in _returns_expected(raw):
            out.append(Candidate("return-expected", f"return:{order['order_id']}", customer,
                                 {**base, "order_id": order["order_id"], "items": order.get("items") or []}))
        if personal and not out:
            visit = data.get("visit_id") or row.get("subject") or ""
            out.append(Candidate("known-arrival", f"known:{customer}:{visit}", customer,
                                 {**base, "tier": shopper.tier}))
        return out

    # --- what associates do with items ---
    def claim(self, item_id: int, staff_id: str) -> tuple[bool, str | None]:
        """(True, None) when this associate now has the item; (False, who) when someone else has it."""
        def write(w: Writer) -> tuple[bool, str | None]:
            row = w.conn.execute("SELECT claimed_by FROM staff_feed WHERE id = ?", (item_id,)).fetchone()
            if row is None:
                raise LookupError(item_id)
            if row[0] is not None:
                return row[0] == staff_id, row[0]
            w.conn.execute("UPDATE staff_feed SET claimed_by = ?, claimed_at = ?, rev = ? WHERE id = ?",
                           (staff_id, time.time(), _next_rev(w.conn), item_id))
            return True, None

        result = self.run(write, 10.0)
        self.notify()
        return result

    def done(self, item_id: int, staff_id: str) -> bool:
        def write(w: Writer) -> bool:
            cur = w.conn.execute("UPDATE staff_feed SET done_at = ?, rev = ?, claimed_by = coalesce(claimed_by, ?) "
                                 "WHERE id = ? AND done_at IS NULL", (time.time(), _next_rev(w.conn), staff_id, item_id))
            return cur.rowcount == 1

        result = self.run(write, 10.0)
        self.notify()
        return bool(result)


def insert(conn: sqlite3.Connection, c: Candidate, now: float) -> int:
    """Make the item unless an open one with the same dedupe key is recent: 1 when made."""
    if conn.execute("SELECT 1 FROM staff_feed WHERE dedupe = ? AND created_at > ? AND done_at IS NULL",
                    (c.dedupe, now - DEDUPE_S[c.kind])).fetchone():
        return 0
    conn.execute("INSERT INTO staff_feed(rev, kind, customer_id, dedupe, data, created_at) VALUES (?,?,?,?,?,?)",
                 (_next_rev(conn), c.kind, c.customer, c.dedupe, json.dumps(c.data, separators=(",", ":")), now))
    return 1


def _next_rev(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(rev), 0) + 1 FROM staff_feed").fetchone()[0])


def changes(conn: sqlite3.Connection, since: int | None, now: float, limit: int = 200) -> list[dict[str, Any]]:
    """Items changed after rev `since` (None: the items of the last OPEN_S), oldest change first."""
    if since is None:
        sql, params = ("SELECT * FROM staff_feed WHERE created_at > ? ORDER BY rev LIMIT ?", (now - OPEN_S, limit))
    else:
        sql, params = "SELECT * FROM staff_feed WHERE rev > ? ORDER BY rev LIMIT ?", (since, limit)
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    out = []
    for r in cur:
        row = dict(zip(names, r))
        out.append({"id": row["id"], "rev": row["rev"], "kind": row["kind"], "customer": row["customer_id"],
                    "data": json_object(row["data"]), "created_at": row["created_at"], "claimed_by": row["claimed_by"],
                    "done": row["done_at"] is not None})
    return out




def _collected(conn: sqlite3.Connection, order_ids: list[str]) -> set[str]:
    if not order_ids:
        return set()
    marks = ",".join("?" * len(order_ids))
    return {r[0] for r in conn.execute(f"SELECT order_id FROM pickups WHERE order_id IN ({marks})", order_ids)}


def _returns_expected(profile: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for o in profile.get("returns_expected") or []:
        if isinstance(o, dict) and isinstance(o.get("order_id"), str):
            out.append(o)
    for o in profile.get("orders") or []:
        if isinstance(o, dict) and o.get("state") in RETURN_STATES and isinstance(o.get("order_id"), str):
            out.append(o)
    return out[:8]
