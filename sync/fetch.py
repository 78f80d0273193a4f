"""On-demand requests for cache misses: fetch a profile, resolve identity keys.

Each has a short timeout behind the circuit breaker, so an unreachable central store costs a shopper
their personalization, never the edge its pace. What they find is handed to the edge to keep, without
waiting for its commit. `request_resolution` resolves on a background thread and never blocks.
"""

from __future__ import annotations

import logging
import queue
import threading

import requests

from sync import protocol as p
from sync.local import Local, ProfileUpsert
from sync.transport import CircuitBreaker, CircuitOpen, Errors, SyncError, Transport

log = logging.getLogger(__name__)

RESOLVE_QUEUE = 10_000  # key lists waiting for the resolve thread; more are dropped (asked again later)


class Fetcher:
    """Profile fetches and identity resolution for the edge's cache misses."""

    def __init__(self, transport: Transport, local: Local, errors: Errors, *, timeout_s: float,
                 breaker: CircuitBreaker, stop: threading.Event) -> None:
        self.transport = transport
        self.local = local
        self.errors = errors
        self.timeout_s = timeout_s
        self.breaker = breaker
        self.stop = stop
        self._queue: queue.Queue[list[str]] = queue.Queue(maxsize=RESOLVE_QUEUE)

    @property
    def enabled(self) -> bool:
        return bool(self.transport.url)

    def _request(self, method: str, path: str, **kw: object) -> requests.Response:
        """A request behind the breaker with the fetch timeout. Raises CircuitOpen when not sent, SyncError
        (recorded as the fetch error) when it failed."""
        if not self.breaker.allow():
            raise CircuitOpen("the central store failed recently: not asked (circuit breaker open)")
        try:
            r = self.transport.request(method, path, timeout=(self.timeout_s, self.timeout_s), **kw)
        except SyncError as exc:
            self.breaker.failure()
            self.errors.record("fetch", str(exc))
            raise
        self.breaker.success()
        return r

    def fetch_profile(self, customer_id: str) -> dict[str, object] | None:
        """The profile from the central store (None on 404, when offline or the breaker is open), within
        about fetch_timeout_ms; a found profile is handed to the edge to cache."""
        if not isinstance(customer_id, str) or not p.ID_RE.fullmatch(customer_id) or not self.enabled:
            return None
        try:
            r = self._request("GET", p.PROFILE_PATH.format(customer_id=customer_id))
        except SyncError:
            return None
        if r.status_code != 200:
            return None
        try:
            profile = r.json()
        except ValueError:
            return None
        if not isinstance(profile, dict) or not isinstance(profile.get("version"), int):
            return None
        self.errors.clear("fetch")
        self.local.cache_profile(ProfileUpsert(customer_id, profile["version"], profile))
        return profile

    def resolve(self, keys: list[str]) -> dict[str, str] | None:
        """key → customer_id for the keys the central store knows; None when offline or the breaker is open."""
        keys = [k for k in dict.fromkeys(keys) if isinstance(k, str)][:p.MAX_RESOLVE_KEYS]
        if not keys:
            return {}
        if not self.enabled:
            return None
        try:
            r = self._request("POST", p.RESOLVE_PATH, json={"keys": keys})
        except SyncError:
            return None
        if r.status_code != 200:
            return None
        try:
            matches = r.json().get("matches") or {}
        except (ValueError, AttributeError):
            return None
        return {k: v for k, v in matches.items() if isinstance(k, str) and isinstance(v, str)}

    def request_resolution(self, keys: list[str]) -> None:
        """Ask the central store about these keys on the resolve thread; the edge keeps the matches.
        Never blocks: when the queue is full or the breaker is open, the request is dropped."""
        if not self.enabled or not keys or self.breaker.state == "open":
            return
        try:
            self._queue.put_nowait(list(keys))
        except queue.Full:
            pass

    def wake(self) -> None:
        """Have the resolve thread see that sync is stopping."""
        try:
            self._queue.put_nowait([])
        except queue.Full:
            pass

    def run(self) -> None:
        """The resolve thread: one request per batch of queued keys."""
        while not self.stop.is_set():
            keys = self._queue.get()
            if self.stop.is_set():
                return
            pending = list(keys)
            while len(pending) < p.MAX_RESOLVE_KEYS:
                try:
                    pending += self._queue.get_nowait()
                except queue.Empty:
                    break
            pending = list(dict.fromkeys(pending))
            if not pending:
                continue
            try:
                matches = self.resolve(pending)
            except Exception:
                log.exception("identity resolution failed unexpectedly")
                continue
            if matches:
                self.local.store_identity_matches(matches)
