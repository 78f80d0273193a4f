"""Concurrent calls run as one batch: what a change for every store needs at the central.

A change for every store wakes every store's waiting feed request at once (150 threads per worker at 300
stores), and each read its own page: 150 queries, each first waiting in line for one of the pool's ten
connections (the waits cost more CPU than the queries). Through a Coalescer the first caller runs the
query for everyone queued when it starts, those arriving meanwhile queue for the next batch, whose first
caller runs it: one connection and one round trip for a whole wake-up, and no caller waits for more than
the batch before its own plus its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class _Slot(Generic[K, V]):
    __slots__ = ("key", "value", "error", "done", "lead")

    def __init__(self, key: K) -> None:
        self.key = key
        self.value: V | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.lead = False  # woken to run the next batch, not with an answer


class Coalescer(Generic[K, V]):
    """`call(key)` returns `run([..., key, ...])`'s value for `key`, `run` seeing every key queued with it
    (at most `max_batch`); when `run` raises, every call of the batch raises it (the keys are checked before:
    what fails a batch is the database)."""

    def __init__(self, run: Callable[[Sequence[K]], Sequence[V]], max_batch: int = 500) -> None:
        self._run = run
        self._max = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Slot[K, V]] = []
        self._running = False

    def call(self, key: K) -> V:
        slot: _Slot[K, V] = _Slot(key)
        with self._lock:
            self._queue.append(slot)
            lead = not self._running
            self._running = True
        if not lead:
            slot.done.wait()
            if not slot.lead:
                return self._answer(slot)
        with self._lock:
            batch, self._queue = self._queue[:self._max], self._queue[self._max:]
        try:
            self._answer_all(batch)
        finally:
            with self._lock:  # hand the next batch to the first caller queued, or stand down
                following = self._queue[0] if self._queue else None
                if following is None:
                    self._running = False
            for other in batch:
                if other.error is None and other.value is None:
                    other.error = RuntimeError("the batch this call was in was interrupted")
                if other is not slot:
                    other.done.set()
            if following is not None:
                following.lead = True
                following.done.set()
        return self._answer(slot)

    def _answer_all(self, batch: list[_Slot[K, V]]) -> None:
        try:
            values = self._run([s.key for s in batch])
            for s, v in zip(batch, values, strict=True):
                s.value = v
        except Exception as exc:  # the database is away, most likely: every caller answers it as its own
            for s in batch:
                s.error = exc

    @staticmethod
    def _answer(slot: _Slot[K, V]) -> V:
        if slot.error is not None:
            raise slot.error
        return slot.value  # type: ignore[return-value]
