"""The pages shoppers and store IT see, driven in a real headless Chromium against a real edge and broker:
signage switching to rule content and back, surviving an edge restart, the kiosk flow with its events,
escaping, tokens, staying on 127.0.0.1, and layouts that fit portrait and landscape screens."""

from __future__ import annotations

import gc
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from edge.broker import free_port
from edge.config import Config
from edge.store.db import connect
from edge.store.writer import open_writer
from edge.pages.streams import Hub, StreamsFull
from a11y import assert_accessible, assert_open_pages_accessible
from conftest import ADMIN, KIOSK, SIGNAGE, EdgeHandle, now_ms, sighting, store_config, wait_until
from edge.broker import MosquittoBroker
from edge.config import parse_config

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ENTRANCE = "instore/teststore/beacon/gw-entrance"
PLAYLIST_IDS = ("autumn", "news")
# The test store's catalogue ([[products]]): what its kiosk offers, and names on wishlists, carts and orders.
PRODUCTS = [
    {"sku": "SNK-001", "name": "Corsa Runner sneakers", "zone": "shoes", "price": 119.0},
    {"sku": "SNK-002", "name": "Retro court sneakers, white", "zone": "shoes", "price": 95.0},
    {"sku": "OUT-001", "name": "Dolomiti waterproof jacket", "zone": "entrance", "price": 189.0},
    {"sku": "ACC-002", "name": "Merino scarf", "price": 45.0},
    {"sku": "KID-001", "name": "Kids rain boots", "price": 35.0},
]
PORTRAIT = {"width": 1080, "height": 1920}
LANDSCAPE = {"width": 1920, "height": 1080}
EVIL_NAME = "<script>alert(1)</script>"
LOYALTY = "1234567890"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    import os

    executable = CHROMIUM if os.path.exists(CHROMIUM) else None  # else Playwright's own, if installed
    with playwright_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Exception as exc:  # pragma: no cover - depends on the machine
            pytest.fail(f"cannot start Chromium ({exc}): the page tests need a real browser. Run the test "
                        "command from the README (scripts/test), or `sudo apt-get install chromium`.")
        yield b
        b.close()
    # Collect Playwright's greenlets now: on Python 3.11.7 a greenlet collected later, in the middle of an
    # ast.parse (pytest's assertion rewriting), trips CPython's "AST constructor recursion depth mismatch"
    # (gh-106905, fixed in 3.11.8).
    gc.collect()


class Pages:
    """Browser contexts for one test; every request a page makes is checked to stay on 127.0.0.1."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.contexts: list[Any] = []
        self.requested: list[str] = []
        self.outside: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []  # uncaught exceptions in page scripts
        self.console_errors: list[str] = []

    def _route(self, route: Any) -> None:
        url = route.request.url
        self.requested.append(url)
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or parts.hostname == "127.0.0.1":
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def new(self, viewport: dict[str, int] = LANDSCAPE) -> Any:
        context = self.browser.new_context(viewport=viewport)
        context.route("**/*", self._route)
        self.contexts.append(context)
        page = context.new_page()
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        return page

    def close(self) -> None:
        for c in self.contexts:
            c.close()


@pytest.fixture
def make_config(tmp_path: Path, broker: MosquittoBroker) -> Callable[..., Config]:
    """The test store, with its own catalogue."""
    def make(**sections: Any) -> Config:
        sections.setdefault("products", PRODUCTS)
        return parse_config(store_config(tmp_path, broker.port, **sections), env={})

    return make


@pytest.fixture
def pages(browser: Any) -> Iterator[Pages]:
    p = Pages(browser)
    yield p
    try:
        assert_open_pages_accessible(p.contexts)  # every page a test opens meets WCAG 2.1 AA (axe-core)
    finally:
        p.close()
    assert not p.outside, f"pages requested something outside 127.0.0.1: {p.outside}"
    assert not p.dialogs, f"a page opened a dialog (script injection?): {p.dialogs}"
    assert not p.errors, f"uncaught errors in page scripts: {p.errors}"


@pytest.fixture
def restartable_edge(make_config: Callable[..., Config]) -> Iterator[Callable[[], EdgeHandle]]:
    """An edge on a fixed HTTP port, so a page can outlive one edge process and reconnect to the next."""
    cfg = make_config(http={"port": free_port()})
    handles: list[EdgeHandle] = []

    def start() -> EdgeHandle:
        if handles:
            stop_like_a_process(handles[-1])
            wait_until(lambda: port_free(cfg.http.port), timeout=10, what=f"port {cfg.http.port} to be free")
        handles.append(EdgeHandle(cfg))
        return handles[-1]

    yield start
    if handles:
        stop_like_a_process(handles[-1])


def stop_like_a_process(handle: EdgeHandle) -> None:
    """Stop an in-process edge the way a process exit would: waitress's close() stops accepting but keeps
    the open connections (idle keep-alive ones) on its loop, where a browser would reuse them to talk to a
    stopped service; have the loop close them. (App.stop does this itself once it closes leftover
    connections; then this is a no-op.)"""
    server = handle.service.http_server
    handle.stop()
    for channel in list(getattr(server, "_map", {}).values()):
        channel.will_close = True


def port_free(port: int) -> bool:
    """Whether a server could listen on the port now (a stopped waitress lets go of it within a second)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pump_until(page: Any, predicate: Callable[[], Any], timeout: float = 10, what: str = "") -> Any:
    """wait_until for tests with a page: sleeps in Playwright, so its route handlers keep running (the sync
    API only dispatches them while Python is inside a Playwright call)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out waiting for {what or 'condition'}")


def content_id(page: Any) -> str | None:
    return page.get_attribute("#stage", "data-content-id")


def wait_online(page: Any, timeout_ms: int = 10000) -> None:
    page.wait_for_selector("body[data-online='yes']", timeout=timeout_ms, state="attached")


def watch_for(page: Any, cid: str) -> None:
    """Record (epoch ms, browser clock) when #stage first shows content `cid`."""
    page.evaluate("""(cid) => {
        window.__shownAt = null;
        const stage = document.getElementById('stage');
        const seen = () => { if (window.__shownAt === null && stage.getAttribute('data-content-id') === cid)
                                 window.__shownAt = performance.timeOrigin + performance.now(); };
        new MutationObserver(seen).observe(stage, {attributes: true, attributeFilter: ['data-content-id']});
    }""", cid)


def add_profile(cfg: Config, customer: str, first_name: str, *, consent: bool, loyalty: str | None = None,
                identities: list[str] = []) -> None:
    """A cached profile row, as sync would have written it (before the edge starts, for beacon identities:
    the edge reads the identities table as it starts)."""
    keys = ([f"loyalty:{loyalty}"] if loyalty else []) + identities
    profile = {"customer_id": customer, "first_name": first_name, "segments": ["sneakers"], "tier": "gold",
               "consents": {"personalization": consent, "marketing": False}, "preferences": {},
               "wishlist": ["SNK-001", "ACC-002"], "cart": ["OUT-001"],
               "orders_ready": [{"order_id": "ORD-4242", "items": ["KID-001"], "ready_at": "2025-03-14T09:00:00Z",
                                 "pickup_bay": "B2"}],
               "identities": keys, "version": 3}
    conn = open_writer(cfg.db.path)  # the edge may not have created the file yet
    try:
        conn.execute("BEGIN")
        conn.execute("INSERT OR REPLACE INTO profiles(customer_id, version, profile, first_name, "
                     "consent_personalization, updated_at, last_seen) VALUES (?,?,?,?,?,?,NULL)",
                     (customer, 3, json.dumps(profile), first_name, int(consent), time.time()))
        for key in keys:
            conn.execute("INSERT OR REPLACE INTO identities(key, customer_id, via, learned_at) VALUES (?,?,?,?)",
                         (key, customer, "central", time.time()))
        conn.execute("COMMIT")
    finally:
        conn.close()


def ui_hub(edge: EdgeHandle) -> Hub:
    """The page streams of a running edge."""
    return edge.service.pages.hub


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n  [timing] {line}")


# --- tokens -----------------------------------------------------------------------------------------------

def test_pages_and_streams_refuse_a_missing_or_wrong_token(edge: EdgeHandle) -> None:
    u = edge.url
    for path in ("/signage/entrance-1", "/kiosk/kiosk-1", "/", "/signage/entrance-1/stream", "/kiosk/kiosk-1/stream"):
        assert requests.get(u + path, timeout=5).status_code == 401, path
        assert requests.get(u + path, params={"token": "not-a-token-at-all-xx"}, timeout=5).status_code == 401, path
    r = requests.get(u + "/signage/entrance-1", timeout=5)
    assert r.headers["Content-Type"].startswith("text/html") and "signage token" in r.text
    assert requests.get(u + "/signage/entrance-1/stream", timeout=5).json()["error"]["code"] == "unauthorized"
    # A token of another role: 403.
    assert requests.get(u + "/signage/entrance-1", params={"token": KIOSK}, timeout=5).status_code == 403
    assert requests.get(u + "/kiosk/kiosk-1", params={"token": SIGNAGE}, timeout=5).status_code == 403
    assert requests.get(u + "/", params={"token": SIGNAGE}, timeout=5).status_code == 403
    # The kiosk API takes the kiosk token as a bearer only.
    assert requests.get(u + "/kiosk/kiosk-1/context", params={"customer": "C-1"}, timeout=5).status_code == 401
    assert edge.get("/kiosk/kiosk-1/context?customer=C-1", token=SIGNAGE).status_code == 403
    assert requests.post(u + "/kiosk/kiosk-1/handoff", json={"session": "s1"}, timeout=5).status_code == 401
    # Right tokens: as a bearer or on the URL; unknown screens and kiosks are 404.
    assert edge.get("/signage/entrance-1", token=SIGNAGE).status_code == 200
    assert requests.get(u + "/signage/entrance-1", params={"token": SIGNAGE}, timeout=5).status_code == 200
    assert requests.get(u + "/signage/nope", params={"token": SIGNAGE}, timeout=5).status_code == 404
    assert requests.get(u + "/kiosk/nope", params={"token": KIOSK}, timeout=5).status_code == 404
    assert edge.get("/kiosk/kiosk-1", token=KIOSK).status_code == 200
    assert edge.get("/signage/entrance-1", token=ADMIN).status_code == 200  # admin grants everything


def test_stream_is_unbuffered_event_stream_with_current_content(edge: EdgeHandle, mqtt_client: Any) -> None:
    r = requests.get(edge.url + "/signage/entrance-1/stream", headers={"Authorization": f"Bearer {SIGNAGE}"},
                     stream=True, timeout=5)
    try:
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert "no-cache" in r.headers["Cache-Control"] and r.headers["X-Accel-Buffering"] == "no"
        chunks = r.iter_content(chunk_size=None)
        first = next(chunks).decode()
        assert first.startswith("retry: ") and "event: content" in first and '"content_id":"playlist"' in first
        assert '"customer"' not in first
        t0 = time.monotonic()
        mqtt_client().publish(ENTRANCE, sighting(now_ms(), minor=7))
        second = next(chunks).decode()
        assert '"content_id":"welcome"' in second and time.monotonic() - t0 < 1.0
    finally:
        r.close()


def test_streams_are_bounded_per_screen_and_overall() -> None:
    hub = Hub(lambda target, payload: payload, max_streams=lambda: 3, per_target=2)
    a1, a2 = hub.open(("signage", "a")), hub.open(("signage", "a"))
    a3 = hub.open(("signage", "a"))  # evicts the oldest stream of the same screen
    assert a1.closed.is_set() and a1.queue.get_nowait() is None
    assert not a2.closed.is_set() and not a3.closed.is_set()
    hub.release(a1)
    assert hub.open(("signage", "b")) is not None
    with pytest.raises(StreamsFull) as full:  # all slots taken
        hub.open(("signage", "c"))
    assert not full.value.per_client
    for _ in range(50):  # a slow client: never blocks, keeps the newest messages
        hub.on_display("a", {"n": 1})
    assert a2.queue.qsize() == a2.queue.maxsize


def test_one_client_cannot_take_every_stream_or_evict_another_screens_stream() -> None:
    hub = Hub(lambda target, payload: payload, max_streams=lambda: 20, per_target=2, per_client=3)
    screen = hub.open(("signage", "a"), "10.0.0.5")  # the real screen
    mine = [hub.open(("signage", t), "10.0.0.66") for t in ("a", "b", "c")]
    with pytest.raises(StreamsFull) as full:
        hub.open(("signage", "d"), "10.0.0.66")
    assert full.value.per_client and full.value.limit == 3
    again = hub.open(("signage", "a"), "10.0.0.66")  # a reload replaces the client's own stream...
    assert mine[0].closed.is_set() and not again.closed.is_set()
    assert not screen.closed.is_set()  # ...never the screen's
    assert hub.open(("signage", "d"), "10.0.0.7") is not None  # other clients still get streams
    assert hub.count() == 5


def test_screens_get_no_customer_id_and_no_images_from_elsewhere(tmp_path: Path) -> None:
    from edge.pages.views import screen_view

    content = [{"id": "autumn", "title": "Autumn", "image": "https://cdn.example.com/a.jpg"},
               {"id": "news", "title": "New", "image": "/media/news.png"}, {"id": "welcome", "title": "Hi"}]
    cfg = parse_config(store_config(tmp_path, 1883, content=content), env={})
    view = screen_view(cfg, {"content_id": "welcome", "template": "message", "data": {"body": "b"}, "customer": "C-1",
                             "reason": "r", "rule": "x", "expires_at": 5, "screen": "entrance-1", "ts": 1})
    assert "customer" not in json.dumps(view)
    assert view["title"] == "Hi" and view["body"] == "b"  # the content item's title, the rule's body
    playlist = screen_view(cfg, {"content_id": "playlist", "template": "playlist", "data": {"items": [
        {"content_id": "autumn", "image": "https://cdn.example.com/a.jpg"},
        {"content_id": "news", "image": "/media/news.png"}]}})
    assert [i["image"] for i in playlist["items"]] == [None, "/media/news.png"]


# --- signage ----------------------------------------------------------------------------------------------

def test_signage_shows_rule_content_within_a_second_then_returns_to_playlist(
        edge: EdgeHandle, mqtt_client: Any, pages: Pages, capsys: pytest.CaptureFixture[str]) -> None:
    page = pages.new(LANDSCAPE)
    page.goto(f"{edge.url}/signage/entrance-1?token={SIGNAGE}")
    wait_online(page)
    assert content_id(page) in PLAYLIST_IDS
    assert page.evaluate("parseFloat(getComputedStyle(document.querySelector('#stage .body')).fontSize)") >= 32
    assert_accessible(page, "signage, playlist")
    watch_for(page, "welcome")
    client = mqtt_client()

    published_at = time.time() * 1000
    client.publish(ENTRANCE, sighting(now_ms()))
    page.wait_for_selector("#stage[data-content-id='welcome']", timeout=3000)
    shown_at = page.evaluate("window.__shownAt")
    latency = shown_at - published_at
    report(capsys, f"signage: MQTT publish -> page shows 'welcome': {latency:.0f} ms")
    assert latency < 1000
    assert page.text_content("#stage .title") == "Welcome!"
    assert page.get_attribute("#stage", "data-kind") == "rule"
    assert_accessible(page, "signage, rule content")

    # The rule's ttl is 2 s: the edge publishes the playlist again and the page goes back to it.
    expires_at = edge.service.pipeline.displays.snapshot("entrance-1")["expires_at"]
    page.wait_for_function("ids => ids.includes(document.getElementById('stage').getAttribute('data-content-id'))",
                           arg=list(PLAYLIST_IDS), timeout=5000)
    back = time.time() * 1000 - expires_at
    report(capsys, f"signage: back to the playlist {back:.0f} ms after expires_at")
    assert back < 1500


def test_signage_greets_a_consenting_shopper_by_name_and_no_one_else(
        make_config: Callable[..., Config], mqtt_client: Any, pages: Pages) -> None:
    cfg = make_config(rules=[
        {"id": "hello-known", "priority": 20, "ttl_s": 30.0, "when": {"zone": "entrance", "event": "zone_enter",
                                                                     "known": True},
         "show": {"content_id": "welcome", "data": {"title": "Hi {first_name}!", "body": "Good to see you."}}},
        {"id": "entrance-welcome", "priority": 10, "ttl_s": 2.0, "when": {"zone": "entrance", "event": "zone_enter"},
         "show": {"content_id": "welcome", "template": "message", "data": {"title": "Welcome!"}}}])
    beacon = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100"
    add_profile(cfg, "C-0001", "Giulia", consent=True, identities=[f"{beacon}:9"])
    add_profile(cfg, "C-0002", "Noemi", consent=False, identities=[f"{beacon}:8"])
    edge = EdgeHandle(cfg)
    try:
        page = pages.new(PORTRAIT)
        page.goto(f"{edge.url}/signage/entrance-1?token={SIGNAGE}")
        wait_online(page)
        client = mqtt_client()
        client.publish(ENTRANCE, sighting(now_ms(), minor=8))  # no consent: the generic welcome
        page.wait_for_selector("#stage[data-content-id='welcome']", timeout=3000)
        assert page.text_content("#stage .title") == "Welcome!"
        client.publish(ENTRANCE, sighting(now_ms(), minor=9))
        page.wait_for_function("() => document.querySelector('#stage .title').textContent === 'Hi Giulia!'",
                               timeout=3000)
        assert "Noemi" not in page.content()
        assert_accessible(page, "signage, personalized")
    finally:
        edge.stop()


def test_signage_keeps_playing_and_expires_by_itself_while_the_edge_is_away(
        restartable_edge: Callable[[], EdgeHandle], mqtt_client: Any, pages: Pages) -> None:
    edge = restartable_edge()
    page = pages.new(PORTRAIT)
    page.goto(f"{edge.url}/signage/entrance-1?token={SIGNAGE}")
    wait_online(page)
    mqtt_client().publish(ENTRANCE, sighting(now_ms()))
    page.wait_for_selector("#stage[data-content-id='welcome']", timeout=3000)
    stop_like_a_process(edge)  # the playlist message at expiry never comes: the page expires it itself
    page.wait_for_selector("#offline", state="visible", timeout=8000)
    page.wait_for_function("ids => ids.includes(document.getElementById('stage').getAttribute('data-content-id'))",
                           arg=list(PLAYLIST_IDS), timeout=6000)
    # And it keeps cycling its last playlist (items of 8 s) while offline.
    first = content_id(page)
    page.wait_for_function("cid => document.getElementById('stage').getAttribute('data-content-id') !== cid",
                           arg=first, timeout=10000)
    assert content_id(page) in PLAYLIST_IDS


def test_signage_reconnects_after_an_edge_restart_without_reloading(
        restartable_edge: Callable[[], EdgeHandle], mqtt_client: Any, pages: Pages,
        capsys: pytest.CaptureFixture[str]) -> None:
    edge = restartable_edge()
    page = pages.new(LANDSCAPE)
    page.goto(f"{edge.url}/signage/entrance-1?token={SIGNAGE}")
    wait_online(page)
    page.evaluate("window.__sameDocument = true")

    stopped_at = time.monotonic()
    edge = restartable_edge()  # stops the first service, starts a new one on the same db and port
    restarted_at = time.monotonic()

    watch_for(page, "welcome")
    hub = ui_hub(edge)
    pump_until(page, lambda: hub.viewers(("signage", "entrance-1")) == 1, timeout=15,
               what="the page's stream on the new edge")
    reconnected_in = time.monotonic() - restarted_at
    published_at = time.time() * 1000
    mqtt_client().publish(ENTRANCE, sighting(now_ms(), minor=2))
    page.wait_for_selector("#stage[data-content-id='welcome']", timeout=5000)
    latency = page.evaluate("window.__shownAt") - published_at
    assert page.evaluate("window.__sameDocument") is True  # no reload
    report(capsys, f"signage after an edge restart ({restarted_at - stopped_at:.1f} s down): stream back "
                   f"{reconnected_in:.1f} s after the new edge started; publish -> page {latency:.0f} ms")
    assert latency < 1000


# --- kiosk ------------------------------------------------------------------------------------------------

def test_kiosk_identify_browse_add_handoff_records_events_and_escapes_names(
        edge: EdgeHandle, pages: Pages) -> None:
    add_profile(edge.cfg, "C-EVIL", EVIL_NAME, consent=True, loyalty=LOYALTY)
    page = pages.new(PORTRAIT)
    page.goto(f"{edge.url}/kiosk/kiosk-1?token={KIOSK}")
    page.wait_for_selector("#welcome:not([hidden])")
    assert_accessible(page, "kiosk, idle")
    for digit in LOYALTY:
        page.click(f"#keypad [data-key='{digit}']")
    assert page.input_value("#code") == LOYALTY
    page.click("#identify-form button[type=submit]")
    page.wait_for_selector("#home:not([hidden])")

    assert page.text_content("#greeting") == f"Hi, {EVIL_NAME}!"
    assert "&lt;script&gt;" in page.inner_html("#greeting")
    assert page.evaluate("document.querySelectorAll('#greeting script, #home script').length") == 0
    assert page.is_visible("#wishlist") and "Corsa Runner sneakers" in page.text_content("#wishlist")
    assert page.is_visible("#online-cart") and "Dolomiti waterproof jacket" in page.text_content("#online-cart")
    assert page.is_visible("#orders") and "ORD-4242" in page.text_content("#orders")
    assert_accessible(page, "kiosk, identified")

    page.click("#products .product-card[data-sku='SNK-002']")
    page.wait_for_selector("#product:not([hidden])")
    assert page.text_content("#product .name") == "Retro court sneakers, white"
    assert_accessible(page, "kiosk, a product")
    page.click("#add")
    assert page.text_content("#bag-count") == "Bag: 1 item"
    page.click("#close-product")
    page.click("#handoff")
    page.wait_for_selector("#qr-img:not([hidden])")
    page.wait_for_function("() => document.getElementById('qr-img').naturalWidth > 100")
    assert page.get_attribute("#qr-img", "src").startswith("data:image/png;base64,")
    assert_accessible(page, "kiosk, handoff QR code")

    def kiosk_events() -> list[dict[str, Any]] | None:
        events = [e for e in edge.events(kind="kiosk") if e["source"] == "kiosk-1"]
        return events if {e["type"] for e in events} >= {"identify", "browse", "add_to_cart", "handoff"} else None

    events = sorted(pump_until(page, kiosk_events, timeout=10, what="the kiosk events"), key=lambda e: e["seq"])
    by_type = {e["type"]: e for e in events}
    assert [e["type"] for e in events] == ["identify", "browse", "add_to_cart", "handoff"]
    assert by_type["identify"]["customer"] == "C-EVIL"
    sessions = {e["data"]["session"] for e in events}
    assert len(sessions) == 1
    assert by_type["browse"]["data"]["item"] == "SNK-002" and by_type["add_to_cart"]["data"]["item"] == "SNK-002"
    assert all(e["customer"] == "C-EVIL" for e in events)

    page.click("#qr-done")  # the session ends and nothing personal stays on screen
    page.wait_for_selector("#welcome:not([hidden])")
    assert EVIL_NAME not in page.content()


def test_kiosk_shows_no_name_or_wishlist_without_personalization_consent(edge: EdgeHandle, pages: Pages) -> None:
    add_profile(edge.cfg, "C-NOCONSENT", "Noemi", consent=False, loyalty="5555555555")
    ctx = edge.get("/kiosk/kiosk-1/context?customer=5555555555", token=KIOSK).json()
    assert ctx["customer"] == "C-NOCONSENT" and ctx["personalized"] is False
    assert ctx["first_name"] is None and ctx["wishlist"] == [] and ctx["cart"] == []
    page = pages.new(LANDSCAPE)
    page.goto(f"{edge.url}/kiosk/kiosk-1?token={KIOSK}")
    page.fill("#code", "5555555555")
    page.press("#code", "Enter")
    page.wait_for_selector("#home:not([hidden])")
    assert page.text_content("#greeting") == "Welcome!"
    assert "Noemi" not in page.content()
    assert page.is_hidden("#personal") and page.is_hidden("#wishlist")
    assert page.locator("#products .product-card").count() > 0  # generic zone content
    first = page.get_attribute("#products .product-card", "data-sku")
    assert first.startswith("SNK-") or first.startswith("OUT-003") or first.startswith("FRM-003")  # shoes first


def test_the_kiosk_offers_the_stores_own_catalogue_never_the_demo_one(make_config: Callable[..., Config]) -> None:
    """A store configured with [[products]] MY-SKU is offered MY-SKU, and its shoppers' wishlists are named from
    it; the reference central store's demo catalogue (SNK-001...) is nobody's business here."""
    edge = EdgeHandle(make_config(products=[{"sku": "MY-SKU", "name": "My own product", "zone": "shoes",
                                             "price": 12.5}]))
    try:
        page = edge.get("/kiosk/kiosk-1", token=KIOSK)
        assert page.status_code == 200
        boot = json.loads(page.text.split('<script type="application/json" id="boot">', 1)[1].split("</script>")[0])
        assert [(p["sku"], p["name"], p["price"]) for p in boot["products"]] == [("MY-SKU", "My own product", 12.5)]
        assert "SNK-" not in page.text
        add_profile(edge.cfg, "C-MINE", "Mia", consent=True, loyalty="7777777777")
        conn = connect(edge.cfg.db.path)
        try:
            profile = json.loads(conn.execute("SELECT profile FROM profiles WHERE customer_id = 'C-MINE'").fetchone()[0])
            profile["wishlist"] = ["MY-SKU"]
            conn.execute("UPDATE profiles SET profile = ? WHERE customer_id = 'C-MINE'", (json.dumps(profile),))
        finally:
            conn.close()
        ctx = edge.get("/kiosk/kiosk-1/context?customer=7777777777", token=KIOSK).json()
        assert ctx["personalized"] and [w["name"] for w in ctx["wishlist"]] == ["My own product"]
    finally:
        edge.stop()


def test_kiosk_anonymous_session_browses_with_a_session_and_no_customer(edge: EdgeHandle, pages: Pages) -> None:
    page = pages.new(LANDSCAPE)
    page.goto(f"{edge.url}/kiosk/kiosk-1?token={KIOSK}")
    page.click("#anonymous")
    page.wait_for_selector("#home:not([hidden])")
    page.click("#products .product-card >> nth=0")
    page.wait_for_selector("#product:not([hidden])")

    def browsed() -> list[dict[str, Any]]:
        return [e for e in edge.events(kind="kiosk") if e["type"] == "browse"]

    event = pump_until(page, browsed, timeout=10, what="a browse event")[0]
    assert event["customer"] is None and event["data"]["session"]


def test_kiosk_stream_pushes_rule_content_for_the_kiosk(
        make_config: Callable[..., Config], mqtt_client: Any, pages: Pages) -> None:
    cfg = make_config(rules=[
        {"id": "shoes-hello", "priority": 5, "ttl_s": 2.0, "when": {"zone": "shoes", "event": "zone_enter"},
         "show": {"content_id": "news", "kiosks": ["@zone"], "data": {"title": "New in shoes", "body": "Here"}}}])
    edge = EdgeHandle(cfg)
    try:
        page = pages.new(LANDSCAPE)
        page.goto(f"{edge.url}/kiosk/kiosk-1?token={KIOSK}")
        wait_online(page)
        assert page.is_hidden("#pushed")
        mqtt_client().publish("instore/teststore/beacon/gw-shoes", sighting(now_ms(), minor=3))
        page.wait_for_selector("#pushed[data-content-id='news']:not([hidden])", timeout=3000)
        assert page.text_content("#pushed .title") == "New in shoes"
        page.wait_for_selector("#pushed", state="hidden", timeout=5000)  # expired: the kiosk is idle again
    finally:
        edge.stop()


# --- whole pages --------------------------------------------------------------------------------------------

def test_pages_load_without_any_request_leaving_127_0_0_1(edge: EdgeHandle, pages: Pages) -> None:
    for path, token in (("/signage/entrance-1", SIGNAGE), ("/kiosk/kiosk-1", KIOSK), ("/", ADMIN)):
        page = pages.new(LANDSCAPE)
        page.goto(f"{edge.url}{path}?token={token}")
        page.wait_for_load_state("networkidle") if path == "/" else wait_online(page)
    assert any(u.endswith("/ui/static/signage.js") for u in pages.requested)
    assert any(u.endswith("/ui/static/kiosk.css") for u in pages.requested)
    assert any("/signage/entrance-1/stream" in u for u in pages.requested)
    assert all(urlsplit(u).hostname == "127.0.0.1" for u in pages.requested if u.startswith("http"))
    assert not pages.outside
    assert not pages.console_errors, pages.console_errors  # e.g. a Content-Security-Policy violation


@pytest.mark.parametrize("viewport", [PORTRAIT, LANDSCAPE], ids=["portrait", "landscape"])
def test_pages_fit_portrait_and_landscape_screens(edge: EdgeHandle, mqtt_client: Any, pages: Pages,
                                                   viewport: dict[str, int], tmp_path: Path) -> None:
    add_profile(edge.cfg, "C-0001", "Giulia", consent=True, loyalty=LOYALTY)
    fits = ("[document.scrollingElement.scrollWidth, innerWidth, document.scrollingElement.scrollHeight, "
            "innerHeight]")
    name = "portrait" if viewport is PORTRAIT else "landscape"

    signage = pages.new(viewport)
    signage.goto(f"{edge.url}/signage/entrance-1?token={SIGNAGE}")
    wait_online(signage)
    sw, iw, sh, ih = signage.evaluate(fits)
    signage.screenshot(path=str(tmp_path / f"signage-{name}.png"))
    assert sw <= iw and sh <= ih, "signage playlist overflows"
    mqtt_client().publish(ENTRANCE, sighting(now_ms()))
    signage.wait_for_selector("#stage[data-content-id='welcome']", timeout=3000)
    sw, iw, sh, ih = signage.evaluate(fits)
    assert sw <= iw and sh <= ih, "signage rule content overflows"

    kiosk = pages.new(viewport)
    kiosk.goto(f"{edge.url}/kiosk/kiosk-1?token={KIOSK}")
    sw, iw, _, _ = kiosk.evaluate(fits)
    assert sw <= iw, "kiosk welcome overflows"
    kiosk.fill("#code", LOYALTY)
    kiosk.press("#code", "Enter")
    kiosk.wait_for_selector("#home:not([hidden])")
    kiosk.screenshot(path=str(tmp_path / f"kiosk-{name}.png"))
    sw, iw, _, _ = kiosk.evaluate(fits)
    assert sw <= iw, "kiosk home overflows"
    kiosk.click("#handoff")
    kiosk.wait_for_selector("#qr-img:not([hidden])")
    sw, iw, _, _ = kiosk.evaluate(fits)
    assert sw <= iw, "kiosk handoff overflows"


def test_status_page_lists_screens_with_their_content_and_links(edge: EdgeHandle, pages: Pages) -> None:
    page = pages.new(LANDSCAPE)
    page.goto(f"{edge.url}/?token={ADMIN}")
    assert urlsplit(page.url).query == ""  # the token moved into a cookie
    for screen in ("entrance-1", "shoes-1"):
        assert page.locator(f"a[href='/signage/{screen}']").count() == 1
    assert page.locator("a[href='/kiosk/kiosk-1']").count() == 1
    assert page.locator("code[data-content-id='playlist']").count() == 2
    assert page.locator("code[data-content-id='kiosk-idle']").count() == 1
    assert_accessible(page, "status page")
    page.click("a[href='/signage/entrance-1']")  # the admin cookie opens the player
    wait_online(page)
    assert content_id(page) in PLAYLIST_IDS
