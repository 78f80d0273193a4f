"""QR benchmark: mint rate (signed token + PNG, one core) and `/q/<token>` landing latency under 50 clients.

1. Mint: Signer.mint + PNG (edge.qr.qr_png: 10 px per module) in a loop for --mint-s seconds → codes/s.
2. Landing: the edge service (Mosquitto when on PATH, QR journeys wired as in edge/app.py) on
   127.0.0.1; a separate process (its own GIL) runs --clients threads, each a requests.Session (keep-alive)
   GETting touchpoint landing pages of different products for --duration-s seconds, each client pacing
   itself at --rate requests/s (a shopper's phone loads a page, then reads it; a closed loop with no pause
   would only measure queueing: latency = clients / throughput). Every landing also records a scan event
   through the pipeline, as in production. Figures: requests, errors, achieved req/s, p50/p90/p99/max ms,
   and the edge's CPU per request (all its threads: steadier than latency on a shared machine).

    python bench/qr.py [--mint-s 3] [--clients 50] [--duration-s 10] [--rate 5]

The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _common as C  # noqa: E402

SECRET = "kYM5STCAuxH4-M8Xy0d0dNEO"
BASE_URL = "https://shop.example-store.com"


def bench_mint(seconds: float) -> dict[str, float]:
    from edge.qr import Signer, qr_png

    signer = Signer(SECRET, C.STORE, BASE_URL, 30 * 86400, old_secrets=[])
    n, size = 0, 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        token = signer.mint("touchpoint", f"sku-{n % 1000:04d}")
        size += len(qr_png(signer.url(token)))
        n += 1
    dt = time.perf_counter() - t0
    t1 = time.perf_counter()
    tokens = [signer.mint("touchpoint", f"sku-{i:04d}") for i in range(2000)]
    token_rate = len(tokens) / (time.perf_counter() - t1)
    return {"mint_png_per_s": round(n / dt, 1), "mint_token_only_per_s": round(token_rate),
            "png_bytes_mean": round(size / max(n, 1))}


def _client(base: str, paths: list[str], duration: float, rate: float, seed: int, out: list, errors: list) -> None:
    import requests

    rnd = random.Random(seed)
    s = requests.Session()
    period = 1.0 / rate
    deadline = time.monotonic() + duration
    next_at = time.monotonic() + rnd.random() * period  # spread the clients' first requests
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if next_at > now:
            time.sleep(next_at - now)
        next_at += period
        t = time.perf_counter()
        try:
            r = s.get(base + rnd.choice(paths), timeout=10)
            ok = r.status_code == 200 and (b'data-view="touchpoint"' in r.content or b'data-view="product"' in r.content)
        except Exception:
            ok = False
        (out if ok else errors).append((time.perf_counter() - t) * 1000)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads, by kind (the HTTP workers together)."""
    import os

    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "other")
        kind = "http workers" if name.startswith("waitress-") else name
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def load_process(base: str, paths: list[str], clients: int, duration: float, rate: float, q) -> None:
    latencies: list[float] = []
    errors: list[float] = []
    threads = [threading.Thread(target=_client, args=(base, paths, duration, rate, i, latencies, errors))
               for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q.put((latencies, len(errors), time.monotonic() - t0))


def bench_landing(clients: int, duration: float, rate: float) -> dict[str, float]:
    from edge.broker import MosquittoBroker, find_mosquitto, free_port
    from edge.config import parse_config
    from edge.app import App, tune_gc

    tmp = Path(tempfile.mkdtemp(prefix="bench-qr-"))
    broker = MosquittoBroker(tmp / "mosquitto").start() if find_mosquitto() else None
    data = C.store_config(tmp, broker.port if broker else free_port(), client_id="bench-qr")
    data["qr"] = {"secret": SECRET, "base_url": BASE_URL}
    # Every simulated phone comes from 127.0.0.1: lift the per-client /q/ rate limit, this measures serving.
    data["limits"] = {"public_burst": 1_000_000, "public_rate_per_s": 1_000_000.0}
    data["products"] = [{"sku": f"sku-{i:04d}", "name": f"Product {i}", "zone": "shoes", "price": 10.0 + i}
                        for i in range(50)]
    cfg = parse_config(data, env={})
    svc = App(cfg)
    tune_gc()  # as `instore-edge run` does
    svc.start()
    try:
        signer = svc.signer
        paths = [f"/q/{signer.mint('touchpoint', f'sku-{i:04d}')}" for i in range(50)]
        base = f"http://127.0.0.1:{svc.http_port}"
        import requests

        for p in paths[:5]:  # warm up (templates compiled, connections)
            requests.get(base + p, timeout=10).raise_for_status()
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        proc = ctx.Process(target=load_process, args=(base, paths, clients, duration, rate, q))
        cpu0 = time.process_time()  # this process is the edge: its HTTP threads and the writer recording scans
        threads0 = _thread_cpu()
        proc.start()
        latencies, errors, wall = q.get(timeout=duration + 120)
        time.sleep(0.5)  # the last scans committed
        cpu = time.process_time() - cpu0
        threads1 = _thread_cpu()
        proc.join(30)
    finally:
        svc.stop()
        if broker is not None:
            broker.stop()
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else float("nan")

    return {"landing_clients": clients, "landing_requests": len(latencies), "landing_errors": errors,
            "landing_req_per_s": round(len(latencies) / wall, 1), "landing_p50_ms": pct(0.50),
            "landing_p90_ms": pct(0.90), "landing_p99_ms": pct(0.99),
            "landing_max_ms": round(latencies[-1], 2) if latencies else None,
            "landing_mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
            "landing_edge_cpu_ms_per_request": round(1000 * cpu / max(1, len(latencies)), 3),
            "landing_edge_cpu_ms_by_thread": {k: round(1000 * (v - threads0.get(k, 0.0)) / max(1, len(latencies)), 3)
                                              for k, v in sorted(threads1.items(), key=lambda kv: -kv[1])
                                              if v - threads0.get(k, 0.0) > 0.01}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mint-s", type=float, default=3.0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration-s", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=5.0, help="requests per second per client")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    mint = bench_mint(args.mint_s)
    print(f"mint: {mint['mint_png_per_s']} codes/s (signed token + PNG, one core; target >= 200); "
          f"token alone {mint['mint_token_only_per_s']}/s; PNG {mint['png_bytes_mean']} bytes")
    landing = bench_landing(args.clients, args.duration_s, args.rate)
    print(f"/q/<token>: {landing['landing_clients']} clients x {args.rate}/s for {args.duration_s}s: "
          f"{landing['landing_requests']} ok, {landing['landing_errors']} errors, {landing['landing_req_per_s']} req/s; "
          f"p50 {landing['landing_p50_ms']} ms, p99 {landing['landing_p99_ms']} ms (target <= 20), "
          f"max {landing['landing_max_ms']} ms; edge CPU {landing['landing_edge_cpu_ms_per_request']} ms per request "
          "(serving the page and recording the scan)")
    figures = {**mint, **landing, "loadavg_1m": round(C.loadavg(), 2), "targets": {"mint_png_per_s": 200, "landing_p99_ms": 20},
               "ok": mint["mint_png_per_s"] >= 200 and landing["landing_p99_ms"] <= 20 and landing["landing_errors"] == 0}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
