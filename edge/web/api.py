"""The JSON API under /api/v1: events, decisions, presence, dead letters, gateways, displays, sync,
erasure and export (edge.privacy).

Readers use their own SQLite connection per request (WAL lets them read beside the writer); writes go
through the pipeline like MQTT messages do, so HTTP devices get the same validation and durability.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import Any

from flask import Blueprint, g, jsonify, request

from edge import model as ev
from edge import privacy
from edge.model import EdgeError, Message
from edge.store.db import connect
from edge.store.queries import NOT_SIGHTING, row_to_event_dict
from edge.web.auth import api_error, require_role
from edge.web.ports import Edge
from edge.wire.fields import MAX_DEPTH
from edge.wire.normalize import normalize
from sync.jsonbody import request_json
from sync.queryargs import int_arg


def db() -> sqlite3.Connection:
    """This request's read connection (closed when the request ends: edge.web.create_app)."""
    if "db" not in g:
        g.db = connect(g.edge.cfg.db.path)
        g.db.row_factory = sqlite3.Row
    return g.db


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    return int_arg(name, default, lo, hi, BadArg)


class BadArg(EdgeError):
    """A query parameter the endpoint cannot use."""


def blueprint(edge: Edge) -> Blueprint:
    bp = Blueprint("api", __name__)

    @bp.get("/api/v1/sync")
    @require_role("admin")
    def sync_status():
        """What `instore-edge sync status` shows: only the running edge knows its last push, pull and breaker."""
        return jsonify(edge.sync_status())

    @bp.get("/api/v1/events")
    @require_role("admin")
    def list_events():
        limit = _int_arg("limit", 100, 1, 1000)
        before = _int_arg("before", 2**62, 1, 2**62)
        kind = request.args.get("kind") or None
        sql = "SELECT * FROM events WHERE seq < ?"
        params: list[Any] = [before]
        if kind:
            sql += " AND kind = ?" + ("" if kind == "beacon" else f" AND {NOT_SIGHTING}")  # sightings: by seq
            params.append(kind)
        sql += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        rows = [row_to_event_dict(dict(r)) for r in db().execute(sql, params)]
        return jsonify({"events": rows, "next_before": rows[-1]["seq"] if len(rows) == limit else None})

    @bp.post("/api/v1/events")
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
        topic = f"{edge.cfg.prefix}/{topics[kind].format(d=device)}"
        try:
            raw = json.dumps(payload).encode()
        except RecursionError:
            return api_error(400, ev.NOT_JSON, f"event: JSON nested deeper than {MAX_DEPTH} levels")
        now = time.time()
        try:
            events = normalize(topic, raw, now, edge.cfg)
        except ev.Rejected as exc:
            return api_error(400, exc.reason, exc.detail)
        done = threading.Event()
        msg = Message(topic, raw, 1, 0, now, done=done.set)
        edge.submit(msg)
        if not done.wait(10):
            return api_error(503, "not_committed", "the event was queued but not yet committed; retry with the "
                             "same payload (it is recorded once)")
        if msg.outcome is not None:  # valid, yet processing it failed: a dead letter, not an event
            return api_error(500, msg.outcome, "the event was dead-lettered while processing it (see "
                             "/api/v1/deadletters and the edge log)")
        return jsonify({"recorded": [e.event_id for e in events]}), 201

    @bp.get("/api/v1/decisions")
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

    @bp.get("/api/v1/presence")
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

    @bp.get("/api/v1/deadletters")
    @require_role("admin")
    def deadletters():
        limit = _int_arg("limit", 100, 1, 1000)
        rows = db().execute("SELECT * FROM deadletters ORDER BY id DESC LIMIT ?", (limit,))
        return jsonify({"deadletters": [dict(r) for r in rows]})

    @bp.delete("/api/v1/customers/<customer_id>")
    @require_role("admin")
    def erase_customer(customer_id: str):
        if not customer_id or len(customer_id) > 128:
            return api_error(400, ev.INVALID_VALUE, "customer id must be 1 to 128 characters")
        if not edge.erase(customer_id):
            return api_error(503, "not_committed", "the erasure is queued but not yet committed; retry")
        return jsonify({"erased": customer_id})

    @bp.get("/api/v1/customers/<customer_id>/export")
    @require_role("admin")
    def export_customer(customer_id: str):
        """Right of access: what this store holds about a shopper (edge.privacy knows where that is)."""
        if not customer_id or len(customer_id) > 128:
            return api_error(400, ev.INVALID_VALUE, "customer id must be 1 to 128 characters")
        found = privacy.export_customer(db(), customer_id)
        if found is None:
            return api_error(404, "not_found", "this store holds nothing about that customer")
        return jsonify(found)

    @bp.get("/api/v1/gateways")
    @require_role("admin")
    def gateways():
        return jsonify({"gateways": edge.gateways()})

    @bp.get("/api/v1/displays")
    @require_role("signage", "kiosk", "admin")
    def displays():
        return jsonify({"displays": edge.displays()})

    return bp
