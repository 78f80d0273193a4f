"""The profile context cache that sync fills: profiles, the identity keys the central store gave, the feed cursor.

Written by edge/uplink.py in the writer's transaction (no BEGIN/COMMIT here); read by the domain parts
(shoppers, identity) through their own queries. Tables from edge/store/schema.py (v4): `profiles` (a
profile as JSON, with the fields rules read without parsing it), `identities` (key → customer; `via`
'central' for keys the central store gave, which leave with their profile; keys learned here stay),
`sync_state` (the change feed cursor). Which customers must not be learned again (erased) is
edge/privacy.py's to say.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from edge.store.db import chunks, marks
from sync.local import ProfileUpsert

VIA_CENTRAL = "central"  # identities learned from the central store (profiles, resolve)

_KEEP_IDENTITY = ("INSERT INTO identities(key, customer_id, via, learned_at) VALUES (?,?,?,?) "
                  "ON CONFLICT(key) DO UPDATE SET customer_id=excluded.customer_id, via=excluded.via, "
                  "learned_at=excluded.learned_at")
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_msgspec_encode = msgspec.json.Encoder().encode


def _encode(profile: dict[str, Any]) -> str:
    """Compact JSON, UTF-8 text as is: msgspec in C, json for what it cannot encode (a lone surrogate...)."""
    try:
        return _msgspec_encode(profile).decode("utf-8")
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError, UnicodeDecodeError):
        return _dumps(profile)


def read_cursor(conn: sqlite3.Connection) -> str | None:
    """The change feed cursor kept with the last page applied; None before the first pull."""
    row = conn.execute("SELECT value FROM sync_state WHERE key = 'cursor'").fetchone()
    return row[0] if row else None


def keep_cursor(conn: sqlite3.Connection, cursor: str) -> None:
    conn.execute("INSERT INTO sync_state(key, value) VALUES ('cursor', ?) "
                 "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (cursor,))


def cached_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM profiles").fetchone()[0]


def cached_versions(conn: sqlite3.Connection, customers: Sequence[str]) -> dict[str, int]:
    """customer id → version of the cached profile, for those cached."""
    out: dict[str, int] = {}
    for chunk in chunks(customers):
        out.update(conn.execute(f"SELECT customer_id, version FROM profiles WHERE customer_id IN ({marks(chunk)})",
                                chunk))
    return out


def cached_version(conn: sqlite3.Connection, customer: str) -> int:
    """The cached profile's version, 0 when none is cached."""
    return cached_versions(conn, [customer]).get(customer, 0)


def _profile_row(u: ProfileUpsert, now: float) -> tuple[Any, ...]:
    """The profiles row: the profile as JSON (its customer_id and version the upsert's), the fields rules
    read without parsing it."""
    consents = u.profile.get("consents") or {}
    return (u.customer_id, u.version, _encode({**u.profile, "customer_id": u.customer_id, "version": u.version}),
            u.profile.get("first_name"), 1 if consents.get("personalization") is True else 0, now)


@dataclass
class Upserted:
    """What upsert_profiles wrote: the customers, and the identity keys → customer now in `identities`."""

    customers: list[str] = field(default_factory=list)
    identities: list[tuple[str, str]] = field(default_factory=list)


def upsert_profiles(conn: sqlite3.Connection, upserts: Sequence[ProfileUpsert], *, force: bool,
                    now: float) -> Upserted:
    """Cache the profiles newer than the cached ones (any, with `force`) with their identity keys.

    Keys the central store no longer lists for a customer are forgotten (keys learned here, at a kiosk
    say, stay: the central store learns them from the identity_link events)."""
    if not upserts:
        return Upserted()
    cached = cached_versions(conn, [u.customer_id for u in upserts])
    take = [u for u in upserts if force or u.version > cached.get(u.customer_id, -1)]
    if not take:
        return Upserted()
    conn.executemany(
        "INSERT INTO profiles(customer_id, version, profile, first_name, consent_personalization, updated_at) "
        "VALUES (?,?,?,?,?,?) ON CONFLICT(customer_id) DO UPDATE SET version=excluded.version, "
        "profile=excluded.profile, first_name=excluded.first_name, "
        "consent_personalization=excluded.consent_personalization, updated_at=excluded.updated_at",
        (_profile_row(u, now) for u in take))
    keep = [(key, u.customer_id, VIA_CENTRAL, now) for u in take
            for key in (u.profile.get("identities") or []) if isinstance(key, str)]
    for chunk in chunks([u.customer_id for u in take if u.customer_id in cached]):
        conn.execute(f"DELETE FROM identities WHERE via = '{VIA_CENTRAL}' AND customer_id IN ({marks(chunk)})",
                     chunk)
    if keep:
        conn.executemany(_KEEP_IDENTITY, keep)
    return Upserted([u.customer_id for u in take], [(key, cid) for key, cid, _, _ in keep])


def keep_identities(conn: sqlite3.Connection, matches: Mapping[str, str], now: float) -> None:
    """Identity key → customer answers of the central store."""
    if matches:
        conn.executemany(_KEEP_IDENTITY, ((k, c, VIA_CENTRAL, now) for k, c in matches.items()))


def _drop(conn: sqlite3.Connection, customers: Sequence[str]) -> None:
    """Profiles and the keys the central store gave for them (keys learned here stay)."""
    for chunk in chunks(customers):
        conn.execute(f"DELETE FROM profiles WHERE customer_id IN ({marks(chunk)})", chunk)
        conn.execute(f"DELETE FROM identities WHERE via = '{VIA_CENTRAL}' AND customer_id IN ({marks(chunk)})",
                     chunk)


def drop_stale_profiles(conn: sqlite3.Connection, since: float) -> None:
    """After a full resync: profiles the new feed did not deliver are gone from the central store."""
    _drop(conn, [r[0] for r in conn.execute("SELECT customer_id FROM profiles WHERE updated_at < ?", (since,))])


def evict_profiles(conn: sqlite3.Connection, max_profiles: int, ttl_s: float, now: float) -> int:
    """Keep at most max_profiles cached, none unseen for longer than ttl_s; the least recently seen go
    first; customers present now are never evicted. Returns how many were evicted."""
    present = "SELECT customer FROM presence WHERE customer IS NOT NULL"
    conn.execute(f"UPDATE profiles SET last_seen = (SELECT max(last_seen) FROM presence "
                 f"WHERE presence.customer = profiles.customer_id) WHERE customer_id IN ({present})")
    victims = [r[0] for r in conn.execute(
        f"SELECT customer_id FROM profiles WHERE coalesce(last_seen, updated_at) < ? "
        f"AND customer_id NOT IN ({present})", (now - ttl_s,))]
    total = cached_count(conn) - len(victims)
    if total > max_profiles:
        skip = set(victims)
        extra = total - max_profiles
        for (cid,) in conn.execute(
                f"SELECT customer_id FROM profiles WHERE customer_id NOT IN ({present}) "
                "ORDER BY last_seen IS NOT NULL, last_seen, updated_at"):
            if cid in skip:
                continue
            victims.append(cid)
            extra -= 1
            if extra <= 0:
                break
    _drop(conn, victims)
    return len(victims)


def json_object(raw: Any) -> dict[str, Any]:
    """A stored JSON object, or {} for anything else (NULL, damaged text, another JSON type): readers of
    cached rows never fail on one bad row."""
    try:
        value = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def cached_profile(conn: sqlite3.Connection, customer: str) -> dict[str, Any] | None:
    """The profile this edge holds for a shopper (from the central store), or None."""
    row = conn.execute("SELECT profile FROM profiles WHERE customer_id = ?", (customer,)).fetchone()
    return json_object(row[0]) if row else None
