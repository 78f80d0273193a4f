"""A campaign published at the central store, to S stores: how long until every store has it, and until the
central knows every store applied it (the central's half of issue 13's benchmark; the edge's apply time is
measured on the edge).

    python bench/campaign_publish.py                      # S = 300, SQLite and PostgreSQL (1 worker each)
    python bench/campaign_publish.py --stores 50 --configs sqlite --rounds 3

Each simulated store long-polls its content channel (`GET /v1/stores/{store}/content/changes`, wait_s=20) on
a kept-alive connection, as the edge does; when a new version of the campaign arrives it pushes an `applied`
report (`POST /v1/stores/{store}/events`). The admin then publishes a new version every few seconds:
"publish→all received" is the time from the publish request to its arrival at the last store, and
"publish→all applied" until `GET /v1/admin/campaigns/{id}` counts every store applied. Stores run as
threads in two processes, sharing the 2 cores with the central (and PostgreSQL). Prints a table, then one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import secrets
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, percentile  # noqa: E402
from fleet import ADMIN, CONFIGS, Link, start_central  # noqa: E402

sys.path.insert(0, str(ROOT))
GENERATORS = 2
WAIT_S = 20
CAMPAIGN = "bench-autumn"


def store_follower(port: int, store: str, token: str, stop: threading.Event, seen: dict[int, float]) -> None:
    """Long-poll the store's content channel; report `applied` for each new campaign version."""
    pull = Link(port, token, WAIT_S + 30.0)
    push = Link(port, token, 30.0)
    cursor = ""
    while not stop.is_set():
        try:
            status, body = pull.request("GET", f"/v1/stores/{store}/content/changes?limit=500&wait_s={WAIT_S}"
                                               + (f"&since={cursor}" if cursor else ""))
        except OSError:
            time.sleep(0.2)
            continue
        if status != 200:
            time.sleep(0.2)
            continue
        arrived = time.time()
        page = json.loads(body)
        cursor = page["next"]
        for change in page["changes"]:
            if change.get("id") == CAMPAIGN and change["op"] == "live":
                version = change["campaign"]["version"]
                if version not in seen:
                    seen[version] = arrived
                    event = {"event_id": str(uuid.uuid4()), "kind": "campaign", "type": "applied", "ts": time.time(),
                             "data": {"id": CAMPAIGN, "version": version}}
                    try:
                        push.request("POST", f"/v1/stores/{store}/events", json.dumps({"events": [event]}).encode())
                    except OSError:
                        pass


def generator(port: int, stores: list[tuple[str, str]], seconds: float, queue: Any) -> None:
    stop = threading.Event()
    seen: dict[str, dict[int, float]] = {store: {} for store, _ in stores}
    threads = [threading.Thread(target=store_follower, args=(port, s, t, stop, seen[s]), daemon=True)
               for s, t in stores]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    queue.put(seen)


def campaign_body(round_: int) -> bytes:
    return json.dumps({"name": "Bench autumn", "targets": {"stores": ["*"]},
                       "content": [{"id": "bench-autumn", "template": "message", "title": f"Round {round_}"}],
                       "rules": [{"id": "bench-autumn-entrance", "when": {"zone": "entrance"},
                                  "show": {"content_id": "bench-autumn"}}]}).encode()


def run_one(config: str, n_stores: int, rounds: int, pg: Any, tmp: Path) -> dict[str, Any]:
    engine, workers = CONFIGS[config]
    db = pg.new_database() if engine == "postgresql" else str(tmp / f"{config}-{n_stores}.db")
    tokens = {f"store-{i:04d}": secrets.token_urlsafe(18) for i in range(n_stores)}
    from edge.broker import free_port

    port = free_port()
    central = start_central(db, port, workers, tokens, tmp / f"central-{config}.log")
    admin = Link(port, ADMIN, 60.0)
    gap_s = 6.0
    seconds = 6.0 + rounds * gap_s + 4.0
    try:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        items = list(tokens.items())
        gens = [ctx.Process(target=generator, args=(port, items[g::GENERATORS], seconds, queue))
                for g in range(GENERATORS)]
        for g in gens:
            g.start()
        time.sleep(6.0)  # every store connected and waiting
        published: dict[int, float] = {}
        applied_all: dict[int, float] = {}
        for r in range(1, rounds + 1):
            status, body = admin.request("PUT", f"/v1/admin/campaigns/{CAMPAIGN}", campaign_body(r))
            version = json.loads(body)["version"]
            t0 = time.time()
            status, _ = admin.request("POST", f"/v1/admin/campaigns/{CAMPAIGN}/publish")
            assert status == 200
            published[version] = t0
            while time.time() - t0 < gap_s:
                status, body = admin.request("GET", f"/v1/admin/campaigns/{CAMPAIGN}")
                detail = json.loads(body)
                if detail["totals"]["applied"] == n_stores and version not in applied_all:
                    applied_all[version] = time.time()
                time.sleep(0.05)
        results: dict[str, dict[int, float]] = {}
        for _ in gens:
            results.update(queue.get(timeout=seconds + 60))
        for g in gens:
            g.join(30)
    finally:
        central.terminate()
        try:
            central.wait(30)
        except Exception:
            central.kill()
    received = []
    for version, t0 in published.items():
        arrivals = [seen.get(version) for seen in results.values()]
        if all(a is not None for a in arrivals):
            received.append(max(arrivals) - t0)  # type: ignore[type-var]
    applied = [applied_all[v] - published[v] for v in published if v in applied_all]
    if engine == "postgresql":
        pg.execute(f"DROP DATABASE {db.rsplit('/', 1)[1]}")
    return {"config": config, "stores": n_stores, "rounds": rounds,
            "received_everywhere": f"{len(received)}/{rounds}", "applied_everywhere": f"{len(applied)}/{rounds}",
            "publish_to_all_received_p50_s": round(percentile(received, 50), 2) if received else None,
            "publish_to_all_received_max_s": round(max(received), 2) if received else None,
            "publish_to_all_applied_p50_s": round(percentile(applied, 50), 2) if applied else None,
            "publish_to_all_applied_max_s": round(max(applied), 2) if applied else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stores", type=int, default=300)
    ap.add_argument("--configs", default="sqlite,pg1", help="of pg1, pg2, sqlite")
    ap.add_argument("--rounds", type=int, default=5, help="publications per configuration")
    args = ap.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    from tests.pgserver import PostgresServer

    pg = None
    if any(CONFIGS[c][0] == "postgresql" for c in configs):
        pg = PostgresServer(durable=True, settings={"max_connections": "400"}).start()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-campaigns-") as tmp:
            for config in configs:
                row = run_one(config, args.stores, args.rounds, pg, Path(tmp))
                rows.append(row)
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    finally:
        if pg is not None:
            pg.stop()
    print(json.dumps({"bench": "campaign_publish", "nproc": os.cpu_count(), "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
