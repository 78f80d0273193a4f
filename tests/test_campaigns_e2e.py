"""Campaigns from the real central store to real edges: published at the central, they reach the retained displays
of the targeted store's screens (and not another store's) and a signage page in Chromium; rollback and withdraw
reach them too; a campaign that does not fit a store is refused with the reason shown at the central; with the
central store down, the edge keeps showing the last applied campaign with its cached assets, across a restart.
The central's products reach the one catalogue: a price changed there re-renders an open kiosk page; a campaign's
offer for a product shows on the product's QR landing page while the campaign runs."""

from __future__ import annotations

import hashlib
import io
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import KIOSK, ROOT, SIGNAGE, EdgeHandle, store_config, wait_until
from edge.broker import MosquittoBroker, free_port
from edge.config import Config, parse_config
from edge.qr import Signer
from sync.central import CentralServer

CENTRAL_ADMIN = "central-admin-token-0123456789"
TOKENS = {"teststore": "Rl8E55vNgGSC3kCf7ewTOV-J", "otherstore": "qD4m0xk2Vq9sWzT1bYc7LhPe"}


def png(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, format="PNG")
    return out.getvalue()


IMAGE = png((200, 90, 20))
IMAGE_SHA = hashlib.sha256(IMAGE).hexdigest()


def admin(central: CentralServer, method: str, path: str, **kw: Any) -> Any:
    r = requests.request(method, central.url + path, headers={"Authorization": f"Bearer {CENTRAL_ADMIN}",
                                                              **kw.pop("headers", {})}, timeout=30, **kw)
    assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:300]}"
    return r.json() if r.content else None


def autumn(title: str = "Autumn coats", **over: Any) -> dict[str, Any]:
    body = {"name": "Autumn coats", "targets": {"stores": ["teststore"]}, "priority": 1,
            "content": [{"id": "coats-banner", "template": "message", "title": title, "image": IMAGE_SHA},
                        {"id": "coats-offer", "template": "message", "title": "Coats for you"}],
            "rules": [{"id": "shoes-enter", "when": {"zone": "shoes", "event": "zone_enter"},
                       "show": {"content_id": "coats-offer"}}]}
    body.update(over)
    return body


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralServer]:
    c = CentralServer(tmp_path / "central.db", CENTRAL_ADMIN, TOKENS, port=free_port()).start()
    yield c
    c.stop()


@pytest.fixture
def store_cfg(tmp_path: Path, broker: MosquittoBroker, central: CentralServer) -> Callable[..., Config]:
    def make(store_id: str, /, **sections: Any) -> Config:
        own = {"id": store_id, "timezone": "Europe/Rome", **sections.pop("store", {})}
        return parse_config(store_config(
            tmp_path, broker.port, store=own,
            db={"path": str(tmp_path / f"{store_id}.db")}, mqtt={"client_id": f"edge-{store_id}"},
            central={"url": central.url, "token": TOKENS[store_id], "pull_interval_s": 0.2}, **sections), env={})

    return make


@pytest.fixture
def edges(store_cfg: Callable[[str], Config]) -> Iterator[dict[str, EdgeHandle]]:
    handles = {store: EdgeHandle(store_cfg(store)) for store in TOKENS}
    yield handles
    for h in handles.values():
        h.stop()


def retained(mqtt_client: Callable[..., Any], store: str, screen: str) -> dict[str, Any]:
    """What a screen that connects now is told to show (its retained display message)."""
    client = mqtt_client()
    client.subscribe(f"instore/{store}/display/{screen}/content")
    try:
        return client.wait_for(lambda t, d: True, timeout=5)[1]
    finally:
        client.close()


def shows(payload: dict[str, Any]) -> list[tuple[str, str]]:
    items = payload.get("data", {}).get("items", []) if payload.get("content_id") == "playlist" else [payload]
    return [(i.get("content_id"), i.get("title") or i.get("data", {}).get("title")) for i in items]


def wait_display(mqtt_client: Callable[..., Any], store: str, predicate: Callable[[list[tuple[str, str]]], bool],
                 what: str, timeout: float = 15) -> list[tuple[str, str]]:
    return wait_until(lambda: (lambda s: s if predicate(s) else None)(shows(retained(mqtt_client, store,
                                                                                        "entrance-1"))),
                      timeout=timeout, interval=0.2, what=what)


def store_status(central: CentralServer, campaign: str, store: str) -> dict[str, Any]:
    page = admin(central, "GET", f"/v1/admin/campaigns/{campaign}")
    return next((r for r in page["stores"] if r["store"] == store), {})


def test_a_published_campaign_reaches_the_targeted_store_only_and_rollback_and_withdraw_follow(
        central: CentralServer, edges: dict[str, EdgeHandle], mqtt_client: Callable[..., Any]) -> None:
    admin(central, "PUT", f"/v1/admin/assets/{IMAGE_SHA}", data=IMAGE, headers={"Content-Type": "image/png"})
    admin(central, "PUT", "/v1/admin/campaigns/autumn", json=autumn())
    admin(central, "POST", "/v1/admin/campaigns/autumn/publish", json={})
    wait_display(mqtt_client, "teststore", lambda s: ("coats-banner", "Autumn coats") in s, "the campaign on screen")
    assert edges["teststore"].get(f"/assets/{IMAGE_SHA}", token=SIGNAGE).content == IMAGE
    wait_until(lambda: store_status(central, "autumn", "teststore").get("state") == "applied", timeout=15,
               what="the central shows the campaign applied at teststore")
    time.sleep(1.0)  # the other store had every chance to take it
    assert all(cid != "coats-banner" for cid, _ in shows(retained(mqtt_client, "otherstore", "entrance-1")))
    assert edges["otherstore"].get("/api/v1/campaigns").json()["campaigns"] == []

    admin(central, "PUT", "/v1/admin/campaigns/autumn", json=autumn("Autumn coats -20%"))
    admin(central, "POST", "/v1/admin/campaigns/autumn/publish", json={})
    wait_display(mqtt_client, "teststore", lambda s: ("coats-banner", "Autumn coats -20%") in s, "version 2")
    admin(central, "POST", "/v1/admin/campaigns/autumn/rollback", json={})
    wait_display(mqtt_client, "teststore", lambda s: ("coats-banner", "Autumn coats") in s, "rolled back to 1")
    [row] = edges["teststore"].get("/api/v1/campaigns").json()["campaigns"]
    assert row["id"] == "autumn" and row["version"] == 1
    admin(central, "DELETE", "/v1/admin/campaigns/autumn")
    wait_display(mqtt_client, "teststore", lambda s: all(cid != "coats-banner" for cid, _ in s), "withdrawn")


def test_a_campaign_naming_a_zone_the_store_lacks_is_refused_and_the_reason_shows_at_the_central(
        central: CentralServer, edges: dict[str, EdgeHandle]) -> None:
    admin(central, "PUT", f"/v1/admin/assets/{IMAGE_SHA}", data=IMAGE, headers={"Content-Type": "image/png"})
    body = autumn(rules=[{"id": "garden", "when": {"zone": "garden", "event": "zone_enter"},
                          "show": {"content_id": "coats-offer"}}])
    admin(central, "PUT", "/v1/admin/campaigns/garden", json=body)
    admin(central, "POST", "/v1/admin/campaigns/garden/publish", json={})
    status = wait_until(lambda: (lambda r: r if r.get("state") == "refused" else None)(
        store_status(central, "garden", "teststore")), timeout=20, what="the refusal at the central")
    assert "unknown zone 'garden'" in status["reason"]
    [row] = edges["teststore"].get("/api/v1/campaigns").json()["campaigns"]
    assert (row["state"], row["version"]) == ("refused", None)


def test_with_the_central_down_the_edge_keeps_showing_the_last_campaign_with_its_assets_across_a_restart(
        central: CentralServer, store_cfg: Callable[[str], Config], mqtt_client: Callable[..., Any]) -> None:
    edge = EdgeHandle(store_cfg("teststore"))
    try:
        admin(central, "PUT", f"/v1/admin/assets/{IMAGE_SHA}", data=IMAGE, headers={"Content-Type": "image/png"})
        admin(central, "PUT", "/v1/admin/campaigns/autumn", json=autumn())
        admin(central, "POST", "/v1/admin/campaigns/autumn/publish", json={})
        wait_display(mqtt_client, "teststore", lambda s: ("coats-banner", "Autumn coats") in s, "the campaign")
        central.stop()
        deadline = time.monotonic() + 5  # the central store away for a while: pulls fail, nothing changes
        while time.monotonic() < deadline:
            assert ("coats-banner", "Autumn coats") in shows(retained(mqtt_client, "teststore", "entrance-1"))
            time.sleep(0.5)
        edge.stop()
        edge = EdgeHandle(store_cfg("teststore"))  # restarted while the central store is still down
        wait_display(mqtt_client, "teststore", lambda s: ("coats-banner", "Autumn coats") in s, "after a restart")
        r = edge.get(f"/assets/{IMAGE_SHA}", token=SIGNAGE)
        assert (r.status_code, r.content) == (200, IMAGE)
        assert edge.service.sync.status()["last_error"]  # it did try the central store, and could not reach it
    finally:
        edge.stop()


def test_a_published_campaign_plays_on_the_signage_page_in_chromium_with_its_picture_from_the_edge(
        central: CentralServer, edges: dict[str, EdgeHandle], mqtt_client: Callable[..., Any]) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    from a11y import assert_accessible

    admin(central, "PUT", f"/v1/admin/assets/{IMAGE_SHA}", data=IMAGE, headers={"Content-Type": "image/png"})
    admin(central, "PUT", "/v1/admin/campaigns/autumn", json=autumn())
    admin(central, "POST", "/v1/admin/campaigns/autumn/publish", json={})
    wait_display(mqtt_client, "teststore", lambda s: ("coats-banner", "Autumn coats") in s, "the campaign")
    edge = edges["teststore"]
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                                    else None, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            page.goto(f"{edge.url}/signage/entrance-1?token={SIGNAGE}")
            page.wait_for_selector('#stage[data-content-id="coats-banner"]', timeout=15000)
            assert page.inner_text("#stage .title") == "Autumn coats"
            page.wait_for_function("document.querySelector('#stage img.media').naturalWidth === 8", timeout=10000)
            assert all(u.startswith(edge.url) for u in requested)  # the picture comes from the edge itself
            assert f"{edge.url}/assets/{IMAGE_SHA}" in requested
            assert_accessible(page, "signage, a central campaign playing")
        finally:
            browser.close()


def test_the_demo_edge_applies_the_campaigns_its_central_store_runs_within_its_first_minute(tmp_path: Path) -> None:
    """Every campaign live at the demo's central store (it seeds some; when it seeds none, this publishes one)
    is applied by the demo's edge within a minute of starting."""
    import re
    import signal
    import tomllib

    from test_demo import DemoRun

    demo = DemoRun(tmp_path, duration=0)
    started = time.monotonic()
    try:
        central_url = demo.wait_for_line(r"^  central +(http://\S+)/v1/admin/stats").group(1)
        headers = {"Authorization": "Bearer demo-central-admin-token-0000"}
        listed = requests.get(f"{central_url}/v1/admin/campaigns", headers=headers, timeout=10).json()
        store = tomllib.loads((ROOT / "config" / "demo.toml").read_text())["store"]["id"]
        live = {c["id"] for c in listed.get("campaigns", []) if c.get("status") == "live" and any(
            row["store"] == store for row in requests.get(f"{central_url}/v1/admin/campaigns/{c['id']}",
                                                          headers=headers, timeout=10).json()["stores"])}
        if not live:
            requests.put(f"{central_url}/v1/admin/campaigns/demo-check", headers=headers, timeout=10, json={
                "name": "Demo check", "targets": {"stores": ["*"]},
                "content": [{"id": "demo-check", "template": "message", "title": "From the centre"}],
                "rules": []}).raise_for_status()
            requests.post(f"{central_url}/v1/admin/campaigns/demo-check/publish", headers=headers, json={},
                          timeout=10).raise_for_status()
            live = {"demo-check"}
        base = f"http://127.0.0.1:{demo.port}"

        def applied() -> set[str]:
            r = requests.get(f"{base}/api/v1/campaigns", headers={"Authorization": "Bearer demo-admin-token-0000"},
                             timeout=5)
            return {c["id"] for c in r.json()["campaigns"] if c["version"] is not None} if r.ok else set()

        wait_until(lambda: live <= applied(), timeout=max(1.0, 60 - (time.monotonic() - started)), interval=0.5,
                   what=f"the demo edge applying {sorted(live)}")
    finally:
        code, _ = demo.stop(signal.SIGINT)
    assert code == 0, demo.output
    assert not re.search(r"Traceback|ERROR", demo.output), demo.output


# --- the one catalogue and the landing page's offer -----------------------------------------------------------

SNEAKERS = {"sku": "SNK-001", "name": "Corsa Runner sneakers", "zone": "shoes", "price": 119.0}


def chromium(p: Any) -> Any:
    return p.chromium.launch(executable_path="/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None,
                             args=["--no-sandbox", "--disable-gpu"])


def test_a_price_changed_at_the_central_rerenders_an_open_kiosk_page_within_one_pull(
        central: CentralServer, store_cfg: Callable[..., Config]) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    edge = EdgeHandle(store_cfg("teststore", products=[SNEAKERS], store={"language": "it"}))
    card = "#products .product-card[data-sku='SNK-001'] .price"

    def shows(page: Any, price: str) -> None:
        page.wait_for_function(f"() => document.querySelector(\"{card}\").textContent === '{price}'",
                               timeout=15000)

    sneakers = {"name": "Corsa Runner sneakers", "price": 99.0, "currency": "EUR", "zone": "shoes"}
    try:
        with playwright_api.sync_playwright() as p:
            browser = chromium(p)
            try:
                page = browser.new_page(viewport={"width": 1080, "height": 1920})
                page.goto(f"{edge.url}/kiosk/kiosk-1?token={KIOSK}")
                page.click("#anonymous")
                assert page.text_content(card) == "119,00\xa0€"  # the store's TOML price
                page.wait_for_function("() => document.body.getAttribute('data-online') === 'yes'")

                admin(central, "PUT", "/v1/admin/products/SNK-001", json=sneakers)
                shows(page, "99,00\xa0€")  # the chain's price wins, on the page already open
                page.click("#products .product-card[data-sku='SNK-001']")
                assert page.text_content("#product .price") == "99,00\xa0€"
                admin(central, "PUT", "/v1/admin/products/SNK-001", json={
                    **sneakers, "stores": {"teststore": {"price": 89.9}, "otherstore": {"price": 9.0}}})
                shows(page, "89,90\xa0€")  # this store's override, not another store's
                page.wait_for_function("() => document.querySelector('#product .price').textContent === "
                                       "'89,90\\u00a0€'")
                admin(central, "DELETE", "/v1/admin/products/SNK-001")
                shows(page, "119,00\xa0€")  # the central's product gone: the store's own shows again
            finally:
                browser.close()
        assert edge.service.catalogue.get("SNK-001").source == "store"
    finally:
        edge.stop()


def test_a_campaign_offer_for_a_product_shows_on_its_landing_page_while_the_campaign_runs(
        central: CentralServer, store_cfg: Callable[..., Config]) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    edge = EdgeHandle(store_cfg("teststore", products=[SNEAKERS], qr={"secret": "campaign-offer-secret-0123456789",
                                                                      "base_url": "http://127.0.0.1:1"}))
    url = edge.url + "/q/" + Signer.from_config(edge.cfg).mint("touchpoint", "SNK-001")

    def offer() -> str | None:
        html = requests.get(url, timeout=10).text
        found = re.search(r'data-offer="([^"]+)"', html)
        return found.group(1) if found else None

    def deal(cid: str, title: str, **over: Any) -> dict[str, Any]:
        return {"name": title, "targets": {"stores": ["teststore"]}, "priority": 5, "rules": [],
                "content": [{"id": cid, "template": "offer", "title": title, "body": "This week only",
                             "data": {"sku": "SNK-001"}}], **over}

    try:
        assert offer() is None
        # Scheduled for tomorrow, with a higher priority: applied here but not running, so not offered.
        tomorrow = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(time.time() + 2 * 86400))
        admin(central, "PUT", "/v1/admin/campaigns/later", json=deal("later-deal", "Not yet", priority=50,
                                                                    schedule={"start": tomorrow}))
        admin(central, "POST", "/v1/admin/campaigns/later/publish", json={})
        admin(central, "PUT", "/v1/admin/campaigns/sneaker-week", json=deal("sneaker-deal", "Sneakers -15%"))
        admin(central, "POST", "/v1/admin/campaigns/sneaker-week/publish", json={})
        wait_until(lambda: offer() == "sneaker-deal", timeout=15, what="the campaign's offer on the landing page")
        # The listing reads the database, which the writer commits a moment after the pages' memory changes.
        wait_until(lambda: {c["id"]: c["state"] for c in edge.get("/api/v1/campaigns").json()["campaigns"]} ==
                   {"later": "applied", "sneaker-week": "applied"}, timeout=10, what="both campaigns listed as applied")
        with playwright_api.sync_playwright() as p:
            browser = chromium(p)
            try:
                page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
                page.goto(url)
                assert page.text_content("aside.offer strong") == "Sneakers -15%"
                assert "This week only" in page.text_content("aside.offer")
            finally:
                browser.close()
        admin(central, "DELETE", "/v1/admin/campaigns/sneaker-week")
        wait_until(lambda: offer() is None, timeout=15, what="the withdrawn campaign's offer gone")
    finally:
        edge.stop()
