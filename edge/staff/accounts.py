"""Staff accounts: who may use the staff app, their role, and their PIN as a slow salted hash (scrypt).

A PIN is short, so its hash must be slow to guess offline (scrypt, n=2**14: about 50 ms and 16 MiB each) and
wrong guesses online are capped: after LOCK_AFTER wrong PINs in a row the account is locked for LOCK_S
seconds (`login` says until when). Disabling an account or logging out bumps `session_epoch`, which ends
every session cookie issued before (edge/staff/sessions.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass

ROLES = ("associate", "manager")
ID_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")
PIN_RE = re.compile(r"^[0-9]{4,12}$")
LOCK_AFTER = 5  # wrong PINs in a row
LOCK_S = 300.0
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


class StaffError(Exception):
    """A staff command or login that cannot be done; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Account:
    """A staff member as the app sees them (never the PIN hash)."""

    staff_id: str
    name: str
    role: str
    active: bool
    session_epoch: int = 0


@dataclass(frozen=True, slots=True)
class Login:
    """The outcome of a login attempt: the account, or why not (`locked_until` when locked out)."""

    account: Account | None
    reason: str = ""  # "", "wrong", "locked", "disabled"
    locked_until: float | None = None


def hash_pin(pin: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    enc = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${enc(salt).decode()}${enc(digest).decode()}"


def check_pin(pin: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(pin.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(base64.b64decode(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def valid_pin(pin: str) -> str:
    """The PIN without surrounding whitespace, or StaffError saying what a PIN must be."""
    pin = pin.strip()
    if not PIN_RE.match(pin):
        raise StaffError("the PIN must be 4 to 12 digits")
    return pin


def add(conn: sqlite3.Connection, staff_id: str, name: str, role: str, pin: str, now: float | None = None) -> Account:
    """Create (or re-enable with a new PIN, name and role) a staff account."""
    if not ID_RE.match(staff_id):
        raise StaffError(f"staff id {staff_id[:40]!r}: use 1 to 32 letters, digits, '_', '.' or '-'")
    if role not in ROLES:
        raise StaffError(f"role {role[:20]!r}: expected one of {', '.join(ROLES)}")
    name = name.strip()
    if not name or len(name) > 80:
        raise StaffError("the name must be 1 to 80 characters")
    pin_hash = hash_pin(valid_pin(pin))
    conn.execute("INSERT INTO staff(staff_id, name, role, pin_hash, active, created_at) VALUES (?,?,?,?,1,?) "
                 "ON CONFLICT(staff_id) DO UPDATE SET name = excluded.name, role = excluded.role, "
                 "pin_hash = excluded.pin_hash, active = 1, failed_pins = 0, locked_until = NULL, "
                 "session_epoch = session_epoch + 1",
                 (staff_id, name, role, pin_hash, time.time() if now is None else now))
    return Account(staff_id, name, role, True)


def disable(conn: sqlite3.Connection, staff_id: str) -> bool:
    """Disable an account and end its sessions; False when there is no such account."""
    cur = conn.execute("UPDATE staff SET active = 0, session_epoch = session_epoch + 1 WHERE staff_id = ?",
                       (staff_id,))
    return cur.rowcount == 1


def end_sessions(conn: sqlite3.Connection, staff_id: str) -> None:
    """Log out: every session cookie of this account stops working."""
    conn.execute("UPDATE staff SET session_epoch = session_epoch + 1 WHERE staff_id = ?", (staff_id,))


def listing(conn: sqlite3.Connection) -> list[dict[str, object]]:
    return [{"staff_id": r[0], "name": r[1], "role": r[2], "active": bool(r[3]), "locked_until": r[4]}
            for r in conn.execute("SELECT staff_id, name, role, active, locked_until FROM staff ORDER BY staff_id")]


def get(conn: sqlite3.Connection, staff_id: str) -> Account | None:
    row = conn.execute("SELECT staff_id, name, role, active, session_epoch FROM staff WHERE staff_id = ?",
                       (staff_id,)).fetchone()
    return Account(row[0], row[1], row[2], bool(row[3]), int(row[4])) if row else None


def login(conn: sqlite3.Connection, staff_id: str, pin: str, now: float) -> Login:
    """Check a PIN, counting wrong ones (in the caller's write transaction): LOCK_AFTER wrong PINs in a row
    lock the account for LOCK_S; a right PIN clears the count. Unknown ids answer like wrong PINs."""
    row = conn.execute("SELECT pin_hash, active, failed_pins, locked_until FROM staff WHERE staff_id = ?",
                       (staff_id,)).fetchone()
    if row is None:
        check_pin(pin, hash_pin("0000"))  # as slow as a real check: response time does not tell who exists
        return Login(None, "wrong")
    pin_hash, active, failed, locked_until = row
    if locked_until is not None and locked_until > now:
        return Login(None, "locked", locked_until)
    if not check_pin(pin, pin_hash):
        failed = 1 if locked_until is not None else failed + 1  # a lock that has passed starts a new count
        until = now + LOCK_S if failed >= LOCK_AFTER else None
        conn.execute("UPDATE staff SET failed_pins = ?, locked_until = ? WHERE staff_id = ?",
                     (0 if until else failed, until, staff_id))
        return Login(None, "locked", until) if until else Login(None, "wrong")
    if not active:
        return Login(None, "disabled")
    conn.execute("UPDATE staff SET failed_pins = 0, locked_until = NULL WHERE staff_id = ?", (staff_id,))
    return Login(get(conn, staff_id))
