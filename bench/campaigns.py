"""Campaigns: publish → applied at S simulated stores, and the edge's apply time for a big campaign.

    python bench/campaigns.py                 # 300 stores, and a campaign of 200 rules and 50 assets
    python bench/campaigns.py --stores 50

1. Fleet. The real central store (`instore-edge central`, SQLite, a subprocess) with S store tokens; each store
   is a lightweight poller of the real content channel (`GET /v1/stores/{store}/content/changes?wait_s=20`,
   the long-poll an edge uses), as threads in GENERATORS processes: 300 whole edges (each a broker client, a
   writer, an HTTP server) do not fit on 2 cores beside the central, so the poller stands for the edge's
   content thread. When a poller gets the campaign's new version it reports `applied` the way an edge does
   (a `campaign` event pushed to `POST /v1/stores/{store}/events`). The figure is the time from the publish
   call to each store holding the version (p50, p95, max), and to the central's campaign page showing it
   applied at every store.
2. Edge apply. A campaign version of 200 rules and 50 content items with an asset each (cached), taken the
   way the edge takes a content page (edge.domain.campaigns.Campaigns.take: validation against the store, the
   tables, the outbox report and the rule engine's swap, in one transaction): median and max of 5 versions.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import multiprocessing as mp
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import Link, store_config  # noqa: E402
from edge.broker import free_port, wait_for_port  # noqa: E402

ADMIN = "bench-admin-" + secrets.token_hex(8)
GENERATORS = 2
WAIT_S = 20
CAMPAIGN = "bench-autumn"




# --- the simulated stores ----------------------------------------------------------------------------------


def poller(port: int, store: str, token: str, version: Any, seen: dict[str, float], ready: threading.Event,
           stop: threading.Event) -> None:
    """A store's content thread: long-polls the channel; when the campaign's wanted version arrives, notes the
    time and reports it applied (an outbox event, as the edge pushes it)."""
    link, push = Link(port, token, WAIT_S + 30.0), Link(port, token, 30.0)
    cursor = ""
    first = True
    while not stop.is_set():
        wait = 0 if first else WAIT_S
        try:
            status, body = link.request("GET", f"/v1/stores/{store}/content/changes?limit=500&wait_s={wait}"
                                               + (f"&since={cursor}" if cursor else ""))
        except (OSError, http.client.HTTPException):
            time.sleep(0.2)
            continue
        if first:
            ready.set()
            first = False
        if status != 200:
            time.sleep(0.2)
            continue
        arrived = time.time()
        page = json.loads(body)
        cursor = page.get("next") or cursor
        for ch in page.get("changes", []):
            if ch.get("kind") == "campaign" and ch.get("id") == CAMPAIGN and ch.get("op") == "live" \
                    and ch.get("version") == version.value and "t" not in seen:
                seen["t"] = arrived
                event = {"event_id": f"campaign:{CAMPAIGN}:{ch['version']}:applied:{store}", "kind": "campaign",
                         "type": "applied", "ts": arrived, "received_at": arrived, "source": "edge", "seq": 1,
                         "data": {"id": CAMPAIGN, "version": ch["version"]}}
                for _ in range(100):  # as the edge's push: retried until the central store takes it
                    try:
                        status, _ = push.request("POST", f"/v1/stores/{store}/events",
                                                 json.dumps({"events": [event]}).encode())
                    except (OSError, http.client.HTTPException):
                        status = 0
                    if status == 200:
                        break
                    seen["push_retries"] = seen.get("push_retries", 0) + 1
                    time.sleep(0.2)
                seen["reported"] = time.time()


def generator(port: int, stores: list[tuple[str, str]], version: Any, go: Any, queue: Any) -> None:
    """A process running some of the stores' pollers; puts {store: time the version arrived} on `queue`."""
    stop = threading.Event()
    seen: dict[str, dict[str, float]] = {s: {} for s, _ in stores}
    readies = []
    for store, token in stores:
        ready = threading.Event()
        readies.append(ready)
        threading.Thread(target=poller, args=(port, store, token, version, seen[store], ready, stop),
                         daemon=True).start()
    for r in readies:
        r.wait(60)
    queue.put(("ready", len(stores)))
    go.wait(600)
    deadline = time.time() + 60
    while time.time() < deadline and not all("reported" in seen[s] for s in seen):
        time.sleep(0.05)
    stop.set()
    queue.put(("seen", {s: (v.get("t"), v.get("push_retries", 0)) for s, v in seen.items()}))


def admin(link: Link, method: str, path: str, body: Any = None, raw: bytes | None = None,
          headers: dict[str, str] | None = None) -> Any:
    status, answer = link.request(method, path, raw if raw is not None else
                                  (json.dumps(body).encode() if body is not None else None), headers)
    if status >= 300:
        raise RuntimeError(f"{method} {path}: HTTP {status}: {answer[:300]!r}")
    return json.loads(answer) if answer else None


def fleet(n_stores: int, tmp: Path) -> dict[str, Any]:
    tokens = {f"store-{i:04d}": secrets.token_urlsafe(18) for i in range(n_stores)}
    port = free_port()
    env = {**os.environ, "INSTORE_CENTRAL_ADMIN_TOKEN": ADMIN,
           "INSTORE_CENTRAL_STORE_TOKENS": ",".join(f"{s}={t}" for s, t in tokens.items())}
    log = open(tmp / "central.log", "ab")
    central = subprocess.Popen([sys.executable, "-m", "sync.central.cli", "--db", str(tmp / "central.db"), "--port",
                                str(port)], cwd=ROOT, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port, 60)
        link = Link(port, ADMIN, 60.0)
        status, _ = Link(port, next(iter(tokens.values())), 10).request(
            "GET", f"/v1/stores/{next(iter(tokens))}/content/changes")
        if status == 404:
            return {"skipped": "the central store has no content channel (GET /v1/stores/{store}/content/changes)"}
        image = b"\x89PNG\r\n\x1a\n" + secrets.token_bytes(2000)
        sha = hashlib.sha256(image).hexdigest()
        admin(link, "PUT", f"/v1/admin/assets/{sha}", raw=image, headers={"Content-Type": "image/png"})
        body = {"name": "Autumn coats", "targets": {"stores": ["*"]}, "priority": 1,
                "content": [{"id": "bench-coats", "template": "message", "title": "Autumn coats", "image": sha}],
                "rules": [{"id": "coats", "when": {"zone": "shoes", "event": "zone_enter"},
                           "show": {"content_id": "bench-coats"}}]}
        version = admin(link, "PUT", f"/v1/admin/campaigns/{CAMPAIGN}", body)["version"]
        ctx = mp.get_context("spawn")
        shared_version = ctx.Value("i", version)
        go = ctx.Event()
        queue = ctx.Queue()
        items = list(tokens.items())
        procs = [ctx.Process(target=generator, args=(port, items[g::GENERATORS], shared_version, go, queue))
                 for g in range(GENERATORS)]
        for p in procs:
            p.start()
        for _ in procs:
            assert queue.get(timeout=120)[0] == "ready"
        time.sleep(1.0)  # every poller is now held at the central (long-poll)
        t0 = time.time()
        admin(link, "POST", f"/v1/admin/campaigns/{CAMPAIGN}/publish", {})
        go.set()
        seen: dict[str, float | None] = {}
        retries = 0
        for _ in procs:
            kind, part = queue.get(timeout=120)
            seen.update({s: t for s, (t, _) in part.items()})
            retries += sum(r for _, r in part.values())
        for p in procs:
            p.join(30)
        reported_all: float | None = None
        deadline = time.time() + 30
        page: dict[str, Any] = {}
        while time.time() < deadline:
            page = admin(link, "GET", f"/v1/admin/campaigns/{CAMPAIGN}")
            rows = page.get("stores") or []
            if len(rows) >= n_stores and all(r.get("state") == "applied" for r in rows):
                reported_all = time.time() - t0
                break
            time.sleep(0.1)
        delays = sorted(t - t0 for t in seen.values() if t is not None)
        missing = sum(1 for t in seen.values() if t is None)
        q = statistics.quantiles(delays, n=20) if len(delays) >= 2 else delays * 19
        return {"stores": n_stores, "reached": len(delays), "missing": missing,
                "publish_to_store_p50_s": round(statistics.median(delays), 3) if delays else None,
                "publish_to_store_p95_s": round(q[18], 3) if delays else None,
                "publish_to_store_max_s": round(delays[-1], 3) if delays else None,
                "publish_to_central_shows_all_applied_s": None if reported_all is None else round(reported_all, 3),
                "central_totals": page.get("totals"), "report_push_retries": retries}
    finally:
        central.send_signal(signal.SIGTERM)
        try:
            central.wait(30)
        except subprocess.TimeoutExpired:
            central.kill()
        log.close()


# --- the edge's apply time ---------------------------------------------------------------------------------


def big_campaign(n_rules: int, n_assets: int) -> tuple[dict[str, Any], list[bytes]]:
    blobs = [b"\x89PNG\r\n\x1a\n" + i.to_bytes(4, "big") + secrets.token_bytes(20_000) for i in range(n_assets)]
    content = [{"id": f"item-{i}", "template": "message", "title": f"Offer {i}", "body": "Only this week",
                "image": hashlib.sha256(b).hexdigest(), "i18n": {"it": {"title": f"Offerta {i}"}}}
               for i, b in enumerate(blobs)]
    rules = [{"id": f"r{i}", "priority": i % 7, "ttl_s": 20,
              "when": {"zone": ("entrance", "shoes")[i % 2], "event": "zone_enter" if i % 3 else "zone_dwell",
                       **({"hours": "09:00-21:00"} if i % 4 == 0 else {}),
                       **({"tier": ["gold", "vip"]} if i % 5 == 0 else {})},
              "show": {"content_id": f"item-{i % n_assets}", "template": "message",
                       **({"data": {"title": "Hello {first_name}"}} if i % 5 == 0 else {})}}
             for i in range(n_rules)]
    return {"name": "Big", "priority": 3, "schedule": {"days": ["mon", "tue", "wed", "thu", "fri", "sat"]},
            "content": content, "rules": rules}, blobs


def edge_apply(tmp: Path, n_rules: int, n_assets: int, rounds: int = 5) -> dict[str, Any]:
    from edge.config import parse_config
    from edge.domain.campaigns import Campaigns
    from edge.domain.displays import Displays
    from edge.domain.rules import RuleEngine
    from edge.store.writer import Writer, open_writer
    from sync.assets import AssetCache
    from sync.local import CampaignChange, ContentChanges

    cfg = parse_config(store_config(tmp, 1883), env={})
    conn = open_writer(cfg.db.path)
    writer = Writer(conn)
    cache = AssetCache(tmp / "assets", 1 << 30)
    body, blobs = big_campaign(n_rules, n_assets)
    for b in blobs:
        cache.put(hashlib.sha256(b).hexdigest(), [b], "image/png")
    engine = RuleEngine(cfg)
    campaigns = Campaigns(cfg, engine, Displays(cfg), has_asset=cache.has)
    times = []
    for v in range(1, rounds + 1):
        page = ContentChanges(campaigns=(CampaignChange("big", v, "live", {**body, "version": v}),), cursor=f"c{v}")
        t0 = time.perf_counter()
        writer.begin()
        done = campaigns.take(writer, page)
        writer.commit()
        times.append(time.perf_counter() - t0)
        assert done.applied == 1, done
    assert len(engine.rules) == n_rules + len(cfg.rules)
    conn.close()
    return {"rules": n_rules, "assets": n_assets, "apply_median_ms": round(statistics.median(times) * 1000, 1),
            "apply_max_ms": round(max(times) * 1000, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stores", type=int, default=300)
    ap.add_argument("--rules", type=int, default=200)
    ap.add_argument("--assets", type=int, default=50)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-campaigns-") as tmp:
        apply = edge_apply(Path(tmp), args.rules, args.assets)
        print(f"edge apply, {args.rules} rules and {args.assets} assets: median {apply['apply_median_ms']} ms, "
              f"max {apply['apply_max_ms']} ms", flush=True)
        (Path(tmp) / "fleet").mkdir()
        result = fleet(args.stores, Path(tmp) / "fleet")
        print(f"publish → applied at {args.stores} stores: {json.dumps(result)}", flush=True)
    print(json.dumps({"bench": "campaigns", "nproc": os.cpu_count(), "edge_apply": apply, "fleet": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
