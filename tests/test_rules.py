"""The rule engine: conditions, placeholders, consent gate, caps, priority, A/B split, reasons; and the
customer context it reads (profiles from the local `profiles` table, recent activity)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge.config import TIERS, ConfigError, parse_config
from edge.domain.shoppers import CustomerContext
from edge.model import Event
from edge.model import Decision
from edge.domain.rules import RuleEngine
from edge.store.schema import migrate
from sync.protocol import TIERS as PROTOCOL_TIERS

ROME = ZoneInfo("Europe/Rome")
# Friday 14 March 2025, 10:00 in Rome (09:00 UTC: Rome is UTC+1 until the end of March).
FRI_10 = datetime(2025, 3, 14, 10, 0, tzinfo=ROME).timestamp()


def base_config(rules: list[dict[str, Any]], **sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "store": {"id": "s1", "timezone": "Europe/Rome"},
        "zones": [{"id": "entrance", "name": "Entrance"}, {"id": "womenswear", "name": "Womenswear"},
                  {"id": "menswear", "name": "Menswear"}, {"id": "pickup", "name": "Click & collect"}],
        "screens": [{"id": "scr-entrance", "zone": "entrance", "playlist": ["welcome"]},
                    {"id": "window-1", "zone": "entrance", "playlist": ["welcome"]},
                    {"id": "scr-women", "zone": "womenswear", "playlist": ["welcome"]},
                    {"id": "scr-men", "zone": "menswear", "playlist": ["welcome"]},
                    {"id": "scr-pickup", "zone": "pickup", "playlist": ["welcome"]}],
        "kiosks": [{"id": "kiosk-women", "zone": "womenswear"}, {"id": "kiosk-men", "zone": "menswear"}],
        "content": [{"id": "welcome", "title": "Welcome", "body": "Hello"},
                    {"id": "promo", "title": "Promo", "body": "Today only", "image": "http://x/promo.jpg"}],
        "products": [{"sku": "FRM-002", "name": "Silk blouse, ivory", "zone": "womenswear", "price": 129.0,
                      "image": "http://x/frm-002.jpg"},
                     {"sku": "FRM-001", "name": "Wool blazer, navy", "zone": "menswear"},
                     {"sku": "ACC-002", "name": "Merino scarf"}],
        "rules": rules,
    }
    data.update(sections)
    return data


def rule(rid: str, when: dict[str, Any] | None = None, show: dict[str, Any] | None = None, **keys: Any) -> dict:
    return {"id": rid, "when": when or {}, "show": {"content_id": "welcome", **(show or {})}, **keys}


@pytest.fixture
def conn() -> sqlite3.Connection:
    c = sqlite3.connect(":memory:", isolation_level=None)
    migrate(c)
    yield c
    c.close()


def put_profile(conn: sqlite3.Connection, cid: str, *, consent: bool = True, **fields: Any) -> None:
    profile = {"customer_id": cid, "first_name": "Giulia", "segments": [], "tier": "silver",
               "consents": {"personalization": consent, "marketing": False}, "preferences": {},
               "wishlist": [], "cart": [], "orders_ready": [], "identities": [], "version": 1, **fields}
    conn.execute("INSERT INTO profiles(customer_id, version, profile, first_name, consent_personalization, "
                 "updated_at) VALUES (?,?,?,?,?,?) ON CONFLICT(customer_id) DO UPDATE SET profile=excluded.profile, "
                 "first_name=excluded.first_name, consent_personalization=excluded.consent_personalization",
                 (cid, 1, json.dumps(profile), profile["first_name"], 1 if consent else 0, 0.0))


def make(conn: sqlite3.Connection | None, rules: list[dict[str, Any]], **sections: Any) -> RuleEngine:
    cfg = parse_config(base_config(rules, **sections), env={})
    return RuleEngine(cfg, CustomerContext(cfg, conn) if conn is not None else None)


_ids = iter(range(10**9))


def event(kind: str = "zone_enter", zone: str | None = "entrance", *, subject: str | None = "ibeacon:u:1:1",
          customer: str | None = None, type: str | None = None, source: str = "gw-x", ts: float = FRI_10,
          **data: Any) -> Event:
    return Event(event_id=f"e{next(_ids)}", kind=kind, source=source, ts=ts, received_at=ts, zone=zone,
                 subject=subject, customer=customer, type=type, data=data)


def shown(decisions: list[Decision]) -> dict[str, str]:
    """screen -> rule id."""
    return {d.display: d.rule_id for d in decisions}


# --- zone and event ---------------------------------------------------------------------------------

def test_zone_and_event_match_single_values_lists_kinds_and_kind_dot_type(conn):
    eng = make(conn, [rule("r-enter", {"zone": "entrance", "event": "zone_enter"}),
                      rule("r-kiosk", {"zone": ["womenswear", "menswear"], "event": "kiosk"}),
                      rule("r-touch", {"event": ["window.touch", "window.select"]}, {"screens": ["window-1"]})])
    assert shown(eng.decide(event("zone_enter", "entrance"), FRI_10)) == {"scr-entrance": "r-enter",
                                                                         "window-1": "r-enter"}
    assert eng.decide(event("zone_exit", "entrance"), FRI_10) == []
    assert eng.decide(event("zone_enter", "pickup"), FRI_10) == []
    assert shown(eng.decide(event("kiosk", "menswear", type="browse", source="kiosk-men"), FRI_10)) == \
        {"scr-men": "r-kiosk"}
    assert shown(eng.decide(event("window", None, type="select", source="window-1"), FRI_10)) == \
        {"window-1": "r-touch"}
    assert eng.decide(event("window", None, type="browse", source="window-1"), FRI_10) == []


def test_default_targets_are_the_screens_of_the_event_zone(conn):
    eng = make(conn, [rule("any-zone", {"zone": ["womenswear", "menswear"]})])
    assert [d.display for d in eng.decide(event(zone="womenswear"), FRI_10)] == ["scr-women"]
    assert [d.display for d in eng.decide(event(zone="menswear"), FRI_10)] == ["scr-men"]


def test_source_and_zone_tokens_and_kiosk_targets(conn):
    eng = make(conn, [rule("r-kiosk", {"event": "kiosk.browse"}, {"kiosks": ["@source"], "screens": ["@zone"]}),
                      rule("r-window", {"event": "window.touch"}, {"screens": ["@source"]})])
    out = eng.decide(event("kiosk", "womenswear", type="browse", source="kiosk-women"), FRI_10)
    assert {(d.target, d.display) for d in out} == {("kiosk", "kiosk-women"), ("screen", "scr-women")}
    assert all(d.extra["target"] == d.target for d in out)
    out = eng.decide(event("window", "entrance", type="touch", source="window-1"), FRI_10)
    assert [(d.target, d.display) for d in out] == [("screen", "window-1")]


# --- conditions ---------------------------------------------------------------------------------------

def test_dwell_min_s_needs_enough_dwell(conn):
    eng = make(conn, [rule("long", {"zone": "entrance", "event": "zone_dwell", "dwell_min_s": 120})])
    assert eng.decide(event("zone_dwell", dwell_s=60.0), FRI_10) == []
    assert shown(eng.decide(event("zone_dwell", dwell_s=120.0), FRI_10))["scr-entrance"] == "long"
    assert eng.decide(event("zone_dwell"), FRI_10) == []  # no dwell_s at all


def test_hours_are_local_time_in_the_store_timezone(conn):
    eng = make(conn, [rule("morning", {"zone": "entrance", "hours": "09:00-12:30"})])
    assert eng.decide(event(), FRI_10)  # 10:00 in Rome, 09:00 UTC
    utc_0830 = datetime(2025, 3, 14, 8, 30, tzinfo=ZoneInfo("UTC")).timestamp()  # 09:30 in Rome
    assert eng.decide(event(), utc_0830)
    rome_0830 = datetime(2025, 3, 14, 8, 30, tzinfo=ROME).timestamp()
    assert eng.decide(event(), rome_0830) == []
    rome_1230 = datetime(2025, 3, 14, 12, 30, tzinfo=ROME).timestamp()
    assert eng.decide(event(), rome_1230) == []  # the end is excluded


def test_hours_may_wrap_past_midnight_and_lists_are_any_of(conn):
    eng = make(conn, [rule("late", {"zone": "entrance", "hours": ["22:00-02:00", "12:00-12:15"]})])
    at = lambda h, m: datetime(2025, 3, 14, h, m, tzinfo=ROME).timestamp()  # noqa: E731
    assert eng.decide(event(), at(23, 0)) and eng.decide(event(), at(1, 59)) and eng.decide(event(), at(12, 5))
    assert eng.decide(event(), at(2, 0)) == [] and eng.decide(event(), at(21, 59)) == []


def test_days_are_local_weekdays(conn):
    eng = make(conn, [rule("weekend", {"zone": "entrance", "days": ["sat", "sun"]})])
    assert eng.decide(event(), FRI_10) == []
    sat = datetime(2025, 3, 15, 0, 30, tzinfo=ROME).timestamp()  # still Friday in UTC
    assert eng.decide(event(), sat)


def test_segments_any_of_and_tier_one_of(conn):
    put_profile(conn, "C-1", segments=["outdoor", "denim"], tier="gold")
    put_profile(conn, "C-2", segments=["kids"], tier="bronze")
    eng = make(conn, [rule("seg", {"zone": "entrance", "segments": ["formal", "outdoor"]},
                           {"screens": ["scr-entrance"]}),
                      rule("tier", {"zone": "entrance", "tier": ["gold", "vip"]}, {"screens": ["window-1"]})])
    assert shown(eng.decide(event(customer="C-1"), FRI_10)) == {"scr-entrance": "seg", "window-1": "tier"}
    assert eng.decide(event(customer="C-2"), FRI_10) == []
    assert eng.decide(event(), FRI_10) == []  # anonymous


def test_known_true_and_false(conn):
    put_profile(conn, "C-1")
    eng = make(conn, [rule("known", {"zone": "entrance", "known": True}, {"screens": ["scr-entrance"]}),
                      rule("anon", {"zone": "entrance", "known": False}, {"screens": ["window-1"]})])
    assert shown(eng.decide(event(customer="C-1"), FRI_10)) == {"scr-entrance": "known"}
    assert shown(eng.decide(event(), FRI_10)) == {"window-1": "anon"}


def test_wishlist_in_zone_uses_the_products_catalogue(conn):
    put_profile(conn, "C-1", wishlist=["ACC-002", "FRM-001", "FRM-002"])
    put_profile(conn, "C-2", wishlist=["ACC-002", "UNKNOWN-1"])
    eng = make(conn, [rule("wish-img", {"zone": ["womenswear", "menswear"], "wishlist_in_zone": True},
                           {"data": {"item": "{wishlist_item}", "image": "{wishlist_image}"}}, priority=1),
                      rule("wish", {"zone": ["womenswear", "menswear"], "wishlist_in_zone": True},
                           {"data": {"title": "Saved", "item": "{wishlist_item}"}}),
                      rule("nowish", {"zone": ["womenswear"], "wishlist_in_zone": False}, {"data": {"t": "none"}})])
    women = eng.decide(event(zone="womenswear", customer="C-1"), FRI_10)
    assert [(d.rule_id, d.data["item"], d.data["image"]) for d in women] == \
        [("wish-img", "Silk blouse, ivory", "http://x/frm-002.jpg")]
    men = eng.decide(event(zone="menswear", customer="C-1"), FRI_10)
    assert men[0].rule_id == "wish"  # the blazer has no image: the rule needing one steps aside
    assert men[0].data["item"] == "Wool blazer, navy"  # the item matching this zone, not the first listed
    assert men[0].extra["matched"]["wishlist_sku"] == "FRM-001"
    assert shown(eng.decide(event(zone="womenswear", customer="C-2"), FRI_10)) == {"scr-women": "nowish"}


def test_cart_not_empty_and_orders_ready(conn):
    order = {"order_id": "ORD-7", "items": ["FRM-001"], "ready_at": "2025-03-14T09:00:00Z", "pickup_bay": "B3"}
    put_profile(conn, "C-1", cart=["ACC-002"], orders_ready=[order])
    put_profile(conn, "C-2")
    eng = make(conn, [
        rule("pickup", {"zone": "pickup", "orders_ready": True}, {"data": {"t": "{order_id} at bay {pickup_bay}"}},
             priority=5),
        rule("cart", {"zone": "pickup", "cart_not_empty": True},
             {"data": {"t": "{cart_item} ({cart_count})"}}),
        rule("empty", {"zone": "pickup", "cart_not_empty": False, "orders_ready": False}, {"data": {"t": "-"}})])
    [d] = eng.decide(event(zone="pickup", customer="C-1"), FRI_10)
    assert (d.rule_id, d.data["t"]) == ("pickup", "ORD-7 at bay B3")
    [d] = eng.decide(event(zone="pickup", customer="C-2"), FRI_10)
    assert d.rule_id == "empty"
    put_profile(conn, "C-1", cart=["ACC-002", "FRM-001"])
    eng.context.invalidate("C-1")
    [d] = eng.decide(event(zone="pickup", customer="C-1"), FRI_10)
    assert (d.rule_id, d.data["t"]) == ("cart", "Merino scarf (2)")


def test_recent_event_within_the_window_same_session(conn):
    eng = make(conn, [rule("follow", {"event": "window.select", "recent_event": "window.touch",
                                      "recent_within_s": 60}, {"screens": ["@source"]})])
    def sel(t: float) -> Event:
        return event("window", "entrance", type="select", source="window-1", subject="session:w1", ts=t)
    assert eng.decide(sel(FRI_10), FRI_10) == []  # no touch yet
    eng.decide(event("window", "entrance", type="touch", source="window-1", subject="session:w1"), FRI_10)
    [d] = eng.decide(sel(FRI_10 + 10), FRI_10 + 10)
    assert d.extra["matched"]["recent"] == {"event": "window.touch", "ago_s": 10.0}
    assert d.customer is None  # the same session: anonymous-safe
    assert eng.decide(sel(FRI_10 + 61), FRI_10 + 61) == []  # the touch is too old now
    other = event("window", "entrance", type="select", source="window-1", subject="session:w2")
    assert eng.decide(other, FRI_10 + 5) == []


def test_recent_event_across_devices_only_through_a_consenting_customer(conn):
    put_profile(conn, "C-1")
    put_profile(conn, "C-2", consent=False)
    eng = make(conn, [rule("back", {"zone": "womenswear", "event": "zone_enter", "recent_event": "kiosk.add_to_cart"})])
    for cid in ("C-1", "C-2"):
        eng.decide(event("kiosk", "womenswear", type="add_to_cart", subject=f"session:{cid}", customer=cid,
                         source="kiosk-women", item="FRM-002"), FRI_10)
    [d] = eng.decide(event(zone="womenswear", subject="ibeacon:u:1:9", customer="C-1"), FRI_10 + 30)
    assert d.customer == "C-1" and d.extra["personalized"] is True
    assert eng.decide(event(zone="womenswear", subject="ibeacon:u:1:8", customer="C-2"), FRI_10 + 30) == []


# --- placeholders ---------------------------------------------------------------------------------------

def test_placeholders_are_filled_from_the_context(conn):
    put_profile(conn, "C-1", first_name="Giulia", tier="gold", cart=["FRM-002"])
    eng = make(conn, [rule("hello", {"zone": "womenswear"},
                           {"data": {"title": "Ciao {first_name}", "lines": ["{tier} member", "in {zone} ({zone_id})"],
                                     "nested": {"cart": "{cart_item}"}, "n": 3, "braces": "{{literal}}"}})])
    [d] = eng.decide(event(zone="womenswear", customer="C-1"), FRI_10)
    assert d.data == {"title": "Ciao Giulia", "lines": ["gold member", "in Womenswear (womenswear)"],
                      "nested": {"cart": "Silk blouse, ivory"}, "n": 3, "braces": "{literal}"}


def test_item_placeholder_uses_the_event_item_or_the_last_touched_one(conn):
    eng = make(conn, [rule("item", {"event": ["kiosk.browse", "kiosk.handoff"]},
                           {"kiosks": ["@source"], "data": {"t": "{item}", "img": "{item_image}"}})])
    [d] = eng.decide(event("kiosk", "womenswear", type="browse", source="kiosk-women", subject="session:k",
                           item="FRM-002"), FRI_10)
    assert d.data == {"t": "Silk blouse, ivory", "img": "http://x/frm-002.jpg"}
    [d] = eng.decide(event("kiosk", "womenswear", type="handoff", source="kiosk-women", subject="session:k"),
                     FRI_10 + 5)
    assert d.data["t"] == "Silk blouse, ivory"
    # An item the catalogue does not name has no value: no match.
    assert eng.decide(event("kiosk", "womenswear", type="browse", source="kiosk-women", subject="session:z",
                            item="NOPE-1"), FRI_10) == []


def test_a_missing_placeholder_value_means_no_match_and_the_next_rule_wins(conn):
    put_profile(conn, "C-1", first_name=None)
    put_profile(conn, "C-2", first_name="Marco")
    eng = make(conn, [rule("named", {"zone": "entrance"}, {"data": {"title": "Hello {first_name}"}}, priority=10),
                      rule("generic", {"zone": "entrance"}, {"data": {"title": "Hello"}})])
    assert {d.data["title"] for d in eng.decide(event(customer="C-1"), FRI_10)} == {"Hello"}
    assert {d.data["title"] for d in eng.decide(event(customer="C-2"), FRI_10)} == {"Hello Marco"}
    assert {d.data["title"] for d in eng.decide(event(), FRI_10)} == {"Hello"}


def test_placeholder_values_are_cut_and_not_escaped(conn):
    put_profile(conn, "C-1", first_name="<b>" + "x" * 200)
    eng = make(conn, [rule("named", {"zone": "entrance"}, {"data": {"title": "Hi {first_name}!"}})])
    title = eng.decide(event(customer="C-1"), FRI_10)[0].data["title"]
    assert title.startswith("Hi <b>xxx") and title.endswith("…!") and len(title) == len("Hi !") + 60


def test_rule_without_data_shows_its_content_item(conn):
    eng = make(conn, [rule("promo", {"zone": "entrance"}, {"content_id": "promo"})])
    assert eng.decide(event(), FRI_10)[0].data == {"title": "Promo", "body": "Today only",
                                                   "image": "http://x/promo.jpg"}


# --- consent gate, staff ------------------------------------------------------------------------------------

def test_no_consent_no_personal_content_but_zone_content_still_shows(conn):
    put_profile(conn, "C-yes", consent=True, segments=["outdoor"])
    put_profile(conn, "C-no", consent=False, segments=["outdoor"])
    rules = [rule("personal", {"zone": "entrance", "segments": "outdoor"}, {"data": {"t": "Hi {first_name}"}},
                  priority=10),
             rule("zone", {"zone": "entrance"}, {"data": {"t": "Welcome"}})]
    eng = make(conn, rules)
    yes = eng.decide(event(customer="C-yes"), FRI_10)
    assert {d.rule_id for d in yes} == {"personal"} and all(d.customer == "C-yes" for d in yes)
    no = eng.decide(event(customer="C-no"), FRI_10)
    assert {d.rule_id for d in no} == {"zone"} and all(d.customer is None for d in no)
    unknown = eng.decide(event(customer="C-not-cached"), FRI_10)
    assert {d.rule_id for d in unknown} == {"zone"}
    # A known-only rule is personal too.
    eng = make(conn, [rule("known", {"zone": "entrance", "known": True}, {"screens": ["scr-entrance"]})])
    assert eng.decide(event(customer="C-no"), FRI_10) == []
    assert eng.decide(event(customer="C-yes"), FRI_10)[0].customer == "C-yes"


def test_require_consent_false_allows_personal_content(conn):
    put_profile(conn, "C-no", consent=False)
    eng = make(conn, [rule("personal", {"zone": "entrance"}, {"data": {"t": "Hi {first_name}"}})],
               privacy={"require_consent": False})
    assert {d.data["t"] for d in eng.decide(event(customer="C-no"), FRI_10)} == {"Hi Giulia"}
    eng = make(conn, [rule("known", {"zone": "entrance", "known": True})], privacy={"require_consent": False})
    assert eng.decide(event(customer="C-not-cached"), FRI_10)  # identified is enough without the gate


def test_revoked_consent_applies_after_invalidate(conn):
    put_profile(conn, "C-1", consent=True)
    eng = make(conn, [rule("personal", {"zone": "entrance"}, {"data": {"t": "Hi {first_name}"}})])
    assert eng.decide(event(customer="C-1"), FRI_10)
    put_profile(conn, "C-1", consent=False)
    eng.context.invalidate("C-1")
    assert eng.decide(event(customer="C-1"), FRI_10) == []


def test_staff_assets_and_gateway_status_never_drive_content(conn):
    put_profile(conn, "C-1")
    eng = make(conn, [rule("any", {"zone": "entrance"}), rule("named", {"zone": "entrance"},
                                                               {"data": {"t": "{first_name}"}}, priority=5)])
    assert eng.decide(event(staff=True), FRI_10) == []
    assert eng.decide(event(customer="C-1", staff=True), FRI_10) == []
    assert eng.decide(event(asset=True), FRI_10) == []
    assert eng.decide(event("gateway_status", "entrance", subject=None), FRI_10) == []
    assert eng.context.activity("ibeacon:u:1:1") is None  # and they are not shopper activity


# --- priority, caps, A/B ---------------------------------------------------------------------------------

def test_priority_highest_wins_per_screen_and_config_order_breaks_ties(conn):
    eng = make(conn, [rule("low", {"zone": "entrance"}),
                      rule("high", {"zone": "entrance"}, {"screens": ["window-1"]}, priority=9),
                      rule("tie-1", {"zone": "entrance"}, {"screens": ["scr-entrance"]}, priority=1),
                      rule("tie-2", {"zone": "entrance"}, {"screens": ["scr-entrance"]}, priority=1)])
    assert shown(eng.decide(event(), FRI_10)) == {"window-1": "high", "scr-entrance": "tie-1"}
    assert {d.priority for d in eng.decide(event(), FRI_10)} == {9, 1}


def test_cap_per_shopper_then_the_next_rule_gets_the_screen(conn):
    eng = make(conn, [rule("once", {"zone": "entrance"}, {"screens": ["scr-entrance"]}, priority=5,
                           cap_per_shopper={"count": 2, "within_s": 100}),
                      rule("always", {"zone": "entrance"}, {"screens": ["scr-entrance"]})])
    a = lambda: event(subject="ibeacon:a")  # noqa: E731
    assert [shown(eng.decide(a(), FRI_10 + t))["scr-entrance"] for t in (0, 1, 2)] == ["once", "once", "always"]
    assert shown(eng.decide(event(subject="ibeacon:b"), FRI_10 + 3))["scr-entrance"] == "once"  # another shopper
    assert shown(eng.decide(a(), FRI_10 + 100.5))["scr-entrance"] == "once"  # the first showing aged out


def test_cap_per_shopper_counts_the_customer_across_devices(conn):
    put_profile(conn, "C-1")
    eng = make(conn, [rule("once", {"zone": "entrance", "known": True}, cap_per_shopper={"count": 1, "within_s": 60})])
    assert eng.decide(event(subject="ibeacon:phone", customer="C-1"), FRI_10)
    assert eng.decide(event(subject="session:kiosk", customer="C-1"), FRI_10 + 1) == []


def test_cap_per_screen(conn):
    eng = make(conn, [rule("r", {"zone": "entrance"}, cap_per_screen={"count": 1, "within_s": 30})])
    assert shown(eng.decide(event(subject="a"), FRI_10)) == {"scr-entrance": "r", "window-1": "r"}
    assert eng.decide(event(subject="b"), FRI_10 + 10) == []
    assert len(eng.decide(event(subject="c"), FRI_10 + 31)) == 2


def test_a_rule_that_lost_every_screen_is_not_counted_against_its_cap(conn):
    eng = make(conn, [rule("high", {"zone": "entrance"}, priority=9),
                      rule("low", {"zone": "entrance"}, cap_per_shopper={"count": 1, "within_s": 60})])
    eng.decide(event(), FRI_10)
    assert ("shopper", "ibeacon:u:1:1", "low") not in eng.caps


def test_ab_variants_are_stable_per_shopper_and_follow_the_weights(conn):
    eng = make(conn, [rule("ab", {"zone": "entrance"}, {"screens": ["scr-entrance"], "data": {"t": "base", "k": "x"}},
                           variants=[{"id": "a", "weight": 3}, {"id": "b", "weight": 1, "content_id": "promo",
                                                                 "data": {"t": "B"}},
                                     {"id": "never", "weight": 0}])])
    first = {}
    for n in range(4000):
        [d] = eng.decide(event(subject=f"ibeacon:s:{n}"), FRI_10)
        first[n] = (d.extra["variant"], d.content_id, d.data)
    counts = Counter(v for v, _, _ in first.values())
    assert set(counts) == {"a", "b"}
    assert 0.70 < counts["a"] / 4000 < 0.80
    for n in range(0, 4000, 97):  # the same shopper, later: the same variant
        [d] = eng.decide(event(subject=f"ibeacon:s:{n}"), FRI_10 + 50)
        assert (d.extra["variant"], d.content_id, d.data) == first[n]
    b = next(x for x in first.values() if x[0] == "b")
    assert b[1:] == ("promo", {"t": "B", "k": "x"})
    assert next(x for x in first.values() if x[0] == "a")[1:] == ("welcome", {"t": "base", "k": "x"})


def test_variant_of_a_customer_is_the_same_on_every_device(conn):
    put_profile(conn, "C-1")
    eng = make(conn, [rule("ab", {"zone": "entrance"}, {"screens": ["scr-entrance"]},
                           variants=[{"id": str(i)} for i in range(8)])])
    seen = {eng.decide(event(subject=f"dev-{n}", customer="C-1"), FRI_10)[0].extra["variant"] for n in range(10)}
    assert len(seen) == 1


# --- reasons ---------------------------------------------------------------------------------------------------

def test_reason_and_extra_say_why(conn):
    put_profile(conn, "C-1", segments=["outdoor"], tier="gold", wishlist=["FRM-002"])
    eng = make(conn, [rule("wish", {"zone": "womenswear", "event": "zone_dwell", "dwell_min_s": 30,
                                    "hours": "09:00-12:00", "segments": ["formal", "outdoor"], "tier": "gold",
                                    "wishlist_in_zone": True},
                           {"data": {"t": "{first_name}: {wishlist_item}"}}, priority=7,
                           variants=[{"id": "only"}])])
    [d] = eng.decide(event("zone_dwell", "womenswear", customer="C-1", dwell_s=45.0), FRI_10)
    assert d.reason.startswith("rule wish: zone_dwell in zone womenswear")
    for fragment in ("dwell 45s ≥ 30s", "fri 10:00", "segment outdoor", "tier gold", "wishlist", "variant only",
                     "personalized"):
        assert fragment in d.reason, fragment
    assert "Giulia" not in d.reason and "Silk" not in d.reason  # no personal data in the sentence
    assert d.extra == {
        "rule": "wish", "priority": 7, "event": "zone_dwell", "event_id": d.event_id, "zone": "womenswear",
        "personalized": True, "variant": "only", "target": "screen",
        "matched": {"zone": "womenswear", "event": "zone_dwell", "dwell_s": 45.0, "local_time": "fri 10:00",
                    "segment": "outdoor", "tier": "gold", "wishlist_in_zone": True, "wishlist_sku": "FRM-002"}}
    assert d.customer == "C-1" and d.expires_at == FRI_10 + 30.0
    json.dumps(d.extra)  # the pipeline stores it as JSON


def test_anonymous_decisions_carry_no_customer(conn):
    put_profile(conn, "C-1")
    eng = make(conn, [rule("zone", {"zone": "entrance"})])
    [d, _] = eng.decide(event(customer="C-1"), FRI_10)
    assert d.customer is None and d.extra["personalized"] is False
    assert d.reason == "rule zone: zone_enter in zone entrance"


# --- the context ------------------------------------------------------------------------------------------------

def test_context_caches_profiles_and_invalidates(conn):
    cfg = parse_config(base_config([]), env={})
    ctx = CustomerContext(cfg, conn)
    put_profile(conn, "C-1", first_name="Anna", wishlist=["FRM-002", 7], segments="not-a-list")
    p = ctx.profile("C-1")
    assert (p.first_name, p.wishlist, p.segments, p.personalization) == ("Anna", ("FRM-002",), (), True)
    put_profile(conn, "C-1", first_name="Bea")
    assert ctx.profile("C-1").first_name == "Anna"  # cached
    ctx.invalidate("C-1")
    assert ctx.profile("C-1").first_name == "Bea"
    assert ctx.profile("C-404") is None and ctx.profile(None) is None
    conn.execute("DELETE FROM profiles")
    ctx.invalidate()
    assert ctx.profile("C-1") is None


def test_context_absent_profiles_are_retried_soon(conn):
    now = [0.0]
    cfg = parse_config(base_config([]), env={})
    ctx = CustomerContext(cfg, conn, clock=lambda: now[0], absent_max_age_s=5, max_age_s=60)
    assert ctx.profile("C-1") is None
    put_profile(conn, "C-1")
    assert ctx.profile("C-1") is None
    now[0] = 6.0
    assert ctx.profile("C-1") is not None


def test_context_without_a_profiles_table_knows_nobody():
    cfg = parse_config(base_config([]), env={})
    ctx = CustomerContext(cfg, sqlite3.connect(":memory:"))
    assert ctx.profile("C-1") is None


def test_context_lru_is_bounded(conn):
    cfg = parse_config(base_config([]), env={})
    ctx = CustomerContext(cfg, conn, max_profiles=3)
    for n in range(10):
        put_profile(conn, f"C-{n}")
        ctx.profile(f"C-{n}")
    assert ctx.stats()["profiles_cached"] == 3


def test_activity_records_zones_items_dwell_and_ends_with_the_visit(conn):
    cfg = parse_config(base_config([]), env={})
    ctx = CustomerContext(cfg, conn)
    ctx.note(event("beacon", "entrance", subject="ibeacon:a"))  # raw sightings are not activity
    assert ctx.activity("ibeacon:a") is None
    ctx.note(event("zone_enter", "entrance", subject="ibeacon:a", customer="C-1"), 100.0)
    ctx.note(event("zone_dwell", "womenswear", subject="ibeacon:a", customer="C-1", dwell_s=45.0), 150.0)
    ctx.note(event("kiosk", "womenswear", type="browse", subject="session:k", customer="C-1", item="FRM-002"), 160.0)
    act = ctx.activity("ibeacon:a")
    assert act.zones() == ["entrance", "womenswear"] and act.dwell() == {"womenswear": 45.0}
    assert ctx.activity("C-1").items() == ["FRM-002"] and len(ctx.activity("C-1")) == 3
    assert ctx.recent("C-1", frozenset({"kiosk"}), 150.0).name == "kiosk.browse"
    assert ctx.recent("C-1", frozenset({"kiosk"}), 161.0) is None
    ctx.note(event("visit_end", "womenswear", subject="ibeacon:a", customer="C-1"), 200.0)
    assert ctx.activity("ibeacon:a") is None and ctx.activity("C-1") is not None
    ctx.forget("C-1")
    assert ctx.activity("C-1") is None


def test_forgetting_a_customer_drops_their_caps_and_context(conn):
    put_profile(conn, "C-1")
    eng = make(conn, [rule("r", {"zone": "entrance", "known": True}, cap_per_shopper={"count": 1, "within_s": 60})])
    eng.decide(event(customer="C-1"), FRI_10)
    assert any(k[1] == "C-1" for k in eng.caps)
    for part in (eng, eng.context):  # as edge.privacy erases: every part forgets what it keeps
        part.forget("C-1")
    assert not any(k[1] == "C-1" for k in eng.caps) and eng.context.activity("C-1") is None


# --- config ------------------------------------------------------------------------------------------------------

def test_existing_rule_keys_keep_their_types():
    cfg = parse_config(base_config([rule("r", {"zone": "entrance", "event": "zone_enter"})]), env={})
    assert (cfg.rules[0].when.zone, cfg.rules[0].when.event) == ("entrance", "zone_enter")


def test_tiers_match_the_sync_protocol():
    assert TIERS == PROTOCOL_TIERS


@pytest.mark.parametrize(("bad_rule", "path", "fragment"), [
    (rule("r", {"zone": "entrance"}, {"data": {"t": "Hi {name}"}}), "rules[0] (id 'r').show.data.t",
     "unknown placeholder {name}"),
    (rule("r", {"zone": "entrance"}, {"data": {"t": "Hi {first_name:>9}"}}), "show.data.t", "format spec"),
    (rule("r", {"zone": "entrance"}, {"data": {"t": "Hi {"}}), "show.data.t", "literal braces"),
    (rule("r", {"zone": "entrance", "hours": "9-12"}), "when.hours", "HH:MM-HH:MM"),
    (rule("r", {"zone": "entrance", "hours": "10:00-10:00"}), "when.hours", "empty"),
    (rule("r", {"zone": "entrance", "days": ["mon", "funday"]}), "when.days", "unknown day 'funday'"),
    (rule("r", {"zone": "entrance", "tier": "platinum"}), "when.tier", "unknown tier 'platinum'"),
    (rule("r", {"zone": "entrance", "recent_event": "shelf.touch"}), "when.recent_event", "unknown event"),
    (rule("r", {"zone": "entrance"}, {"kiosks": ["ghost"]}), "show.kiosks", "unknown kiosk 'ghost'"),
    (rule("r", {"zone": "entrance", "recent_within_s": 10}), "when.recent_within_s", "without recent_event"),
    (rule("r", {"zone": "entrance"}, variants=[{"id": "a"}, {"id": "a"}]), "variants[1].id", "duplicate variant"),
    (rule("r", {"zone": "entrance"}, variants=[{"id": "a", "weight": 0}]), "variants", "weight 0"),
    (rule("r", {"zone": "entrance"}, variants=[{"id": "a", "data": {"t": "{nope}"}}]), "variants[0].data.t",
     "unknown placeholder"),
    (rule("r", {"zone": "entrance"}, cap_per_shopper={"count": 0, "within_s": 10}), "cap_per_shopper.count", ""),
    (rule("r", {"zone": "entrance", "segmnts": ["x"]}), "when.segmnts", "unknown key"),
    (rule("r", {}), "show.screens", "no screen to show on"),
    (rule("r", {"zone": "entrance", "known": False}, {"data": {"t": "{first_name}"}}), "when.known", "never matches"),
])
def test_rule_config_errors_name_the_key(bad_rule, path, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(base_config([bad_rule]), env={})
    assert any(path in i.path and fragment in str(i) for i in info.value.issues), info.value.issues


def test_wishlist_in_zone_needs_products_with_zones():
    data = base_config([rule("r", {"zone": "entrance", "wishlist_in_zone": True})], products=[])
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert any("[[products]]" in i.hint for i in info.value.issues)


def test_product_errors():
    data = base_config([], products=[{"sku": "A", "name": "a", "zone": "attic"}, {"sku": "A", "name": "b"},
                                     {"sku": "B", "name": ""}])
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    text = "\n".join(map(str, info.value.issues))
    assert "unknown zone 'attic'" in text and "duplicate sku 'A'" in text and "products[2].name" in text


def test_kiosk_only_rule_needs_no_zone():
    parse_config(base_config([rule("r", {"event": "kiosk.identify"}, {"kiosks": ["@source"]})]), env={})


def test_demo_config_personalizes_demo_shoppers_with_consent(conn):
    """The shipped demo rules with the central demo data set: wishlist items by zone, the consent gate."""
    from edge.config import load_config
    from sync.central.demo_data import generate_profiles

    cfg = load_config(Path(__file__).resolve().parent.parent / "config" / "demo.toml", env={})
    for prof in generate_profiles():
        put_profile(conn, prof["customer_id"], consent=prof["consents"]["personalization"],
                    **{k: v for k, v in prof.items() if k not in ("customer_id", "consents")})
    eng = RuleEngine(cfg, CustomerContext(cfg, conn))
    personal = anonymous = 0
    for prof in generate_profiles():
        cid = prof["customer_id"]
        in_zone = [s for s in prof["wishlist"] if any(p.sku == s and p.zone == "womenswear" for p in cfg.products)]
        out = eng.decide(event("zone_enter", "womenswear", subject=f"device:{cid}", customer=cid), FRI_10)
        wish = [d for d in out if d.rule_id == "wishlist-nearby"]
        if in_zone and prof["consents"]["personalization"]:
            assert wish and wish[0].customer == cid and not any("{" in v for v in wish[0].data.values())
            personal += 1
        else:
            assert not wish and all(d.customer is None for d in out)
            anonymous += 1
    assert personal > 10 and anonymous > 10
