"""Campaigns from the real central store to real edges: published at the central, they reach the retained displays
of the targeted store's screens (and not another store's) and a signage page in Chromium; rollback and withdraw
reach them too; a campaign that does not fit a store is refused with the reason shown at the central; with the
central store down, the edge keeps showing the last applied campaign with its cached assets, across a restart."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import ROOT, SIGNAGE, EdgeHandle, store_config, wait_until
from edge.broker import MosquittoBroker, free_port
from edge.config import Config, parse_config
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
def store_cfg(tmp_path: Path, broker: MosquittoBroker, central: CentralServer) -> Callable[[str], Config]:
    def make(store: str) -> Config:
        return parse_config(store_config(
            tmp_path, broker.port, store={"id": store, "timezone": "Europe/Rome"},
            db={"path": str(tmp_path / f"{store}.db")}, mqtt={"client_id": f"edge-{store}"},
            central={"url": central.url, "token": TOKENS[store], "pull_interval_s": 0.2}), env={})

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
