"""Run every benchmark, one after the other, and print each one's figures (its last JSON line).

    python bench/run.py            # all: ingest, presence, presence_quality, rules, sync, qr, erasure, fleet, campaigns (a few minutes)
    python bench/fleet.py --full   # separately: the central store at 50 and 300 stores, all three setups
    python bench/run.py ingest qr  # some
    python bench/run.py --full presence_quality  # the whole presence quality table (9 layouts, a simulated hour each: 15-30 minutes)
    python bench/soak.py           # separately: 1 hour of a busy store in 6 minutes, with faults

Run it on a quiet machine: the figures are shared-CPU measurements, not timed tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALL = ["ingest", "presence", "presence_quality", "rules", "sync", "qr", "erasure", "fleet", "campaigns"]
FULL = {"presence_quality": ["--full"]}  # what --full adds to a benchmark's command line


def main(args: list[str]) -> int:
    full = "--full" in args
    names = [a for a in args if a != "--full"]
    failed = 0
    results = {}
    for name in names or ALL:
        print(f"== bench/{name}.py", flush=True)
        extra = FULL.get(name, []) if full else []
        proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *extra], cwd=HERE.parent, text=True,
                              capture_output=True)
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        try:
            results[name] = json.loads(lines[-1])
            print(lines[-1], flush=True)
        except (IndexError, ValueError):
            failed += 1
            print(f"bench/{name}.py broke (exit {proc.returncode}):\n{proc.stderr[-2000:]}", flush=True)
    print(json.dumps(results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
