"""The campaign, catalogue and asset API of the central store over HTTP, as a real process (both engines where
the storage matters): what marketing sends, what each store pulls, and the 400s that say what to fix."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from test_central import ADMIN, TOKENS, Central, central, start_central, token_args  # noqa: F401 (fixtures)

PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360"
                    "f8cfc0f01f0005000201a5f1a0e50000000049454e44ae426082")
PNG_SHA = hashlib.sha256(PNG).hexdigest()


def campaign_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Autumn coats", "targets": {"stores": ["*"]}, "priority": 10,
        "schedule": {"days": ["mon", "tue", "wed", "thu", "fri"], "hours": ["17:00-21:00"]},
        "content": [{"id": "autumn-coats", "template": "message", "title": "Autumn coats", "body": "-10% for gold",
                     "image": PNG_SHA, "i18n": {"it": {"title": "Cappotti d'autunno", "body": "-10% per i gold"}}}],
        "rules": [{"id": "autumn-gold", "when": {"tier": "gold"}, "show": {"content_id": "autumn-coats"}}]}
    body.update(overrides)
    return body


def store_content(central: Central, store: str, since: str | None = None, **params: Any) -> dict[str, Any]:
    r = central.request("GET", f"/v1/stores/{store}/content/changes", TOKENS[store],
                        params={**({"since": since} if since else {}), **params})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_central(request: pytest.FixtureRequest, start_central: Callable[..., Central]) -> Central:
    db = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    return start_central(*token_args(), db=db)


def test_an_asset_is_stored_by_its_hash_and_served_to_stores_with_an_etag(any_central: Central) -> None:
    central = any_central
    put = central.request("PUT", f"/v1/admin/assets/{PNG_SHA}", data=PNG, headers={"Content-Type": "image/png"})
    assert put.status_code == 201, put.text
    again = central.request("PUT", f"/v1/admin/assets/{PNG_SHA}", data=PNG, headers={"Content-Type": "image/png"})
    assert again.status_code == 200
    got = central.request("GET", f"/v1/assets/{PNG_SHA}", TOKENS["s1"])
    assert got.status_code == 200 and got.content == PNG and got.headers["Content-Type"] == "image/png"
    assert got.headers["ETag"] == f'"{PNG_SHA}"'
    cached = central.request("GET", f"/v1/assets/{PNG_SHA}", TOKENS["s2"], headers={"If-None-Match": f'"{PNG_SHA}"'})
    assert cached.status_code == 304 and not cached.content
    assert central.request("GET", f"/v1/assets/{PNG_SHA}", None).status_code == 401
    assert central.request("GET", f"/v1/assets/{'0' * 64}", TOKENS["s1"]).status_code == 404


def test_an_asset_whose_bytes_do_not_match_its_name_is_refused(central: Central) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    r = central.request("PUT", f"/v1/admin/assets/{wrong}", data=PNG, headers={"Content-Type": "image/png"})
    assert r.status_code == 400 and PNG_SHA in r.json()["error"]["message"]
    assert central.request("GET", f"/v1/assets/{wrong}", TOKENS["s1"]).status_code == 404
    r = central.request("PUT", f"/v1/admin/assets/{PNG_SHA}", data=PNG, headers={"Content-Type": "text/html"})
    assert r.status_code == 400 and "image" in r.json()["error"]["message"]
    r = central.request("PUT", "/v1/admin/assets/not-a-hash", data=PNG, headers={"Content-Type": "image/png"})
    assert r.status_code == 400 and "SHA-256" in r.json()["error"]["message"]
    r = central.request("PUT", f"/v1/admin/assets/{PNG_SHA}", TOKENS["s1"], data=PNG,
                        headers={"Content-Type": "image/png"})
    assert r.status_code == 403


def test_an_asset_over_the_size_cap_is_refused_with_413(central: Central) -> None:
    from sync.central.content import MAX_ASSET_BYTES

    big = b"\0" * (MAX_ASSET_BYTES + 1)
    r = central.request("PUT", f"/v1/admin/assets/{hashlib.sha256(big).hexdigest()}", data=big,
                        headers={"Content-Type": "video/mp4"})
    assert r.status_code == 413


def test_bad_admin_bodies_get_400_naming_each_field_to_fix(central: Central) -> None:
    r = central.request("PUT", "/v1/admin/products/SKU-1", json={"name": "Coat", "price": "cheap", "currency": "euro"})
    assert r.status_code == 400
    errors = " | ".join(r.json()["error"]["errors"])
    assert "price: expected a number" in errors and "currency" in errors
    r = central.request("PUT", "/v1/admin/campaigns/autumn", json=campaign_body(rules=[{"id": "x", "show": {}}]))
    assert r.status_code == 400 and "rules[0].show.content_id: missing" in r.text
    r = central.request("PUT", "/v1/admin/campaigns/autumn", json=campaign_body())  # the image is not uploaded
    assert r.status_code == 400 and f"PUT /v1/admin/assets/{PNG_SHA}" in r.json()["error"]["message"]
    r = central.request("PUT", "/v1/admin/stores/s1", json={"timezone": "Mars/Olympus", "tags": ["ok", "not ok"]})
    assert r.status_code == 400 and "timezone" in r.text and "tags[1]" in r.text
    r = central.request("PUT", "/v1/admin/campaigns/bad%20id", json=campaign_body())
    assert r.status_code == 400 and "campaign id" in r.text
    r = central.request("POST", "/v1/admin/campaigns/nope/publish")
    assert r.status_code == 404
    r = central.request("PUT", "/v1/admin/campaigns/autumn", TOKENS["s1"], json=campaign_body())
    assert r.status_code == 403


def test_a_campaign_published_over_http_reaches_the_targeted_store_and_its_status_shows(any_central: Central) -> None:
    central = any_central
    central.request("PUT", f"/v1/admin/assets/{PNG_SHA}", data=PNG, headers={"Content-Type": "image/png"})
    central.request("PUT", "/v1/admin/stores/s1", json={"name": "Milano Centro", "tags": ["north"],
                                                       "timezone": "Europe/Rome", "language": "it"})
    r = central.request("PUT", "/v1/admin/campaigns/autumn", json=campaign_body(targets={"tags": ["north"]}))
    assert r.json() == {"id": "autumn", "version": 1}
    cursor = store_content(central, "s1")["next"]
    started = time.monotonic()
    assert central.request("POST", "/v1/admin/campaigns/autumn/publish").status_code == 200
    page = store_content(central, "s1", cursor, wait_s=10)
    assert time.monotonic() - started < 5
    live = {ch["id"]: ch for ch in page["changes"] if ch["kind"] == "campaign"}["autumn"]
    assert live["op"] == "live" and live["campaign"]["content"][0]["image"] == PNG_SHA
    assert [ch["op"] for ch in store_content(central, "s2")["changes"] if ch["kind"] == "campaign"] == ["withdrawn"]
    # Another store's token cannot read s1's channel.
    assert central.request("GET", "/v1/stores/s1/content/changes", TOKENS["s2"]).status_code == 403

    central.push("s1", [{"event_id": "c-1", "kind": "campaign", "type": "applied", "ts": time.time(),
                         "data": {"id": "autumn", "version": 1}},
                        {"event_id": "c-2", "kind": "campaign", "type": "impressions", "ts": time.time(),
                         "data": {"id": "autumn", "version": 1, "content_id": "autumn-coats", "shown": 12,
                                  "reached": 5}}])
    detail = central.request("GET", "/v1/admin/campaigns/autumn").json()
    assert detail["status"] == "live" and [v["version"] for v in detail["versions"]] == [1]
    rows = {r["store"]: r for r in detail["stores"]}
    assert rows["s1"]["state"] == "applied" and rows["s1"]["reached"] == 5 and "s2" not in rows
    listed = central.request("GET", "/v1/admin/campaigns").json()["campaigns"]
    assert [(x["id"], x["totals"]["applied"]) for x in listed] == [("autumn", 1)]

    assert central.request("DELETE", "/v1/admin/campaigns/autumn").status_code == 200
    page = store_content(central, "s1", page["next"])
    assert [ch["op"] for ch in page["changes"]] == ["withdrawn"]


def test_a_product_price_set_per_store_reaches_each_store(central: Central) -> None:
    r = central.request("PUT", "/v1/admin/products/COAT-1", json={
        "name": "Wool coat", "price": 199, "currency": "EUR", "stores": {"s2": {"price": 179}},
        "variants": [{"sku": "COAT-1-M", "label": "M"}, {"sku": "COAT-1-L", "label": "L", "available": False}]})
    assert r.status_code == 200, r.text
    s1 = [ch for ch in store_content(central, "s1")["changes"] if ch["kind"] == "product"]
    s2 = [ch for ch in store_content(central, "s2")["changes"] if ch["kind"] == "product"]
    assert s1[0]["product"]["price"] == 199 and s2[0]["product"]["price"] == 179
    assert [v["sku"] for v in s1[0]["product"]["variants"]] == ["COAT-1-M", "COAT-1-L"]
    assert central.request("DELETE", "/v1/admin/products/COAT-1").status_code == 200
    assert central.request("DELETE", "/v1/admin/products/COAT-1").status_code == 404


def test_an_order_marked_ready_appears_in_the_shoppers_orders_ready(central: Central) -> None:
    central.upsert({"customer_id": "C-1", "first_name": "Giulia", "home_store": "s1"})
    r = central.push("s1", [{"event_id": "o-1", "kind": "shopper", "type": "order_request", "ts": time.time(),
                             "customer": "C-1", "data": {"order_id": "ORD-1", "items": [{"sku": "SKU-1", "qty": 2}],
                                                         "fulfilment": "pickup", "pickup_store": "s2"}}])
    assert r.json()["accepted"] == ["o-1"]
    bad = central.request("POST", "/v1/admin/orders/ORD-1/ready", json={"bay": ""})
    assert bad.status_code == 400 and "bay" in bad.text
    assert central.request("POST", "/v1/admin/orders/ORD-9/ready", json={"bay": "B2"}).status_code == 404
    ok = central.request("POST", "/v1/admin/orders/ORD-1/ready", json={"bay": "B2"})
    assert ok.status_code == 200 and ok.json()["state"] == "ready"
    profile = central.profile("C-1").json()
    assert profile["orders_ready"][0]["order_id"] == "ORD-1" and profile["orders_ready"][0]["store"] == "s2"
    assert profile["orders"][0]["state"] == "ready"
    exported = central.request("GET", "/v1/admin/profiles/C-1/export").json()
    assert exported["orders"][0]["order_id"] == "ORD-1" and exported["orders"][0]["pickup_store"] == "s2"


def test_content_changes_parameters_are_checked(central: Central) -> None:
    for params in ({"limit": 0}, {"wait_s": 99}, {"since": ".x"}):
        r = central.request("GET", "/v1/stores/s1/content/changes", TOKENS["s1"], params=params)
        assert r.status_code == 400 and r.json()["error"]["message"], params
    assert requests.get(central.url + "/v1/stores/s1/content/changes", timeout=5).status_code == 401
    assert ADMIN  # the admin token may read any store's channel
    assert central.request("GET", "/v1/stores/s1/content/changes").status_code == 200
