"""Routes of the pages: /signage/<screen>, /kiosk/<kiosk> (each with /stream), the kiosk API, and /.

Pages authenticate as edge.web.auth says: a bearer header, a `?token=` on the URL, or the role's cookie.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request
from flask_babel import gettext as _

import kiosk_ui

from edge.qr import QrError, qr_png
from edge.web.auth import api_error, client_ip, page_auth, remember, require_role
from edge.web.i18n import languages, strings_by_language, use_store_language
from sync.jsonbody import request_json
from edge.pages.dashboard import add_routes
from edge.pages.ports import Store
from edge.pages.streams import Hub, StreamsFull, Target, closing_error, now_ms, sse_message, sse_response
from edge.pages.strings import kiosk_strings
from edge.pages.views import error_page, screen_view, with_texts

KIOSK_IDLE_S = 90
SESSION_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def handoff_token(store: Store, kiosk: str, session: str, customer: str | None) -> str:
    """The token a kiosk's "continue on your phone" QR carries, as `{qr.base_url}/q/<token>`.

    A signed, single-use, short-lived handoff token; the kiosk session and the shopper stay server-side.
    Without `[qr] secret` the code is an opaque random token, which the landing page refuses with "QR codes
    are not set up".
    """
    try:
        return store.mint_handoff(kiosk, session, customer)
    except QrError:
        return secrets.token_urlsafe(18)


def create_blueprint(store: Store, hub: Hub, max_streams: int) -> Blueprint:
    cfg = store.cfg
    bp = Blueprint("kiosk_ui", __name__, template_folder=str(kiosk_ui.TEMPLATES), static_folder=str(kiosk_ui.STATIC),
                   static_url_path="/ui/static")
    screens = {s.id: s for s in cfg.screens}
    kiosks = {k.id: k for k in cfg.kiosks}
    zones = {z.id: z for z in cfg.zones}
    store_name = cfg.store.name or cfg.store.id

    def render(target: Target, payload: dict[str, Any]) -> dict[str, Any] | None:
        return screen_view(cfg, payload, every_language=target[0] == "kiosk", catalogue=store.catalogue)

    def stream(target: Target, snapshot: dict[str, Any] | None) -> Response | tuple[Response, int]:
        if store.stopping:
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
        return sse_response(hub, s, first, lambda: store.stopping, request.environ)

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
        use_store_language()
        auth = page_auth("signage")
        if not auth.ok:
            return error_page(auth.status, _("Not authorised"), auth.message)
        conf = screens.get(screen)
        if conf is None:
            return error_page(404, _("Unknown screen"),
                              _("No screen %(id)s in this store's config ([[screens]]).", id=repr(screen)))
        playlist = screen_view(cfg, store.fallback(screen), catalogue=store.catalogue) or {"items": []}
        boot = {"screen": screen, "store": store_name, "now": now_ms(), "lang": cfg.store.language,
                "content": screen_view(cfg, store.display(screen), catalogue=store.catalogue),
                "playlist": playlist["items"]}
        return remember(Response(render_template("signage.html", boot=boot, screen=screen, store=store_name),
                                 mimetype="text/html"), auth)

    @bp.get("/signage/<screen>/stream")
    def signage_stream(screen: str):
        auth = page_auth("signage")
        if not auth.ok:
            return api_error(auth.status, "unauthorized" if auth.status == 401 else "forbidden", auth.message)
        if screen not in screens:
            return api_error(404, "not_found", f"no screen {screen!r} in config")
        return stream(("signage", screen), store.display(screen))

    # --- kiosk -----------------------------------------------------------------------------------------
    @bp.get("/kiosk/<kiosk>")
    def kiosk_page(kiosk: str):
        use_store_language()  # a shopper may switch; the kiosk comes back to it when the session ends
        auth = page_auth("kiosk")
        if not auth.ok:
            return error_page(auth.status, _("Not authorised"), auth.message)
        conf = kiosks.get(kiosk)
        if conf is None:
            return error_page(404, _("Unknown kiosk"),
                              _("No kiosk %(id)s in this store's config ([[kiosks]]).", id=repr(kiosk)))
        zone = zones.get(conf.zone)
        boot = {"kiosk": kiosk, "zone": conf.zone, "zone_name": zone.name if zone and zone.name else conf.zone,
                "store": store_name, "token": cfg.http.tokens.kiosk or auth.token, "idle_s": KIOSK_IDLE_S,
                "products": [with_texts(cfg, p) for p in store.products_for(conf.zone)], "now": now_ms(),
                "lang": cfg.store.language, "languages": languages(), "strings": strings_by_language(kiosk_strings)}
        return remember(Response(render_template("kiosk.html", boot=boot, kiosk=kiosk, store=store_name),
                                 mimetype="text/html"), auth)

    @bp.get("/kiosk/<kiosk>/stream")
    def kiosk_stream(kiosk: str):
        """Content pushed to a kiosk: what the displays hold for the kiosk's id (rules with `kiosks`)."""
        auth = page_auth("kiosk")
        if not auth.ok:
            return api_error(auth.status, "unauthorized" if auth.status == 401 else "forbidden", auth.message)
        if kiosk not in kiosks:
            return api_error(404, "not_found", f"no kiosk {kiosk!r} in config")
        return stream(("kiosk", kiosk), store.display(kiosk))

    @bp.get("/kiosk/<kiosk>/context")
    @require_role("kiosk")
    def kiosk_context_api(kiosk: str):
        if kiosk not in kiosks:
            return api_error(404, "not_found", f"no kiosk {kiosk!r} in config")
        code = request.args.get("customer", "")
        if not code.strip():
            return api_error(400, "bad_request", "query parameter 'customer' is required: a customer id, a "
                             "loyalty card number or an identity key")
        view = store.kiosk_view(code)
        for key in ("wishlist", "cart"):
            view[key] = [with_texts(cfg, p) for p in view.get(key) or []]
        for order in view.get("orders_ready") or []:
            order["items"] = [with_texts(cfg, p) for p in order.get("items") or []]
        resp = jsonify(view)
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
        token = handoff_token(store, kiosk, body["session"], customer)
        url = f"{cfg.qr.base_url.rstrip('/')}/q/{token}"
        resp = jsonify({"token": token, "url": url, "png_base64": base64.b64encode(qr_png(url)).decode()})
        resp.headers["Cache-Control"] = "no-store"
        return resp, 201

    # --- store dashboard (/, admin) and its KPIs (/api/v1/kpis): edge/pages/dashboard.py ----------------
    add_routes(bp, store, hub, max_streams)

    return bp
