"""The content channel's tables: campaigns (latest version received, its state, the version applied), the
channel's cursor and the store's metadata. Its products go to the one catalogue (edge.domain.catalogue, table
`products`).

Writes run in the writer's transaction (edge/uplink.py hands them in); reads on any connection.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CURSOR_KEY = "content_cursor"
STORE_KEY = "central_store"

PENDING, APPLIED, REFUSED, WITHDRAWN = "pending", "applied", "refused", "withdrawn"


@dataclass(frozen=True, slots=True)
class CampaignRow:
    id: str
    version: int  # the channel entry's (only grows)
    campaign_version: int | None  # the campaign's own version, as the central store numbers them
    op: str
    body: Mapping[str, Any] | None
    state: str
    reason: str | None
    applied_version: int | None
    applied_body: Mapping[str, Any] | None
    applied_at: float | None


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def read_cursor(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM sync_state WHERE key = ?", (CURSOR_KEY,)).fetchone()
    return row[0] if row else None


def keep_cursor(conn: sqlite3.Connection, cursor: str) -> None:
    conn.execute("INSERT INTO sync_state(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                 "excluded.value", (CURSOR_KEY, cursor))


def keep_store(conn: sqlite3.Connection, version: int, store: Mapping[str, Any]) -> bool:
    """The store's own metadata from the central store (name, tags, timezone, language), if newer."""
    row = conn.execute("SELECT value FROM sync_state WHERE key = ?", (STORE_KEY,)).fetchone()
    if row is not None and json.loads(row[0]).get("version", -1) >= version:
        return False
    conn.execute("INSERT INTO sync_state(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                 "excluded.value", (STORE_KEY, json.dumps({"version": version, "store": store})))
    return True


def _row(r: tuple) -> CampaignRow:
    return CampaignRow(r[0], r[1], r[2], r[3], _loads(r[4]), r[5], r[6], r[7], _loads(r[8]), r[9])


_COLUMNS = "id, version, campaign_version, op, body, state, reason, applied_version, applied_body, applied_at"


def campaign(conn: sqlite3.Connection, cid: str) -> CampaignRow | None:
    r = conn.execute(f"SELECT {_COLUMNS} FROM campaigns WHERE id = ?", (cid,)).fetchone()
    return None if r is None else _row(r)


def campaigns(conn: sqlite3.Connection, states: Sequence[str] | None = None) -> list[CampaignRow]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM campaigns ORDER BY id").fetchall()
    out = [_row(r) for r in rows]
    return out if states is None else [c for c in out if c.state in states]


def applied(conn: sqlite3.Connection) -> list[CampaignRow]:
    """Campaigns with a version applied (shown here, subject to their schedule)."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM campaigns WHERE applied_version IS NOT NULL ORDER BY id").fetchall()
    return [_row(r) for r in rows]


def receive(conn: sqlite3.Connection, cid: str, version: int, campaign_version: int | None, op: str,
            body: Mapping[str, Any] | None, state: str, reason: str | None, now: float) -> None:
    """Keep the latest entry received and what became of it (the applied version stays as it was)."""
    conn.execute(
        "INSERT INTO campaigns(id, version, campaign_version, op, body, state, reason, received_at) "
        "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET version = excluded.version, "
        "campaign_version = excluded.campaign_version, op = excluded.op, body = excluded.body, "
        "state = excluded.state, reason = excluded.reason, received_at = excluded.received_at",
        (cid, version, campaign_version, op, None if body is None else json.dumps(body), state, reason, now))


def mark_applied(conn: sqlite3.Connection, cid: str, version: int, body: Mapping[str, Any], now: float) -> None:
    conn.execute("UPDATE campaigns SET state = ?, reason = NULL, applied_version = ?, applied_body = ?, "
                 "applied_at = ? WHERE id = ?", (APPLIED, version, json.dumps(body), now, cid))


def unapply(conn: sqlite3.Connection, cid: str) -> None:
    """Withdrawn: nothing of it shows any more."""
    conn.execute("UPDATE campaigns SET applied_version = NULL, applied_body = NULL, applied_at = NULL WHERE id = ?",
                 (cid,))
