"""The store dashboard (`/`, admin) and the JSON it draws from (`GET /api/v1/kpis`).

The page is rendered with the current status (so it reads without JavaScript); `kiosk_ui/static/dashboard_page.js` then
fetches `/api/v1/kpis` every ~10 s and draws the charts with `charts.js` on Chart.js (vendored in
static/vendor/chartjs: stores go offline), each with its figures as a table for assistive tools.
The API takes the admin token as a bearer header or, for the page's own fetches, the admin cookie the
page set (HttpOnly, SameSite=Strict); never on the URL.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, request
from flask_babel import gettext as _

from edge.i18n import SOURCE_LANGUAGE
from edge.kpis import BUCKETS_S, KpiError, kpis, resolve_range
from edge.store.db import connect
from edge.web.auth import admin_refusal, api_error, page_auth, remember
from edge.web.i18n import use_language
from edge.pages.ports import Store
from edge.pages.streams import Hub
from edge.pages.views import error_page

REFRESH_S = 10


def live_status(store: Store, hub: Hub | None) -> dict[str, Any]:
    """Broker, central/sync, outbox, cache, screens: what the dashboard's status cards show (no PII)."""
    cfg = store.cfg
    checks = store.readiness()
    try:
        st = store.sync_status()
    except (sqlite3.Error, OSError) as exc:  # pragma: no cover - a broken file shows in checks.db too
        st = {"enabled": bool(cfg.central.url), "last_error": str(exc)}
    sync = {k: st.get(k) for k in ("enabled", "running", "auth_ok", "breaker", "last_error", "last_error_at",
                                   "last_push_success", "last_pull", "outbox_pending", "outbox_oldest_age_s",
                                   "pushed", "rejected_total")}
    current = store.displays()
    screens = []
    for s in list(cfg.screens) + list(cfg.kiosks):
        p = current.get(s.id) or {}
        screens.append({"id": s.id, "content_id": p.get("content_id", ""), "reason": p.get("reason", "")})
    return {
        "ready": all(c["ok"] for c in checks.values()),
        "checks": checks,
        "sync": sync,
        "cache": {"profiles": st.get("profiles_cached"), "max": cfg.central.cache_max_profiles},
        "outbox_capacity": cfg.central.outbox_max_events,
        "screens": screens,
        "streams": hub.count() if hub is not None else None,
        "now": round(time.time(), 3),
    }


def add_routes(bp: Blueprint, store: Store, hub: Hub, max_streams: int) -> None:
    """`/` (the dashboard page) and `/api/v1/kpis` on the kiosk_ui blueprint."""
    cfg = store.cfg
    zones = {z.id: z for z in cfg.zones}
    store_name = cfg.store.name or cfg.store.id

    @bp.get("/")
    def dashboard():
        auth = page_auth("admin")
        if not auth.ok:
            return error_page(auth.status, _("Store IT sign-in"), auth.message, token_form=True)
        if auth.source == "query":  # keep the token out of the address bar and the history
            return remember(redirect("/", code=303), auth)
        use_language(SOURCE_LANGUAGE)  # the dashboard's own texts are not in the catalogues yet: English
        now = time.time()
        current = store.displays()
        rows = []
        for s in cfg.screens:
            p = current.get(s.id) or {}
            expires = p.get("expires_at")
            rows.append({"id": s.id, "zone": s.zone, "content_id": p.get("content_id", ""),
                         "template": p.get("template", ""), "reason": p.get("reason", ""), "rule": p.get("rule"),
                         "expires_in": None if expires is None else max(0.0, round(expires / 1000 - now, 1)),
                         "viewers": hub.viewers(("signage", s.id))})
        kiosk_rows = []
        for k in cfg.kiosks:
            p = current.get(k.id) or {}
            kiosk_rows.append({"id": k.id, "zone": k.zone, "content_id": p.get("content_id", ""),
                               "reason": p.get("reason", ""), "viewers": hub.viewers(("kiosk", k.id))})
        checks = store.readiness()
        zone_names = {z.id: z.name or z.id for z in cfg.zones}
        resp = Response(render_template(
            "dashboard.html", store=store_name, store_id=cfg.store.id, screens=rows, kiosks=kiosk_rows,
            checks=checks, ready=all(c["ok"] for c in checks.values()), streams=hub.count(),
            max_streams=max_streams, zones=zones, timezone=cfg.store.timezone,
            boot={"zones": zone_names, "refresh_s": REFRESH_S, "timezone": cfg.store.timezone,
                  "store": store_name}), mimetype="text/html")
        return remember(resp, auth)

    @bp.get("/api/v1/kpis")
    def api_kpis():
        refused = admin_refusal()
        if refused is not None:
            return refused
        tz = cfg.store.timezone
        raw_bucket = request.args.get("bucket")
        bucket: int | None = None
        if raw_bucket:
            try:
                bucket = int(raw_bucket)
            except ValueError:
                bucket = -1
            if bucket not in BUCKETS_S:
                return api_error(400, "bad_request", f"query parameter 'bucket' must be one of "
                                 f"{', '.join(map(str, BUCKETS_S))} (seconds), got {raw_bucket[:20]!r}")
        now = time.time()
        try:
            start, end = resolve_range(request.args.get("from"), request.args.get("to"), tz, now)
            conn = connect(cfg.db.path)
            try:
                conn.execute("PRAGMA query_only=1")
                body = kpis(conn, start, end, tz, bucket, now=now, outbox_capacity=cfg.central.outbox_max_events)
            finally:
                conn.close()
        except KpiError as exc:
            return api_error(400, "bad_request", str(exc))
        body["store"] = {"id": cfg.store.id, "name": store_name,
                         "zones": {z.id: z.name or z.id for z in cfg.zones}}
        if request.args.get("live", "1") != "0":
            body["live"] = live_status(store, hub)
        resp = jsonify(body)
        resp.headers["Cache-Control"] = "no-store"
        return resp
