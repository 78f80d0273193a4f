"""What `instore-edge demo` adds for the staff app: an associate to log in with, and a few of the simulated
app users (C-0001..., the simulator's known shoppers) with an order ready at the demo store, so a pickup
arrival reaches the staff feed within the demo's first minute."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from pathlib import Path

import requests

from edge.staff import accounts
from edge.store.writer import open_writer

DEMO_STAFF_ID = "demo"
READY_HERE = 4  # of the simulator's known shoppers (C-0001..C-0009): the first ones get an order here


def first_shopper() -> int:
    """The simulator's first shopper (a customer number): the first of those with an order ready here who gave
    the personalization consent, so the kiosk greets them and the staff app shows their pickup arrival."""
    from sync.central.demo_data import generate_profiles

    ready = generate_profiles()[:READY_HERE]
    return next((n for n, p in enumerate(ready, start=1) if p["consents"].get("personalization") is True), 1)


def add_demo_associate(db_path: str | Path) -> tuple[str, str]:
    """An associate with a fresh PIN in the demo's database: (staff id, PIN)."""
    pin = f"{secrets.randbelow(10**6):06d}"
    conn = open_writer(db_path)
    try:
        accounts.add(conn, DEMO_STAFF_ID, "Demo associate", "manager", pin)
    finally:
        conn.close()
    return DEMO_STAFF_ID, pin


def orders_ready_here(central_url: str, admin_token: str, store_id: str) -> list[str]:
    """Give the first READY_HERE demo shoppers an order ready for pickup at this store (at the central store,
    which feeds it to the edge like any profile change); their ids."""
    from sync.central.demo_data import generate_profiles

    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    changed = []
    for n, profile in enumerate(generate_profiles()[:READY_HERE], start=1):
        items = (list(profile["wishlist"]) or list(profile["cart"]))[:2]
        order = {"order_id": f"PICK-{n:03d}", "items": items, "ready_at": now, "pickup_bay": f"B{n}",
                 "store": store_id}
        changed.append({**profile, "orders_ready": [order, *profile["orders_ready"]]})
    r = requests.post(f"{central_url}/v1/admin/profiles", json={"profiles": changed},
                      headers={"Authorization": f"Bearer {admin_token}"}, timeout=10)
    r.raise_for_status()
    return [p["customer_id"] for p in changed]
