"""The edge's HTTP side (Flask): `create_app(edge)` builds the app from the running edge's port.

`health` (/healthz, /readyz, /metrics), `api` (/api/v1), `landing` (/q/ pages and POST /api/v1/qr), `auth`
(roles, tokens, cookies, page auth), `i18n` (each request's language, Flask-Babel). The pages (edge/pages, templates in kiosk_ui) register their own blueprint on this app.
"""

from __future__ import annotations

from flask import Flask, g
from werkzeug.exceptions import HTTPException

from sync.jsonbody import NotText, TooDeep
from edge.web import api, health, i18n, landing
from edge.web.auth import api_error
from edge.web.ports import Edge


def create_app(edge: Edge) -> Flask:
    app = Flask("instore_edge")
    # The server refuses bigger bodies before reading them (sync.httpserver); this covers other servers.
    app.config["MAX_CONTENT_LENGTH"] = edge.cfg.limits.http_body_bytes
    app.json.sort_keys = False
    i18n.init_app(app, edge.cfg)

    @app.before_request
    def _edge() -> None:
        g.edge = edge

    @app.teardown_appcontext
    def _close(exc: BaseException | None) -> None:
        conn = g.pop("db", None)
        if conn is not None:
            conn.close()

    @app.errorhandler(api.BadArg)
    def _bad_arg(exc: api.BadArg):
        return api_error(400, "bad_request", str(exc))

    @app.errorhandler(NotText)
    def _not_text(exc: NotText):
        return api_error(400, exc.code, str(exc))

    @app.errorhandler(TooDeep)
    def _too_deep(exc: TooDeep):
        return api_error(400, exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 400: "bad_request"}
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"request body larger than {edge.cfg.limits.http_body_bytes} bytes"
        return api_error(exc.code or 500, codes.get(exc.code or 500, "error"), message)

    app.register_blueprint(health.blueprint(edge))
    app.register_blueprint(api.blueprint(edge))
    app.register_blueprint(landing.blueprint(edge))
    return app
