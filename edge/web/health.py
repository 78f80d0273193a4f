"""/healthz (every worker thread alive), /readyz (broker, database, ingest lag, sync) and /metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from edge.web.ports import Edge


def blueprint(edge: Edge) -> Blueprint:
    bp = Blueprint("health", __name__)

    @bp.get("/healthz")
    def healthz():
        dead = edge.dead_threads()
        if dead:  # the process is about to exit and be restarted: never alive-looking and deaf
            return jsonify({"status": "failed", "store": edge.cfg.store.id, "dead_threads": dead}), 503
        return jsonify({"status": "ok", "store": edge.cfg.store.id})

    @bp.get("/readyz")
    def readyz():
        checks = edge.readiness()
        ok = all(c["ok"] for c in checks.values())
        return jsonify({"ready": ok, "checks": checks}), 200 if ok else 503

    @bp.get("/metrics")
    def metrics():
        return Response(edge.metrics.render(), mimetype="text/plain; version=0.0.4")

    return bp
