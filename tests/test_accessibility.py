"""Every page a shopper or store IT can land on meets WCAG 2.1 A/AA (axe-core, in a real Chromium): the QR
landing pages (each view and every refusal) on a phone and a desktop, and the sign-in and error pages.

Kiosks (self-service terminals) and the landing pages (an e-commerce service) are under the European
Accessibility Act since June 2025. The kiosk, signage and dashboard pages are checked where their tests
drive them (test_pages.py, test_dashboard.py, test_demo.py, test_qr.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from a11y import assert_accessible
from conftest import ADMIN, KIOSK, SIGNAGE, EdgeHandle
from edge.config import Config
from edge.qr import REFUSALS, Signer
from edge.store.writer import open_writer

playwright_api = pytest.importorskip("playwright.sync_api")

SECRET = "tFOqqKtTmOiPHsdv7suviDHo"
PRODUCTS = [{"sku": "runner-42", "name": "Trail runner", "zone": "shoes", "price": 89.9}]
ORDER = {"order_id": "ORD-1001", "items": ["runner-42"], "ready_at": "2026-01-01T10:00:00Z", "pickup_bay": "B3"}
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}
# Refusals a test cannot provoke on demand: "busy" needs a writer that does not answer in time.
NOT_PROVOKED = {"busy"}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    import gc

    exe = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()
    gc.collect()  # see test_pages.browser


def cache_profile(cfg: Config, profile: dict[str, Any]) -> None:
    conn = open_writer(cfg.db.path)  # the edge may not have created the file yet
    try:
        conn.execute("BEGIN")
        conn.execute("INSERT OR REPLACE INTO profiles(customer_id, version, profile, first_name, "
                     "consent_personalization, updated_at, last_seen) VALUES (?, 1, ?, ?, 1, ?, NULL)",
                     (profile["customer_id"], json.dumps(profile), profile["first_name"], time.time()))
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.fixture
def qedge(make_config: Callable[..., Config]) -> Iterator[EdgeHandle]:
    cfg = make_config(qr={"secret": SECRET, "base_url": "http://127.0.0.1:1"}, products=PRODUCTS)
    cache_profile(cfg, {"customer_id": "C-1", "first_name": "Anna", "consents": {"personalization": True},
                        "wishlist": ["runner-42"], "cart": [], "orders_ready": [ORDER], "identities": []})
    edge = EdgeHandle(cfg)
    yield edge
    edge.stop()


def mint(edge: EdgeHandle, kind: str, target: str) -> str:
    """The landing path of a freshly minted code (the base URL of the config is not this server's)."""
    r = requests.post(edge.url + "/api/v1/qr", json={"kind": kind, "target": target},
                      headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert r.status_code == 201, r.text
    return "/q/" + r.json()["token"]


def handoff(edge: EdgeHandle) -> str:
    r = requests.post(edge.url + "/kiosk/kiosk-1/handoff", json={"session": "sess-a11y-1", "customer": "C-1"},
                      headers={"Authorization": f"Bearer {KIOSK}"}, timeout=10)
    assert r.status_code == 201, r.text
    return "/q/" + r.json()["token"]


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone-390", "desktop-1366"])
def test_landing_pages_and_every_refusal_are_accessible(qedge: EdgeHandle, make_config: Callable[..., Config],
                                                        browser: Any, viewport: dict[str, int],
                                                        tmp_path: Path) -> None:
    """Shoppers' phones may run without JavaScript: the pages are checked as the server sends them."""
    signer = Signer(SECRET, "teststore", "http://127.0.0.1:1", 3600, old_secrets=[])
    context = browser.new_context(viewport=viewport, java_script_enabled=False)
    seen: set[str] = set()
    try:
        page = context.new_page()

        def check(path: str, what: str, status: int = 200) -> None:
            resp = page.goto(qedge.url + path)
            assert resp is not None and resp.status == status, (what, resp and resp.status)
            reason = page.get_attribute("[data-reason]", "data-reason") if status >= 400 else None
            if reason:
                seen.add(reason)
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"], what
            assert_accessible(page, f"landing, {what}, {viewport['width']} px", javascript=False)

        check(mint(qedge, "touchpoint", "runner-42"), "touchpoint (product)")
        check(mint(qedge, "touchpoint", "entrance-1"), "touchpoint (screen)")
        check(mint(qedge, "pickup", "ORD-1001"), "pickup")
        check(mint(qedge, "return", "RMA-5"), "return")
        code = handoff(qedge)
        check(code, "kiosk session continued on the phone")  # redirected to /q/session
        assert page.url.endswith("/q/session")
        # Refusals: every reason the landing page can give.
        check(code, "used", 409)
        check("/q/not-a-token!", "malformed", 400)
        check("/q/" + Signer("wuTEZ0bWE4krvnzhI00VAr14", "teststore", "x", 3600, old_secrets=[])
              .mint("touchpoint", "runner-42"), "forged", 403)
        check("/q/" + Signer(SECRET, "otherstore", "x", 3600, old_secrets=[]).mint("touchpoint", "runner-42"),
              "wrong_store", 404)
        check("/q/" + signer.mint("pickup", "ORD-1001", 10, now=time.time() - 60), "expired", 410)
        check(mint(qedge, "pickup", "ORD-NOPE"), "unknown_order", 404)
        check("/q/" + signer.mint("phone", "c:C-1"), "wrong_kind", 400)
        fresh = browser.new_context(viewport=viewport, java_script_enabled=False)  # no session cookie
        try:
            page = fresh.new_page()
            check("/q/session", "no kiosk session", 404)
        finally:
            fresh.close()
        # An edge without [qr] secret: "QR codes are not set up".
        bare = EdgeHandle(make_config(db={"path": str(tmp_path / "bare.db")}, mqtt={"client_id": "edge-bare-a11y"}))
        try:
            page = context.new_page()
            resp = page.goto(bare.url + "/q/" + signer.mint("touchpoint", "runner-42"))
            assert resp is not None and resp.status == 503
            seen.add(page.get_attribute("[data-reason]", "data-reason"))
            assert_accessible(page, f"landing, not_configured, {viewport['width']} px", javascript=False)
        finally:
            bare.stop()
    finally:
        context.close()
    assert seen >= set(REFUSALS) | {"no_session"}, f"refusal pages not checked: {set(REFUSALS) - seen}"
    assert not seen & NOT_PROVOKED


def test_sign_in_and_error_pages_are_accessible(edge: EdgeHandle, browser: Any) -> None:
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        for path, status, what in (("/", 401, "store IT sign-in"), (f"/?token={KIOSK}", 403, "wrong token"),
                                   (f"/kiosk/nope?token={KIOSK}", 404, "unknown kiosk"),
                                   (f"/signage/nope?token={SIGNAGE}", 404, "unknown screen"),
                                   ("/kiosk/kiosk-1", 401, "kiosk without its token")):
            resp = page.goto(edge.url + path)
            assert resp is not None and resp.status == status, path
            assert_accessible(page, what)
    finally:
        context.close()
