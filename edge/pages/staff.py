"""The staff app's routes: /staff (login, then the feed, pickup, returns and the POS in one mobile page), the
feed's stream, the customer story page, the JSON actions under /staff/api, and GET /api/v1/staff/audit.

Sessions are signed cookies (edge/staff/sessions.py): HttpOnly, SameSite=Strict, Secure when the page came
over TLS (directly or through a trusted proxy that says so). The actions are JSON POSTs from the page's own
script: SameSite=Strict keeps other sites' pages from sending them with the cookie.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, g, jsonify, redirect, render_template, request
from flask_babel import gettext as _

import kiosk_ui

from edge.staff import audit, feed as feed_mod, sessions
from edge.staff.accounts import Account
from edge.staff.desk import Desk, DeskError
from edge.staff.feed import Feed
from edge.store.db import connect
from edge.ratelimit import RateLimiter
from edge.web.auth import api_error, client_ip, require_role
from edge.web.i18n import languages
from edge.pages.staff_strings import staff_strings
from edge.pages.streams import HEARTBEAT_S, RETRY_MS, SSE_HEADERS, closing_error
from sync.jsonbody import request_json

log = logging.getLogger(__name__)

CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
LOGIN_RATE_PER_S = 0.2  # login attempts per client address, after a burst: spraying one PIN over many ids
LOGIN_BURST = 10
STREAMS_PER_STAFF = 2  # a phone and a reload: the oldest of a third is ended
POLL_S = 0.5
SESSION_CHECK_S = 3.0  # how soon an open feed stream notices a logout or a disabled account


class StaffStreams:
    """Open feed streams, bounded in all (`limit`, each holds a server thread) and per associate."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.open: dict[str, list[threading.Event]] = {}

    def count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.open.values())

    def open_stream(self, staff_id: str) -> threading.Event | None:
        with self.lock:
            mine = self.open.setdefault(staff_id, [])
            while len(mine) >= STREAMS_PER_STAFF:
                mine.pop(0).set()
            if sum(len(v) for v in self.open.values()) >= self.limit:
                return None
            ended = threading.Event()
            mine.append(ended)
            return ended

    def close_stream(self, staff_id: str, ended: threading.Event) -> None:
        with self.lock:
            mine = self.open.get(staff_id, [])
            if ended in mine:
                mine.remove(ended)
        ended.set()

    def close_all(self) -> None:
        with self.lock:
            for v in self.open.values():
                for e in v:
                    e.set()


def _secure() -> bool:
    """Did the page come over TLS (directly, or via a trusted proxy that terminated it and says so with
    `X-Forwarded-Ssl: on`; waitress drops X-Forwarded-Proto when it has no trusted_proxy of its own)?"""
    if request.scheme == "https":
        return True
    said = request.headers.get("X-Forwarded-Ssl", "").lower() == "on" or \
        request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    return said and request.remote_addr in g.edge.trusted_proxies


def create_blueprint(store: Any, desk: Desk, feed: Feed, streams: StaffStreams) -> Blueprint:
    bp = Blueprint("staff_ui", __name__, template_folder=str(kiosk_ui.TEMPLATES))
    cfg = store.cfg
    store_name = cfg.store.name or cfg.store.id
    logins = RateLimiter(LOGIN_RATE_PER_S, LOGIN_BURST)

    def current() -> Account | None:
        """The logged-in associate of this request (and note the cookie to refresh)."""
        if "staff" in g:
            return g.staff
        now = time.time()
        s = sessions.read(desk.session_key, request.cookies.get(sessions.COOKIE), now)
        account = desk.account(s.staff_id) if s else None
        if account is None or not account.active or s is None or account.session_epoch != s.epoch:
            g.staff = None
            return None
        g.staff = account
        if now - s.last > sessions.REFRESH_S:
            g.staff_refresh = sessions.issue(desk.session_key, account.staff_id, account.session_epoch, now)
        return account

    def set_cookie(resp: Response, value: str) -> None:
        resp.set_cookie(sessions.COOKIE, value, max_age=int(sessions.IDLE_S), httponly=True, samesite="Strict",
                        secure=_secure(), path="/staff")

    def html(template: str, status: int = 200, **ctx: Any) -> Response:
        strings = staff_strings()
        resp = Response(render_template(template, store=store_name, t=strings, **ctx), status=status,
                        mimetype="text/html")
        return resp

    def needs_staff(fn: Callable) -> Callable:
        def inner(*args: Any, **kwargs: Any) -> Any:
            if current() is None:
                return api_error(401, "unauthorized", "log in at /staff first (your session may have timed out)")
            return fn(*args, **kwargs)

        inner.__name__ = fn.__name__
        return inner

    @bp.after_request
    def _headers(resp: Response) -> Response:
        if resp.mimetype == "text/html":
            resp.headers["Content-Security-Policy"] = CSP
        if request.path.startswith("/staff"):
            resp.headers["Cache-Control"] = "no-store"
            resp.headers["X-Content-Type-Options"] = "nosniff"
            resp.headers["Referrer-Policy"] = "no-referrer"
            # The camera, for scanning codes; nothing else.
            resp.headers["Permissions-Policy"] = "camera=(self), microphone=(), geolocation=()"
            fresh = g.pop("staff_refresh", None)
            if fresh and resp.mimetype != "text/event-stream":
                set_cookie(resp, fresh)
        return resp

    # --- login -------------------------------------------------------------------------------------------
    @bp.get("/staff")
    def staff_home():
        account = current()
        if account is None:
            return html("staff_login.html")
        boot = {"staff_id": account.staff_id, "name": account.name, "role": account.role, "store": cfg.store.id,
                "currency": cfg.store.currency, "lang": cfg.store.language, "strings": staff_strings(),
                "stores": [], "secure": _secure()}
        return html("staff.html", account=account, boot=boot, languages=languages())

    @bp.post("/staff/login")
    def staff_login():
        staff_id = (request.form.get("staff_id") or "").strip()[:64]
        pin = (request.form.get("pin") or "")[:64]
        if not staff_id or not pin:
            return html("staff_login.html", 400, error=_("Type your staff id and your PIN."), staff_id=staff_id)
        wait = logins.wait(client_ip())
        if wait > 0:  # many attempts from one device, whatever the ids: slow it down
            retry = RateLimiter.retry_after(wait)
            resp = html("staff_login.html", 429, staff_id=staff_id,
                        error=_("Too many login attempts from this device. Try again in %(seconds)d s.",
                                seconds=retry))
            resp.headers["Retry-After"] = str(retry)
            return resp
        try:
            result = desk.login(staff_id, pin)
        except (TimeoutError, RuntimeError):
            return html("staff_login.html", 503, error=_("The store system is busy. Try again in a moment."),
                        staff_id=staff_id)
        if result.account is None:
            if result.reason == "locked" and result.locked_until:
                until = datetime.fromtimestamp(result.locked_until, ZoneInfo(cfg.store.timezone)).strftime("%H:%M")
                minutes = max(1, round((result.locked_until - time.time()) / 60))
                error = _("Too many wrong PINs: this account is locked. Try again at %(time)s (in %(minutes)d "
                          "min), or ask a manager.", time=until, minutes=minutes)
                return html("staff_login.html", 429, error=error, staff_id=staff_id)
            if result.reason == "disabled":
                return html("staff_login.html", 403, error=_("This account is disabled. Ask a manager."),
                            staff_id=staff_id)
            return html("staff_login.html", 401, error=_("Wrong staff id or PIN."), staff_id=staff_id)
        account = result.account
        resp = redirect("/staff", code=303)
        set_cookie(resp, sessions.issue(desk.session_key, account.staff_id, account.session_epoch, time.time()))
        return resp

    @bp.post("/staff/logout")
    def staff_logout():
        account = current()
        if account is not None:
            desk.logout(account.staff_id)
        resp = redirect("/staff", code=303)
        resp.delete_cookie(sessions.COOKIE, path="/staff")
        return resp

    @bp.get("/staff/api/session")
    def session_state():
        """Whether this phone is still logged in (the page asks when its feed stream is refused)."""
        account = current()
        if account is None:
            return api_error(401, "unauthorized", "log in at /staff (the session ended)")
        return jsonify({"staff_id": account.staff_id, "role": account.role})

    # --- the feed ----------------------------------------------------------------------------------------
    @bp.get("/staff/feed/stream")
    @needs_staff
    def feed_stream():
        if store.stopping:
            return closing_error(503, "stopping", "the edge is stopping; retry in a moment")
        account = current()
        raw = request.headers.get("Last-Event-ID") or request.args.get("since")
        try:
            since = int(raw) if raw else None
        except ValueError:
            since = None
        ended = streams.open_stream(account.staff_id)
        if ended is None:
            resp, status = api_error(503, "too_many_streams", "every staff feed slot is in use; retry shortly")
            resp.headers["Retry-After"] = "5"
            return resp, status
        disconnected = request.environ.get("waitress.client_disconnected")

        def still_valid() -> bool:
            """Logout or disable elsewhere ends this stream too (checked every few seconds)."""
            now_account = desk.account(account.staff_id)
            return now_account is not None and now_account.active and \
                now_account.session_epoch == account.session_epoch

        body = FeedBody(feed, cfg.db.path, since, ended, lambda: store.stopping, disconnected,
                        lambda: streams.close_stream(account.staff_id, ended), still_valid)
        return Response(body, mimetype="text/event-stream", headers=SSE_HEADERS, direct_passthrough=True)

    @bp.post("/staff/api/feed/<int:item_id>/claim")
    @needs_staff
    def feed_claim(item_id: int):
        account = current()
        try:
            mine, who = feed.claim(item_id, account.staff_id)
        except (RuntimeError, TimeoutError):
            return api_error(404, "not_found", f"no feed item {item_id}")
        if not mine:
            other = desk.account(who or "")
            return api_error(409, "claimed", _("Already claimed by %(name)s.", name=other.name if other else who))
        return jsonify({"claimed": item_id, "by": account.staff_id})

    @bp.post("/staff/api/feed/<int:item_id>/done")
    @needs_staff
    def feed_done(item_id: int):
        account = current()
        return jsonify({"done": feed.done(item_id, account.staff_id)})

    # --- the customer story --------------------------------------------------------------------------------
    @bp.get("/staff/customer")
    def find_customer():
        code = (request.args.get("code") or "").strip()
        return redirect(f"/staff/customer/{quote(code, safe='')}" if code else "/staff", code=303)

    @bp.get("/staff/customer/<code>")
    def customer_story(code: str):
        account = current()
        if account is None:
            return redirect("/staff", code=303)
        try:
            story = desk.story(account.staff_id, code)
        except (TimeoutError, RuntimeError):
            return html("staff_story.html", 503, story=None, code=code,
                        error=_("The store system is busy. Try again in a moment."))
        if story is None:
            return html("staff_story.html", 404, story=None, code=code,
                        error=_("No shopper known by %(code)s here, and the central store did not answer.",
                                code=code))
        return html("staff_story.html", story=story, code=code, error=None)

    # --- actions -----------------------------------------------------------------------------------------
    def body() -> dict[str, Any]:
        value = request_json()
        if not isinstance(value, dict):
            raise DeskError("bad_request", "send a JSON object")
        return value

    @bp.errorhandler(DeskError)
    def _desk_error(exc: DeskError):
        return api_error(exc.status, exc.code, str(exc))

    @bp.post("/staff/api/pickup")
    @needs_staff
    def pickup():
        code = body().get("code")
        if not isinstance(code, str):
            raise DeskError("bad_request", 'send {"code": "<scanned pickup code or typed order number>"}')
        result = desk.pickup(current().staff_id, code)
        messages = {"collected": _("Collected: hand over the order."),
                    "already-collected": _("Already collected: this order was handed over before."),
                    "refused": _("Refused: this is not a valid pickup code for this store (%(reason)s).",
                                 reason=result.reason)}
        return jsonify({"status": result.status, "reason": result.reason, "order_id": result.order_id,
                        "bay": result.bay, "items": list(result.items), "message": messages[result.status]})

    @bp.post("/staff/api/returns")
    @needs_staff
    def returns():
        return jsonify(desk.record_return(current().staff_id, body())), 201

    @bp.get("/staff/api/products")
    @needs_staff
    def products():
        ean = request.args.get("ean")
        if ean:
            found = desk.product_by_ean(ean)
            if found is None:
                return api_error(404, "not_found", _("No product with barcode %(ean)s in this store's catalogue.",
                                                     ean=ean[:20]))
            return jsonify({"products": [found]})
        return jsonify({"products": desk.product_search(request.args.get("q", ""))})

    @bp.post("/staff/api/attach")
    @needs_staff
    def attach():
        code = body().get("code")
        if not isinstance(code, str) or not code.strip():
            raise DeskError("bad_request", 'send {"code": "<loyalty card, customer id or kiosk handoff code>"}')
        found = desk.attach(current().staff_id, code)
        if found is None:
            return api_error(404, "not_found", _("No shopper known by that card or code here."))
        return jsonify(found)

    @bp.post("/staff/api/sales")
    @needs_staff
    def sales():
        return jsonify(desk.sale(current().staff_id, body())), 201

    @bp.post("/staff/api/orders")
    @needs_staff
    def orders():
        return jsonify(desk.order_request(current().staff_id, body())), 201

    # --- admin -------------------------------------------------------------------------------------------
    @bp.get("/api/v1/staff/audit")
    @require_role("admin")
    def audit_log():
        customer = request.args.get("customer") or None
        conn = connect(cfg.db.path)
        try:
            return jsonify({"entries": audit.entries(conn, customer_id=customer)})
        finally:
            conn.close()

    return bp


def _sse(item: dict[str, Any]) -> bytes:
    return f"id: {item['rev']}\nevent: item\ndata: {json.dumps(item, separators=(',', ':'))}\n\n".encode()


class FeedBody:
    """The WSGI body of one feed stream: every change after `since`, then each new one, as SSE with its rev as
    the event id (EventSource sends it back as Last-Event-ID when it reconnects)."""

    def __init__(self, feed: Feed, db_path: str, since: int | None, ended: threading.Event,
                 stopping: Callable[[], bool], disconnected: Callable[[], bool] | None,
                 release: Callable[[], None], still_valid: Callable[[], bool] = lambda: True) -> None:
        self._gen = self._run(feed, db_path, since, ended, stopping, disconnected, still_valid)
        self._release = release

    def __iter__(self) -> Iterator[bytes]:
        return self._gen

    @staticmethod
    def _run(feed: Feed, db_path: str, since: int | None, ended: threading.Event, stopping: Callable[[], bool],
             disconnected: Callable[[], bool] | None, still_valid: Callable[[], bool]) -> Iterator[bytes]:
        conn = connect(db_path)
        try:
            first = b""
            if since is None:  # a fresh page: the recent items as they are now, then every change after them
                conn.execute("BEGIN")
                try:
                    since = int(conn.execute("SELECT coalesce(max(rev), 0) FROM staff_feed").fetchone()[0])
                    for item in feed_mod.changes(conn, None, time.time(), limit=500):
                        first += _sse(item)
                finally:
                    conn.execute("COMMIT")
            yield f"retry: {RETRY_MS}\n\nevent: hello\ndata: {{}}\n\n".encode() + first
            last_sent = checked = time.monotonic()
            while not ended.is_set() and not stopping():
                if disconnected is not None and disconnected():
                    return
                if time.monotonic() - checked >= SESSION_CHECK_S:
                    checked = time.monotonic()
                    if not still_valid():
                        return
                items = feed_mod.changes(conn, since, time.time())
                if items:
                    since = items[-1]["rev"]
                    yield b"".join(_sse(item) for item in items)
                    last_sent = time.monotonic()
                    continue
                if time.monotonic() - last_sent >= HEARTBEAT_S:
                    yield f"event: ping\ndata: {{\"now\":{int(time.time() * 1000)}}}\n\n".encode()
                    last_sent = time.monotonic()
                feed.wait(POLL_S)
        finally:
            conn.close()

    def close(self) -> None:
        try:
            self._gen.close()
        finally:
            self._release()
