"""Shoppers: who they are (a cached profile subset), what they just did, and THE consent gate.

Profiles are read from the local `profiles` table (filled by sync) through the connection the caller
gives, normally the writer's: decisions run in the writer thread, and a profile upserted earlier in the
same transaction is already visible there. Parsed profiles are kept in a small LRU; sync invalidates
them when it applies a change, and entries also age out (`max_age_s`), so a revoked consent takes effect
at once. A customer the table does not hold is noted (`take_missing`: the pipeline asks the central store
for the profile after the commit) and remembered as absent for a few seconds only.

`consented` is the one consent gate: rules, the kiosk and the shoppers' landing pages all ask it whether a
profile may shape what a shopper sees. `kiosk_view` is what a kiosk may show of a shopper.

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from edge.config import Config
from edge.domain.catalogue import Catalogue, Product
from edge.model import Event
from edge.store.db import connect

log = logging.getLogger(__name__)

PROFILE_CACHE_MAX = 4096  # parsed profiles kept in memory
PROFILE_MAX_AGE_S = 60.0  # a cached profile is re-read after this long, invalidated or not
ABSENT_MAX_AGE_S = 5.0  # "not in the table" is remembered this long (sync may be fetching it)
ACTIVITY_LEN = 16  # events remembered per subject / customer
ACTIVITY_KEYS_MAX = 10000  # subjects + customers with activity kept in memory (least recent dropped)
ACTIVITY_MAX_AGE_S = 4 * 3600.0  # activity older than this is ignored (and dropped on the way)
NOT_NOTED = frozenset({"beacon", "gateway_status"})
MAX_LIST = 64  # wishlist / cart / orders entries kept per profile
MAX_CODE_LEN = 128  # a code typed or scanned at a kiosk


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


def consented(shopper: Shopper | None, require_consent: bool) -> bool:
    """THE consent gate: a profile may shape what its shopper sees only with the personalization consent,
    unless the store does not require it (privacy.require_consent = false)."""
    return shopper is not None and (shopper.personalization or not require_consent)


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
                 activity_keys_max: int = ACTIVITY_KEYS_MAX, clock: Callable[[], float] = time.monotonic,
                 catalogue: Catalogue | None = None) -> None:
        self.cfg = cfg
        self._conn = conn
        self.max_profiles = max_profiles
        self.max_age_s = max_age_s
        self.absent_max_age_s = absent_max_age_s
        self.activity_len = activity_len
        self.activity_keys_max = activity_keys_max
        self.clock = clock
        self.catalogue = catalogue or Catalogue(cfg)
        self.missing: set[str] = set()  # customers without a cached profile, for the central store
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
        with self._lock:
            if shopper is None:
                self.missing.add(customer_id)
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

    def take_missing(self) -> list[str]:
        """Customers looked up and not cached since the last call: the central store may have them."""
        with self._lock:
            missing = list(self.missing)
            self.missing.clear()
        return missing

    def personal(self, customer_id: str | None) -> Shopper | None:
        """The shopper's profile when it may shape what they see (the consent gate), else None."""
        shopper = self.profile(customer_id)
        return shopper if consented(shopper, self.cfg.privacy.require_consent) else None

    def forget(self, customer: str, keys: Sequence[str] = ()) -> None:
        """Erasure: drop the cached profile and the activity kept under the customer, their phones and sessions."""
        self.invalidate(customer)
        with self._lock:
            for key in (customer, *keys):
                self._activity.pop(key, None)

    # --- products ---
    def product(self, sku: str | None) -> Product | None:
        return self.catalogue.get(sku)

    # --- the kiosk ---
    def kiosk_view(self, code: str) -> dict[str, Any]:
        """What a kiosk may show of the shopper behind a customer id, loyalty card number or identity key.
        Without the consent (the gate) only the customer id, so events can name them; the kiosk then shows
        generic zone content. Read on its own connection (HTTP threads call it)."""
        code = code.strip()[:MAX_CODE_LEN]
        if not code:
            return _anonymous(None)
        conn = connect(self.cfg.db.path)
        try:
            customer = resolve_customer(conn, code)
            if customer is None:
                return _anonymous(None)
            row = conn.execute("SELECT profile FROM profiles WHERE customer_id = ?", (customer,)).fetchone()
        except sqlite3.OperationalError:  # no sync tables yet: nobody is known
            return _anonymous(None)
        finally:
            conn.close()
        try:
            profile = json.loads(row[0]) if row is not None else None
        except (TypeError, ValueError):
            profile = None
        shopper = Shopper.from_profile(customer, profile) if isinstance(profile, dict) else None
        if shopper is None or not consented(shopper, self.cfg.privacy.require_consent):
            return _anonymous(customer)  # known, but no profile cached (yet) or no consent
        product = self.catalogue.product
        orders = [{"order_id": str(o.get("order_id", "")), "pickup_bay": str(o.get("pickup_bay") or ""),
                   "ready_at": str(o.get("ready_at") or ""),
                   "items": [product(str(s)) for s in _list(o.get("items"))]} for o in shopper.orders_ready]
        return {"customer": customer, "known": True, "personalized": True, "first_name": shopper.first_name,
                "wishlist": [product(s) for s in shopper.wishlist], "cart": [product(s) for s in shopper.cart],
                "orders_ready": orders}

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
        item = dwell = None
        if data:
            item = data.get("item")
            dwell = data.get("dwell_s")
            if type(item) is not str:
                item = None
            dwell = float(dwell) if type(dwell) in (int, float) else None  # JSON numbers; never a bool
        # tuple.__new__: a NamedTuple's own constructor is a Python function (this runs for most events)
        touch = tuple.__new__(Touch, (event.received_at if now is None else now, event.name, event.zone, item, dwell))
        activity = self._activity
        with self._lock:
            for key in (subject, customer):
                if not key:
                    continue
                touches = activity.get(key)
                if touches is None:
                    touches = activity[key] = deque(maxlen=self.activity_len)
                    if len(activity) > self.activity_keys_max:
                        activity.popitem(last=False)
                else:
                    activity.move_to_end(key)
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
        return Activity(touches).last(names, since) if touches else None

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


def _candidates(code: str) -> list[str]:
    """Identity keys a typed or scanned code may be: a loyalty card number, or an already-prefixed key."""
    return [code] if ":" in code else [f"loyalty:{code}", code]


def resolve_customer(conn: sqlite3.Connection, code: str) -> str | None:
    """The customer id behind a customer id, a loyalty card number or an identity key, or None."""
    if conn.execute("SELECT 1 FROM profiles WHERE customer_id = ?", (code,)).fetchone():
        return code
    for key in _candidates(code):
        row = conn.execute("SELECT customer_id FROM identities WHERE key = ?", (key,)).fetchone()
        if row and row[0]:
            return str(row[0])
    return None


def _anonymous(customer: str | None) -> dict[str, Any]:
    return {"customer": customer, "known": customer is not None, "personalized": False, "first_name": None,
            "wishlist": [], "cart": [], "orders_ready": []}
