"""HTTP to the central store for the sync worker: a session per thread, answers mapped to SyncError,
back-off with jitter for the loops, and the circuit breaker that keeps on-demand requests short."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import requests

from sync.text import network_reason, shorten

log = logging.getLogger(__name__)

TOKEN_HINT = "check [central].token (or INSTORE_EDGE_CENTRAL_TOKEN)"
OPS = ("push", "pull", "fetch")


class SyncError(Exception):
    """A sync step failed; `retryable` says whether the same request may succeed later (the base of
    every sync client exception)."""

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class AuthError(SyncError):
    """The central store refused the store token (401/403)."""


class CircuitOpen(SyncError):
    """The circuit breaker is open: the central store failed recently; not asked."""


class Metrics(Protocol):
    """The counters and gauges sync reports (edge.metrics.Metrics has these)."""

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None: ...

    def gauge(self, name: str, fn: Callable[[], float]) -> None: ...


def error_message(r: requests.Response) -> str:
    """What the central store said was wrong, from its JSON error body or the HTTP reason, shortened."""
    try:
        err = r.json().get("error") or {}
        return shorten(str(err.get("message") or err.get("code") or r.reason), 300)
    except (ValueError, AttributeError):
        return shorten(r.text or r.reason or "", 200) or f"HTTP {r.status_code}"


class Transport:
    """Requests to the central store with the store's bearer token. One requests.Session per thread (a
    Session is not thread-safe); `auth_ok` says whether the last answer took the token (None: not asked yet)."""

    def __init__(self, url: str | None, token: str | None, store_id: str) -> None:
        self.url = url.rstrip("/") if url else None
        self.token = token
        self.store_id = store_id
        self.auth_ok: bool | None = None
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {self.token or ''}"
            s.headers["User-Agent"] = f"instore-edge-sync/{self.store_id}"
            self._local.session = s
            with self._lock:
                self._sessions.append(s)
        return s

    def request(self, method: str, path: str, *, timeout: float | tuple[float, float],
                **kw: Any) -> requests.Response:
        """One HTTP request; raises SyncError (retryable for timeouts, network errors, 5xx, 408, 429) or
        AuthError for 401/403. Other answers (2xx, 4xx) are the caller's to read."""
        if not self.url:
            raise SyncError("sync is disabled: [central].url is not set", retryable=False)
        try:
            r = self._session().request(method, self.url + path, timeout=timeout, **kw)
        except requests.Timeout:
            raise SyncError(f"central store {self.url} did not answer {method} {path} within "
                            f"{timeout if isinstance(timeout, float) else timeout[1]:.3g}s") from None
        except requests.RequestException as exc:
            raise SyncError(f"cannot reach the central store {self.url} ({network_reason(exc)})") from None
        if r.status_code in (401, 403):
            self.auth_ok = False
            raise AuthError(f"central refused the store token (HTTP {r.status_code} on {method} {path}: "
                            f"{error_message(r)}): {TOKEN_HINT}", retryable=True, status=r.status_code)
        if r.status_code >= 500 or r.status_code in (408, 429):
            raise SyncError(f"central store answered HTTP {r.status_code} to {method} {path}: {error_message(r)}",
                            status=r.status_code)
        self.auth_ok = True
        return r

    def close(self) -> None:
        """Close every thread's keep-alive connections (a server being stopped would wait for them)."""
        with self._lock:
            for s in self._sessions:
                s.close()


class Errors:
    """The last error of each operation and overall, for status; each one is also logged and counted."""

    def __init__(self, metrics: Metrics | None) -> None:
        self.metrics = metrics
        self.by_op: dict[str, str | None] = dict.fromkeys(OPS)
        self.last: str | None = None
        self.last_at: float | None = None

    def record(self, op: str, message: str, level: int = logging.WARNING) -> None:
        self.by_op[op] = message
        self.last = message
        self.last_at = time.time()
        log.log(level, "%s", message)
        if self.metrics is not None:
            self.metrics.inc("instore_edge_sync_errors_total", op=op)

    def clear(self, op: str) -> None:
        """The operation succeeded since: its error is over (the overall last error stays, with its time)."""
        self.by_op[op] = None


class Backoff:
    """Exponential back-off with full jitter in [delay/2, delay], capped."""

    def __init__(self, base_s: float, cap_s: float) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self.failures = 0

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.base_s * (2 ** min(self.failures, 30)))
        self.failures += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0


class CircuitBreaker:
    """Closed → (threshold consecutive failures) → open → (cool-down) → half-open: one trial request;
    its success closes the breaker, its failure opens it again."""

    def __init__(self, threshold: int = 3, cooldown_s: float = 10.0) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state(time.monotonic())

    def _state(self, now: float) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if now - self.opened_at >= self.cooldown_s else "open"

    def allow(self) -> bool:
        with self._lock:
            state = self._state(time.monotonic())
            if state == "closed":
                return True
            if state == "half_open" and not self._trial:
                self._trial = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self.failures = 0
            self.opened_at = None
            self._trial = False

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            if self._trial or self.failures >= self.threshold:
                if self.opened_at is None or self._trial:
                    log.warning("central store unreachable for on-demand requests: circuit breaker open for %.0fs",
                                self.cooldown_s)
                self.opened_at = time.monotonic()
            self._trial = False
