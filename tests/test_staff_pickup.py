"""Pickup handover with the phone's camera: Chromium's fake camera films the minted pickup code (a .y4m made
from the PNG), the vendored decoder reads it, the order is collected exactly once whoever scans it (two phones
at once, then the fixed scanner), the shopper's landing page says collected; typing the code works without
a camera, and a page opened without HTTPS says why the camera cannot open."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edge.broker import MosquittoBroker
from edge.config import parse_config
from edge.staff import accounts
from edge.store.writer import open_writer
from conftest import ADMIN, EdgeHandle, MqttHelper, now_ms, store_config, wait_until
from staffkit import (screenshot, PRODUCTS, SECRET, add_profile, camera_browser, login, phone, playwright, y4m_from_png)

__all__ = ["playwright"]

BASE_URL = "https://shop.example.com"
ORDERS = [{"order_id": "ORD-1", "items": ["boot-7", "scarf-1"], "pickup_bay": "B3"},
          {"order_id": "ORD-2", "items": ["scarf-1"], "pickup_bay": "B1"}]


@pytest.fixture
def sedge(tmp_path: Path, broker: MosquittoBroker) -> Iterator[EdgeHandle]:
    cfg = parse_config(store_config(tmp_path, broker.port, products=PRODUCTS,
                                    qr={"secret": SECRET, "base_url": BASE_URL}), env={})
    conn = open_writer(cfg.db.path)
    accounts.add(conn, "anna", "Anna", "associate", "482913")
    accounts.add(conn, "marco", "Marco", "associate", "739155")
    conn.close()
    add_profile(cfg, "cust-lucia", "Lucia", consent=False, orders_ready=ORDERS)
    h = EdgeHandle(cfg)
    yield h
    h.stop()


def mint(edge: EdgeHandle, order: str) -> dict[str, Any]:
    r = requests.post(edge.url + "/api/v1/qr", json={"kind": "pickup", "target": order},
                      headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def status_after_scan(page: Any) -> str:
    page.click("[data-tab='pickup']")
    page.click('[data-action="scan"][data-target="pickup"]')
    page.wait_for_selector("[data-pickup-status]:not([data-pickup-status=''])", timeout=20000)
    return page.get_attribute("[data-pickup-status]", "data-pickup-status")


def test_two_phones_scan_the_same_pickup_code_with_the_camera_and_it_is_collected_once(
        sedge: EdgeHandle, playwright: Any, tmp_path: Path, mqtt_client: Any) -> None:
    code = mint(sedge, "ORD-1")
    video = y4m_from_png(base64.b64decode(code["png_base64"]), tmp_path / "pickup.y4m")
    browser = camera_browser(playwright, video)
    try:
        anna, marco = phone(browser), phone(browser)
        login(anna, sedge.url, "anna", "482913")
        login(marco, sedge.url, "marco", "739155")
        results: dict[str, str] = {}
        # Both phones scan at once: the writer decides who collects it.
        anna.click("[data-tab='pickup']")
        marco.click("[data-tab='pickup']")
        anna.click('[data-action="scan"][data-target="pickup"]')
        marco.click('[data-action="scan"][data-target="pickup"]')
        for name, page in (("anna", anna), ("marco", marco)):
            page.wait_for_selector("[data-pickup-status]:not([data-pickup-status=''])", timeout=20000)
            results[name] = page.get_attribute("[data-pickup-status]", "data-pickup-status")
        assert sorted(results.values()) == ["already-collected", "collected"]
        winner = anna if results["anna"] == "collected" else marco
        shown = winner.locator("#pickup-result").inner_text()
        assert "ORD-1" in shown and "B3" in shown and "Winter boot" in shown
        screenshot(winner, "staff-pickup")
        # The fixed scanner reading the same code afterwards is refused too (used).
        scanner: MqttHelper = mqtt_client()
        scanner.publish("instore/teststore/qr/desk-1", {"id": "d1", "ts": now_ms(), "code": code["url"]})
        wait_until(lambda: any(e["source"] == "desk-1" for e in sedge.events("qr")), what="the scanner's event")
        desk = next(e for e in sedge.events("qr") if e["source"] == "desk-1")
        assert desk["type"] == "refused" and desk["data"]["reason"] == "used"
        assert [e["type"] for e in sedge.events("qr")].count("pickup") == 1
        # The shopper's phone shows it collected.
        landing = requests.get(sedge.url + code["url"][len(BASE_URL):], timeout=10)
        assert "Collected. Thank you!" in landing.text
        # The handover is audited (no consent needed: it is the service itself).
        assert [e["action"] for e in sedge.get("/api/v1/staff/audit").json()["entries"]] == ["pickup"]
    finally:
        browser.close()


def test_scanner_and_phone_racing_on_one_code_collect_it_once(sedge: EdgeHandle, playwright: Any, tmp_path: Path,
                                                              mqtt_client: Any) -> None:
    code = mint(sedge, "ORD-2")
    video = y4m_from_png(base64.b64decode(code["png_base64"]), tmp_path / "pickup2.y4m")
    browser = camera_browser(playwright, video)
    try:
        page = phone(browser)
        login(page, sedge.url, "anna", "482913")
        scanner: MqttHelper = mqtt_client()
        racer = threading.Thread(target=scanner.publish, args=("instore/teststore/qr/desk-1",
                                                                {"id": "d2", "ts": now_ms(), "code": code["url"]}))
        racer.start()
        status = status_after_scan(page)
        racer.join(10)
        wait_until(lambda: any(e["source"] == "desk-1" for e in sedge.events("qr")), what="the scanner's event")
        types = sorted(e["type"] for e in sedge.events("qr"))
        assert types == ["pickup", "refused"]
        assert status == ("collected" if any(e["type"] == "pickup" and e["source"] == "staff-anna"
                                             for e in sedge.events("qr")) else "already-collected")
    finally:
        browser.close()


def test_typing_the_order_number_works_without_a_camera_and_a_plain_http_page_says_why(
        sedge: EdgeHandle, playwright: Any, tmp_path: Path) -> None:
    video = y4m_from_png(base64.b64decode(mint(sedge, "ORD-2")["png_base64"]), tmp_path / "x.y4m")
    port = sedge.url.rsplit(":", 1)[1]
    # staff.test is not localhost: plain HTTP there is not a secure context, so no camera.
    browser = camera_browser(playwright, video, "--host-resolver-rules=MAP staff.test 127.0.0.1")
    try:
        page = phone(browser)
        login(page, f"http://staff.test:{port}", "anna", "482913")
        page.click("[data-tab='pickup']")
        page.click('[data-action="scan"][data-target="pickup"]')
        message = page.locator("[data-scanner='pickup'] .camera-message")
        message.wait_for(state="visible")
        assert "HTTPS" in message.inner_text() and "Type the code" in message.inner_text()
        page.fill("#pickup-code", "ORD-2")
        page.click("#pickup-form button")
        page.wait_for_selector("[data-pickup-status='collected']")
        page.fill("#pickup-code", "ORD-2")
        page.click("#pickup-form button")
        page.wait_for_selector("[data-pickup-status='already-collected']")
        page.fill("#pickup-code", "ORD-404")
        page.click("#pickup-form button")
        page.wait_for_selector("[data-pickup-status='refused']")
        assert "unknown_order" in page.locator("#pickup-result").inner_text()
    finally:
        browser.close()
