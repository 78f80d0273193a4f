"""The shopper's context for decisions: who they are (a cached profile subset) and what they just did.

Profiles are read from the local `profiles` table (filled by sync/client.py) through the connection the
caller gives, normally the writer's: decisions run in the writer thread, and a profile upserted earlier in
the same transaction is already visible there. Parsed profiles are kept in a small LRU; sync calls
`invalidate(customer_id)` when it applies a change, and entries also age out (`max_age_s`), so a revoked
consent takes effect at once with the hook and within seconds without it. A customer the table does
not hold is remembered as absent for a few seconds only: the sync client may be fetching it.

Recent in-store activity is kept in memory only, the last ACTIVITY_LEN events per key, where a key is
the event's subject (a device or a kiosk/window session) and, for identified events, its customer id.
An anonymous subject's activity ends with its visit (`visit_end`): the edge knows an anonymous shopper for
one visit only. Staff and asset events, gateway status and raw beacon sightings are never noted (the
presence events derived from the sightings are).

Everything here is pure Python and O(1) per call, except a cache miss (one primary-key SELECT).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from edge.config import Config, ProductConfig
from edge.model import Event

log = logging.getLogger("instore_edge.context")

PROFILE_CACHE_MAX = 4096  # parsed profiles kept in memory
PROFILE_MAX_AGE_S = 60.0  # a cached profile is re-read after this long, invalidated or not
ABSENT_MAX_AGE_S = 5.0  # "not in the table" is remembered this long (sync may be fetching it)
ACTIVITY_LEN = 16  # events remembered per subject / customer
ACTIVITY_KEYS_MAX = 10000  # subjects + customers with activity kept in memory (least recent dropped)
ACTIVITY_MAX_AGE_S = 4 * 3600.0  # activity older than this is ignored (and dropped on the way)
NOT_NOTED = frozenset({"beacon", "gateway_status"})
MAX_LIST = 64  # wishlist / cart / orders entries kept per profile


@dataclass(frozen=True, slots=True)
class Shopper:
    """The subset of a customer's profile that decisions may use."""

    customer_id: str
    first_name: str | None
    segments: tuple[str, ...]
    tier: str | None
    personalization: bool  # consents.personalization is exactly true
    marketing: bool
    wishlist: tuple[str, ...]  # SKUs
    cart: tuple[str, ...]  # SKUs
    orders_ready: tuple[dict[str, Any], ...]  # {"order_id", "items", "ready_at", "pickup_bay"}
    preferences: dict[str, Any]

    @classmethod
    def from_profile(cls, customer_id: str, profile: dict[str, Any]) -> Shopper:
        """Read the fields defensively: a malformed field is treated as absent, never as a match."""
        consents = profile.get("consents")
        consents = consents if isinstance(consents, dict) else {}
        first_name = profile.get("first_name")
        tier = profile.get("tier")
        prefs = profile.get("preferences")
        return cls(
            customer_id=customer_id,
            first_name=first_name.strip() or None if isinstance(first_name, str) else None,
            segments=_strings(profile.get("segments")),
            tier=tier if isinstance(tier, str) and tier else None,
            personalization=consents.get("personalization") is True,
            marketing=consents.get("marketing") is True,
            wishlist=_strings(profile.get("wishlist")),
            cart=_strings(profile.get("cart")),
            orders_ready=tuple(o for o in _list(profile.get("orders_ready")) if isinstance(o, dict)),
            preferences=prefs if isinstance(prefs, dict) else {},
        )


def _list(value: Any) -> list[Any]:
    return value[:MAX_LIST] if isinstance(value, list) else []


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(v for v in _list(value) if isinstance(v, str) and v)


class Touch(NamedTuple):
    """One noted event: what, where, about which item, after how long in the zone."""

    ts: float
    name: str  # event name: "zone_enter", "window.touch", "kiosk.add_to_cart"...
    zone: str | None
    item: str | None  # a SKU, for window/kiosk events that carry one
    dwell_s: float | None


class Activity:
    """A shopper's recent events, oldest first (a read-only view; `note` adds to it)."""

    __slots__ = ("touches",)

    def __init__(self, touches: deque[Touch]) -> None:
        self.touches = touches

    def __iter__(self):
        return iter(self.touches)

    def __len__(self) -> int:
        return len(self.touches)

    def zones(self) -> list[str]:
        """Zones visited, in the order first seen."""
        return list(dict.fromkeys(t.zone for t in self.touches if t.zone))

    def items(self) -> list[str]:
        """Items touched at windows and kiosks, most recent first, each once."""
        return list(dict.fromkeys(t.item for t in reversed(self.touches) if t.item))

    def dwell(self) -> dict[str, float]:
        """The longest dwell seen per zone, in seconds."""
        out: dict[str, float] = {}
        for t in self.touches:
            if t.zone and t.dwell_s is not None and t.dwell_s > out.get(t.zone, -1.0):
                out[t.zone] = t.dwell_s
        return out

    def last(self, names: frozenset[str] | None = None, since: float = 0.0) -> Touch | None:
        """The most recent touch named (or of a kind) in `names`, no older than `since`."""
        for t in reversed(self.touches):
            if t.ts < since:
                return None
            if names is None or t.name in names or t.name.partition(".")[0] in names:
                return t
        return None


class CustomerContext:
    """Profiles (cached) and recent activity, for the rule engine. Used from the writer thread; `invalidate`
    and `forget` may be called from any thread."""

    def __init__(self, cfg: Config, conn: sqlite3.Connection | Callable[[], sqlite3.Connection] | None = None, *,
                 max_profiles: int = PROFILE_CACHE_MAX, max_age_s: float = PROFILE_MAX_AGE_S,
                 absent_max_age_s: float = ABSENT_MAX_AGE_S, activity_len: int = ACTIVITY_LEN,
                 activity_keys_max: int = ACTIVITY_KEYS_MAX, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self._conn = conn
        self.max_profiles = max_profiles
        self.max_age_s = max_age_s
        self.absent_max_age_s = absent_max_age_s
        self.activity_len = activity_len
        self.activity_keys_max = activity_keys_max
        self.clock = clock
        self.on_miss: Callable[[str], None] | None = None
        self.products: dict[str, ProductConfig] = {p.sku: p for p in getattr(cfg, "products", [])}
        self._profiles: OrderedDict[str, tuple[Shopper | None, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._activity: OrderedDict[str, deque[Touch]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    # --- profiles ---
    @property
    def conn(self) -> sqlite3.Connection | None:
        conn = self._conn
        return conn() if callable(conn) and not isinstance(conn, sqlite3.Connection) else conn

    @conn.setter
    def conn(self, value: sqlite3.Connection | Callable[[], sqlite3.Connection] | None) -> None:
        self._conn = value
        self.invalidate()

    def profile(self, customer_id: str | None) -> Shopper | None:
        """The customer's cached profile subset, or None (unknown here, erased, or no database)."""
        if not customer_id:
            return None
        now = self.clock()
        with self._lock:
            entry = self._profiles.get(customer_id)
            if entry is not None:
                shopper, loaded = entry
                if now - loaded < (self.max_age_s if shopper is not None else self.absent_max_age_s):
                    self._profiles.move_to_end(customer_id)
                    self.hits += 1
                    return shopper
        self.misses += 1
        found, shopper = self._load(customer_id)
        if not found:
            return shopper  # a read error: not cached, the next event tries again
        if shopper is None and self.on_miss is not None:
            self.on_miss(customer_id)  # e.g. an on-demand fetch from the central store; must not block
        with self._lock:
            self._profiles[customer_id] = (shopper, now)
            self._profiles.move_to_end(customer_id)
            while len(self._profiles) > self.max_profiles:
                self._profiles.popitem(last=False)
        return shopper

    def _load(self, customer_id: str) -> tuple[bool, Shopper | None]:
        """(read ok, shopper) from the profiles table."""
        conn = self.conn
        if conn is None:
            return True, None
        try:
            row = conn.execute("SELECT profile FROM profiles WHERE customer_id = ?", (customer_id,)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return True, None  # sync never ran on this file: nobody is known
            log.warning("cannot read a profile: %s", exc)
            return False, None
        except sqlite3.Error as exc:
            log.warning("cannot read a profile: %s", exc)
            return False, None
        if row is None:
            return True, None
        try:
            profile = json.loads(row[0])
        except (TypeError, ValueError):
            log.warning("a cached profile is not valid JSON; treating the customer as unknown")
            return True, None
        return True, Shopper.from_profile(customer_id, profile) if isinstance(profile, dict) else None

    def invalidate(self, customer_id: str | Iterable[str] | None = None) -> None:
        """Forget cached profiles (one, several, or all with None): the next look-up reads the table."""
        with self._lock:
            if customer_id is None:
                self._profiles.clear()
            elif isinstance(customer_id, str):
                self._profiles.pop(customer_id, None)
            else:
                for cid in customer_id:
                    self._profiles.pop(cid, None)

    def forget(self, customer_id: str) -> None:
        """Erasure: drop the customer's cached profile and activity."""
        self.invalidate(customer_id)
        with self._lock:
            self._activity.pop(customer_id, None)

    # --- products ---
    def product(self, sku: str | None) -> ProductConfig | None:
        return self.products.get(sku) if sku else None

    # --- activity ---
    def note(self, event: Event, now: float | None = None) -> None:
        """Remember a recorded event as activity of its subject and its customer, at `now` (the edge's
        clock: device clocks are not trusted), by default its receive time."""
        if event.kind in NOT_NOTED:
            return
        data = event.data
        if data and (data.get("staff") or data.get("asset")):
            return
        subject, customer = event.subject, event.customer
        if event.kind == "visit_end":
            if subject:
                with self._lock:
                    self._activity.pop(subject, None)
            return
        if not subject and not customer:
            return
        item = data.get("item") if data else None
        dwell = data.get("dwell_s") if data else None
        touch = Touch(event.received_at if now is None else now, event.name, event.zone,
                      item if isinstance(item, str) else None,
                      float(dwell) if isinstance(dwell, int | float) and not isinstance(dwell, bool) else None)
        with self._lock:
            for key in (subject, customer):
                if not key:
                    continue
                touches = self._activity.get(key)
                if touches is None:
                    touches = self._activity[key] = deque(maxlen=self.activity_len)
                    if len(self._activity) > self.activity_keys_max:
                        self._activity.popitem(last=False)
                else:
                    self._activity.move_to_end(key)
                touches.append(touch)

    def activity(self, key: str | None) -> Activity | None:
        """Recent activity of a subject or a customer (None when there is none)."""
        touches = self._activity.get(key) if key else None
        if not touches:
            return None
        return Activity(touches)

    def recent(self, key: str | None, names: frozenset[str] | None, since: float) -> Touch | None:
        """The latest event of `key` named in `names` (a name or a kind) at or after `since`."""
        touches = self._activity.get(key) if key else None
        if not touches:
            return None
        for t in reversed(touches):
            if t.ts < since:
                return None
            if names is None or t.name in names or t.name.partition(".")[0] in names:
                return t
        return None

    def last_item(self, key: str | None, since: float) -> str | None:
        """The last item `key` touched at or after `since`."""
        touches = self._activity.get(key) if key else None
        if not touches:
            return None
        for t in reversed(touches):
            if t.ts < since:
                return None
            if t.item:
                return t.item
        return None

    def prune(self, now: float) -> int:
        """Drop activity older than ACTIVITY_MAX_AGE_S; returns how many keys went."""
        cutoff = now - ACTIVITY_MAX_AGE_S
        with self._lock:
            stale = [k for k, touches in self._activity.items() if not touches or touches[-1].ts < cutoff]
            for k in stale:
                del self._activity[k]
        return len(stale)

    def stats(self) -> dict[str, int]:
        return {"profiles_cached": len(self._profiles), "activity_keys": len(self._activity),
                "profile_hits": self.hits, "profile_misses": self.misses}
