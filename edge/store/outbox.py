"""The outbox as the push sends it: the next batch in wire form, and settling what the central store answered.

Events enter the outbox with the writer's `insert_event`, in seq order; they leave it here once the
central store took them (delivered) or refused them for good (kept in `sync_rejects` with the reason,
where store IT sees them). The backlog's size and age are edge/store/queries.py's `outbox_stats`.
Settling runs in the writer's transaction (no BEGIN/COMMIT here); batches are read on a reader's
connection.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from sync.local import OutboxBatch, Refusal


def outbox_batch(conn: sqlite3.Connection, after: int, limit: int) -> OutboxBatch | None:
    """Up to `limit` outbox events after seq `after`, oldest first, each as its wire JSON (the stored
    `data` is JSON already and goes in as it is)."""
    rows = conn.execute(
        "SELECT e.seq, e.event_id, e.kind, e.type, e.source, e.zone, e.subject, e.customer, e.ts, "
        "e.received_at, e.data FROM outbox o JOIN events e ON e.seq = o.event_seq "
        "WHERE o.event_seq > ? ORDER BY o.event_seq LIMIT ?", (after, limit)).fetchall()
    if not rows:
        return None
    parts: list[str] = []
    seqs: list[int] = []
    ids: list[str] = []
    dumps = json.dumps
    for seq, event_id, kind, typ, source, zone, subject, customer, ts, received_at, data in rows:
        obj: dict[str, Any] = {"event_id": event_id, "kind": kind, "ts": ts, "seq": seq}
        if typ:
            obj["type"] = typ
        if source:
            obj["source"] = source
        if zone:
            obj["zone"] = zone
        if subject:
            obj["subject"] = subject
        if customer:
            obj["customer"] = customer
        if received_at is not None:
            obj["received_at"] = received_at
        text = dumps(obj, separators=(",", ":"), ensure_ascii=False)
        if data and data != "{}" and data != "null":
            text = text[:-1] + ',"data":' + data + "}"
        parts.append(text)
        seqs.append(seq)
        ids.append(event_id)
    return OutboxBatch(tuple(seqs), tuple(ids), tuple(parts))


def settle(conn: sqlite3.Connection, delivered: Sequence[int], refused: Sequence[Refusal], now: float) -> None:
    """Refused events into sync_rejects with their reason; then they and the delivered ones leave the outbox."""
    if refused:
        conn.executemany("INSERT OR REPLACE INTO sync_rejects(event_seq, event_id, reason, detail, rejected_at) "
                         "VALUES (?,?,?,?,?)", ((r.seq, r.event_id, r.reason, r.detail, now) for r in refused))
    conn.executemany("DELETE FROM outbox WHERE event_seq = ?",
                     ((s,) for s in (*delivered, *(r.seq for r in refused))))


def rejected_count(conn: sqlite3.Connection) -> int:
    """Events the central store refused for good (kept in sync_rejects)."""
    return conn.execute("SELECT count(*) FROM sync_rejects").fetchone()[0]
