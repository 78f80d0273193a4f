"""The central store's web pages for chain IT: the fleet at a glance (`/`) and one store (`/stores/<id>`).

Server-rendered HTML, no JavaScript, one stylesheet of our own (nothing fetched from elsewhere); no timed
reload (WCAG 2.2.1): the page says when it was made and links to itself. The admin token is asked for as
sync/central/admin_token.py says.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, render_template

from sync.central import admin_token

CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")


def ago(seconds: float | None) -> str:
    """'12 s ago', '4 min ago', '3 h ago', '2 d ago'; 'never' for None."""
    if seconds is None:
        return "never"
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s // size} {unit} ago"
    return f"{s} s ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return ago(seconds).removesuffix(" ago")


def state_of(row: dict[str, Any]) -> tuple[str, str]:
    """(css class, word) of a store at a glance: never heard, quiet, not ready, ready, or unknown."""
    if row["last_seen_at"] is None:
        return "bad", "Never heard"
    if row["quiet"]:
        return "bad", "Quiet"
    if row.get("dead_threads"):
        return "bad", "Thread died"
    if row.get("ready") is False:
        return "warn", "Not ready"
    if row.get("ready") is True:
        return "ok", "Ready"
    return "warn", "No report"


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    states = Counter(state_of(r)[1] for r in rows)
    versions = Counter(r.get("version") or "unknown" for r in rows if r["last_seen_at"] is not None)
    return {"total": len(rows), "ready": states["Ready"], "not_ready": states["Not ready"] + states["Thread died"],
            "quiet": states["Quiet"] + states["Never heard"], "no_report": states["No report"],
            "outbox": sum(r.get("outbox_pending") or 0 for r in rows),
            "oldest": max((r.get("outbox_oldest_age_s") or 0.0 for r in rows), default=0.0),
            "versions": versions.most_common()}


def register(app: Flask, token: str, fleet: Callable[[], list[dict[str, Any]]],
             rejections: Callable[[str], dict[str, int]], quiet_after_s: float) -> None:
    bp = Blueprint("central_pages", __name__, template_folder="templates", static_folder="static",
                   static_url_path="/ui/static")
    expected = token.encode()

    def page(template: str, **context: Any) -> Response:
        given, source = admin_token.given()
        if not given:
            return refuse(401, "Sign in", "These pages need the central store's admin token: add ?token=<token> "
                                          "to the address, or send it as 'Authorization: Bearer <token>'.")
        if not admin_token.matches(given, expected):
            return refuse(401, "Unknown token", "That is not the admin token of this central store.")
        resp = Response(render_template(template, now=time.time(), ago=ago, duration=duration, state_of=state_of,
                                        clock=time.strftime("%H:%M:%S", time.gmtime()), quiet_after_s=quiet_after_s,
                                        **context),
                        mimetype="text/html")
        return admin_token.remember(resp, given, source)

    def refuse(status: int, title: str, message: str) -> Response:
        return Response(render_template("central_error.html", status=status, title=title, message=message,
                                        token_form=status == 401), status=status, mimetype="text/html")

    @bp.get("/")
    def fleet_page() -> Response:
        rows = fleet()
        return page("fleet.html", rows=rows, summary=summary(rows))

    @bp.get("/stores/<store>")
    def store_page(store: str) -> Response:
        given, _ = admin_token.given()
        row = next((r for r in fleet() if r["store"] == store), None)
        if row is None:
            if admin_token.matches(given, expected):
                return refuse(404, "No such store", f"No store {store[:64]!r}: it has no token here and was never "
                                                    "heard from.")
            return page("store.html", row=None)  # unauthenticated: the sign-in page, not the answer
        return page("store.html", row=row, state=state_of(row), rejected=rejections(store))

    @bp.after_request
    def _headers(resp: Response) -> Response:
        if resp.mimetype == "text/html":
            resp.headers["Content-Security-Policy"] = CSP
            resp.headers["Cache-Control"] = "no-store"
            resp.headers["Referrer-Policy"] = "no-referrer"  # the token may be in the address
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    app.register_blueprint(bp)
