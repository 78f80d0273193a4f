"""Messages that keep failing are set aside, so one message can never stop the store for good.

A message whose processing raises is dead-lettered at once (the pipeline redoes its batch one message at
a time). What an exception cannot catch is a message that takes the process down with it (a crash in a
C library, the out-of-memory killer, a writer thread that died): the broker redelivers it after every
restart. So the writer notes the digests of the batch in flight in a side file (`<db.path>-inflight`,
one write per batch, no fsync: it has to survive the process, not a power cut). At start, the messages a
crash left there count one failed attempt each (table `failed_attempts`, by a digest of topic and
payload, so the count survives restarts). Such a message is processed alone the next time, named alone in
the side file while it runs; one found with two failed attempts is not processed again: it becomes a
dead letter with reason `quarantined` and is acknowledged. Rows go once their message is settled, and
rows older than a week (messages never seen again) at the next start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import struct
import time
from collections.abc import Iterable

log = logging.getLogger(__name__)

QUARANTINE_AFTER = 2  # failed attempts after which a message is set aside instead of processed
KEEP_S = 7 * 86400
DIGEST_BYTES = 16
_COUNT = struct.Struct("<I")  # the side file: how many digests follow, then the digests


def digest(topic: str, payload: bytes) -> bytes:
    """What identifies a message across redeliveries and restarts: its topic and its bytes."""
    return message_sha1(topic, payload)[:DIGEST_BYTES]


def message_sha1(topic: str, payload: bytes) -> bytes:
    """sha1(topic + NUL + payload): the quarantine's digest is its start, a hashed event id is made of it too."""
    return hashlib.sha1(topic.encode("utf-8", "surrogatepass") + b"\0" + payload, usedforsecurity=False).digest()


class Quarantine:
    """The side file of the batch in flight and the failed-attempt counts; used by the writer thread only."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.attempts: dict[bytes, int] = {}  # digest -> failed attempts, for messages not yet settled
        self._noted = False

    def open(self, conn: sqlite3.Connection, now: float | None = None) -> int:
        """At start: count a failed attempt for each message a crash left in flight, load the counts and
        purge old rows; returns how many messages the crash interrupted."""
        now = time.time() if now is None else now
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.error("cannot open %s (%s): messages that crash the edge will not be set aside", self.path, exc)
            return 0
        data = os.pread(self.fd, _COUNT.size, 0)
        count = min(_COUNT.unpack(data)[0], 1 << 16) if len(data) == _COUNT.size else 0
        body = os.pread(self.fd, count * DIGEST_BYTES, _COUNT.size) if count else b""
        crashed = {body[i:i + DIGEST_BYTES] for i in range(0, len(body) - DIGEST_BYTES + 1, DIGEST_BYTES)}
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM failed_attempts WHERE updated_at < ?", (now - KEEP_S,))
            conn.executemany("INSERT INTO failed_attempts(digest, attempts, updated_at) VALUES (?, 1, ?) "
                             "ON CONFLICT(digest) DO UPDATE SET attempts = attempts + 1, "
                             "updated_at = excluded.updated_at",
                             ((d, now) for d in crashed))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        os.pwrite(self.fd, _COUNT.pack(0), 0)
        self.attempts = {bytes(d): n for d, n in conn.execute("SELECT digest, attempts FROM failed_attempts")}
        if crashed:
            log.warning("the edge stopped while processing %d message(s): each is processed alone when it comes "
                        "back, and set aside (dead letter 'quarantined') after %d such failures",
                        len(crashed), QUARANTINE_AFTER)
        return len(crashed)

    def note(self, digests: Iterable[bytes]) -> None:
        """Name the messages about to be processed: if the process dies now, they are the suspects."""
        if self.fd is None:
            return
        items = [d for d in digests if d]
        os.pwrite(self.fd, _COUNT.pack(len(items)) + b"".join(items), 0)
        self._noted = True

    def clear(self) -> None:
        """Nothing in flight (the batch committed, or failed for a reason that is not its messages')."""
        if self.fd is not None and self._noted:
            os.pwrite(self.fd, _COUNT.pack(0), 0)
            self._noted = False

    def suspect(self, digests: Iterable[bytes]) -> bool:
        """Does the batch hold a message that a crash interrupted before?"""
        attempts = self.attempts
        return bool(attempts) and any(d in attempts for d in digests)

    def settle(self, conn: sqlite3.Connection, digests: Iterable[bytes]) -> list[bytes]:
        """Inside the transaction that records (or dead-letters) these messages: their counts go."""
        settled = [d for d in digests if d in self.attempts]
        if settled:
            conn.executemany("DELETE FROM failed_attempts WHERE digest = ?", ((d,) for d in settled))
        return settled

    def forget(self, settled: Iterable[bytes]) -> None:
        """After that transaction committed."""
        for d in settled:
            self.attempts.pop(d, None)

    def close(self) -> None:
        if self.fd is not None:
            self.clear()
            os.close(self.fd)
            self.fd = None
