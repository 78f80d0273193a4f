"""What a kiosk may show a shopper: read from the local profile cache, gated by consent.

The `profiles` and `identities` tables belong to sync (sync.client.ensure_schema); an edge without a
central store has neither, and every shopper is then anonymous. Reads use their own WAL connection.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from edge.config import Config
from edge.store.db import connect
from sync.central.demo_data import CATALOGUE, CATALOGUE_BY_SKU

MAX_CODE_LEN = 128


def product(sku: str) -> dict[str, Any]:
    """A catalogue product as the pages show it; an unknown SKU keeps its code as its name."""
    p = CATALOGUE_BY_SKU.get(sku)
    if p is None:
        return {"sku": sku, "name": sku, "price": None, "category": "", "zone": ""}
    return p.to_dict()


def products_for(zone: str | None, limit: int = 12) -> list[dict[str, Any]]:
    """The default product list of a kiosk: its zone's products first, then the rest of the catalogue."""
    ordered = sorted(CATALOGUE, key=lambda p: p.zone != zone)
    return [p.to_dict() for p in ordered[:limit]]


def _candidates(code: str) -> list[str]:
    """Identity keys a typed or scanned code may be: a loyalty card number, or an already-prefixed key."""
    return [code] if ":" in code else [f"loyalty:{code}", code]


def resolve_customer(conn: sqlite3.Connection, code: str) -> str | None:
    """The customer id behind a customer id, a loyalty card number or an identity key, or None."""
    try:
        if conn.execute("SELECT 1 FROM profiles WHERE customer_id = ?", (code,)).fetchone():
            return code
        for key in _candidates(code):
            row = conn.execute("SELECT customer_id FROM identities WHERE key = ?", (key,)).fetchone()
            if row and row[0]:
                return str(row[0])
    except sqlite3.OperationalError:  # no sync tables: no central store configured
        return None
    return None


def _anonymous(customer: str | None) -> dict[str, Any]:
    return {"customer": customer, "known": customer is not None, "personalized": False, "first_name": None,
            "wishlist": [], "cart": [], "orders_ready": []}


def kiosk_context(cfg: Config, code: str) -> dict[str, Any]:
    """The shopper's kiosk context. Without personalization consent (when the store requires it) only
    the customer id is returned, so events can name them, and the kiosk shows generic zone content."""
    code = code.strip()[:MAX_CODE_LEN]
    if not code:
        return _anonymous(None)
    conn = connect(cfg.db.path)
    try:
        customer = resolve_customer(conn, code)
        if customer is None:
            return _anonymous(None)
        row = conn.execute("SELECT profile, first_name, consent_personalization FROM profiles "
                           "WHERE customer_id = ?", (customer,)).fetchone()
    except sqlite3.OperationalError:
        return _anonymous(None)
    finally:
        conn.close()
    if row is None:  # known identity, profile not cached (yet)
        return _anonymous(customer)
    try:
        profile = json.loads(row[0])
    except ValueError:
        profile = {}
    if not isinstance(profile, dict):
        profile = {}
    consents = profile.get("consents") if isinstance(profile.get("consents"), dict) else {}
    consented = bool(row[2]) and consents.get("personalization") is True
    if cfg.privacy.require_consent and not consented:
        return _anonymous(customer)
    first_name = row[1] if row[1] is not None else profile.get("first_name")
    orders = []
    for order in profile.get("orders_ready") or []:
        if isinstance(order, dict):
            orders.append({"order_id": str(order.get("order_id", "")),
                           "pickup_bay": str(order.get("pickup_bay") or ""),
                           "ready_at": str(order.get("ready_at") or ""),
                           "items": [product(str(s))["name"] for s in order.get("items") or []]})
    return {"customer": customer, "known": True, "personalized": True,
            "first_name": None if first_name is None else str(first_name),
            "wishlist": [product(str(s)) for s in profile.get("wishlist") or []],
            "cart": [product(str(s)) for s in profile.get("cart") or []],
            "orders_ready": orders}
