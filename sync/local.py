"""What sync needs of the edge, in the edge's words: the narrow interface the edge implements
(edge/uplink.py) and sync calls; sync never imports the edge.

No SQL, connection or edge class crosses it. Reads return the frozen values below. Writes go to the
edge's single writer and return a Future that completes once the write committed (with its result), or
fails with LocalError when the edge rolled it back (nothing of it applied); `committed` waits for one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sync.transport import SyncError

T = TypeVar("T")


class LocalError(SyncError):
    """The edge could not read or write what sync asked of it (its database); the step is retried later."""


@dataclass(frozen=True, slots=True)
class OutboxBatch:
    """Events waiting in the outbox, oldest first: seqs, ids, and each event's wire form (one JSON object,
    as sync.protocol.WireEvent reads it), ready to be sent as they are."""

    seqs: tuple[int, ...]
    ids: tuple[str, ...]
    events: tuple[str, ...]

    @property
    def first(self) -> int:
        return self.seqs[0]

    @property
    def last(self) -> int:
        return self.seqs[-1]


@dataclass(frozen=True, slots=True)
class Refusal:
    """An outbox event the central store will never take as it is, and why: kept where store IT sees it."""

    seq: int
    event_id: str
    reason: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Events not yet taken by the central store, and the age of the oldest (None when there is none)."""

    pending: int
    oldest_age_s: float | None


@dataclass(frozen=True, slots=True)
class ProfileUpsert:
    """A profile from the central store (change feed or fetch), as it sent it: where the profile's own
    customer_id or version differ from the fields, the fields win."""

    customer_id: str
    version: int
    profile: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class FeedErasure:
    """The central store erased a customer: named by erase key (sync.protocol.erase_key), never by id."""

    key: str
    version: int


@dataclass(frozen=True, slots=True)
class ProfileChanges:
    """A change feed page, the newest entry per customer, and the cursor to keep with it (None: keep the
    cursor as it is, e.g. for a fetched profile)."""

    upserts: tuple[ProfileUpsert, ...] = ()
    erasures: tuple[FeedErasure, ...] = ()
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """How many changes the edge took (newer than what it held), and how many of them were erasures."""

    changes: int = 0
    erased: int = 0


@dataclass(frozen=True, slots=True)
class EdgeHealth:
    """What the edge says of itself in the health report sent with its pushes (sync adds its own figures:
    version, outbox, last pull, breaker): its readiness verdict and the checks failing, the inputs it could
    not take in the last hour, the threads that died."""

    ready: bool
    not_ready: tuple[str, ...] = ()
    deadletters_last_hour: int = 0
    dead_threads: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LocalCounts:
    """For status: events the central store refused, profiles cached, erasures asked here not yet confirmed."""

    rejected: int
    profiles_cached: int
    erasures_pending: int


@dataclass(frozen=True, slots=True)
class CampaignChange:
    """A campaign entry of the store's content channel: the version `live` at this store (with its body), or
    `withdrawn` (nothing of it may show any more)."""

    id: str
    version: int
    op: str  # "live" | "withdrawn"
    campaign: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ProductChange:
    """A catalogue entry of the content channel, resolved for this store: `upsert` (with the product) or `delete`."""

    sku: str
    version: int
    op: str  # "upsert" | "delete"
    product: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ContentChanges:
    """A content channel page (the newest entry per campaign and per sku), the store's own metadata when the
    page has it, and the cursor to keep with them."""

    campaigns: tuple[CampaignChange, ...] = ()
    products: tuple[ProductChange, ...] = ()
    store: Mapping[str, Any] | None = None
    store_version: int | None = None
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class ContentApplied:
    """What the edge made of a content page: entries taken (newer than held), campaigns applied now, refused,
    and waiting for their assets."""

    changes: int = 0
    applied: int = 0
    refused: int = 0
    pending: int = 0


class LocalReads(Protocol):
    """What sync reads of the edge (any thread; also without a running edge, for `sync status`)."""

    def outbox_batch(self, after_seq: int, limit: int) -> OutboxBatch | None:
        """Up to `limit` outbox events after `after_seq`, in seq order; None when there is none."""
        ...

    def outbox_stats(self) -> OutboxStats:
        ...

    def cursor(self) -> str | None:
        """The change feed cursor kept with the last page applied; None before the first pull."""
        ...

    def counts(self) -> LocalCounts:
        ...


class ContentLocal(Protocol):
    """What the content channel (sync/content.py) and the asset downloader (sync/assets.py) ask of the edge."""

    def content_cursor(self) -> str | None:
        """The content channel cursor kept with the last page applied; None before the first pull."""
        ...

    def assets_wanted(self) -> tuple[str, ...]:
        """SHA-256 names of the assets the campaigns and products held here use that are not cached yet."""
        ...

    def assets_pinned(self) -> frozenset[str]:
        """SHA-256 names the cache must keep (used by an applied or pending campaign, or a product)."""
        ...

    def apply_content(self, changes: ContentChanges) -> Future[ContentApplied]:
        """Take a content page and keep its cursor, in one transaction: entries newer than held; each campaign
        version validated against the store and applied (or refused, or pending its assets) atomically."""
        ...

    def assets_arrived(self, names: Sequence[str]) -> Future[int]:
        """These assets are now in the cache: apply the pending campaigns they complete; returns how many."""
        ...


class Local(LocalReads, Protocol):
    """What sync asks of a running edge: how it is, and writes, each returning a Future completing at its commit."""

    def health(self) -> EdgeHealth:
        """How the edge is just now (any thread; sync calls it at most every few seconds)."""
        ...

    def settle(self, delivered: Sequence[int], refused: Sequence[Refusal]) -> Future[None]:
        """The central store answered for these outbox seqs: delivered ones leave the outbox; refused ones
        are recorded with their reason, then leave it too."""
        ...

    def apply_changes(self, changes: ProfileChanges, *, resync: bool, feed_reset: bool) -> Future[Applied]:
        """Apply a change feed page and keep its cursor, in one transaction: upserts newer than the cached
        version, erasures everywhere. `resync`: take every entry whatever its version (a full resync);
        `feed_reset`: the feed restarted from its beginning (another central database)."""
        ...

    def drop_stale_profiles(self, since: float) -> Future[None]:
        """After a full resync: forget the profiles the new feed did not deliver since `since` (time.time())."""
        ...

    def evict_profiles(self) -> Future[int]:
        """Bound the profile cache (size and age, the edge's settings); returns how many were evicted."""
        ...

    def cache_profile(self, profile: ProfileUpsert) -> Future[Applied]:
        """Keep a profile fetched on demand (unless the edge holds a newer one or erased the customer)."""
        ...

    def store_identity_matches(self, matches: Mapping[str, str]) -> Future[None]:
        """Identity key → customer id answers of the central store (except customers erased here)."""
        ...


def committed(pending: Future[T], what: str, timeout: float, stop: threading.Event | None = None) -> T:
    """A write's result once committed. Raises LocalError when the edge rolled it back, SyncError when it
    did not commit within `timeout` seconds or `stop` was set meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return pending.result(0.1)
        except TimeoutError:
            if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                raise SyncError(f"the edge writer did not {what} in time") from None
