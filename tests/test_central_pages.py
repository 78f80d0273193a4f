"""The central store's pages for chain IT in a real Chromium, at phone and desktop widths: the fleet at a
glance (quietest stores first) and one store's page, each checked with axe-core (WCAG 2.1 A/AA); the
admin token asked for and remembered like the edge's pages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from a11y import assert_accessible
from test_central import ADMIN, Central, event, token_args
from test_dashboard import DESKTOP, PHONE, Guarded, browser  # noqa: F401 (a fixture)

TOKENS = {"north-1": "north-one-token-0123456789", "south-2": "south-two-token-0123456789",
          "east-3": "east-three-token-0123456789"}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Central]:
    """A central store whose three stores are in three states: never heard, not ready with a backlog, ready."""
    args = ["--admin-token", ADMIN] + [a for s, t in TOKENS.items() for a in ("--store-token", f"{s}={t}")]
    c = Central(tmp_path_factory.mktemp("central-pages"), *args)

    def report(store: str, **health: Any) -> None:
        r = c.request("POST", f"/v1/stores/{store}/events", TOKENS[store],
                      json={"events": [event(f"{store}-e1")], "health": {"sent_at": time.time(), **health}})
        assert r.status_code == 200, r.text

    report("south-2", version="0.9.0", ready=False, not_ready=["broker"], outbox_pending=1234,
           outbox_oldest_age_s=754.0, deadletters_last_hour=5, breaker="open", dead_threads=[])
    report("east-3", version="1.0.0", ready=True, not_ready=[], outbox_pending=0, deadletters_last_hour=0,
           breaker="closed", dead_threads=[], last_pull_at=time.time())
    c.push("east-3", [event("bad", ts="yesterday")], token=TOKENS["east-3"])
    yield c
    c.stop()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop-1366", "phone-390"])
def test_the_fleet_page_shows_quiet_stores_first_and_each_store_has_a_page(
        browser: Any, fleet: Central, viewport: dict[str, int], tmp_path: Path) -> None:  # noqa: F811
    g = Guarded(browser, viewport)
    page = g.page
    try:
        page.goto(f"{fleet.url}/")
        assert page.locator("h1").inner_text() == "401\nSign in" or "Sign in" in page.title()
        assert_accessible(page, f"central sign-in, {viewport['width']} px")
        page.fill("#token", ADMIN)
        page.click("button[type=submit]")
        page.wait_for_selector("table.fleet")
        assert_accessible(page, f"central fleet, {viewport['width']} px")
        page.screenshot(path=str(tmp_path / f"fleet-{viewport['width']}.png"), full_page=True)
        stores = page.locator("tr[data-store]")
        assert [stores.nth(i).get_attribute("data-store") for i in range(stores.count())] == \
            ["north-1", "south-2", "east-3"]
        states = [page.locator(f"tr[data-store='{s}'] td[data-state]").get_attribute("data-state")
                  for s in ("north-1", "south-2", "east-3")]
        assert states == ["Never heard", "Not ready", "Ready"]
        assert page.locator("[data-count=quiet]").inner_text() == "1"
        assert page.locator("[data-count=not_ready]").inner_text() == "1"
        assert page.locator("[data-count=outbox]").inner_text() == "1,234"
        assert "broker" in page.locator("tr[data-store='south-2']").inner_text()
        # The page fits the screen: only the table scrolls sideways, inside its own region.
        assert page.evaluate("() => document.documentElement.scrollWidth") <= viewport["width"]

        # Without the token in the address (the cookie remembers it): one store's page.
        page.click("tr[data-store='south-2'] a")
        page.wait_for_selector("dl.facts")
        assert page.url == f"{fleet.url}/stores/south-2"
        text = page.locator("main").inner_text()
        assert "Not ready" in text and "1,234 events, oldest 12 min" in text and "failing (breaker open)" in text
        assert_accessible(page, f"central store page, {viewport['width']} px")
        page.goto(f"{fleet.url}/stores/east-3")
        assert "invalid_value" in page.locator("main").inner_text()  # its refused event, by reason
        assert_accessible(page, f"central store page with refusals, {viewport['width']} px")
        page.goto(f"{fleet.url}/stores/north-1")
        assert "has not reported its health" in page.locator("main").inner_text()
        page.goto(f"{fleet.url}/stores/nowhere")
        assert "No such store" in page.locator("h1").inner_text()
        assert_accessible(page, f"central 404 page, {viewport['width']} px")
        assert not g.outside and not g.errors, (g.outside, g.errors)
    finally:
        g.context.close()


def test_the_pages_refuse_a_store_token_and_leave_no_token_in_their_links(fleet: Central) -> None:
    r = requests.get(f"{fleet.url}/", params={"token": TOKENS["north-1"]}, timeout=10)
    assert r.status_code == 401 and "Set-Cookie" not in r.headers
    r = requests.get(f"{fleet.url}/stores/south-2", timeout=10)
    assert r.status_code == 401 and "south-2" not in r.text  # nothing about a store before the token
    r = requests.get(f"{fleet.url}/", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert r.status_code == 200 and ADMIN not in r.text
    assert "HttpOnly" in r.headers["Set-Cookie"] and "SameSite=Strict" in r.headers["Set-Cookie"]
    assert "default-src 'none'" in r.headers["Content-Security-Policy"] and r.headers["Cache-Control"] == "no-store"
