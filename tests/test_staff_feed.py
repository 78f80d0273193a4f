"""The associates' live feed in a phone-sized Chromium against a real edge and Mosquitto: a pickup arrival
within 2 s of the sighting (only for orders ready here), the kiosk's "call an associate", a known shopper
who consented (and no one who did not), one associate claiming while the other sees it taken, and a phone
that loses the connection catching up with no item lost or shown twice."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edge.broker import MosquittoBroker, free_port
from edge.config import Config, parse_config
from edge.staff import accounts
from edge.store.writer import open_writer
from a11y import assert_accessible
from conftest import ADMIN, KIOSK, EdgeHandle, MqttHelper, now_ms, store_config, wait_until
from staffkit import PRODUCTS, SECRET, UUID, add_profile, beacon_key, browser, login, phone, playwright

__all__ = ["browser", "playwright"]

ENTRANCE = "instore/teststore/beacon/gw-entrance"
SHOES = "instore/teststore/beacon/gw-shoes"
ORDER_HERE = {"order_id": "ORD-77", "items": ["boot-7"], "pickup_bay": "B4", "store": "teststore"}
ORDER_ELSEWHERE = {"order_id": "ORD-99", "items": ["scarf-1"], "pickup_bay": "C1", "store": "otherstore"}


def seen(minor: int) -> dict[str, Any]:
    return {"ts": now_ms(), "beacon": {"type": "ibeacon", "uuid": UUID, "major": 100, "minor": minor}, "rssi": -55}


class World:
    """Config on a fixed port (the edge can be restarted on it), staff and shoppers made before it starts."""

    def __init__(self, tmp_path: Path, broker: MosquittoBroker) -> None:
        self.port = free_port()
        self.cfg: Config = parse_config(store_config(
            tmp_path, broker.port, products=PRODUCTS, http={"port": self.port},
            qr={"secret": SECRET, "base_url": "https://shop.example.com"}), env={})
        conn = open_writer(self.cfg.db.path)
        accounts.add(conn, "anna", "Anna", "associate", "482913")
        accounts.add(conn, "marco", "Marco", "manager", "739155")
        conn.close()
        add_profile(self.cfg, "cust-lucia", "Lucia", consent=False, identities=[beacon_key(7)],
                    orders_ready=[ORDER_HERE, ORDER_ELSEWHERE])
        add_profile(self.cfg, "cust-paolo", "Paolo", consent=True, identities=[beacon_key(8)])
        add_profile(self.cfg, "cust-sara", "Sara", consent=False, identities=[beacon_key(9)])
        add_profile(self.cfg, "cust-ugo", "Ugo", consent=False, identities=[beacon_key(10)],
                    orders=[{"order_id": "WEB-3", "state": "return_requested", "items": ["boot-7"]}])
        self.edge: EdgeHandle | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> EdgeHandle:
        self.edge = EdgeHandle(self.cfg)
        return self.edge

    def stop(self) -> None:
        """Stop like a process exit: the open connections close too, and the port is free again."""
        if self.edge is not None:
            server = self.edge.service.http_server
            self.edge.stop()
            for channel in list(getattr(server, "_map", {}).values()):
                channel.will_close = True
            self.edge = None
            wait_until(lambda: _port_free(self.port), timeout=10, what=f"port {self.port} to be free")


@pytest.fixture
def world(tmp_path: Path, broker: MosquittoBroker) -> Iterator[World]:
    w = World(tmp_path, broker)
    w.start()
    yield w
    w.stop()


def feed_items(page: Any, kind: str | None = None) -> list[dict[str, str]]:
    sel = "[data-feed-item]" + (f'[data-kind="{kind}"]' if kind else "")
    return page.eval_on_selector_all(sel, """els => els.map(e => ({id: e.getAttribute('data-feed-item'),
        kind: e.getAttribute('data-kind'), customer: e.getAttribute('data-customer'),
        claimed: e.getAttribute('data-claimed-by'), text: e.innerText}))""")


def live(page: Any) -> None:
    page.wait_for_selector('#live[data-state="live"]', timeout=10000)


def test_a_pickup_arrival_reaches_the_feed_within_two_seconds_of_the_sighting(world: World, browser: Any,
                                                                               mqtt_client: Callable,
                                                                               capsys: pytest.CaptureFixture[str]) -> None:
    page = phone(browser)
    login(page, world.url, "anna", "482913")
    live(page)
    pub: MqttHelper = mqtt_client()
    sent = time.monotonic()
    pub.publish(ENTRANCE, seen(7))
    page.wait_for_selector('[data-feed-item][data-kind="pickup-arrival"][data-customer="cust-lucia"]', timeout=2000)
    took = time.monotonic() - sent
    with capsys.disabled():
        print(f"\n  [timing] staff feed: beacon sighting -> pickup arrival on the phone: {took * 1000:.0f} ms")
    assert took < 2.0
    [item] = feed_items(page, "pickup-arrival")
    # The order ready here with its bay; not the one for another store; no name without consent.
    assert "ORD-77" in item["text"] and "B4" in item["text"] and "Winter boot" in item["text"]
    assert "ORD-99" not in item["text"] and "Lucia" not in item["text"]
    # Seen again (another zone, the same visit): still one item.
    pub.publish(SHOES, seen(7))
    time.sleep(1.0)
    assert len(feed_items(page, "pickup-arrival")) == 1
    page.context.close()


def test_known_shoppers_who_consented_are_announced_and_others_are_not(world: World, browser: Any,
                                                                       mqtt_client: Callable) -> None:
    page = phone(browser)
    login(page, world.url, "anna", "482913")
    live(page)
    pub = mqtt_client()
    pub.publish(ENTRANCE, seen(9))  # Sara: no consent, no order
    pub.publish(ENTRANCE, seen(8))  # Paolo: consented
    page.wait_for_selector('[data-feed-item][data-kind="known-arrival"][data-customer="cust-paolo"]', timeout=5000)
    assert "Paolo" in feed_items(page, "known-arrival")[0]["text"]
    time.sleep(0.8)
    assert not [i for i in feed_items(page) if i["customer"] == "cust-sara"]
    page.context.close()


def test_a_shopper_with_a_return_requested_is_announced_as_a_return_expected(world: World, browser: Any,
                                                                              mqtt_client: Callable) -> None:
    page = phone(browser)
    login(page, world.url, "anna", "482913")
    live(page)
    mqtt_client().publish(ENTRANCE, seen(10))
    page.wait_for_selector('[data-feed-item][data-kind="return-expected"][data-customer="cust-ugo"]', timeout=5000)
    [item] = feed_items(page, "return-expected")
    assert "WEB-3" in item["text"] and "Ugo" not in item["text"]  # no consent: the order, not the name
    page.context.close()


def test_the_staff_pages_are_accessible_at_a_phone_width_and_an_erasure_empties_the_feed(
        world: World, browser: Any, mqtt_client: Callable) -> None:
    page = phone(browser)
    page.goto(world.url + "/staff")
    assert_accessible(page, "staff login")
    login(page, world.url, "anna", "482913")
    live(page)
    mqtt_client().publish(ENTRANCE, seen(7))
    page.wait_for_selector('[data-feed-item][data-kind="pickup-arrival"]')
    assert_accessible(page, "staff feed")
    for tab in ("pickup", "returns", "sell"):
        page.click(f"[data-tab='{tab}']")
        assert_accessible(page, f"staff {tab}")
    page.goto(world.url + "/staff/customer/cust-paolo")
    assert_accessible(page, "customer story")
    assert world.edge is not None
    assert requests.delete(world.url + "/api/v1/customers/cust-lucia", headers={"Authorization": f"Bearer {ADMIN}"},
                           timeout=30).status_code == 200
    assert _feed_rows(world) == 0
    # And the file holds no byte of her (the edge's own check after an erasure).
    wait_until(lambda: world.edge.get("/readyz").json()["checks"]["erasure"]["ok"], what="the erasure check")
    page.context.close()


def test_call_an_associate_on_the_kiosk_reaches_the_feed(world: World, browser: Any) -> None:
    kiosk = browser.new_context(viewport={"width": 1080, "height": 1920}).new_page()
    kiosk.goto(f"{world.url}/kiosk/kiosk-1?token={KIOSK}")
    page = phone(browser)
    login(page, world.url, "anna", "482913")
    live(page)
    kiosk.click('[data-action="call-associate"]')
    kiosk.wait_for_selector("#assist-sent:not([hidden])")
    page.wait_for_selector('[data-feed-item][data-kind="assist-request"]', timeout=5000)
    [item] = feed_items(page, "assist-request")
    assert "kiosk-1" in item["text"] and "Shoes" in item["text"]
    kiosk.context.close()
    page.context.close()


def test_one_associate_claims_an_item_and_the_other_sees_it_taken(world: World, browser: Any,
                                                                  mqtt_client: Callable) -> None:
    anna, marco = phone(browser), phone(browser)
    login(anna, world.url, "anna", "482913")
    login(marco, world.url, "marco", "739155")
    live(anna)
    live(marco)
    mqtt_client().publish(ENTRANCE, seen(7))
    sel = '[data-feed-item][data-kind="pickup-arrival"]'
    anna.wait_for_selector(sel)
    marco.wait_for_selector(sel)
    anna.click(f'{sel} [data-action="claim"]')
    anna.wait_for_selector(f'{sel}[data-claimed-by="anna"] [data-claimed]')
    marco.wait_for_selector(f'{sel}[data-claimed-by="anna"]', timeout=3000)
    assert marco.locator(f'{sel} [data-action="claim"]').count() == 0
    assert "Anna" in marco.locator(f"{sel} [data-claimed]").inner_text() or \
        "anna" in marco.locator(f"{sel} [data-claimed]").inner_text()
    # Claiming it anyway (a stale screen) is refused with who has it.
    item_id = marco.get_attribute(sel, "data-feed-item")
    r = marco.evaluate("id => fetch('/staff/api/feed/' + id + '/claim', {method: 'POST'}).then(r => r.status)", item_id)
    assert r == 409
    anna.context.close()
    marco.context.close()


def test_a_phone_that_lost_the_connection_catches_up_without_losing_or_repeating_items(
        world: World, browser: Any, mqtt_client: Callable) -> None:
    page = phone(browser)
    login(page, world.url, "anna", "482913")
    live(page)
    pub = mqtt_client()
    pub.publish(ENTRANCE, seen(7))
    page.wait_for_selector('[data-feed-item][data-kind="pickup-arrival"]')
    # The store's Wi-Fi drops (the edge restarts behind it too): items made meanwhile must arrive once.
    page.context.set_offline(True)
    world.stop()
    world.start()
    pub.publish(ENTRANCE, seen(8))
    kiosk_event = {"kind": "kiosk", "device": "kiosk-1", "event": {"id": "k1", "ts": now_ms(), "type": "assist",
                                                                    "session": "s-1"}}
    assert requests.post(world.url + "/api/v1/events", json=kiosk_event,
                         headers={"Authorization": f"Bearer {KIOSK}"}, timeout=10).status_code == 201
    wait_until(lambda: _feed_rows(world) >= 3, what="three feed items in the database")
    time.sleep(1.0)
    assert len(feed_items(page)) == 1  # offline: nothing new yet
    page.context.set_offline(False)
    page.wait_for_function("() => document.querySelectorAll('[data-feed-item]').length >= 3", timeout=15000)
    time.sleep(1.5)  # anything repeated would arrive now
    items = feed_items(page)
    assert sorted(i["kind"] for i in items) == ["assist-request", "known-arrival", "pickup-arrival"]
    assert len({i["id"] for i in items}) == len(items) == 3
    live(page)
    page.context.close()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _feed_rows(world: World) -> int:
    from edge.store.db import connect

    conn = connect(world.cfg.db.path)
    try:
        return int(conn.execute("SELECT count(*) FROM staff_feed").fetchone()[0])
    finally:
        conn.close()
