"""The single writer: received messages → events/dead letters → presence → rules → one commit → acks → outputs.

One thread owns the write connection. It takes whatever is queued (up to `limits.ingest_batch`), does
all the work for the batch in one transaction, commits (synchronous=FULL), and only then acknowledges
the MQTT messages and publishes what screens should show. A kill -9 before the commit loses nothing:
the broker still holds the unacknowledged messages and redelivers them; a redelivered message has the
same event id and is recorded once.

No message can stop the writer. A batch whose processing raises is rolled back and redone one message at
a time, each in a savepoint: the message that raised becomes a dead letter (`internal_error`, with the
exception's type and where it was raised) and the rest are recorded. A database that cannot be written
(disk full, I/O error: sqlite3.OperationalError) is no message's fault: the batch waits, unacknowledged,
and is retried. Messages that crash the whole process are set aside by edge.quarantine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge import faults
from edge.config import Config
from edge.domain.displays import Displays
from edge.domain.gateways import GatewayHealth
from edge.domain.identity import Identity
from edge.domain.journeys import Journeys
from edge.domain.presence import PresenceTracker
from edge.domain.rules import RuleEngine
from edge.domain.shoppers import CustomerContext
from edge.jsontext import compact
from edge.metrics import Metrics
from edge.model import (FALLBACK_PRIORITY, INTERNAL_ERROR, QUARANTINED, Decision, Event, Ignored, Message,
                        Publication, Rejected)
from edge.quarantine import DIGEST_BYTES, QUARANTINE_AFTER, Quarantine, message_sha1
from sync.scrub import Check, Trace
from edge.store.writer import Writer
from edge.text import traceback_text, where_raised
from edge.wire.normalize import normalize

log = logging.getLogger(__name__)

EXCERPT_BYTES = 256
TICK_S = 0.25


def _pages(traces: Iterable[Trace]) -> str:
    """Where traces are, in a few words (pages and b-trees; never the bytes)."""
    traces = list(traces)
    return ", ".join(map(str, traces[:5])) + (f" and {len(traces) - 5} more" if len(traces) > 5 else "")


def retryable(exc: BaseException) -> bool:
    """A database that cannot be written now (disk full, I/O error, locked, corrupt): no message's fault."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


@dataclass
class BatchResult:
    """What one committed batch produced, for the after-commit steps."""

    messages: list[Message] = field(default_factory=list)
    recorded: Counter = field(default_factory=Counter)
    deadletters: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    displays: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    ignored: Counter = field(default_factory=Counter)
    publications: list[Publication] = field(default_factory=list)
    unknown_devices: Counter = field(default_factory=Counter)

    def merge(self, other: BatchResult) -> None:
        """Add one message's result (careful processing) to the batch's."""
        self.recorded.update(other.recorded)
        self.deadletters.extend(other.deadletters)
        self.decisions.extend(other.decisions)
        self.displays.update(other.displays)
        self.duplicates += other.duplicates
        self.ignored.update(other.ignored)
        self.publications.extend(other.publications)
        self.unknown_devices.update(other.unknown_devices)


def _text(value: str) -> str:
    """`value`, with anything UTF-8 cannot hold (a lone surrogate) escaped."""
    if value.isascii():
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


class Inbox:
    """What the writer has to do, in arrival order: received messages and write tasks. Any thread puts (never
    blocking); the pipeline's writer alone takes. Built before the parts that feed it (MQTT, sync, HTTP)."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        # Called by the MQTT thread for every message (and by HTTP): the queue's own methods, no Python frame
        # in between. `put` never blocks.
        self.put: Callable[[Message], None] = self.queue.put
        self.qsize: Callable[[], int] = self.queue.qsize

    def submit_task(self, fn: Callable[[Writer], None], done: Callable[[], None] | None = None) -> None:
        """Run `fn(writer)` inside the writer's next transaction (sync, erasure, profile updates): the one
        write connection stays the only one. `done` is called after the commit."""
        self.queue.put(Message("$task", b"", 0, 0, time.time(), done=done, task=fn))

    def run(self, fn: Callable[[Writer], Any], timeout: float = 10.0) -> Any:
        """Run `fn(writer)` in the writer's transaction and return its value once committed; TimeoutError if
        not committed in time, RuntimeError if it failed (the writer rolled it back)."""
        box: dict[str, Any] = {}

        def task(writer: Writer) -> None:
            box["value"] = fn(writer)

        done = threading.Event()
        self.submit_task(task, done.set)
        if not done.wait(timeout):
            raise TimeoutError("the write was queued but not committed in time")
        if "value" not in box:
            raise RuntimeError("the write failed (see the edge log)")
        return box["value"]


class Link(Protocol):
    """The MQTT side, as the writer needs it: acknowledge what committed, publish what it caused."""

    def ack(self, messages: Iterable[Message]) -> None: ...

    def publish(self, topic: str, payload: dict | str, *, retain: bool = False, qos: int = 1) -> None: ...


class Central(Protocol):
    """The central store, as the writer needs it: never called inside a transaction, never blocking."""

    def wake(self) -> None:
        """New events are in the outbox."""

    def resolve(self, keys: list[str]) -> None:
        """Identity keys the edge does not know: ask who they are; answers come back as writer tasks."""

    def fetch(self, customers: list[str]) -> None:
        """Identified shoppers without a cached profile: fetch them in the background."""


class Reloadable(Protocol):
    """State kept in memory beside its tables (edge.domain.campaigns.Campaigns): taken from them again after a
    rolled-back transaction."""

    def reload(self, conn: sqlite3.Connection) -> None: ...


class Pipeline:
    """The single writer thread, and the only owner of the state it keeps in memory: presence, identity, rules
    (caps), shoppers (profiles, activity), displays, QR journeys, gateway health. Nobody else holds them: after
    a rolled-back transaction they are restored in place, and erasures reach them through writer tasks."""

    def __init__(self, cfg: Config, inbox: Inbox, writer: Writer, metrics: Metrics, *, presence: PresenceTracker,
                 identity: Identity, shoppers: CustomerContext, rules: RuleEngine, displays: Displays,
                 journeys: Journeys, gateways: GatewayHealth, link: Link, central: Central | None = None,
                 on_decision: Callable[[Decision], None] | None = None,
                 on_display: Callable[[str, dict[str, Any]], None] | None = None,
                 campaigns: Reloadable | None = None) -> None:
        self.cfg = cfg
        self.campaigns = campaigns
        self.inbox = inbox
        self.queue = inbox.queue
        self.writer = writer
        self.metrics = metrics
        self.presence = presence
        self.identity = identity
        self.shoppers = shoppers
        self.rules = rules
        self.displays = displays
        self.journeys = journeys
        self.gateways = gateways
        self.link = link
        self.central = central
        self.on_decision = on_decision
        self.on_display = on_display
        self.quarantine = Quarantine(f"{cfg.db.path}-inflight")
        # screen -> the row `displays` gets at the next flush: a screen shown many times in a batch is written once
        self._display_rows: dict[str, tuple[str, str, int, float | None, float]] = {}
        self.batch_max = cfg.limits.ingest_batch
        p = cfg.prefix
        # Our own outputs: never normalized, never dead-lettered (an MQTT 3.1.1 broker without no_local
        # echoes them back to us, and a dead letter about a dead letter would loop).
        self.own_topics = (f"{p}/display/", f"{p}/edge/", f"{p}/staff/")
        self.deadletter_topic = f"{p}/deadletter"  # exactly: P/deadletter/x is someone else's, and dead-lettered
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.oldest_pending: float | None = None
        self.last_commit_at: float | None = None
        self.healthy = True
        self.last_error: str | None = None
        self.committed_batches = 0
        self._wipe_warned = False
        self.erasures_unverified = 0  # erasures whose bytes a check still found in the file after the rebuilds
        self.last_erasure_check: Check | None = None
        metrics.gauge("instore_edge_erasures_unverified", lambda: float(self.erasures_unverified))
        metrics.gauge("instore_edge_ingest_queue", self.queue.qsize)
        metrics.gauge("instore_edge_ingest_lag_seconds", self.lag)
        metrics.gauge("instore_edge_presence_subjects", lambda: len(self.presence.state))

    def lag(self) -> float:
        oldest = self.oldest_pending
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="pipeline-writer", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop."""
        self._stop.set()
        self.queue.put(None)
        if self.thread:
            self.thread.join(timeout)

    # --- the writer thread ---
    def _take_batch(self) -> list[Message]:
        try:
            first = self.queue.get(timeout=TICK_S)
        except queue.Empty:
            return []
        batch = [] if first is None else [first]
        get, append, room = self.queue.get_nowait, batch.append, self.batch_max - len(batch)
        while room > 0:
            try:
                item = get()
            except queue.Empty:
                break
            if item is not None:
                append(item)
                room -= 1
        return batch

    def _run(self) -> None:
        log.info("pipeline writer started")
        try:
            self.quarantine.open(self.writer.conn)
        except sqlite3.Error as exc:
            log.error("cannot read the failed-attempt counts (%s): messages that crash the edge will not be "
                      "set aside", exc)
        pending: list[Message] = []
        careful = retry = False
        while True:
            if not retry:
                if self._stop.is_set() and self.queue.empty():
                    break
                pending = self._take_batch()
                careful = False
                if faults.THREADS and any(m.task is None for m in pending):
                    faults.thread_start("pipeline-writer")
            retry = False
            if pending:
                self.oldest_pending = min(m.received_at for m in pending)
            try:
                result = self.process(pending, time.time(), careful=careful)
            except Exception as exc:
                self._reload_state()
                if retryable(exc):
                    # Disk full, I/O error...: keep the batch, unacked, and retry; never drop it. Not the messages'
                    # fault: a restart meanwhile must not count against them.
                    self.quarantine.clear()
                    self.healthy = False
                    self.last_error = f"database write failed: {exc}"
                    log.error("database write failed (%s); retrying the batch of %d in 1s", exc, len(pending))
                    time.sleep(1.0)
                    retry = True
                    continue
                if careful:  # it failed outside any one message (those are caught), twice: no message's fault
                    self.quarantine.clear()
                    raise  # the watchdog has the process restarted
                log.error("processing a batch of %d messages failed (%s); redoing it one message at a time",
                          len(pending), where_raised(exc))
                careful = retry = True
                continue
            self.healthy = True
            self.last_error = None
            pending = []
            self.oldest_pending = None
            try:
                self._after_commit(result)
            except Exception as exc:  # committed already: a failed publication must not stop the writer
                log.error("after-commit step failed: %s\n%s", where_raised(exc), traceback_text(exc))
            self._wipe_wal()
        self.quarantine.close()
        log.info("pipeline writer stopped")

    def _wipe_wal(self) -> None:
        """After an erasure (or a purge), truncate the WAL once readers allow, and check the erased values are
        gone from the file (Writer.wipe_wal): retried after later commits."""
        due = self.writer.wipe_due_since
        try:
            done = self.writer.wipe_wal()
        except (sqlite3.Error, OSError) as exc:
            log.error("cannot truncate the WAL or check the file after an erasure: %s; retrying", exc)
            return
        check, self.writer.checked = self.writer.checked, None
        if check is not None:
            self._erasure_checked(check)
        if done:
            log.info("WAL truncated %.1fs after an erasure or purge", time.monotonic() - (due or time.monotonic()))
        elif done is False and due is not None and time.monotonic() - due > 10 and not self._wipe_warned:
            self._wipe_warned = True
            log.warning("the WAL still holds erased data %.0fs after an erasure: a reader keeps an old snapshot "
                        "open (a long API request?); retrying", time.monotonic() - due)
        if done:
            self._wipe_warned = False

    def _erasure_checked(self, check: Check) -> None:
        """Say what the check of an erasure's bytes found and did (where, never what), and count a failure."""
        self.last_erasure_check = check
        for action in check.actions:
            self.metrics.inc("instore_edge_erasure_rebuilds_total", how=action.split()[0].rstrip(":").lower())
        if not check.clean:
            self.erasures_unverified += 1
            log.error("erasure incomplete on disk: bytes of the erased values are still in %d places of %s outside "
                      "live rows (%s) after %s; the shopper is gone from every table, not from the file's free "
                      "space: report this as a bug (counted in instore_edge_erasures_unverified, shown in /readyz)",
                      len(check.left), self.cfg.db.path, _pages(check.left), "; ".join(check.actions) or "no rebuild")
        elif check.found:
            log.info("erasure: copies left by b-tree rebalancing (%s) removed by %s; the file holds no byte of the "
                     "erased values (%.2f s)", _pages(check.found), "; ".join(check.actions), check.seconds)
        else:
            log.info("erasure: the file holds no byte of the erased values (checked in %.2f s)", check.seconds)

    def _reload_state(self) -> None:
        """After a rolled-back transaction memory may be ahead of the file: take presence, displays and identities
        from the file again, in place (this pipeline is their one owner; what reads them reads these objects)."""
        conn = self.writer.conn
        try:
            self.presence.reload(rows(conn, "SELECT * FROM presence"))
            self.displays.reload(rows(conn, "SELECT * FROM displays"))
            self.identity.reload(conn)
            if self.campaigns is not None:
                self.campaigns.reload(conn)
        except sqlite3.Error as exc:
            log.error("cannot reload the in-memory state from the database: %s", exc)

    def process(self, batch: list[Message], now: float, *, careful: bool = False) -> BatchResult:
        """Do the whole batch in one transaction; raises to have it retried (see `retryable`) or redone with
        `careful`: each message then in a savepoint, alone in the quarantine's in-flight note; one that raises
        is dead-lettered (internal_error), one that crashed the edge twice before is set aside (quarantined).
        A batch holding a message a crash interrupted is always done carefully."""
        res = BatchResult(messages=batch)
        w = self.writer
        quarantine = self.quarantine
        shas = [b"" if m.task is not None else message_sha1(m.topic, m.payload) for m in batch]
        digests = [sha[:DIGEST_BYTES] for sha in shas]
        quarantine.note(digests)  # from here on, if the process dies, these messages are the suspects
        careful = careful or quarantine.suspect(digests)
        settled: list[bytes] = []
        w.begin()
        try:
            if careful:
                self._process_carefully(batch, shas, res)
                quarantine.note(())  # what follows is no single message's doing
                settled = quarantine.settle(w.conn, digests)
            else:
                for msg, sha in zip(batch, shas):
                    self._process_message(msg, res, sha)
            self._finish(res, now)
            w.commit()
        except BaseException:
            w.rollback()
            self._display_rows.clear()
            raise
        quarantine.clear()
        quarantine.forget(settled)
        self.committed_batches += 1
        self.last_commit_at = time.time()
        return res

    def _finish(self, res: BatchResult, now: float) -> None:
        """The batch's common tail: presence timeouts, expired screens, presence rows, dead letters."""
        w = self.writer
        for derived in self.presence.expire(now):
            self._record(derived, res, now)
        self.displays.expire(now)
        for screen, payload in self.displays.take_changes():  # expired, erased, consent revoked
            res.displays[screen] = payload
            self._display_rows[screen] = (screen, json.dumps(payload), FALLBACK_PRIORITY, None, now)
        self._flush_state()
        if res.deadletters:
            w.insert_deadletters((d["topic"], d["reason"], d["detail"], d["payload_excerpt"], d["received_at"])
                                 for d in res.deadletters)

    def _flush_state(self) -> None:
        """Write the presence and display rows changed since the last flush."""
        rows, gone = self.presence.take_changes()
        if rows:
            self.writer.upsert_presence(rows)
        if gone:
            self.writer.delete_presence(gone)
        if self._display_rows:
            self.writer.upsert_displays(self._display_rows.values())
            self._display_rows.clear()

    def _process_carefully(self, batch: list[Message], shas: list[bytes], res: BatchResult) -> None:
        """One message at a time, each in a savepoint with its own result, so a failure takes back that message
        alone: its rows, its presence changes and what it would have published."""
        w = self.writer
        quarantine = self.quarantine
        for msg, sha in zip(batch, shas):
            key = sha[:DIGEST_BYTES]
            if msg.task is not None:
                self._process_message(msg, res)
                self._flush_state()  # an erasure's presence change must not be undone by a reload
                continue
            attempts = quarantine.attempts.get(key, 0)
            if attempts >= QUARANTINE_AFTER:
                self._deadletter(msg, QUARANTINED, f"the edge stopped {attempts} times while processing this "
                                 "message; set aside so that it cannot stop ingest again (see the edge log)", res)
                continue
            quarantine.note((key,))
            one = BatchResult()
            mark = w.savepoint("message")
            try:
                self._process_message(msg, one, sha)
                self._flush_state()
            except Exception as exc:
                if retryable(exc):
                    raise
                w.rollback_to("message", mark)
                self._display_rows.clear()
                self._reload_state()
                log.error("a message on topic %s failed: %s\n%s", msg.topic, where_raised(exc), traceback_text(exc))
                one = BatchResult()
                self._deadletter(msg, INTERNAL_ERROR, f"{where_raised(exc)} while processing this message "
                                                      "(a bug: the edge log has the traceback)", one)
            w.release("message")
            res.merge(one)

    def _process_message(self, msg: Message, res: BatchResult, sha1: bytes | None = None) -> None:
        if msg.task is not None:
            w = self.writer
            mark = w.savepoint("task")
            try:
                msg.task(w)
            except sqlite3.OperationalError:
                raise  # disk full, locked...: retry the whole batch
            except Exception:
                w.rollback_to("task", mark)  # a task fails whole, never half-applied
                log.exception("writer task failed")
            w.release("task")
            return
        if msg.topic.startswith(self.own_topics) or msg.topic == self.deadletter_topic:
            return
        if faults.CRASH_ON:
            faults.crash_on(msg.payload)
        try:
            events = normalize(msg.topic, msg.payload, msg.received_at, self.cfg, msg.qos, msg.dup, sha1 or None)
        except Rejected as exc:
            self._deadletter(msg, exc.reason, exc.detail, res)
            return
        except Ignored as exc:  # e.g. a random MAC with no identity: never stored, only counted
            res.ignored[exc.reason] += 1
            return
        except Exception as exc:  # a bug in a normalizer must not stop ingest: keep the message
            log.error("normalizer failed on topic %s: %s\n%s", msg.topic, where_raised(exc), traceback_text(exc))
            self._deadletter(msg, INTERNAL_ERROR, f"{where_raised(exc)} while normalizing (a bug: the edge log "
                                                  "has the traceback)", res)
            return
        for e in events:
            self._record(e, res, msg.received_at)
        if faults.RAISE_ON:
            faults.raise_on(msg.payload)

    def _record(self, e: Event, res: BatchResult, now: float) -> None:
        if e.customer is None and e.subject is not None:
            e.customer = self.identity.resolve(e.subject)
        seq = self.writer.insert_event(e)
        if seq is None:
            res.duplicates += 1
            return
        if e.type == "identify":
            self._link(e, res, now)
        if e.kind == "qr":  # a scanned code of ours does what it says
            try:
                res.publications.extend(self.journeys.on_event(e, self.writer))
            except sqlite3.OperationalError:
                raise
            except Exception:
                log.exception("QR journeys failed for a %s event", e.kind)
        self.gateways.observe(e)
        res.recorded[e.kind] += 1
        if not e.known_device:
            res.unknown_devices[e.kind] += 1
        try:
            derived = self.presence.observe(e) if e.kind == "beacon" else []
        except Exception:
            log.exception("presence failed for a %s event", e.kind)
            derived = []
        for d in derived:
            self._record(d, res, now)
        try:
            decisions = self.rules.decide(e, now)
        except Exception:
            log.exception("rules failed for a %s event", e.kind)
            decisions = []
        for d in decisions:
            payload = self.displays.apply(d)
            if payload is None:
                continue
            res.decisions.append(d)
            res.displays[d.display] = payload
            encoded = compact(payload)
            self.writer.insert_decision((d.ts, d.display, d.content_id, d.rule_id, d.reason, d.event_id, d.customer,
                                         d.expires_at, encoded, compact(d.extra) if d.extra else None))
            self._display_rows[d.display] = (d.display, encoded, d.priority, d.expires_at, now)

    def _link(self, e: Event, res: BatchResult, now: float) -> None:
        """A shopper identified (kiosk, QR): link their anonymous visit/session and tell the central store."""
        try:
            links = self.identity.on_identify(self.writer.conn, e, self.presence.visit_of)
        except Exception:
            log.exception("identity linking failed for a %s event", e.kind)
            return
        for link in links:
            self.presence.set_customer(link.subject, link.customer)
            self._record(Event(
                # A hash, not the ids: erasure must leave no trace of the shopper in the event log.
                event_id="l:" + hashlib.sha1(f"{link.subject}|{link.customer}|{e.event_id}".encode()).hexdigest()[:24],
                kind="identity_link", source=e.source,
                ts=e.ts, received_at=e.received_at, zone=e.zone, subject=link.subject, customer=link.customer,
                data={"key": link.subject, "via": link.via, **({"visit_id": link.visit_id} if link.visit_id else {})},
            ), res, now)

    def _deadletter(self, msg: Message, reason: str, detail: str, res: BatchResult) -> None:
        excerpt = msg.payload[:EXCERPT_BYTES].decode("utf-8", errors="replace")
        # Whatever a topic or a detail quotes, a dead letter must be storable (UTF-8) and publishable.
        res.deadletters.append({"topic": _text(msg.topic), "reason": reason, "detail": _text(detail),
                                "payload_excerpt": excerpt, "received_at": msg.received_at})
        msg.outcome = reason

    def _after_commit(self, res: BatchResult) -> None:
        link = self.link
        link.ack([m for m in res.messages if m.done is None])
        for m in res.messages:
            if m.done is not None:
                m.done()
        if res.recorded:
            self.metrics.add_many("instore_edge_events_total", "kind", dict(res.recorded))
        if res.unknown_devices:
            self.metrics.add_many("instore_edge_unknown_devices_total", "kind", dict(res.unknown_devices))
        if res.ignored:
            self.metrics.add_many("instore_edge_ignored_total", "reason", dict(res.ignored))
        if res.duplicates:
            self.metrics.inc("instore_edge_duplicates_total", res.duplicates)
        prefix = self.cfg.prefix
        for d in res.deadletters:
            self.metrics.inc("instore_edge_deadletters_total", reason=d["reason"])
            # Topic and reason only: payloads may carry personal data and never go to the logs.
            log.warning("dead letter: %s on topic %s", d["reason"], d["topic"])
            link.publish(f"{prefix}/deadletter", {**d, "received_at": int(d["received_at"] * 1000)})
        for pub in res.publications:
            link.publish(pub.topic, pub.payload, retain=pub.retain)
        for screen, payload in res.displays.items():
            pub = self.displays.publication(screen, payload)
            link.publish(pub.topic, pub.payload, retain=pub.retain)
            if self.on_display is not None:
                try:
                    self.on_display(screen, payload)
                except Exception:  # a broken page stream must not stop the pipeline
                    log.exception("a display listener failed")
        for d in res.decisions:
            self.metrics.inc("instore_edge_decisions_total", rule=d.rule_id)
            if self.on_decision is not None:
                try:
                    self.on_decision(d)
                except Exception:
                    log.exception("the decision listener failed")
        wanted, missing = self.identity.take_wanted(), self.shoppers.take_missing()
        central = self.central
        if central is not None:
            if res.recorded:
                central.wake()
            if wanted:
                central.resolve(wanted)
            if missing:
                central.fetch(missing)


def rows(conn: sqlite3.Connection, sql: str) -> list[dict[str, Any]]:
    """A query's rows as dicts (what the parts restore themselves from)."""
    cur = conn.execute(sql)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, r)) for r in cur]
