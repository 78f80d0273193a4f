"""Campaigns, catalogue, assets, store reports and shopper events at the central store, run against both
engines (a SQLite file and a real PostgreSQL), as tests/test_central_storage.py does for profiles."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sync import protocol as p
from sync.central import content as c
from sync.central.storage import CentralError, Conflict, NotFound, Settings, Storage, open_storage

NOW = time.time()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "central.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(db: str) -> Iterator[Storage]:
    s = open_storage(db, Settings())
    yield s
    s.close()


def campaign(name: str = "Autumn coats", *, stores: list[str] | None = None, tags: list[str] | None = None,
             title: str = "Autumn coats -10%", image: str | None = None, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"id": "autumn-coats", "template": "message", "title": title, "body": "Weekday evenings"}
    if image:
        item["image"] = image
    body = {"name": name, "targets": {"stores": stores if stores is not None else ["*"], "tags": tags or []},
            "content": [item],
            "rules": [{"id": "autumn-gold", "priority": 5, "when": {"zone": "entrance", "tier": "gold"},
                       "show": {"content_id": "autumn-coats"}}], **extra}
    return c.validate_campaign(body)


def content(store: Storage, who: str, since: str | None = None) -> tuple[dict[str, dict[str, Any]], str]:
    """Everything after `since` in a store's content feed, by entity (campaign id / sku / 'store'); the cursor."""
    out: dict[str, dict[str, Any]] = {}
    while True:
        page = store.content_changes(since, 500, who)
        for change in page["changes"]:
            out[change.get("id") or change.get("sku") or change["kind"]] = change
        since = page["next"]
        if not page["more"]:
            return out, since


def report(event_id: str, kind: str, type_: str, ts: float = NOW, customer: str | None = None,
           **data: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"event_id": event_id, "kind": kind, "type": type_, "ts": ts, "source": "edge",
                         "data": data}
    if customer:
        e["customer"] = customer
    return e


def live_version(change: dict[str, Any]) -> int | None:
    return change["campaign"]["version"] if change["op"] == "live" else None


# --- campaigns ----------------------------------------------------------------------------------------------


def test_a_draft_reaches_no_store_until_it_is_published(store: Storage) -> None:
    assert store.put_campaign("autumn", campaign()) == {"id": "autumn", "version": 1}
    assert content(store, "s1")[0] == {}
    store.publish_campaign("autumn", None)
    got = content(store, "s1")[0]["autumn"]
    assert got["op"] == "live" and got["campaign"]["version"] == 1
    assert got["campaign"]["rules"][0]["show"]["content_id"] == "autumn-coats"


def test_a_campaign_published_to_two_stores_is_live_only_there(store: Storage) -> None:
    store.put_campaign("autumn", campaign(stores=["s1", "s2", "s3"]))
    store.publish_campaign("autumn", ["s1", "s2"])
    assert live_version(content(store, "s1")[0]["autumn"]) == 1
    assert live_version(content(store, "s2")[0]["autumn"]) == 1
    assert live_version(content(store, "s3")[0]["autumn"]) is None  # targeted, not yet published there
    assert live_version(content(store, "s4")[0]["autumn"]) is None  # not a target at all
    with pytest.raises(CentralError, match="not among the targets"):
        store.publish_campaign("autumn", ["s4"])


def test_a_staged_rollout_then_all_targets(store: Storage) -> None:
    store.put_campaign("autumn", campaign())
    store.publish_campaign("autumn", None)
    store.put_campaign("autumn", campaign(title="Autumn coats -20%"))
    _, cursor_s2 = content(store, "s2")
    store.publish_campaign("autumn", ["s1"])
    s1 = content(store, "s1")[0]["autumn"]
    assert s1["campaign"]["version"] == 2 and s1["campaign"]["content"][0]["title"] == "Autumn coats -20%"
    later, _ = content(store, "s2", cursor_s2)
    assert all(live_version(ch) == 1 for ch in later.values())  # s2 keeps version 1
    store.publish_campaign("autumn", None)
    assert live_version(content(store, "s2")[0]["autumn"]) == 2


def test_rollback_makes_the_previous_version_live_again(store: Storage) -> None:
    store.put_campaign("autumn", campaign())
    store.publish_campaign("autumn", None)
    first, cursor = content(store, "s1")
    store.put_campaign("autumn", campaign(title="Oops, wrong price"))
    store.publish_campaign("autumn", None)
    second, cursor = content(store, "s1", cursor)
    store.rollback_campaign("autumn")
    third, cursor = content(store, "s1", cursor)
    assert live_version(second["autumn"]) == 2 and live_version(third["autumn"]) == 1
    # The entry's version grows even though the campaign's version went back: the edge applies it.
    assert first["autumn"]["version"] < second["autumn"]["version"] < third["autumn"]["version"]
    store.rollback_campaign("autumn")  # before the first publication: nothing
    assert content(store, "s1", cursor)[0]["autumn"]["op"] == "withdrawn"
    with pytest.raises(Conflict, match="nothing to roll back"):
        store.rollback_campaign("autumn")


def test_withdraw_stops_a_campaign_everywhere_and_a_publish_brings_it_back(store: Storage) -> None:
    store.put_campaign("autumn", campaign())
    store.publish_campaign("autumn", None)
    store.withdraw_campaign("autumn")
    for who in ("s1", "s2"):
        assert content(store, who)[0]["autumn"]["op"] == "withdrawn"
    store.publish_campaign("autumn", None)
    assert live_version(content(store, "s1")[0]["autumn"]) == 1
    with pytest.raises(NotFound):
        store.withdraw_campaign("nope")


def test_targets_by_tag_follow_the_stores_tags(store: Storage) -> None:
    store.put_store_meta("s1", {"tags": ["north"], "timezone": "Europe/Rome", "language": "it"})
    store.put_campaign("north", campaign(stores=[], tags=["north"]))
    store.publish_campaign("north", None)
    assert live_version(content(store, "s1")[0]["north"]) == 1
    assert live_version(content(store, "s2")[0]["north"]) is None
    _, cursor = content(store, "s1")
    store.put_store_meta("s1", {"tags": ["south"]})  # the store leaves the targets
    after, _ = content(store, "s1", cursor)
    assert after["north"]["op"] == "withdrawn"
    assert after["store"]["store"] == {"name": None, "tags": ["south"], "timezone": "Europe/Rome", "language": "it"}


def test_a_campaign_showing_an_image_not_uploaded_is_refused(store: Storage) -> None:
    sha = hashlib.sha256(b"poster").hexdigest()
    with pytest.raises(CentralError, match="not uploaded"):
        store.put_campaign("autumn", campaign(image=sha))
    assert store.put_asset(sha, "image/png", b"poster") is True
    assert store.put_asset(sha, "image/png", b"poster") is False
    assert store.put_campaign("autumn", campaign(image=sha))["version"] == 1
    assert store.get_asset(sha) == ("image/png", b"poster")
    assert store.get_asset("0" * 64) is None


# --- products -----------------------------------------------------------------------------------------------


def test_a_product_reaches_every_store_with_its_own_price_and_availability(store: Storage) -> None:
    body = c.validate_product({"name": "Wool coat", "price": 199.0, "currency": "EUR", "zone": "womenswear",
                               "stores": {"s2": {"price": 179.0, "available": False}},
                               "i18n": {"it": {"name": "Cappotto di lana"}}, "ean": "8001234567890"})
    store.put_product("COAT-1", body)
    s1 = content(store, "s1")[0]["COAT-1"]
    s2, cursor = content(store, "s2")
    assert s1["op"] == "upsert" and s1["product"]["price"] == 199.0 and s1["product"]["available"] is True
    assert s2["COAT-1"]["product"]["price"] == 179.0 and s2["COAT-1"]["product"]["available"] is False
    assert "stores" not in s1["product"]  # another store's prices are not sent
    store.put_product("COAT-1", {**body, "price": 149.0})
    changed, cursor = content(store, "s2", cursor)
    assert changed["COAT-1"]["version"] > s2["COAT-1"]["version"] and changed["COAT-1"]["product"]["price"] == 179.0
    assert content(store, "s1")[0]["COAT-1"]["product"]["price"] == 149.0
    store.delete_product("COAT-1")
    assert content(store, "s2", cursor)[0]["COAT-1"]["op"] == "delete"
    with pytest.raises(NotFound):
        store.delete_product("COAT-1")


def test_the_content_feed_compacts_and_pages(store: Storage) -> None:
    body = c.validate_product({"name": "Scarf", "price": 45, "currency": "EUR"})
    for i in range(5):
        store.put_product(f"SKU-{i}", body)
    for _ in range(3):
        store.put_product("SKU-0", body)
    page = store.content_changes(None, 2, "s1")
    assert len(page["changes"]) == 2 and page["more"] is True
    everything, _ = content(store, "s1")
    assert sorted(everything) == [f"SKU-{i}" for i in range(5)]  # one entry each, however often changed


def test_a_content_long_poll_wakes_on_a_publish(store: Storage) -> None:
    store.put_campaign("autumn", campaign())
    _, cursor = content(store, "s1")
    answers: list[dict[str, Any]] = []
    waiter = threading.Thread(target=lambda: answers.append(store.content_changes(cursor, 100, "s1", wait_s=20)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.3)
    store.publish_campaign("autumn", ["s1"])
    waiter.join(25)
    assert answers and answers[0]["changes"][0]["op"] == "live"
    assert time.monotonic() - started < 10


def test_a_content_long_poll_wakes_when_another_process_publishes(db: str, store: Storage) -> None:
    other = open_storage(db, Settings())  # its own wake-ups: only the database connects the two
    try:
        store.put_campaign("autumn", campaign())
        _, cursor = content(store, "s1")
        answers: list[dict[str, Any]] = []
        waiter = threading.Thread(target=lambda: answers.append(store.content_changes(cursor, 100, "s1", wait_s=20)))
        started = time.monotonic()
        waiter.start()
        time.sleep(0.3)
        other.publish_campaign("autumn", None)
        waiter.join(25)
        assert answers and answers[0]["changes"][0]["op"] == "live"
        assert time.monotonic() - started < 10
    finally:
        other.close()


# --- reports and shopper events -----------------------------------------------------------------------------


def test_store_reports_make_the_per_store_status_and_reach(store: Storage) -> None:
    store.put_campaign("autumn", campaign())
    store.publish_campaign("autumn", None)
    answer, _ = store.push_events("s1", [
        report("r1", "campaign", "applied", id="autumn", version=1),
        report("r2", "campaign", "impressions", id="autumn", version=1, content_id="autumn-coats", shown=7, reached=3),
        report("r3", "campaign", "impressions", id="autumn", version=1, content_id="autumn-coats", shown=2, reached=1)])
    assert answer["accepted"] == ["r1", "r2", "r3"]
    store.push_events("s1", [report("r2", "campaign", "impressions", id="autumn", version=1,
                                    content_id="autumn-coats", shown=7, reached=3)])  # a retry counts once
    store.push_events("s2", [report("r4", "campaign", "refused", id="autumn", version=1,
                                    reason="unknown zone 'entrance'")])
    found = store.campaign_detail("autumn")
    assert found is not None
    rows = {r["store"]: r for r in c.campaign_report(found["state"], {v["version"]: v for v in found["versions"]},
                                                     {"s1": [], "s2": [], "s3": []}, found["status"])}
    assert rows["s1"]["state"] == "applied" and (rows["s1"]["shown"], rows["s1"]["reached"]) == (9, 4)
    assert rows["s2"]["state"] == "refused" and rows["s2"]["reason"] == "unknown zone 'entrance'"
    assert rows["s3"]["state"] == "pending"
    # A new version is pending again where the old one was applied.
    store.put_campaign("autumn", campaign(title="v2"))
    store.publish_campaign("autumn", None)
    found = store.campaign_detail("autumn")
    assert found is not None
    rows = {r["store"]: r for r in c.campaign_report(found["state"], {v["version"]: v for v in found["versions"]},
                                                     {"s1": []}, found["status"])}
    assert rows["s1"]["state"] == "pending" and rows["s1"]["version"] == 2


def test_malformed_reports_and_shopper_events_are_rejected_with_the_reason(store: Storage) -> None:
    answer, _ = store.push_events("s1", [
        report("b1", "campaign", "applied", id="autumn"),
        report("b2", "campaign", "refused", id="autumn", version=1),
        report("b3", "shopper", "wishlist_add", sku="SKU-1"),
        report("b4", "shopper", "order_request", customer="C-1", order_id="O-1", items=[{"sku": "SKU-1", "qty": 0}],
               fulfilment="home"),
        report("b5", "shopper", "order_request", order_id="O-2", items=[{"sku": "SKU-1", "qty": 1}],
               fulfilment="pickup"),
        report("b6", "shopper", "teleport"),
        report("ok", "campaign", "applied", id="unknown-campaign", version=1)])
    rejected = {r["id"]: r["detail"] for r in answer["rejected"]}
    assert answer["accepted"] == ["ok"]
    assert "data.version" in rejected["b1"] and "data.reason" in rejected["b2"]
    assert "customer" in rejected["b3"] and "data.items[0]" in rejected["b4"]
    assert "pickup_store" in rejected["b5"] and "type" in rejected["b6"]


def shopper(customer_id: str, **fields: Any) -> dict[str, Any]:
    return p.validate_profile({"customer_id": customer_id, "first_name": "Giulia", "tier": "gold",
                               "consents": {"personalization": True, "marketing": True}, **fields})


def test_wishlist_events_change_the_profile_once_each(store: Storage) -> None:
    store.upsert_profiles([shopper("C-1", wishlist=["SKU-1"])])
    store.push_events("s1", [report("w1", "shopper", "wishlist_add", customer="C-1", sku="SKU-2"),
                             report("w2", "shopper", "wishlist_remove", customer="C-1", sku="SKU-1"),
                             report("w3", "shopper", "wishlist_add", customer="C-9", sku="SKU-2")])
    store.push_events("s1", [report("w1", "shopper", "wishlist_add", customer="C-1", sku="SKU-2")])
    profile = store.get_profile("C-1")
    assert profile is not None and profile["wishlist"] == ["SKU-2"] and profile["version"] == 3
    applied = {e["event_id"]: e["applied"] for e in store.list_events("s1", 0, 100)["events"]}
    assert applied == {"w1": "shopper:wishlist_add", "w2": "shopper:wishlist_remove",
                       "w3": "shopper:unknown_customer"}


def test_a_pickup_order_is_on_the_profile_then_ready_at_its_store_then_returned(store: Storage) -> None:
    store.upsert_profiles([shopper("C-1", home_store="s1")])
    order = report("o1", "shopper", "order_request", customer="C-1", order_id="ORD-s1-1",
                   items=[{"sku": "SKU-1", "qty": 1}], fulfilment="pickup", pickup_store="s2",
                   contact={"email": "giulia@example.com"}, payment={"method": "card", "reference": "r-1"})
    store.push_events("s1", [order])
    profile = store.get_profile("C-1")
    assert profile is not None
    assert profile["orders"] == [{"order_id": "ORD-s1-1", "items": [{"sku": "SKU-1", "qty": 1}], "fulfilment": "pickup",
                                  "state": "requested", "placed_at": profile["orders"][0]["placed_at"], "store": "s1",
                                  "pickup_store": "s2", "returns": []}]
    assert "contact" not in str(profile)  # contact and payment stay with the order, not on the profile
    ready = store.order_ready("ORD-s1-1", "B3")
    assert ready["state"] == "ready"
    profile = store.get_profile("C-1")
    assert profile is not None and profile["orders"][0]["state"] == "ready"
    assert profile["orders_ready"][0]["store"] == "s2" and profile["orders_ready"][0]["pickup_bay"] == "B3"
    changes = store.changes(None, 100, store="s2")["changes"]  # the pickup store now hears of the shopper
    assert [ch["customer_id"] for ch in changes] == ["C-1"]
    store.push_events("s2", [report("ret1", "shopper", "return", order_id="ORD-s1-1",
                                    items=[{"sku": "SKU-1", "qty": 1}], rma_id="RMA-1", reason="too small")])
    profile = store.get_profile("C-1")
    assert profile is not None and profile["orders"][0]["returns"][0]["rma_id"] == "RMA-1"
    home = report("o2", "shopper", "order_request", customer="C-1", order_id="ORD-s1-2",
                  items=[{"sku": "SKU-1", "qty": 1}], fulfilment="home")
    store.push_events("s1", [home])
    with pytest.raises(Conflict, match="home delivery"):
        store.order_ready("ORD-s1-2", "B1")
    with pytest.raises(NotFound):
        store.order_ready("ORD-none", "B1")


def test_erasing_a_shopper_removes_their_orders(store: Storage) -> None:
    store.upsert_profiles([shopper("C-1")])
    store.push_events("s1", [report("o1", "shopper", "order_request", customer="C-1", order_id="ORD-1",
                                    items=[{"sku": "SKU-1", "qty": 1}], fulfilment="home",
                                    contact={"email": "giulia@example.com"})])
    assert store.get_order("ORD-1") is not None
    store.erase("C-1")
    assert store.get_order("ORD-1") is None


def test_campaign_bodies_are_checked_field_by_field() -> None:
    with pytest.raises(c.Invalid) as exc:
        c.validate_campaign({"name": "", "targets": {"stores": ["bad id!"]}, "colour": "red",
                             "content": [{"id": "a", "template": "message", "image": "nothex"}],
                             "schedule": {"start": "yesterday", "hours": "9-5"},
                             "rules": [{"id": "r", "when": {"tier": "platinum", "zone": []},
                                        "show": {"content_id": "elsewhere"}}]})
    text = " | ".join(exc.value.errors)
    for expected in ("name:", "targets.stores[0]", "colour: unknown field", "content[0].image", "schedule.start",
                     "schedule.hours", "rules[0].when.tier", "rules[0].when.zone", "rules[0].show.content_id"):
        assert expected in text, expected


def test_the_demo_starts_with_a_running_campaign_a_later_one_and_priced_products(store: Storage) -> None:
    from datetime import datetime, timezone

    from sync.central.demo_data import CATALOGUE, load_demo_data

    assert load_demo_data(store, count=5) == 5
    assert load_demo_data(store, count=5) == 0  # once
    changes, _ = content(store, "demo")
    now = datetime.now(timezone.utc)
    running, later = changes["autumn-coats"]["campaign"], changes["evening-denim"]["campaign"]
    assert c.parse_time(running["schedule"]["start"]) <= now <= c.parse_time(running["schedule"]["end"])
    assert c.parse_time(later["schedule"]["start"]) > now
    poster = running["content"][0]["image"]
    found = store.get_asset(poster)
    assert found is not None and found[0] == "image/png" and hashlib.sha256(found[1]).hexdigest() == poster
    assert {sku for sku, ch in changes.items() if ch["kind"] == "product"} == {prod.sku for prod in CATALOGUE}
    assert changes["SNK-001"]["product"]["price"] == 119.0 and changes["SNK-001"]["product"]["currency"] == "EUR"
    assert len(store.campaign_list()) == 2
