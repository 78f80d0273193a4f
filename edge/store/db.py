"""The SQLite file: connections (WAL, busy timeout, synchronous level), and truncating the WAL.

One thread (the pipeline) owns the write connection and commits in groups; readers (HTTP) open their
own connections, which WAL lets run beside the writer. The writer uses synchronous=FULL because its
commit gates the MQTT acknowledgement: an acked event must survive a power cut, and with group commit
the extra fsync costs nothing measurable.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from edge.model import EdgeError
from sync import scrub


class StoreError(EdgeError):
    """The database file cannot be used."""


BUSY_TIMEOUT_MS = 30000
WIPE_BUSY_MS = 50  # how long one attempt to truncate the WAL waits for readers (the writer waits meanwhile)
SQL_CHUNK = 500  # host parameters per IN (...) list

T = TypeVar("T")


def connect(path: str | Path, *, writer: bool = False) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are explicit) with WAL.

    The writer deletes with secure_delete: what it deletes or overwrites is zeroed in the page (free
    pages too), so an erased shopper's bytes do not linger in the file; `truncate_wal` then removes the
    old page images from the WAL."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA synchronous={'FULL' if writer else 'NORMAL'}")
    if writer:
        conn.execute("PRAGMA secure_delete=ON")
    return conn


def truncate_wal(conn: sqlite3.Connection, busy_ms: int = WIPE_BUSY_MS) -> bool:
    """sync.scrub.truncate_wal with the edge's timeouts (the erased rows' old page images leave the WAL)."""
    return scrub.truncate_wal(conn, busy_ms, busy_after_ms=BUSY_TIMEOUT_MS)


def chunks(items: Sequence[T], n: int = SQL_CHUNK) -> Iterator[Sequence[T]]:
    """`items` in slices of at most n: an IN (...) list per slice stays within SQLite's host parameters."""
    for i in range(0, len(items), n):
        yield items[i:i + n]


def marks(chunk: Sequence[object]) -> str:
    """The `?,?,?` of an IN (...) list for `chunk`."""
    return ",".join("?" * len(chunk))
