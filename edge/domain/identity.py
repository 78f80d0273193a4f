"""Who a subject is: a customer id from the local cache (or the central store), else an anonymous visitor.

Subject keys (`ibeacon:…`, `eddystone:…`, `device:…`, `irk:…`, `known:…`, `session:…`) resolve through
the local `identities` table. A miss is noted (`take_wanted`): after the commit the pipeline asks the
central store, which answers later through `remember`, never blocking the writer. Without a match the
subject stays anonymous, known only by the visit id presence gives it, which lasts one visit.

When a shopper identifies at a kiosk or by QR during a visit, the anonymous history that visit or that
kiosk session made is linked to the customer: past events get the customer id and an `identity_link`
event tells the central store. Staff and asset beacons are never linked or personalized.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.config import Config
from edge.model import Event

SUBJECT_PREFIXES = ("ibeacon:", "eddystone:", "device:", "irk:", "known:", "name:")


@dataclass(frozen=True, slots=True)
class Link:
    """An anonymous subject that turned out to be a customer."""

    subject: str
    customer: str
    via: str
    visit_id: str | None = None


class Identity:
    """Lives in the pipeline (writer) thread: reads and writes go through its connection."""

    def __init__(self, cfg: Config, conn: sqlite3.Connection) -> None:
        self.cfg = cfg
        self.staff = {b.key for b in cfg.beacons}
        self.known: dict[str, str] = dict(conn.execute("SELECT key, customer_id FROM identities"))
        self.asked: set[str] = set()
        self.wanted: list[str] = []  # misses to ask the central store about, after the commit

    def reload(self, conn: sqlite3.Connection) -> None:
        """Take the identities table again (after a rolled-back transaction), in place."""
        known = dict(conn.execute("SELECT key, customer_id FROM identities"))
        self.known.clear()
        self.known.update(known)

    def is_staff(self, subject: str | None) -> bool:
        return subject is not None and subject in self.staff

    def resolve(self, subject: str | None) -> str | None:
        """The customer behind a subject, from the local cache; a miss is noted for the central store."""
        if subject is None or subject in self.staff:
            return None
        customer = self.known.get(subject)
        if customer is None and subject not in self.asked and subject.startswith(SUBJECT_PREFIXES):
            self.asked.add(subject)
            self.wanted.append(subject)
        return customer

    def take_wanted(self) -> list[str]:
        """The subjects missed since the last call: the pipeline asks the central store about them."""
        wanted, self.wanted = self.wanted, []
        return wanted

    def learn(self, conn: sqlite3.Connection, key: str, customer: str, via: str) -> bool:
        """Remember key → customer (from a profile, a kiosk, the central store); True when it is new."""
        if key in self.staff or self.known.get(key) == customer:
            return False
        conn.execute("INSERT INTO identities(key, customer_id, via, learned_at) VALUES (?, ?, ?, strftime('%s','now')) "
                     "ON CONFLICT(key) DO UPDATE SET customer_id=excluded.customer_id, via=excluded.via, "
                     "learned_at=excluded.learned_at", (key, customer, via))
        self.known[key] = customer
        return True

    def remember(self, key: str, customer: str) -> None:
        """Keep the in-memory map in step with an identities row another writer task wrote."""
        if key not in self.staff:
            self.known[key] = customer

    def forget(self, customer: str, keys: Sequence[str] = ()) -> None:
        """Erasure: the customer's keys leave memory (edge.privacy deletes their rows)."""
        for key in [k for k, v in self.known.items() if v == customer]:
            del self.known[key]

    def on_identify(self, conn: sqlite3.Connection, event: Event,
                    visit_of: Callable[[str], tuple[str | None, float | None]]) -> list[Link]:
        """A kiosk/QR identification: link the identity key, the kiosk session and the phone's visit."""
        customer = event.customer
        identity_key = event.data.get("identity") if event.data else None
        if customer is None and isinstance(identity_key, str):
            customer = self.known.get(identity_key)
            event.customer = customer
        if customer is None:
            return []
        links: list[Link] = []
        subjects: list[tuple[str, str]] = []
        if isinstance(identity_key, str) and not identity_key.startswith("session:"):
            self.learn(conn, identity_key, customer, f"{event.kind}:{event.source}")
            subjects.append((identity_key, "identity"))
        session = event.data.get("session") if event.data else None
        if isinstance(session, str) and session:
            # Later events of this kiosk session (browse, add to cart, handoff) belong to the customer too.
            self.learn(conn, f"session:{session}", customer, f"{event.kind}:{event.source}")
            subjects.append((f"session:{session}", "session"))
        for subject, via in subjects:
            if subject in self.staff:
                continue
            visit_id, since = visit_of(subject)
            params: list[object] = [customer, subject]
            sql = "UPDATE events SET customer = ? WHERE subject = ? AND customer IS NULL"
            if since is not None:
                sql += " AND received_at >= ?"
                params.append(since)
            cur = conn.execute(sql, params)
            if cur.rowcount or via == "identity":
                links.append(Link(subject, customer, via, visit_id))
        return links
