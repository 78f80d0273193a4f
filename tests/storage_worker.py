"""A separate process that works on a central store database, for the concurrency tests.

    python tests/storage_worker.py DB push '{"store": "s1", "batches": [[...], ...], "key": "k"}'  (k-0, k-1, ...)
    python tests/storage_worker.py DB upsert '{"ids": ["C-1", ...], "rounds": 1}'

Waits for a line on standard input before starting (so the test can start several at once), then prints
one JSON line per operation: the push answers, or the versions the upserts got.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sync.central.storage import body_hash, open_storage  # noqa: E402


def main() -> None:
    db, mode, arg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    storage = open_storage(db)
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        if mode == "push":
            for i, batch in enumerate(arg["batches"]):
                key = f"{arg['key']}-{i}" if arg.get("key") else None
                digest = body_hash(json.dumps(batch).encode()) if key else None
                answer, replayed = storage.push_events(arg["store"], batch, key, digest)
                print(json.dumps({"answer": answer, "replayed": replayed}), flush=True)
        elif mode == "upsert":
            for round_ in range(arg.get("rounds", 1)):
                for cid in arg["ids"]:
                    [saved] = storage.upsert_profiles([{"customer_id": cid, "segments": [f"r{round_}"]}])
                    print(json.dumps({"customer_id": cid, "version": saved["version"]}), flush=True)
        else:
            raise SystemExit(f"unknown mode {mode!r}")
    finally:
        storage.close()


if __name__ == "__main__":
    main()
