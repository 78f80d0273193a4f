"""Campaigns at the store, the edge's half: the content channel's pages, the asset cache, a campaign checked
against the store, applied atomically (or refused, or pending its assets), joined with the store's rules,
scheduled in the store's timezone, shown on the retained displays and served at /assets/<sha256>."""

from __future__ import annotations

import hashlib
import re
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from conftest import ADMIN, KIOSK, SIGNAGE, EdgeHandle, store_config
from edge.config import Config, parse_config
from edge.domain.campaigns import Campaigns, Refused, compile_campaign
from edge.domain.displays import Displays
from edge.domain.rules import RuleEngine
from edge.model import Event
from sync.assets import AssetCache
from sync.content import parse_content
from sync.local import CampaignChange, ContentChanges

PNG = b"\x89PNG\r\n\x1a\n" + b"autumn coats" * 50
PNG_SHA = hashlib.sha256(PNG).hexdigest()


def campaign(**over: Any) -> dict[str, Any]:
    """A campaign as the content channel sends it: a playlist item and a rule for the shoes zone."""
    body: dict[str, Any] = {
        "id": "autumn-coats", "version": 1, "name": "Autumn coats", "priority": 0, "schedule": {},
        "content": [{"id": "coats-banner", "template": "message", "title": "Autumn coats", "body": "-10%",
                     "image": PNG_SHA, "i18n": {"it": {"title": "Cappotti d'autunno"}, "fr": {"title": "Manteaux"}}},
                    {"id": "coats-offer", "template": "offer", "title": "Coats for you", "duration_s": 5}],
        "rules": [{"id": "shoes-enter", "priority": 5, "when": {"zone": "shoes", "event": "zone_enter"},
                   "show": {"content_id": "coats-offer", "template": "offer"}}],
    }
    body.update(over)
    return body


def live(body: dict[str, Any], version: int = 1) -> CampaignChange:
    return CampaignChange(body["id"], version, "live", {**body, "version": version})


def config(tmp_path: Path, **sections: Any) -> Config:
    return parse_config(store_config(tmp_path, 1883, **sections), env={})


def enter(zone: str, ts: float, subject: str = "ibeacon:x:1:1") -> Event:
    return Event(event_id=f"e-{zone}-{ts}", kind="zone_enter", source="gw", ts=ts, received_at=ts,
                 zone=zone, subject=subject)


# --- the content channel's pages ------------------------------------------------------------------------------


def test_a_content_page_keeps_the_newest_entry_per_campaign_and_sku_and_skips_malformed_ones() -> None:
    page = {"changes": [
        {"kind": "campaign", "id": "a", "version": 3, "op": "live", "campaign": {"name": "A"}},
        {"kind": "campaign", "id": "a", "version": 5, "op": "withdrawn"},
        {"kind": "campaign", "id": "b", "version": "7", "op": "live", "campaign": {}},  # version not an int
        {"kind": "campaign", "id": "c", "version": 2, "op": "live"},  # live without its body
        {"kind": "product", "sku": "SKU-1", "version": 2, "op": "upsert", "product": {"name": "Coat", "price": 90}},
        {"kind": "product", "sku": "SKU-1", "version": 1, "op": "delete"},
        {"kind": "store", "version": 4, "store": {"name": "Milano", "timezone": "Europe/Rome"}},
        {"kind": "poster", "version": 1}, "junk"],
        "next": "c-9", "more": False}
    changes = parse_content(page)
    assert [(c.id, c.version, c.op) for c in changes.campaigns] == [("a", 5, "withdrawn")]
    assert [(p.sku, p.version, p.op) for p in changes.products] == [("SKU-1", 2, "upsert")]
    assert changes.store == {"name": "Milano", "timezone": "Europe/Rome"} and changes.store_version == 4
    assert changes.cursor == "c-9"


# --- the asset cache ------------------------------------------------------------------------------------------


def test_bytes_that_do_not_hash_to_the_asset_name_never_enter_the_cache(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path / "assets", 10**6)
    with pytest.raises(ValueError, match="hash to"):
        cache.put(PNG_SHA, [PNG[:-1] + b"!"], "image/png")
    assert not cache.has(PNG_SHA) and cache.open_verified(PNG_SHA) is None
    assert cache.put(PNG_SHA, [PNG[:100], PNG[100:]], "image/png") == len(PNG)
    path, content_type = cache.open_verified(PNG_SHA)
    assert path.read_bytes() == PNG and content_type == "image/png"


def test_a_cached_asset_whose_bytes_changed_on_disk_is_deleted_not_served(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path / "assets", 10**6)
    cache.put(PNG_SHA, [PNG], "image/png")
    assert cache.open_verified(PNG_SHA) is not None
    path = tmp_path / "assets" / PNG_SHA
    path.write_bytes(PNG.replace(b"autumn", b"winter"))  # same size, other bytes
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert cache.open_verified(PNG_SHA) is None
    assert not path.exists()


def test_the_cache_evicts_least_recently_used_assets_but_never_one_in_use(tmp_path: Path) -> None:
    cache = AssetCache(tmp_path / "assets", 2500)
    blobs = [bytes([i]) * 1000 for i in range(3)]
    names = [hashlib.sha256(b).hexdigest() for b in blobs]
    for i, (name, blob) in enumerate(zip(names, blobs)):
        cache.put(name, [blob], "image/png")
        os.utime(tmp_path / "assets" / name, (1000 + i, 1000 + i))  # used in this order
    assert cache.evict(frozenset({names[0]})) == [names[1]]  # the oldest is in use: the next oldest goes
    assert cache.has(names[0]) and cache.has(names[2]) and cache.size() <= 2500


# --- checking a campaign against the store -------------------------------------------------------------------


def test_a_campaign_that_fits_the_store_compiles_with_its_assets_playlist_and_own_rule_ids(tmp_path: Path) -> None:
    camp = compile_campaign(config(tmp_path), "autumn-coats", 1, campaign())
    assert camp.assets == {PNG_SHA}
    assert [c.id for c in camp.playlist] == ["coats-banner"]  # no rule shows it: it plays in the playlists
    assert camp.content[0].image == f"/assets/{PNG_SHA}" and set(camp.content[0].i18n) == {"it"}
    assert [r.id for r in camp.rules] == ["campaign:autumn-coats:shoes-enter"]


def test_a_content_items_extra_data_shows_in_the_playlist_and_with_its_rule(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    body = campaign()
    body["content"][0]["data"] = {"subtitle": "Only this week", "poster": PNG_SHA}
    body["content"][1]["data"] = {"subtitle": "For you", "price": 89.0}
    engine, displays, campaigns = world(cfg, time.time)
    campaigns.applied = {"autumn-coats": compile_campaign(cfg, "autumn-coats", 1, body)}
    campaigns.install(time.time())
    first = displays.fallback("entrance-1")["data"]["items"][0]
    assert (first["content_id"], first["subtitle"], first["poster"]) == ("coats-banner", "Only this week",
                                                                         f"/assets/{PNG_SHA}")
    [d] = [d for d in engine.decide(enter("shoes", time.time()), time.time()) if d.display == "shoes-1"]
    assert d.data["subtitle"] == "For you" and d.data["price"] == 89.0 and d.data["title"] == "Coats for you"


@pytest.mark.parametrize(("change", "reason"), [
    ({"rules": [{"id": "r", "when": {"zone": "garden"}, "show": {"content_id": "coats-offer"}}]},
     "unknown zone 'garden'"),
    ({"rules": [{"id": "r", "when": {"zone": "shoes"}, "show": {"content_id": "coats-offer", "screens": ["wall"]}}]},
     "unknown screen 'wall'"),
    ({"content": [{"id": "x", "template": "hologram"}], "rules": []}, "unknown template 'hologram'"),
    ({"rules": [{"id": "r", "when": {"zone": "shoes"}, "show": {"content_id": "ghost"}}]}, "unknown content 'ghost'"),
    ({"schedule": {"hours": "9-18"}}, "schedule.hours"),
    ({"content": [{"id": "autumn", "template": "message"}], "rules": []}, "duplicate id 'autumn'"),
    ({"content": [{"id": "x", "template": "message", "data": {"subtitle": "Hi {first_name}"}}], "rules": []},
     "placeholders (first_name) belong in a rule's show.data"),
])
def test_a_campaign_that_does_not_fit_the_store_is_refused_with_what_did_not_fit(
        tmp_path: Path, change: dict[str, Any], reason: str) -> None:
    with pytest.raises(Refused, match=re.escape(reason)):
        compile_campaign(config(tmp_path), "autumn-coats", 1, campaign(**change))


# --- the engine: who wins, and the schedule in the store's timezone ------------------------------------------


def world(cfg: Config, clock: Callable[[], float]) -> tuple[RuleEngine, Displays, Campaigns]:
    engine = RuleEngine(cfg)
    displays = Displays(cfg)
    return engine, displays, Campaigns(cfg, engine, displays, has_asset=lambda name: True, clock=clock)


def test_on_equal_priority_the_store_rule_wins_and_a_higher_campaign_priority_beats_it(tmp_path: Path) -> None:
    cfg = config(tmp_path, rules=[{"id": "store-shoes", "priority": 5, "when": {"zone": "shoes", "event": "zone_enter"},
                                   "show": {"content_id": "autumn"}}])
    engine, _, campaigns = world(cfg, time.time)
    campaigns.applied = {"autumn-coats": compile_campaign(cfg, "autumn-coats", 1, campaign())}
    campaigns.install(time.time())
    [d] = [d for d in engine.decide(enter("shoes", time.time()), time.time()) if d.display == "shoes-1"]
    assert d.rule_id == "store-shoes"
    body = campaign()
    body["rules"][0]["priority"] = 6
    campaigns.applied = {"autumn-coats": compile_campaign(cfg, "autumn-coats", 2, body)}
    campaigns.install(time.time())
    [d] = [d for d in engine.decide(enter("shoes", time.time() + 1, "ibeacon:x:1:2"), time.time() + 1)
           if d.display == "shoes-1"]
    assert (d.rule_id, d.content_id) == ("campaign:autumn-coats:shoes-enter", "coats-offer")


@pytest.mark.parametrize("timezone", ["Europe/Rome", "America/New_York"])
def test_a_scheduled_campaign_switches_on_and_off_at_the_stores_local_time(tmp_path: Path, timezone: str) -> None:
    tz = ZoneInfo(timezone)
    cfg = config(tmp_path, store={"id": "teststore", "timezone": timezone})
    now = [datetime(2026, 12, 1, 8, 59, 30, tzinfo=tz).timestamp()]  # a Tuesday, 08:59:30 at the store
    engine, displays, campaigns = world(cfg, lambda: now[0])
    body = campaign(schedule={"days": ["mon", "tue"], "hours": "09:00-18:00", "end": "2026-12-01T17:30"})
    campaigns.applied = {"autumn-coats": compile_campaign(cfg, "autumn-coats", 1, body)}
    campaigns.install(now[0])

    def playlist() -> list[str]:
        return [i["content_id"] for i in displays.fallback("entrance-1")["data"]["items"]]

    def offer_shown(at: float) -> bool:
        return any(d.content_id == "coats-offer" for d in engine.decide(enter("shoes", at, f"b:{at}"), at))

    assert playlist() == ["autumn", "news"] and not offer_shown(now[0])
    assert not campaigns.tick()
    now[0] += 30  # 09:00:00 local
    assert campaigns.tick()
    assert playlist() == ["coats-banner", "autumn", "news"] and offer_shown(now[0])
    assert displays.take_changes()  # the screens on their playlist are republished with the campaign in it
    now[0] = datetime(2026, 12, 1, 17, 30, tzinfo=tz).timestamp()  # its end, in store time
    assert campaigns.tick()
    assert playlist() == ["autumn", "news"] and not offer_shown(now[0])
    # The same instant is another local time in the other store: 09:00 in New York is 15:00 in Rome (on),
    # 09:00 in Rome is 03:00 in New York (off).
    other = "America/New_York" if timezone == "Europe/Rome" else "Europe/Rome"
    at_nine_there = datetime(2026, 12, 1, 9, 0, tzinfo=ZoneInfo(other)).timestamp()
    assert campaigns.applied["autumn-coats"].schedule.active(at_nine_there) is (timezone == "Europe/Rome")


# --- at a running edge (real Mosquitto, real SQLite, its HTTP API) ------------------------------------------


def playlist_of(payload: dict[str, Any]) -> list[str]:
    return [i["content_id"] for i in payload.get("data", {}).get("items", [])] \
        if payload.get("content_id") == "playlist" else [payload.get("content_id")]


def retained(mqtt_client: Callable[..., Any], screen: str, predicate: Callable[[dict[str, Any]], bool],
             timeout: float = 10) -> dict[str, Any]:
    """The retained display message of `screen` once it satisfies `predicate` (a new subscriber each time: what
    a screen that (re)connects now gets)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        client = mqtt_client()
        client.subscribe(f"instore/teststore/display/{screen}/content")
        try:
            _, last, _ = client.wait_for(lambda t, d: True, timeout=2)
        except AssertionError:
            pass
        finally:
            client.close()
        if predicate(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"the retained display of {screen} never matched; last: {last}")


def test_a_campaign_waits_for_its_assets_then_applies_in_one_step_and_withdrawal_takes_it_off_the_screens(
        edge: EdgeHandle, mqtt_client: Callable[..., Any]) -> None:
    app = edge.service
    done = app.uplink.apply_content(ContentChanges(campaigns=(live(campaign()),), cursor="c-1")).result(10)
    assert (done.applied, done.pending) == (0, 1)  # its picture is not on the device yet
    assert app.uplink.assets_wanted() == (PNG_SHA,)
    assert retained(mqtt_client, "entrance-1", lambda p: playlist_of(p) == ["autumn", "news"])
    [row] = edge.get("/api/v1/campaigns").json()["campaigns"]
    assert (row["id"], row["version"], row["state"]) == ("autumn-coats", None, "pending")

    app.assets.put(PNG_SHA, [PNG], "image/png")
    assert app.uplink.assets_arrived([PNG_SHA]).result(10) == 1
    shown = retained(mqtt_client, "entrance-1", lambda p: "coats-banner" in playlist_of(p))
    assert shown["data"]["items"][0]["image"] == f"/assets/{PNG_SHA}"
    [row] = edge.get("/api/v1/campaigns").json()["campaigns"]
    assert (row["id"], row["version"], row["state"]) == ("autumn-coats", 1, "applied") and row["applied_at"]
    assert app.uplink.content_cursor() == "c-1"
    reports = [e for e in edge.events("campaign") if e.get("type") == "applied"]
    assert [r["data"] for r in reports] == [{"id": "autumn-coats", "version": 1}]

    app.uplink.apply_content(ContentChanges(campaigns=(CampaignChange("autumn-coats", 2, "withdrawn"),))).result(10)
    assert retained(mqtt_client, "entrance-1", lambda p: playlist_of(p) == ["autumn", "news"])
    assert edge.get("/api/v1/campaigns").json()["campaigns"] == []


def test_a_refused_version_is_reported_with_its_reason_and_the_version_applied_before_stays(
        edge: EdgeHandle, mqtt_client: Callable[..., Any]) -> None:
    app = edge.service
    app.assets.put(PNG_SHA, [PNG], "image/png")
    app.uplink.apply_content(ContentChanges(campaigns=(live(campaign()),))).result(10)
    bad = campaign(rules=[{"id": "r", "when": {"zone": "garden"}, "show": {"content_id": "coats-offer"}}])
    done = app.uplink.apply_content(ContentChanges(campaigns=(live(bad, 2),))).result(10)
    assert done.refused == 1
    [row] = edge.get("/api/v1/campaigns").json()["campaigns"]
    assert (row["version"], row["latest"], row["state"]) == (1, 2, "refused")
    assert "unknown zone 'garden'" in row["reason"]
    [refused] = [e for e in edge.events("campaign") if e.get("type") == "refused"]
    assert refused["data"]["version"] == 2 and "unknown zone 'garden'" in refused["data"]["reason"]
    assert retained(mqtt_client, "shoes-1", lambda p: "coats-banner" in playlist_of(p))
    # An older entry arriving late changes nothing.
    assert app.uplink.apply_content(ContentChanges(campaigns=(live(campaign(), 1),))).result(10).changes == 0


def test_assets_are_served_to_the_stores_players_only_and_never_when_their_bytes_do_not_match(
        edge: EdgeHandle) -> None:
    app = edge.service
    app.assets.put(PNG_SHA, [PNG], "image/png")
    url = f"/assets/{PNG_SHA}"
    assert edge.get(url, token=None).status_code == 401
    for token in (SIGNAGE, KIOSK, ADMIN):
        r = edge.get(url, token=token)
        assert (r.status_code, r.content, r.headers["Content-Type"]) == (200, PNG, "image/png")
    assert requests.get(edge.url + url + f"?token={SIGNAGE}", timeout=10).content == PNG  # a player's page URL
    assert edge.get("/assets/not-a-hash", token=SIGNAGE).status_code == 404
    path = Path(app.assets.root) / PNG_SHA
    path.write_bytes(PNG.replace(b"autumn", b"winter"))
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    r = edge.get(url, token=SIGNAGE)
    assert r.status_code == 404 and b"winter" not in r.content
    assert not path.exists()  # deleted: the downloader fetches the right bytes again


def test_impressions_of_campaign_content_are_reported_with_the_shoppers_reached(
        edge: EdgeHandle, mqtt_client: Callable[..., Any]) -> None:
    from conftest import now_ms, sighting, wait_until

    app = edge.service
    app.assets.put(PNG_SHA, [PNG], "image/png")
    app.uplink.apply_content(ContentChanges(campaigns=(live(campaign()),))).result(10)
    client = mqtt_client()
    for minor in (1, 2):  # two shoppers walk into the shoes zone
        client.publish("instore/teststore/beacon/gw-shoes", sighting(now_ms(), minor=minor))
    wait_until(lambda: len([d for d in edge.get("/api/v1/decisions").json()["decisions"]
                            if d["content_id"] == "coats-offer"]) >= 2, what="the campaign's offer shown twice")
    app.run_in_writer(app._report_impressions)
    [report] = [e for e in edge.events("campaign") if e.get("type") == "impressions"]
    assert {k: report["data"][k] for k in ("id", "version", "content_id", "shown", "reached")} == \
        {"id": "autumn-coats", "version": 1, "content_id": "coats-offer", "shown": 2, "reached": 2}
    app.run_in_writer(app._report_impressions)  # nothing shown since: nothing more to report
    assert len([e for e in edge.events("campaign") if e.get("type") == "impressions"]) == 1


def test_a_products_picture_is_public_for_the_shoppers_landing_pages(edge: EdgeHandle) -> None:
    from sync.local import ProductChange

    app = edge.service
    other = b"\x89PNG\r\n\x1a\nnot a product" * 10
    other_sha = hashlib.sha256(other).hexdigest()
    app.assets.put(PNG_SHA, [PNG], "image/png")
    app.assets.put(other_sha, [other], "image/png")
    product = {"sku": "COAT-1", "name": "Wool coat", "price": 129.0, "currency": "EUR", "image": PNG_SHA,
               "available": True}
    app.uplink.apply_content(ContentChanges(products=(ProductChange("COAT-1", 3, "upsert", product),))).result(10)
    assert edge.get(f"/assets/{PNG_SHA}", token=None).content == PNG
    assert edge.get(f"/assets/{other_sha}", token=None).status_code == 401
    assert app.catalogue.get("COAT-1").image == PNG_SHA
    assert app.uplink.assets_pinned() == {PNG_SHA}
    app.uplink.apply_content(ContentChanges(products=(ProductChange("COAT-1", 4, "delete"),))).result(10)
    assert app.catalogue.get("COAT-1") is None and edge.get(f"/assets/{PNG_SHA}", token=None).status_code == 401


def test_metrics_count_campaign_versions_applied_and_the_asset_cache(edge: EdgeHandle) -> None:
    app = edge.service
    app.assets.put(PNG_SHA, [PNG], "image/png")
    app.uplink.apply_content(ContentChanges(campaigns=(live(campaign()),))).result(10)
    text = requests.get(edge.url + "/metrics", timeout=10).text
    assert "instore_edge_campaigns_applied 1.0" in text
    assert f"instore_edge_assets_cache_bytes {float(len(PNG))}" in text


def test_channel_products_go_to_the_one_catalogue_newer_than_held_and_its_listeners_hear_them(tmp_path: Path) -> None:
    from edge.domain.catalogue import Catalogue
    from edge.store.writer import Writer, open_writer
    from sync.local import ProductChange

    cfg = config(tmp_path)
    writer = Writer(open_writer(cfg.db.path))
    announced: list[str] = []
    catalogue = Catalogue(cfg, writer.conn)
    catalogue.listeners.append(announced.extend)
    campaigns = Campaigns(cfg, RuleEngine(cfg), Displays(cfg), has_asset=lambda n: True, catalogue=catalogue)

    def stored() -> list[tuple[str, float | None]]:
        """The central's products as a restart reads them from the table."""
        return sorted((p.sku, p.price) for p in Catalogue(cfg, writer.conn).central.values())

    def take(*changes: ProductChange) -> None:
        writer.begin()
        campaigns.take(writer, ContentChanges(products=changes))
        writer.commit()

    take(ProductChange("COAT-1", 2, "upsert", {"name": "Coat", "price": 99.0}))
    take(ProductChange("COAT-1", 1, "upsert", {"name": "Coat", "price": 120.0}))  # late and older: ignored
    assert stored() == [("COAT-1", 99.0)] and catalogue.get("COAT-1").price == 99.0
    take(ProductChange("COAT-1", 3, "delete"), ProductChange("SCARF-1", 1, "upsert", {"name": "Scarf"}))
    assert [sku for sku, _ in stored()] == ["SCARF-1"]
    assert announced == ["COAT-1", "COAT-1", "SCARF-1"]
    assert catalogue.get("SCARF-1") is not None and catalogue.get("COAT-1") is None
    take(ProductChange("BAD-1", 1, "upsert", {"name": "No price", "price": "cheap"}))  # the catalogue cannot read it
    [(topic, detail)] = writer.conn.execute("SELECT topic, detail FROM deadletters").fetchall()
    assert topic == "central/content" and "BAD-1" in detail and "price" in detail
    assert catalogue.get("BAD-1") is None


def test_a_campaign_body_of_the_wrong_shape_is_refused_and_the_channel_moves_on(edge: EdgeHandle) -> None:
    app = edge.service
    odd = CampaignChange("odd", 1, "live", {"version": 1, "content": "not a list", "rules": [1, 2]})
    odder = CampaignChange("odder", 1, "live", {"version": 1, "schedule": {"start": 5}, "priority": True})
    done = app.uplink.apply_content(ContentChanges(campaigns=(odd, odder), cursor="c-2")).result(10)
    assert done.refused == 2 and app.uplink.content_cursor() == "c-2"
    reasons = {c["id"]: c["reason"] for c in edge.get("/api/v1/campaigns").json()["campaigns"]}
    assert "content: expected a list" in reasons["odd"] and "priority: expected an integer" in reasons["odder"]


def test_a_running_edge_switches_a_scheduled_campaign_on_its_screens_at_the_stores_local_nine_oclock(
        make_config: Callable[..., Config], mqtt_client: Callable[..., Any]) -> None:
    from edge.app import App

    tz = ZoneInfo("America/New_York")
    now = [datetime(2026, 12, 1, 8, 59, 58, tzinfo=tz).timestamp()]
    app = App(make_config(store={"id": "teststore", "timezone": "America/New_York"}), clock=lambda: now[0]).start()
    try:
        app.assets.put(PNG_SHA, [PNG], "image/png")
        body = campaign(schedule={"hours": "09:00-10:00"})
        app.uplink.apply_content(ContentChanges(campaigns=(live(body),))).result(10)
        time.sleep(2.5)  # the campaign clock ticks every second: nothing to switch yet
        assert retained(mqtt_client, "entrance-1", lambda p: playlist_of(p) == ["autumn", "news"])
        now[0] += 2  # 09:00:00 in New York
        assert retained(mqtt_client, "entrance-1", lambda p: playlist_of(p) == ["coats-banner", "autumn", "news"])
        now[0] = datetime(2026, 12, 1, 10, 0, tzinfo=tz).timestamp()
        assert retained(mqtt_client, "entrance-1", lambda p: playlist_of(p) == ["autumn", "news"])
    finally:
        app.stop()
