"""Campaigns at this store over HTTP: `GET /api/v1/campaigns` (admin) and the asset cache at `/assets/<sha256>`.

An asset is served to the store's players (signage, kiosk or admin token: bearer header, `?token=` or the page
cookie) and to anybody when a product of the catalogue uses it (shopper landing pages are public). Bytes are
served only when they hash to their name (sync.assets.AssetCache.open_verified): a cached file that does not
match is deleted and answered 404, and the downloader fetches it again.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, send_file

from edge.domain.campaigns import listing
from edge.domain.catalogue import product_images
from edge.store.db import connect
from edge.web.auth import api_error, page_auth, require_role
from edge.web.ports import Edge
from sync.assets import AssetCache, is_sha256

ASSET_MAX_AGE_S = 7 * 24 * 3600  # an asset never changes under its name


def blueprint(edge: Edge, assets: AssetCache) -> Blueprint:
    bp = Blueprint("campaigns", __name__)

    def read(fn: Any) -> Any:
        conn = connect(edge.cfg.db.path)
        try:
            return fn(conn)
        finally:
            conn.close()

    @bp.get("/api/v1/campaigns")
    @require_role("admin")
    def campaigns() -> Response:
        return jsonify({"campaigns": read(listing)})

    def allowed(name: str) -> bool:
        if any(page_auth(role).ok for role in ("signage", "kiosk")):
            return True
        # A product's picture (of the one catalogue, its variants' too): on public landing pages.
        return any(p.image == name for p in edge.catalogue.all()) or name in read(product_images)

    @bp.get("/assets/<name>")
    def asset(name: str) -> Any:
        if not is_sha256(name):
            return api_error(404, "not_found", "assets are named by the lowercase hex SHA-256 of their bytes")
        if not allowed(name):
            return api_error(401, "unauthorized", "this asset needs the signage, kiosk or admin token (bearer "
                             "header, ?token= or the page's cookie)")
        found = assets.open_verified(name)
        if found is None:
            return api_error(404, "not_found", f"asset {name} is not on this device (yet): it is downloaded from "
                             "the central store in the background")
        path, content_type = found
        resp = send_file(path, mimetype=content_type, etag=name, conditional=True, max_age=ASSET_MAX_AGE_S)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    return bp
