"""QR journeys: the shopper landing page `/q/<token>`, kiosk handoff to the phone, click & collect pickup,
returns, the scanner event hook and `POST /api/v1/qr`.

Wiring (edge/service.py):
    self.pipeline.event_hooks.append(journeys.event_hook(self))
    self.http_hooks.append(lambda app: journeys.register(app, self))
    and in Service._forget_customer: journeys.forget_customer(conn, customer)

Phones and in-store scanners reach the same validation (edge.qr.Signer.verify). Single-use kinds are
consumed in the writer transaction (INSERT OR IGNORE on a primary key), so two scanners reading the same
pickup code at once collect it once. Scanned QR events are annotated in place (type, zone, customer,
data) and so sync to the central store like every event.
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from flask import Flask, Response, redirect, request

from edge.http import api_error, client_ip, require_role
from edge.model import Event, Message, Publication
from edge.jsonbody import request_json
from edge.qr import (HANDOFF_TTL_S, MINTABLE, REFUSALS, QrError, Signer, Token, minted, qr_svg,
                     token_from_code)
from edge.ratelimit import RateLimiter
from edge.store.db import connect
from edge.store.writer import Writer

if TYPE_CHECKING:
    from edge.service import Service

log = logging.getLogger("instore_edge.journeys")

PHONE_COOKIE = "instore_edge_phone"  # a signed "phone" token: c:<customer id> (the phone is known)
HANDOFF_COOKIE = "instore_edge_handoff"  # a signed "phone" token: h:<handoff token id>
PHONE_TTL_S = 30 * 24 * 3600
HANDOFF_SESSION_TTL_S = 2 * 3600
REFUSED_METRIC = "instore_edge_qr_refused_total"
RATE_LIMITED_METRIC = "instore_edge_http_rate_limited_total"
PUBLIC_PREFIX = "/q/"  # the shoppers' pages: rate-limited per client before anything is recorded
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
TEMPLATES = Path(__file__).resolve().parent.parent / "kiosk_ui" / "templates"

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                          autoescape=jinja2.select_autoescape(default=True, default_for_string=True))


def signer_of(service: Service) -> Signer:
    s = getattr(service, "_qr_signer", None)
    if s is None:
        s = Signer.from_config(service.cfg)
        service._qr_signer = s  # type: ignore[attr-defined]
    return s


def _refused(service: Service, reason: str) -> None:
    service.metrics.inc(REFUSED_METRIC, reason=reason)


def _run_in_writer(service: Service, fn: Any, timeout: float = 10.0) -> Any:
    """Run fn(writer) in the writer's transaction and return its result (raises if not committed)."""
    box: dict[str, Any] = {}

    def task(writer: Writer) -> None:
        box["value"] = fn(writer)

    done = threading.Event()
    service.pipeline.submit_task(task, done.set)
    if not done.wait(timeout):
        raise TimeoutError("the write was queued but not committed in time")
    if "value" not in box:
        raise RuntimeError("the write failed")
    return box["value"]


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


def _items(order: dict[str, Any]) -> list[Any]:
    items = order.get("items")
    return items if isinstance(items, list) else []


def describe_target(cfg: Any, target: str) -> dict[str, Any]:
    """What a touchpoint shows: a product (sku), a screen (its first playlist item) or a content item."""
    for p in cfg.products:
        if p.sku == target:
            return {"type": "product", "id": p.sku, "title": p.name, "body": "",
                    "price": p.price, "zone": p.zone, "sku": p.sku}
    contents = {c.id: c for c in cfg.content}
    for s in cfg.screens:
        if s.id == target:
            c = contents.get(s.playlist[0]) if s.playlist else None
            return {"type": "screen", "id": s.id, "title": (c.title if c else "") or s.id,
                    "body": c.body if c else "", "price": None, "zone": s.zone, "sku": None}
    c = contents.get(target)
    if c is not None:
        zone = next((s.zone for s in cfg.screens if target in s.playlist), None)
        return {"type": "content", "id": c.id, "title": c.title or c.id, "body": c.body, "price": None,
                "zone": zone, "sku": None}
    return {"type": "unknown", "id": target, "title": target, "body": "", "price": None, "zone": None, "sku": None}


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


def event_hook(service: Service):
    """The pipeline hook for kind "qr" events (scanners on P/qr/{scanner}, phones via /q/<token>)."""
    prefix = service.cfg.prefix

    def hook(e: Event, writer: Writer) -> list[Publication]:
        if e.kind != "qr":
            return []
        token_text = token_from_code(str(e.data.get("code") or ""))
        if token_text is None:
            return []  # not one of our codes (a loyalty card...): identity handles it
        signer = signer_of(service)
        try:
            tok = signer.verify(token_text, now=e.received_at)
            if tok.kind == "touchpoint":
                t = describe_target(service.cfg, tok.target)
                _annotate(writer, e, "touchpoint", {"touchpoint": tok.target}, zone=t["zone"])
                return []
            if tok.kind == "pickup":
                return _collect(writer, e, tok, prefix)
            if tok.kind == "return":
                return _complete_return(writer, e, tok, prefix)
            raise QrError("wrong_kind")
        except QrError as exc:
            _refused(service, exc.reason)
            _annotate(writer, e, "refused", {"reason": exc.reason})
            return []

    return hook


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
    _annotate(writer, e, "pickup", {"order_id": tok.target, "bay": bay, "items": _items(order),
                                    "collected_at": collected_ms}, customer=customer)
    return [Publication(f"{prefix}/staff/pickup", {"order_id": tok.target, "customer": customer, "bay": bay,
                                                   "items": _items(order), "scanner": e.source,
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


def forget_customer(conn: sqlite3.Connection, customer: str) -> None:
    """Erasure: the store keeps that an order was collected, never by whom (call from Service._forget_customer)."""
    conn.execute("UPDATE pickups SET customer_id = NULL WHERE customer_id = ?", (customer,))
    conn.execute("UPDATE qr_handoffs SET customer = NULL WHERE customer = ?", (customer,))


# --- kiosk handoff ----------------------------------------------------------------------------------------

def mint_handoff(service: Service, kiosk: str, session: str, customer: str | None) -> str:
    """A single-use, short-lived handoff token; the kiosk session (and the shopper, if identified) is kept
    server-side keyed by the token id, so nothing personal travels in the QR."""
    signer = signer_of(service)
    ttl = min(HANDOFF_TTL_S, service.cfg.qr.ttl_s)
    token = signer.mint("handoff", kiosk, ttl)
    tok = signer.verify(token)

    def store(writer: Writer) -> bool:
        writer.conn.execute("INSERT INTO qr_handoffs(token_id, kiosk, session, customer, created_at) "
                            "VALUES (?,?,?,?,?)", (tok.token_id, kiosk, session, customer, time.time()))
        return True

    _run_in_writer(service, store)
    return token


def _consume(service: Service, tok: Token, by: str) -> bool:
    def use(writer: Writer) -> bool:
        cur = writer.conn.execute("INSERT OR IGNORE INTO qr_uses(token_id, kind, used_at, by) VALUES (?,?,?,?)",
                                  (tok.token_id, tok.kind, time.time(), by))
        return cur.rowcount == 1

    return _run_in_writer(service, use)


def session_cart(conn: sqlite3.Connection, kiosk: str, session: str) -> list[str]:
    """The kiosk session's bag, from its events: add_to_cart items, then the handoff's item list."""
    bag: list[str] = []
    for type_, raw in conn.execute("SELECT type, data FROM events WHERE kind = 'kiosk' AND source = ? AND subject = ? "
                                   "ORDER BY seq", (kiosk, f"session:{session}")):
        data = json.loads(raw) if raw else {}
        items = [data.get("item")] if type_ == "add_to_cart" else data.get("items") if type_ == "handoff" else None
        for it in items or []:
            if isinstance(it, str) and it not in bag:
                bag.append(it)
    return bag


# --- HTTP -------------------------------------------------------------------------------------------------

def register(app: Flask, service: Service) -> None:
    cfg = service.cfg
    prefix = cfg.prefix
    products = {p.sku: p for p in cfg.products}
    store_name = cfg.store.name or cfg.store.id
    local = threading.local()

    def db() -> sqlite3.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = connect(cfg.db.path)
            local.conn = conn
        return conn

    def page(template: str, status: int = 200, **ctx: Any) -> Response:
        body = _env.get_template(template).render(store=store_name, **ctx)
        resp = Response(body, status=status, mimetype="text/html")
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    def refuse(reason: str, count: bool = True) -> Response:
        if count:
            _refused(service, reason)
        status, title, message = REFUSALS[reason]
        return page("landing_error.html", status, title=title, message=message, reason=reason)

    limiter = RateLimiter(cfg.limits.public_rate_per_s, cfg.limits.public_burst)

    @app.before_request
    def _rate_limit() -> Response | None:
        """Scans past the client's burst get a friendly 429 page and never become events."""
        if not request.path.startswith(PUBLIC_PREFIX):
            return None
        wait = limiter.wait(client_ip())
        if wait <= 0:
            return None
        service.metrics.inc(RATE_LIMITED_METRIC, route=PUBLIC_PREFIX)
        retry = RateLimiter.retry_after(wait)
        resp = page("landing_slow_down.html", 429, retry_after=retry)
        resp.headers["Retry-After"] = str(retry)
        return resp

    def phone_customer() -> str | None:
        raw = request.cookies.get(PHONE_COOKIE)
        if not raw:
            return None
        try:
            tok = signer_of(service).verify(raw)
        except QrError:
            return None
        return tok.target[2:] if tok.kind == "phone" and tok.target.startswith("c:") else None

    def shopper(customer: str | None) -> Any:
        if not customer:
            return None
        try:
            s = service.context.profile(customer)
        except Exception:
            log.exception("profile lookup failed")
            return None
        return s if s is not None and s.personalization else None

    def record_scan(code: str) -> None:
        now = time.time()
        payload = json.dumps({"id": "w" + secrets.token_hex(8), "ts": int(now * 1000), "code": code}).encode()
        service.pipeline.submit(Message(f"{prefix}/qr/web", payload, 1, 0, now, done=lambda: None))

    @app.get("/q/<token>")
    def landing(token: str):
        signer = signer_of(service)
        try:
            tok = signer.verify(token)
        except QrError as exc:
            return refuse(exc.reason)
        if tok.kind == "touchpoint":
            t = describe_target(cfg, tok.target)
            record_scan(signer.url(token))
            s = shopper(phone_customer())
            wished = bool(s and t["sku"] and t["sku"] in s.wishlist)
            return page("landing.html", view="touchpoint", t=t, shopper=s, wished=wished)
        if tok.kind == "handoff":
            row = db().execute("SELECT kiosk, session, customer FROM qr_handoffs WHERE token_id = ?",
                               (tok.token_id,)).fetchone()
            if row is None:
                return refuse("forged")
            try:
                fresh = _consume(service, tok, "web")
            except (TimeoutError, RuntimeError):
                return page("landing_error.html", 503, title="Please try again",
                            message="The store system is busy. Reload this page in a moment.", reason="busy")
            if not fresh:
                return refuse("used")
            resp = redirect("/q/session", code=303)
            h = signer.mint("phone", f"h:{tok.token_id}", HANDOFF_SESSION_TTL_S)
            resp.set_cookie(HANDOFF_COOKIE, h, max_age=HANDOFF_SESSION_TTL_S, httponly=True, samesite="Lax", path="/q")
            customer = row[2]
            if customer and len(customer) <= 60:
                c = signer.mint("phone", f"c:{customer}", PHONE_TTL_S)
                resp.set_cookie(PHONE_COOKIE, c, max_age=PHONE_TTL_S, httponly=True, samesite="Lax", path="/q")
            resp.headers["Cache-Control"] = "no-store"
            resp.headers["Referrer-Policy"] = "no-referrer"
            return resp
        if tok.kind == "pickup":
            conn = db()
            found = find_order(conn, tok.target)
            if found is None:
                return refuse("unknown_order")
            _customer, order = found
            done = conn.execute("SELECT collected_at FROM pickups WHERE order_id = ?", (tok.target,)).fetchone()
            names = [products[i].name if isinstance(i, str) and i in products else str(i) for i in _items(order)]
            return page("landing.html", view="pickup", order_id=tok.target, bay=order.get("pickup_bay"),
                        items=names, collected=done is not None,
                        qr=qr_svg(signer.url(token), module=6, title=f"QR code of order {tok.target}"))
        if tok.kind == "return":
            done = db().execute("SELECT completed_at FROM returns WHERE rma_id = ?", (tok.target,)).fetchone()
            return page("landing.html", view="return", rma_id=tok.target, completed=done is not None,
                        qr=qr_svg(signer.url(token), module=6, title=f"QR code of return {tok.target}"))
        return refuse("wrong_kind")

    @app.get("/q/session")
    def handoff_session():
        raw = request.cookies.get(HANDOFF_COOKIE)
        tok = None
        if raw:
            try:
                tok = signer_of(service).verify(raw)
            except QrError:
                tok = None
        if tok is None or tok.kind != "phone" or not tok.target.startswith("h:"):
            return page("landing_error.html", 404, title="No kiosk session here",
                        message="Scan the code on the kiosk again to continue on this phone.", reason="no_session")
        row = db().execute("SELECT kiosk, session, customer FROM qr_handoffs WHERE token_id = ?",
                           (tok.target[2:],)).fetchone()
        if row is None:
            return page("landing_error.html", 404, title="This kiosk session has ended",
                        message="Scan the code on the kiosk again to continue on this phone.", reason="no_session")
        kiosk, session, customer = row
        cart = session_cart(db(), kiosk, session)
        lines = [{"sku": sku, "name": products[sku].name if sku in products else sku,
                  "price": products[sku].price if sku in products else None} for sku in cart]
        return page("landing.html", view="handoff", cart=lines, shopper=shopper(customer), kiosk=kiosk)

    @app.post("/api/v1/qr")
    @require_role("admin")
    def mint_api():
        body = request_json()
        if not isinstance(body, dict):
            return api_error(400, "bad_request", 'send {"kind": "touchpoint|pickup|return", "target": "<id>", '
                             '"ttl_s"?: seconds, "format"?: "png"|"svg"}')
        kind, target, ttl, fmt = body.get("kind"), body.get("target"), body.get("ttl_s"), body.get("format", "png")
        if kind not in MINTABLE or kind == "handoff":
            return api_error(400, "invalid_value", "kind must be touchpoint, pickup or return (handoff codes come "
                             "from the kiosk: POST /kiosk/<id>/handoff)")
        if not isinstance(target, str) or not target.strip():
            return api_error(400, "invalid_value", "target must be a non-empty string (product, content, screen, "
                             "order or return id)")
        if ttl is not None and (type(ttl) is not int or not 0 <= ttl <= 10 * 365 * 86400):
            return api_error(400, "invalid_value", "ttl_s must be a whole number of seconds, 0 (never) to 10 years")
        if fmt not in ("png", "svg"):
            return api_error(400, "invalid_value", 'format must be "png" or "svg"')
        try:
            out = minted(signer_of(service), kind, target, ttl, fmt)
        except QrError as exc:
            if exc.reason == "not_configured":
                return api_error(503, "qr_not_configured", str(exc))
            return api_error(400, "invalid_value", str(exc))
        return out, 201
