"""How often the central asks its stores to push, so that the fleet's pushes stay within what it can take.

A push costs the central about as much per request as per hundred events (docs/scale.md, the cost model):
300 stores pushing every second are 300 requests a second whatever they carry. An edge pushes at most once
a second while its outbox keeps up (sync/push.py); when the stores heard from recently are more than the
central's push budget (`--push-budget`, pushes a second for the whole fleet), each push answer carries
`Instore-Push-Every-S` (protocol.PUSH_EVERY_HEADER): the interval that keeps the fleet within the budget,
which the edges follow. Events then travel in fewer, larger pushes; a backlog still goes back to back, and
nothing waits longer than the interval. Below the budget no header is sent and nothing changes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

from sync import protocol as p

log = logging.getLogger("instore_central")

ACTIVE_WINDOW_S = 120.0  # a store that pushed within this window counts (an edge reports at least every 30 s)
RECOUNT_S = 2.0  # how often a process counts the active stores again (one count over the stores' status)


class Pacer:
    """The push interval to ask of each store, from the number of stores pushing and the budget."""

    def __init__(self, budget: float, stores_pushing: Callable[[float], int]) -> None:
        self.budget = budget
        self._stores_pushing = stores_pushing  # how many stores pushed since a time (Storage.stores_pushing)
        self._lock = threading.Lock()
        self._counted_at = -math.inf
        self._every_s: float | None = None

    def every_s(self, now: float | None = None) -> float | None:
        """Seconds between pushes to ask of a store (a multiple of 0.5, at most protocol.MAX_PUSH_EVERY_S),
        or None when the fleet is within the budget (the edge's own once a second holds)."""
        if self.budget <= 0:
            return None
        now = time.time() if now is None else now
        with self._lock:
            if now - self._counted_at < RECOUNT_S:
                return self._every_s
            self._counted_at = now
        try:
            active = self._stores_pushing(now - ACTIVE_WINDOW_S)
        except Exception:  # the database is away: the push itself will say so; keep the last advice
            log.warning("could not count the stores pushing; keeping the last push interval", exc_info=True)
            return self._every_s
        every = interval_for(active, self.budget)
        with self._lock:
            self._every_s = every
        return every


def interval_for(active_stores: int, budget: float) -> float | None:
    """The interval that keeps `active_stores` pushing within `budget` pushes a second (None: 1 s does)."""
    if budget <= 0 or active_stores <= budget:
        return None
    return min(p.MAX_PUSH_EVERY_S, math.ceil(2 * active_stores / budget) / 2)
