"""The edge's side of the sync link: `sync.local.Local` over the edge's database and memory.

Sync (sync/) asks in the words of sync/local.py; this answers from the edge. Each write runs as a task
in the pipeline's single writer (`submit_task`, edge.pipeline.Inbox), inside its transaction, and its
Future completes after the commit. The SQL is edge/store's (`outbox.py`, `profiles.py`); erasures and
the tombstones that keep erased shoppers from being learned again are edge/privacy.py's. In the same
task the in-memory state follows the tables through what the composition root hands in: identity's map
(`remember`), the shoppers' cache and the displays (`profiles_changed`), and every trace of a customer
the feed erased (`erase_by_key`, which forgets them everywhere). Reads use a WAL connection of their
own per thread. The edge's health, which sync sends with its pushes, is the composition root's readiness
and dead threads plus the dead letters of the last hour.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol, TypeVar

from edge import privacy
from edge.config import Config
from edge.domain import campaigns as campaign_domain
from edge.store import campaigns as campaign_table
from edge.store import outbox, profiles
from edge.store.queries import deadletters_since, outbox_stats
from edge.store.writer import Writer
from sync.assets import AssetCache
from sync.client import SyncSettings
from sync.local import (Applied, ContentApplied, ContentChanges, EdgeHealth, LocalCounts, LocalError, OutboxBatch,
                        OutboxStats, ProfileChanges, ProfileUpsert, Refusal)

T = TypeVar("T")
SubmitTask = Callable[[Callable[[Writer], None], Callable[[], None] | None], None]  # Inbox.submit_task
Remember = Callable[[str, str], None]  # identity key, customer id: Identity.remember
ProfilesChanged = Callable[[sqlite3.Connection, list[str]], None]  # Privacy.profiles_changed
Readiness = Callable[[], Mapping[str, Mapping[str, Any]]]  # App.readiness: check name → {"ok": bool, ...}
DeadThreads = Callable[[], Mapping[str, str]]  # App.dead_threads: thread name → why


class EraseByKey(Protocol):
    """edge.privacy.Privacy.erase_by_key: erasures the central store fed, everywhere; returns how many it took."""

    def __call__(self, conn: sqlite3.Connection, erases: Sequence[tuple[str, int]], now: float, *,
                 force: bool = False) -> int: ...


def sync_settings(cfg: Config, **tuning: Any) -> SyncSettings:
    """The sync client's settings from [store] and [central]; `tuning` sets the rest (tests, benchmarks)."""
    central = cfg.central
    tuning.setdefault("content", True)
    return SyncSettings(store_id=cfg.store.id, url=central.url, token=central.token,
                        pull_interval_s=float(central.pull_interval_s), push_batch=int(central.push_batch),
                        fetch_timeout_s=central.fetch_timeout_ms / 1000.0, **tuning)


def asset_cache(cfg: Config) -> AssetCache:
    """The campaign and product assets on this device: [central] assets_dir (default: beside the database)."""
    root = cfg.central.assets_dir or str(Path(cfg.db.path).with_name(Path(cfg.db.path).name + "-assets"))
    return AssetCache(root, int(cfg.central.assets_max_mb) * 1024 * 1024)


class UplinkReads:
    """What sync reads of the edge, on a WAL connection per thread. Alone (without a writer) it serves
    `instore-edge sync status` while the edge is stopped."""

    def __init__(self, db_path: str | Path) -> None:
        self.db_path = str(db_path)
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def _read(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._conn())
        except sqlite3.Error as exc:
            raise LocalError(f"cannot read {what} ({exc})") from None

    def outbox_batch(self, after_seq: int, limit: int) -> OutboxBatch | None:
        return self._read("the outbox", lambda conn: outbox.outbox_batch(conn, after_seq, limit))

    def outbox_stats(self) -> OutboxStats:
        pending, age = self._read("the outbox", lambda conn: outbox_stats(conn, time.time()))
        return OutboxStats(pending, age)

    def cursor(self) -> str | None:
        return self._read("the change feed cursor", profiles.read_cursor)

    def counts(self) -> LocalCounts:
        return self._read("the sync counts", lambda conn: LocalCounts(
            rejected=outbox.rejected_count(conn), profiles_cached=profiles.cached_count(conn),
            erasures_pending=privacy.pending_count(conn)))

    def content_cursor(self) -> str | None:
        return self._read("the content channel cursor", campaign_table.read_cursor)

    def assets_pinned(self) -> frozenset[str]:
        return frozenset(self._read("the campaigns' assets", campaign_domain.wanted_assets))


class Uplink(UplinkReads):
    """sync.local.Local for a running edge: writes through the pipeline's writer, memory kept in step.

    remember(key, customer): an identity key the central store gave; profiles_changed(conn, ids): cached
    profiles changed (the shoppers' cache, displays of a revoked consent); erase_by_key(conn, erasures,
    now, force=): erasures the central store fed, everywhere (tables, memory, the WAL's old pages).
    max_profiles, profile_ttl_s: the cache's bound ([central] cache_max_profiles, cache_ttl_s). readiness(),
    dead_threads(): how the running edge is, for its health report."""

    def __init__(self, db_path: str | Path, submit_task: SubmitTask, *, remember: Remember,
                 profiles_changed: ProfilesChanged, erase_by_key: EraseByKey,
                 max_profiles: int, profile_ttl_s: float, readiness: Readiness, dead_threads: DeadThreads,
                 campaigns: campaign_domain.Campaigns | None = None, assets: AssetCache | None = None) -> None:
        """`campaigns`, `assets`: the campaigns held here and the asset cache (the content channel's side)."""
        super().__init__(db_path)
        self.campaigns = campaigns
        self.assets = assets
        self.submit_task = submit_task
        self.remember = remember
        self.profiles_changed = profiles_changed
        self.erase_by_key = erase_by_key
        self.max_profiles = max_profiles
        self.profile_ttl_s = profile_ttl_s
        self.readiness = readiness
        self.dead_threads = dead_threads

    def health(self) -> EdgeHealth:
        since = time.time() - 3600
        deadletters = self._read("the dead letters", lambda conn: deadletters_since(conn, since))
        checks = self.readiness()
        return EdgeHealth(ready=all(c["ok"] for c in checks.values()),
                          not_ready=tuple(name for name, c in checks.items() if not c["ok"]),
                          deadletters_last_hour=deadletters, dead_threads=tuple(sorted(self.dead_threads())))

    def _write(self, what: str, fn: Callable[[Any], T], *, with_writer: bool = False) -> Future[T]:
        """Run fn(write connection) in the writer's transaction; the Future gets its result at the commit,
        or LocalError when fn raised (the writer rolled it back and logged why)."""
        pending: Future[T] = Future()
        outcome: list[T] = []

        def task(writer: Writer) -> None:
            outcome.clear()  # a batch the writer retries runs its tasks again
            outcome.append(fn(writer if with_writer else writer.conn))

        def done() -> None:
            if outcome:
                pending.set_result(outcome[0])
            else:
                pending.set_exception(LocalError(f"the edge writer failed to {what}; see the edge log"))

        self.submit_task(task, done)
        return pending

    def _task(self, what: str, fn: Callable[[Writer], T]) -> Future[T]:
        """Like _write, with the writer itself (for writes that put events in the outbox)."""
        return self._write(what, fn, with_writer=True)

    def settle(self, delivered: Sequence[int], refused: Sequence[Refusal]) -> Future[None]:
        now = time.time()
        return self._write("settle pushed events in the outbox",
                           lambda conn: outbox.settle(conn, delivered, refused, now))

    def apply_changes(self, changes: ProfileChanges, *, resync: bool, feed_reset: bool) -> Future[Applied]:
        def apply(conn: sqlite3.Connection) -> Applied:
            if feed_reset:
                privacy.forget_confirmed_tombstones(conn)
            applied = self._apply(conn, changes, force=resync)
            if changes.cursor is not None:
                profiles.keep_cursor(conn, changes.cursor)
            return applied

        return self._write("apply a change feed page (the cursor stays where it was)", apply)

    def cache_profile(self, profile: ProfileUpsert) -> Future[Applied]:
        return self._write("cache a fetched profile",
                           lambda conn: self._apply(conn, ProfileChanges(upserts=(profile,)), force=False))

    def _apply(self, conn: sqlite3.Connection, changes: ProfileChanges, *, force: bool) -> Applied:
        """Upserts, then erasures; memory follows each (upserted profiles are re-read before any erasure).

        A customer erased here and not yet confirmed is never learned again, whatever the version, even on a
        full resync; a confirmed erasure refuses the versions up to its own (privacy.still_erased)."""
        now = time.time()
        upserts = changes.upserts
        if upserts:
            erased = privacy.still_erased(conn, {u.customer_id: u.version for u in upserts}, force=force)
            if erased:
                upserts = tuple(u for u in upserts if u.customer_id not in erased)
        upserted = profiles.upsert_profiles(conn, upserts, force=force, now=now)
        for key, customer in upserted.identities:
            self.remember(key, customer)
        if upserted.customers:
            self.profiles_changed(conn, upserted.customers)
        erasures = 0
        if changes.erasures:
            erasures = self.erase_by_key(conn, [(e.key, e.version) for e in changes.erasures], now, force=force)
        return Applied(len(upserted.customers) + erasures, erasures)

    def store_identity_matches(self, matches: Mapping[str, str]) -> Future[None]:
        def store(conn: sqlite3.Connection) -> None:
            # Not to customers erased here: a resolve answered before the central store applied the erasure
            # must not bring the shopper back.
            customers = list(set(matches.values()))
            cached = profiles.cached_versions(conn, customers)
            erased = privacy.still_erased(conn, {c: cached.get(c, -1) for c in customers})
            kept = {k: c for k, c in matches.items() if c not in erased}
            profiles.keep_identities(conn, kept, time.time())
            for key, customer in kept.items():
                self.remember(key, customer)

        return self._write("keep identity matches", store)

    def drop_stale_profiles(self, since: float) -> Future[None]:
        return self._write("drop profiles a full resync did not deliver",
                           lambda conn: profiles.drop_stale_profiles(conn, since))

    def evict_profiles(self) -> Future[int]:
        def evict(conn: sqlite3.Connection) -> int:
            now = time.time()
            evicted = profiles.evict_profiles(conn, self.max_profiles, self.profile_ttl_s, now)
            privacy.expire_tombstones(conn, now, self.profile_ttl_s)
            return evicted

        return self._write("bound the profile cache", evict)

    # --- the content channel (sync/content.py, sync/assets.py) ---

    def _campaigns(self) -> campaign_domain.Campaigns:
        if self.campaigns is None:
            raise LocalError("this edge takes no campaigns (built without them)")
        return self.campaigns

    def assets_wanted(self) -> tuple[str, ...]:
        wanted = self._read("the campaigns' assets", campaign_domain.wanted_assets)
        return tuple(sorted(wanted if self.assets is None else self.assets.missing(wanted)))

    def apply_content(self, changes: ContentChanges) -> Future[ContentApplied]:
        campaigns = self._campaigns()
        return self._task("take a content channel page (the cursor stays where it was)",
                          lambda writer: campaigns.take(writer, changes))

    def assets_arrived(self, names: Sequence[str]) -> Future[int]:
        campaigns = self._campaigns()
        return self._task("apply campaigns whose assets arrived", lambda writer: campaigns.assets_arrived(writer, names))
