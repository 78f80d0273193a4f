"""The store's content channel: campaigns, catalogue and store metadata from the central store to the edge.

GET /v1/stores/{store}/content/changes from the cursor the edge kept, long-polled like the profile feed
(sync/pull.py): the central store holds the request until a change for this store arrives (or `long_poll_s`
passes). Each page is taken by the edge (`ContentLocal.apply_content`) in one transaction with its cursor:
campaign versions are validated and applied (or refused, or left pending until their assets are on the
device), products kept; then the asset downloader is woken. Entries are compacted per campaign and per sku
(the newest wins); versions only grow and the edge takes an entry only when it is newer than what it holds.
A central store without the channel (HTTP 404) is asked again every few minutes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from sync import protocol as p
from sync.local import CampaignChange, ContentApplied, ContentChanges, ContentLocal, ProductChange, committed
from sync.longpoll import follow, page_params, page_timeout
from sync.transport import Backoff, Errors, Metrics, SyncError, Transport, error_message

log = logging.getLogger(__name__)

CONTENT_CHANGES_PATH = "/v1/stores/{store}/content/changes"
LONG_POLL_S = 20.0
NOT_SUPPORTED_RETRY_S = 300.0  # a central store without the channel (404) is asked again this often
ID_MAX = 128


def _ident(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= ID_MAX and value.isprintable() else None


def parse_content(page: Mapping[str, Any]) -> ContentChanges:
    """A page's entries as the edge takes them: the newest per campaign and per sku. Malformed entries are
    skipped with a warning naming what was wrong (never the entry's content)."""
    campaigns: dict[str, CampaignChange] = {}
    products: dict[str, ProductChange] = {}
    store: Mapping[str, Any] | None = None
    store_version: int | None = None
    for ch in page.get("changes") or []:
        if not isinstance(ch, dict):
            log.warning("ignoring a content channel entry that is not an object")
            continue
        kind, op, version = ch.get("kind"), ch.get("op"), ch.get("version")
        if type(version) is not int:
            log.warning("ignoring a %s entry of the content channel without an integer version", kind)
            continue
        if kind == "campaign":
            cid = _ident(ch.get("id"))
            body = ch.get("campaign")
            if cid is None or op not in ("live", "withdrawn") or (op == "live" and not isinstance(body, dict)):
                log.warning("ignoring a malformed campaign entry of the content channel (op %r)", op)
                continue
            if cid not in campaigns or version > campaigns[cid].version:
                campaigns[cid] = CampaignChange(cid, version, op, body if op == "live" else None)
        elif kind == "product":
            sku = _ident(ch.get("sku"))
            body = ch.get("product")
            if sku is None or op not in ("upsert", "delete") or (op == "upsert" and not isinstance(body, dict)):
                log.warning("ignoring a malformed product entry of the content channel (op %r)", op)
                continue
            if sku not in products or version > products[sku].version:
                products[sku] = ProductChange(sku, version, op, body if op == "upsert" else None)
        elif kind == "store":
            if isinstance(ch.get("store"), dict) and (store_version is None or version > store_version):
                store, store_version = ch["store"], version
        else:
            log.warning("ignoring a content channel entry of unknown kind %r", str(kind)[:40])
    nxt = page.get("next")
    return ContentChanges(campaigns=tuple(campaigns.values()), products=tuple(products.values()), store=store,
                          store_version=store_version, cursor=nxt if isinstance(nxt, str) else None)


class ContentPuller:
    """Follows the content channel; counts what it applied for status."""

    def __init__(self, transport: Transport, local: ContentLocal, errors: Errors, metrics: Metrics | None, *,
                 store_id: str, limit: int, timeout_s: float, task_timeout_s: float, stop: threading.Event,
                 long_poll_s: float = LONG_POLL_S, on_page: Callable[[], None] | None = None) -> None:
        self.transport = transport
        self.local = local
        self.errors = errors
        self.metrics = metrics
        self.path = CONTENT_CHANGES_PATH.format(store=store_id)
        self.limit = max(1, min(limit, p.MAX_CHANGES_LIMIT))
        self.timeout_s = timeout_s
        self.task_timeout_s = task_timeout_s
        self.stop = stop
        self.long_poll_s = max(0.0, min(long_poll_s, float(p.MAX_CHANGES_WAIT_S)))
        self.on_page = on_page
        self.long_polling = False
        self.supported: bool | None = None  # None until the central store answered
        self.last_pull: float | None = None
        self.applied = self.refused = self.pending = self.changes_taken = 0
        self._lock = threading.Lock()

    def page(self, since: str | None, wait_s: float = 0.0) -> dict[str, Any]:
        r = self.transport.request("GET", self.path, params=page_params(self.limit, since, wait_s),
                                   timeout=page_timeout(self.timeout_s, wait_s))
        if r.status_code == 404:
            self.supported = False
            raise SyncError(f"the central store has no content channel ({self.path}: HTTP 404): campaigns and "
                            "the catalogue are not delivered; upgrade the central store", status=404)
        if r.status_code != 200:
            raise SyncError(f"central store answered HTTP {r.status_code} to the content channel: {error_message(r)}",
                            status=r.status_code, retryable=r.status_code != 400)
        try:
            body = r.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("changes", []), list):
            raise SyncError("central store sent an unreadable content channel page")
        self.supported = True
        return body

    def pull_once(self, wait_s: float = 0.0) -> int:
        """Fetch and apply every content change after the kept cursor; returns the entries taken. Raises SyncError.
        With `wait_s`, the first request may wait that long at the central store (long-poll)."""
        cursor = self.local.content_cursor()
        self.long_polling = wait_s > 0
        try:
            page = self.page(cursor, wait_s)
        finally:
            self.long_polling = False
        if self.stop.is_set():
            return 0
        taken = 0
        with self._lock:
            if self.local.content_cursor() != cursor:  # another pull overtook this one: start from its cursor
                page = self.page(self.local.content_cursor())
            while True:
                changes = parse_content(page)
                done: ContentApplied = committed(self.local.apply_content(changes), "apply a content channel page",
                                                 self.task_timeout_s, self.stop)
                self._count(done)
                taken += done.changes
                if not page.get("more") or changes.cursor is None:
                    break
                page = self.page(changes.cursor)
        self.last_pull = time.time()
        self.errors.clear("content")
        if self.on_page is not None:
            self.on_page()
        return taken

    def _count(self, done: ContentApplied) -> None:
        self.changes_taken += done.changes
        self.applied += done.applied
        self.refused += done.refused
        self.pending += done.pending
        if self.metrics is not None:
            for what, n in (("applied", done.applied), ("refused", done.refused), ("pending", done.pending)):
                if n:
                    self.metrics.inc("instore_edge_campaign_versions_total", n, outcome=what)

    def run(self, backoff: Backoff, interval_s: float) -> None:
        """The content thread: long-polls with a pause of interval_s between two pulls, backing off on failures."""

        def older_central(exc: SyncError, delay: float) -> float | None:
            if exc.status != 404:
                return None
            if delay != NOT_SUPPORTED_RETRY_S:  # an older central store: not an error of this edge (status shows it)
                log.info("%s", exc)
            return NOT_SUPPORTED_RETRY_S

        follow(self.pull_once, stop=self.stop, backoff=backoff, interval_s=interval_s, long_poll_s=self.long_poll_s,
               errors=self.errors, channel="content", what="content pull", retry_cap_s=max(interval_s, 1.0),
               held=older_central)
