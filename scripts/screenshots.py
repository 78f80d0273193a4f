#!/usr/bin/env python
"""Screenshots of the pages for the docs: starts a broker and the edge with the demo store, drives the
signage player and a kiosk in headless Chromium, writes PNGs to docs/screenshots/.

    python scripts/screenshots.py [--out docs/screenshots] [--chromium /usr/bin/chromium]

Needs Playwright (`pip install 'instore-edge[test]'`) and a Chromium (the system one, or
`playwright install chromium`); Mosquitto when installed, else the embedded demo broker.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.broker import EmbeddedBroker, MosquittoBroker, find_mosquitto, free_port  # noqa: E402
from edge.demo import demo_config, find_demo_config  # noqa: E402
from edge.service import Service  # noqa: E402
from edge.store import connect  # noqa: E402
from sync.central.demo_data import generate_profiles  # noqa: E402
from sync.client import ensure_schema  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PORTRAIT = {"width": 1080, "height": 1920}
LANDSCAPE = {"width": 1920, "height": 1080}


def pick_shopper() -> dict[str, Any]:
    """A demo shopper who consented to personalization and has a wishlist, an online cart and a loyalty card."""
    def score(p: dict[str, Any]) -> tuple[int, ...]:
        return (bool(p["orders_ready"]), min(len(p["wishlist"]), 3), min(len(p["cart"]), 2))

    candidates = [p for p in generate_profiles() if p["consents"]["personalization"]
                  and any(k.startswith("loyalty:") for k in p["identities"])]
    return dict(max(candidates, key=score))


def cache_profile(db_path: str, profile: dict[str, Any]) -> str:
    """Put the shopper in the edge's profile cache, as sync would; returns their loyalty card number."""
    conn = connect(db_path)
    try:
        conn.execute("BEGIN")
        ensure_schema(conn)
        conn.execute("INSERT OR REPLACE INTO profiles(customer_id, version, profile, first_name, "
                     "consent_personalization, updated_at, last_seen) VALUES (?,?,?,?,1,?,NULL)",
                     (profile["customer_id"], 1, json.dumps(profile), profile["first_name"], time.time()))
        for key in profile["identities"]:
            conn.execute("INSERT OR REPLACE INTO identities(key, customer_id, via, learned_at) VALUES (?,?,?,?)",
                         (key, profile["customer_id"], "central", time.time()))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return next(k for k in profile["identities"] if k.startswith("loyalty:")).split(":", 1)[1]


def publish_sighting(port: int, topic: str, v311: bool) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", port)
    client.loop_start()
    payload = {"ts": int(time.time() * 1000), "rssi": -55,
               "beacon": {"type": "ibeacon", "uuid": "f7826da6-4fa2-4e98-8024-bc5b71e0893e", "major": 7, "minor": 7}}
    client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium",
                    help="Chromium to drive (default: the system one)")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="instore-shots-"))
    mosquitto = find_mosquitto() is not None
    broker: Any = MosquittoBroker(work / "mosquitto").start() if mosquitto else EmbeddedBroker().start()
    cfg = demo_config(find_demo_config(), mqtt_port=broker.port, http_port=free_port(), db_path=work / "edge.db",
                      mqtt_v311=not mosquitto)
    cfg = cfg.model_copy(update={"central": type(cfg.central)()})  # no central store: profiles come from below
    service = Service(cfg).start()
    try:
        if not service.mqtt.connected.wait(15):
            print("the edge did not connect to the broker", file=sys.stderr)
            return 1
        base = f"http://127.0.0.1:{service.http_port}"
        tokens = cfg.http.tokens
        screen = cfg.screens[0].id
        kiosk = cfg.kiosks[0].id
        gateway = next(g.id for g in cfg.gateways if g.zone == cfg.screens[0].zone)
        loyalty = cache_profile(cfg.db.path, pick_shopper())
        written = []
        executable = args.chromium if Path(args.chromium).exists() else None
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)

            page = browser.new_page(viewport=LANDSCAPE)
            page.goto(f"{base}/signage/{screen}?token={tokens.signage}")
            page.wait_for_selector("body[data-online='yes']", state="attached")
            page.wait_for_timeout(600)  # let the entrance animation finish
            page.screenshot(path=str(args.out / "signage-playlist.png"))
            written.append("signage-playlist.png")
            page.close()

            page = browser.new_page(viewport=PORTRAIT)
            page.goto(f"{base}/signage/{screen}?token={tokens.signage}")
            page.wait_for_selector("body[data-online='yes']", state="attached")
            publish_sighting(broker.port, f"{cfg.prefix}/beacon/{gateway}", not mosquitto)
            page.wait_for_selector("#stage[data-kind='rule']", timeout=5000)
            page.wait_for_timeout(600)
            page.screenshot(path=str(args.out / "signage-personalized.png"))
            written.append("signage-personalized.png")
            page.close()

            page = browser.new_page(viewport=LANDSCAPE)
            page.goto(f"{base}/kiosk/{kiosk}?token={tokens.kiosk}")
            for digit in loyalty:
                page.click(f"#keypad [data-key='{digit}']")
            page.screenshot(path=str(args.out / "kiosk-welcome.png"))
            written.append("kiosk-welcome.png")
            page.close()

            page = browser.new_page(viewport=PORTRAIT)
            page.goto(f"{base}/kiosk/{kiosk}?token={tokens.kiosk}")
            page.fill("#code", loyalty)
            page.click("#identify-form button[type=submit]")
            page.wait_for_selector("#home:not([hidden])")
            page.wait_for_timeout(300)
            page.screenshot(path=str(args.out / "kiosk-identified.png"))
            written.append("kiosk-identified.png")
            page.click("#products .product-card >> nth=1")
            page.click("#add")
            page.click("#close-product")
            page.click("#handoff")
            page.wait_for_function("() => document.getElementById('qr-img').naturalWidth > 0")
            page.screenshot(path=str(args.out / "kiosk-handoff.png"))
            written.append("kiosk-handoff.png")
            page.close()

            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{base}/?token={tokens.admin}")
            page.screenshot(path=str(args.out / "status-page.png"), full_page=True)
            written.append("status-page.png")
            browser.close()
        for name in written:
            print(args.out / name)
        return 0
    finally:
        service.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
