"""The audit log of staff views of shoppers' data: who (staff id), whom (customer id), what, when.

Written in the same write transaction as whatever the view needed (or alone, before the data is shown).
Erasure (edge.privacy.erase_rows) keeps the entries but replaces the customer id with its erase key (a
hash, sync.protocol.erase_key): the store can still show that staff looked at *someone* and, given the id
again, whom; the file no longer holds the id. The shopper's export lists their entries.
"""

from __future__ import annotations

import sqlite3
from typing import Any

ACTIONS = ("story", "pickup", "return", "pos_attach")  # what staff saw the data for


def record(conn: sqlite3.Connection, staff_id: str, customer_id: str, action: str, at: float) -> None:
    conn.execute("INSERT INTO staff_audit(staff_id, customer_id, action, at) VALUES (?,?,?,?)",
                 (staff_id, customer_id, action, at))


def entries(conn: sqlite3.Connection, *, customer_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    sql = "SELECT staff_id, customer_id, action, at FROM staff_audit"
    params: list[Any] = []
    if customer_id is not None:
        sql += " WHERE customer_id = ?"
        params.append(customer_id)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    return [{"staff_id": r[0], "customer_id": r[1], "action": r[2], "at": r[3]} for r in conn.execute(sql, params)]
