"""What an associate does at the counter and on the floor, over the edge's writer: log in, read a shopper's
story, hand over a pickup, take a return, ring up a sale or an endless-aisle order.

Every write goes through the pipeline's writer (one write connection). Pickups take the scanner path
(edge.domain.journeys): a qr event from source `staff-<id>`, so the fixed scanner and any number of phones
collect an order exactly once (the writer decides, INSERT OR IGNORE on the order). Sales, orders and returns
are events in the outbox (kind `pos`; kind `shopper`, types `order_request` and `return`), idempotent by an id
the phone made: a sale queued offline and sent twice is recorded once, and reaches the central store once.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.config import Config
from edge.domain.catalogue import Catalogue
from edge.domain.shoppers import Shopper, consented, resolve_customer
from edge.model import Event, Message
from edge.qr import QrError, Signer, token_from_code
from edge.staff import accounts, audit
from edge.store.db import connect
from edge.store.profiles import cached_profile, json_object
from edge.store.writer import Writer

CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")
PAYMENT_METHODS = ("card", "cash", "voucher", "other")
PROFILE_FETCH_WAIT_S = 3.0
MAX_LINES = 100


class DeskError(Exception):
    """A request the desk cannot do; `code` for the JSON error, the message says what to fix."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class PickupResult:
    """The outcome of a scanned or typed pickup code: collected | already-collected | refused."""

    status: str
    reason: str
    order_id: str | None = None
    bay: str | None = None
    items: tuple[str, ...] = ()


def ean13_ok(code: str) -> bool:
    """An EAN-13 with a right check digit."""
    if not re.fullmatch(r"[0-9]{13}", code):
        return False
    digits = [int(c) for c in code]
    return (10 - sum(d * (3 if i % 2 else 1) for i, d in enumerate(digits[:12])) % 10) % 10 == digits[12]


class Desk:
    """The staff actions; built once by edge.app and handed to the staff pages."""

    def __init__(self, cfg: Config, signer: Signer, run: Callable[[Callable[[Writer], Any], float], Any],
                 submit: Callable[[Message], None], fetch: Callable[[list[str]], None] | None,
                 wake: Callable[[], None] | None = None, catalogue: Catalogue | None = None) -> None:
        self.cfg = cfg
        self.signer = signer
        self.run = run
        self.submit = submit
        self.fetch = fetch
        self.wake = wake or (lambda: None)
        self.catalogue = catalogue or Catalogue(cfg)  # the edge's one catalogue: TOML and central products
        self._local = threading.local()
        self.session_key: bytes = b""

    def db(self) -> sqlite3.Connection:
        """This thread's read connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.cfg.db.path)
        return conn

    def start(self) -> None:
        from edge.staff.sessions import ensure_key

        self.session_key = self.run(lambda w: ensure_key(w.conn), 10.0)

    # --- accounts ---
    def login(self, staff_id: str, pin: str) -> accounts.Login:
        now = time.time()
        return self.run(lambda w: accounts.login(w.conn, staff_id, pin, now), 10.0)

    def account(self, staff_id: str) -> accounts.Account | None:
        return accounts.get(self.db(), staff_id)

    def logout(self, staff_id: str) -> None:
        self.run(lambda w: accounts.end_sessions(w.conn, staff_id), 10.0)

    def audit(self, staff_id: str, customer: str, action: str) -> None:
        now = time.time()
        self.run(lambda w: audit.record(w.conn, staff_id, customer, action, now), 10.0)

    # --- the customer story ---
    def story(self, staff_id: str, code: str, *, wait: bool = True) -> dict[str, Any] | None:
        """What an associate may see of a shopper (a customer id, loyalty card or identity key): with consent
        the whole story from the edge's cache (fetched from the central store when missing), without it only
        the orders to collect here. The view is audited before it is returned. None: nobody known by that."""
        conn = self.db()
        customer = resolve_customer(conn, code.strip()[:128]) or code.strip()[:128]
        raw = cached_profile(conn, customer)
        if raw is None and self.fetch is not None and wait:
            self.fetch([customer])
            deadline = time.monotonic() + PROFILE_FETCH_WAIT_S
            while raw is None and time.monotonic() < deadline:
                time.sleep(0.1)
                raw = cached_profile(conn, customer)
        if raw is None:
            return None
        shopper = Shopper.from_profile(customer, raw)
        personal = consented(shopper, self.cfg.privacy.require_consent)
        self.audit(staff_id, customer, "story")
        orders_here = [self._order(o) for o in shopper.orders_ready
                       if not o.get("store") or o.get("store") == self.cfg.store.id]
        ids = [o["order_id"] for o in orders_here]
        collected = {r[0] for r in conn.execute(
            f"SELECT order_id FROM pickups WHERE order_id IN ({','.join('?' * len(ids))})", ids)} if ids else set()
        for o in orders_here:
            o["state"] = "collected" if o["order_id"] in collected else "ready"
        story: dict[str, Any] = {"customer": customer, "consent": personal, "orders_ready": orders_here}
        if not personal:
            return story
        product = self.catalogue.product
        orders = [o for o in raw.get("orders") or [] if isinstance(o, dict)][:20]
        story.update({
            "first_name": shopper.first_name, "tier": shopper.tier, "segments": list(shopper.segments),
            "wishlist": [product(s) for s in shopper.wishlist], "cart": [product(s) for s in shopper.cart],
            "orders": [{"order_id": str(o.get("order_id") or ""), "state": str(o.get("state") or ""),
                        "items": [_item_name(self.catalogue, i) for i in o.get("items") or []][:20],
                        "returns": o.get("returns") if isinstance(o.get("returns"), list) else []} for o in orders],
            "preferences": shopper.preferences,
            **self._visit(conn, customer),
        })
        return story

    def _order(self, o: dict[str, Any]) -> dict[str, Any]:
        return {"order_id": str(o.get("order_id") or ""), "bay": str(o.get("pickup_bay") or o.get("bay") or ""),
                "items": [_item_name(self.catalogue, i) for i in o.get("items") or []][:20]}

    def _visit(self, conn: sqlite3.Connection, customer: str) -> dict[str, Any]:
        """This visit's zones, kiosk session and QR scans, from today's events of the shopper and their keys."""
        keys = [r[0] for r in conn.execute("SELECT key FROM identities WHERE customer_id = ?", (customer,))]
        since = time.time() - 12 * 3600
        marks = ",".join("?" * len(keys))
        where = f"customer = ? OR subject IN ({marks})" if keys else "customer = ?"
        rows = conn.execute(f"SELECT kind, type, zone, source, data, received_at FROM events WHERE ({where}) "
                            "AND received_at > ? ORDER BY seq DESC LIMIT 300", [customer, *keys, since]).fetchall()
        zones, kiosk, scans = [], [], []
        names = {z.id: z.name or z.id for z in self.cfg.zones}
        for kind, type_, zone, source, data, at in reversed(rows):
            d = json_object(data)
            if kind in ("zone_enter", "visit_start") and zone and names.get(zone, zone) not in zones:
                zones.append(names.get(zone, zone))
            elif kind == "kiosk":
                kiosk.append({"kiosk": source, "type": type_, "item": _item_name(self.catalogue, d.get("item"))
                              if d.get("item") else None, "at": at})
            elif kind == "qr" and type_ in ("touchpoint", "pickup", "return"):
                scans.append({"type": type_, "what": d.get("touchpoint") or d.get("order_id") or d.get("rma_id"),
                              "at": at})
        return {"zones": zones, "kiosk": kiosk[-10:], "scans": scans[-10:]}

    # --- pickup handover ---
    def pickup(self, staff_id: str, code: str) -> PickupResult:
        """A scanned pickup QR (its URL or token) or a typed order id, through the scanner path."""
        code = code.strip()[:512]
        if not code:
            raise DeskError("bad_request", "scan the shopper's pickup code or type the order number")
        token = token_from_code(code)
        if token is None:
            try:  # a token typed (or scanned) without its URL
                self.signer.verify(code)
                token = code
                code = self.signer.url(code)
            except QrError:
                pass
        if token is None:
            if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", code):
                return PickupResult("refused", "malformed")
            try:  # a typed order number: the same one-time path as its code
                token = self.signer.mint("pickup", code, 600)
            except QrError as exc:
                return PickupResult("refused", exc.reason)
            code = self.signer.url(token)
        msg_id = "s" + secrets.token_hex(8)
        source = f"staff-{staff_id}"[:64]
        payload = json.dumps({"id": msg_id, "ts": int(time.time() * 1000), "code": code}).encode()
        done = threading.Event()
        self.submit(Message(f"{self.cfg.prefix}/qr/{source}", payload, 1, 0, time.time(), done=done.set))
        if not done.wait(10):
            raise DeskError("not_committed", "the store system is busy: try again in a moment", 503)
        row = self.db().execute("SELECT type, data, customer FROM events WHERE event_id = ?",
                                (f"qr:{source}:{msg_id}",)).fetchone()
        if row is None:
            return PickupResult("refused", "malformed")
        type_, data, customer = row[0], json_object(row[1]), row[2]
        if type_ == "pickup":
            if customer:
                self.audit(staff_id, customer, "pickup")
            items = tuple(_item_name(self.catalogue, i) for i in data.get("items") or [])
            return PickupResult("collected", "", data.get("order_id"), data.get("bay"), items)
        reason = str(data.get("reason") or "refused")
        return PickupResult("already-collected" if reason == "used" else "refused", reason)

    # --- returns ---
    def record_return(self, staff_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """A return at the counter: the order, the items and quantities back, a reason; an optional return QR
        marks that code used. A `shopper` `return` event through the outbox (idempotent by client_id)."""
        client_id = _client_id(body)
        order_id = body.get("order_id")
        rma = body.get("code")
        rma_id = None
        if isinstance(rma, str) and rma.strip():
            token = token_from_code(rma.strip())
            try:
                tok = self.signer.verify(token or rma.strip())
            except QrError as exc:
                raise DeskError("refused", f"the return code cannot be used ({exc.reason})") from None
            if tok.kind != "return":
                raise DeskError("refused", "that is not a return code")
            rma_id = tok.target
        if not isinstance(order_id, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", order_id):
            raise DeskError("bad_request", "order_id: the order the items come from (letters, digits, '-', '_')")
        items = _lines(body.get("items"))
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason) > 200):
            raise DeskError("bad_request", "reason: a short text, at most 200 characters")
        customer = _customer_of(self.db(), order_id, body.get("customer"))
        data = {"order_id": order_id, "items": items, **({"rma_id": rma_id} if rma_id else {}),
                **({"reason": reason} if reason else {}), "staff": staff_id}
        now = time.time()

        def write(w: Writer) -> bool:
            if rma_id is not None:
                w.conn.execute("INSERT OR IGNORE INTO returns(rma_id, state, completed_at, by, token_id) "
                               "VALUES (?,?,?,?,?)", (rma_id, "received", now, f"staff-{staff_id}", None))
            e = Event(event_id=f"shopper:return:{client_id}", kind="shopper", type="return", source=f"staff-{staff_id}",
                      ts=now, received_at=now, customer=customer, data=data)
            fresh = w.insert_event(e) is not None
            if fresh and customer:
                audit.record(w.conn, staff_id, customer, "return", now)
            return fresh

        fresh = self.run(write, 10.0)
        self.wake()  # to the central store now, not at the next idle push
        return {"recorded": fresh, "event_id": f"shopper:return:{client_id}", "order_id": order_id, "items": items}

    # --- the mobile POS ---
    def product_search(self, text: str, limit: int = 20) -> list[dict[str, Any]]:
        """Products by EAN or SKU, then SKU prefix, then name in any language: the edge's one catalogue (the
        store's TOML and the central's products), so the POS sells at the price every screen shows."""
        found = self.catalogue.search(text[:64], limit) if text.strip() else self.catalogue.all()[:limit]
        return [self._for_sale(p.sku) for p in found]

    def product_by_ean(self, ean: str) -> dict[str, Any] | None:
        ean = ean.strip()
        found = self.catalogue.by_ean(ean) or self.catalogue.get(ean)
        if found is None:  # a store's config may list products by their EAN-13 as SKU
            found = next((p for p in self.catalogue.all() if _ean(p) == ean), None)
        return None if found is None else self._for_sale(found.sku)

    def _for_sale(self, sku: str) -> dict[str, Any]:
        product = self.catalogue.get(sku)
        return {**self.catalogue.product(sku), "ean": _ean(product) if product is not None else None}

    def attach(self, staff_id: str, code: str) -> dict[str, Any] | None:
        """The shopper behind a loyalty card, customer id or kiosk handoff code, for a sale: their id, and
        their first name only with consent. Audited."""
        conn = self.db()
        code = code.strip()[:512]
        token = token_from_code(code)
        customer = None
        if token is not None:
            try:
                tok = self.signer.verify(token)
            except QrError:
                return None
            if tok.kind == "handoff":
                row = conn.execute("SELECT customer FROM qr_handoffs WHERE token_id = ?", (tok.token_id,)).fetchone()
                customer = row[0] if row else None
        else:
            customer = resolve_customer(conn, code[:128])
        if not customer:
            return None
        raw = cached_profile(conn, customer)
        shopper = Shopper.from_profile(customer, raw) if raw is not None else None
        self.audit(staff_id, customer, "pos_attach")
        personal = consented(shopper, self.cfg.privacy.require_consent)
        return {"customer": customer, "first_name": shopper.first_name if personal and shopper else None}

    def sale(self, staff_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Checkout: a `pos` event (conversion KPIs) with the payment method and the terminal's reference;
        idempotent by the phone's client_id, so a queued sale sent again is recorded once."""
        client_id = _client_id(body)
        items = _lines(body.get("items"), priced=True)
        payment = body.get("payment")
        if not isinstance(payment, dict) or payment.get("method") not in PAYMENT_METHODS:
            raise DeskError("bad_request", f"payment.method: one of {', '.join(PAYMENT_METHODS)} (payment itself "
                            "happens on the store's terminal)")
        reference = payment.get("reference") or ""
        if not isinstance(reference, str) or len(reference) > 64:
            raise DeskError("bad_request", "payment.reference: the terminal's receipt reference, at most 64 characters")
        customer = body.get("customer")
        if customer is not None and (not isinstance(customer, str) or not 0 < len(customer) <= 128):
            raise DeskError("bad_request", "customer: a customer id")
        total = round(sum(i["qty"] * (i.get("price") or 0) for i in items), 2)
        made_at = body.get("made_at")
        ts = made_at / 1000 if isinstance(made_at, int | float) and 0 < made_at / 1000 <= time.time() + 60 \
            else time.time()
        event_id = f"pos:staff-pos:{client_id}"
        data = {"items": [{"sku": i["sku"], "qty": i["qty"], "price": i.get("price")} for i in items],
                "total": total, "payment": {"method": payment["method"], "reference": reference},
                "staff": staff_id, "channel": "staff-app"}

        def write(w: Writer) -> bool:
            now = time.time()
            e = Event(event_id=event_id, kind="pos", source="staff-pos", ts=ts, received_at=now, customer=customer,
                      data=data)
            return w.insert_event(e) is not None

        fresh = self.run(write, 10.0)
        self.wake()
        return {"recorded": fresh, "event_id": event_id, "total": total}

    def order_request(self, staff_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Endless aisle: items not in stock here, ordered for home delivery or pickup in another store; a
        `shopper` `order_request` event the central store turns into an order the shopper sees online."""
        client_id = _client_id(body)
        items = _lines(body.get("items"))
        fulfilment = body.get("fulfilment")
        if fulfilment not in ("home", "pickup"):
            raise DeskError("bad_request", 'fulfilment: "home" or "pickup"')
        pickup_store = body.get("pickup_store")
        if fulfilment == "pickup" and (not isinstance(pickup_store, str) or not pickup_store):
            raise DeskError("bad_request", "pickup_store: the store the shopper collects from")
        customer = body.get("customer")
        if customer is not None and (not isinstance(customer, str) or not 0 < len(customer) <= 128):
            raise DeskError("bad_request", "customer: a customer id")
        order_id = f"{self.cfg.store.id}-{client_id}"[:64]
        data: dict[str, Any] = {"order_id": order_id, "items": items, "fulfilment": fulfilment, "staff": staff_id}
        if fulfilment == "pickup":
            data["pickup_store"] = pickup_store
        payment = body.get("payment")
        if isinstance(payment, dict) and payment.get("method") in PAYMENT_METHODS:
            data["payment"] = {"method": payment["method"], "reference": str(payment.get("reference") or "")[:64]}
        event_id = f"shopper:order:{client_id}"

        def write(w: Writer) -> bool:
            now = time.time()
            e = Event(event_id=event_id, kind="shopper", type="order_request", source="staff-pos", ts=now,
                      received_at=now, customer=customer, data=data)
            return w.insert_event(e) is not None

        fresh = self.run(write, 10.0)
        self.wake()
        return {"recorded": fresh, "event_id": event_id, "order_id": order_id}


def _ean(p: Any) -> str | None:
    """A product's EAN-13: its SKU when the SKU is one (the store's config lists products by SKU)."""
    ean = getattr(p, "ean", None)
    if isinstance(ean, str) and ean13_ok(ean):
        return ean
    return p.sku if ean13_ok(p.sku) else None


def _client_id(body: dict[str, Any]) -> str:
    client_id = body.get("client_id")
    if not isinstance(client_id, str) or not CLIENT_ID_RE.match(client_id):
        raise DeskError("bad_request", "client_id: an id the phone made for this sale (8 to 64 letters, digits, "
                        "'-', '_'): sending it again records it once")
    return client_id


def _lines(value: Any, *, priced: bool = False) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_LINES:
        raise DeskError("bad_request", f"items: a list of 1 to {MAX_LINES} {{\"sku\", \"qty\"}}")
    out = []
    for n, line in enumerate(value):
        if not isinstance(line, dict) or not isinstance(line.get("sku"), str) or not 0 < len(line["sku"]) <= 64:
            raise DeskError("bad_request", f"items[{n}].sku: the product's SKU")
        qty = line.get("qty", 1)
        if type(qty) is not int or not 0 < qty <= 999:
            raise DeskError("bad_request", f"items[{n}].qty: a whole number from 1 to 999")
        item: dict[str, Any] = {"sku": line["sku"], "qty": qty}
        if priced:
            price = line.get("price")
            if price is not None and (type(price) not in (int, float) or not 0 <= price <= 1e6):
                raise DeskError("bad_request", f"items[{n}].price: a number from 0")
            item["price"] = price
        out.append(item)
    return out




def _item_name(catalogue: Catalogue, item: Any) -> str:
    if isinstance(item, dict):
        sku = item.get("sku")
        name = catalogue.product(str(sku))["name"] if sku else "?"
        return f"{name} × {item['qty']}" if isinstance(item.get("qty"), int) and item["qty"] != 1 else name
    return catalogue.product(str(item))["name"]


def _customer_of(conn: sqlite3.Connection, order_id: str, given: Any) -> str | None:
    if isinstance(given, str) and 0 < len(given) <= 128:
        return given
    like = f'%"{order_id}"%'
    for customer, raw in conn.execute("SELECT customer_id, profile FROM profiles WHERE profile LIKE ?", (like,)):
        p = json_object(raw)
        for o in [*(p.get("orders") or []), *(p.get("orders_ready") or [])]:
            if isinstance(o, dict) and o.get("order_id") == order_id:
                return customer
    return None
