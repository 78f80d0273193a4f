"""Read queries shared by the HTTP API, the pages, the KPIs and sync (each on its own read connection)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

# The condition of the events' kind index (idx_events_kind), which leaves out the sightings, nine events in ten:
# a query by another kind says it too, or SQLite cannot use that index. Sightings are found by seq.
NOT_SIGHTING = "kind <> 'beacon'"


def outbox_stats(conn: sqlite3.Connection, now: float) -> tuple[int, float | None]:
    """(pending events, age of the oldest in seconds), in O(log n): events enter the outbox in seq order
    and leave it from the front, so its seqs are contiguous and a count(*) over millions is not needed."""
    lo, hi = conn.execute("SELECT min(event_seq), max(event_seq) FROM outbox").fetchone()
    if lo is None:
        return 0, None
    row = conn.execute("SELECT received_at FROM events WHERE seq = ?", (lo,)).fetchone()
    return hi - lo + 1, (max(0.0, now - row[0]) if row and row[0] is not None else None)


def deadletters_since(conn: sqlite3.Connection, since: float) -> int:
    """Inputs the edge could not take since `since` (epoch seconds)."""
    return conn.execute("SELECT count(*) FROM deadletters WHERE received_at >= ?", (since,)).fetchone()[0]


def row_to_event_dict(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    if out.get("data"):
        out["data"] = json.loads(out["data"])
    return out
