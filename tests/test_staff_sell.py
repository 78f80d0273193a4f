"""Returns at the counter and the mobile POS, in a phone-sized Chromium against a real edge and central store:
a return reaches the central store as a `shopper` `return` event; a basket built by scanning an EAN-13 with
the (fake) camera and by searching, with the shopper attached by loyalty card, checks out as a `pos` event the
KPIs count; endless aisle sends an `order_request`; a sale made while the edge and the central store are down
waits on the phone (a visible pending count) and reaches the central store later exactly once."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edge.broker import MosquittoBroker, free_port
from edge.config import Config, parse_config
from edge.staff import accounts
from edge.store.db import connect
from edge.store.writer import open_writer
from sync.central import CentralServer
from conftest import ADMIN, EdgeHandle, store_config, wait_until
from staffkit import screenshot, PRODUCTS, SECRET, add_profile, camera_browser, launch, login, phone, playwright

__all__ = ["playwright"]

STORE_TOKEN = "fnVeje4si8LvClI0ewCOVLVz"
CENTRAL_ADMIN = "central-admin-token-0000"
BASE_URL = "https://shop.example.com"
EAN = "4006381333931"  # the trail runner's SKU is its EAN-13


def central_events(central_url: str) -> list[dict[str, Any]]:
    r = requests.get(f"{central_url}/v1/admin/events", params={"store": "teststore", "limit": 5000},
                     headers={"Authorization": f"Bearer {CENTRAL_ADMIN}"}, timeout=10)
    r.raise_for_status()
    return r.json()["events"]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Shop:
    """An edge (restartable on its port) and a central store (startable later on its port)."""

    def __init__(self, tmp_path: Path, broker: MosquittoBroker, *, central_up: bool = True) -> None:
        self.tmp_path = tmp_path
        self.central_port = free_port()
        self.central: CentralServer | None = None
        if central_up:
            self.start_central()
        self.port = free_port()
        self.cfg: Config = parse_config(store_config(
            tmp_path, broker.port, products=PRODUCTS, http={"port": self.port},
            qr={"secret": SECRET, "base_url": BASE_URL},
            central={"url": f"http://127.0.0.1:{self.central_port}", "token": STORE_TOKEN}), env={})
        conn = open_writer(self.cfg.db.path)
        accounts.add(conn, "anna", "Anna", "associate", "482913")
        conn.close()
        add_profile(self.cfg, "cust-giulia", "Giulia", consent=True, identities=["loyalty:4455"],
                    orders=[{"order_id": "WEB-9", "state": "delivered", "items": ["boot-7", "scarf-1"]}])
        self.url = f"http://127.0.0.1:{self.port}"
        self.edge: EdgeHandle | None = EdgeHandle(self.cfg)

    def start_central(self) -> None:
        self.central = CentralServer(self.tmp_path / "central.db", CENTRAL_ADMIN, {"teststore": STORE_TOKEN},
                                     port=self.central_port).start()

    def stop_edge(self) -> None:
        assert self.edge is not None
        server = self.edge.service.http_server
        self.edge.stop()
        for channel in list(getattr(server, "_map", {}).values()):
            channel.will_close = True
        self.edge = None
        wait_until(lambda: port_free(self.port), timeout=10, what="the edge's port to be free")

    def start_edge(self) -> None:
        self.edge = EdgeHandle(self.cfg)

    def close(self) -> None:
        if self.edge is not None:
            self.edge.stop()
        if self.central is not None:
            self.central.stop()


@pytest.fixture
def shop(tmp_path: Path, broker: MosquittoBroker) -> Iterator[Shop]:
    s = Shop(tmp_path, broker)
    yield s
    s.close()


def ean_video(path: Path) -> Path:
    """A fake-camera file filming the product's EAN-13 barcode."""
    import numpy as np
    import zxingcpp
    from PIL import Image

    if hasattr(zxingcpp, "create_barcode"):  # zxing-cpp >= 2.3
        image = zxingcpp.write_barcode_to_image(zxingcpp.create_barcode(EAN, zxingcpp.BarcodeFormat.EAN13), scale=4)
    else:
        image = zxingcpp.write_barcode(zxingcpp.BarcodeFormat.EAN13, EAN, width=452, height=220)
    bars = Image.fromarray(np.array(image)).convert("RGB")
    canvas = Image.new("RGB", (640, 480), "white")
    canvas.paste(bars, ((640 - bars.width) // 2, (480 - bars.height) // 2))
    y, cb, cr = canvas.convert("YCbCr").split()
    frame = b"FRAME\n" + y.tobytes() + cb.resize((320, 240)).tobytes() + cr.resize((320, 240)).tobytes()
    path.write_bytes(b"YUV4MPEG2 W640 H480 F10:1 Ip A1:1 C420jpeg\n" + frame * 10)
    return path


def test_a_return_at_the_counter_reaches_the_central_store(shop: Shop, playwright: Any) -> None:
    rma = requests.post(shop.url + "/api/v1/qr", json={"kind": "return", "target": "RMA-3"},
                        headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10).json()
    browser = launch(playwright)
    try:
        page = phone(browser)
        login(page, shop.url, "anna", "482913")
        page.click("[data-tab='returns']")
        page.fill("#return-code", rma["url"])
        page.fill("#return-order", "WEB-9")
        page.fill("#return-sku", "boot-7")
        page.click("#return-add")
        page.fill("#return-reason", "too small")
        page.click("#return-form button.primary")
        page.wait_for_selector("#return-result:not([hidden])")
        assert "Return recorded for order WEB-9" in page.locator("#return-result").inner_text()
    finally:
        browser.close()
    assert shop.central is not None
    wait_until(lambda: [e for e in central_events(shop.central.url) if e.get("type") == "return"], timeout=30,
               what="the return at the central store")
    [event] = [e for e in central_events(shop.central.url) if e.get("type") == "return"]
    assert event["kind"] == "shopper" and event["customer"] == "cust-giulia"
    assert event["data"]["order_id"] == "WEB-9" and event["data"]["rma_id"] == "RMA-3"
    assert event["data"]["items"] == [{"sku": "boot-7", "qty": 1}] and event["data"]["reason"] == "too small"
    # The return code is used up: the shopper's page says the return is complete.
    assert "RMA-3" in requests.get(shop.url + rma["url"][len(BASE_URL):], timeout=10).text
    conn = connect(shop.cfg.db.path)
    assert conn.execute("SELECT state FROM returns WHERE rma_id = 'RMA-3'").fetchone()[0] == "received"
    conn.close()
    assert [e["action"] for e in shop.edge.get("/api/v1/staff/audit").json()["entries"]] == ["return"]


def test_a_basket_scanned_and_searched_checks_out_as_a_sale_the_kpis_count(shop: Shop, playwright: Any,
                                                                            tmp_path: Path) -> None:
    browser = camera_browser(playwright, ean_video(tmp_path / "ean.y4m"))
    try:
        page = phone(browser)
        login(page, shop.url, "anna", "482913")
        page.click("[data-tab='sell']")
        page.click('[data-action="scan"][data-target="ean"]')
        page.wait_for_selector(f"[data-basket] li[data-sku='{EAN}']", timeout=20000)
        page.fill("#search-q", "scarf")
        page.click("#search-form button")
        page.click("[data-add-sku='scarf-1']")
        page.fill("#attach-code", "4455")
        page.click("#attach-form button")
        page.wait_for_selector("#attached:not([hidden])")
        assert "Giulia" in page.locator("#attached").inner_text()
        assert page.locator("[data-basket] li").count() == 2
        page.select_option("#pay-method", "card")
        page.fill("#pay-ref", "T-0042")
        screenshot(page, "staff-basket")
        page.click('[data-action="checkout"]')
        page.wait_for_selector("#pending[data-pending='0']", state="attached")
        wait_until(lambda: shop.edge.events("pos"), what="the sale")
        [sale] = shop.edge.events("pos")
        assert sale["customer"] == "cust-giulia"
        assert sale["data"]["payment"] == {"method": "card", "reference": "T-0042"}
        assert sale["data"]["total"] == pytest.approx(89.9 + 25.0)
        assert [i["sku"] for i in sale["data"]["items"]] == [EAN, "scarf-1"]
        funnel = {f["step"]: f["value"] for f in shop.edge.get("/api/v1/kpis").json()["funnel"]}
        assert funnel["purchases"] == 1
        # Endless aisle: the same basket flow, ordered for home delivery.
        page.fill("#search-q", "boot")
        page.click("#search-form button")
        page.click("[data-add-sku='boot-7']")
        page.click('[data-action="order"]')
        page.wait_for_selector("#sell-result:has-text('sent to the central store')")
    finally:
        browser.close()
    assert shop.central is not None
    wait_until(lambda: [e for e in central_events(shop.central.url) if e.get("type") == "order_request"],
               timeout=30, what="the order at the central store")
    [order] = [e for e in central_events(shop.central.url) if e.get("type") == "order_request"]
    assert order["kind"] == "shopper" and order["data"]["fulfilment"] == "home"
    assert order["data"]["items"] == [{"sku": "boot-7", "qty": 1}]
    assert order["data"]["order_id"].startswith("teststore-")


def test_a_sale_made_with_the_edge_and_the_central_store_down_reaches_the_central_later_exactly_once(
        tmp_path: Path, broker: MosquittoBroker, playwright: Any) -> None:
    s = Shop(tmp_path, broker, central_up=False)
    browser = launch(playwright)
    try:
        page = phone(browser)
        login(page, s.url, "anna", "482913")
        page.click("[data-tab='sell']")
        page.fill("#search-q", "boot")
        page.click("#search-form button")
        page.click("[data-add-sku='boot-7']")
        s.stop_edge()  # the store's server (or the Wi-Fi) is away: the sale waits on the phone
        page.select_option("#pay-method", "cash")
        page.click('[data-action="checkout"]')
        page.wait_for_selector("#pending[data-pending='1']:not([hidden])")
        assert "1" in page.locator("#pending").inner_text()
        time.sleep(1.0)
        s.start_edge()  # back; the central store is still down
        page.wait_for_selector("#pending[data-pending='0']", state="attached", timeout=20000)
        assert len(s.edge.events("pos")) == 1
        sale_id = s.edge.events("pos")[0]["event_id"]
        # Sent again by a phone that did not hear the answer: recorded once.
        client_id = sale_id.rsplit(":", 1)[1]
        again = page.evaluate("""id => fetch('/staff/api/sales', {method: 'POST', headers: {'Content-Type':
            'application/json'}, body: JSON.stringify({client_id: id, items: [{sku: 'boot-7', qty: 1, price: 129}],
            payment: {method: 'cash'}})}).then(r => r.json())""", client_id)
        assert again["recorded"] is False
        assert len(s.edge.events("pos")) == 1
        time.sleep(2.0)  # the edge tries the central store and fails: the sale stays in its outbox
        s.start_central()
        assert s.central is not None
        wait_until(lambda: [e for e in central_events(s.central.url) if e["event_id"] == sale_id], timeout=60,
                   what="the sale at the central store")
        time.sleep(2.0)
        assert [e["event_id"] for e in central_events(s.central.url)].count(sale_id) == 1
    finally:
        browser.close()
        s.close()


def test_a_shopper_is_attached_to_a_sale_by_the_kiosk_handoff_code(shop: Shop) -> None:
    from conftest import KIOSK

    handoff = requests.post(shop.url + "/kiosk/kiosk-1/handoff", json={"session": "s-42", "customer": "cust-giulia"},
                            headers={"Authorization": f"Bearer {KIOSK}"}, timeout=10)
    assert handoff.status_code == 201, handoff.text
    phone_session = requests.Session()
    login_ = phone_session.post(shop.url + "/staff/login", data={"staff_id": "anna", "pin": "482913"}, timeout=10)
    assert login_.status_code == 200 and phone_session.get(shop.url + "/staff/api/session", timeout=10).ok
    found = phone_session.post(shop.url + "/staff/api/attach", json={"code": handoff.json()["url"]}, timeout=10)
    assert found.json() == {"customer": "cust-giulia", "first_name": "Giulia"}
    unknown = phone_session.post(shop.url + "/staff/api/attach", json={"code": "999999"}, timeout=10)
    assert unknown.status_code == 404 and "No shopper known" in unknown.json()["error"]["message"]
    assert requests.get(shop.url + "/staff/api/session", timeout=10).status_code == 401


def test_the_pos_finds_the_centrals_products_at_the_price_every_screen_shows(shop: Shop) -> None:
    """The POS reads the edge's one catalogue: a product the central store sent is found by name and by its
    barcode, and a price change from the central is the price the associate sells at."""
    assert shop.edge is not None
    coat = {"kind": "product", "sku": "COAT-9", "version": 3, "op": "upsert",
            "product": {"sku": "COAT-9", "name": "Wool coat", "price": 189.0, "currency": "EUR", "available": True,
                        "ean": "8001234567895"}}
    assert shop.edge.service.apply_product(coat)
    phone_session = requests.Session()
    assert phone_session.post(shop.url + "/staff/login", data={"staff_id": "anna", "pin": "482913"}, timeout=10).ok

    def search(**params: str) -> list[dict[str, Any]]:
        r = phone_session.get(shop.url + "/staff/api/products", params=params, timeout=10)
        r.raise_for_status()
        return r.json()["products"]

    [found] = [p for p in search(q="wool") if p["sku"] == "COAT-9"]
    assert found["price"] == 189.0
    assert shop.edge.service.apply_product({**coat, "version": 4, "product": {**coat["product"], "price": 149.0}})
    [got] = search(ean="8001234567895")
    assert got["sku"] == "COAT-9" and got["price"] == 149.0
