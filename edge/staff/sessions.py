"""Staff sessions: a signed cookie (staff id, session epoch, last activity), so a session costs no write.

The key is made once per database (kv `staff_session_key`). A cookie is valid while its account is active,
its epoch is the account's (logout and disable bump it) and it was used within IDLE_S; each request that
finds it older than REFRESH_S gets a fresh one (sliding idle timeout).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass

COOKIE = "instore_edge_staff"
IDLE_S = 15 * 60.0
REFRESH_S = 60.0
KEY_NAME = "staff_session_key"


@dataclass(frozen=True, slots=True)
class Session:
    """What a valid cookie says."""

    staff_id: str
    epoch: int
    last: float


def ensure_key(conn: sqlite3.Connection) -> bytes:
    """The database's session key, made on first use (in the caller's write transaction)."""
    conn.execute("INSERT OR IGNORE INTO kv(key, value) VALUES (?, ?)", (KEY_NAME, secrets.token_hex(32)))
    return bytes.fromhex(conn.execute("SELECT value FROM kv WHERE key = ?", (KEY_NAME,)).fetchone()[0])


def _mac(key: bytes, body: str) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()[:24]).decode()


def issue(key: bytes, staff_id: str, epoch: int, now: float) -> str:
    body = f"{staff_id}|{epoch}|{int(now)}"
    return f"{body}|{_mac(key, body)}"


def read(key: bytes, cookie: str | None, now: float) -> Session | None:
    """The session a cookie carries, or None (forged, malformed, idle too long)."""
    if not cookie or len(cookie) > 200:
        return None
    body, _sep, mac = cookie.rpartition("|")
    if not hmac.compare_digest(_mac(key, body).encode(), mac.encode()):
        return None
    try:
        staff_id, epoch, last = body.split("|")
        session = Session(staff_id, int(epoch), float(last))
    except ValueError:
        return None
    if now - session.last > IDLE_S or session.last > now + 60:
        return None
    return session
