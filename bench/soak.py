"""Soak and fault figures: a compressed busy store with the broker, the central and the edge knocked over.

    python bench/soak.py [--minutes 6] [--speed 10] [--shoppers 300] [--rate 2]

A store of 10 zones x 5 native gateways (50), screens, kiosks and a rule; Mosquitto (MosquittoBroker); the
reference central store in its own process (`python -m sync.central.cli`, restartable on the same db and
port); the edge as `python -m edge.cli run` (killed with SIGKILL twice); the shopper simulator in-process.
At speed 10 the default 6 minutes of wall time are one hour of store time.

Faults (fractions of the run): broker restart at 25 %, edge kill -9 at 35 % and 60 %, central killed at
45 % and back after --central-down seconds. RSS (VmRSS of the current edge process) and the db size
(+ -wal) are sampled every few seconds. At the end the simulator stops; the script waits until every
published message is an event in the edge db (per kind: sightings, window, kiosk, qr, pos), the outbox
is empty and the central holds every edge event, then prints the figures and, last, one JSON line.
Exit status 1 when events were lost or duplicated at the central.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
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

import requests  # noqa: E402

from edge.toml_writer import write_toml
from edge.broker import MosquittoBroker, free_port, wait_for_port  # noqa: E402
from edge.config import parse_config  # noqa: E402
from edge.simulate import Simulator  # noqa: E402

STORE = "soakstore"
STORE_TOKEN = "Z3k9-VqTq2yPe7hLwR0xBnMc"
CENTRAL_ADMIN = "soak-central-admin-0123456789"
EDGE_ADMIN = "h4JtQ_mv8WcXe2RzKp6Ydl0s"
TOUCH_KINDS = ("window", "kiosk", "qr", "pos")
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------------
# Config


def store_config(tmp: Path, broker_port: int, central_url: str) -> dict[str, Any]:
    names = ["Entrance", "Women", "Men", "Kids", "Shoes", "Sport", "Home", "Fitting rooms", "Checkout",
             "Click and collect pickup"]
    ids = ["entrance", "women", "men", "kids", "shoes", "sport", "home", "fitting", "checkout", "pickup"]
    zones = [{"id": z, "name": n, "exit_after_s": 10.0} for z, n in zip(ids, names)]
    gateways = [{"id": f"gw-{z}-{i}", "zone": z, "format": "native"} for z in ids for i in range(1, 6)]
    screens = [{"id": "window-1", "zone": "entrance", "playlist": ["autumn", "news"]}]
    screens += [{"id": f"{z}-1", "zone": z, "playlist": ["autumn", "news"]} for z in ids]
    kiosks = [{"id": f"kiosk-{z}", "zone": z} for z in ("women", "men", "shoes", "sport")]
    rules = [{"id": "entrance-welcome", "priority": 10, "ttl_s": 2.0,
              "when": {"zone": "entrance", "event": "zone_enter"},
              "show": {"content_id": "welcome", "template": "message", "data": {"title": "Welcome!"}}},
             {"id": "shoes-promo", "priority": 5, "ttl_s": 5.0,
              "when": {"zone": "shoes", "event": "zone_enter"},
              "show": {"content_id": "news", "template": "message", "data": {"title": "New shoes"}}}]
    return {
        "store": {"id": STORE, "name": "Soak store", "timezone": "Europe/Rome"},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": "soak-edge"},
        "db": {"path": str(tmp / "edge.db")},
        "http": {"host": "127.0.0.1", "port": 0, "tokens": {"admin": EDGE_ADMIN}},
        "central": {"url": central_url, "token": STORE_TOKEN},
        "zones": zones,
        "gateways": gateways,
        "screens": screens,
        "kiosks": kiosks,
        "content": [{"id": "autumn", "title": "Autumn collection"}, {"id": "news", "title": "New arrivals"},
                    {"id": "welcome", "title": "Welcome!"}],
        "rules": rules,
    }


# ---------------------------------------------------------------------------------------------------
# Processes


class Proc:
    """A restartable subprocess with its output appended to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name, self.argv, self.log_path = name, argv, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


def vmrss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30, isolation_level=None)


def edge_counts(path: Path) -> tuple[dict[str, int], int, int]:
    """(events by kind, outbox rows, dead letters)."""
    with ro(path) as conn:
        kinds = dict(conn.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
        outbox = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        dead = conn.execute("SELECT count(*) FROM deadletters").fetchone()[0]
    return kinds, outbox, dead


def outbox_count(path: Path) -> int | None:
    try:
        with ro(path) as conn:
            return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    except sqlite3.Error:
        return None


def central_ids(url: str) -> list[str]:
    ids: list[str] = []
    after = 0
    while True:
        r = requests.get(f"{url}/v1/admin/events", params={"store": STORE, "limit": 5000, "after": after},
                         headers={"Authorization": f"Bearer {CENTRAL_ADMIN}"}, timeout=30)
        r.raise_for_status()
        page = r.json()
        ids += [e["event_id"] for e in page["events"]]
        after = page["next_after"]
        if not page["more"]:
            return ids


def edge_ids(path: Path) -> list[str]:
    with ro(path) as conn:
        return [r[0] for r in conn.execute("SELECT event_id FROM events ORDER BY seq")]


# ---------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=6.0, help="wall minutes of load (default 6)")
    ap.add_argument("--speed", type=float, default=10.0, help="store time compression (default 10)")
    ap.add_argument("--shoppers", type=int, default=300)
    ap.add_argument("--rate", type=float, default=2.0, help="advertisements per second per phone")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--central-down", type=float, default=30.0, help="wall seconds the central is down")
    ap.add_argument("--sample", type=float, default=3.0, help="seconds between RSS/disk samples")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    duration = args.minutes * 60
    broker = MosquittoBroker(tmp / "mosquitto").start()
    central_port = free_port()
    central_url = f"http://127.0.0.1:{central_port}"
    central = Proc("central", [sys.executable, "-m", "sync.central.cli", "--db", str(tmp / "central.db"),
                               "--port", str(central_port), "--admin-token", CENTRAL_ADMIN,
                               "--store-token", f"{STORE}={STORE_TOKEN}", "--demo-data"], tmp / "central.log")
    data = store_config(tmp, broker.port, central_url)
    toml = write_toml(tmp / "store.toml", data)
    db_path = Path(data["db"]["path"])
    edge = Proc("edge", [sys.executable, "-m", "edge.cli", "run", "-c", str(toml)], tmp / "edge.log")
    cfg = parse_config(data, env={})
    log(f"workdir {tmp}; broker :{broker.port}, central :{central_port}; {len(data['gateways'])} gateways, "
        f"{len(data['zones'])} zones; {args.shoppers} shoppers at speed {args.speed} for {duration:.0f}s")

    samples: list[tuple[float, int, int, int]] = []  # (t since load start, pid, rss kB, db bytes)
    faults: list[str] = []
    figures: dict[str, Any] = {}
    sim_thread = None
    stop = threading.Event()
    rc = 1
    try:
        central.start()
        wait_for_port(central_port, timeout=30)
        edge.start()
        deadline = time.monotonic() + 60
        while not db_path.exists() or outbox_count(db_path) is None:
            if not edge.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the edge did not start; log tail:\n{edge.tail()}")
            time.sleep(0.2)
        time.sleep(2.0)  # let it subscribe

        sim = Simulator(cfg, shoppers=args.shoppers, rate=args.rate, seed=args.seed, speed=args.speed)
        sim_result: dict[str, Any] = {}

        def run_sim() -> None:
            try:
                sim_result["stats"] = sim.run(duration, stop)
            except BaseException as exc:  # noqa: BLE001
                sim_result["error"] = f"{type(exc).__name__}: {exc}"

        sim_thread = threading.Thread(target=run_sim, name="simulator", daemon=True)
        load_start = time.monotonic()
        sim_thread.start()

        schedule = [(0.25, "broker"), (0.35, "edge"), (0.45, "central_down"), (0.60, "edge")]
        central_back_at: float | None = None
        outbox_before_outage = 0
        drain_s: float | None = None
        next_sample = 0.0

        def elapsed() -> float:
            return time.monotonic() - load_start

        while sim_thread.is_alive():
            t = elapsed()
            if schedule and t >= schedule[0][0] * duration:
                _, what = schedule.pop(0)
                if what == "broker":
                    log("fault: restarting the broker")
                    broker.restart()
                    faults.append(f"broker restart at {t:.0f}s")
                elif what == "edge":
                    log(f"fault: kill -9 the edge (pid {edge.proc.pid})")
                    edge.kill9()
                    time.sleep(2.0)
                    edge.start()
                    faults.append(f"edge kill -9 at {t:.0f}s")
                elif what == "central_down":
                    outbox_before_outage = outbox_count(db_path) or 0
                    log(f"fault: kill the central (outbox {outbox_before_outage}); back in {args.central_down:.0f}s")
                    central.kill9()
                    faults.append(f"central killed at {t:.0f}s for {args.central_down:.0f}s")
                    schedule.insert(0, (t / duration + args.central_down / duration, "central_up"))
                elif what == "central_up":
                    central.start()
                    wait_for_port(central_port, timeout=30)
                    central_back_at = time.monotonic()
                    log(f"central back (outbox {outbox_count(db_path)})")
            if central_back_at is not None and drain_s is None:
                n = outbox_count(db_path)
                if n is not None and n <= max(outbox_before_outage, 1000):
                    drain_s = time.monotonic() - central_back_at
                    log(f"outbox drained to {n} in {drain_s:.1f}s after the central came back")
            if not edge.alive():
                raise RuntimeError(f"the edge died on its own; log tail:\n{edge.tail()}")
            if t >= next_sample:
                rss = vmrss_kb(edge.proc.pid)
                if rss is not None:
                    samples.append((t, edge.proc.pid, rss, db_bytes(db_path)))
                if len(samples) % 10 == 1:
                    log(f"rss {rss / 1024 if rss else 0:.1f} MB, db {db_bytes(db_path) / 1e6:.1f} MB, "
                        f"outbox {outbox_count(db_path)}, sim {dict(sim.stats)}")
                next_sample += args.sample
            time.sleep(0.25)
        load_s = elapsed()
        if "error" in sim_result:
            raise RuntimeError(f"simulator: {sim_result['error']}")
        stats = sim_result["stats"]
        log(sim.summary())

        # --- drain: every published message an event at the edge ---
        expected = {"beacon": stats["sightings"], **{k: stats[k] for k in TOUCH_KINDS}}
        t_drain = time.monotonic()
        while True:
            kinds, outbox, dead = edge_counts(db_path)
            recorded = {k: kinds.get(k, 0) for k in expected}
            if all(recorded[k] >= expected[k] for k in expected) and outbox == 0:
                break
            if time.monotonic() - t_drain > 300:
                log(f"gave up waiting: recorded {recorded} of {expected}, outbox {outbox}")
                break
            time.sleep(1.0)
        edge_drain_s = time.monotonic() - t_drain
        if drain_s is None and central_back_at is not None:
            drain_s = time.monotonic() - central_back_at
        kinds, outbox, dead = edge_counts(db_path)
        recorded = {k: kinds.get(k, 0) for k in expected}
        log(f"edge drained in {edge_drain_s:.1f}s after the simulator stopped; all kinds: {kinds}")

        # --- the central has every edge event, each once ---
        mine = edge_ids(db_path)
        t_c = time.monotonic()
        while True:
            theirs = central_ids(central_url)
            missing = set(mine) - set(theirs)
            # presence keeps ending visits after the load stops: compare with a newer edge snapshot
            unknown = sorted(set(theirs) - set(edge_ids(db_path)))
            if not missing or time.monotonic() - t_c > 120:
                break
            time.sleep(2.0)

        published = sum(expected.values())
        recorded_total = sum(recorded.values())
        lost = sum(max(0, expected[k] - recorded[k]) for k in expected)
        extra = sum(max(0, recorded[k] - expected[k]) for k in expected)
        dup_central = len(theirs) - len(set(theirs))
        warm = [s for s in samples if s[0] >= 0.15 * load_s and s[1] == samples[-1][1]] or samples
        # RSS after warm-up: the first samples of the last edge process, once it has been up 10+ s
        last_pid = samples[-1][1]
        last_proc = [s for s in samples if s[1] == last_pid]
        warm_proc = [s for s in last_proc if s[0] >= last_proc[0][0] + 10] or last_proc
        rss_warm = warm_proc[0][2]
        first_proc = [s for s in samples if s[1] == samples[0][1]]
        rss_first_warm = ([s for s in first_proc if s[0] >= 0.15 * load_s] or first_proc)[0][2]
        mid = min(samples, key=lambda s: abs(s[0] - load_s / 2))
        rss_end = samples[-1][2]
        rss_max = max(s[2] for s in samples)
        store_hours = load_s * args.speed / 3600
        d0 = ([s for s in samples if s[0] >= 0.15 * load_s] or samples)[0]
        growth_mb_h = (samples[-1][3] - d0[3]) / 1e6 / ((samples[-1][0] - d0[0]) * args.speed / 3600)
        flat = rss_end <= 1.2 * rss_warm
        del warm
        figures = {
            "wall_s": round(load_s, 1), "store_hours": round(store_hours, 2), "speed": args.speed,
            "shoppers": args.shoppers, "journeys": len(sim.crowd.started), "gateways": len(data["gateways"]),
            "published_messages": stats["messages"], "published_events": published, "by_kind_published": expected,
            "recorded_events": recorded_total, "by_kind_recorded": recorded, "lost": lost,
            "extra_at_edge": extra, "deadletters": dead,
            "edge_events_total": len(mine), "central_events": len(theirs), "missing_at_central": len(missing),
            "central_only": len(unknown), "central_only_examples": unknown[:3],
            "duplicates_at_central": dup_central,
            "rss_mb": {"start": round(samples[0][2] / 1024, 1), "after_warmup": round(rss_first_warm / 1024, 1),
                       "middle": round(mid[2] / 1024, 1), "end": round(rss_end / 1024, 1),
                       "max": round(rss_max / 1024, 1), "last_process_after_warmup": round(rss_warm / 1024, 1)},
            "rss_flat": flat,
            "db_mb_end": round(samples[-1][3] / 1e6, 1), "disk_growth_mb_per_store_hour": round(growth_mb_h, 1),
            "outbox_drain_after_central_back_s": None if drain_s is None else round(drain_s, 1),
            "edge_drain_after_load_s": round(edge_drain_s, 1), "faults": faults,
        }
        print()
        print(f"events published  {published:>10,}  ({stats['messages']:,} MQTT messages; {expected})")
        print(f"events recorded   {recorded_total:>10,}  ({recorded})")
        print(f"lost              {lost:>10,}  (must be 0)")
        print(f"dead letters      {dead:>10,}")
        print(f"at the central    {len(theirs):>10,}  of {len(mine):,} edge events; missing {len(missing)}, "
              f"duplicates {dup_central} (must be 0); "
              f"{len(unknown)} at the central only (e.g. {unknown[:3]})")
        r = figures["rss_mb"]
        print(f"RSS (MB)          start {r['start']}, after warm-up {r['after_warmup']}, middle {r['middle']}, "
              f"end {r['end']}, max {r['max']}; last process after warm-up {r['last_process_after_warmup']} "
              f"-> {'flat' if flat else 'NOT flat'} (end within +20%)")
        print(f"disk              {figures['db_mb_end']} MB at the end, {growth_mb_h:.1f} MB per store hour")
        print(f"outbox drain      {figures['outbox_drain_after_central_back_s']} s after the central came back "
              f"(central down {args.central_down:.0f}s)")
        print(f"faults            {'; '.join(faults)}")
        print(json.dumps(figures, separators=(",", ":")))
        rc = 0 if lost == 0 and dup_central == 0 and not missing else 1
    except Exception as exc:  # noqa: BLE001
        log(f"soak failed: {exc}")
        print(json.dumps({"error": str(exc), **figures}))
        rc = 1
    finally:
        stop.set()
        if sim_thread is not None:
            sim_thread.join(20)
        edge.stop()
        central.stop()
        broker.stop()
        if args.keep or rc:
            log(f"kept {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
