#!/usr/bin/env python
"""Screenshots of the pages for the docs: starts a broker and the edge with the demo store, drives the
signage player, a kiosk and the dashboard in headless Chromium, writes PNGs to docs/screenshots/.

The personalized signage shot is a demo shopper who gave the personalization consent walking into the
pickup zone with an order ready; the dashboard shot follows a minute of simulated shoppers.

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
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.broker import EmbeddedBroker, MosquittoBroker, find_mosquitto, free_port  # noqa: E402
from edge.demo import demo_config, find_demo_config  # noqa: E402
from edge.app import App  # noqa: E402
from sync.central import CentralServer  # noqa: E402
from sync.central.demo_data import generate_profiles  # noqa: E402

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


def publish_sighting(port: int, topic: str, beacon: dict[str, Any]) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", port)
    client.loop_start()
    payload = {"ts": int(time.time() * 1000), "rssi": -55, "beacon": beacon}
    client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def simulate(cfg: Any, port: int) -> None:
    """Some shoppers walk the store (ten times faster than life), then leave: figures for the dashboard."""
    from edge.simulate import Simulator

    print("simulating shoppers for the dashboard (about a minute)...", file=sys.stderr)
    Simulator(cfg, shoppers=10, rate=3, seed=11, speed=10, journeys=30, port=port).run(duration_s=45)
    time.sleep(16)  # the last shoppers' stays end (exit after 10-15 s of silence)


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
    config_path = find_demo_config()
    store_token = tomllib.loads(config_path.read_text(encoding="utf-8"))["central"]["token"]
    # The reference central store with the demo shoppers, as `instore-edge demo` runs it.
    central = CentralServer(work / "central.db", "screenshots-admin-token-0000", {"demo": store_token}, port=0,
                            demo_data=True).start()
    cfg = demo_config(config_path, mqtt_port=broker.port, http_port=free_port(), db_path=work / "edge.db",
                      mqtt_v311=not mosquitto, central_url=central.url)
    shopper = pick_shopper()
    loyalty = next(k for k in shopper["identities"] if k.startswith("loyalty:")).split(":", 1)[1]
    service = App(cfg).start()
    try:
        if not service.mqtt.connected.wait(15):
            print("the edge did not connect to the broker", file=sys.stderr)
            return 1
        deadline = time.monotonic() + 30
        while service.sync.status()["profiles_cached"] < central.demo_loaded:  # the first pull
            if time.monotonic() > deadline:
                print("the edge did not pull the demo shoppers from the central store", file=sys.stderr)
                return 1
            time.sleep(0.2)
        base = f"http://127.0.0.1:{service.http_port}"
        tokens = cfg.http.tokens
        screen = cfg.screens[0].id
        kiosk = cfg.kiosks[0].id
        pickup = next(s for s in cfg.screens if s.zone == "pickup")
        pickup_gateway = next(g.id for g in cfg.gateways if g.zone == pickup.zone)
        app_beacon = next({"type": "device", "id": k.split(":", 1)[1]} for k in shopper["identities"]
                          if k.startswith("device:"))
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
            page.goto(f"{base}/signage/{pickup.id}?token={tokens.signage}")
            page.wait_for_selector("body[data-online='yes']", state="attached")
            publish_sighting(broker.port, f"{cfg.prefix}/beacon/{pickup_gateway}", app_beacon)
            page.wait_for_selector("#stage[data-kind='rule']", timeout=5000)
            page.wait_for_timeout(600)
            if shopper["first_name"] not in (page.text_content("#stage") or ""):
                print(f"the pickup screen did not greet {shopper['first_name']}: {page.text_content('#stage')!r}",
                      file=sys.stderr)
                return 1
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

            simulate(cfg, broker.port)
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            page.goto(f"{base}/?token={tokens.admin}")
            page.wait_for_selector("body[data-loaded]")
            page.wait_for_timeout(300)
            page.screenshot(path=str(args.out / "status-page.png"), full_page=True)
            written.append("status-page.png")
            browser.close()
        for name in written:
            print(args.out / name)
        return 0
    finally:
        service.stop()
        central.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
