"""Routes of the pages: /signage/<screen>, /kiosk/<kiosk> (each with /stream), the kiosk API, and /.

Pages authenticate with a bearer header, a `?token=` on the URL (how a device in kiosk mode is set
up) or, after one of those succeeded, an HttpOnly cookie per role, which is also what lets an
EventSource (no custom headers) and the status page's links authenticate.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, jsonify, render_template, request

import kiosk_ui
from edge.http import api_error, bearer_token, client_ip, require_role, token_role
from edge.jsonbody import request_json
from kiosk_ui.context import kiosk_context, products_for
from kiosk_ui.qrpng import qr_png
from kiosk_ui.streams import Hub, StreamsFull, Target, closing_error, now_ms, sse_message, sse_response
from kiosk_ui.views import screen_view

if TYPE_CHECKING:
    from edge.service import Service

COOKIE = "instore_edge_{role}"
COOKIE_MAX_AGE = {"admin": 12 * 3600, "kiosk": 30 * 24 * 3600, "signage": 30 * 24 * 3600}
RESERVED_THREADS = 4  # waitress threads kept for pages and the API, never taken by streams
STREAMS_PER_TARGET = 2
KIOSK_IDLE_S = 90
SESSION_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
ROLE_HINT = {"signage": "the signage token ([http.tokens] signage)", "kiosk": "the kiosk token ([http.tokens] kiosk)",
             "admin": "the admin token ([http.tokens] admin)"}


@dataclass(frozen=True, slots=True)
class Auth:
    """Who a page request is: a role, or the status and message to refuse it with."""

    role: str | None
    token: str | None = None
    source: str | None = None
    status: int = 200
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.role is not None


def page_auth(service: Service, role: str) -> Auth:
    """Bearer header, then ?token=, then this role's (or admin's) cookie; the admin token grants all."""
    token, source = bearer_token(), "header"
    if token is None:
        token, source = request.args.get("token") or None, "query"
    if token is None:
        for r in dict.fromkeys((role, "admin")):
            token, source = request.cookies.get(COOKIE.format(role=r)) or None, "cookie"
            if token:
                break
    if not token:
        return Auth(None, status=401, message=f"This page needs {ROLE_HINT[role]}: add ?token=<token> to its "
                                              "address, or send it as 'Authorization: Bearer <token>'.")
    found = token_role(service, token)
    if found is None:
        return Auth(None, status=401, message=f"Unknown token. This page needs {ROLE_HINT[role]}.")
    if found != role and found != "admin":
        return Auth(None, status=403, message=f"This page needs {ROLE_HINT[role]}, not the {found} token.")
    return Auth(found, token, source)


def remember(resp: Response, auth: Auth) -> Response:
    """Keep a header or query token as a cookie, for the page's stream and for reloads without it."""
    if auth.ok and auth.source in ("header", "query") and auth.role and auth.token:
        resp.set_cookie(COOKIE.format(role=auth.role), auth.token, max_age=COOKIE_MAX_AGE[auth.role],
                        httponly=True, samesite="Strict", path="/")
    return resp


def error_page(status: int, title: str, message: str, *, token_form: bool = False) -> Response:
    return Response(render_template("error.html", status=status, title=title, message=message,
                                    token_form=token_form), status=status, mimetype="text/html")


def create_blueprint(service: Service) -> tuple[Blueprint, Hub]:
    cfg = service.cfg
    bp = Blueprint("kiosk_ui", __name__, template_folder="templates", static_folder="static",
                   static_url_path="/ui/static")
    screens = {s.id: s for s in cfg.screens}
    kiosks = {k.id: k for k in cfg.kiosks}
    zones = {z.id: z for z in cfg.zones}
    store_name = cfg.store.name or cfg.store.id

    def max_streams() -> int:
        adj = getattr(service.http_server, "adj", None)
        threads = getattr(adj, "threads", 8)
        return max(1, threads - RESERVED_THREADS)

    def render(target: Target, payload: dict[str, Any]) -> dict[str, Any] | None:
        return screen_view(cfg, payload)

    hub = Hub(render, max_streams=max_streams, per_target=STREAMS_PER_TARGET,
              per_client=cfg.http.streams_per_client)
    service.displays.listeners.append(hub.on_display)

    def stopping() -> bool:
        # Open streams end when the service stops: the page reconnects to the next edge process instead of
        # holding a connection to a server that no longer hears the pipeline.
        return service._stopped.is_set()

    def end_streams() -> None:
        """Before the HTTP server closes: end every stream, so the pages reconnect to the next process."""
        hub.close_all()
        deadline = time.monotonic() + 2.0
        while hub.count() and time.monotonic() < deadline:
            time.sleep(0.02)

    stop_hooks = getattr(service, "stop_hooks", None)  # Service.stop runs them before closing HTTP
    if stop_hooks is not None:
        stop_hooks.append(end_streams)

    def stream(target: Target, snapshot: dict[str, Any] | None) -> Response | tuple[Response, int]:
        if stopping():
            return closing_error(503, "stopping", "the edge is stopping; retry in a moment")
        try:
            s = hub.open(target, client_ip())
        except StreamsFull as full:
            if full.per_client:
                resp, status = api_error(429, "too_many_streams", f"this device already has {full.limit} page "
                                         "streams open (http.streams_per_client); close a page first")
            else:
                resp, status = api_error(503, "too_many_streams", f"all {full.limit} page streams are in use; "
                                         "retry later (each screen and kiosk has its own share)")
            resp.headers["Retry-After"] = "5"
            return resp, status
        view = render(target, snapshot) if snapshot else None
        first = [sse_message("content", {"content": view, "now": now_ms()}) if view is not None
                 else sse_message("hello", {"now": now_ms()})]
        return sse_response(hub, s, first, stopping, request.environ)

    @bp.after_request
    def _headers(resp: Response) -> Response:
        if resp.mimetype == "text/html":
            resp.headers["Content-Security-Policy"] = CSP
            resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"  # tokens travel in page URLs
        return resp

    # --- signage ---------------------------------------------------------------------------------------
    @bp.get("/signage/<screen>")
    def signage(screen: str):
        auth = page_auth(service, "signage")
        if not auth.ok:
            return error_page(auth.status, "Not authorised", auth.message)
        conf = screens.get(screen)
        if conf is None:
            return error_page(404, "Unknown screen", f"No screen {screen!r} in this store's config ([[screens]]).")
        playlist = screen_view(cfg, service.displays.fallback(screen)) or {"items": []}
        boot = {"screen": screen, "store": store_name, "now": now_ms(),
                "content": screen_view(cfg, service.displays.snapshot(screen)), "playlist": playlist["items"]}
        return remember(Response(render_template("signage.html", boot=boot, screen=screen, store=store_name),
                                 mimetype="text/html"), auth)

    @bp.get("/signage/<screen>/stream")
    def signage_stream(screen: str):
        auth = page_auth(service, "signage")
        if not auth.ok:
            return api_error(auth.status, "unauthorized" if auth.status == 401 else "forbidden", auth.message)
        if screen not in screens:
            return api_error(404, "not_found", f"no screen {screen!r} in config")
        return stream(("signage", screen), service.displays.snapshot(screen))

    # --- kiosk -----------------------------------------------------------------------------------------
    @bp.get("/kiosk/<kiosk>")
    def kiosk_page(kiosk: str):
        auth = page_auth(service, "kiosk")
        if not auth.ok:
            return error_page(auth.status, "Not authorised", auth.message)
        conf = kiosks.get(kiosk)
        if conf is None:
            return error_page(404, "Unknown kiosk", f"No kiosk {kiosk!r} in this store's config ([[kiosks]]).")
        zone = zones.get(conf.zone)
        boot = {"kiosk": kiosk, "zone": conf.zone, "zone_name": zone.name if zone and zone.name else conf.zone,
                "store": store_name, "token": cfg.http.tokens.kiosk or auth.token, "idle_s": KIOSK_IDLE_S,
                "products": products_for(conf.zone), "now": now_ms()}
        return remember(Response(render_template("kiosk.html", boot=boot, kiosk=kiosk, store=store_name),
                                 mimetype="text/html"), auth)

    @bp.get("/kiosk/<kiosk>/stream")
    def kiosk_stream(kiosk: str):
        """Content pushed to a kiosk: what the displays hold for the kiosk's id (rules with `kiosks`)."""
        auth = page_auth(service, "kiosk")
        if not auth.ok:
            return api_error(auth.status, "unauthorized" if auth.status == 401 else "forbidden", auth.message)
        if kiosk not in kiosks:
            return api_error(404, "not_found", f"no kiosk {kiosk!r} in config")
        return stream(("kiosk", kiosk), service.displays.snapshot(kiosk))

    @bp.get("/kiosk/<kiosk>/context")
    @require_role("kiosk")
    def kiosk_context_api(kiosk: str):
        if kiosk not in kiosks:
            return api_error(404, "not_found", f"no kiosk {kiosk!r} in config")
        code = request.args.get("customer", "")
        if not code.strip():
            return api_error(400, "bad_request", "query parameter 'customer' is required: a customer id, a "
                             "loyalty card number or an identity key")
        resp = jsonify(kiosk_context(cfg, code))
        resp.headers["Cache-Control"] = "no-store"
        return resp

    @bp.post("/kiosk/<kiosk>/handoff")
    @require_role("kiosk")
    def kiosk_handoff(kiosk: str):
        if kiosk not in kiosks:
            return api_error(404, "not_found", f"no kiosk {kiosk!r} in config")
        body = request_json()
        if not isinstance(body, dict) or not isinstance(body.get("session"), str) \
                or not SESSION_RE.match(body["session"]):
            return api_error(400, "bad_request", "send {\"session\": \"<kiosk session id>\", \"customer\"?: "
                             "\"<customer id>\"}")
        customer = body.get("customer")
        if customer is not None and (not isinstance(customer, str) or len(customer) > 128):
            return api_error(400, "bad_request", "customer must be a customer id string")
        token = kiosk_ui.handoff_token(service, kiosk, body["session"], customer)
        url = f"{cfg.qr.base_url.rstrip('/')}/q/{token}"
        resp = jsonify({"token": token, "url": url, "png_base64": base64.b64encode(qr_png(url)).decode()})
        resp.headers["Cache-Control"] = "no-store"
        return resp, 201

    # --- store dashboard (/, admin) and its KPIs (/api/v1/kpis): kiosk_ui/dashboard.py ----------------
    from kiosk_ui.dashboard import add_routes

    add_routes(bp, service, hub, max_streams)

    return bp, hub
