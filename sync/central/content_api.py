"""The central store's campaign, catalogue and asset API: the admin side (marketing edits and publishes) and the
store channel (each store pulls what is live for it, and its assets).

Routes only; the shapes are checked in sync/central/content.py and the data lives behind storage.Storage.
Registered by app.create_app, which passes its token check (`require`) and its JSON body reader.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, request

from sync import protocol as p
from sync.central import content as c
from sync.central import metrics
from sync.central.storage import CentralError, Storage

ASSET_CACHE = "private, max-age=31536000, immutable"  # an asset's name is its hash: it never changes


class InvalidBody(CentralError):
    """A body that does not have the admin API's shape (the answer lists every field to fix)."""

    code = "invalid_body"

    def __init__(self, what: str, errors: list[str]) -> None:
        super().__init__(f"invalid {what}: " + "; ".join(errors[:20]))
        self.errors = errors


def invalid_answer(exc: InvalidBody) -> tuple[Response, int]:
    return jsonify({"error": {"code": exc.code, "message": str(exc), "errors": exc.errors[:200]}}), 400


def campaign_view(found: dict[str, Any], known_stores: list[str]) -> dict[str, Any]:
    """GET /v1/admin/campaigns/{id}: versions, what is live where, and per targeted store applied / pending /
    refused (+ reason) and reach."""
    state: c.CampaignState = found["state"]
    bodies = {v["version"]: v for v in found["versions"]}
    tags = found["store_tags"]
    stores = {s: tags.get(s, []) for s in [*known_stores, *tags]}
    rows = c.campaign_report(state, bodies, stores, found["status"])
    live = {} if state.withdrawn else state.live
    latest = found["versions"][-1] if found["versions"] else None
    return {"id": state.id, "name": state.name, "latest_version": state.latest, "live": live,
            "withdrawn": state.withdrawn, "can_roll_back": bool(state.history),
            "status": "withdrawn" if state.withdrawn else "live" if live else "draft",
            "versions": found["versions"], "draft": latest, "stores": rows,
            "totals": {"applied": sum(r["state"] == "applied" for r in rows),
                       "pending": sum(r["state"] == "pending" for r in rows),
                       "refused": sum(r["state"] == "refused" for r in rows),
                       "shown": sum(r["shown"] for r in rows), "reached": sum(r["reached"] for r in rows)}}


def register(app: Flask, central: Storage, require: Callable[[str], Callable], json_body: Callable[[], Any],
             known_stores: Callable[[], list[str]], int_arg: Callable[..., int], float_arg: Callable[..., float],
             note_pull: Callable[[str], None]) -> None:
    """Add the routes of this module to the central store's app."""

    def checked(what: str, validate: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        body, _ = json_body()
        try:
            return validate(body)
        except c.Invalid as exc:
            raise InvalidBody(what, exc.errors) from None

    def path_id(value: str, what: str) -> None:
        try:
            c.check_id(value, what)
        except c.Invalid as exc:
            raise InvalidBody(what, exc.errors) from None

    app.register_error_handler(InvalidBody, invalid_answer)

    # --- assets ---------------------------------------------------------------------------------------------

    @app.put("/v1/admin/assets/<sha>")
    @require("admin")
    def put_asset(sha: str):
        if c.SHA256_RE.fullmatch(sha) is None:
            raise InvalidBody("asset", [f"path: {sha[:70]!r} is not a SHA-256; name the asset by the 64 lowercase "
                                        "hex digits of its bytes' SHA-256"])
        try:
            kind = c.asset_type(request.headers.get("Content-Type"))
        except c.Invalid as exc:
            raise InvalidBody("asset", exc.errors) from None
        request.max_content_length = c.MAX_ASSET_BYTES
        data = request.get_data(cache=False)  # 413 beyond the cap
        if not data:
            raise InvalidBody("asset", ["body: empty; send the asset's bytes"])
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            raise InvalidBody("asset", [f"body: the bytes hash to {actual}, not to {sha}: an asset is stored under "
                                        "its own SHA-256 (the upload may be damaged, or the name wrong)"])
        created = central.put_asset(sha, kind, data)
        return jsonify({"sha256": sha, "content_type": kind, "size": len(data), "created": created}), \
            201 if created else 200

    @app.get("/v1/assets/<sha>")
    @require("any")
    def get_asset(sha: str):
        etag = f'"{sha}"'
        found = central.get_asset(sha) if c.SHA256_RE.fullmatch(sha) else None
        if found is None:
            return jsonify({"error": {"code": "not_found",
                                      "message": f"no asset {sha[:70]!r} at the central store"}}), 404
        if etag in request.headers.get("If-None-Match", ""):
            return Response(status=304, headers={"ETag": etag, "Cache-Control": ASSET_CACHE})
        kind, data = found
        return Response(data, content_type=kind, headers={"ETag": etag, "Cache-Control": ASSET_CACHE,
                                                          "X-Content-Type-Options": "nosniff"})

    @app.get("/v1/admin/assets")
    @require("admin")
    def list_assets():
        return jsonify({"assets": central.list_assets()})

    # --- products and stores --------------------------------------------------------------------------------

    @app.put("/v1/admin/products/<sku>")
    @require("admin")
    def put_product(sku: str):
        path_id(sku, "sku")
        return jsonify(central.put_product(sku, checked("product", c.validate_product)))

    @app.delete("/v1/admin/products/<sku>")
    @require("admin")
    def delete_product(sku: str):
        path_id(sku, "sku")
        return jsonify(central.delete_product(sku))

    @app.get("/v1/admin/products")
    @require("admin")
    def list_products():
        return jsonify({"products": central.list_products()})

    @app.put("/v1/admin/stores/<store>")
    @require("admin")
    def put_store(store: str):
        if not p.STORE_ID_RE.fullmatch(store):
            raise InvalidBody("store", [f"store id {store[:40]!r}: expected 1 to 64 letters, digits, '_', '.', '-'"])
        return jsonify(central.put_store_meta(store, checked("store", c.validate_store)))

    # --- campaigns ------------------------------------------------------------------------------------------

    @app.put("/v1/admin/campaigns/<cid>")
    @require("admin")
    def put_campaign(cid: str):
        path_id(cid, "campaign id")
        return jsonify(central.put_campaign(cid, checked("campaign", c.validate_campaign)))

    @app.post("/v1/admin/campaigns/<cid>/publish")
    @require("admin")
    def publish(cid: str):
        path_id(cid, "campaign id")
        stores = None
        if request.get_data(cache=True).strip():
            body, _ = json_body()
            if not isinstance(body, dict) or set(body) - {"stores"}:
                raise InvalidBody("publish", ['body: expected {"stores": ["<store>", ...]} for a staged rollout, '
                                              "or no body (every store the campaign targets)"])
            stores = body.get("stores")
            if stores is not None and (not isinstance(stores, list) or not stores or not all(
                    isinstance(s, str) and (s == c.ALL or p.STORE_ID_RE.fullmatch(s)) for s in stores)):
                raise InvalidBody("publish", ['stores: expected a non-empty list of store ids, e.g. ["milano-01"], '
                                              'or ["*"] for every target'])
            if stores is not None and c.ALL in stores:
                stores = None
        return jsonify(central.publish_campaign(cid, stores))

    @app.post("/v1/admin/campaigns/<cid>/rollback")
    @require("admin")
    def rollback(cid: str):
        path_id(cid, "campaign id")
        return jsonify(central.rollback_campaign(cid))

    @app.delete("/v1/admin/campaigns/<cid>")
    @require("admin")
    def withdraw(cid: str):
        path_id(cid, "campaign id")
        return jsonify(central.withdraw_campaign(cid))

    @app.get("/v1/admin/campaigns/<cid>")
    @require("admin")
    def get_campaign(cid: str):
        found = central.campaign_detail(cid)
        if found is None:
            return jsonify({"error": {"code": "not_found", "message": f"no campaign {cid[:64]!r}"}}), 404
        return jsonify(campaign_view(found, known_stores()))

    @app.get("/v1/admin/campaigns")
    @require("admin")
    def list_campaigns():
        stores = known_stores()
        out = []
        for found in central.campaign_list():
            view = campaign_view(found, stores)
            out.append({k: view[k] for k in ("id", "name", "latest_version", "live", "status", "withdrawn",
                                             "totals")})
        return jsonify({"campaigns": out})

    # --- orders ---------------------------------------------------------------------------------------------

    @app.post("/v1/admin/orders/<order_id>/ready")
    @require("admin")
    def order_ready(order_id: str):
        body, _ = json_body()
        bay = body.get("bay") if isinstance(body, dict) else None
        if not isinstance(bay, str) or not 0 < len(bay) <= 32 or not bay.isprintable():
            raise InvalidBody("order", ['bay: expected {"bay": "<pickup bay, e.g. B3>"} (1 to 32 characters)'])
        return jsonify(central.order_ready(order_id, bay))

    @app.get("/v1/admin/orders/<order_id>")
    @require("admin")
    def get_order(order_id: str):
        order = central.get_order(order_id)
        if order is None:
            return jsonify({"error": {"code": "not_found", "message": f"no order {order_id[:128]!r}"}}), 404
        return jsonify(order)

    # --- the store channel ----------------------------------------------------------------------------------

    @app.get("/v1/stores/<store>/content/changes")
    @require("own_store")
    def content_changes(store: str):
        if not p.STORE_ID_RE.fullmatch(store):
            raise InvalidBody("request", [f"store id {store[:40]!r}: expected 1 to 64 letters, digits, '_', '.', '-'"])
        limit = int_arg("limit", p.DEFAULT_CHANGES_LIMIT, 1, p.MAX_CHANGES_LIMIT)
        wait_s = float_arg("wait_s", 0.0, 0.0, p.MAX_CHANGES_WAIT_S)
        note_pull(store)
        if wait_s <= 0:
            return jsonify(central.content_changes(request.args.get("since"), limit, store))
        with metrics.FEED_WAITERS.track_inprogress():
            return jsonify(central.content_changes(request.args.get("since"), limit, store, wait_s))
