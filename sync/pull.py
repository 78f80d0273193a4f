"""Pull: the central store's profile change feed into the edge's profile cache.

GET /v1/profiles/changes from the cursor the edge kept; each page is applied (upserts newer than the
cached version, erasures everywhere) in one transaction together with the new cursor, while the next
page is fetched. The loop then follows the feed as a stream (`stream=1&wait_s=`): one request that the
central store keeps open for `long_poll_s` and that carries each page for this store as it comes, so a
change arrives within about a second, a change costs no new request, and an idle store asks three times a
minute; between two requests it pauses `interval_s` (a central without streams answers the request as a
long-poll: one page, at once or when a change comes). Erasures arrive by hash
(`customer_hash`, sync.protocol.erase_key). A page with `reset` (the cursor came from another central
database) starts a full resync: every entry is taken whatever its version, and the profiles the new feed
did not deliver are dropped at the end. After a pull that applied changes (and every EVICT_EVERY_S) the
edge bounds its cache.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

import requests

from sync import protocol as p
from sync.local import Applied, FeedErasure, Local, ProfileChanges, ProfileUpsert, committed
from sync.longpoll import follow, page_params, page_timeout
from sync.text import network_reason
from sync.transport import Backoff, Errors, Metrics, SyncError, Transport, error_message

log = logging.getLogger(__name__)

T = TypeVar("T")

LONG_POLL_S = 20.0  # how long the central store may hold a pull that finds nothing new
EVICT_EVERY_S = 30.0  # an idle store bounds its profile cache this often (and after every pull that applied)


def parse_changes(page: p.ChangesPage) -> ProfileChanges:
    """A page's entries as the edge takes them: the newest per customer, the cursor to keep with them.

    Malformed entries are skipped with a warning. An erasure from a central store older than hashed
    erasures names the customer id: it is hashed here, so the edge only ever sees the erase key."""
    upserts: dict[str, tuple[int, Mapping[str, Any]]] = {}
    erasures: dict[str, int] = {}
    for ch in page.changes:
        version = ch.get("version") if isinstance(ch, dict) else None
        if isinstance(version, int):
            op, cid = ch.get("op"), ch.get("customer_id")
            if op == "erase":
                hashed = ch.get("customer_hash")
                if hashed is None and isinstance(cid, str):
                    hashed = p.erase_key(cid)
                if isinstance(hashed, str) and p.ERASE_KEY_RE.fullmatch(hashed):
                    if hashed not in erasures or version > erasures[hashed]:
                        erasures[hashed] = version
                    continue
            elif op == "upsert" and isinstance(cid, str) and isinstance(ch.get("profile"), dict):
                if cid not in upserts or version > upserts[cid][0]:
                    upserts[cid] = (version, ch["profile"])
                continue
        log.warning("ignoring a malformed change feed entry")
    return ProfileChanges(upserts=tuple(ProfileUpsert(cid, v, prof) for cid, (v, prof) in upserts.items()),
                          erasures=tuple(FeedErasure(key, v) for key, v in erasures.items()),
                          cursor=page.next)


def _lines(r: Any) -> Iterator[bytes]:
    """A streamed answer's lines as they arrive; a connection cut mid-stream is a (retryable) SyncError."""
    try:
        for line in r.iter_lines(chunk_size=None):
            if line:
                yield line
    except requests.RequestException as exc:
        raise SyncError(f"the change feed stream broke off ({network_reason(exc)})") from None


class Puller:
    """Follows the change feed; counts what it applied for status."""

    def __init__(self, transport: Transport, local: Local, errors: Errors, metrics: Metrics | None, *,
                 limit: int, timeout_s: float, task_timeout_s: float, stop: threading.Event,
                 long_poll_s: float = LONG_POLL_S) -> None:
        self.transport = transport
        self.local = local
        self.errors = errors
        self.metrics = metrics
        self.limit = max(1, min(limit, p.MAX_CHANGES_LIMIT))
        self.timeout_s = timeout_s
        self.task_timeout_s = task_timeout_s
        self.stop = stop
        self.long_poll_s = max(0.0, min(long_poll_s, float(p.MAX_CHANGES_WAIT_S)))
        self.long_polling = False  # a pull is held at the central store just now (stop need not wait for it)
        self._last_evict = 0.0
        self.last_pull: float | None = None
        self.last_attempt: float | None = None
        self.applied = 0
        self.erased = 0
        self._lock = threading.Lock()

    def changes(self, since: str | None, wait_s: float = 0.0) -> p.ChangesPage:
        """One page of the change feed after `since` (from the beginning when None); with `wait_s`, the
        central store may hold the request that long for a change when it has none (long-poll)."""
        r = self.transport.request("GET", p.CHANGES_PATH, params=page_params(self.limit, since, wait_s),
                                   timeout=page_timeout(self.timeout_s, wait_s))
        if r.status_code != 200:
            raise self._refused(r)
        return self._page(r.content)

    def pull_once(self, wait_s: float = 0.0) -> int:
        """Fetch and apply every change after the kept cursor; returns the changes applied. Raises SyncError.

        With `wait_s`, the request stays open that long at the central store and carries each page as it
        comes (a stream, sync/central/feed_stream.py; one long-poll answer from a central without streams);
        waiting holds no lock, and a page that another pull overtook meanwhile is fetched again."""
        if wait_s <= 0:
            with self._lock:
                return self._pull()
        self.last_attempt = time.time()
        cursor = self.local.cursor()
        params = page_params(self.limit, cursor, wait_s) | {p.STREAM_PARAM: "1"}
        self.long_polling = True
        r = None
        try:
            r = self.transport.request("GET", p.CHANGES_PATH, params=params, stream=True,
                                       timeout=page_timeout(self.timeout_s, wait_s))
            if r.status_code != 200:
                raise self._refused(r)
            if not r.headers.get("Content-Type", "").startswith(p.NDJSON):
                self.long_polling = False
                return self._follow(self._page(r.content), cursor)
            applied = 0
            for line in _lines(r):
                self.long_polling = False
                page = self._page(line)
                applied += self._follow(page, cursor)
                if self.stop.is_set():
                    return applied  # stopping: not back to a wait of up to long_poll_s
                if page.reset or self.local.cursor() != page.next:
                    return applied  # a resync, or another pull went further: ask again from the kept cursor
                cursor = page.next
                self.long_polling = True
            return applied
        finally:
            self.long_polling = False
            if r is not None:
                r.close()

    def _follow(self, page: p.ChangesPage, cursor: str | None) -> int:
        """Apply a page fetched from `cursor` (and what follows it when `more`); fetched afresh if another pull
        moved the kept cursor meanwhile."""
        if self.stop.is_set():
            return 0
        with self._lock:
            return self._pull(page if self.local.cursor() == cursor else None)

    @staticmethod
    def _refused(r: Any) -> SyncError:
        return SyncError(f"central store answered HTTP {r.status_code} to the change feed: {error_message(r)}",
                         status=r.status_code, retryable=r.status_code != 400)

    @staticmethod
    def _page(body: bytes) -> p.ChangesPage:
        """A page as the central sent it (an answer, or a line of a stream)."""
        try:
            return p.ChangesPage.from_dict(json.loads(body))
        except (ValueError, TypeError, AttributeError) as exc:
            raise SyncError(f"central store sent an unreadable change feed page ({exc})") from None

    def _pull(self, first: p.ChangesPage | None = None) -> int:
        if first is None:  # a request of its own (a page that came on a stream was asked for when it began)
            self.last_attempt = time.time()
        page = first or self.changes(self.local.cursor())
        changes = parse_changes(page)
        applied = 0
        resync_started: float | None = None
        while True:
            if page.reset and resync_started is None:
                log.warning("the central store's change feed restarted (another or restored database): full resync")
                resync_started = time.time()
            pending = self.local.apply_changes(changes, resync=resync_started is not None, feed_reset=page.reset)
            nxt: tuple[p.ChangesPage, ProfileChanges] | SyncError | None = None
            if page.more:  # fetch (and read) the next page while the edge applies this one
                try:
                    following = self.changes(page.next)
                    nxt = following, parse_changes(following)
                except SyncError as exc:
                    nxt = exc
            done = committed(pending, "apply a change feed page", self.task_timeout_s, self.stop)
            self._count(done)
            applied += done.changes
            if isinstance(nxt, SyncError):
                raise nxt
            if nxt is None:
                break
            page, changes = nxt
        if resync_started is not None:
            # Whatever the new feed did not mention is not in the central store any more.
            self._quietly(self.local.drop_stale_profiles(resync_started), "drop profiles the resync did not deliver")
        if applied or time.monotonic() - self._last_evict >= EVICT_EVERY_S:
            self._last_evict = time.monotonic()
            self.evict()
        self.last_pull = time.time()
        self.errors.clear("pull")
        return applied

    def _count(self, done: Applied) -> None:
        self.applied += done.changes
        self.erased += done.erased
        if self.metrics is not None and done.changes:
            self.metrics.inc("instore_edge_sync_profile_changes_total", done.changes)

    def _quietly(self, pending: Future[T], what: str) -> T | None:
        """Housekeeping after a pull: a failure is logged, and the pull still counts (it is redone later)."""
        try:
            return committed(pending, what, self.task_timeout_s, self.stop)
        except SyncError as exc:
            log.warning("could not %s: %s", what, exc)
            return None

    def evict(self) -> int:
        """Have the edge bound its profile cache; returns how many profiles it evicted."""
        return self._quietly(self.local.evict_profiles(), "bound the profile cache") or 0

    def run(self, backoff: Backoff, interval_s: float) -> None:
        """The pull thread: long-polls with a pause of interval_s between two pulls, backing off on failures."""
        follow(self.pull_once, stop=self.stop, backoff=backoff, interval_s=interval_s, long_poll_s=self.long_poll_s,
               errors=self.errors, channel="pull", what="profile pull", retry_cap_s=interval_s)
