"""What the central store's storage shares below its interface: settings, errors, limits and the small
pure helpers both engines and the content/profile rules use (kept apart from `base.Storage` so that the rules
modules it delegates to never import it back)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sync import protocol as p

log = logging.getLogger("instore_central")

INTERNAL_ERROR = "internal_error"  # the rejection reason of an event the central failed on unexpectedly
IDEMPOTENCY_TTL_S = 24 * 3600
# A shopper seen at a store (an event naming them, or an on-demand fetch) stays in that store's feed this
# long after the last sighting: longer than an edge keeps an unseen profile cached (7 days by default),
# so a store still holding a profile is told of every change to it (a consent withdrawn, above all).
RELEVANT_FOR_S = 30 * 24 * 3600.0
# How often a repeated sighting of the same shopper at the same store refreshes its row (fewer writes).
RELEVANCE_REFRESH_S = 600.0
DEFAULT_RETENTION_DAYS = 90
# How long a long-poll waits between two looks at the feed while a change is committed but not yet
# servable (PostgreSQL: an older transaction is still open), and while no notification can arrive.
PENDING_POLL_S = 0.05
FALLBACK_POLL_S = 1.0
ALL_STORES = "*"


class CentralError(Exception):
    """Base of the errors the HTTP layer turns into JSON answers."""

    status = 400
    code = "bad_request"


class DatabaseError(CentralError):
    """The database cannot be used (cannot open, cannot reach, newer schema)."""

    status = 500
    code = "database_error"


class Unavailable(DatabaseError):
    """The database cannot be reached now; the same request may succeed later."""

    status = 503
    code = "database_unavailable"


class InvalidValue(CentralError):
    """A request whose text cannot be stored (a lone surrogate, a NUL character)."""

    code = "invalid_value"


class NotFound(CentralError):
    """No such profile."""

    status = 404
    code = "not_found"


class Conflict(CentralError):
    """The request contradicts what the store holds (an identity owned by another customer, ...)."""

    status = 409
    code = "conflict"


class IdempotencyKeyReused(CentralError):
    """An Idempotency-Key sent again with a different body."""

    status = 422
    code = "idempotency_key_reused"


class InvalidCursor(CentralError):
    """A `since` cursor this store never handed out."""


@dataclass(frozen=True, slots=True)
class FeedPage:
    """One page of the change feed as the engine read it: the answer, and whether a change is committed
    but not yet servable (the long-poll looks again shortly rather than sleeping)."""

    answer: dict[str, Any]
    pending: bool = False
    pending_xid: int | None = None  # PostgreSQL: the transaction whose entry waits for older ones to finish


@dataclass(frozen=True, slots=True)
class Settings:
    """What an operator may tune; the defaults suit a chain of a few hundred stores."""

    retention_days: int | None = DEFAULT_RETENTION_DAYS  # events older than this (event time) are dropped
    relevant_for_s: float = RELEVANT_FOR_S
    # A profile that names no home store goes to every store (True), or only to stores that saw the shopper
    # or hold an order of theirs (False).
    broadcast_unhomed: bool = True
    pool_size: int = 10  # PostgreSQL connections per process
    push_budget: float = 100.0  # pushes a second the whole fleet may send; more stores push less often (pacing.py)


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def feed_key(customer_id: str) -> str:
    """Where the change feed keeps an erased customer: '#' + erase key ('#' starts no customer id)."""
    return "#" + p.erase_key(customer_id)


def parse_events(raw: list[Any], store: str = "?") -> list[p.WireEvent | p.Rejection]:
    """Validate a pushed batch: each item becomes a WireEvent, or the Rejection that says why not. A bug in
    validation refuses that one event (internal_error), never the batch."""
    out: list[p.WireEvent | p.Rejection] = []
    for index, obj in enumerate(raw):
        if type(obj) is p.WireEvent:  # checked already (sync.fastpush)
            out.append(obj)
            continue
        try:
            out.append(p.WireEvent.from_dict(obj))
        except p.InvalidEvent as exc:
            out.append(p.Rejection(id=echo_id(obj), index=index, reason=exc.reason, detail=exc.detail))
        except Exception as exc:
            log.exception("store %s: validating event %d of a batch failed", store, index)
            out.append(internal_rejection(echo_id(obj), index, exc, "could not check this event"))
    return out


def internal_rejection(event_id: str | None, index: int, exc: BaseException, what: str) -> p.Rejection:
    """The answer for one event the central failed on unexpectedly (the rest of its batch goes on)."""
    return p.Rejection(id=event_id, index=index, reason=INTERNAL_ERROR,
                       detail=f"the central store {what} ({type(exc).__name__}); its log has the details")


def echo_id(obj: Any) -> str | None:
    """A refused event's id as the answer may repeat it: only a usable string (stored as UTF-8, bounded)."""
    event_id = obj.get("event_id") if isinstance(obj, dict) else None
    if type(event_id) is not str or not 0 < len(event_id) <= p.MAX_EVENT_ID_LEN:
        return None
    if p.lone_surrogate(event_id) is not None or "\x00" in event_id:
        return None
    return event_id


def digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '¹' and '٣', which int() refuses or reads differently."""
    return text.isascii() and text.isdigit()


def rejection_counts(rejected: Iterable[p.Rejection]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rejected:
        counts[r["reason"]] = counts.get(r["reason"], 0) + 1
    return counts


def split_cursor(since: str | None, epoch: str) -> tuple[str | None, bool]:
    """(position, reset) from a `since` cursor: None for the start; reset when it names another database.
    A bare position (no epoch) is taken as this database's."""
    if not since:
        return None, False
    head, dot, position = since.partition(".")
    if not dot:
        head, position = "", since
    elif not head:
        raise InvalidCursor(f"invalid cursor {since[:40]!r}: pass the `next` value of a previous answer, or no "
                            "`since` to start from the beginning")
    if head and head != epoch:
        return None, True
    return position, False


def invalid_cursor(since: str) -> InvalidCursor:
    return InvalidCursor(f"invalid cursor {since[:40]!r}: pass the `next` value of a previous answer, or no "
                         "`since` to start from the beginning")


def feed_entry(customer_id: str, version: int, op: str, body: str | None) -> dict[str, Any]:
    """A change as the wire carries it: an erasure by hash only, an upsert with the profile as it is now."""
    if op == "erase":
        return {"customer_hash": customer_id.removeprefix("#"), "version": version, "op": "erase"}
    change: dict[str, Any] = {"customer_id": customer_id, "version": version, "op": op}
    if body is not None:
        profile = json.loads(body)
        change["profile"] = profile
        change["version"] = max(version, int(profile.get("version") or 0))
    return change


def page_answer(rows: list[tuple[str, int, str, str | None]], cursor: str, more: bool) -> dict[str, Any]:
    """A feed page's answer from (customer id or '#'+hash, version, op, body) rows in feed order; one entry
    per customer (a store may hold two entries of one change: the one for every store and its own)."""
    changes: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for cid, version, op, body in rows:
        entry = feed_entry(cid, version, op, body)
        if cid in seen:
            if entry["version"] >= changes[seen[cid]]["version"]:
                changes[seen[cid]] = entry
            continue
        seen[cid] = len(changes)
        changes.append(entry)
    return {"changes": changes, "next": cursor, "more": more}


def store_row(store: str, last_push_at: float | None, last_pull_at: float | None, events_total: int,
              health: str | None = None, health_at: float | None = None) -> dict[str, Any]:
    """A store as the fleet view shows it: when the central last heard from it, and the health it reported
    last (protocol.HEALTH_FIELDS; `last_pull_at` there is the edge's, kept as `edge_last_pull_at`)."""
    seen = [t for t in (last_push_at, last_pull_at) if t is not None]
    row: dict[str, Any] = {"store": store, "last_seen_at": max(seen) if seen else None, "last_push_at": last_push_at,
                           "last_pull_at": last_pull_at, "events_total": int(events_total or 0), "health_at": health_at}
    reported = json.loads(health) if health else {}
    for key in p.HEALTH_FIELDS:
        if key != "sent_at":
            row["edge_last_pull_at" if key == "last_pull_at" else key] = reported.get(key)
    row["clock_offset_s"] = reported.get("clock_offset_s")
    return row


def health_record(health: dict[str, Any] | None, now: float) -> str | None:
    """A checked health report as stored: with the edge's clock offset (its sent_at against ours; positive:
    the edge is behind), None when there is none."""
    if health is None:
        return None
    record = dict(health)
    if "sent_at" in record:
        record["clock_offset_s"] = round(now - record["sent_at"], 3)
    return dumps(record)


def export_document(customer_id: str, profile: dict[str, Any] | None, updated_at: float | None, keys: list[str],
                    consents: dict[str, float], stores: list[dict[str, Any]], feed: list[dict[str, Any]],
                    events: list[dict[str, Any]]) -> dict[str, Any]:
    """The right-of-access answer, the same from both engines."""
    granted = (profile or {}).get("consents") or {}
    return {
        "customer_id": customer_id,
        "exported_at": time.time(),
        "profile": profile,
        "profile_updated_at": updated_at,
        "identities": keys,
        "consents": {purpose: {"granted": granted.get(purpose), "decided_at": consents.get(purpose)}
                     for purpose in dict.fromkeys([*granted, *consents])},
        "stores": stores,
        "feed": feed,
        "events": events,
    }
