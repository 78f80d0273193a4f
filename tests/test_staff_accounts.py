"""Staff accounts and login: the CLI (PIN from stdin, a scrypt hash only), the login form in a phone-sized
Chromium (wrong PIN refused, lockout with when to retry), the session cookie's flags, logout and disable
ending sessions, and the audit log of staff views (admin endpoint, export, erasure keeps only a hash)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edge.broker import MosquittoBroker
from edge.config import Config, parse_config
from edge.staff import accounts
from edge.store.db import connect
from edge.store.writer import open_writer
from sync.protocol import erase_key
from conftest import ADMIN, EdgeHandle, store_config
from staffkit import PRODUCTS, SECRET, add_profile, browser, config_file, login, phone, playwright, staff_cli

__all__ = ["browser", "playwright"]


@pytest.fixture
def cfg_data(tmp_path: Path, broker: MosquittoBroker) -> dict[str, Any]:
    return store_config(tmp_path, broker.port, products=PRODUCTS,
                        qr={"secret": SECRET, "base_url": "https://shop.example.com"})


@pytest.fixture
def sedge(cfg_data: dict[str, Any]) -> Iterator[EdgeHandle]:
    h = EdgeHandle(parse_config(cfg_data, env={}))
    yield h
    h.stop()


def add_staff(cfg: Config, staff_id: str = "anna", pin: str = "482913", role: str = "associate") -> None:
    conn = open_writer(cfg.db.path)
    try:
        accounts.add(conn, staff_id, staff_id.title(), role, pin)
    finally:
        conn.close()


def test_staff_cli_reads_the_pin_from_stdin_and_stores_only_a_slow_salted_hash(cfg_data: dict[str, Any],
                                                                                tmp_path: Path) -> None:
    path = config_file(cfg_data, tmp_path)
    done = staff_cli(path, "add", "--id", "marco", "--name", "Marco Rossi", "--role", "manager", pin="7391")
    assert done.returncode == 0, done.stderr
    assert "7391" not in done.stdout + done.stderr
    listed = json.loads(staff_cli(path, "list", "--json").stdout)["staff"]
    assert listed == [{"staff_id": "marco", "name": "Marco Rossi", "role": "manager", "active": True,
                       "locked_until": None}]
    conn = connect(cfg_data["db"]["path"])
    stored = conn.execute("SELECT pin_hash FROM staff").fetchone()[0]
    conn.close()
    assert stored.startswith("scrypt$16384$8$1$") and "7391" not in stored
    assert accounts.check_pin("7391", stored) and not accounts.check_pin("7392", stored)
    # The same PIN hashes differently each time (salted).
    assert accounts.hash_pin("7391") != accounts.hash_pin("7391")

    bad = staff_cli(path, "add", "--id", "x", "--name", "X", pin="12")
    assert bad.returncode == 2 and "4 to 12 digits" in bad.stderr
    assert staff_cli(path, "disable", "marco").returncode == 0
    assert json.loads(staff_cli(path, "list", "--json").stdout)["staff"][0]["active"] is False
    missing = staff_cli(path, "disable", "nobody")
    assert missing.returncode == 2 and "no staff 'nobody'" in missing.stderr


def test_login_refuses_a_wrong_pin_then_locks_the_account_and_says_when_to_retry(sedge: EdgeHandle,
                                                                                 browser: Any) -> None:
    add_staff(sedge.cfg, "anna", "482913")
    page = phone(browser)
    login(page, sedge.url, "anna", "000000")
    assert page.locator("[data-login-error]").inner_text() == "Wrong staff id or PIN."
    assert page.locator('form[data-form="staff-login"]').count() == 1
    for _ in range(accounts.LOCK_AFTER - 1):
        login(page, sedge.url, "anna", "111111")
    message = page.locator("[data-login-error]").inner_text()
    assert "locked" in message and "Try again at" in message
    # Locked: even the right PIN is refused until the time it named.
    login(page, sedge.url, "anna", "482913")
    assert "locked" in page.locator("[data-login-error]").inner_text()
    assert page.locator("[data-feed-item], #feed").count() == 0
    # An unknown id reads like a wrong PIN (nobody learns which ids exist).
    login(page, sedge.url, "nobody", "482913")
    assert page.locator("[data-login-error]").inner_text() == "Wrong staff id or PIN."
    page.context.close()


def test_login_sets_an_httponly_strict_cookie_and_logout_or_disable_ends_the_session(sedge: EdgeHandle,
                                                                                     browser: Any) -> None:
    add_staff(sedge.cfg, "anna", "482913")
    page = phone(browser)
    login(page, sedge.url, "anna", "482913")
    assert page.locator("#feed").count() == 1
    cookie = next(c for c in page.context.cookies() if c["name"] == "instore_edge_staff")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/staff"
    assert cookie["secure"] is False  # served over plain HTTP here; Secure behind TLS (see the next test)
    assert "482913" not in cookie["value"]
    page.click("form[action='/staff/logout'] button")
    page.wait_for_load_state()
    assert page.locator('form[data-form="staff-login"]').count() == 1
    # The old cookie no longer works either (logout ended every session of the account).
    stale = requests.get(sedge.url + "/staff/feed/stream", cookies={"instore_edge_staff": cookie["value"]},
                         timeout=5, stream=True)
    assert stale.status_code == 401
    login(page, sedge.url, "anna", "482913")
    page.wait_for_selector('#live[data-state="live"]')
    conn = open_writer(sedge.cfg.db.path)
    accounts.disable(conn, "anna")
    conn.close()
    # The open feed notices by itself: the phone is back at the login form, without anyone touching it.
    page.wait_for_selector('form[data-form="staff-login"]', timeout=15000)


def test_the_session_cookie_is_secure_behind_a_trusted_tls_proxy(cfg_data: dict[str, Any]) -> None:
    cfg_data["http"]["trusted_proxies"] = ["127.0.0.1"]
    h = EdgeHandle(parse_config(cfg_data, env={}))
    try:
        add_staff(h.cfg, "anna", "482913")
        r = requests.post(h.url + "/staff/login", data={"staff_id": "anna", "pin": "482913"},
                          headers={"X-Forwarded-Ssl": "on"}, allow_redirects=False, timeout=10)
        assert r.status_code == 303
        header = r.headers["Set-Cookie"]
        assert "Secure" in header and "HttpOnly" in header and "SameSite=Strict" in header
        # Plain HTTP without the proxy saying TLS: no Secure flag (the browser would drop the cookie).
        plain = requests.post(h.url + "/staff/login", data={"staff_id": "anna", "pin": "482913"},
                              allow_redirects=False, timeout=10)
        assert "Secure" not in plain.headers["Set-Cookie"]
    finally:
        h.stop()


def test_every_staff_view_of_a_shopper_is_audited_exported_and_kept_only_as_a_hash_after_erasure(
        sedge: EdgeHandle, browser: Any) -> None:
    add_staff(sedge.cfg, "anna", "482913")
    add_profile(sedge.cfg, "cust-giulia", "Giulia", consent=True, identities=["loyalty:555"])
    page = phone(browser)
    login(page, sedge.url, "anna", "482913")
    page.goto(sedge.url + "/staff/customer/cust-giulia")
    assert page.locator("main.story").get_attribute("data-customer") == "cust-giulia"
    page.goto(sedge.url + "/staff/customer/555")  # by loyalty card
    assert page.locator("main.story h1").inner_text().startswith("Giulia")

    assert sedge.get("/api/v1/staff/audit", token=None).status_code == 401
    entries = sedge.get("/api/v1/staff/audit").json()["entries"]
    assert [(e["staff_id"], e["customer_id"], e["action"]) for e in entries] == [
        ("anna", "cust-giulia", "story"), ("anna", "cust-giulia", "story")]
    assert all(time.time() - e["at"] < 60 for e in entries)
    export = sedge.get("/api/v1/customers/cust-giulia/export").json()
    assert [v["staff_id"] for v in export["staff_views"]] == ["anna", "anna"]

    assert requests.delete(sedge.url + "/api/v1/customers/cust-giulia",
                           headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).status_code == 200
    after = sedge.get("/api/v1/staff/audit").json()["entries"]
    assert [e["customer_id"] for e in after] == [erase_key("cust-giulia")] * 2
    conn = connect(sedge.cfg.db.path)
    assert conn.execute("SELECT count(*) FROM staff_audit WHERE customer_id = 'cust-giulia'").fetchone()[0] == 0
    conn.close()
    page.context.close()


def test_a_session_cookie_ends_when_idle_and_cannot_be_forged() -> None:
    from edge.staff import sessions

    key, other = b"k" * 32, b"o" * 32
    now = 1_800_000_000.0
    cookie = sessions.issue(key, "anna", 3, now)
    assert sessions.read(key, cookie, now + 60) == sessions.Session("anna", 3, now)
    assert sessions.read(key, cookie, now + sessions.IDLE_S + 1) is None  # idle too long
    assert sessions.read(other, cookie, now) is None  # another database's key
    assert sessions.read(key, cookie.replace("anna", "marco"), now) is None  # edited
    assert sessions.read(key, "junk", now) is None and sessions.read(key, None, now) is None


def test_many_logins_from_one_device_are_slowed_down_whatever_the_ids(sedge: EdgeHandle) -> None:
    codes = [requests.post(sedge.url + "/staff/login", data={"staff_id": f"guess{n}", "pin": "1234"},
                           allow_redirects=False, timeout=10) for n in range(12)]
    assert [r.status_code for r in codes[:10]] == [401] * 10
    assert codes[-1].status_code == 429 and int(codes[-1].headers["Retry-After"]) >= 1
    assert "Too many login attempts from this device" in codes[-1].text
