"""The store dashboard and its KPIs: events published over MQTT to a real broker and edge show up in
`GET /api/v1/kpis` and, in a real headless Chromium, as charts on `/` (with nothing leaving 127.0.0.1)."""

from __future__ import annotations


import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests

from a11y import assert_accessible
from conftest import ADMIN, KIOSK, SIGNAGE, EdgeHandle, now_ms, sighting, wait_until
from edge.domain.journeys import session_cart
from edge.kpis import KpiError, buckets, kpis, parse_time, resolve_range
from edge.store.writer import open_writer

P = "instore/teststore"
ENTRANCE = f"{P}/beacon/gw-entrance"
POS = f"{P}/pos/till-1"
KIOSK_EVENTS = f"{P}/kiosk/kiosk-1/event"
ROME = ZoneInfo("Europe/Rome")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def window_params() -> dict[str, str]:
    now = time.time()
    return {"from": str(int(now - 3600)), "to": str(int(now + 3600))}


def publish_store_activity(mqtt_client: Any) -> None:
    """3 shoppers at the entrance, a QR scan, a kiosk session (2 events), a sale of 42.50, a refused message."""
    c = mqtt_client()
    for minor in (1, 2, 3):
        c.publish(ENTRANCE, sighting(now_ms(), minor=minor))
    c.publish(f"{P}/qr/scanner-1", {"id": 1, "ts": now_ms(), "code": "PROMO-AUTUMN"})
    c.publish(KIOSK_EVENTS, {"type": "browse", "session": "ks-1", "ts": now_ms()})
    c.publish(KIOSK_EVENTS, {"type": "view", "session": "ks-1", "item": "sku-1", "ts": now_ms()})
    c.publish(POS, {"id": "r-1", "ts": now_ms(), "items": ["sku-1"], "total": 42.5})
    c.publish(POS, b"{not json")


def get_kpis(edge: EdgeHandle, **params: str) -> dict[str, Any]:
    r = edge.get("/api/v1/kpis", params={**window_params(), **params})
    assert r.status_code == 200, r.text
    return r.json()


def zone_of(k: dict[str, Any], zone: str) -> dict[str, Any]:
    return next((z for z in k["zones"] if z["zone"] == zone), {"visitors": 0, "stays": 0})


# --- the figures --------------------------------------------------------------------------------------------

def test_kpis_reflect_published_events(edge: EdgeHandle, mqtt_client: Any) -> None:
    publish_store_activity(mqtt_client)

    def settled() -> dict[str, Any] | None:
        k = get_kpis(edge)
        # exit_after_s = 2: the three stays end, with their dwell, a couple of seconds after the last sighting
        done = (zone_of(k, "entrance")["stays"] == 3 and k["engagement"]["purchases"] == 1
                and k["engagement"]["kiosk_sessions"] == 1 and k["deadletters"]["total"] >= 1)
        return k if done else None

    k = wait_until(settled, timeout=15, interval=0.3, what="the KPIs to show the published events")
    assert k["visitors"]["total"] == 3
    entrance = zone_of(k, "entrance")
    assert entrance["visitors"] == 3 and entrance["entries"] == 3
    assert entrance["dwell_avg_s"] is not None and entrance["dwell_avg_s"] >= 0
    assert zone_of(k, "shoes")["visitors"] == 0
    funnel = {s["step"]: s["value"] for s in k["funnel"]}
    assert funnel == {"sightings": 3, "qr_scans": 1, "kiosk_sessions": 1, "purchases": 1}
    assert k["engagement"]["revenue"] == 42.5 and k["engagement"]["kiosk_events"] == 2
    # The hour bucket of now holds the three visits; the buckets cover the range in local hours.
    assert sum(b["visitors"] for b in k["timeline"]) == 3
    assert sum(b["entries"].get("entrance", 0) for b in k["timeline"]) == 3
    assert all(len(b["label"]) == 5 for b in k["timeline"]) and len(k["timeline"]) in (2, 3)
    # The entrance welcome rule showed its content on the entrance screen to these shoppers.
    welcome = next(c for c in k["content"] if c["content_id"] == "welcome")
    assert welcome["rule_id"] == "entrance-welcome" and welcome["shown"] >= 1
    assert welcome["screens"] == 1 and 1 <= welcome["reached"] <= 3
    assert any(d["reason"] and d["count"] >= 1 for d in k["deadletters"]["by_reason"])
    # Sync: no central configured, so every event waits in the outbox.
    assert k["sync"]["outbox_pending"] >= 10 and k["sync"]["oldest_pending_age_s"] >= 0
    assert k["range"]["timezone"] == "Europe/Rome" and k["range"]["bucket_s"] == 3600
    assert k["live"]["checks"]["broker"]["ok"] is True and k["live"]["cache"]["max"] > 0
    # Outside the range: nothing (events are counted by their own ts).
    old = edge.get("/api/v1/kpis", params={"from": "2020-01-01", "to": "2020-01-02"}).json()
    assert old["visitors"]["total"] == 0 and old["engagement"]["purchases"] == 0 and old["content"] == []
    assert len(old["timeline"]) == 24 and old["timeline"][9]["label"] == "09:00"
    assert old["timeline"][0]["start"] == datetime(2020, 1, 1, tzinfo=ROME).timestamp()


def test_kpis_defaults_params_and_auth(edge: EdgeHandle) -> None:
    r = edge.get("/api/v1/kpis")
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    rng = r.json()["range"]
    assert rng["to"] - rng["from"] in (23 * 3600, 24 * 3600, 25 * 3600)  # today, local midnight to midnight
    assert rng["from_local"].endswith("T00:00:00+01:00") or rng["from_local"].endswith("T00:00:00+02:00")
    assert edge.get("/api/v1/kpis", params={"from": "2024-05-01T08:00:00+02:00", "to": "2024-05-03"}).status_code == 200
    week = edge.get("/api/v1/kpis", params={"from": "2024-05-01", "to": "2024-05-08"}).json()
    assert week["range"]["bucket_s"] == 86400 and [b["label"] for b in week["timeline"]][:2] == ["2024-05-01",
                                                                                                 "2024-05-02"]
    bad = [({"from": "yesterday"}, "'from'"), ({"to": "2024-13-45"}, "'to'"), ({"from": "1714550400000"}, "milliseconds"),
           ({"from": "2024-05-02", "to": "2024-05-01"}, "after"), ({"from": "2024-01-01", "to": "2024-03-01"}, "31 days"),
           ({"bucket": "7"}, "'bucket'"), ({"from": "nan"}, "'from'")]
    for params, words in bad:
        r = edge.get("/api/v1/kpis", params=params)
        assert r.status_code == 400, params
        body = r.json()["error"]
        assert body["code"] == "bad_request" and words in body["message"], (params, body)
    assert requests.get(edge.url + "/api/v1/kpis", timeout=5).status_code == 401
    assert requests.get(edge.url + "/api/v1/kpis", timeout=5).json()["error"]["code"] == "unauthorized"
    assert edge.get("/api/v1/kpis", token="not-a-token-at-all-xx").status_code == 401
    assert edge.get("/api/v1/kpis", token=KIOSK).status_code == 403
    assert edge.get("/api/v1/kpis", token=SIGNAGE).status_code == 403
    # The token is never taken from the URL; the dashboard's admin cookie is.
    assert requests.get(edge.url + "/api/v1/kpis", params={"token": ADMIN}, timeout=5).status_code == 401
    s = requests.Session()
    assert s.get(edge.url + "/", params={"token": ADMIN}, timeout=5).status_code == 200
    assert s.get(edge.url + "/api/v1/kpis", timeout=5).status_code == 200


def test_kpis_function_on_a_file(tmp_path: Any) -> None:
    """kpis() straight on SQLite: staff beacons are not visitors, stays average per zone, revenue sums."""
    conn = open_writer(tmp_path / "k.db")
    t0 = datetime(2024, 5, 1, 10, 15, tzinfo=ROME).timestamp()
    rows = [
        ("a1", "visit_start", None, "entrance", "s:1", None, t0, '{"visit_id":"v1","dwell_s":0}'),
        ("a2", "zone_enter", None, "entrance", "s:1", None, t0, '{"visit_id":"v1","dwell_s":0}'),
        ("a3", "zone_exit", None, "entrance", "s:1", None, t0 + 30, '{"visit_id":"v1","dwell_s":30}'),
        ("a4", "zone_enter", None, "shoes", "s:1", None, t0 + 30, '{"visit_id":"v1","dwell_s":0}'),
        ("a5", "zone_exit", None, "shoes", "s:1", None, t0 + 120, '{"visit_id":"v1","dwell_s":90}'),
        ("b1", "visit_start", None, "entrance", "s:2", None, t0 + 3700, '{"visit_id":"v2","dwell_s":0}'),
        ("b2", "zone_enter", None, "entrance", "s:2", None, t0 + 3700, '{"visit_id":"v2","dwell_s":0}'),
        ("b3", "zone_exit", None, "entrance", "s:2", None, t0 + 3710, '{"visit_id":"v2","dwell_s":10}'),
        ("c1", "visit_start", None, "entrance", "s:staff", None, t0, '{"visit_id":"v3","dwell_s":0,"staff":true}'),
        ("c2", "zone_enter", None, "entrance", "s:staff", None, t0, '{"visit_id":"v3","dwell_s":0,"staff":true}'),
        ("p1", "pos", None, None, None, "C-1", t0 + 200, '{"items":["x"],"total":10.25}'),
        ("p2", "pos", None, None, None, None, t0 + 300, '{"items":["y"],"total":5}'),
        ("k1", "kiosk", "browse", "shoes", "session:a", None, t0 + 50, '{"session":"a"}'),
        ("k2", "kiosk", "view", "shoes", "session:a", None, t0 + 60, '{"session":"a","item":"x"}'),
        ("k3", "kiosk", "browse", "shoes", "session:b", None, t0 + 70, '{"session":"b"}'),
        ("z1", "pos", None, None, None, None, t0 - 86400, '{"items":["y"],"total":99}'),  # the day before
    ]
    conn.executemany("INSERT INTO events(event_id, kind, type, zone, subject, customer, ts, received_at, data, "
                     "source) VALUES (?,?,?,?,?,?,?,?,?, 'src')", [(*r[:7], r[6], r[7]) for r in rows])
    conn.executemany("INSERT INTO decisions(ts, screen, content_id, rule_id, reason, event_id, customer) "
                     "VALUES (?,?,?,?,?,?,?)", [(t0, "entrance-1", "welcome", "r1", "rule", "a2", None),
                                                (t0 + 1, "entrance-2", "welcome", "r1", "rule", "a2", None),
                                                (t0 + 3700, "entrance-1", "welcome", "r1", "rule", "b2", None),
                                                # another rule showing the same content: still one row
                                                (t0 + 3701, "entrance-1", "welcome", "r2", "rule", "b2", None),
                                                (t0 - 86400, "entrance-1", "old", "r0", "rule", None, None)])
    conn.execute("INSERT INTO deadletters(topic, reason, detail, payload_excerpt, received_at) VALUES "
                 "('t', 'not_json', '', '', ?)", (t0,))
    start = datetime(2024, 5, 1, tzinfo=ROME).timestamp()
    k = kpis(conn, start, start + 86400, "Europe/Rome", 3600, now=t0 + 4000, outbox_capacity=1000)
    assert k["visitors"]["total"] == 2
    zones = {z["zone"]: z for z in k["zones"]}
    assert zones["entrance"]["visitors"] == 2 and zones["entrance"]["dwell_avg_s"] == 20.0
    assert zones["shoes"]["visitors"] == 1 and zones["shoes"]["dwell_avg_s"] == 90.0
    assert [b["visitors"] for b in k["timeline"]][10:12] == [1, 1] and len(k["timeline"]) == 24
    assert k["timeline"][10]["dwell_avg_s"] == {"entrance": 30.0, "shoes": 90.0}
    assert [s["value"] for s in k["funnel"]] == [2, 0, 2, 2]
    assert k["engagement"]["revenue"] == 15.25 and k["engagement"]["identified_buyers"] == 1
    assert k["content"] == [{"content_id": "welcome", "rule_id": "r1", "rules": ["r1", "r2"], "shown": 4,
                             "screens": 2, "reached": 2}]
    assert k["deadletters"] == {"total": 1, "by_reason": [{"reason": "not_json", "count": 1}]}
    assert k["sync"]["outbox_pending"] == 0 and k["sync"]["oldest_pending_age_s"] is None
    conn.close()


def test_kpis_and_kiosk_bags_read_the_event_log_by_index_not_whole(tmp_path: Any) -> None:
    """Sightings (most of the log) are not in the kind index: the dashboard's queries and a kiosk session's bag
    still find their events through it, never by reading every event of a long log."""
    conn = open_writer(tmp_path / "k.db")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    kpis(conn, time.time() - 86400, time.time(), "Europe/Rome", 3600, now=time.time(), outbox_capacity=1000)
    session_cart(conn, "kiosk-1", "abc")
    conn.set_trace_callback(None)
    reads = [s for s in statements if "FROM events" in s]
    assert len(reads) >= 8
    for sql in reads:
        plan = " ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert "SCAN events" not in plan and "idx_events_kind" in plan, (sql, plan)
    conn.close()


def test_range_parsing_and_local_buckets() -> None:
    assert parse_time("2024-05-01", "Europe/Rome") == datetime(2024, 5, 1, tzinfo=ROME).timestamp()
    assert parse_time("2024-05-01T10:00:00Z", "Europe/Rome") == datetime(2024, 5, 1, 12, tzinfo=ROME).timestamp()
    assert parse_time("1714550400", "UTC") == 1714550400.0
    with pytest.raises(KpiError):
        parse_time("soon", "UTC")
    # DST: 2024-03-31 in Rome has 23 hours, 2024-10-27 has 25; labels follow the wall clock.
    spring = resolve_range("2024-03-31", "2024-04-01", "Europe/Rome")
    labels = [label for _, label in buckets(*spring, "Europe/Rome", 3600)]
    assert len(labels) == 23 and "02:00" not in labels and labels[:4] == ["00:00", "01:00", "03:00", "04:00"]
    autumn = resolve_range("2024-10-27", None, "Europe/Rome")
    assert autumn[1] - autumn[0] == 86400  # 'to' defaults to a day later
    days = buckets(*resolve_range("2024-10-26", "2024-10-29", "Europe/Rome"), "Europe/Rome", 86400)
    assert [label for _, label in days] == ["2024-10-26", "2024-10-27", "2024-10-28"]
    assert days[2][0] - days[1][0] == 25 * 3600


# --- the page in a real browser ---------------------------------------------------------------------------

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    import gc
    import os

    executable = CHROMIUM if os.path.exists(CHROMIUM) else None
    with playwright_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Exception as exc:  # pragma: no cover - depends on the machine
            pytest.fail(f"cannot start Chromium ({exc}): the dashboard tests need a real browser "
                        "(`sudo apt-get install chromium`)")
        yield b
        b.close()
    gc.collect()  # see test_pages.browser: collect Playwright's greenlets now


class Guarded:
    """A browser context whose every request must stay on 127.0.0.1; page errors are collected."""

    def __init__(self, browser: Any, viewport: dict[str, int]) -> None:
        self.requested: list[str] = []
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.console: list[str] = []
        self.context = browser.new_context(viewport=viewport)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda m: self.console.append(m.text) if m.type == "error" else None)

    def _route(self, route: Any) -> None:
        url = route.request.url
        self.requested.append(url)
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob") or parts.hostname == "127.0.0.1":
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()


def row(page: Any, chart: str, key: str) -> Any:
    """A chart's figure as its table row (data-key, data-label, data-value): what assistive tools read."""
    return page.locator(f"[data-chart='{chart}'] tr[data-key='{key}']")


# Where each text Chart.js drew (axis labels, from its own layout) and each value at a bar's end lies,
# against its canvas: a label cut at the left ("itting rooms") or right shows up here.
CHART_TEXTS_OUTSIDE = """() => {
  const problems = [], texts = [];
  document.querySelectorAll('[data-chart] canvas').forEach(canvas => {
    const chart = Chart.getChart(canvas);
    if (!chart) { return; }
    const name = canvas.closest('[data-chart]').getAttribute('data-chart'), ctx = chart.ctx, boxes = [];
    Object.values(chart.scales).forEach(scale => {
      if (!scale.options.display) { return; }
      scale.getLabelItems().forEach(item => {
        const o = item.options, x = o.translation[0];
        ctx.save();
        ctx.font = item.font.string;
        [].concat(item.label).forEach(line => {
          const w = ctx.measureText(String(line)).width;
          const left = o.textAlign === 'right' ? x - w : (o.textAlign === 'center' ? x - w / 2 : x);
          boxes.push({text: String(line), left: left, right: left + w});
        });
        ctx.restore();
      });
    });
    (chart.$instoreValues || []).forEach(v => boxes.push(v));
    boxes.forEach(b => {
      texts.push(name + ': ' + b.text);
      if (b.left < -0.5 || b.right > chart.width + 0.5) {
        problems.push(name + ': "' + b.text + '" spans x ' + b.left.toFixed(1) + '..' + b.right.toFixed(1) +
                      ' of a ' + chart.width + ' px canvas');
      }
    });
  });
  return {problems: problems, texts: texts};
}"""


def add_cached_profile(edge: EdgeHandle, customer: str) -> None:
    """One profile in the edge's cache, as sync would have written it (the status card counts them)."""
    from edge.store.db import connect

    conn = connect(edge.cfg.db.path)
    try:
        conn.execute("BEGIN")
        conn.execute("INSERT OR REPLACE INTO profiles(customer_id, version, profile, first_name, "
                     "consent_personalization, updated_at, last_seen) VALUES (?, 1, '{}', NULL, 0, ?, NULL)",
                     (customer, time.time()))
        conn.execute("COMMIT")
    finally:
        conn.close()


PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop-1366", "phone-390"])
def test_dashboard_draws_charts_from_published_events(edge: EdgeHandle, mqtt_client: Any, browser: Any,
                                                      viewport: dict[str, int], tmp_path: Any) -> None:
    add_cached_profile(edge, "C-1")
    g = Guarded(browser, viewport)
    try:
        page = g.page
        page.goto(f"{edge.url}/?token={ADMIN}")
        assert urlsplit(page.url).query == ""  # the token moved into the cookie
        page.wait_for_selector("body[data-loaded]")
        assert row(page, "visitors-by-zone", "entrance").get_attribute("data-value") == "0"
        assert page.locator("#st-broker").get_attribute("data-ok") == "true"
        # The Day field shows the day being viewed: today in the store's time zone.
        today = datetime.now(ROME).date().isoformat()
        assert page.input_value("#day") == today
        assert page.text_content("#st-cache") == "1 profile"
        assert_accessible(page, f"dashboard, empty, {viewport['width']} px")

        publish_store_activity(mqtt_client)
        # The page refreshes by itself (~10 s); the figures appear without a reload.
        page.wait_for_selector("[data-chart='visitors-by-zone'] tr[data-key='entrance'][data-value='3']",
                               timeout=25000, state="attached")
        page.wait_for_selector("#kpi-purchases[data-value='1']", timeout=15000)
        assert page.text_content("#kpi-purchases-k") == "purchase" and page.text_content("#kpi-visitors-k") == "visitors"
        entrance = row(page, "visitors-by-zone", "entrance")
        assert entrance.get_attribute("data-label") == "Entrance"
        assert entrance.locator("th").text_content() == "Entrance"
        assert row(page, "visitors-by-zone", "shoes").get_attribute("data-value") == "0"
        funnel = {k: row(page, "funnel", k).get_attribute("data-value")
                  for k in ("sightings", "qr_scans", "kiosk_sessions", "purchases")}
        assert funnel == {"sightings": "3", "qr_scans": "1", "kiosk_sessions": "1", "purchases": "1"}
        assert page.locator("#kpi-revenue").get_attribute("data-value") == "42.5"
        points = page.locator("[data-chart='visitors-over-time'] tbody tr")
        assert sum(int(points.nth(i).get_attribute("data-value")) for i in range(points.count())) == 3
        assert page.locator("[data-chart='content'] tr[data-key='welcome']").count() == 1
        assert int(page.locator("#sync-pending").get_attribute("data-value")) >= 10
        wait_until(lambda: page.locator("#st-deadletters-reasons li[data-reason]").count() >= 1, timeout=15,
                   what="dead letters with their reason")
        # Accessible charts: each canvas is an image whose name says the figures; the table has them too.
        for chart in ("visitors-by-zone", "dwell-by-zone", "visitors-over-time", "funnel", "content", "sync-lag"):
            canvas = page.locator(f"[data-chart='{chart}'] canvas")
            assert canvas.get_attribute("role") == "img"
            assert len(canvas.get_attribute("aria-label")) > 20, chart
            assert page.locator(f"[data-chart='{chart}'] table caption").text_content().strip(), chart
        assert "Entrance 3" in page.get_attribute("[data-chart='visitors-by-zone'] canvas", "aria-label")
        # Nothing clipped or overflowing: every label Chart.js drew lies inside its canvas, every canvas
        # inside its panel, and the page does not scroll sideways.
        drawn = page.evaluate(CHART_TEXTS_OUTSIDE)
        assert not drawn["problems"], drawn["problems"]
        assert any(t.startswith("visitors-by-zone: Entrance") for t in drawn["texts"])
        assert any(t.startswith("funnel: QR scans") for t in drawn["texts"])
        outside = page.evaluate("""() => [...document.querySelectorAll('.panel canvas')].filter(c => {
            const p = c.closest('.panel').getBoundingClientRect(), r = c.getBoundingClientRect();
            return r.left < p.left - 0.5 || r.right > p.right + 0.5 || r.width < 100;
        }).map(c => c.closest('[data-chart]').getAttribute('data-chart'))""")
        assert not outside, outside
        sw, iw = page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
        assert sw <= iw, "the dashboard overflows horizontally"
        assert_accessible(page, f"dashboard with figures, {viewport['width']} px")
        page.screenshot(path=str(tmp_path / f"dashboard-{viewport['width']}.png"), full_page=True)
        assert page.locator("a[href='/signage/entrance-1']").count() == 1  # the status tables are still there

        # Another day: the field and the range follow; "Today" comes back to today.
        page.fill("#day", "2020-01-01")
        page.dispatch_event("#day", "change")
        page.wait_for_selector("#day[data-day='2020-01-01']", state="attached", timeout=10000)
        assert row(page, "visitors-by-zone", "entrance").get_attribute("data-value") == "0"
        assert page.text_content("#range").startswith("2020-01-01 00:00")
        page.click("#today")
        page.wait_for_selector(f"#day[data-day='{today}']", state="attached", timeout=10000)
        assert page.input_value("#day") == today
    finally:
        g.context.close()
    assert not g.outside, f"the dashboard requested something outside 127.0.0.1: {g.outside}"
    assert any(u.endswith("/ui/static/charts.js") for u in g.requested)
    assert any(u.endswith("/ui/static/vendor/chartjs/chart.umd.min.js") for u in g.requested)
    assert any("/api/v1/kpis" in u for u in g.requested)
    assert not g.errors, g.errors
    assert not g.console, g.console  # e.g. a Content-Security-Policy violation


def test_dashboard_refuses_without_the_admin_token(edge: EdgeHandle) -> None:
    assert requests.get(edge.url + "/", timeout=5).status_code == 401
    assert requests.get(edge.url + "/", params={"token": KIOSK}, timeout=5).status_code == 403
    for name in ("charts.js", "dashboard_page.js", "dashboard.css", "vendor/chartjs/chart.umd.min.js"):
        r = requests.get(f"{edge.url}/ui/static/{name}", timeout=5)
        assert r.status_code == 200 and b"http://" not in r.content  # nothing loaded from elsewhere



