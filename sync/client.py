"""The edge side of sync: push the outbox, pull the profile change feed, fetch profiles on demand.

Three kinds of work, each on its own thread, none of which ever writes the edge database itself:
every write (outbox deletions, profile upserts, erasures, the feed cursor) is a task handed to the
pipeline's single writer through `submit_task`, and the thread waits for that task's commit before
it moves on. Reads use their own WAL connection.

- Push: the outbox in seq order, `push_batch` events per POST, each batch with an Idempotency-Key
  derived from its first/last seq and a hash of its body. The outbox rows of a batch are deleted only
  once the central store answered for it, so a crash (kill -9) between the POST and the deletion sends
  the batch again, which the central store recognises (same key, or same event ids: duplicates). On a
  5xx, a timeout or a connection error the same batch is retried after an exponential back-off with
  jitter: never skipped, never reordered. Events the central store rejects are recorded in
  `sync_rejects` with the reason before they leave the outbox.
- Pull: GET /v1/profiles/changes from the cursor in `sync_state`; each page is applied (upserts newer
  than the cached version, erasures everywhere) in one transaction together with the new cursor.
  Erasures arrive by hash (`customer_hash`, sync.protocol.erase_key); one asked here travels the other
  way as an `erasure` event in the outbox, and its tombstone stays pending (nothing the central store
  says about that customer is applied) until the central store feeds the erasure back.
- Fetch: `fetch_profile` / `resolve` with a short timeout behind a circuit breaker, for cache misses;
  `request_resolution` does a resolve on a background thread and never blocks its caller.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import requests

from sync import protocol as p
from sync.text import network_reason, shorten

log = logging.getLogger("instore_edge.sync")

DEFAULT_MAX_PROFILES = 5000
DEFAULT_PROFILE_TTL_S = 7 * 24 * 3600.0
VIA_CENTRAL = "central"  # identities learned from the central store (profiles, resolve)
TOKEN_HINT = "check [central].token (or INSTORE_EDGE_CENTRAL_TOKEN)"
SQL_CHUNK = 500  # host parameters per IN (...) list

SubmitTask = Callable[[Callable[[Any], None], Callable[[], None] | None], None]
IdentityHook = Callable[[sqlite3.Connection, str, str, str], None]
# Erases the customers this device holds under each (erase key, version) and keeps the tombstones:
# edge.privacy.Privacy.erase_by_key, which owns erasure across tables, memory and disk.
EraseByKey = Callable[[sqlite3.Connection, list[tuple[str, int]], float], None]
ProfileHook = Callable[[sqlite3.Connection, list[str]], None]

SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    customer_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    profile TEXT NOT NULL,
    first_name TEXT,
    consent_personalization INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    last_seen REAL
);
CREATE INDEX IF NOT EXISTS idx_profiles_last_seen ON profiles(last_seen);
CREATE TABLE IF NOT EXISTS identities (
    key TEXT PRIMARY KEY,
    customer_id TEXT,
    via TEXT,
    learned_at REAL
);
CREATE INDEX IF NOT EXISTS idx_identities_customer_id ON identities(customer_id);
CREATE TABLE IF NOT EXISTS sync_state (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS sync_rejects (
    event_seq INTEGER PRIMARY KEY,
    event_id TEXT,
    reason TEXT NOT NULL,
    detail TEXT,
    rejected_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sync_tombstones (
    customer_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    erased_at REAL NOT NULL,
    pending INTEGER NOT NULL DEFAULT 0
);
"""


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the tables sync needs when absent (profiles, identities, sync_state, sync_rejects,
    sync_tombstones). Runs inside the caller's transaction: no BEGIN/COMMIT here."""
    for stmt in SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)


class SyncError(Exception):
    """A sync request failed; `retryable` says whether the same request may succeed later."""

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class AuthError(SyncError):
    """The central store refused the store token (401/403)."""


class CircuitOpen(SyncError):
    """The circuit breaker is open: the central store failed recently; not asked."""


def _chunks(items: list[Any], n: int = SQL_CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


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


@dataclass
class _Batch:
    seqs: list[int]
    ids: list[str]
    body: bytes
    key: str

    @property
    def first(self) -> int:
        return self.seqs[0]

    @property
    def last(self) -> int:
        return self.seqs[-1]


@dataclass
class _Status:
    last_push_success: float | None = None
    last_push_attempt: float | None = None
    last_pull: float | None = None
    last_pull_attempt: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    auth_ok: bool | None = None
    pushed: int = 0
    duplicates: int = 0
    replayed: int = 0
    rejected: int = 0
    applied: int = 0
    erased: int = 0
    errors: dict[str, str | None] = field(default_factory=lambda: {"push": None, "pull": None, "fetch": None})


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _profile_row(profile: dict[str, Any], now: float) -> tuple[Any, ...]:
    consents = profile.get("consents") or {}
    return (profile["customer_id"], int(profile.get("version") or 0), _encode(profile), profile.get("first_name"),
            1 if consents.get("personalization") is True else 0, now)


class SyncClient:
    """Edge ⇄ central sync worker. `submit_task(fn, done)` runs `fn(writer)` in the writer's transaction
    (edge.pipeline.Pipeline.submit_task); `writer.conn` is the write connection."""

    def __init__(self, cfg: Any, db_path: str, submit_task: SubmitTask, metrics: Any = None, *,
                 backoff_base_s: float = 0.5, backoff_cap_s: float = 30.0, push_timeout_s: float = 30.0,
                 pull_timeout_s: float = 30.0, push_idle_s: float = 1.0, changes_limit: int = p.MAX_CHANGES_LIMIT,
                 breaker_threshold: int = 3, breaker_cooldown_s: float = 10.0,
                 max_profiles: int = DEFAULT_MAX_PROFILES, profile_ttl_s: float = DEFAULT_PROFILE_TTL_S,
                 task_timeout_s: float = 60.0, identity_hooks: Iterable[IdentityHook] = (),
                 profile_hooks: Iterable[ProfileHook] = (), erase_by_key: EraseByKey | None = None) -> None:
        self.cfg = cfg
        central = cfg.central
        self.store_id: str = cfg.store.id
        self.url: str | None = central.url.rstrip("/") if central.url else None
        self.token: str | None = central.token
        self.pull_interval_s = float(central.pull_interval_s)
        self.push_batch = max(1, min(int(central.push_batch), p.MAX_BATCH_EVENTS))
        self.fetch_timeout_s = central.fetch_timeout_ms / 1000.0
        self.db_path = str(db_path)
        self.submit_task = submit_task
        self.metrics = metrics
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.push_timeout_s = push_timeout_s
        self.pull_timeout_s = pull_timeout_s
        self.push_idle_s = push_idle_s
        self.changes_limit = max(1, min(changes_limit, p.MAX_CHANGES_LIMIT))
        self.max_profiles = max_profiles
        self.profile_ttl_s = profile_ttl_s
        self.task_timeout_s = task_timeout_s
        self.breaker = CircuitBreaker(breaker_threshold, breaker_cooldown_s)
        # Called in the writer thread with its connection, so in-memory state (the identity map) follows the
        # table changes: on_identity(conn, key, customer_id, via).
        self.identity_hooks: tuple[IdentityHook, ...] = tuple(identity_hooks)
        # on_profiles(conn, customer_ids) after upserts: cached profiles re-read, revoked consents applied.
        self.profile_hooks: tuple[ProfileHook, ...] = tuple(profile_hooks)
        # Without it, a feed page holding an erasure is not applied (the cursor stays): never skipped.
        self.erase_by_key = erase_by_key
        self.st = _Status()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pull_now = threading.Event()
        self._pull_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._resolve_q: queue.Queue[list[str]] = queue.Queue(maxsize=10_000)
        self._schema_ready = False
        self._cursor_cache: str | None = None
        if metrics is not None:
            metrics.gauge("instore_edge_sync_last_success_timestamp", lambda: self.st.last_push_success or 0.0)
            metrics.gauge("instore_edge_sync_last_pull_timestamp", lambda: self.st.last_pull or 0.0)
            metrics.gauge("instore_edge_sync_outbox_oldest_age_seconds", lambda: self._outbox_stats()[1] or 0.0)
            metrics.gauge("instore_edge_sync_breaker_open", lambda: 0.0 if self.breaker.state == "closed" else 1.0)

    # --- life cycle -------------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def start(self) -> SyncClient:
        """Create the tables (through the writer), then start the push, pull and resolve threads."""
        if not self.run_task(ensure_schema_task):
            raise SyncError("could not create the sync tables: the pipeline writer is not running")
        self._schema_ready = True
        if not self.enabled:
            log.info("sync disabled: [central].url is not set")
            return self
        if not self.token:
            log.error("[central].token is not set: the central store will refuse this store; %s", TOKEN_HINT)
        for name, target in (("sync-push", self._push_loop), ("sync-pull", self._pull_loop),
                             ("sync-resolve", self._resolve_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("sync with %s started (store %s)", self.url, self.store_id)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._pull_now.set()
        try:
            self._resolve_q.put_nowait([])
        except queue.Full:
            pass
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        with self._sessions_lock:
            for s in self._sessions:
                s.close()

    def wake(self) -> None:
        """New events are in the outbox: push now rather than at the next idle poll (cheap, any thread)."""
        self._wake.set()

    def pull_soon(self) -> None:
        self._pull_now.set()

    # --- plumbing -----------------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        """One Session per thread (requests' Session is not thread-safe), with the bearer token."""
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers["Authorization"] = f"Bearer {self.token or ''}"
            s.headers["User-Agent"] = f"instore-edge-sync/{self.store_id}"
            self._local.session = s
            with self._sessions_lock:
                self._sessions.append(s)
        return s

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "reader", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.reader = conn
        return conn

    def run_task(self, fn: Callable[[sqlite3.Connection], None], timeout: float | None = None) -> bool:
        """Run fn(write_conn) in the writer's transaction and wait for its commit; True when it committed.

        False when fn raised (the writer rolled it back), or the client is stopping, or the writer did
        not commit within `timeout`."""
        done = threading.Event()
        ok = [False]

        def task(writer: Any) -> None:
            ok[0] = False
            fn(writer.conn)
            ok[0] = True

        self.submit_task(task, done.set)
        deadline = time.monotonic() + (self.task_timeout_s if timeout is None else timeout)
        while not done.wait(0.1):
            if time.monotonic() > deadline:
                return False
        return ok[0]

    def _error(self, op: str, message: str, level: int = logging.WARNING) -> None:
        self.st.errors[op] = message
        self.st.last_error = message
        self.st.last_error_at = time.time()
        log.log(level, "%s", message)
        if self.metrics is not None:
            self.metrics.inc("instore_edge_sync_errors_total", op=op)

    def _request(self, method: str, path: str, *, timeout: float | tuple[float, float], op: str,
                 **kw: Any) -> requests.Response:
        """One HTTP request; raises SyncError (retryable or not), AuthError for 401/403."""
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
            self.st.auth_ok = False
            raise AuthError(f"central refused the store token (HTTP {r.status_code} on {method} {path}: "
                            f"{_error_message(r)}): {TOKEN_HINT}", retryable=True, status=r.status_code)
        if r.status_code >= 500 or r.status_code in (408, 429):
            raise SyncError(f"central store answered HTTP {r.status_code} to {method} {path}: {_error_message(r)}",
                            status=r.status_code)
        self.st.auth_ok = True
        return r

    def _sleep(self, seconds: float) -> bool:
        """Wait, waking early on stop; True when stopping."""
        return self._stop.wait(seconds)

    # --- push -----------------------------------------------------------------------------------------------

    def _read_batch(self, conn: sqlite3.Connection, after: int, limit: int) -> _Batch | None:
        rows = conn.execute(
            "SELECT e.seq, e.event_id, e.kind, e.type, e.source, e.zone, e.subject, e.customer, e.ts, "
            "e.received_at, e.data FROM outbox o JOIN events e ON e.seq = o.event_seq "
            "WHERE o.event_seq > ? ORDER BY o.event_seq LIMIT ?", (after, limit)).fetchall()
        if not rows:
            return None
        parts: list[str] = []
        seqs: list[int] = []
        ids: list[str] = []
        dumps = json.dumps
        for seq, event_id, kind, typ, source, zone, subject, customer, ts, received_at, data in rows:
            obj: dict[str, Any] = {"event_id": event_id, "kind": kind, "ts": ts, "seq": seq}
            if typ:
                obj["type"] = typ
            if source:
                obj["source"] = source
            if zone:
                obj["zone"] = zone
            if subject:
                obj["subject"] = subject
            if customer:
                obj["customer"] = customer
            if received_at is not None:
                obj["received_at"] = received_at
            text = dumps(obj, separators=(",", ":"), ensure_ascii=False)
            if data and data != "{}" and data != "null":
                text = text[:-1] + ',"data":' + data + "}"  # already JSON in the events table
            parts.append(text)
            seqs.append(seq)
            ids.append(event_id)
        body = ('{"events":[' + ",".join(parts) + "]}").encode()
        digest = hashlib.sha256(body).hexdigest()[:16]
        return _Batch(seqs, ids, body, f"{self.store_id}:{seqs[0]}-{seqs[-1]}:{digest}")

    def _post_batch(self, batch: _Batch) -> p.PushResult:
        r = self._request("POST", p.EVENTS_PATH.format(store=self.store_id), op="push", data=batch.body,
                          timeout=(min(5.0, self.push_timeout_s), self.push_timeout_s),
                          headers={"Content-Type": "application/json", p.IDEMPOTENCY_HEADER: batch.key})
        if r.status_code != 200:
            raise SyncError(f"central store answered HTTP {r.status_code} to a batch of {len(batch.seqs)} events "
                            f"(seq {batch.first}..{batch.last}): {_error_message(r)}", retryable=False,
                            status=r.status_code)
        if r.headers.get("Idempotent-Replayed") == "true":
            self.st.replayed += 1  # the central store had this batch already: its first answer, replayed
        try:
            return p.PushResult.from_dict(r.json())
        except (ValueError, TypeError, AttributeError) as exc:
            raise SyncError(f"central store sent an unreadable answer to a push ({exc})") from None

    def _settle_task(self, batch: _Batch, result: p.PushResult | None,
                     whole_reject: tuple[str, str] | None = None) -> Callable[[sqlite3.Connection], None]:
        """The write that follows an answer: record rejects, then drop what the central store holds."""
        by_id = dict(zip(batch.ids, batch.seqs))
        now = time.time()

        def apply(conn: sqlite3.Connection) -> None:
            rejects: list[tuple[Any, ...]] = []
            done: list[int] = []
            if whole_reject is not None:
                rejects = [(s, i, whole_reject[0], whole_reject[1], now) for s, i in zip(batch.seqs, batch.ids)]
            else:
                assert result is not None
                for r in result.rejected:
                    seq = by_id.get(r["id"]) if r.get("id") is not None else None
                    if seq is None and 0 <= r.get("index", -1) < len(batch.seqs):
                        seq = batch.seqs[r["index"]]
                    if seq is not None:
                        rejects.append((seq, batch.ids[batch.seqs.index(seq)] if r.get("id") is None else r["id"],
                                        r["reason"], r.get("detail"), now))
                done = [by_id[i] for i in (*result.accepted, *result.duplicates) if i in by_id]
            if rejects:
                conn.executemany("INSERT OR REPLACE INTO sync_rejects(event_seq, event_id, reason, detail, "
                                 "rejected_at) VALUES (?,?,?,?,?)", rejects)
                done += [r[0] for r in rejects]
            conn.executemany("DELETE FROM outbox WHERE event_seq = ?", ((s,) for s in done))

        return apply

    def push_once(self, max_batches: int | None = None) -> int:
        """Push until the outbox is empty (or max_batches sent); returns events delivered. Raises SyncError."""
        conn = self._reader()
        sent = 0
        batches = 0
        limit = self.push_batch
        nxt: _Batch | None = None
        while not self._stop.is_set() and (max_batches is None or batches < max_batches):
            batch = nxt or self._read_batch(conn, 0, limit)
            nxt = None
            if batch is None:
                break
            self.st.last_push_attempt = time.time()
            try:
                result = self._post_batch(batch)
                task = self._settle_task(batch, result)
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
                task = self._settle_task(batch, None, (reason, str(exc)[:500]))
            if result is not None:
                missing = len(batch.ids) - len(result.accepted) - len(result.duplicates) - len(result.rejected)
                if missing > 0:
                    raise SyncError(f"central store answered for {len(batch.ids) - missing} of {len(batch.ids)} "
                                    "events of a batch; retrying it")
            done = threading.Event()
            ok = [False]

            def wrapped(writer: Any, task: Callable[[sqlite3.Connection], None] = task) -> None:
                ok[0] = False
                task(writer.conn)
                ok[0] = True

            self.submit_task(wrapped, done.set)
            # While the writer commits the deletion, prepare the next batch (events after this one).
            nxt = self._read_batch(conn, batch.last, limit)
            deadline = time.monotonic() + self.task_timeout_s
            while not done.wait(0.1):
                if self._stop.is_set() or time.monotonic() > deadline:
                    raise SyncError("the edge writer did not commit the outbox deletion in time", retryable=True)
            if not ok[0]:
                raise SyncError("the edge writer failed to delete pushed events from the outbox (see the log)")
            if result is not None:
                self.st.pushed += len(result.accepted)
                self.st.duplicates += len(result.duplicates)
                self.st.rejected += len(result.rejected)
                if result.rejected:
                    log.warning("central store rejected %d event(s) (first: %s: %s); kept in sync_rejects",
                                len(result.rejected), result.rejected[0]["reason"], result.rejected[0]["detail"])
                if self.metrics is not None:
                    for name, n in (("accepted", len(result.accepted)), ("duplicate", len(result.duplicates)),
                                    ("rejected", len(result.rejected))):
                        if n:
                            self.metrics.inc("instore_edge_sync_events_total", n, result=name)
                sent += len(result.accepted) + len(result.duplicates)
            self.st.last_push_success = time.time()
            self.st.errors["push"] = None
            batches += 1
            limit = self.push_batch
        return sent

    def _push_loop(self) -> None:
        backoff = Backoff(self.backoff_base_s, self.backoff_cap_s)
        while not self._stop.is_set():
            try:
                self.push_once()
                backoff.reset()
            except AuthError as exc:
                delay = max(backoff.next_delay(), min(self.backoff_cap_s, 5.0))
                self._error("push", str(exc), logging.ERROR)
                if self._sleep(delay):
                    return
                continue
            except SyncError as exc:
                delay = backoff.next_delay()
                self._error("push", f"push failed, retrying the same batch in {delay:.2f}s: {exc}")
                if self._sleep(delay):
                    return
                continue
            except sqlite3.Error as exc:
                delay = backoff.next_delay()
                self._error("push", f"cannot read the outbox ({exc}); retrying in {delay:.2f}s", logging.ERROR)
                if self._sleep(delay):
                    return
                continue
            except Exception as exc:  # a bug must not end the thread: the outbox would grow unseen
                delay = backoff.next_delay()
                log.exception("sync push failed unexpectedly")
                self._error("push", f"push failed unexpectedly ({type(exc).__name__}: {exc})", logging.ERROR)
                if self._sleep(delay):
                    return
                continue
            self._wake.wait(self.push_idle_s)
            self._wake.clear()

    # --- pull -----------------------------------------------------------------------------------------------

    def _get_cursor(self) -> str | None:
        row = self._reader().execute("SELECT value FROM sync_state WHERE key = 'cursor'").fetchone()
        return row[0] if row else None

    def _get_changes(self, since: str | None) -> p.ChangesPage:
        params: dict[str, Any] = {"limit": self.changes_limit}
        if since:
            params["since"] = since
        r = self._request("GET", p.CHANGES_PATH, op="pull", params=params,
                          timeout=(min(5.0, self.pull_timeout_s), self.pull_timeout_s))
        if r.status_code != 200:
            raise SyncError(f"central store answered HTTP {r.status_code} to the change feed: {_error_message(r)}",
                            status=r.status_code, retryable=r.status_code != 400)
        try:
            return p.ChangesPage.from_dict(r.json())
        except (ValueError, TypeError, AttributeError) as exc:
            raise SyncError(f"central store sent an unreadable change feed page ({exc})") from None

    def pull_once(self) -> int:
        """Fetch and apply every change after the stored cursor; returns the changes applied. Raises SyncError."""
        with self._pull_lock:
            return self._pull()

    def _pull(self) -> int:
        self.st.last_pull_attempt = time.time()
        cursor = self._get_cursor()
        page = self._get_changes(cursor)
        applied = 0
        resync_started: float | None = None
        while True:
            if page.reset and resync_started is None:
                log.warning("the central store's change feed restarted (another or restored database): full resync")
                resync_started = time.time()
            counts = [0, 0]
            task = self._apply_page_task(page, counts, force=resync_started is not None,
                                         clear_tombstones=page.reset)
            done = threading.Event()
            ok = [False]

            def wrapped(writer: Any, task: Callable[[sqlite3.Connection], None] = task) -> None:
                ok[0] = False
                task(writer.conn)
                ok[0] = True

            self.submit_task(wrapped, done.set)
            nxt: p.ChangesPage | SyncError | None = None
            if page.more:  # fetch the next page while the writer applies this one
                try:
                    nxt = self._get_changes(page.next)
                except SyncError as exc:
                    nxt = exc
            if not done.wait(self.task_timeout_s):
                raise SyncError("the edge writer did not apply a change feed page in time")
            if not ok[0]:
                raise SyncError("the edge writer failed to apply a change feed page (see the log); the cursor "
                                "was not moved")
            applied += counts[0]
            self.st.applied += counts[0]
            self.st.erased += counts[1]
            if self.metrics is not None and counts[0]:
                self.metrics.inc("instore_edge_sync_profile_changes_total", counts[0])
            if isinstance(nxt, SyncError):
                raise nxt
            if nxt is None:
                break
            page = nxt
        if resync_started is not None:
            # Whatever the new feed did not mention is not in the central store any more.
            self.run_task(lambda conn: _drop_stale_after_resync(conn, resync_started))
        self.evict()
        self.st.last_pull = time.time()
        self.st.errors["pull"] = None
        return applied

    def _apply_page_task(self, page: p.ChangesPage, counts: list[int], *, force: bool,
                         clear_tombstones: bool) -> Callable[[sqlite3.Connection], None]:
        changes = page.changes
        cursor = page.next

        def apply(conn: sqlite3.Connection) -> None:
            counts[0] = counts[1] = 0
            if clear_tombstones:  # erasures asked here and not yet confirmed stay
                conn.execute("DELETE FROM sync_tombstones WHERE pending = 0")
            n_applied, n_erased = self._apply_changes(conn, changes, force=force)
            counts[0], counts[1] = n_applied, n_erased
            conn.execute("INSERT INTO sync_state(key, value) VALUES ('cursor', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (cursor,))

        return apply

    def _apply_changes(self, conn: sqlite3.Connection, changes: list[dict[str, Any]], *,
                       force: bool = False, via: str = VIA_CENTRAL) -> tuple[int, int]:
        """Apply feed entries (or fetched profiles as upserts) newer than what the edge holds.

        An erasure entry names the customer by hash (`customer_hash`): it erases whoever this device holds
        under that hash, and confirms a pending tombstone. A customer with a pending tombstone (erased
        here, the central store not yet told) is never re-learned, whatever the version, even on resync."""
        now = time.time()
        latest: dict[str, dict[str, Any]] = {}  # customer id → upsert; "#" + erase key → erasure
        for ch in changes:  # one entry per customer: the newest
            version, op = ch.get("version"), ch.get("op")
            key: str | None = None
            if op == "erase":
                hashed = ch.get("customer_hash")
                if hashed is None and isinstance(ch.get("customer_id"), str):
                    hashed = tombstone_key(ch["customer_id"])  # a central store from before hashed erasures
                if isinstance(hashed, str) and p.ERASE_KEY_RE.fullmatch(hashed):
                    key = "#" + hashed
            elif op == "upsert" and isinstance(ch.get("customer_id"), str) and isinstance(ch.get("profile"), dict):
                key = ch["customer_id"]
            if key is None or not isinstance(version, int):
                log.warning("ignoring a malformed change feed entry")
                continue
            prev = latest.get(key)
            if prev is None or version > prev["version"]:
                latest[key] = ch
        if not latest:
            return 0, 0
        ids = [k for k in latest if not k.startswith("#")]
        hashes = [tombstone_key(cid) for cid in ids] + [k[1:] for k in latest if k.startswith("#")]
        cached: dict[str, int] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            cached.update(conn.execute(f"SELECT customer_id, version FROM profiles WHERE customer_id IN ({marks})",
                                       chunk))
        tombs = tombstones(conn, hashes)
        upserts: list[dict[str, Any]] = []
        erase_keys: list[tuple[str, int]] = []
        for key, ch in latest.items():
            v = ch["version"]
            if key.startswith("#"):
                erased_v, pending = tombs.get(key[1:], (-1, False))
                if force or pending or v > erased_v:
                    erase_keys.append((key[1:], v))
                continue
            erased_v, pending = tombs.get(tombstone_key(key), (-1, False))
            if pending or (not force and (v <= cached.get(key, -1) or v <= erased_v)):
                continue
            prof = dict(ch["profile"])
            prof["customer_id"] = key
            prof["version"] = v
            upserts.append(prof)
        if upserts:
            conn.executemany(
                "INSERT INTO profiles(customer_id, version, profile, first_name, consent_personalization, updated_at) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(customer_id) DO UPDATE SET version=excluded.version, "
                "profile=excluded.profile, first_name=excluded.first_name, "
                "consent_personalization=excluded.consent_personalization, updated_at=excluded.updated_at",
                [_profile_row(prof, now) for prof in upserts])
            keep: list[tuple[str, str, str, float]] = []
            for prof in upserts:
                keys = prof.get("identities") or []
                for key in keys:
                    if isinstance(key, str):
                        keep.append((key, prof["customer_id"], via, now))
            # Keys the central store no longer lists for these customers are forgotten (learned here
            # ones, from a kiosk say, stay: the central store learns them from our identity_link events).
            for chunk in _chunks([prof["customer_id"] for prof in upserts if prof["customer_id"] in cached]):
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM identities WHERE via = '{VIA_CENTRAL}' AND customer_id IN ({marks})",
                             chunk)
            if keep:
                conn.executemany("INSERT INTO identities(key, customer_id, via, learned_at) VALUES (?,?,?,?) "
                                 "ON CONFLICT(key) DO UPDATE SET customer_id=excluded.customer_id, via=excluded.via, "
                                 "learned_at=excluded.learned_at", keep)
                for hook in self.identity_hooks:
                    for key, cid, v, _ in keep:
                        hook(conn, key, cid, v)
            for profile_hook in self.profile_hooks:
                profile_hook(conn, [prof["customer_id"] for prof in upserts])
        if erase_keys:
            if self.erase_by_key is None:
                raise SyncError("cannot apply an erasure from the change feed: no eraser given", retryable=False)
            self.erase_by_key(conn, erase_keys, now)
        return len(upserts) + len(erase_keys), len(erase_keys)

    def _pull_loop(self) -> None:
        backoff = Backoff(self.backoff_base_s, self.backoff_cap_s)
        delay = 0.0
        while not self._stop.is_set():
            if delay and (self._pull_now.wait(delay) or False):
                self._pull_now.clear()
            if self._stop.is_set():
                return
            try:
                self.pull_once()
                backoff.reset()
                delay = self.pull_interval_s
            except AuthError as exc:
                self._error("pull", str(exc), logging.ERROR)
                delay = max(backoff.next_delay(), min(self.backoff_cap_s, 5.0))
            except SyncError as exc:
                delay = min(backoff.next_delay(), self.pull_interval_s)
                self._error("pull", f"profile pull failed, retrying in {delay:.2f}s: {exc}")
            except Exception as exc:
                log.exception("sync pull failed unexpectedly")
                delay = backoff.next_delay()
                self._error("pull", f"profile pull failed unexpectedly ({type(exc).__name__}: {exc})", logging.ERROR)

    # --- bounded cache ------------------------------------------------------------------------------------

    def evict(self) -> int:
        """Keep at most max_profiles cached, none unseen for longer than the TTL; the least recently seen go
        first; customers currently present are never evicted. Returns how many were evicted."""
        out = [0]

        def task(conn: sqlite3.Connection) -> None:
            out[0] = evict_profiles(conn, self.max_profiles, self.profile_ttl_s, time.time())

        self.run_task(task)
        return out[0]

    # --- on-demand fetch ------------------------------------------------------------------------------------

    def _guarded(self, method: str, path: str, **kw: Any) -> requests.Response | None:
        """A request behind the breaker with the fetch timeout; None when not sent or failed."""
        if not self.enabled:
            return None
        if not self.breaker.allow():
            return None
        try:
            r = self._request(method, path, op="fetch", timeout=(self.fetch_timeout_s, self.fetch_timeout_s), **kw)
        except SyncError as exc:
            self.breaker.failure()
            self.st.errors["fetch"] = str(exc)
            self.st.last_error = str(exc)
            self.st.last_error_at = time.time()
            log.warning("%s", exc)
            if self.metrics is not None:
                self.metrics.inc("instore_edge_sync_errors_total", op="fetch")
            return None
        self.breaker.success()
        return r

    def fetch_profile(self, customer_id: str) -> dict[str, Any] | None:
        """The profile from the central store (None on 404, when offline or the breaker is open), within
        about fetch_timeout_ms; a found profile is cached (asynchronously, through the writer)."""
        if not isinstance(customer_id, str) or not p.ID_RE.fullmatch(customer_id):
            return None
        r = self._guarded("GET", p.PROFILE_PATH.format(customer_id=customer_id))
        if r is None or r.status_code != 200:
            return None
        try:
            profile = r.json()
        except ValueError:
            return None
        if not isinstance(profile, dict) or not isinstance(profile.get("version"), int):
            return None
        self.st.errors["fetch"] = None
        change = {"customer_id": customer_id, "version": profile["version"], "op": "upsert", "profile": profile}
        self.submit_task(lambda w: self._apply_changes(w.conn, [change]) and None, None)
        return profile

    def cached_profile(self, customer_id: str) -> dict[str, Any] | None:
        """The cached profile (a read on this thread's connection), or None."""
        row = self._reader().execute("SELECT profile FROM profiles WHERE customer_id = ?", (customer_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def resolve(self, keys: list[str]) -> dict[str, str] | None:
        """key → customer_id for the keys the central store knows; None when offline or the breaker is open."""
        keys = [k for k in dict.fromkeys(keys) if isinstance(k, str)][:p.MAX_RESOLVE_KEYS]
        if not keys:
            return {}
        r = self._guarded("POST", p.RESOLVE_PATH, json={"keys": keys})
        if r is None or r.status_code != 200:
            return None
        try:
            matches = r.json().get("matches") or {}
        except (ValueError, AttributeError):
            return None
        return {k: v for k, v in matches.items() if isinstance(k, str) and isinstance(v, str)}

    def request_resolution(self, keys: list[str]) -> None:
        """Ask the central store about these keys on a background thread; matches land in `identities`.
        Never blocks: when the queue is full or the breaker is open, the request is dropped."""
        if not self.enabled or not keys or self.breaker.state == "open":
            return
        try:
            self._resolve_q.put_nowait(list(keys))
        except queue.Full:
            pass

    def _resolve_loop(self) -> None:
        while not self._stop.is_set():
            keys = self._resolve_q.get()
            if self._stop.is_set():
                return
            pending = list(keys)
            while len(pending) < p.MAX_RESOLVE_KEYS:
                try:
                    pending += self._resolve_q.get_nowait()
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
                self.submit_task(lambda w, m=matches: self._store_matches(w.conn, m), None)

    def _store_matches(self, conn: sqlite3.Connection, matches: dict[str, str]) -> None:
        """Keys the central store resolved, except to customers erased here (a resolve answered before the
        central store applied the erasure must not bring the shopper back)."""
        now = time.time()
        erased = erased_here(conn, set(matches.values()))
        rows = [(k, c, f"{VIA_CENTRAL}", now) for k, c in matches.items() if c not in erased]
        if not rows:
            return
        conn.executemany("INSERT INTO identities(key, customer_id, via, learned_at) VALUES (?,?,?,?) "
                         "ON CONFLICT(key) DO UPDATE SET customer_id=excluded.customer_id, via=excluded.via, "
                         "learned_at=excluded.learned_at", rows)
        for hook in self.identity_hooks:
            for key, cid, via, _ in rows:
                hook(conn, key, cid, via)

    # --- status ---------------------------------------------------------------------------------------------

    def _outbox_stats(self) -> tuple[int, float | None]:
        from edge.store.queries import outbox_stats

        try:
            return outbox_stats(self._reader(), time.time())
        except sqlite3.Error:
            return 0, None

    def status(self) -> dict[str, Any]:
        """For `instore-edge sync status`, /readyz and the dashboard."""
        pending, age = self._outbox_stats()
        try:
            cursor = self._get_cursor()
            rejects = self._reader().execute("SELECT count(*) FROM sync_rejects").fetchone()[0]
            cached = self._reader().execute("SELECT count(*) FROM profiles").fetchone()[0]
            erasing = self._reader().execute("SELECT count(*) FROM sync_tombstones WHERE pending = 1").fetchone()[0]
        except sqlite3.Error:
            cursor, rejects, cached, erasing = None, 0, 0, 0
        st = self.st
        return {
            "enabled": self.enabled,
            "central_url": self.url,
            "store": self.store_id,
            "running": any(t.is_alive() for t in self._threads),
            "auth_ok": st.auth_ok,
            "outbox_pending": pending,
            "outbox_oldest_age_s": None if age is None else round(age, 3),
            "last_push_success": st.last_push_success,
            "last_push_attempt": st.last_push_attempt,
            "last_pull": st.last_pull,
            "last_pull_attempt": st.last_pull_attempt,
            "cursor": cursor,
            "breaker": self.breaker.state,
            "last_error": st.last_error,
            "last_error_at": st.last_error_at,
            "errors": dict(st.errors),
            "pushed": st.pushed,
            "duplicates": st.duplicates,
            "replayed_batches": st.replayed,
            "rejected_total": rejects,
            "profiles_cached": cached,
            "changes_applied": st.applied,
            # Erasures asked here that the central store has not fed back yet (their tombstones are pending).
            "erasures_pending": erasing,
        }


# --- writer-side helpers (run inside the writer's transaction) -------------------------------------------


def ensure_schema_task(conn: sqlite3.Connection) -> None:
    ensure_schema(conn)


def tombstone_key(customer_id: str) -> str:
    """Tombstones keep a hash, not the id (sync.protocol.erase_key): after an erasure the device holds no
    trace of the shopper, yet still recognises a stale copy of the erased profile."""
    return p.erase_key(customer_id)


def tombstones(conn: sqlite3.Connection, keys: list[str]) -> dict[str, tuple[int, bool]]:
    """erase key → (version, pending) for the keys that have a tombstone."""
    out: dict[str, tuple[int, bool]] = {}
    for chunk in _chunks(keys):
        marks = ",".join("?" * len(chunk))
        out.update((k, (v, bool(pending))) for k, v, pending in conn.execute(
            f"SELECT customer_id, version, pending FROM sync_tombstones WHERE customer_id IN ({marks})", chunk))
    return out


def erased_here(conn: sqlite3.Connection, customers: set[str]) -> set[str]:
    """The customers with a tombstone and no cached profile newer than it: not to be learned again."""
    if not customers:
        return set()
    by_key = {tombstone_key(c): c for c in customers}
    tombs = tombstones(conn, list(by_key))
    if not tombs:
        return set()
    hit = [by_key[k] for k in tombs]
    cached: dict[str, int] = {}
    for chunk in _chunks(hit):
        marks = ",".join("?" * len(chunk))
        cached.update(conn.execute(f"SELECT customer_id, version FROM profiles WHERE customer_id IN ({marks})", chunk))
    return {c for c in hit if tombs[tombstone_key(c)][1] or cached.get(c, -1) <= tombs[tombstone_key(c)][0]}


def evict_profiles(conn: sqlite3.Connection, max_profiles: int, ttl_s: float, now: float) -> int:
    """Bound the context cache (see SyncClient.evict); also forgets the evicted customers' central keys."""
    present = "SELECT customer FROM presence WHERE customer IS NOT NULL"
    conn.execute(f"UPDATE profiles SET last_seen = (SELECT max(last_seen) FROM presence "
                 f"WHERE presence.customer = profiles.customer_id) WHERE customer_id IN ({present})")
    victims = [r[0] for r in conn.execute(
        f"SELECT customer_id FROM profiles WHERE coalesce(last_seen, updated_at) < ? "
        f"AND customer_id NOT IN ({present})", (now - ttl_s,))]
    total = conn.execute("SELECT count(*) FROM profiles").fetchone()[0] - len(victims)
    if total > max_profiles:
        skip = set(victims)
        extra = total - max_profiles
        for (cid,) in conn.execute(
                f"SELECT customer_id FROM profiles WHERE customer_id NOT IN ({present}) "
                "ORDER BY last_seen IS NOT NULL, last_seen, updated_at"):
            if cid in skip:
                continue
            victims.append(cid)
            extra -= 1
            if extra <= 0:
                break
    for chunk in _chunks(victims):
        marks = ",".join("?" * len(chunk))
        conn.execute(f"DELETE FROM profiles WHERE customer_id IN ({marks})", chunk)
        conn.execute(f"DELETE FROM identities WHERE via = '{VIA_CENTRAL}' AND customer_id IN ({marks})", chunk)
    # Erasures asked here stay until the central store confirms them (it always does, by feeding them back).
    conn.execute("DELETE FROM sync_tombstones WHERE erased_at < ? AND pending = 0",
                 (now - max(ttl_s, 30 * 24 * 3600.0),))
    return len(victims)


def _drop_stale_after_resync(conn: sqlite3.Connection, started: float) -> None:
    """After a full resync: profiles the new feed did not deliver are gone from the central store."""
    stale = [r[0] for r in conn.execute("SELECT customer_id FROM profiles WHERE updated_at < ?", (started,))]
    for chunk in _chunks(stale):
        marks = ",".join("?" * len(chunk))
        conn.execute(f"DELETE FROM profiles WHERE customer_id IN ({marks})", chunk)
        conn.execute(f"DELETE FROM identities WHERE via = '{VIA_CENTRAL}' AND customer_id IN ({marks})", chunk)


def _error_message(r: requests.Response) -> str:
    try:
        err = r.json().get("error") or {}
        return shorten(str(err.get("message") or err.get("code") or r.reason), 300)
    except (ValueError, AttributeError):
        return shorten(r.text or r.reason or "", 200) or f"HTTP {r.status_code}"
