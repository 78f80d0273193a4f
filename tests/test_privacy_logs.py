"""PII never goes into the logs: run the edge on a shopper with a name, a phone and purchases, grep its log."""

from __future__ import annotations

import requests

from conftest import now_ms, wait_until

P = "instore/teststore"


def test_a_shoppers_name_ids_and_payloads_never_reach_the_log(edge_process, mqtt_client, tmp_path):
    from sync.central import CentralServer

    central = CentralServer(tmp_path / "central.db", "central-admin-token-0000",
                            {"teststore": "8eu8wq2pt_Vvr7q6nStQxJkL"}, port=0).start()
    try:
        requests.post(f"{central.url}/v1/admin/profiles", timeout=10,
                      headers={"Authorization": "Bearer central-admin-token-0000"},
                      json={"customer_id": "C-7731", "first_name": "Zebedeo", "identities": ["device:app-7731"],
                            "consents": {"personalization": True, "marketing": True}}).raise_for_status()
        rules = [{"id": "hello", "priority": 5, "ttl_s": 30.0, "when": {"event": "kiosk.identify", "known": True},
                  "show": {"content_id": "hello", "screens": ["shoes-1"], "data": {"title": "Ciao {first_name}"}}}]
        edge = edge_process(rules=rules, central={"url": central.url, "token": "8eu8wq2pt_Vvr7q6nStQxJkL",
                                                  "pull_interval_s": 0.5})
        edge.start()
        status = mqtt_client()
        status.subscribe(f"{P}/edge/status")
        status.wait_for(lambda t, d: d["state"] == "online", timeout=20)
        screen = mqtt_client()
        screen.subscribe(f"{P}/display/shoes-1/content")
        pub = mqtt_client()
        t = now_ms()
        pub.publish(f"{P}/beacon/gw-shoes", {"ts": t, "beacon": {"type": "device", "id": "app-7731"}, "rssi": -60})
        pub.publish(f"{P}/kiosk/kiosk-1/event", {"ts": t + 1, "type": "identify", "customer": "C-7731",
                                                  "session": "sess-7731"})
        # Bad input too: errors are logged, their payloads are not.
        pub.publish(f"{P}/kiosk/kiosk-1/event", b'{"type": "identify", "customer": "C-7731", "note": "Zebedeo"')
        pub.publish(f"{P}/pos/till-1", {"id": "r-7731", "ts": t + 2, "customer": "C-7731", "items": ["SKU"],
                                        "total": 77.31})

        def greeted() -> bool:
            pub.publish(f"{P}/kiosk/kiosk-1/event", {"ts": now_ms(), "type": "identify", "customer": "C-7731",
                                                      "session": "sess-7731"})
            try:
                _, d, _ = screen.wait_for(lambda tp, d: d.get("data", {}).get("title") == "Ciao Zebedeo",
                                          timeout=1.5)
                return True
            except AssertionError:
                return False

        wait_until(greeted, timeout=30, interval=0.1, what="the personal greeting (profile synced)")
        assert edge.terminate() == 0
        log = (tmp_path / "edge.log").read_text()
        assert "dead letter" in log  # the log does say what happened...
        for secret in ("Zebedeo", "C-7731", "app-7731", "sess-7731", "77.31"):  # ...never about whom
            assert secret not in log, f"{secret!r} found in the edge log"
    finally:
        central.stop()
