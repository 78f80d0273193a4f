"""Wakes long-polling feed requests when the change feed grows, without a database connection per waiter.

A waiter registers before it reads the feed (so a change committed between its read and its wait still
wakes it), then blocks on its own threading.Event: an idle request costs a sleeping thread, no CPU and no
connection. `notify(targets)` sets the events of the waiters those targets concern (`*`: everyone).
Engines call it after their own commits and from whatever tells them of other processes' commits
(PostgreSQL: LISTEN/NOTIFY; SQLite: a shared poll of the feed's last sequence number).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

ALL = "*"


class FeedSignal:
    """Per-target wake-ups for long-polls. `live` is False while notifications from other processes may be
    missed (waiters then look at the feed every second)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str | None, set[threading.Event]] = {}
        self.live = True
        self.closed = False
        self.on_first_waiter: Callable[[], None] | None = None

    def close(self) -> None:
        """The server is stopping: wake every waiter for good (they answer with what they have)."""
        self.closed = True
        self.notify([ALL])

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._waiters.values())

    @contextmanager
    def waiter(self, target: str | None) -> Iterator[threading.Event]:
        """An Event set when a change for `target` (a store id; None: any change) may have been committed."""
        event = threading.Event()
        with self._lock:
            first = not self._waiters
            self._waiters.setdefault(target, set()).add(event)
        if first and self.on_first_waiter is not None:
            self.on_first_waiter()
        try:
            yield event
        finally:
            with self._lock:
                mine = self._waiters.get(target)
                if mine is not None:
                    mine.discard(event)
                    if not mine:
                        del self._waiters[target]

    def notify(self, targets: Iterable[str]) -> None:
        """Wake the waiters of these targets ('*' wakes every waiter), and the admin's (any change)."""
        wanted = set(targets)
        if not wanted:
            return
        with self._lock:
            if ALL in wanted:
                events = [e for s in self._waiters.values() for e in s]
            else:
                events = [e for t in (*wanted, None) for e in self._waiters.get(t, ())]
        for event in events:
            event.set()
