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
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sync.central.storage.wakeup import FeedSignal
from sync.central.content import images_of
from sync.central.storage import content as content_rules
from sync.central.storage import profiles as profile_rules
from sync.central.storage.common import CentralError, FALLBACK_POLL_S, FeedPage, PENDING_POLL_S, Settings

T = TypeVar("T")
log = logging.getLogger("instore_central")


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
                woken.wait(min(remaining, self._nap(page, store, remaining)))
                woken.clear()

    def change_stream(self, since: str | None, limit: int, *, store: str | None = None,
                      wait_s: float = 0.0) -> Iterator[dict[str, Any]]:
        """The pages of a feed stream (feed_stream.py): the first at once, perhaps empty, then each page with
        changes as they come, until `wait_s` runs out or the server stops."""
        return self.follow(lambda position: self.feed_page(position, limit, store), since, store, wait_s)

    def follow(self, read: Callable[[str | None], FeedPage], since: str | None, store: str | None,
               wait_s: float) -> Iterator[dict[str, Any]]:
        """read(since) now, then read(next) each time `store`'s feeds may have grown, yielding the pages with
        something in them. One wake-up registration for the whole stream, made before the first read: a change
        committed while a page is read or sent still wakes it, so after a page the stream waits at once instead
        of reading its feed again to find it empty (long_poll's first read, once per change and store)."""
        deadline = time.monotonic() + max(0.0, wait_s)
        with self.signal.waiter(store) as woken:
            page = read(since)
            yield page.answer
            while True:
                answer = page.answer
                if not answer["more"]:  # with `more`, the next page follows at once
                    nap = self._nap(page, store, wait_s)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self.signal.closed:
                        return
                    woken.wait(min(remaining, nap))
                if deadline - time.monotonic() <= 0 or self.signal.closed:
                    return
                woken.clear()  # before the read: what commits from here on wakes the next wait
                page = read(answer["next"])
                if page.answer["changes"] or page.answer.get("reset"):
                    yield page.answer

    def _nap(self, page: FeedPage, store: str | None, longest: float) -> float:
        """How long a feed wait may sleep after `page` before reading again, a wake-up aside: entries still
        pending (a transaction not yet servable) are looked at again soon; without live notifications, polled."""
        if page.pending and page.pending_xid is not None:
            self.await_horizon(page.pending_xid, store)  # a wake-up comes once it is servable
            return FALLBACK_POLL_S
        return PENDING_POLL_S if page.pending else FALLBACK_POLL_S if not self.signal.live else longest

    def await_horizon(self, xid: int, store: str | None = None) -> None:
        """Wake `store`'s waiters once the feed entries of transaction `xid` are servable (PostgreSQL)."""

    # --- fleet ------------------------------------------------------------------------------------------

    @abc.abstractmethod
    def note_store(self, store: str, *, pulled: bool = False, now: float | None = None) -> None:
        """Remember that a store was heard from (a push or a pull), for the fleet view."""

    @abc.abstractmethod
    def note_pulls(self, pulls: dict[str, float]) -> None:
        """Remember when each of these stores last pulled (store -> epoch seconds), in one transaction; a time
        older than the one kept is ignored."""

    @abc.abstractmethod
    def store_rows(self) -> list[dict[str, Any]]:
        """One row per store heard from (store_row): when it was heard, and what it last reported."""

    @abc.abstractmethod
    def stores_pushing(self, since: float) -> int:
        """How many stores pushed at or after `since` (the push pacing's count)."""

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
        return self.content_write(lambda db: content_rules.put_asset(db, sha, content_type, data))

    def get_asset(self, sha: str) -> tuple[str, bytes] | None:
        return self.content_read(lambda db: content_rules.get_asset(db, sha))

    def list_assets(self) -> list[dict[str, Any]]:
        return self.content_read(content_rules.list_assets)

    def put_product(self, sku: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.content_write(lambda db: content_rules.put_product(db, sku, body))

    def delete_product(self, sku: str) -> dict[str, Any]:
        return self.content_write(lambda db: content_rules.delete_product(db, sku))

    def list_products(self) -> list[dict[str, Any]]:
        return self.content_read(content_rules.list_products)

    def put_store_meta(self, store: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.content_write(lambda db: content_rules.put_store(db, store, body))

    def store_metas(self) -> dict[str, dict[str, Any]]:
        return self.content_read(content_rules.store_metas)

    def put_campaign(self, cid: str, body: dict[str, Any]) -> dict[str, Any]:
        """A new draft version; Conflict-free, but refused (CentralError) when an image is not uploaded."""

        def work(db: Any) -> dict[str, Any]:
            missing = content_rules.missing_assets(db, images_of(body))
            if missing:
                raise CentralError(f"content image {missing[0]!r} is not uploaded: PUT /v1/admin/assets/{missing[0]} "
                                   "with the image first")
            return content_rules.put_campaign(db, cid, body)

        return self.content_write(work)

    def publish_campaign(self, cid: str, stores: list[str] | None) -> dict[str, Any]:
        return self.content_write(lambda db: content_rules.publish(db, cid, stores))

    def rollback_campaign(self, cid: str) -> dict[str, Any]:
        return self.content_write(lambda db: content_rules.rollback(db, cid))

    def withdraw_campaign(self, cid: str) -> dict[str, Any]:
        return self.content_write(lambda db: content_rules.withdraw(db, cid))

    def campaign_detail(self, cid: str) -> dict[str, Any] | None:
        """The campaign's state, versions and store reports, with every store's tags (one snapshot)."""

        def read(db: Any) -> dict[str, Any] | None:
            found = content_rules.campaign_detail(db, cid)
            if found is not None:
                found["store_tags"] = {s: list(m.get("tags") or []) for s, m in content_rules.store_metas(db).items()}
            return found

        return self.content_read(read)

    def campaign_list(self) -> list[dict[str, Any]]:
        """Every campaign with its versions' bodies and store reports (for the list and the console)."""

        def read(db: Any) -> list[dict[str, Any]]:
            tags = {s: list(m.get("tags") or []) for s, m in content_rules.store_metas(db).items()}
            out = []
            for state in content_rules.campaign_states(db):
                found = content_rules.campaign_detail(db, state.id)
                assert found is not None
                found["store_tags"] = tags
                out.append(found)
            return out

        return self.content_read(read)

    def order_ready(self, order_id: str, bay: str) -> dict[str, Any]:
        """A pickup order is ready in its store's bay: the shopper's profile shows it in `orders_ready`."""
        return self.content_write(lambda tx: profile_rules.order_ready(tx, order_id, bay))

    def get_order(self, order_id: str) -> dict[str, Any] | None:
        return self.content_read(lambda db: content_rules.get_order(db, order_id))

    def orders_of(self, customer_id: str) -> list[dict[str, Any]]:
        return self.content_read(lambda db: content_rules.orders_of(db, customer_id))
