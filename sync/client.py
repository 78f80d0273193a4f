"""The edge side of sync: push the outbox, pull the profile change feed, fetch profiles on demand.

SyncClient composes the parts (sync/push.py, pull.py, fetch.py over transport.py) with the edge's side of
the link, a `sync.local.Local`: sync never touches the edge's database or memory itself. Three threads:
push, pull, resolve; every write they cause is the edge's, done by its single writer, and the push and
pull threads wait for its commit before they move on.

Erasures travel by hash: one asked at the store goes to the central store as an `erasure` event in the
outbox (the edge's doing); the central store feeds it back to every store, which erases whoever it holds
under that hash.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from sync import package_version
from sync import protocol as p
from sync.assets import AssetCache, AssetFetcher
from sync.content import ContentPuller
from sync.fetch import Fetcher
from sync.local import ContentLocal, Local, LocalCounts, LocalError, LocalReads, OutboxStats
from sync.pull import LONG_POLL_S, Puller
from sync.push import PUSH_LINGER_S, Pusher
from sync.transport import TOKEN_HINT, Backoff, CircuitBreaker, Errors, Metrics, SyncError, Transport

log = logging.getLogger(__name__)

THREADS = ("sync-push", "sync-pull", "sync-resolve", "sync-content", "sync-assets")
HEALTH_CACHE_S = 5.0  # a health report is rebuilt at most this often (it reads the outbox and readiness)


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """Where the central store is and how to talk to it: [central] of the store's config, plus tuning
    (back-off, timeouts, breaker) that tests and benchmarks shorten."""

    store_id: str
    url: str | None = None
    token: str | None = None
    pull_interval_s: float = 1.0  # the pause between two pulls (each long-polls up to long_poll_s)
    push_batch: int = 500
    fetch_timeout_s: float = 0.3
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    push_timeout_s: float = 30.0
    pull_timeout_s: float = 30.0
    push_idle_s: float = 1.0
    push_linger_s: float = PUSH_LINGER_S
    changes_limit: int = p.MAX_CHANGES_LIMIT
    long_poll_s: float = LONG_POLL_S
    breaker_threshold: int = 3
    breaker_cooldown_s: float = 10.0
    task_timeout_s: float = 60.0  # how long sync waits for the edge to commit a write
    content: bool = False  # follow the store's content channel (campaigns, catalogue) and download assets
    asset_timeout_s: float = 60.0  # one asset download

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", self.url.rstrip("/") if self.url else None)  # one form of "none"


class SyncClient:
    """Edge ⇄ central sync worker over the edge's `Local`."""

    def __init__(self, settings: SyncSettings, local: Local, metrics: Metrics | None = None, *,
                 assets: AssetCache | None = None) -> None:
        """`assets`: the edge's asset cache; with settings.content and a `local` that is also a ContentLocal,
        the content channel and the asset downloader run too."""
        self.settings = settings
        self.local = local
        self.metrics = metrics
        self.transport = Transport(settings.url, settings.token, settings.store_id)
        self.errors = Errors(metrics)
        self.breaker = CircuitBreaker(settings.breaker_threshold, settings.breaker_cooldown_s)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._health: tuple[float, dict[str, Any]] = (0.0, {})
        s = settings
        self.pusher = Pusher(self.transport, local, self.errors, metrics, batch=s.push_batch,
                             timeout_s=s.push_timeout_s, task_timeout_s=s.task_timeout_s, stop=self._stop,
                             health=self.health)
        self.puller = Puller(self.transport, local, self.errors, metrics, limit=s.changes_limit,
                             timeout_s=s.pull_timeout_s, task_timeout_s=s.task_timeout_s, stop=self._stop,
                             long_poll_s=s.long_poll_s)
        self.fetcher = Fetcher(self.transport, local, self.errors, timeout_s=s.fetch_timeout_s,
                               breaker=self.breaker, stop=self._stop)
        self.content: ContentPuller | None = None
        self.assets: AssetFetcher | None = None
        if s.content and assets is not None:
            content_local: ContentLocal = local  # type: ignore[assignment]  # the edge's Uplink is both
            self.assets = AssetFetcher(self.transport, content_local, assets, self.errors, stop=self._stop,
                                       timeout_s=s.asset_timeout_s, task_timeout_s=s.task_timeout_s)
            self.content = ContentPuller(self.transport, content_local, self.errors, metrics, store_id=s.store_id,
                                         limit=s.changes_limit, timeout_s=s.pull_timeout_s,
                                         task_timeout_s=s.task_timeout_s, stop=self._stop, long_poll_s=s.long_poll_s,
                                         on_page=self.assets.wake)
        if metrics is not None:
            metrics.gauge("instore_edge_sync_last_success_timestamp", lambda: self.pusher.last_success or 0.0)
            metrics.gauge("instore_edge_sync_last_pull_timestamp", lambda: self.puller.last_pull or 0.0)
            metrics.gauge("instore_edge_sync_outbox_oldest_age_seconds",
                          lambda: outbox_stats(self.local).oldest_age_s or 0.0)
            metrics.gauge("instore_edge_sync_breaker_open", lambda: 0.0 if self.breaker.state == "closed" else 1.0)

    # --- life cycle -------------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return bool(self.transport.url)

    def start(self) -> SyncClient:
        """Start the push, pull and resolve threads (when a central store is configured)."""
        if not self.enabled:
            log.info("sync disabled: [central].url is not set")
            return self
        if not self.settings.token:
            log.error("[central].token is not set: the central store will refuse this store; %s", TOKEN_HINT)
        s = self.settings
        targets = {
            "sync-push": lambda: self.pusher.run(self._wake, Backoff(s.backoff_base_s, s.backoff_cap_s),
                                                 s.push_idle_s, s.push_linger_s),
            "sync-pull": lambda: self.puller.run(Backoff(s.backoff_base_s, s.backoff_cap_s), s.pull_interval_s),
            "sync-resolve": self.fetcher.run,
        }
        if self.content is not None and self.assets is not None:
            content, assets = self.content, self.assets
            targets["sync-content"] = lambda: content.run(Backoff(s.backoff_base_s, s.backoff_cap_s),
                                                          s.pull_interval_s)
            targets["sync-assets"] = lambda: assets.run(Backoff(s.backoff_base_s, s.backoff_cap_s))
        for name in targets:
            t = threading.Thread(target=targets[name], name=name, daemon=True)
            t.start()
            self._threads[name] = t
        log.info("sync with %s started (store %s)", self.transport.url, s.store_id)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self.fetcher.wake()
        if self.assets is not None:
            self.assets.wake()
        for name, t in self._threads.items():
            # A pull held by the central store (long-poll) ends on its own; it applies nothing once stopping.
            held = (name == "sync-pull" and self.puller.long_polling) or \
                (name == "sync-content" and self.content is not None and self.content.long_polling)
            t.join(0.5 if held else timeout)
        self._threads = {}
        self.transport.close()

    def thread(self, name: str) -> threading.Thread | None:
        """One of THREADS once started (for the watchdog), else None."""
        return self._threads.get(name)

    def pull_content_once(self) -> int:
        """Fetch and apply every content channel change after the kept cursor; returns the entries taken."""
        if self.content is None:
            raise SyncError("the content channel is off (settings.content) or the edge has no asset cache",
                            retryable=False)
        return self.content.pull_once()

    def fetch_assets_once(self) -> int:
        """Download the assets the edge wants and has not cached; returns how many arrived."""
        if self.assets is None:
            raise SyncError("the asset downloader is off (settings.content) or the edge has no asset cache",
                            retryable=False)
        return self.assets.fetch_missing()

    def wake(self) -> None:
        """New events are in the outbox: push now rather than at the next idle poll (cheap, any thread)."""
        self._wake.set()

    # --- one step at a time (what the threads do; also for tests and benchmarks) ---------------------------

    def push_once(self, max_batches: int | None = None) -> int:
        """Push until the outbox is empty (or max_batches sent); returns events delivered. Raises SyncError."""
        return self.pusher.push_once(max_batches)

    def pull_once(self) -> int:
        """Fetch and apply every change after the kept cursor; returns the changes applied. Raises SyncError."""
        return self.puller.pull_once()

    def fetch_profile(self, customer_id: str) -> dict[str, Any] | None:
        return self.fetcher.fetch_profile(customer_id)

    def resolve(self, keys: list[str]) -> dict[str, str] | None:
        return self.fetcher.resolve(keys)

    def request_resolution(self, keys: list[str]) -> None:
        self.fetcher.request_resolution(keys)

    def report_health(self) -> None:
        """Send the health report now (an empty push). Raises SyncError."""
        self.pusher.report_health()

    def status(self) -> dict[str, Any]:
        """For `instore-edge sync status`, /api/v1/sync, /readyz and the dashboard."""
        return status(self.settings, self.local, self)

    def health(self) -> dict[str, Any]:
        """This edge's health as the central's fleet view shows it (sync.protocol.HEALTH_FIELDS): sync's own
        figures and what the edge says of itself (Local.health), rebuilt at most every HEALTH_CACHE_S."""
        now = time.time()
        built, report = self._health
        if now - built >= HEALTH_CACHE_S:
            stats = outbox_stats(self.local)
            report = {"version": package_version(), "outbox_pending": stats.pending,
                      "outbox_oldest_age_s": None if stats.oldest_age_s is None else round(stats.oldest_age_s, 3),
                      "last_pull_at": self.puller.last_pull, "breaker": self.breaker.state}
            try:
                report.update(asdict(self.local.health()))
            except Exception:  # a report with less in it beats no push
                log.exception("the edge could not say how it is; its health goes without it")
            self._health = (now, report)
        return {**report, "sent_at": now}


def outbox_stats(local: LocalReads) -> OutboxStats:
    """The edge's outbox backlog; empty when its database cannot be read just now."""
    try:
        return local.outbox_stats()
    except LocalError:
        return OutboxStats(0, None)


def status(settings: SyncSettings, local: LocalReads, client: SyncClient | None = None) -> dict[str, Any]:
    """What the edge's database says about sync, and what `client` (this process's worker) did; without a
    client (the edge not running: `instore-edge sync status`) its fields are empty."""
    stats = outbox_stats(local)
    try:
        cursor: str | None = local.cursor()
        counts = local.counts()
    except LocalError:
        cursor, counts = None, LocalCounts(0, 0, 0)
    push = client.pusher if client else None
    pull = client.puller if client else None
    errors = client.errors if client else Errors(None)
    return {
        "enabled": bool(settings.url),
        "central_url": settings.url,
        "store": settings.store_id,
        "running": client is not None and any(t.is_alive() for t in client._threads.values()),
        "auth_ok": client.transport.auth_ok if client else None,
        "outbox_pending": stats.pending,
        "outbox_oldest_age_s": None if stats.oldest_age_s is None else round(stats.oldest_age_s, 3),
        "last_push_success": push.last_success if push else None,
        "last_push_attempt": push.last_attempt if push else None,
        "last_pull": pull.last_pull if pull else None,
        "last_pull_attempt": pull.last_attempt if pull else None,
        "cursor": cursor,
        "breaker": client.breaker.state if client else "closed",
        "last_error": errors.last,
        "last_error_at": errors.last_at,
        "errors": dict(errors.by_op),
        "pushed": push.pushed if push else 0,
        "duplicates": push.duplicates if push else 0,
        "replayed_batches": push.replayed if push else 0,
        # Seconds between pushes the central store asks for (a fleet above its push budget); None: once a second.
        "push_every_s": push.asked_every_s if push else None,
        "rejected_total": counts.rejected,
        "profiles_cached": counts.profiles_cached,
        "changes_applied": pull.applied if pull else 0,
        "content": None if client is None or client.content is None else {
            "supported": client.content.supported, "last_pull": client.content.last_pull,
            "changes_taken": client.content.changes_taken, "campaigns_applied": client.content.applied,
            "campaigns_refused": client.content.refused, "campaigns_pending": client.content.pending,
            "assets_fetched": client.assets.fetched if client.assets else 0,
            "assets_refused": client.assets.refused if client.assets else 0},
        # Erasures asked here that the central store has not fed back yet (their tombstones are pending).
        "erasures_pending": counts.erasures_pending,
    }

