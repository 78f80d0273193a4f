"""Per-client token buckets for the public pages (/q/...): a burst, then a steady rate.

A shopper scans a code, reads the page, maybe scans another: a burst of ten and a couple per second
never gets in their way. A script fetching one touchpoint URL in a loop would otherwise turn every GET
into an event, synced and counted in the KPIs. The table of clients is bounded (least recently seen
forgotten first), so a flood from many addresses costs memory no longer than `max_clients` entries.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict


class RateLimiter:
    """`wait(client)` is 0.0 when the request may go ahead (and takes a token), else the seconds until it may."""

    def __init__(self, rate_per_s: float, burst: int, *, max_clients: int = 10_000) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = float(rate_per_s)
        self.burst = float(burst)
        self.max_clients = max_clients
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, client: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)  # most recently seen last
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait

    @staticmethod
    def retry_after(wait: float) -> int:
        """Whole seconds for a Retry-After header (at least 1)."""
        return max(1, math.ceil(wait))
