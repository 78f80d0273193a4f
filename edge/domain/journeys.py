"""QR journeys, without the web: what a scanned code does (a touchpoint, a pickup collected, a return handed
in), kiosk handoffs to the phone, the kiosk session's bag, and what a touchpoint shows.

Phones (edge/web/landing.py) and in-store scanners (P/qr/{scanner}, through `on_event` in the writer
thread) reach the same validation (edge.qr.Signer.verify). Single-use kinds are consumed in the writer
transaction (INSERT OR IGNORE on a primary key), so two scanners reading the same pickup code at once
collect it once. Scanned QR events are annotated in place (type, zone, customer, data) and so sync to the
central store like every event. Who collected an order is personal: edge.privacy clears it on erasure.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from edge.config import Config
from edge.domain.catalogue import Catalogue
from edge.i18n import localized
from edge.metrics import Metrics
from edge.model import Event, Publication
from edge.qr import HANDOFF_TTL_S, QrError, Signer, Token, token_from_code
from edge.store.queries import NOT_SIGHTING
from edge.store.writer import Writer

REFUSED_METRIC = "instore_edge_qr_refused_total"
RunInWriter = Callable[[Callable[[Writer], Any]], Any]  # runs a write in the writer's transaction, returns its value


class Journeys:
    """The scanner hook (writer thread) and the kiosk handoff's single-use tokens, for one store."""

    def __init__(self, cfg: Config, signer: Signer, metrics: Metrics, catalogue: Catalogue | None = None) -> None:
        self.cfg = cfg
        self.catalogue = catalogue or Catalogue(cfg)
        self.signer = signer
        self.metrics = metrics
        self.prefix = cfg.prefix

    def refused(self, reason: str) -> None:
        self.metrics.inc(REFUSED_METRIC, reason=reason)

    def on_event(self, e: Event, writer: Writer) -> list[Publication]:
        """A recorded event: a QR code of ours scanned (by a scanner on P/qr/{scanner}, a phone via /q/<token>)
        does what it says; what staff must hear of is returned, to publish after the commit."""
        if e.kind != "qr":
            return []
        token_text = token_from_code(str(e.data.get("code") or ""))
        if token_text is None:
            return []  # not one of our codes (a loyalty card...): identity handles it
        try:
            tok = self.signer.verify(token_text, now=e.received_at)
            if tok.kind == "touchpoint":
                t = describe_target(self.cfg, tok.target, catalogue=self.catalogue)
                _annotate(writer, e, "touchpoint", {"touchpoint": tok.target}, zone=t["zone"])
                return []
            if tok.kind == "pickup":
                return _collect(writer, e, tok, self.prefix)
            if tok.kind == "return":
                return _complete_return(writer, e, tok, self.prefix)
            raise QrError("wrong_kind")
        except QrError as exc:
            self.refused(exc.reason)
            _annotate(writer, e, "refused", {"reason": exc.reason})
            return []

    def mint_handoff(self, kiosk: str, session: str, customer: str | None, run: RunInWriter) -> str:
        """A single-use, short-lived handoff token; the kiosk session (and the shopper, if identified) is kept
        server-side keyed by the token id, so nothing personal travels in the QR. Raises QrError without a
        [qr] secret."""
        ttl = min(HANDOFF_TTL_S, self.cfg.qr.ttl_s)
        token = self.signer.mint("handoff", kiosk, ttl)
        tok = self.signer.verify(token)

        def store(writer: Writer) -> bool:
            writer.conn.execute("INSERT INTO qr_handoffs(token_id, kiosk, session, customer, created_at) "
                                "VALUES (?,?,?,?,?)", (tok.token_id, kiosk, session, customer, time.time()))
            return True

        run(store)
        return token

    def consume(self, tok: Token, by: str, run: RunInWriter) -> bool:
        """Use a single-use token once: True the first time, False after."""
        def mark_used(writer: Writer) -> bool:
            cur = writer.conn.execute("INSERT OR IGNORE INTO qr_uses(token_id, kind, used_at, by) VALUES (?,?,?,?)",
                                      (tok.token_id, tok.kind, time.time(), by))
            return cur.rowcount == 1

        return bool(run(mark_used))


# --- lookups ---------------------------------------------------------------------------------------------

def find_order(conn: sqlite3.Connection, order_id: str) -> tuple[str, dict[str, Any]] | None:
    """(customer id, order) for an order in some cached profile's orders_ready."""
    like = f'%"{order_id}"%'
    for customer, raw in conn.execute("SELECT customer_id, profile FROM profiles WHERE profile LIKE ?", (like,)):
        try:
            orders = json.loads(raw).get("orders_ready") or []
        except (ValueError, AttributeError):
            continue
        for o in orders:
            if isinstance(o, dict) and o.get("order_id") == order_id:
                return customer, o
    return None


def order_items(order: dict[str, Any]) -> list[Any]:
    items = order.get("items")
    return items if isinstance(items, list) else []


def describe_target(cfg: Config, target: str, lang: str | None = None, *,
                    catalogue: Catalogue | None = None) -> dict[str, Any]:
    """What a touchpoint shows: a product (sku, from the catalogue), a screen (its first playlist item) or a
    content item, with its texts in `lang` (a page's language; by default the store's), falling back as
    edge.i18n.localized says. A screen or content item that shows a product (`sku`) names it too."""
    default = cfg.store.language
    lang = lang or default
    catalogue = catalogue or Catalogue(cfg)
    p = catalogue.get(target)
    if p is not None:
        return {"type": "product", "id": p.sku, "title": p.name_in(lang, default), "body": "",
                "price": p.price, "currency": p.currency, "zone": p.zone, "sku": p.sku}
    contents = {c.id: c for c in cfg.content}
    for s in cfg.screens:
        if s.id == target:
            c = contents.get(s.playlist[0]) if s.playlist else None
            texts = localized(c.texts(), lang, default) if c else {"title": "", "body": ""}
            return {"type": "screen", "id": s.id, "title": texts["title"] or s.id, "body": texts["body"],
                    "price": None, "currency": None, "zone": s.zone, "sku": c.sku if c else None}
    c = contents.get(target)
    if c is not None:
        zone = next((s.zone for s in cfg.screens if target in s.playlist), None)
        texts = localized(c.texts(), lang, default)
        return {"type": "content", "id": c.id, "title": texts["title"] or c.id, "body": texts["body"], "price": None,
                "currency": None, "zone": zone, "sku": c.sku}
    return {"type": "unknown", "id": target, "title": target, "body": "", "price": None, "currency": None,
            "zone": None, "sku": None}


def session_cart(conn: sqlite3.Connection, kiosk: str, session: str) -> list[str]:
    """The kiosk session's bag, from its events: add_to_cart items, then the handoff's item list."""
    bag: list[str] = []
    for type_, raw in conn.execute(f"SELECT type, data FROM events WHERE kind = 'kiosk' AND {NOT_SIGHTING} "
                                   "AND source = ? AND subject = ? ORDER BY seq", (kiosk, f"session:{session}")):
        data = json.loads(raw) if raw else {}
        items = [data.get("item")] if type_ == "add_to_cart" else data.get("items") if type_ == "handoff" else None
        for it in items or []:
            if isinstance(it, str) and it not in bag:
                bag.append(it)
    return bag


# --- the scanner path (writer thread) ----------------------------------------------------------------------

def _annotate(writer: Writer, e: Event, type_: str, data: dict[str, Any], *, zone: str | None = None,
              customer: str | None = None) -> None:
    e.type = type_
    e.data = {**e.data, **data}
    if zone and not e.zone:
        e.zone = zone
    if customer:
        e.customer = customer
    writer.conn.execute("UPDATE events SET type = ?, data = ?, zone = ?, customer = ? WHERE event_id = ?",
                        (e.type, json.dumps(e.data, separators=(",", ":")), e.zone, e.customer, e.event_id))


def _collect(writer: Writer, e: Event, tok: Token, prefix: str) -> list[Publication]:
    conn = writer.conn
    found = find_order(conn, tok.target)
    if found is None:
        raise QrError("unknown_order")
    customer, order = found
    bay = order.get("pickup_bay")
    now = e.received_at
    cur = conn.execute("INSERT OR IGNORE INTO pickups(order_id, customer_id, state, collected_at, bay, by, token_id) "
                       "VALUES (?,?,?,?,?,?,?)", (tok.target, customer, "collected", now, bay, e.source, tok.token_id))
    if cur.rowcount == 0:
        raise QrError("used")
    conn.execute("INSERT OR IGNORE INTO qr_uses(token_id, kind, used_at, by) VALUES (?,?,?,?)",
                 (tok.token_id, tok.kind, now, e.source))
    collected_ms = int(now * 1000)
    _annotate(writer, e, "pickup", {"order_id": tok.target, "bay": bay, "items": order_items(order),
                                    "collected_at": collected_ms}, customer=customer)
    return [Publication(f"{prefix}/staff/pickup", {"order_id": tok.target, "customer": customer, "bay": bay,
                                                   "items": order_items(order), "scanner": e.source,
                                                   "collected_at": collected_ms})]


def _complete_return(writer: Writer, e: Event, tok: Token, prefix: str) -> list[Publication]:
    conn = writer.conn
    now = e.received_at
    cur = conn.execute("INSERT OR IGNORE INTO returns(rma_id, state, completed_at, by, token_id) VALUES (?,?,?,?,?)",
                       (tok.target, "received", now, e.source, tok.token_id))
    if cur.rowcount == 0:
        raise QrError("used")
    conn.execute("INSERT OR IGNORE INTO qr_uses(token_id, kind, used_at, by) VALUES (?,?,?,?)",
                 (tok.token_id, tok.kind, now, e.source))
    _annotate(writer, e, "return", {"rma_id": tok.target, "completed_at": int(now * 1000)})
    return [Publication(f"{prefix}/staff/return", {"rma_id": tok.target, "scanner": e.source,
                                                   "completed_at": int(now * 1000)})]
