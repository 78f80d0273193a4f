"""Sync benchmark: outbox backlog drain rate to the central store, and change-feed apply rate.

The central store runs as its own process (`python -m sync.central.cli`, so it does not share the
edge's GIL); the edge is this process: the real pipeline writer (edge.app.App, MQTT not
started), its side of sync (edge.uplink.Uplink) and the real SyncClient.

- drain: OUTBOX events are put in the outbox (untimed), then the client pushes them all; figure:
  events/s from the first POST to the outbox being empty (every deletion committed).
- apply: PROFILES profiles are created at the central store (untimed), then one `pull_once()` fetches
  and applies the whole change feed (profiles + identity keys + cursor, in the writer's transactions;
  the edge's in-memory updates that follow them are not part of the figure); figure: profiles/s. The cache bound is raised above PROFILES so nothing is evicted while measuring.

CPU per event / per profile of each process (steadier than the rates on a shared machine) and peak RSS
(VmHWM) of both are reported. The last line printed is a JSON object.

    python bench/sync.py [--events 100000] [--profiles 50000] [--push-batch 1000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import requests  # noqa: E402

from bench._common import ADMIN, ROOT, STORE, proc_status_kb, store_config  # noqa: E402
from edge.broker import free_port, wait_for_port  # noqa: E402
from edge.config import parse_config  # noqa: E402
from edge.app import App, tune_gc  # noqa: E402
from edge.uplink import Uplink, sync_settings  # noqa: E402
from sync.client import SyncClient  # noqa: E402

STORE_TOKEN = "VS5GovlIgicUA9zmAlW8qQ7Y"
CENTRAL_ADMIN = "bench-central-admin-0123456789"


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fill_outbox(svc: App, n: int, chunk: int = 20_000) -> None:
    now = time.time()
    for start in range(0, n, chunk):
        done = threading.Event()

        def task(writer, start=start) -> None:
            conn = writer.conn
            for i in range(start, min(n, start + chunk)):
                cur = conn.execute(
                    "INSERT INTO events(event_id, kind, type, source, zone, subject, customer, ts, received_at, "
                    "data) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (f"bench-{i:07d}", "beacon", "sighting", "gw-entrance", "entrance",
                     f"ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100:{i % 500}", None, now - 60 + i * 1e-4,
                     now, json.dumps({"rssi": -60 - i % 30, "gateway": "gw-entrance"})))
                conn.execute("INSERT INTO outbox(event_seq) VALUES (?)", (cur.lastrowid,))

        svc.inbox.submit_task(task, done.set)
        done.wait()


def edge_side(svc: App, max_profiles: int) -> Uplink:
    """The edge's side of sync on the app's writer, its memory left out (the figures are sync and the
    tables' work, as this benchmark has always measured them), with its own profile cache bound."""
    return Uplink(svc.cfg.db.path, svc.inbox.submit_task, remember=lambda key, customer: None,
                  profiles_changed=lambda conn, customers: None, erase_by_key=svc.privacy.erase_by_key,
                  max_profiles=max_profiles, profile_ttl_s=svc.cfg.central.cache_ttl_s,
                  readiness=svc.readiness, dead_threads=svc.dead_threads)


def create_profiles(url: str, n: int, chunk: int = 1000) -> None:
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {CENTRAL_ADMIN}"
    for start in range(0, n, chunk):
        profiles = [{"customer_id": f"cust-{i:06d}", "first_name": "Alex", "segments": ["runner"], "tier": "silver",
                     "consents": {"personalization": i % 5 != 0, "marketing": False},
                     "preferences": {"size": "M"}, "wishlist": [f"sku-{i % 97}"], "cart": [],
                     "identities": [f"device:app-{i}", f"loyalty:{100000 + i}"]}
                    for i in range(start, min(n, start + chunk))]
        r = s.post(url + "/v1/admin/profiles", json={"profiles": profiles}, timeout=120)
        r.raise_for_status()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--profiles", type=int, default=50_000)
    ap.add_argument("--push-batch", type=int, default=1000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp_s:
        tmp = Path(tmp_s)
        port = free_port()
        log = open(tmp / "central.log", "ab")
        central = subprocess.Popen(
            [sys.executable, "-m", "sync.central.cli", "--db", str(tmp / "central.db"), "--port", str(port)],
            cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            env={**os.environ, "INSTORE_CENTRAL_ADMIN_TOKEN": CENTRAL_ADMIN,
                 "INSTORE_CENTRAL_STORE_TOKENS": f"{STORE}={STORE_TOKEN}"})
        try:
            wait_for_port(port, 20)
            url = f"http://127.0.0.1:{port}"
            data = store_config(tmp, free_port())
            data["central"] = {"url": url, "token": STORE_TOKEN, "push_batch": args.push_batch,
                               "pull_interval_s": 3600}
            cfg = parse_config(data, env={})
            svc = App(cfg)
            tune_gc()  # as `instore-edge run` does
            svc.pipeline.start()

            fill_outbox(svc, args.events)
            client = SyncClient(sync_settings(cfg), edge_side(svc, args.profiles * 2), svc.metrics)
            t0, cpu0, ccpu0 = time.perf_counter(), time.process_time(), cpu_s(central.pid)
            delivered = client.push_once()
            drain_s = time.perf_counter() - t0
            drain_cpu = (time.process_time() - cpu0, cpu_s(central.pid) - ccpu0)
            pending = client.status()["outbox_pending"]
            assert pending == 0 and delivered == args.events, (delivered, pending)
            stats = requests.get(url + "/v1/admin/stats", headers={"Authorization": f"Bearer {CENTRAL_ADMIN}"},
                                 timeout=30).json()
            assert stats["events"]["total"] == args.events, stats["events"]

            create_profiles(url, args.profiles)
            t0, cpu0, ccpu0 = time.perf_counter(), time.process_time(), cpu_s(central.pid)
            applied = client.pull_once()
            apply_s = time.perf_counter() - t0
            apply_cpu = (time.process_time() - cpu0, cpu_s(central.pid) - ccpu0)
            assert applied == args.profiles, applied
            with sqlite3.connect(cfg.db.path) as conn:
                n_ids = conn.execute("SELECT count(*) FROM identities").fetchone()[0]
            assert n_ids == 2 * args.profiles, n_ids

            # The same feed applied again with the cache bounded to the default (5000): eviction cost.
            bounded = edge_side(svc, 5000)
            t0 = time.perf_counter()
            evicted = bounded.evict_profiles().result(120)
            evict_s = time.perf_counter() - t0

            res = {
                "events": args.events, "push_batch": args.push_batch,
                "drain_events_per_s": round(args.events / drain_s), "drain_s": round(drain_s, 2),
                "profiles": args.profiles, "apply_profiles_per_s": round(args.profiles / apply_s),
                "apply_s": round(apply_s, 2),
                "drain_cpu_us_per_event": {"edge": round(1e6 * drain_cpu[0] / args.events, 1),
                                           "central": round(1e6 * drain_cpu[1] / args.events, 1)},
                "apply_cpu_us_per_profile": {"edge": round(1e6 * apply_cpu[0] / args.profiles, 1),
                                             "central": round(1e6 * apply_cpu[1] / args.profiles, 1)},
                "evict_to_5000_s": round(evict_s, 3), "evicted": evicted,
                "edge_peak_rss_mb": round((proc_status_kb(os.getpid(), "VmHWM") or 0) / 1024, 1),
                "central_peak_rss_mb": round((proc_status_kb(central.pid, "VmHWM") or 0) / 1024, 1),
                "cpus": os.cpu_count(),
            }
            client.stop()
            svc.pipeline.stop()
        finally:
            central.terminate()
            central.wait(15)
            log.close()
    print(f"backlog drain: {res['drain_events_per_s']:,} events/s ({args.events:,} events, batches of "
          f"{args.push_batch}, {res['drain_s']} s)")
    print(f"change feed apply: {res['apply_profiles_per_s']:,} profiles/s ({args.profiles:,} profiles, "
          f"{res['apply_s']} s); eviction down to 5000: {res['evict_to_5000_s']} s")
    print(f"CPU: drain {res['drain_cpu_us_per_event']} us per event, apply {res['apply_cpu_us_per_profile']} us per "
          "profile (edge: this process; central: its process)")
    print(f"peak RSS: edge {res['edge_peak_rss_mb']} MB, central {res['central_peak_rss_mb']} MB")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
