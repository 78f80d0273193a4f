"""Push: the edge's outbox to the central store, in seq order, one batch at a time.

`push_batch` events per POST (at most one POST every `push_linger_s` while the outbox keeps up; back to
back when it has a backlog), each with an Idempotency-Key from its first/last seq and a hash of its
body. A batch leaves the outbox only once the central store answered for it (the edge settles it), so a
crash between the POST and the settling sends it again, which the central store recognises (same key,
or same event ids: duplicates). On a 5xx, a timeout or a connection error the same batch is retried
after a back-off: never skipped, never reordered. Events refused are recorded with the reason before
they leave the outbox. A batch refused whole (400/413) is halved until the one event at fault is known.

Every push carries the edge's health (`{"events": [...], "health": {...}}`, outside the Idempotency-Key's
digest: a retry with fresher health is still the same batch); with nothing to push, an empty push carries
it every HEALTH_EVERY_S, so the central's fleet view hears from a quiet store too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sync import protocol as p
from sync.local import Local, LocalError, OutboxBatch, Refusal, committed
from sync.transport import AuthError, Backoff, Errors, Metrics, SyncError, Transport, error_message

log = logging.getLogger(__name__)

Health = Callable[[], Mapping[str, Any]]  # the health report sent with each push (SyncClient.health)
PUSH_LINGER_S = 1.0  # at most one push a second while the outbox keeps up (see Pusher.run)
PUSH_SPREAD = 0.1  # each wait between pushes is 1 to 1.1 times the interval (next_push_at)


@dataclass(frozen=True, slots=True)
class Post:
    """A batch ready to send: the POST body (the events as the edge serialized them) and its
    Idempotency-Key, the same whenever the same batch is sent again (after a crash or a lost answer)."""

    batch: OutboxBatch
    body: bytes
    key: str

    @classmethod
    def of(cls, store_id: str, batch: OutboxBatch | None) -> Post | None:
        if batch is None:
            return None
        body = ('{"events":[' + ",".join(batch.events) + "]}").encode()
        return cls(batch, body, f"{store_id}:{batch.first}-{batch.last}:{hashlib.sha256(body).hexdigest()[:16]}")


def with_health(body: bytes, health: Mapping[str, Any]) -> bytes:
    """`{"events": [...]}` plus the edge's health report."""
    return body[:-1] + b',"health":' + json.dumps(health, separators=(",", ":")).encode() + b"}"


def settlement(batch: OutboxBatch, result: p.PushResult) -> tuple[list[int], list[Refusal]]:
    """The central store's answer as outbox seqs: delivered (accepted or duplicates) and refused (a
    rejection names its event by id, or by index in the batch)."""
    by_id = dict(zip(batch.ids, batch.seqs))
    refused: list[Refusal] = []
    for r in result.rejected:
        event_id = r.get("id")
        seq = by_id.get(event_id) if event_id is not None else None
        if seq is None and 0 <= r.get("index", -1) < len(batch.seqs):
            seq = batch.seqs[r["index"]]
            if event_id is None:
                event_id = batch.ids[r["index"]]
        if seq is not None and event_id is not None:
            refused.append(Refusal(seq, event_id, r["reason"], r.get("detail")))
    delivered = [by_id[i] for i in (*result.accepted, *result.duplicates) if i in by_id]
    return delivered, refused


def next_push_at(last_round_at: float, every_s: float, new_interval: bool, rnd: random.Random) -> float:
    """When a store's next round of pushing may start: every_s after the last round started, times 1 to
    1 + PUSH_SPREAD; the first time after the central asked for a new interval, times 1 to 2.

    Why not every_s after the last answer: stores slowed by the same busy moment at the central get their
    answers together, then push together every interval after, and bring the busy moment back with them
    (at 300 stores, a hundred pushes in a few tenths of a second, then a second with none; docs/scale.md).
    Counted from the start of a round, a slow answer does not move a store's place in the interval; the
    spread keeps stores that happen to share a place from staying together; and a new interval, which the
    central tells every store at once, puts each store at a place of its own in it rather than all at the
    moment they heard it. Never sooner than every_s: the pace stays at most what the central asked."""
    return last_round_at + every_s * (1.0 + rnd.random() if new_interval else rnd.uniform(1.0, 1.0 + PUSH_SPREAD))


class Pusher:
    """Sends the outbox; counts what it did for status."""

    def __init__(self, transport: Transport, local: Local, errors: Errors, metrics: Metrics | None, *,
                 batch: int, timeout_s: float, task_timeout_s: float, stop: threading.Event,
                 health: Health) -> None:
        self.transport = transport
        self.local = local
        self.errors = errors
        self.metrics = metrics
        self.batch = max(1, min(int(batch), p.MAX_BATCH_EVENTS))
        self.timeout_s = timeout_s
        self.task_timeout_s = task_timeout_s
        self.stop = stop
        self.health = health
        self.last_report = 0.0  # when the central store last took a push (and the health it carried)
        self.asked_every_s: float | None = None  # the interval the central asks for (None: linger_s holds)
        self.round_at = 0.0  # when the latest round of pushing sent its first request
        self.new_phase = False  # the interval asked changed: the next wait picks this store's place in it
        self._random = random.Random()
        self.last_success: float | None = None
        self.last_attempt: float | None = None
        self.pushed = 0
        self.duplicates = 0
        self.replayed = 0
        self.rejected = 0

    def _next(self, after_seq: int, limit: int) -> Post | None:
        return Post.of(self.transport.store_id, self.local.outbox_batch(after_seq, limit))

    def _post(self, post: Post) -> p.PushResult:
        batch = post.batch
        r = self.transport.request("POST", p.EVENTS_PATH.format(store=self.transport.store_id),
                                   data=with_health(post.body, self.health()),
                                   timeout=(min(5.0, self.timeout_s), self.timeout_s),
                                   headers={"Content-Type": "application/json", p.IDEMPOTENCY_HEADER: post.key})
        if r.status_code != 200:
            raise SyncError(f"central store answered HTTP {r.status_code} to a batch of {len(batch.seqs)} events "
                            f"(seq {batch.first}..{batch.last}): {error_message(r)}", retryable=False,
                            status=r.status_code)
        self.last_report = time.time()
        self._follow_pace(r.headers.get(p.PUSH_EVERY_HEADER))
        if r.headers.get("Idempotent-Replayed") == "true":
            self.replayed += 1  # the central store had this batch already: its first answer, replayed
        try:
            return p.PushResult.from_dict(r.json())
        except (ValueError, TypeError, AttributeError) as exc:
            raise SyncError(f"central store sent an unreadable answer to a push ({exc})") from None

    def _follow_pace(self, value: str | None) -> None:
        """The central's push interval, when it asks for one (a fleet larger than its push budget): at most
        protocol.MAX_PUSH_EVERY_S, whatever it says; an unreadable value is ignored."""
        try:
            asked = float(value) if value is not None else None
        except ValueError:
            asked = None
        if asked is not None and not 0 < asked < float("inf"):
            asked = None
        asked = min(asked, p.MAX_PUSH_EVERY_S) if asked is not None else None
        if asked != self.asked_every_s:
            self.new_phase = True
            log.info("the central store asks for a push every %s", f"{asked:g} s" if asked else "second at most")
            self.asked_every_s = asked

    def push_once(self, max_batches: int | None = None) -> int:
        """Push until the outbox is drained (a batch short of full; or max_batches sent); returns events
        delivered. Raises SyncError."""
        sent = 0
        batches = 0
        limit = self.batch
        nxt: Post | None = None
        while not self.stop.is_set() and (max_batches is None or batches < max_batches):
            post = nxt or self._next(0, limit)
            nxt = None
            if post is None:
                break
            batch = post.batch
            self.last_attempt = time.time()
            if batches == 0:
                self.round_at = self.last_attempt
            result: p.PushResult | None
            try:
                result = self._post(post)
                delivered, refused = settlement(batch, result)
            except SyncError as exc:
                if exc.retryable or exc.status not in (400, 413):
                    raise
                if len(batch.seqs) > 1:
                    # The batch as a whole cannot be taken (too large...): send smaller ones.
                    limit = max(1, len(batch.seqs) // 2)
                    log.warning("%s; retrying with batches of %d", exc, limit)
                    continue
                reason = p.OVERSIZED if exc.status == 413 else p.INVALID_VALUE
                log.error("central store refuses event seq %d whole (%s): recorded in sync_rejects", batch.first, exc)
                result = None
                delivered, refused = [], [Refusal(batch.first, batch.ids[0], reason, str(exc)[:500])]
            if result is not None:
                missing = len(batch.ids) - len(result.accepted) - len(result.duplicates) - len(result.rejected)
                if missing > 0:
                    raise SyncError(f"central store answered for {len(batch.ids) - missing} of {len(batch.ids)} "
                                    "events of a batch; retrying it")
            settled = self.local.settle(delivered, refused)
            # While the edge commits the settling, read and prepare the next batch (events after this one).
            nxt = self._next(batch.last, limit)
            committed(settled, "settle pushed events in the outbox", self.task_timeout_s, self.stop)
            if result is not None:
                self._count(result)
                sent += len(result.accepted) + len(result.duplicates)
            self.last_success = time.time()
            self.errors.clear("push")
            batches += 1
            if len(batch.seqs) < limit:
                break  # the outbox was drained: what came meanwhile waits for the next push, not a small one now
            limit = self.batch
        return sent

    def report_health(self) -> None:
        """An empty push that carries the health report: a store with nothing to push is still heard."""
        self.round_at = time.time()
        r = self.transport.request("POST", p.EVENTS_PATH.format(store=self.transport.store_id),
                                   data=with_health(b'{"events":[]}', self.health()),
                                   timeout=(min(5.0, self.timeout_s), 10.0),
                                   headers={"Content-Type": "application/json"})
        if r.status_code != 200:
            raise SyncError(f"central store answered HTTP {r.status_code} to a health report: {error_message(r)}",
                            status=r.status_code)
        self.last_report = time.time()

    def _count(self, result: p.PushResult) -> None:
        self.pushed += len(result.accepted)
        self.duplicates += len(result.duplicates)
        self.rejected += len(result.rejected)
        if result.rejected:
            log.warning("central store rejected %d event(s) (first: %s: %s); kept in sync_rejects",
                        len(result.rejected), result.rejected[0]["reason"], result.rejected[0]["detail"])
        if self.metrics is not None:
            for name, n in (("accepted", len(result.accepted)), ("duplicate", len(result.duplicates)),
                            ("rejected", len(result.rejected))):
                if n:
                    self.metrics.inc("instore_edge_sync_events_total", n, result=name)

    def run(self, wake: threading.Event, backoff: Backoff, idle_s: float, linger_s: float = PUSH_LINGER_S) -> None:
        """The push thread: push whenever woken (new events) or every idle_s, at most once every linger_s
        while the outbox keeps up; report the health when nothing was pushed for HEALTH_EVERY_S; back off on
        failures."""
        while not self.stop.is_set():
            try:
                self.push_once()
                if time.time() - self.last_report >= p.HEALTH_EVERY_S:
                    self.report_health()
                backoff.reset()
            except AuthError as exc:
                delay = max(backoff.next_delay(), min(backoff.cap_s, 5.0))
                self.errors.record("push", str(exc), logging.ERROR)
                if self.stop.wait(delay):
                    return
                continue
            except SyncError as exc:  # the edge's own trouble (LocalError: its database) is logged louder
                delay = backoff.next_delay()
                self.errors.record("push", f"push failed, retrying the same batch in {delay:.2f}s: {exc}",
                                   logging.ERROR if isinstance(exc, LocalError) else logging.WARNING)
                if self.stop.wait(delay):
                    return
                continue
            except Exception as exc:  # a bug must not end the thread: the outbox would grow unseen
                delay = backoff.next_delay()
                log.exception("sync push failed unexpectedly")
                self.errors.record("push", f"push failed unexpectedly ({type(exc).__name__}: {exc})", logging.ERROR)
                if self.stop.wait(delay):
                    return
                continue
            wake.wait(idle_s)
            wake.clear()
            # Linger: a busy store's writer commits many small batches; what they add up to in linger_s travels
            # as one push (a backlog still goes back to back). At a chain's peak the central pays per push, and
            # a central with more stores than its push budget asks for a longer interval (central/pacing.py).
            wait = self.next_wait_s(max(linger_s, self.asked_every_s or 0.0))
            if wait > 0 and self.stop.wait(wait):
                return

    def next_wait_s(self, every_s: float) -> float:
        """Seconds until the next round of pushing may start (next_push_at)."""
        at = next_push_at(self.round_at, every_s, self.new_phase, self._random)
        self.new_phase = False
        return at - time.time()
