"""The shoppers' landing pages from a QR code, `/q/<token>`: a touchpoint's offer, the kiosk session continued
on the phone, click & collect, returns; and `POST /api/v1/qr`, which mints codes.

Server-rendered, working without JavaScript, rate-limited per client before anything is recorded. What a
code does lives in edge.domain.journeys; scans from phones become qr events through the writer, like a
scanner's.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import sqlite3
import threading
import time
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request
from flask_babel import gettext as _

import kiosk_ui

from edge.domain.journeys import REFUSED_METRIC, describe_target, find_order, order_items, session_cart
from sync.jsonbody import request_json
from edge.model import Message
from edge.qr import MINTABLE, REFUSALS, QrError, minted, qr_svg
from edge.ratelimit import RateLimiter
from edge.store.db import connect
from edge.web.auth import api_error, client_ip, require_role
from edge.web.i18n import page_lang
from edge.web.ports import Edge
from edge.web.product_page import Phone, add_routes, new_phone_cookie

log = logging.getLogger(__name__)

PHONE_COOKIE = "instore_edge_phone"  # a signed "phone" token: c:<customer id> (the phone is known)
HANDOFF_COOKIE = "instore_edge_handoff"  # a signed "phone" token: h:<handoff token id>
PHONE_TTL_S = 30 * 24 * 3600
CUSTOMER_LINK = "customer_link"  # POST /api/v1/qr kind: the `?c=` token of a link in the shop's emails
HANDOFF_SESSION_TTL_S = 2 * 3600
RATE_LIMITED_METRIC = "instore_edge_http_rate_limited_total"
PUBLIC_PREFIX = "/q/"  # the shoppers' pages: rate-limited per client before anything is recorded
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")  # no script at all: the pages are plain HTML forms
# The landing templates live with the other pages' (kiosk_ui/templates): one look, one place to translate.
TEMPLATES = kiosk_ui.TEMPLATES


def blueprint(edge: Edge) -> Blueprint:
    bp = Blueprint("landing", __name__, template_folder=str(TEMPLATES))
    cfg = edge.cfg
    signer = edge.signer
    prefix = cfg.prefix
    catalogue = edge.catalogue  # the one catalogue: TOML and central products, the same prices as every screen
    store_name = cfg.store.name or cfg.store.id
    local = threading.local()

    def db() -> sqlite3.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = connect(cfg.db.path)
            local.conn = conn
        return conn

    def page(template: str, status: int = 200, **ctx: Any) -> Response:
        body = render_template(template, store=store_name, **ctx)
        resp = Response(body, status=status, mimetype="text/html")
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    def refuse(reason: str, count: bool = True) -> Response:
        if count:
            edge.metrics.inc(REFUSED_METRIC, reason=reason)
        status, title, message = REFUSALS[reason]
        return page("landing_error.html", status, title=_(title), message=_(message), reason=reason)

    limiter = RateLimiter(cfg.limits.public_rate_per_s, cfg.limits.public_burst)

    @bp.before_app_request
    def _rate_limit() -> Response | None:
        """Scans past the client's burst get a friendly 429 page and never become events."""
        if not request.path.startswith(PUBLIC_PREFIX):
            return None
        wait = limiter.wait(client_ip())
        if wait <= 0:
            return None
        edge.metrics.inc(RATE_LIMITED_METRIC, route=PUBLIC_PREFIX)
        retry = RateLimiter.retry_after(wait)
        resp = page("landing_slow_down.html", 429, retry_after=retry)
        resp.headers["Retry-After"] = str(retry)
        return resp

    def product_name(sku: str) -> str:
        """A product's name in the page's language (an SKU the catalogue does not list: its code)."""
        p = catalogue.get(sku)
        return sku if p is None else p.name_in(page_lang(), cfg.store.language)

    def phone() -> Phone:
        """Who this phone is, from its signed cookie (a handoff, a signed link); anonymous without one."""
        raw = request.cookies.get(PHONE_COOKIE) or ""
        if not raw:
            return Phone(None, "")
        try:
            tok = signer.verify(raw)
        except QrError:
            return Phone(None, "")
        known = tok.kind == "phone" and tok.target.startswith("c:")
        return Phone(tok.target[2:] if known else None, raw if known else "")

    def phone_customer() -> str | None:
        return phone().customer

    def set_phone(resp: Response, customer: str) -> None:
        c = new_phone_cookie(signer, customer, PHONE_TTL_S)
        resp.set_cookie(PHONE_COOKIE, c, max_age=PHONE_TTL_S, httponly=True, samesite="Lax", path="/q")

    product_page = add_routes(bp, edge, page, phone, set_phone)

    def shopper(customer: str | None) -> Any:
        """What the page may show of the shopper: only with their consent (the one gate)."""
        if not customer:
            return None
        try:
            return edge.personal(customer)
        except Exception:
            log.exception("profile lookup failed")
            return None

    scan_ids = itertools.count()
    scan_prefix = "w" + secrets.token_hex(6)  # this process's; then a counter (no system call per scan)

    def record_scan(code: str) -> None:
        now = time.time()
        payload = json.dumps({"id": f"{scan_prefix}{next(scan_ids):x}", "ts": int(now * 1000), "code": code}).encode()
        edge.submit(Message(f"{prefix}/qr/web", payload, 1, 0, now, done=lambda: None))

    @bp.get("/q/<token>")
    def landing(token: str):
        try:
            tok = signer.verify(token)
        except QrError as exc:
            return refuse(exc.reason)
        if tok.kind == "touchpoint":
            t = describe_target(cfg, tok.target, page_lang(), catalogue=catalogue)
            if not {"lang", "done", "c"} & request.args.keys():  # a language switch, a form's answer: no scan
                record_scan(signer.url(token))
            s = shopper(phone_customer())
            product = catalogue.get(t["sku"]) if t["sku"] else None
            if product is not None:
                return product_page(token, product, tok.target, shopper=s)
            wished = bool(s and t["sku"] and t["sku"] in s.wishlist)
            return page("landing.html", view="touchpoint", t=t, shopper=s, wished=wished)
        if tok.kind == "handoff":
            row = db().execute("SELECT kiosk, session, customer FROM qr_handoffs WHERE token_id = ?",
                               (tok.token_id,)).fetchone()
            if row is None:
                return refuse("forged")
            try:
                fresh = edge.consume(tok, "web")
            except (TimeoutError, RuntimeError):
                return page("landing_error.html", 503, title=_("Please try again"),
                            message=_("The store system is busy. Reload this page in a moment."), reason="busy")
            if not fresh:
                return refuse("used")
            resp = redirect("/q/session", code=303)
            h = signer.mint("phone", f"h:{tok.token_id}", HANDOFF_SESSION_TTL_S)
            resp.set_cookie(HANDOFF_COOKIE, h, max_age=HANDOFF_SESSION_TTL_S, httponly=True, samesite="Lax", path="/q")
            customer = row[2]
            if customer and len(customer) <= 60:
                set_phone(resp, customer)
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
            names = [product_name(i) if isinstance(i, str) else str(i) for i in order_items(order)]
            return page("landing.html", view="pickup", order_id=tok.target, bay=order.get("pickup_bay"),
                        items=names, collected=done is not None,
                        qr=qr_svg(signer.url(token), module=6, title=_("QR code of order %(order)s", order=tok.target)))
        if tok.kind == "return":
            done = db().execute("SELECT completed_at FROM returns WHERE rma_id = ?", (tok.target,)).fetchone()
            return page("landing.html", view="return", rma_id=tok.target, completed=done is not None,
                        qr=qr_svg(signer.url(token), module=6, title=_("QR code of return %(rma)s", rma=tok.target)))
        return refuse("wrong_kind")

    @bp.get("/q/session")
    def handoff_session():
        raw = request.cookies.get(HANDOFF_COOKIE)
        tok = None
        if raw:
            try:
                tok = signer.verify(raw)
            except QrError:
                tok = None
        if tok is None or tok.kind != "phone" or not tok.target.startswith("h:"):
            return page("landing_error.html", 404, title=_("No kiosk session here"),
                        message=_("Scan the code on the kiosk again to continue on this phone."), reason="no_session")
        row = db().execute("SELECT kiosk, session, customer FROM qr_handoffs WHERE token_id = ?",
                           (tok.target[2:],)).fetchone()
        if row is None:
            return page("landing_error.html", 404, title=_("This kiosk session has ended"),
                        message=_("Scan the code on the kiosk again to continue on this phone."), reason="no_session")
        kiosk, session, customer = row
        cart = session_cart(db(), kiosk, session)
        lines = [{"sku": sku, "name": product_name(sku), "price": p.price if p else None,
                  "currency": p.currency if p else None} for sku, p in ((s, catalogue.get(s)) for s in cart)]
        return page("landing.html", view="handoff", cart=lines, shopper=shopper(customer), kiosk=kiosk)

    def mint_customer_link(target: Any, ttl: Any) -> Any:
        """A signed link token for the shop's emails: `/q/<touchpoint>?c=<token>` opens the product page with the
        phone known as this customer (save to wishlist, orders under their name)."""
        if not isinstance(target, str) or not 0 < len(target) <= 60 or not target.strip():
            return api_error(400, "invalid_value", "target must be the customer id (1 to 60 characters)")
        if ttl is not None and (type(ttl) is not int or not 60 <= ttl <= 90 * 86400):
            return api_error(400, "invalid_value", "ttl_s must be a whole number of seconds, 60 to 90 days")
        try:
            token = new_phone_cookie(signer, target, ttl or PHONE_TTL_S)
        except QrError as exc:
            return api_error(503, "qr_not_configured", str(exc))
        return {"kind": CUSTOMER_LINK, "token": token, "query": f"c={token}",
                "expires_at": signer.verify(token).expiry}, 201

    @bp.post("/api/v1/qr")
    @require_role("admin")
    def mint_api():
        body = request_json()
        if not isinstance(body, dict):
            return api_error(400, "bad_request", 'send {"kind": "touchpoint|pickup|return", "target": "<id>", '
                             '"ttl_s"?: seconds, "format"?: "png"|"svg"}')
        kind, target, ttl, fmt = body.get("kind"), body.get("target"), body.get("ttl_s"), body.get("format", "png")
        if kind == CUSTOMER_LINK:
            return mint_customer_link(target, ttl)
        if kind not in MINTABLE or kind == "handoff":
            return api_error(400, "invalid_value", "kind must be touchpoint, pickup, return or customer_link (handoff "
                             "codes come from the kiosk: POST /kiosk/<id>/handoff)")
        if not isinstance(target, str) or not target.strip():
            return api_error(400, "invalid_value", "target must be a non-empty string (product, content, screen, "
                             "order or return id)")
        if ttl is not None and (type(ttl) is not int or not 0 <= ttl <= 10 * 365 * 86400):
            return api_error(400, "invalid_value", "ttl_s must be a whole number of seconds, 0 (never) to 10 years")
        if fmt not in ("png", "svg"):
            return api_error(400, "invalid_value", 'format must be "png" or "svg"')
        try:
            out = minted(signer, kind, target, ttl, fmt)
        except QrError as exc:
            if exc.reason == "not_configured":
                return api_error(503, "qr_not_configured", str(exc))
            return api_error(400, "invalid_value", str(exc))
        return out, 201

    return bp
