"""The spine end to end: MQTT in → durable record → decision → retained display, against a real Mosquitto."""

from __future__ import annotations

import json
import sqlite3
import time

from conftest import ADMIN, SIGNAGE, now_ms, sighting, wait_until

P = "instore/teststore"


def test_every_payload_kind_is_recorded_with_its_zone(edge, mqtt_client):
    pub = mqtt_client()
    t = now_ms()
    pub.publish(f"{P}/beacon/gw-entrance", sighting(t, minor=1))
    pub.publish(f"{P}/beacon/gw-shoes", {"sightings": [sighting(t, minor=2), sighting(t, minor=3)]})
    pub.publish(f"{P}/qr/scanner-1", {"ts": t, "code": "https://example.test/q/abc"})
    pub.publish(f"{P}/window/window-1", {"ts": t, "type": "touch", "session": "s-1", "item": "SKU-1"})
    pub.publish(f"{P}/kiosk/kiosk-1/event", {"ts": t, "type": "identify", "customer": "C-42"})
    pub.publish(f"{P}/pos/till-1", {"id": "r-1", "ts": t, "customer": "C-42", "items": ["SKU-1"], "total": 59.9})

    # 7 device events (9 beacon sightings count 3), and presence's 3 visit_start + 3 zone_enter.
    events = wait_until(lambda: len(edge.events()) >= 13 and edge.events(), what="all events recorded")
    by_kind: dict[str, list[dict]] = {}
    for e in events:
        by_kind.setdefault(e["kind"], []).append(e)
    assert len(by_kind["beacon"]) == 3
    assert {e["zone"] for e in by_kind["beacon"]} == {"entrance", "shoes"}
    assert by_kind["qr"][0]["data"]["code"] == "https://example.test/q/abc"
    assert by_kind["window"][0]["type"] == "touch"
    assert by_kind["kiosk"][0]["customer"] == "C-42" and by_kind["kiosk"][0]["zone"] == "shoes"
    assert by_kind["pos"][0]["source"] == "till-1"
    # Presence derived an enter per subject and zone.
    assert len(by_kind["zone_enter"]) == 3

    metrics = edge.get("/metrics", token=None).text
    assert 'instore_edge_events_total{kind="beacon"} 3' in metrics
    assert 'instore_edge_events_total{kind="pos"} 1' in metrics


def test_malformed_messages_are_dead_lettered_with_a_specific_reason(edge, mqtt_client):
    pub = mqtt_client()
    watcher = mqtt_client()
    watcher.subscribe(f"{P}/deadletter")
    time.sleep(0.2)
    t = now_ms()
    bad = [
        (f"{P}/beacon/gw-entrance", b"{not json", "not_json"),
        (f"{P}/beacon/gw-entrance", json.dumps({**sighting(t), "rssi": "strong"}).encode(), "wrong_type"),
        (f"{P}/qr/scanner-1", json.dumps({"ts": t}).encode(), "missing_field"),
        (f"{P}/window/w-1", b'{"ts": 1, "pad": "' + b"x" * 70_000 + b'"}', "oversized"),
        (f"{P}/lighting/lamp-1", json.dumps({"ts": t}).encode(), "unknown_topic"),
        (f"{P}/beacon/gw-nowhere", json.dumps(sighting(t)).encode(), "unknown_gateway"),
        (f"{P}/beacon/gw-entrance", b"[1, 2, 3]", "not_object"),
        (f"{P}/beacon/gw-entrance", json.dumps({**sighting(t), "rssi": 900}).encode(), "invalid_value"),
    ]
    for topic, payload, _ in bad:
        pub.publish(topic, payload)
    # The service keeps working after all that.
    pub.publish(f"{P}/beacon/gw-shoes", sighting(t, minor=7))
    wait_until(lambda: edge.events(kind="beacon"), what="the good event after the bad ones")

    rows = wait_until(lambda: (r := edge.get("/api/v1/deadletters").json()["deadletters"]) and len(r) == len(bad)
                      and r, what="dead letters")
    assert sorted(r["reason"] for r in rows) == sorted(reason for _, _, reason in bad)
    wrong = next(r for r in rows if r["reason"] == "wrong_type")
    assert "rssi" in wrong["detail"]
    assert all(r["topic"] and r["payload_excerpt"] is not None for r in rows)

    seen = set()
    while len(seen) < len(bad):
        topic, data, _ = watcher.wait_for(lambda tp, d: tp.endswith("/deadletter"))
        assert {"topic", "reason", "payload_excerpt", "received_at"} <= set(data)
        seen.add((data["topic"], data["reason"]))
    metrics = edge.get("/metrics", token=None).text
    assert 'instore_edge_deadletters_total{reason="oversized"} 1' in metrics
    assert 'instore_edge_deadletters_total{reason="not_json"} 1' in metrics


def test_redelivered_message_is_recorded_once_but_two_real_sightings_twice(edge, mqtt_client):
    pub = mqtt_client()
    t = now_ms()
    same = sighting(t, minor=5)
    pub.publish(f"{P}/beacon/gw-shoes", same)
    pub.publish(f"{P}/beacon/gw-shoes", same)  # what a redelivery looks like: the same bytes again
    pub.publish(f"{P}/beacon/gw-shoes", sighting(t + 1000, minor=5))  # the same beacon, a second later
    pub.publish(f"{P}/beacon/gw-shoes", sighting(t + 2000, minor=9))  # a marker to wait for
    wait_until(lambda: any(e["subject"].endswith(":9") for e in edge.events(kind="beacon")), what="marker")
    minor5 = [e for e in edge.events(kind="beacon") if e["subject"].endswith(":100:5")]
    assert sorted(e["ts"] for e in minor5) == [t / 1000, t / 1000 + 1]
    assert edge.service.metrics.get("instore_edge_duplicates_total") == 1


def test_sighting_at_the_entrance_changes_the_retained_display_then_it_returns_to_the_playlist(edge, mqtt_client):
    topic = f"{P}/display/entrance-1/content"
    screen = mqtt_client()
    screen.subscribe(topic)
    _, first, retained = screen.wait_for(lambda tp, d: tp == topic)
    assert first["content_id"] == "playlist" and retained
    assert [i["content_id"] for i in first["data"]["items"]] == ["autumn", "news"]

    mqtt_client().publish(f"{P}/beacon/gw-entrance", sighting(now_ms(), minor=11))
    _, shown, _ = screen.wait_for(lambda tp, d: d["content_id"] == "welcome")
    assert shown["reason"].startswith("rule entrance-welcome")
    assert shown["expires_at"] > now_ms()

    # A screen that connects now gets the current content at once (retained).
    late = mqtt_client()
    late.subscribe(topic)
    _, current, retained = late.wait_for(lambda tp, d: tp == topic)
    assert retained and current["content_id"] == "welcome"

    # ttl_s is 2 in the test config: then the screen returns to its playlist.
    _, back, _ = screen.wait_for(lambda tp, d: d["content_id"] == "playlist", timeout=6)
    assert back["reason"].startswith("fallback")
    decisions = edge.get("/api/v1/decisions").json()["decisions"]
    assert decisions[0]["screen"] == "entrance-1" and decisions[0]["rule_id"] == "entrance-welcome"


def test_silence_makes_a_subject_leave_its_zone(edge, mqtt_client):
    mqtt_client().publish(f"{P}/beacon/gw-shoes", sighting(now_ms(), minor=21))
    wait_until(lambda: edge.events(kind="zone_enter"), what="enter")
    assert [p["zone"] for p in edge.get("/api/v1/presence").json()["presence"]] == ["shoes"]
    exits = wait_until(lambda: edge.events(kind="zone_exit"), timeout=8, what="exit after 2 s of silence")
    assert exits[0]["zone"] == "shoes" and exits[0]["subject"].endswith(":100:21")
    assert edge.get("/api/v1/presence").json()["presence"] == []


def test_moving_between_zones_exits_one_and_enters_the_other(edge, mqtt_client):
    pub = mqtt_client()
    pub.publish(f"{P}/beacon/gw-entrance", sighting(now_ms(), minor=31, rssi=-70))
    wait_until(lambda: edge.events(kind="zone_enter"), what="enter at the entrance")

    # Presence has hysteresis: the shopper moves once the shoes gateway clearly out-hears the entrance
    # one for a moment (a couple of seconds of sightings), not on one equal sighting.
    def walked_over() -> bool:
        pub.publish(f"{P}/beacon/gw-shoes", sighting(now_ms(), minor=31, rssi=-45))
        return len(edge.events(kind="zone_enter")) == 2

    wait_until(walked_over, interval=0.3, what="two enters")
    exits = edge.events(kind="zone_exit")
    assert [e["zone"] for e in exits] == ["entrance"]


def test_edge_status_is_retained_online_and_offline_after_a_graceful_stop(make_config, mqtt_client):
    from conftest import EdgeHandle

    handle = EdgeHandle(make_config())
    watcher = mqtt_client()
    watcher.subscribe(f"{P}/edge/status")
    watcher.wait_for(lambda tp, d: d["state"] == "online")
    handle.stop()
    watcher.wait_for(lambda tp, d: d["state"] == "offline")


def test_admin_endpoints_refuse_missing_and_wrong_tokens(edge):
    assert edge.get("/api/v1/events", token=None).status_code == 401
    assert edge.get("/api/v1/events", token="not-a-token-at-all").status_code == 401
    r = edge.get("/api/v1/events", token=SIGNAGE)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert edge.get("/api/v1/events", token=ADMIN).status_code == 200
    r = edge.get("/api/v1/events", params={"limit": "lots"})
    assert r.status_code == 400 and "limit" in r.json()["error"]["message"]


def test_health_readiness_and_metrics_report_the_service_state(edge):
    assert edge.get("/healthz", token=None).json()["status"] == "ok"
    ready = edge.get("/readyz", token=None)
    assert ready.status_code == 200 and ready.json()["checks"]["broker"]["ok"] is True
    text = edge.get("/metrics", token=None).text
    for name in ("instore_edge_ingest_lag_seconds", "instore_edge_mqtt_connected 1", "instore_edge_outbox_pending"):
        assert name in text


def test_readiness_fails_when_the_broker_goes_away(edge, broker):
    broker.stop()
    wait_until(lambda: edge.get("/readyz", token=None).status_code == 503, what="not ready")
    assert edge.get("/readyz", token=None).json()["checks"]["broker"]["ok"] is False
    broker.start()
    wait_until(lambda: edge.get("/readyz", token=None).status_code == 200, timeout=20, what="ready again")


def test_http_device_event_is_recorded_and_bad_ones_refused_with_the_reason(edge):
    import requests

    url = edge.url + "/api/v1/events"
    body = {"kind": "window", "device": "window-9", "event": {"ts": now_ms(), "type": "touch", "session": "s"}}
    assert requests.post(url, json=body, timeout=10).status_code == 401
    r = requests.post(url, json=body, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert r.status_code == 201, r.text
    assert [e["source"] for e in edge.events(kind="window")] == ["window-9"]
    body["event"]["type"] = 42
    r = requests.post(url, json=body, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "wrong_type"


def test_events_from_unknown_kiosks_are_kept_and_counted(edge, mqtt_client):
    mqtt_client().publish(f"{P}/kiosk/kiosk-new/event", {"ts": now_ms(), "type": "browse", "session": "s-9"})
    events = wait_until(lambda: edge.events(kind="kiosk"), what="kiosk event")
    assert events[0]["source"] == "kiosk-new" and events[0]["zone"] is None
    assert 'instore_edge_unknown_devices_total{kind="kiosk"} 1' in edge.get("/metrics", token=None).text


def test_events_survive_in_the_sqlite_file(edge, mqtt_client):
    mqtt_client().publish(f"{P}/qr/scanner-2", {"ts": now_ms(), "code": "hello"})
    wait_until(lambda: edge.events(kind="qr"), what="qr")
    with sqlite3.connect(edge.cfg.db.path) as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE kind='qr'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] >= 1
