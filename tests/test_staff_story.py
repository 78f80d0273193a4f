"""The customer story on an associate's phone: with consent everything the edge knows (wishlist, online cart,
orders and their state, this visit's zones, kiosk session and QR scans, preferences), without consent only
the orders to collect here; a shopper the edge has not cached is fetched from the real central store on
demand; every view is audited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edge.broker import MosquittoBroker
from edge.config import parse_config
from edge.staff import accounts
from edge.store.writer import open_writer
from sync.central import CentralServer
from conftest import ADMIN, KIOSK, EdgeHandle, now_ms, store_config, wait_until
from staffkit import screenshot, PRODUCTS, SECRET, UUID, add_profile, beacon_key, browser, login, phone, playwright

__all__ = ["browser", "playwright"]

STORE_TOKEN = "fnVeje4si8LvClI0ewCOVLVz"
CENTRAL_ADMIN = "central-admin-token-0000"
P = "instore/teststore"
ORDER = {"order_id": "ORD-5", "items": ["boot-7"], "pickup_bay": "A2"}


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralServer]:
    c = CentralServer(tmp_path / "central.db", CENTRAL_ADMIN, {"teststore": STORE_TOKEN}, port=0).start()
    yield c
    c.stop()


@pytest.fixture
def sedge(tmp_path: Path, broker: MosquittoBroker, central: CentralServer) -> Iterator[EdgeHandle]:
    cfg = parse_config(store_config(tmp_path, broker.port, products=PRODUCTS,
                                    qr={"secret": SECRET, "base_url": "https://shop.example.com"},
                                    central={"url": central.url, "token": STORE_TOKEN}), env={})
    conn = open_writer(cfg.db.path)
    accounts.add(conn, "anna", "Anna", "associate", "482913")
    conn.close()
    add_profile(cfg, "cust-giulia", "Giulia", consent=True, identities=[beacon_key(3), "loyalty:4455"],
                orders_ready=[ORDER],
                orders=[{"order_id": "WEB-1", "state": "shipped", "items": ["scarf-1"]},
                        {"order_id": "ORD-5", "state": "ready", "items": ["boot-7"]}])
    add_profile(cfg, "cust-ivo", "Ivo", consent=False, identities=[beacon_key(4)], orders_ready=[ORDER | {
        "order_id": "ORD-6"}], orders=[{"order_id": "WEB-2", "state": "shipped", "items": ["scarf-1"]}])
    h = EdgeHandle(cfg)
    yield h
    h.stop()


def sighting(minor: int) -> dict[str, Any]:
    return {"ts": now_ms(), "beacon": {"type": "ibeacon", "uuid": UUID, "major": 100, "minor": minor}, "rssi": -50}


def post_kiosk(edge: EdgeHandle, event: dict[str, Any]) -> None:
    r = requests.post(edge.url + "/api/v1/events", json={"kind": "kiosk", "device": "kiosk-1", "event": event},
                      headers={"Authorization": f"Bearer {KIOSK}"}, timeout=10)
    assert r.status_code == 201, r.text


def test_with_consent_the_story_shows_lists_orders_this_visit_and_preferences(sedge: EdgeHandle, browser: Any,
                                                                              mqtt_client: Any) -> None:
    pub = mqtt_client()
    pub.publish(f"{P}/beacon/gw-entrance", sighting(3))
    post_kiosk(sedge, {"id": "k1", "ts": now_ms(), "type": "identify", "customer": "cust-giulia", "session": "s9"})
    post_kiosk(sedge, {"id": "k2", "ts": now_ms(), "type": "add_to_cart", "session": "s9", "item": "boot-7"})
    wait_until(lambda: sedge.events("zone_enter"), what="the shopper entering")
    page = phone(browser)
    login(page, sedge.url, "anna", "482913")
    page.fill("#find-code", "4455")  # the loyalty card
    page.click("#find-form button")
    page.wait_for_selector("main.story[data-customer='cust-giulia'][data-consent='true']")
    text = page.locator("main.story").inner_text()
    assert "Giulia" in text and "gold" in text
    assert "Winter boot" in page.locator("[data-wishlist]").inner_text()
    assert "Wool scarf" in page.locator("[data-cart]").inner_text()
    orders = page.locator("[data-orders]").inner_text()
    assert "WEB-1" in orders and "shipped" in orders
    assert page.locator("[data-order='ORD-5']").count() == 1 and "A2" in text
    assert page.locator("[data-zones]").inner_text() == "Entrance"
    assert "add_to_cart · Winter boot" in text
    assert "size: 42" in text
    screenshot(page, "staff-story")
    entries = sedge.get("/api/v1/staff/audit").json()["entries"]
    assert [(e["staff_id"], e["customer_id"], e["action"]) for e in entries] == [("anna", "cust-giulia", "story")]
    page.context.close()


def test_without_consent_only_the_order_to_collect_is_shown(sedge: EdgeHandle, browser: Any) -> None:
    page = phone(browser)
    login(page, sedge.url, "anna", "482913")
    page.goto(sedge.url + "/staff/customer/cust-ivo")
    page.wait_for_selector("main.story[data-consent='false'] [data-no-consent]")
    text = page.locator("main.story").inner_text()
    assert "ORD-6" in text and "A2" in text and "Winter boot" in text
    for personal in ("Ivo", "gold", "WEB-2", "Wool scarf", "size"):
        assert personal not in text
    assert page.locator("[data-wishlist], [data-cart], [data-orders], [data-zones]").count() == 0
    page.context.close()


def test_a_shopper_not_cached_here_is_fetched_from_the_central_store_on_demand(
        sedge: EdgeHandle, central: CentralServer, browser: Any) -> None:
    profile = {"customer_id": "cust-nora", "first_name": "Nora", "segments": [], "tier": "silver",
               "consents": {"personalization": True, "marketing": False}, "preferences": {},
               "wishlist": ["scarf-1"], "cart": [], "orders_ready": [], "identities": []}
    r = requests.post(f"{central.url}/v1/admin/profiles", json=profile,
                      headers={"Authorization": f"Bearer {CENTRAL_ADMIN}"}, timeout=10)
    assert r.status_code in (200, 201), r.text
    page = phone(browser)
    login(page, sedge.url, "anna", "482913")
    page.goto(sedge.url + "/staff/customer/cust-nora")
    page.wait_for_selector("main.story[data-customer='cust-nora']")
    assert "Nora" in page.locator("h1").inner_text()
    assert "Wool scarf" in page.locator("[data-wishlist]").inner_text()
    # Someone nobody knows: a clear page, not an error trace; and no audit entry for a view that showed nothing.
    page.goto(sedge.url + "/staff/customer/cust-nobody")
    assert "No shopper known by cust-nobody" in page.locator("main").inner_text()
    assert [e["customer_id"] for e in sedge.get("/api/v1/staff/audit").json()["entries"]] == ["cust-nora"]
    assert requests.get(sedge.url + "/staff/customer/cust-nora", timeout=10, allow_redirects=False).status_code == 303
    assert ADMIN
    page.context.close()
