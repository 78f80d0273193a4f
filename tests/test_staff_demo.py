"""`instore-edge demo` brings the staff app alive: it prints the staff URL with an associate's id and PIN,
and a pickup arrival (one of the simulated app users with an order ready here) reaches the feed within the
demo's first minute."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from test_demo import DemoRun
from staffkit import screenshot, browser, login, phone, playwright

__all__ = ["browser", "playwright"]



def test_the_demo_prints_a_staff_login_and_its_feed_shows_a_pickup_arrival_within_a_minute(
        tmp_path: Path, browser: Any) -> None:
    demo = DemoRun(tmp_path, duration=0)
    try:
        line = demo.wait_for_line(r"^  staff app +(http://\S+/staff) +\(staff id (\S+), PIN (\d{6})")
        started = time.monotonic()  # the demo's minute starts when it prints its URLs (its start-up is not it)
        url, staff_id, pin = line.groups()
        page = phone(browser)
        login(page, url.rsplit("/staff", 1)[0], staff_id, pin)
        page.wait_for_selector('#live[data-state="live"]', timeout=20000)
        left = 60 - (time.monotonic() - started)
        page.wait_for_selector('[data-feed-item][data-kind="pickup-arrival"]', timeout=max(1, left) * 1000)
        item = page.locator('[data-feed-item][data-kind="pickup-arrival"]').first
        assert item.get_attribute("data-customer", timeout=1000).startswith("C-")
        assert "PICK-" in item.inner_text()
        time.sleep(3)  # a few more items for the picture
        screenshot(page, "staff-feed")
        page.context.close()
    finally:
        code, _ = demo.stop(signal.SIGINT)
    assert code == 0, demo.output
