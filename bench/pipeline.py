"""The writer alone: CPU per message of the ingest mix through Pipeline.process, in this process, no broker.

    python bench/pipeline.py                   # 100,000 messages in batches of 500
    python bench/pipeline.py --profile 30      # and the top of a cProfile of the same run

The same messages as bench/ingest.py (1 in 10 a new subject entering the entrance, 9 in 10 repeat
sightings of 500 regulars), each batch processed and committed (synchronous=FULL) as the writer thread does,
then its after-commit step with an MQTT link that only counts. CPU time (process_time) is steadier than wall
time on a shared machine: the figure to compare before and after a change of the hot path. It leaves out
paho's network thread, which bench/ingest.py measures with the rest. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import json
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common as C  # noqa: E402


class CountingLink:
    """The MQTT side of the pipeline, without a broker."""

    def __init__(self) -> None:
        self.acked = 0
        self.published = 0

    def ack(self, messages) -> None:
        self.acked += sum(1 for _ in messages)

    def publish(self, topic: str, payload, *, retain: bool = False, qos: int = 1) -> None:
        self.published += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="messages (default 100000)")
    ap.add_argument("--batch", type=int, default=500, help="messages per commit (default 500)")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the median is reported (default 3)")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions of a cProfile")
    args = ap.parse_args()

    from edge.app import App, tune_gc
    from edge.config import parse_config
    from edge.model import Message

    results = []
    for run in range(args.repeat + (1 if args.profile else 0)):
        tmp = Path(tempfile.mkdtemp(prefix="instore-bench-pipeline-"))
        try:
            cfg = parse_config(C.store_config(tmp, 1883), env={})
            app = App(cfg)
            tune_gc()  # as `instore-edge run` does
            pipeline = app.pipeline
            link = pipeline.link = CountingLink()
            t_msg = time.time()
            messages = []
            for i in range(args.n):
                ts_ms = int((t_msg + i / 20000) * 1000)
                topic, payload, _ = C.mixed_message(i, ts_ms, 10, 10000)
                messages.append(Message(topic, payload, 1, i % 65535 + 1, ts_ms / 1000 + 0.001))
            profiler = cProfile.Profile() if args.profile and run == args.repeat else None
            cpu0 = time.process_time()
            if profiler:
                profiler.enable()
            for k in range(0, args.n, args.batch):
                batch = messages[k:k + args.batch]
                res = pipeline.process(batch, batch[-1].received_at)
                pipeline._after_commit(res)
            if profiler:
                profiler.disable()
            cpu = time.process_time() - cpu0
            events = app.conn.execute("SELECT count(*) FROM events").fetchone()[0]
            app.conn.close()
            if profiler:
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats(os.environ.get("SORT", "tottime")).print_stats(args.profile)
                print(out.getvalue())
                continue
            results.append(1e6 * cpu / args.n)
            print(f"run {run + 1}: {1e6 * cpu / args.n:.1f} us CPU per message ({events} events, "
                  f"{link.acked} acked, {link.published} published)", flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    median = statistics.median(results)
    print(f"median {median:.1f} us per message (spread {min(results):.1f}-{max(results):.1f}); "
          f"load average {C.loadavg():.2f}")
    print(json.dumps({"cpu_us_per_message": round(median, 1), "min": round(min(results), 1),
                      "max": round(max(results), 1), "n": args.n, "batch": args.batch}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
