"""The central store at chain scale: S simulated stores push and pull at once, over HTTP, with the real
sync protocol, against the central on PostgreSQL (1 and 2 worker processes) and on SQLite.

    python bench/fleet.py                 # short: S = 50, 8 s per configuration (bench/run.py runs this)
    python bench/fleet.py --full          # S = 50 and 300, 40 s per configuration
    python bench/fleet.py --stores 300 --configs pg2 --seconds 20 --rate 30000
    python bench/fleet.py --stores 300 --configs pg2 --rate 0   # no pushes: what a change for every store costs

"events/s" is every event offered during the run (each store pushes what it made until the end, then
stops) over the time from the start to the last store's last answer: the offered rate when the central
keeps up, less when it falls behind (to show more than 20,000 a second, offer more: `--rate`). Push p50
and p99 are the steady state: over the pushes begun after the first WARMUP_S (10 s; a third of a shorter
run) and before the end. Apart: "warmup p99", those first seconds, when every store starts in the same
second and pushes every second until the central's first pacing answers reach it (what a central restart
under a full fleet looks like), and "drain p99", the last push of every store, all at the same moment
when the run ends (a burst no fleet makes). Where a steady-state push's time went: "app" (the central's
`Server-Timing` answer header: from the request's start in the app to its answer), "db" (of that, in the
storage: a connection, the statement, the commit) and "outside" (the push's time less `app`: waiting for a
worker thread and a CPU in the central, the network, the client); "gen lag" is how late the generator's
own threads wake from a 10 ms sleep (what a CPU-starved client adds to every figure it measures); "push
every s" the interval the central's answers asked for (median; the longest in the JSON): events reach the
central up to that late.
`--trace FILE` writes every push (sent at, seconds, events, app, db) for a closer look.

Each simulated store has its own token and its own event stream and behaves like an edge: events arrive
at `rate / S` per second; every second (sooner when behind), or at the interval the central asks for when
more stores push than its `--push-budget` (default 100 pushes a second: S = 300 pushes every 3 s), it
pushes what accumulated, at most 500 per push, with an Idempotency-Key, over one kept-alive connection;
meanwhile it follows the change feed as a stream (`stream=1&wait_s=20`: one request open 20 s, a line per
page) on a second connection. Every second the admin changes a profile that goes to every store;
"change→all" is the time from that change's request to its arrival at the last store.

Stores run as threads in GENERATORS separate processes (so the central never shares a GIL with them);
on a 2-core machine they compete with the central and PostgreSQL for the CPU, so the table also shows
how many cores each side used. PostgreSQL runs here with fsync on and synchronous_commit on (an
acknowledged event survives a power cut). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Link, Noise, _tree_cpu, _TCK, loadavg, percentile, proc_status_kb  # noqa: E402

from edge.broker import free_port, wait_for_port  # noqa: E402

ADMIN = "bench-admin-" + secrets.token_hex(8)
GENERATORS = 2
MAX_PUSH = 500
PUSH_EVERY_S = 1.0
WARMUP_S = 10.0  # push latencies of the first seconds are reported apart (module docstring)
WAIT_S = 20
# sync.protocol's PUSH_EVERY_HEADER and MAX_PUSH_EVERY_S (bench/sync.py shadows the sync package here)
PUSH_EVERY_HEADER = "Instore-Push-Every-S"
MAX_PUSH_EVERY_S = 60.0
PUSH_SPREAD = 0.1  # sync.push's: the waits between pushes as an edge spreads them (next_push_at)
CONFIGS = {"pg1": ("postgresql", 1), "pg2": ("postgresql", 2), "sqlite": ("sqlite", 1)}


# --- one simulated store (threads in a generator process) ----------------------------------------------




def event_text(store: str, n: int, now: float, rnd: random.Random) -> str:
    """One edge event as it goes on the wire: a zone entry by a device, now and then by a known shopper."""
    zone = ("entrance", "shoes", "denim", "checkout")[n % 4]
    customer = f',"customer":"C-{rnd.randrange(5000):05d}"' if n % 50 == 0 else ""
    return (f'{{"event_id":"{store}-{n}","seq":{n},"kind":"presence","type":"zone_enter","ts":{now:.3f},'
            f'"received_at":{now:.3f},"source":"gw-{zone}","zone":"{zone}","subject":"device:{rnd.randrange(10**6)}"'
            f'{customer},"data":{{"rssi":{-40 - n % 50},"dwell_s":{n % 300}}}}}')


def store_pusher(port: int, store: str, token: str, rate: float, start: float, end: float,
                 out: dict[str, Any]) -> None:
    link = Link(port, token, 60.0)
    rnd = random.Random(store)
    sent = accepted = rejected = errors = 0
    latencies: list[float] = []
    warmup: list[float] = []  # pushes begun in the first WARMUP_S (see the module docstring)
    drain: list[float] = []  # the last push, every store's at the same moment
    intervals: list[float] = []  # the push interval each steady-state answer asked for (seconds)
    inside: list[tuple[float, float]] = []  # steady-state pushes: (app, db) seconds from the answer's Server-Timing
    trace: list[tuple[str, float, float, int, float, float]] = []  # every push: key, sent at, seconds, events, app, db
    next_push = start + rnd.random() * PUSH_EVERY_S
    last_asked: str | None = None
    path = f"/v1/stores/{store}/events"
    while rate > 0:
        now = time.time()
        if now >= end and int((end - start) * rate) <= sent:
            break
        if now >= end:  # the drain: what was made until the end goes now, so every offered event is counted
            now, next_push = end, 0.0
        pending = int((now - start) * rate) - sent
        if pending <= 0 or (now < next_push and pending < MAX_PUSH):
            time.sleep(max(0.0, min(next_push, end) - now) if pending < MAX_PUSH else 0)
            continue
        n = min(pending, MAX_PUSH)
        body = ('{"events":[' + ",".join(event_text(store, sent + i, now, rnd) for i in range(n)) + "]}").encode()
        key = f"{store}:{sent}-{sent + n - 1}"
        t0, sent_at = time.perf_counter(), time.time()
        try:
            status, answer = link.request("POST", path, body, {"Idempotency-Key": key})
        except (OSError, http.client.HTTPException):
            errors += 1
            time.sleep(0.2)
            continue
        took = time.perf_counter() - t0
        steady = start + min(WARMUP_S, (end - start) / 3) <= now < end
        (drain if now >= end else latencies if steady else warmup).append(took)
        app_s, db_s = server_timing(link.last_headers)
        if steady:
            inside.append((app_s, db_s))
        trace.append((key, sent_at, took, n, app_s, db_s))
        if status != 200:
            errors += 1
            time.sleep(0.2)
            continue
        result = json.loads(answer)
        accepted += len(result["accepted"]) + len(result["duplicates"])
        rejected += len(result["rejected"])
        sent += n
        asked = link.last_headers.get(PUSH_EVERY_HEADER) if link.last_headers is not None else None
        if steady:
            intervals.append(float(asked) if asked else PUSH_EVERY_S)
        every = max(PUSH_EVERY_S, min(float(asked), MAX_PUSH_EVERY_S) if asked else 0.0)
        # as an edge does (sync.push.next_push_at): from the push's start, spread, a new place in a new interval
        spread = 1 + rnd.random() if asked != last_asked else rnd.uniform(1, 1 + PUSH_SPREAD)
        next_push, last_asked = sent_at + every * spread, asked
    out.update(sent=sent, accepted=accepted, rejected=rejected, errors=errors, latencies=latencies, warmup=warmup,
               drain=drain, trace=trace, inside=inside, intervals=intervals,
               drained_at=time.time())


def server_timing(headers: http.client.HTTPMessage | None) -> tuple[float, float]:
    """(app, db) seconds from a push answer's Server-Timing (NaN when absent: an older central)."""
    found = {}
    for part in (headers.get("Server-Timing", "") if headers is not None else "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        try:
            found[name] = float(dur) / 1000
        except ValueError:
            continue
    return found.get("app", float("nan")), found.get("db", float("nan"))


def lag_watch(start: float, end: float, lags: list[float]) -> None:
    """How late this generator process wakes up (a 10 ms sleep, measured over the steady state): what a
    CPU-starved client adds to the push latencies it measures."""
    while time.time() < end:
        t0 = time.perf_counter()
        time.sleep(0.01)
        if time.time() >= start + min(WARMUP_S, (end - start) / 3):
            lags.append(time.perf_counter() - t0 - 0.01)


def store_puller(port: int, store: str, token: str, end: float, seen: dict[str, float], stop: threading.Event) -> None:
    """Follows the change feed as the edge does: a stream (one request open WAIT_S, a line per page)."""
    link = Link(port, token, WAIT_S + 30.0)
    cursor = ""
    while not stop.is_set() and time.time() < end + 3:
        try:
            for line in link.lines(f"/v1/profiles/changes?limit=500&wait_s={WAIT_S}&stream=1"
                                   + (f"&since={cursor}" if cursor else "")):
                arrived = time.time()
                page = json.loads(line)
                cursor = page["next"]
                for change in page["changes"]:
                    cid = change.get("customer_id") or ""
                    if cid.startswith("bench-") and cid not in seen:
                        seen[cid] = arrived
                if stop.is_set():
                    break
        except (OSError, http.client.HTTPException):
            time.sleep(0.2)


def generator(port: int, stores: list[tuple[str, str]], rate: float, start: float, end: float, queue: Any) -> None:
    """A process running some of the stores; puts each store's figures on `queue` when done."""
    stop = threading.Event()
    results: list[dict[str, Any]] = []
    threads = []
    for store, token in stores:
        out: dict[str, Any] = {"store": store}
        seen: dict[str, float] = {}
        out["seen"] = seen
        results.append(out)
        threads.append(threading.Thread(target=store_pusher, args=(port, store, token, rate, start, end, out),
                                        daemon=True))
        threads.append(threading.Thread(target=store_puller, args=(port, store, token, end, seen, stop),
                                        daemon=True))
    lags: list[float] = []
    watch = threading.Thread(target=lag_watch, args=(start, end, lags), daemon=True)
    for t in [*threads, watch]:
        t.start()
    for t in threads[::2]:
        t.join()
    time.sleep(max(0.0, end - time.time()) + 2.5)  # the last changes reach the pullers
    stop.set()
    results[0]["lags"] = lags
    queue.put(results)


# --- the central under test -------------------------------------------------------------------------------


def start_central(db: str, port: int, workers: int, tokens: dict[str, str], log: Path,
                  pool_size: int | None = None, push_budget: float | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "INSTORE_CENTRAL_ADMIN_TOKEN": ADMIN,
           "INSTORE_CENTRAL_STORE_TOKENS": ",".join(f"{s}={t}" for s, t in tokens.items())}
    argv = [sys.executable, "-m", "sync.central.cli", "--db", db, "--port", str(port), "--workers", str(workers)]
    if pool_size:
        argv += ["--pool-size", str(pool_size)]
    if push_budget is not None:
        argv += ["--push-budget", str(push_budget)]
    with open(log, "ab") as f:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=f, stderr=f, stdin=subprocess.DEVNULL)
    wait_for_port(port, 60)
    return proc


def admin_changes(port: int, end: float, made: dict[str, float]) -> None:
    """One profile change a second, for every store (no home store): when each was asked for."""
    link = Link(port, ADMIN, 30.0)
    i = 0
    while time.time() < end - 3:
        cid = f"bench-{i}"
        t0 = time.time()
        status, body = link.request("POST", "/v1/admin/profiles",
                                    json.dumps({"customer_id": cid, "first_name": "Bench", "tier": "gold"}).encode())
        if status == 200:
            made[cid] = t0
        i += 1
        time.sleep(max(0.0, 1.0 - (time.time() - t0)))


def rss_mb(root: int) -> float:
    return sum(proc_status_kb(pid, "VmRSS") or 0 for pid in _tree_cpu(root)) / 1024


def db_bytes(db: str) -> int:
    if db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db) as conn:
            return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
    return sum(p.stat().st_size for p in Path(db).parent.glob(Path(db).name + "*"))


def run_one(config: str, n_stores: int, seconds: float, rate: float, pg: Any, tmp: Path,
            profile: str | None = None, pool_size: int | None = None,
            push_budget: float | None = None, trace: str | None = None) -> dict[str, Any]:
    engine, workers = CONFIGS[config]
    db = pg.new_database() if engine == "postgresql" else str(tmp / f"{config}-{n_stores}.db")
    tokens = {f"store-{i:04d}": secrets.token_urlsafe(18) for i in range(n_stores)}
    port = free_port()
    central = start_central(db, port, workers, tokens, tmp / f"central-{config}-{n_stores}.log", pool_size,
                            push_budget)
    size0 = db_bytes(db)
    spy = None
    try:
        time.sleep(1.0)  # workers up
        if profile:
            spy = subprocess.Popen(["py-spy", "record", "--format", "raw", "--subprocesses", "--gil", "-r", "25",
                                    "-d", str(int(seconds) + 3), "-o", profile, "--pid", str(central.pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        start = time.time() + 3.0
        end = start + seconds
        items = list(tokens.items())
        gens = [ctx.Process(target=generator, args=(port, items[g::GENERATORS], rate / n_stores, start, end, queue))
                for g in range(GENERATORS)]
        for g in gens:
            g.start()
        made: dict[str, float] = {}
        while time.time() < start:
            time.sleep(0.01)
        cpu0 = {"central": _tree_cpu(central.pid), "postgres": _tree_cpu(pg.proc.pid) if pg else {},
                "generator": {pid: v for g in gens for pid, v in _tree_cpu(g.pid).items()}}
        wall0 = time.monotonic()
        noise = Noise()  # CPU taken by processes outside this benchmark (a shared machine)
        changer = threading.Thread(target=admin_changes, args=(port, end, made), daemon=True)
        changer.start()
        time.sleep(max(0.0, end - time.time()))
        elapsed = time.monotonic() - wall0
        others = noise.cores()
        cpu = {"central": _tree_cpu(central.pid), "postgres": _tree_cpu(pg.proc.pid) if pg else {},
               "generator": {pid: v for g in gens for pid, v in _tree_cpu(g.pid).items()}}
        rss = rss_mb(central.pid)
        results = [r for _ in gens for r in queue.get(timeout=seconds + 120)]
        for g in gens:
            g.join(30)
        changer.join(10)
    finally:
        central.send_signal(signal.SIGTERM)
        try:
            central.wait(30)
        except subprocess.TimeoutExpired:
            central.kill()
    cores = {side: sum(v - cpu0[side].get(pid, 0) for pid, v in cpu[side].items()) / _TCK / elapsed
             for side in cpu}
    latencies = [x for r in results for x in r["latencies"]]
    warmup = [x for r in results for x in r["warmup"]]
    drain = [x for r in results for x in r["drain"]]
    accepted = sum(r["accepted"] for r in results)
    inside = [x for r in results for x in r["inside"]]
    app = [a for a, _ in inside if a == a]  # NaN: no Server-Timing
    in_db = [d for _, d in inside if d == d]
    outside = [took - a for took, (a, _) in zip(latencies, inside) if a == a]
    lags = [x for r in results for x in r.get("lags", ())]
    intervals = [x for r in results for x in r["intervals"]]
    def ms(xs: list[float], q: float) -> float | None:
        return round(percentile(xs, q) * 1000, 1) if xs else None

    spread = []
    for cid, t0 in made.items():
        arrivals = [r["seen"].get(cid) for r in results]
        if all(a is not None for a in arrivals):
            spread.append(max(arrivals) - t0)  # type: ignore[type-var]
    if trace:
        with open(trace, "w") as f:
            f.write(json.dumps({"start": start, "end": end, "changes": made}) + "\n")
            for r in results:
                for key, sent_at, took, n, app_s, db_s in r["trace"]:
                    f.write(json.dumps({"key": key, "sent": sent_at, "took": took, "n": n, "app": app_s,
                                        "db": db_s}) + "\n")
    if spy is not None:
        spy.wait(60)
    size = db_bytes(db) - size0
    if engine == "postgresql":
        pg.execute(f"DROP DATABASE {db.rsplit('/', 1)[1]}")
    return {
        "config": config, "engine": engine, "workers": workers, "stores": n_stores, "seconds": seconds,
        "offered_events_s": rate, "events_s": round(accepted / (max(r["drained_at"] for r in results) - start)),
        "push_p50_ms": ms(latencies, 50),
        "push_p99_ms": ms(latencies, 99),
        "pushes": len(latencies) + len(warmup) + len(drain),
        # the steady-state pushes split: in the central's app (Server-Timing `app`), of it in the database (`db`),
        # and outside the app (waiting for a worker thread and a CPU, the network, the client); and how late the
        # generator's own threads wake (what a starved client adds)
        "app_p50_ms": ms(app, 50), "app_p99_ms": ms(app, 99), "db_p99_ms": ms(in_db, 99),
        "outside_p50_ms": ms(outside, 50), "outside_p99_ms": ms(outside, 99),
        "generator_lag_p99_ms": ms(lags, 99), "generator_lag_max_ms": ms(lags, 100),
        # the push interval the central asked for (pacing), median and longest: how late events may reach it
        "push_every_p50_s": percentile(intervals, 50) if intervals else None,
        "push_every_max_s": max(intervals) if intervals else None,
        "warmup_p99_ms": ms(warmup, 99),
        "drain_p99_ms": ms(drain, 99),
        "errors": sum(r["errors"] for r in results),
        "rejected": sum(r["rejected"] for r in results),
        "change_to_all_p50_s": round(percentile(spread, 50), 2) if spread else None,
        "change_to_all_max_s": round(max(spread), 2) if spread else None,
        "changes_everywhere": f"{len(spread)}/{len(made)}",
        "central_rss_mb": round(rss), "db_mb_per_million_events": round(size / accepted, 1) if accepted else None,
        "cores_central": round(cores["central"], 2), "cores_postgres": round(cores["postgres"], 2),
        "cores_generator": round(cores["generator"], 2), "cores_others": round(others, 2), "loadavg": loadavg(),
        # with --rate 0 (nothing pushed) the central's work is the changes reaching every store: its cost per store
        **({"central_ms_per_store_change": round(cores["central"] / n_stores / (len(made) / elapsed) * 1000, 3),
            "postgres_ms_per_store_change": round(cores["postgres"] / n_stores / (len(made) / elapsed) * 1000, 3)}
           if not rate and made else {}),
    }


COLUMNS = [("config", "config"), ("stores", "S"), ("events_s", "events/s"), ("push_p50_ms", "p50 ms"),
           ("push_p99_ms", "p99 ms"), ("app_p99_ms", "app p99"), ("db_p99_ms", "db p99"),
           ("outside_p99_ms", "outside p99"), ("generator_lag_p99_ms", "gen lag p99"),
           ("push_every_p50_s", "push every s"), ("warmup_p99_ms", "warm-up p99 ms"), ("change_to_all_max_s", "change→all max s"),
           ("central_rss_mb", "RSS MB"),
           ("db_mb_per_million_events", "DB MB/1M ev"), ("cores_central", "cpu central"),
           ("cores_postgres", "cpu pg"), ("cores_generator", "cpu gen"), ("cores_others", "cpu others"),
           ("errors", "errors")]


def table(rows: list[dict[str, Any]]) -> str:
    head = [title for _, title in COLUMNS]
    body = [[str(r.get(key)) for key, _ in COLUMNS] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(head)] + [line(b) for b in body])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="S = 50 and 300, 30 s per configuration")
    ap.add_argument("--stores", default=None, help="comma-separated store counts (default 50; --full: 50,300)")
    ap.add_argument("--configs", default="pg1,pg2,sqlite", help="of pg1, pg2, sqlite (default all three)")
    ap.add_argument("--seconds", type=float, default=None, help="per configuration (default 8; --full: 40)")
    ap.add_argument("--rate", type=float, default=20000.0, help="events/s offered by all stores together")
    ap.add_argument("--pool-size", type=int, default=None,
                    help="PostgreSQL connections per worker (the central's --pool-size; default: the central's)")
    ap.add_argument("--push-budget", type=float, default=None,
                    help="the central's --push-budget (pushes a second from the fleet; 0: every store every second)")
    ap.add_argument("--trace", metavar="FILE", help="every push (key, sent at, seconds, events) as JSON lines to "
                    "FILE.<config>-<S>, after a first line with the run's start, end and changes")
    ap.add_argument("--profile", metavar="FILE", help="py-spy the central (raw folded stacks to FILE.<config>-<S>)")
    args = ap.parse_args(argv)
    counts = [int(x) for x in (args.stores or ("50,300" if args.full else "50")).split(",")]
    seconds = args.seconds or (40.0 if args.full else 8.0)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    from tests.pgserver import PostgresServer

    pg = None
    if any(CONFIGS[c][0] == "postgresql" for c in configs):
        # Durable as in production; a bigger cache and WAL than the tests' server, nothing that trades safety.
        pg = PostgresServer(durable=True, settings={"shared_buffers": "512MB", "max_wal_size": "4GB",
                                                    "max_connections": "400"}).start()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
            for n in counts:
                for config in configs:
                    row = run_one(config, n, seconds, args.rate, pg, Path(tmp),
                                  f"{args.profile}.{config}-{n}" if args.profile else None, args.pool_size,
                                  args.push_budget, f"{args.trace}.{config}-{n}" if args.trace else None)
                    rows.append(row)
                    print(table([row]).splitlines()[-1] if len(rows) > 1 else table([row]), flush=True)
    finally:
        if pg is not None:
            pg.stop()
    print()
    print(table(rows))
    print(json.dumps({"bench": "fleet", "offered_events_s": args.rate, "nproc": os.cpu_count(), "results": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
