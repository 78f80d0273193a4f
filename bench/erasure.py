"""Erasure benchmark: what an erasure costs on a store with a month of event log, and what the indexes
that make erasures by hash cheap cost at ingest.

- local: `App.erase` (DELETE /api/v1/customers/<id>) on a log of --events events, 1 in 10 of them
  attributed to one of 2,000 known customers; figures: seconds until the erasure committed (one pass over
  the log: the shopper's devices' anonymous history and data quoting the id), and until the WAL was
  truncated and the file checked after it (sync/scrub.py: the writer's pause for the check, and the
  rebuilds it took when b-tree rebalancing had left copies in page gaps); then no byte of the id or the
  first name may be left in edge.db, -wal and -shm: counted here, independently.
- feed: an erasure by hash from the change feed (`customer_hash`) for a customer this store has seen,
  for one it never saw (every store gets every erasure of the chain), and for 100 customers in one page
  (one transaction, one check of the file for all their values).
- index cost: inserting customer-attributed events with and without the partial index on
  events(customer) (plain SQLite, batches of 1,000, synchronous=FULL); anonymous events do not touch it.

    python bench/erasure.py [--events 1000000]

The last line printed is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as C  # noqa: E402

CUSTOMERS = 2000


def build(db: Path, n: int) -> None:
    """A store's log: n beacon events over 30 days, 1 in 10 by a known customer, and their profiles."""
    from edge.store.writer import open_writer

    conn = open_writer(db)
    start = time.time() - 30 * 86400
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO events(event_id, kind, source, zone, subject, customer, ts, received_at, data) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        ((f"h:{i:011x}", "beacon", "gw-shoes", "shoes", f"device:app-{i % 20000}",
          f"cust-{i % CUSTOMERS:05d}" if i % 10 == 0 else None, start + i * 2.6, start + i * 2.6,
          '{"rssi":-61,"tx_power":-59}') for i in range(n)))
    conn.executemany(
        "INSERT INTO profiles(customer_id, version, profile, first_name, consent_personalization, updated_at) "
        "VALUES (?,?,?,?,1,?)",
        ((f"cust-{c:05d}", 1, json.dumps({"customer_id": f"cust-{c:05d}", "first_name": f"Name{c:05d}x"}),
          f"Name{c:05d}x", time.time()) for c in range(CUSTOMERS)))
    conn.executemany("INSERT INTO identities(key, customer_id, via, learned_at) VALUES (?,?,'central',0)",
                     ((f"device:app-{c}", f"cust-{c:05d}") for c in range(CUSTOMERS)))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def traces(db: Path, *needles: str) -> int:
    return sum(f.read_bytes().count(n.encode()) for f in files(db) if f.exists() for n in needles)


def index_cost(n: int = 200_000) -> dict[str, float]:
    """µs per customer-attributed event inserted, with and without the partial index (best of 2)."""
    from edge.store.writer import open_writer

    out: dict[str, float] = {}
    for mode in ("with_index", "without_index") * 2:
        with tempfile.TemporaryDirectory() as tmp:
            conn = open_writer(Path(tmp) / "e.db")
            if mode == "without_index":
                conn.execute("DROP INDEX idx_events_customer")
            t0 = time.perf_counter()
            for b in range(0, n, 1000):
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO events(event_id, kind, source, subject, customer, ts, received_at) "
                                 "VALUES (?,?,?,?,?,?,?)",
                                 ((f"e{i:09d}", "beacon", "gw-1", f"device:app-{i % 3000}", f"cust-{i % 3000:05d}",
                                   1.7e9, 1.7e9) for i in range(b, b + 1000)))
                conn.execute("COMMIT")
            us = (time.perf_counter() - t0) / n * 1e6
            out[mode] = round(min(out.get(mode, us), us), 2)
            conn.close()
    return out


def wait_wiped(svc: object) -> None:
    """Until the writer has truncated the WAL and checked the file after the last erasure."""
    while svc.pipeline.writer.wipe_due_since is not None:  # type: ignore[attr-defined]
        time.sleep(0.001)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the log (default 1000000)")
    args = ap.parse_args()
    from edge.config import parse_config
    from edge.app import App

    with tempfile.TemporaryDirectory() as tmp:
        data = C.store_config(Path(tmp), 1883)
        db = Path(data["db"]["path"])
        t0 = time.time()
        build(db, args.events)
        print(f"log of {args.events:,} events built in {time.time() - t0:.0f}s: {db.stat().st_size / 1e6:.0f} MB",
              flush=True)
        svc = App(parse_config(data, env={}))
        svc.pipeline.start()
        try:
            victim, name = "cust-00420", "Name00420x"
            assert traces(db, victim, name) > 0
            t0 = time.perf_counter()
            assert svc.erase(victim, timeout=120)
            local_s = time.perf_counter() - t0
            wait_wiped(svc)  # the WAL truncated and the file checked after the erasure's commit
            clean_s = time.perf_counter() - t0
            check = svc.pipeline.last_erasure_check
            if traces(db, victim, name):
                raise SystemExit("bench/erasure.py: the erased customer is still in the files")
            if check is None or not check.clean:
                raise SystemExit(f"bench/erasure.py: the writer's check of the file failed: {check}")

            from sync.local import FeedErasure, ProfileChanges
            from sync.protocol import erase_key

            def feed(*customers: str) -> float:
                """The central store's erasure of customers, by hash, applied from the change feed (one page)."""
                t = time.perf_counter()
                page = ProfileChanges(erasures=tuple(FeedErasure(erase_key(c), 9) for c in customers))
                svc.uplink.apply_changes(page, resync=False, feed_reset=False).result(120)
                return time.perf_counter() - t

            seen_s = feed("cust-00421")
            wait_wiped(svc)
            unseen_s = feed("cust-elsewhere")
            deadline = time.monotonic() + 30
            while traces(db, "cust-00421", "Name00421x"):
                if time.monotonic() > deadline:
                    raise SystemExit("bench/erasure.py: a customer erased by hash is still in the files")
                time.sleep(0.01)
            # A feed page erasing 100 customers at once: one transaction, one check for all their values.
            batch = [f"cust-{c:05d}" for c in range(1000, 1100)]
            t0 = time.perf_counter()
            feed(*batch)
            batch_s = time.perf_counter() - t0
            wait_wiped(svc)
            batch_clean_s = time.perf_counter() - t0
            batch_check = svc.pipeline.last_erasure_check
            pattern = re.compile(rb"cust-010\d\d|Name010\d\dx")  # one pass over the files for all 100
            if any(pattern.search(f.read_bytes()) for f in files(db) if f.exists()):
                raise SystemExit("bench/erasure.py: a customer of the erased batch is still in the files")
        finally:
            svc.pipeline.stop()
            svc.conn.close()
    cost = index_cost()
    assert check is not None and check.clean
    result = {"events": args.events, "local_erase_s": round(local_s, 3), "files_clean_s": round(clean_s, 3),
              "check_s": round(check.seconds, 3), "stale_copies_found": len(check.found),
              "rebuilds": list(check.actions),
              "feed_erase_seen_s": round(seen_s, 3), "feed_erase_unseen_s": round(unseen_s, 4),
              "feed_erase_100_s": round(batch_s, 3), "feed_erase_100_clean_s": round(batch_clean_s, 3),
              "feed_erase_100_check_s": round(batch_check.seconds, 3) if batch_check else None,
              "customer_event_insert_us": cost, "cpus": os.cpu_count()}
    rebuilt = f", rebuilt by {'; '.join(check.actions)}" if check.actions else ""
    print(f"local erasure: committed after {local_s:.2f}s, WAL truncated and the file checked after {clean_s:.2f}s "
          f"(the check: {check.seconds:.2f}s, {len(check.found)} pages with stale copies{rebuilt}); feed erasure by "
          f"hash: {seen_s:.2f}s (a customer seen here), {unseen_s * 1000:.1f} ms (never seen here), 100 customers in "
          f"one page {batch_s:.2f}s (file checked after {batch_clean_s:.2f}s); inserting a "
          f"customer's event: {cost['with_index']} µs with the index, {cost['without_index']} µs without")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
