"""The edge's HTTP API (Flask app factory): health, metrics, and the JSON API under /api/v1.

Readers use their own SQLite connection per request (WAL lets them read beside the writer); writes go
through the pipeline like MQTT messages do, so HTTP devices get the same validation and durability.
"""

from __future__ import annotations

import hmac
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from edge import model as ev
from edge.clients import client_address
from edge.model import EdgeError, Message
from edge.jsonbody import NotText, TooDeep, request_json
from edge.store.db import connect
from edge.store.queries import row_to_event_dict
from edge.wire.fields import MAX_DEPTH
from edge.wire.normalize import normalize

if TYPE_CHECKING:
    from edge.service import Service

ROLES = ("admin", "kiosk", "signage")


def api_error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message}}), status


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def client_ip() -> str:
    """The requesting client's address (behind a trusted proxy: the address it forwarded)."""
    return client_address(request.environ, g.service.trusted_proxies)


def token_role(service: Service, token: str | None) -> str | None:
    """The role a token grants (admin grants everything); constant-time comparisons."""
    if not token:
        return None
    tokens = service.cfg.http.tokens
    found = None
    for role in ROLES:
        expected = getattr(tokens, role)
        if expected and hmac.compare_digest(expected.encode(), token.encode()):
            found = role
    return found


def require_role(*roles: str) -> Callable:
    """Endpoints that change state or return PII: 401 without a token, 403 with a token of another role."""

    def wrap(fn: Callable) -> Callable:
        @wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            service: Service = g.service
            token = bearer_token()
            if token is None:
                return api_error(401, "unauthorized", "missing bearer token: send 'Authorization: Bearer <token>' "
                                 f"with the {' or '.join(roles)} token")
            role = token_role(service, token)
            if role is None:
                return api_error(401, "unauthorized", "unknown token")
            if role != "admin" and role not in roles:
                return api_error(403, "forbidden", f"this endpoint needs the {' or '.join(roles)} token, "
                                 f"not the {role} token")
            g.role = role
            return fn(*args, **kwargs)

        return inner

    return wrap


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadArg(f"query parameter {name!r} must be a whole number, got {raw[:20]!r}") from None
    if not lo <= value <= hi:
        raise BadArg(f"query parameter {name!r} must be between {lo} and {hi}")
    return value


class BadArg(EdgeError):
    """A query parameter the endpoint cannot use."""


def create_app(service: Service) -> Flask:
    app = Flask("instore_edge")
    # The server refuses bigger bodies before reading them (edge.httpserver); this covers other servers.
    app.config["MAX_CONTENT_LENGTH"] = service.cfg.limits.http_body_bytes
    app.json.sort_keys = False
    db_path = service.cfg.db.path

    def db() -> sqlite3.Connection:
        if "db" not in g:
            g.db = connect(db_path)
            g.db.row_factory = sqlite3.Row
        return g.db

    @app.before_request
    def _service() -> None:
        g.service = service

    @app.teardown_appcontext
    def _close(exc: BaseException | None) -> None:
        conn = g.pop("db", None)
        if conn is not None:
            conn.close()

    @app.errorhandler(BadArg)
    def _bad_arg(exc: BadArg):
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
            message = f"request body larger than {service.cfg.limits.http_body_bytes} bytes"
        return api_error(exc.code or 500, codes.get(exc.code or 500, "error"), message)

    @app.get("/healthz")
    def healthz():
        dead = service.watchdog.dead()
        if dead:  # the process is about to exit and be restarted: never alive-looking and deaf
            return jsonify({"status": "failed", "store": service.cfg.store.id, "dead_threads": dead}), 503
        return jsonify({"status": "ok", "store": service.cfg.store.id})

    @app.get("/readyz")
    def readyz():
        checks = service.readiness()
        ok = all(c["ok"] for c in checks.values())
        return jsonify({"ready": ok, "checks": checks}), 200 if ok else 503

    @app.get("/api/v1/sync")
    @require_role("admin")
    def sync_status():
        """What `instore-edge sync status` shows: only the running edge knows its last push, pull and breaker."""
        return jsonify(service.sync.status())

    @app.get("/metrics")
    def metrics():
        return Response(service.metrics.render(), mimetype="text/plain; version=0.0.4")

    @app.get("/api/v1/events")
    @require_role("admin")
    def list_events():
        limit = _int_arg("limit", 100, 1, 1000)
        before = _int_arg("before", 2**62, 1, 2**62)
        kind = request.args.get("kind") or None
        sql = "SELECT * FROM events WHERE seq < ?"
        params: list[Any] = [before]
        if kind:
            sql += " AND kind = ?"
            params.append(kind)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        rows = [row_to_event_dict(dict(r)) for r in db().execute(sql, params)]
        return jsonify({"events": rows, "next_before": rows[-1]["seq"] if len(rows) == limit else None})

    @app.post("/api/v1/events")
    @require_role("kiosk", "admin")
    def post_event():
        body = request_json()
        if not isinstance(body, dict):
            return api_error(400, ev.NOT_JSON, "send a JSON object: {\"kind\": \"window|qr|kiosk|pos\", "
                             "\"device\": \"<id>\", \"event\": {...payload as on MQTT...}}")
        kind, device, payload = body.get("kind"), body.get("device"), body.get("event")
        topics = {"window": "window/{d}", "qr": "qr/{d}", "kiosk": "kiosk/{d}/event", "pos": "pos/{d}"}
        if not isinstance(kind, str) or kind not in topics:
            return api_error(400, ev.INVALID_VALUE, f"kind must be one of {', '.join(topics)}")
        if not isinstance(device, str) or not device or "/" in device or "+" in device or "#" in device:
            return api_error(400, ev.INVALID_VALUE, "device must be the device id, without '/', '+' or '#'")
        if not isinstance(payload, dict):
            return api_error(400, ev.MISSING_FIELD, "event must be a JSON object with the MQTT payload")
        topic = f"{service.cfg.prefix}/{topics[kind].format(d=device)}"
        try:
            raw = json.dumps(payload).encode()
        except RecursionError:
            return api_error(400, ev.NOT_JSON, f"event: JSON nested deeper than {MAX_DEPTH} levels")
        now = time.time()
        try:
            events = normalize(topic, raw, now, service.cfg)
        except ev.Rejected as exc:
            return api_error(400, exc.reason, exc.detail)
        done = threading.Event()
        msg = Message(topic, raw, 1, 0, now, done=done.set)
        service.pipeline.submit(msg)
        if not done.wait(10):
            return api_error(503, "not_committed", "the event was queued but not yet committed; retry with the "
                             "same payload (it is recorded once)")
        if msg.outcome is not None:  # valid, yet processing it failed: a dead letter, not an event
            return api_error(500, msg.outcome, "the event was dead-lettered while processing it (see "
                             "/api/v1/deadletters and the edge log)")
        return jsonify({"recorded": [e.event_id for e in events]}), 201

    @app.get("/api/v1/decisions")
    @require_role("admin")
    def list_decisions():
        limit = _int_arg("limit", 100, 1, 1000)
        screen = request.args.get("screen") or None
        sql = ("SELECT id, ts, screen, content_id, rule_id, reason, event_id, customer, expires_at, extra "
               "FROM decisions")
        params: list[Any] = []
        if screen:
            sql += " WHERE screen = ?"
            params.append(screen)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        rows = [dict(r) for r in db().execute(sql, params)]
        for row in rows:
            row["extra"] = json.loads(row["extra"]) if row.get("extra") else None
        return jsonify({"decisions": rows})

    @app.get("/api/v1/presence")
    @require_role("admin")
    def presence():
        now = time.time()
        rows = []
        for r in db().execute("SELECT subject, zone, gateway, entered_at, last_seen, customer, visit_id, "
                              "visit_started_at FROM presence ORDER BY zone, entered_at"):
            d = dict(r)
            d["for_s"] = round(now - d["entered_at"], 1)
            d["in_store_s"] = round(now - (d.pop("visit_started_at") or d["entered_at"]), 1)
            d["known"] = d["customer"] is not None
            # Anonymous shoppers are known only by their visit id, which lasts one visit.
            d["visitor"] = d["customer"] or d["visit_id"]
            rows.append(d)
        return jsonify({"presence": rows})

    @app.get("/api/v1/deadletters")
    @require_role("admin")
    def deadletters():
        limit = _int_arg("limit", 100, 1, 1000)
        rows = db().execute("SELECT * FROM deadletters ORDER BY id DESC LIMIT ?", (limit,))
        return jsonify({"deadletters": [dict(r) for r in rows]})

    @app.delete("/api/v1/customers/<customer_id>")
    @require_role("admin")
    def erase_customer(customer_id: str):
        if not customer_id or len(customer_id) > 128:
            return api_error(400, ev.INVALID_VALUE, "customer id must be 1 to 128 characters")
        if not service.erase(customer_id):
            return api_error(503, "not_committed", "the erasure is queued but not yet committed; retry")
        return jsonify({"erased": customer_id})

    @app.get("/api/v1/gateways")
    @require_role("admin")
    def gateways():
        return jsonify({"gateways": service.gateways()})

    @app.get("/api/v1/displays")
    @require_role("signage", "kiosk", "admin")
    def displays():
        return jsonify({"displays": service.displays.all()})

    for hook in service.http_hooks:
        hook(app)
    return app
