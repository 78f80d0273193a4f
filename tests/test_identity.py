"""Who a sighting belongs to: anonymous visits, identification at a kiosk, staff never personalized."""

from __future__ import annotations

from conftest import now_ms, sighting, wait_until

P = "instore/teststore"


def device(ts: int, ident: str, rssi: int = -60) -> dict:
    return {"ts": ts, "beacon": {"type": "device", "id": ident}, "rssi": rssi}


def test_an_anonymous_visit_is_linked_when_the_shopper_identifies_at_the_kiosk(edge, mqtt_client):
    pub = mqtt_client()
    t = now_ms()
    pub.publish(f"{P}/beacon/gw-shoes", device(t, "app-7"))
    pub.publish(f"{P}/beacon/gw-shoes", device(t + 200, "app-7"))
    present = wait_until(lambda: edge.get("/api/v1/presence").json()["presence"], what="presence")
    assert present[0]["known"] is False and present[0]["visitor"].startswith("v-")
    assert all(e["customer"] is None for e in edge.events(kind="beacon"))

    pub.publish(f"{P}/kiosk/kiosk-1/event", {"ts": t + 1000, "type": "identify", "customer": "C-0007",
                                              "identity": "device:app-7", "session": "k-1"})
    links = wait_until(lambda: edge.events(kind="identity_link"), what="identity link")
    assert {(l["subject"], l["customer"]) for l in links} >= {("device:app-7", "C-0007")}
    # The visit's earlier, anonymous sightings now belong to the customer...
    assert {e["customer"] for e in edge.events(kind="beacon")} == {"C-0007"}
    # ...the presence view knows them, and later sightings resolve at once.
    present = edge.get("/api/v1/presence").json()["presence"]
    assert present[0]["known"] is True and present[0]["visitor"] == "C-0007"
    pub.publish(f"{P}/beacon/gw-shoes", device(t + 2000, "app-7"))
    wait_until(lambda: len(edge.events(kind="beacon")) == 3, what="third sighting")
    assert edge.events(kind="beacon")[0]["customer"] == "C-0007"


def test_a_kiosk_session_started_anonymously_belongs_to_the_customer_after_identify(edge, mqtt_client):
    pub = mqtt_client()
    t = now_ms()
    pub.publish(f"{P}/kiosk/kiosk-1/event", {"ts": t, "type": "browse", "session": "s-9", "item": "SKU-1"})
    pub.publish(f"{P}/kiosk/kiosk-1/event", {"ts": t + 1, "type": "identify", "customer": "C-0042",
                                              "session": "s-9"})
    pub.publish(f"{P}/kiosk/kiosk-1/event", {"ts": t + 2, "type": "add_to_cart", "session": "s-9",
                                              "item": "SKU-2"})
    events = wait_until(lambda: len(edge.events(kind="kiosk")) == 3 and edge.events(kind="kiosk"), what="kiosk")
    assert [e["customer"] for e in events] == ["C-0042", "C-0042", "C-0042"]


def test_a_tracked_staff_beacon_is_never_personalized_and_an_untracked_one_not_tracked(make_config, mqtt_client):
    from conftest import EdgeHandle

    staff = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100:900"
    badge = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100:901"
    handle = EdgeHandle(make_config(beacons=[{"key": staff, "owner": "Anna", "kind": "staff", "track": True},
                                             {"key": badge, "owner": "Luca", "kind": "staff", "track": False}]))
    try:
        pub = mqtt_client()
        pub.publish(f"{P}/beacon/gw-entrance", sighting(now_ms(), minor=900))
        pub.publish(f"{P}/beacon/gw-entrance", sighting(now_ms(), minor=901))
        pub.publish(f"{P}/beacon/gw-entrance", sighting(now_ms(), minor=1))  # a shopper, as a marker
        wait_until(lambda: len(handle.events(kind="zone_enter")) == 2, what="two enters")
        enters = {e["subject"]: e for e in handle.events(kind="zone_enter")}
        assert enters[staff]["data"].get("staff") is True and badge not in enters
        decided = {d["event_id"] for d in handle.get("/api/v1/decisions").json()["decisions"]}
        assert decided == {e["event_id"] for e in handle.events(kind="zone_enter") if e["subject"] != staff}
    finally:
        handle.stop()


def _traces(db_path: str, needle: str) -> list[str]:
    """Every table.column in the SQLite file whose value mentions `needle`."""
    import sqlite3

    found = []
    with sqlite3.connect(db_path) as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            for col in cols:
                n = conn.execute(f"SELECT count(*) FROM {table} WHERE CAST({col} AS TEXT) LIKE ?",
                                 (f"%{needle}%",)).fetchone()[0]
                if n:
                    found.append(f"{table}.{col}")
    return found


def test_erasure_removes_the_shopper_from_every_table_on_the_device(edge, mqtt_client):
    import requests

    from conftest import ADMIN

    pub = mqtt_client()
    t = now_ms()
    pub.publish(f"{P}/beacon/gw-shoes", device(t, "app-77"))
    pub.publish(f"{P}/kiosk/kiosk-1/event", {"ts": t + 1, "type": "identify", "customer": "C-0077",
                                              "identity": "device:app-77", "session": "k-77"})
    pub.publish(f"{P}/kiosk/kiosk-1/event", {"ts": t + 2, "type": "add_to_cart", "session": "k-77", "item": "S"})
    wait_until(lambda: len(edge.events(kind="kiosk")) == 2, what="kiosk events")
    assert _traces(edge.cfg.db.path, "C-0077") and _traces(edge.cfg.db.path, "app-77")

    url = f"{edge.url}/api/v1/customers/C-0077"
    assert requests.delete(url, timeout=10).status_code == 401
    r = requests.delete(url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert r.status_code == 200 and r.json() == {"erased": "C-0077"}
    assert _traces(edge.cfg.db.path, "C-0077") == []
    # Only the live presence row still sees the phone, now as an anonymous device.
    assert _traces(edge.cfg.db.path, "app-77") == ["presence.subject"]
    assert edge.get("/api/v1/presence").json()["presence"][0]["known"] is False
    # The events themselves stay (counts, sync), pseudonymized.
    assert len(edge.events(kind="kiosk")) == 2
    # A sighting of the same phone now is anonymous again.
    pub.publish(f"{P}/beacon/gw-shoes", device(t + 5000, "app-77"))
    wait_until(lambda: len(edge.events(kind="beacon")) == 2, what="new sighting")
    assert edge.events(kind="beacon")[0]["customer"] is None
