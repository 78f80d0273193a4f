"""Where the central store keeps its data: one interface (`Storage`), two engines (SQLite, PostgreSQL).

`open_storage(db)` picks the engine from `--db`: a `postgresql://` URL selects PostgreSQL (schema migrated
at start), anything else is a SQLite file path. Imports are lazy so a SQLite-only install never loads
psycopg.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sync.central.storage.base import Storage
from sync.central.storage.common import (
    CentralError,
    Conflict,
    DatabaseError,
    IdempotencyKeyReused,
    InvalidValue,
    NotFound,
    Settings,
    Unavailable,
    body_hash,
)

log = logging.getLogger("instore_central")

__all__ = ["CentralError", "Conflict", "DatabaseError", "IdempotencyKeyReused", "InvalidValue", "NotFound", "Settings",
           "Storage", "Unavailable", "body_hash", "is_postgres_url", "open_storage", "Housekeeper"]

MAINTAIN_EVERY_S = 3600.0


def is_postgres_url(db: str | Path) -> bool:
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def open_storage(db: str | Path, settings: Settings | None = None) -> Storage:
    """The storage `db` names: a postgresql:// URL or a SQLite file (created when absent). Raises
    DatabaseError when it cannot be used."""
    if is_postgres_url(db):
        try:
            from sync.central.storage.postgres import PostgresStorage
        except ImportError as exc:  # pragma: no cover - psycopg is a dependency
            raise DatabaseError(f"PostgreSQL needs psycopg ({exc}): pip install 'psycopg[binary,pool]'") from None
        return PostgresStorage(str(db), settings)
    from sync.central.storage.sqlite import SqliteStorage

    return SqliteStorage(db, settings)


class Housekeeper:
    """Runs storage.maintain() now and then every `every_s` on a daemon thread (retention, partitions)."""

    def __init__(self, storage: Storage, every_s: float = MAINTAIN_EVERY_S) -> None:
        self.storage = storage
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="central-housekeeping", daemon=True)

    def start(self) -> Housekeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)

    def _run(self) -> None:
        while True:
            try:
                done = self.storage.maintain()
                if done.get("dropped_partitions") or done.get("events_deleted"):
                    log.info("retention: dropped %s, deleted %d events", done.get("dropped_partitions") or "no partition",
                             done.get("events_deleted") or 0)
            except Exception:  # the next round tries again; serving must go on
                log.exception("central store housekeeping failed")
            if self._stop.wait(self.every_s):
                return
