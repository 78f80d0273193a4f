"""The central store's campaign console in a real Chromium: sign in, create a campaign with the form (an image
upload, targets, a schedule, a rule template), preview it on a signage-like frame, publish it to one store then to
all, see what each store reported (refused with its reason), roll back and withdraw; each page checked with
axe-core (WCAG 2.1 A/AA) at desktop and phone widths.

Screenshots go to a temporary folder, or to $CONSOLE_SCREENSHOTS (the README's come from
`CONSOLE_SCREENSHOTS=docs/screenshots pytest tests/test_central_console.py`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from a11y import assert_accessible
from sync.central.demo_data import poster_png
from test_central import ADMIN, Central
from test_dashboard import DESKTOP, PHONE, Guarded, browser  # noqa: F401 (a fixture)

TOKENS = {"north-1": "north-one-token-0123456789", "south-2": "south-two-token-0123456789",
          "east-3": "east-three-token-0123456789"}


@pytest.fixture
def central(tmp_path: Path) -> Iterator[Central]:
    args = ["--admin-token", ADMIN] + [a for s, t in TOKENS.items() for a in ("--store-token", f"{s}={t}")]
    c = Central(tmp_path, *args)
    for store, tags in (("north-1", ["north"]), ("south-2", ["south"]), ("east-3", ["north", "outlet"])):
        assert c.request("PUT", f"/v1/admin/stores/{store}", json={"tags": tags, "timezone": "Europe/Rome"}).ok
    yield c
    c.stop()


def shots(tmp_path: Path) -> Path:
    out = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def live_at(central: Central, store: str, campaign: str = "autumn") -> int | None:
    """The campaign version the store's content channel says is live there (None: withdrawn or never)."""
    page = central.request("GET", f"/v1/stores/{store}/content/changes", TOKENS[store]).json()
    found = [ch for ch in page["changes"] if ch["kind"] == "campaign" and ch["id"] == campaign]
    return found[-1]["campaign"]["version"] if found and found[-1]["op"] == "live" else None


def report(central: Central, store: str, event_id: str, type_: str, **data: Any) -> None:
    r = central.push(store, [{"event_id": event_id, "kind": "campaign", "type": type_, "ts": time.time(),
                              "data": {"id": "autumn", **data}}], token=TOKENS[store])
    assert r.json()["accepted"] == [event_id], r.text


def submit(page: Any, selector: str) -> None:
    """Click a control that sends a form, and wait for the page the answer loads (the old one may say the same)."""
    with page.expect_navigation():
        page.click(selector)


def state_of(page: Any, store: str) -> str | None:
    cell = page.locator(f"table.status tr[data-store='{store}'] td[data-state]")
    return cell.get_attribute("data-state") if cell.count() else None


def test_marketing_creates_previews_publishes_in_stages_rolls_back_and_withdraws(
        browser: Any, central: Central, tmp_path: Path) -> None:  # noqa: F811
    g = Guarded(browser, DESKTOP)
    page = g.page
    out = shots(tmp_path)
    image = tmp_path / "coats.png"
    image.write_bytes(poster_png())
    try:
        page.goto(f"{central.url}/campaigns")
        assert "Sign in" in page.title()
        assert_accessible(page, "console sign-in")
        page.fill("#token", ADMIN)
        submit(page, "button[type=submit]")
        page.wait_for_selector("text=No campaign yet")
        assert page.url == f"{central.url}/campaigns?token={ADMIN}" or page.url.startswith(f"{central.url}/campaigns")
        page.click("text=Create the first one")

        # A form that does not fit says what to fix, and keeps what was typed.
        page.fill("#f-id", "autumn")
        page.fill("#f-name", "Autumn coats")
        page.check("input[name=rule][value=raw]")
        page.fill("#f-raw", "{not json")
        submit(page, "[data-action=save]")
        page.wait_for_selector(".errors")
        assert "Rules as JSON: not valid JSON" in page.locator(".errors").inner_text()
        assert page.input_value("#f-name") == "Autumn coats"
        assert_accessible(page, "console form with errors")

        page.fill("#f-title", "Autumn coats, -10% for gold members")
        page.fill("#f-body", "Weekday evenings, in the northern stores")
        page.fill("#f-title-it", "Cappotti d'autunno, -10% per i gold")
        page.set_input_files("#f-image", str(image))
        page.uncheck("input[name=all_stores]")
        page.fill("#f-tags", "north")
        for day in ("mon", "tue", "wed", "thu", "fri"):
            page.check(f"input[name=days][value={day}]")
        page.fill("#f-hours", "17:00-21:00")
        page.check("input[name=rule][value=gold]")
        page.fill("#f-zone", "entrance")
        page.screenshot(path=str(out / "central-campaign-form.png"), full_page=True)
        submit(page, "[data-action=save]")
        page.wait_for_selector("[data-preview]")
        assert page.locator("[data-status]").first.get_attribute("data-status") == "draft"
        # The preview shows the uploaded image, served by the central store itself.
        assert page.evaluate("() => document.querySelector('.frame img').naturalWidth") == 480
        assert page.locator("[data-preview='it'] .p-title").inner_text() == "Cappotti d'autunno, -10% per i gold"
        assert_accessible(page, "console campaign, draft")
        assert live_at(central, "north-1") is None

        # Staged: one store first.
        targeted = page.locator("input[name=stores]")
        assert sorted(targeted.nth(i).get_attribute("value") for i in range(targeted.count())) == ["east-3", "north-1"]
        page.check("input[name=stores][value=north-1]")
        submit(page, "[data-action=publish]")
        page.wait_for_selector("text=Campaign published")
        assert state_of(page, "north-1") == "pending" and state_of(page, "east-3") is None
        assert live_at(central, "north-1") == 1 and live_at(central, "east-3") is None
        assert live_at(central, "south-2") is None  # not a target

        report(central, "north-1", "n-1", "applied", version=1)
        report(central, "north-1", "n-2", "impressions", version=1, content_id="autumn", shown=40, reached=17)
        page.check("input[name=scope][value=all]")
        submit(page, "[data-action=publish]")
        page.wait_for_selector("text=Campaign published")
        assert live_at(central, "east-3") == 1
        report(central, "east-3", "e-1", "refused", version=1, reason="unknown zone 'entrance'")
        page.reload()
        assert state_of(page, "north-1") == "applied" and state_of(page, "east-3") == "refused"
        assert "unknown zone 'entrance'" in page.locator("tr[data-store='east-3']").inner_text()
        assert "17" in page.locator("tr[data-store='north-1']").inner_text()
        assert_accessible(page, "console campaign, live")
        page.screenshot(path=str(out / "central-campaign.png"), full_page=True)

        # A new version, published, then rolled back: version 1 is live again.
        page.click("text=Edit (makes a new draft)")
        assert page.input_value("#f-zone") == "entrance" and page.is_checked("input[name=rule][value=gold]")
        page.fill("#f-title", "Autumn coats, -20% (wrong!)")
        submit(page, "[data-action=save]")
        page.wait_for_selector("text=Version 2 (draft)")
        page.check("input[name=scope][value=all]")
        submit(page, "[data-action=publish]")
        page.wait_for_selector("text=Campaign published")
        assert live_at(central, "north-1") == 2 and state_of(page, "north-1") == "pending"
        submit(page, "[data-action=rollback]")
        page.wait_for_selector("text=Campaign rolled back")
        assert live_at(central, "north-1") == 1 and live_at(central, "east-3") == 1
        assert state_of(page, "north-1") == "applied"  # it had reported version 1

        page.goto(f"{central.url}/campaigns")
        assert page.locator("tr[data-campaign='autumn'] [data-status]").get_attribute("data-status") == "live"
        assert page.locator("tr[data-campaign='autumn'] [data-count=refused]").inner_text() == "1"
        assert_accessible(page, "console campaign list")
        page.screenshot(path=str(out / "central-campaigns.png"), full_page=True)

        page.click("tr[data-campaign='autumn'] a")
        submit(page, "[data-action=withdraw]")
        page.wait_for_selector("text=Campaign withdrawn")
        assert live_at(central, "north-1") is None and live_at(central, "east-3") is None
        assert page.locator("[data-action=withdraw]").is_disabled()
        assert not g.errors and not g.outside
    finally:
        g.context.close()


def test_the_console_fits_a_phone_and_refuses_a_foreign_form(browser: Any, central: Central,  # noqa: F811
                                                             tmp_path: Path) -> None:
    body = {"name": "Spring", "targets": {"stores": ["*"]},
            "content": [{"id": "spring", "template": "message", "title": "Spring is here"}],
            "rules": [{"id": "spring-all", "when": {"zone": "entrance"}, "show": {"content_id": "spring"}}]}
    assert central.request("PUT", "/v1/admin/campaigns/spring", json=body).ok
    assert central.request("POST", "/v1/admin/campaigns/spring/publish").ok
    g = Guarded(browser, PHONE)
    page = g.page
    try:
        for path in ("/campaigns", "/campaigns/spring", "/campaigns/new"):
            page.goto(f"{central.url}{path}?token={ADMIN}")
            assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"], path
            assert_accessible(page, f"console {path}, phone")
    finally:
        g.context.close()
    foreign = central.request("POST", "/campaigns/spring/withdraw", headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert central.request("POST", "/campaigns/spring/withdraw", None).status_code == 401
    assert live_at(central, "north-1", "spring") == 1


def test_editing_in_the_console_keeps_what_the_form_does_not_show(central: Central) -> None:
    body = {"name": "Two screens", "targets": {"stores": ["*"]},
            "content": [{"id": "main", "template": "message", "title": "Ciao", "data": {"colour": "amber"},
                         "i18n": {"en": {"title": "Hello"}}},
                        {"id": "second", "template": "offer", "title": "Second"}],
            "rules": [{"id": "main-entrance", "when": {"zone": "entrance"}, "show": {"content_id": "main"}},
                      {"id": "second-pickup", "when": {"zone": "pickup"}, "show": {"content_id": "second"}}]}
    assert central.request("PUT", "/v1/admin/campaigns/two", json=body).ok
    form = central.request("GET", "/campaigns/two/edit").text
    assert "its 1 other item stay" in form and "second-pickup" in form  # raw rules, shown as they are
    raw = '[{"id": "main-entrance", "when": {"zone": "entrance"}, "show": {"content_id": "main"}}, ' \
          '{"id": "second-pickup", "when": {"zone": "pickup"}, "show": {"content_id": "second"}}]'
    r = central.request("POST", "/campaigns/two/edit", allow_redirects=False,
                        data={"name": "Two screens", "title": "Ciao ciao", "template": "message", "all_stores": "1",
                              "rule": "raw", "raw": raw, "title_it": "Ciao ciao"})
    assert r.status_code == 303, r.text
    draft = central.request("GET", "/v1/admin/campaigns/two").json()["draft"]
    assert draft["version"] == 2 and [i["id"] for i in draft["content"]] == ["main", "second"]
    main = draft["content"][0]
    assert main["title"] == "Ciao ciao" and main["data"] == {"colour": "amber"}
    assert main["i18n"] == {"en": {"title": "Hello"}, "it": {"title": "Ciao ciao"}}
