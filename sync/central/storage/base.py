"""The central store's storage interface: what the HTTP app asks of its database, whichever engine holds it.

Two engines implement it (`sqlite.SqliteStorage`, `postgres.PostgresStorage`) and one contract test suite
(tests/test_central_storage.py) runs against both. Correctness comes from each database (unique
constraints, `ON CONFLICT`, row locks, transactions), never from a lock inside one process: several
processes, on one machine or several, may serve the same database.

The change feed keeps one entry per (target, customer): the target is a store id or `*` (every store).
A reader's cursor is `<epoch>.<position>`: the epoch names the database (a cursor from another database
restarts the feed, `reset`), the position is the engine's own (see each engine for why it never skips
a change committed late).
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from sync import protocol as p
from sync.central.storage.wakeup import FeedSignal

log = logging.getLogger("instore_central")
T = TypeVar("T")

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


class Storage(abc.ABC):
    """The central store's data. Every method is safe to call from many threads and many processes."""

    engine: str  # "sqlite" | "postgresql"
    epoch: str  # names this database in feed cursors
    settings: Settings
    signal: FeedSignal

    # --- life cycle -------------------------------------------------------------------------------------

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and stop background threads."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise DatabaseError when the database cannot answer (for /healthz)."""

    @abc.abstractmethod
    def is_empty(self) -> bool:
        """No profile has ever been written (the demo data loads only then)."""

    @abc.abstractmethod
    def maintain(self, now: float | None = None) -> dict[str, Any]:
        """Retention and housekeeping: drop events older than the retention (PostgreSQL: whole partitions,
        and create the coming ones), forget expired idempotency keys and store relevance. Cheap to call
        often; several processes may call it at once."""

    # --- events -----------------------------------------------------------------------------------------

    @abc.abstractmethod
    def push_events(self, store: str, raw: list[Any], idempotency_key: str | None = None,
                    body_hash: str | None = None, now: float | None = None,
                    health: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
        """Record a batch once per (store, event id) and apply consent / identity_link / erasure events;
        keep the store's `health` report (protocol.parse_health) for the fleet view.

        Returns (answer, replayed): with an Idempotency-Key seen before for this store, the first answer
        is returned as it was. Raises IdempotencyKeyReused when the key came with another body."""

    @abc.abstractmethod
    def list_events(self, store: str | None, after: int, limit: int) -> dict[str, Any]:
        """Received events in received order after `after` (a received_seq): {"events", "next_after", "more"}."""

    # --- profiles ---------------------------------------------------------------------------------------

    @abc.abstractmethod
    def upsert_profiles(self, items: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
        """Create or update profiles, all or none (items passed protocol.validate_profile): given fields
        replace stored ones, consents merge per purpose, each version grows. Raises Conflict."""

    @abc.abstractmethod
    def get_profile(self, customer_id: str, *, store: str | None = None,
                    now: float | None = None) -> dict[str, Any] | None:
        """The profile, or None. With `store` (an on-demand fetch by that store), the store is told of the
        shopper's changes from now on, as if it had seen them."""

    @abc.abstractmethod
    def erase(self, customer_id: str, now: float | None = None) -> dict[str, Any]:
        """Erase a customer everywhere in the central store and feed the erasure (by hash) to every store."""

    @abc.abstractmethod
    def merge(self, from_id: str, into_id: str, now: float | None = None) -> dict[str, Any]:
        """Fold profile `from_id` into `into_id` and erase `from_id`."""

    @abc.abstractmethod
    def resolve(self, keys: list[str]) -> dict[str, str]:
        """identity key → customer id, for the keys that belong to someone."""

    @abc.abstractmethod
    def export(self, customer_id: str) -> dict[str, Any] | None:
        """Everything the central store holds about a customer (right of access), or None."""

    # --- change feed ------------------------------------------------------------------------------------

    @abc.abstractmethod
    def feed_page(self, since: str | None, limit: int, store: str | None) -> FeedPage:
        """The changes after `since` that `store` must hear of (None: every change, for the admin)."""

    def changes(self, since: str | None, limit: int, *, store: str | None = None,
                wait_s: float = 0.0) -> dict[str, Any]:
        """A page of the change feed; with `wait_s` and nothing new, wait up to that long for a change
        (long-poll). Waiting holds no database connection: a notification wakes the request."""
        return self.long_poll(lambda: self.feed_page(since, limit, store), store, wait_s)

    def long_poll(self, read: Callable[[], FeedPage], store: str | None, wait_s: float) -> dict[str, Any]:
        """read() now; with `wait_s` and nothing in it, again each time `store`'s feeds may have grown, until
        something comes or the wait ends (the profile feed and the content feed share the wake-ups)."""
        deadline = time.monotonic() + max(0.0, wait_s)
        if wait_s <= 0:
            return read().answer
        with self.signal.waiter(store) as woken:
            while True:
                page = read()
                remaining = deadline - time.monotonic()
                if page.answer["changes"] or page.answer.get("reset") or remaining <= 0 or self.signal.closed:
                    return page.answer
                if page.pending and page.pending_xid is not None:
                    self.await_horizon(page.pending_xid, store)  # a wake-up comes once it is servable
                    nap = FALLBACK_POLL_S
                else:
                    nap = PENDING_POLL_S if page.pending else FALLBACK_POLL_S if not self.signal.live else remaining
                woken.wait(min(remaining, nap))
                woken.clear()

    def await_horizon(self, xid: int, store: str | None = None) -> None:
        """Wake `store`'s waiters once the feed entries of transaction `xid` are servable (PostgreSQL)."""

    # --- fleet ------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def note_store(self, store: str, *, pulled: bool = False, now: float | None = None) -> None:
        """Remember that a store was heard from (a push or a pull), for the fleet view."""

    @abc.abstractmethod
    def store_rows(self) -> list[dict[str, Any]]:
        """One row per store heard from (store_row): when it was heard, and what it last reported."""

    @abc.abstractmethod
    def store_rejections(self, store: str) -> dict[str, int]:
        """How many of a store's events were refused, by reason."""

    @abc.abstractmethod
    def stats(self) -> dict[str, Any]:
        """Counts for /v1/admin/stats."""

    # --- campaigns, catalogue, assets, orders (storage/content.py; the same for both engines) -------------

    @abc.abstractmethod
    def content_write(self, work: Callable[[Any], T], now: float | None = None) -> T:
        """Run work(db) in one write transaction (db: storage.content.Db, also a profiles.Tx)."""

    @abc.abstractmethod
    def content_read(self, work: Callable[[Any], T]) -> T:
        """Run work(db) on one consistent read snapshot (db: storage.content.Db)."""

    @abc.abstractmethod
    def content_page(self, since: str | None, limit: int, store: str) -> FeedPage:
        """The content-feed entries after `since` for `store`, resolved for it (see storage/content.py)."""

    def content_changes(self, since: str | None, limit: int, store: str, wait_s: float = 0.0) -> dict[str, Any]:
        """A page of a store's campaign / product / store changes; long-polls like `changes`."""
        return self.long_poll(lambda: self.content_page(since, limit, store), store, wait_s)

    def put_asset(self, sha: str, content_type: str, data: bytes) -> bool:
        """Store an asset under its SHA-256 (checked by the caller); True when it is new."""
        from sync.central.storage import content as rules
        return self.content_write(lambda db: rules.put_asset(db, sha, content_type, data))

    def get_asset(self, sha: str) -> tuple[str, bytes] | None:
        from sync.central.storage import content as rules
        return self.content_read(lambda db: rules.get_asset(db, sha))

    def list_assets(self) -> list[dict[str, Any]]:
        from sync.central.storage import content as rules
        return self.content_read(rules.list_assets)

    def put_product(self, sku: str, body: dict[str, Any]) -> dict[str, Any]:
        from sync.central.storage import content as rules
        return self.content_write(lambda db: rules.put_product(db, sku, body))

    def delete_product(self, sku: str) -> dict[str, Any]:
        from sync.central.storage import content as rules
        return self.content_write(lambda db: rules.delete_product(db, sku))

    def list_products(self) -> list[dict[str, Any]]:
        from sync.central.storage import content as rules
        return self.content_read(rules.list_products)

    def put_store_meta(self, store: str, body: dict[str, Any]) -> dict[str, Any]:
        from sync.central.storage import content as rules
        return self.content_write(lambda db: rules.put_store(db, store, body))

    def store_metas(self) -> dict[str, dict[str, Any]]:
        from sync.central.storage import content as rules
        return self.content_read(rules.store_metas)

    def put_campaign(self, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        """A new draft version; Conflict-free, but refused (CentralError) when an image is not uploaded."""
        from sync.central.content import images_of
        from sync.central.storage import content as rules

        def work(db: Any) -> dict[str, Any]:
            missing = rules.missing_assets(db, images_of(body))
            if missing:
                raise CentralError(f"content image {missing[0]!r} is not uploaded: PUT /v1/admin/assets/{missing[0]} "
                                   "with the image first")
            return rules.put_campaign(db, cid, body)

        return self.content_write(work)

    def publish_campaign(self, cid: str, stores: list[str] | None) -> dict[str, Any]:
        from sync.central.storage import content as rules
        return self.content_write(lambda db: rules.publish(db, cid, stores))

    def rollback_campaign(self, cid: str) -> dict[str, Any]:
        from sync.central.storage import content as rules
        return self.content_write(lambda db: rules.rollback(db, cid))

    def withdraw_campaign(self, cid: str) -> dict[str, Any]:
        from sync.central.storage import content as rules
        return self.content_write(lambda db: rules.withdraw(db, cid))

    def campaign_detail(self, cid: str) -> dict[str, Any] | None:
        """The campaign's state, versions and store reports, with every store's tags (one snapshot)."""
        from sync.central.storage import content as rules

        def read(db: Any) -> dict[str, Any] | None:
            found = rules.campaign_detail(db, cid)
            if found is not None:
                found["store_tags"] = {s: list(m.get("tags") or []) for s, m in rules.store_metas(db).items()}
            return found

        return self.content_read(read)

    def campaign_list(self) -> list[dict[str, Any]]:
        """Every campaign with its versions' bodies and store reports (for the list and the console)."""
        from sync.central.storage import content as rules

        def read(db: Any) -> list[dict[str, Any]]:
            tags = {s: list(m.get("tags") or []) for s, m in rules.store_metas(db).items()}
            out = []
            for state in rules.campaign_states(db):
                found = rules.campaign_detail(db, state.id)
                assert found is not None
                found["store_tags"] = tags
                out.append(found)
            return out

        return self.content_read(read)

    def order_ready(self, order_id: str, bay: str) -> dict[str, Any]:
        """A pickup order is ready in its store's bay: the shopper's profile shows it in `orders_ready`."""
        from sync.central.storage import profiles as rules
        return self.content_write(lambda tx: rules.order_ready(tx, order_id, bay))

    def get_order(self, order_id: str) -> dict[str, Any] | None:
        from sync.central.storage import content as rules
        return self.content_read(lambda db: rules.get_order(db, order_id))

    def orders_of(self, customer_id: str) -> list[dict[str, Any]]:
        from sync.central.storage import content as rules
        return self.content_read(lambda db: rules.orders_of(db, customer_id))
