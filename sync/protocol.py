"""The edge ⇄ central wire types, shared by the edge's sync client and the reference central store.

Everything here is plain JSON over HTTP with a bearer token per store (see docs/architecture.md, "Sync
protocol"). Both sides validate with the same code: the edge can check an event before it queues it,
and the central store rejects exactly what this module rejects, with the same reason codes.

Parsing is tolerant of what it does not know (unknown fields in an event or a response are ignored, so
either side can add one without breaking the other) and strict about what it does know (a field of the
wrong type is an error, never silently coerced).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, NotRequired, TypedDict

# --- Endpoints --------------------------------------------------------------------------------------

EVENTS_PATH = "/v1/stores/{store}/events"
CHANGES_PATH = "/v1/profiles/changes"
PROFILE_PATH = "/v1/profiles/{customer_id}"
EXPORT_PATH = "/v1/admin/profiles/{customer_id}/export"
RESOLVE_PATH = "/v1/identities/resolve"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# In a push answer: the seconds between pushes the central asks of this store while its outbox keeps up
# (sent only when the fleet pushes more often than the central's budget; see sync/central/pacing.py).
PUSH_EVERY_HEADER = "Instore-Push-Every-S"
MAX_PUSH_EVERY_S = 60.0  # what an edge follows at most, whatever a central asks

# --- Limits -----------------------------------------------------------------------------------------

MAX_BODY_BYTES = 8 * 1024 * 1024  # per request, so per batch of events
MAX_BATCH_EVENTS = 5000
MAX_EVENT_DATA_BYTES = 16 * 1024  # an event's `data`, serialized
DEFAULT_CHANGES_LIMIT = 500
MAX_CHANGES_LIMIT = 5000
# GET /v1/profiles/changes?wait_s=N: with nothing new, the central store holds the request up to N seconds
# and answers as soon as a change for the store arrives (long-poll).
MAX_CHANGES_WAIT_S = 30
# GET /v1/profiles/changes?stream=1&wait_s=N: the same request carries every page as it comes, one JSON object
# a line, for up to N seconds (sync/central/feed_stream.py); a central that does not know it answers one page.
STREAM_PARAM = "stream"
NDJSON = "application/x-ndjson"
MAX_RESOLVE_KEYS = 1000
MAX_ID_LEN = 128  # customer, store, source ids (the edge accepts ids up to this length)
MAX_EVENT_ID_LEN = 256
MAX_STR_LEN = 256  # zone, subject, type, kind
MAX_IDEMPOTENCY_KEY_LEN = 200
MAX_SEQ = 2**63 - 1  # SQLite's INTEGER
MAX_DATA_DEPTH = 16  # nesting of an event's data or a profile's free-form fields

# Timestamps outside 2000..2100 are a clock or unit bug, not an event (same range as the edge).
TS_MIN_S = 946_684_800.0
TS_MAX_S = 4_102_444_800.0

CONSENT_PURPOSES = ("personalization", "marketing")
TIERS = ("bronze", "silver", "gold", "vip")

# Event kinds/types the central store applies to profiles (everything else is recorded only).
CONSENT_KIND, CONSENT_TYPE = "kiosk", "consent"
IDENTITY_LINK_KIND = "identity_link"
# A store asks the central store to erase a customer: data.customer_hash = erase_key(customer id). The
# central store erases them and feeds an `erase` change (with the same hash) to every store.
ERASURE_KIND = "erasure"
ERASE_KEY_RE = re.compile(r"[0-9a-f]{32}")
# A store's report on a campaign from the central (applied / refused / impressions), and what shoppers do that
# the central keeps on their profile (wishlist, orders, returns): see sync/central/content.py.
CAMPAIGN_KIND = "campaign"
CAMPAIGN_TYPES = ("applied", "refused", "impressions")
SHOPPER_KIND = "shopper"
SHOPPER_TYPES = ("wishlist_add", "wishlist_remove", "order_request", "return")
# The kinds WireEvent._check_semantics looks into; every other kind is recorded as it comes.
CHECKED_KINDS = frozenset({CONSENT_KIND, IDENTITY_LINK_KIND, ERASURE_KIND, CAMPAIGN_KIND, SHOPPER_KIND})
FULFILMENTS = ("home", "pickup")
MAX_ORDER_ITEMS = 100
# Keys that only live for a visit or a kiosk session: recorded, never added to a profile's identities.
EPHEMERAL_KEY_PREFIXES = ("session:", "visit:")

_compact = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode  # ASCII: lone surrogates stay escaped
compact_json = _compact


def erase_key(customer_id: str) -> str:
    """The form of a customer id that erasures travel and rest in: a hash (32 hex digits), never the id.

    The edge keeps it as a tombstone, sends it to ask the central store for an erasure (an `erasure`
    event), and the central store's erase changes carry it: after an erasure no file holds the id."""
    return hashlib.sha256(f"instore-edge-erased:{customer_id}".encode()).hexdigest()[:32]


# --- Reason codes (stable: clients and dashboards match on them) -----------------------------------

MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
INVALID_VALUE = "invalid_value"
OVERSIZED = "oversized"
NOT_OBJECT = "not_object"

IDENTITY_KEY_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}:\S{1,224}")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}")
STORE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # the edge's config id pattern

_SHOW_MAX = 40


def _show(value: Any) -> str:
    """An offending value for an error message, cut short (messages are logged and shown)."""
    try:
        text = json.dumps(value, default=repr) if not isinstance(value, str) else repr(value)
    except (ValueError, RecursionError):  # nested too deeply to print
        return _type_name(value)
    return text if len(text) <= _SHOW_MAX else text[:_SHOW_MAX] + "…"


def _not_utf8(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable_path(text: str, limit: int = _SHOW_MAX) -> str:
    """A field name for an error message, even one holding a lone surrogate (escaped, cut short)."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[:limit] + "…"


def lone_surrogate(value: Any, path: str = "") -> str | None:
    """The path of the first string or object key holding a lone surrogate, or None when all text is text.

    JSON lets a sender escape half a surrogate pair ("\\ud800"); json.loads turns it into a Python str that
    UTF-8 (so SQLite, PostgreSQL and every real JSON consumer) cannot hold. Iterative: any depth json.loads
    accepted is walked without recursion. `path` ("" = the value itself) prefixes the answer.
    """
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        node, where = stack.pop()
        kind = type(node)
        if kind is str:
            if _not_utf8(node):
                return where
        elif kind is dict:
            for key, item in node.items():
                inner = f"{where}.{key}" if where else key
                if _not_utf8(key):
                    return printable_path(inner, 80)
                if type(item) is str or type(item) is dict or type(item) is list:
                    stack.append((item, inner))
        elif kind is list:
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(node)
                         if type(item) is str or type(item) is dict or type(item) is list)
    return None


def nested_deeper(value: Any, limit: int) -> bool:
    """True when objects/lists nest deeper than `limit` (iterative: safe at any depth json.loads accepted)."""
    if type(value) is not dict and type(value) is not list:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        items = node.values() if type(node) is dict else node
        stack.extend((item, depth + 1) for item in items if type(item) is dict or type(item) is list)
    return False


def may_hold_surrogates(raw: bytes | str) -> bool:
    """Cheap pre-check on JSON text: only a \\uD8xx..\\uDFxx escape can decode to a lone surrogate (JSON's
    escape is a lowercase 'u'; the hex digits may be either case), so text without one needs no walk."""
    if type(raw) is bytes:
        return b"\\ud" in raw or b"\\uD" in raw
    return "\\ud" in raw or "\\uD" in raw


def surrogate_detail(path: str) -> str:
    return (f"{path or 'value'}: a lone surrogate escape (\\ud800-\\udfff without its pair) is not text; "
            "send valid UTF-8 text")


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def is_identity_key(value: Any) -> bool:
    """`prefix:value` with a short lowercase prefix: device:app-7, loyalty:1234, ibeacon:<uuid>:1:2."""
    return type(value) is str and IDENTITY_KEY_RE.fullmatch(value) is not None


def parse_ts(value: Any, path: str = "ts") -> float:
    """Epoch seconds from epoch seconds (a number) or an ISO 8601 string; raises InvalidEvent."""
    kind = type(value)
    if kind is int or kind is float:
        # no math.isfinite on an int: it overflows for ints past a float's range (json.loads reads 4,300 digits)
        if TS_MIN_S <= value <= TS_MAX_S:
            return float(value)
        hint = "; it looks like milliseconds, send seconds" if 1000 * TS_MIN_S <= value <= 1000 * TS_MAX_S else ""
        raise InvalidEvent(INVALID_VALUE, f"{path}: expected epoch seconds between 2000 and 2100, "
                                          f"got {_show(value)}{hint}")
    if kind is str:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent(INVALID_VALUE, f"{path}: expected an ISO 8601 time, got {_show(value)}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return parse_ts(dt.timestamp(), path)
    raise InvalidEvent(WRONG_TYPE, f"{path}: expected epoch seconds (a number) or an ISO 8601 string, "
                                   f"got {_type_name(value)}")


# --- Events (edge → central) ------------------------------------------------------------------------


class InvalidEvent(ValueError):
    """An event the central store will not record; `reason` is a code, `detail` says what to fix."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _opt_str(obj: dict[str, Any], key: str, max_len: int) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is not str:
        raise InvalidEvent(WRONG_TYPE, f"{key}: expected a string, got {_type_name(value)}")
    if not 0 < len(value) <= max_len:
        raise InvalidEvent(INVALID_VALUE, f"{key}: expected 1 to {max_len} characters, got {len(value)}")
    if _not_utf8(value):
        raise InvalidEvent(INVALID_VALUE, surrogate_detail(key))
    if "\x00" in value:  # PostgreSQL's text cannot hold it
        raise InvalidEvent(INVALID_VALUE, f"{key}: a NUL character (\\u0000) is not allowed; remove it")
    return value


def _req_str(obj: dict[str, Any], key: str, max_len: int) -> str:
    if obj.get(key) is None:
        raise InvalidEvent(MISSING_FIELD, f"{key}: missing; every event needs event_id, kind and ts")
    value = _opt_str(obj, key, max_len)
    assert value is not None
    return value


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One edge event as it travels to the central store (POST /v1/stores/{store}/events).

    `ts` is epoch seconds (float); on the wire it may also be an ISO 8601 string. `seq` is the edge's own
    log order (the edge sends batches in seq order); `received_at` is when the edge recorded it.
    A kiosk `consent` event carries `data.consent` = {purpose: bool}; an `identity_link` event carries
    `customer` and `data.key` (the identity key that turned out to be that customer); an `erasure` event
    carries only `data.customer_hash` (erase_key of the customer id to erase).
    """

    event_id: str
    kind: str
    ts: float
    seq: int | None = None
    source: str | None = None
    zone: str | None = None
    subject: str | None = None
    customer: str | None = None
    type: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    received_at: float | None = None
    # `data` serialized (compact JSON) when it was checked, so a store can keep it without encoding it again.
    data_json: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_dict(cls, obj: Any) -> WireEvent:
        """Validate one wire event; raises InvalidEvent. Unknown fields are ignored."""
        if type(obj) is not dict:
            raise InvalidEvent(NOT_OBJECT, f"expected an event object, got {_type_name(obj)}")
        event_id = _req_str(obj, "event_id", MAX_EVENT_ID_LEN)
        kind = _req_str(obj, "kind", MAX_STR_LEN)
        if obj.get("ts") is None:
            raise InvalidEvent(MISSING_FIELD, "ts: missing; every event needs event_id, kind and ts")
        ts = parse_ts(obj["ts"])
        seq = obj.get("seq")
        if seq is not None and (type(seq) is not int or not 0 <= seq <= MAX_SEQ):
            raise InvalidEvent(WRONG_TYPE if type(seq) is not int else INVALID_VALUE,
                               f"seq: expected a whole number 0..{MAX_SEQ}, got {_show(seq)}")
        received_at = obj.get("received_at")
        if received_at is not None:
            received_at = parse_ts(received_at, "received_at")
        data = obj.get("data")
        if data is None:
            data = {}
        elif type(data) is not dict:
            raise InvalidEvent(WRONG_TYPE, f"data: expected an object, got {_type_name(data)}")
        data_json = None
        if data:
            if nested_deeper(data, MAX_DATA_DEPTH):
                raise InvalidEvent(INVALID_VALUE, f"data: nested deeper than {MAX_DATA_DEPTH} levels")
            try:
                data_json = _compact(data)
            except ValueError:
                raise InvalidEvent(INVALID_VALUE, "data: NaN and Infinity are not JSON") from None
            size = len(data_json)
            if size > MAX_EVENT_DATA_BYTES:
                raise InvalidEvent(OVERSIZED, f"data: {size} bytes serialized, the limit is {MAX_EVENT_DATA_BYTES}")
            where = lone_surrogate(data, "data")
            if where is not None:
                raise InvalidEvent(INVALID_VALUE, surrogate_detail(where))
        event = cls(event_id=event_id, kind=kind, ts=ts, seq=seq,
                    source=_opt_str(obj, "source", MAX_ID_LEN), zone=_opt_str(obj, "zone", MAX_STR_LEN),
                    subject=_opt_str(obj, "subject", MAX_STR_LEN), customer=_opt_str(obj, "customer", MAX_ID_LEN),
                    type=_opt_str(obj, "type", MAX_STR_LEN), data=data, received_at=received_at, data_json=data_json)
        event._check_semantics()
        return event

    def _check_semantics(self) -> None:
        """Events the central applies must be complete: a half-applied consent is worse than none."""
        if self.kind not in CHECKED_KINDS:
            return
        if self.is_consent:
            consent = self.data.get("consent")
            expected = 'data.consent: expected {"personalization": true|false, "marketing": true|false}'
            if type(consent) is not dict or not consent:
                raise InvalidEvent(MISSING_FIELD if consent is None else INVALID_VALUE,
                                   f"{expected}, got {_show(consent) if consent is not None else 'nothing'}")
            for purpose, granted in consent.items():
                if type(granted) is not bool:
                    raise InvalidEvent(WRONG_TYPE, f"data.consent.{purpose[:_SHOW_MAX]}: expected true or false, "
                                                   f"got {_show(granted)}")
        elif self.kind == ERASURE_KIND:
            key = self.data.get("customer_hash")
            if type(key) is not str or ERASE_KEY_RE.fullmatch(key) is None:
                raise InvalidEvent(MISSING_FIELD if key is None else INVALID_VALUE,
                                   "data.customer_hash: expected the customer's erase key (32 lowercase hex digits, "
                                   f"sync.protocol.erase_key), got {_show(key) if key is not None else 'nothing'}")
            if self.customer is not None or self.subject is not None:
                raise InvalidEvent(INVALID_VALUE, "an erasure event names the customer by data.customer_hash only, "
                                                  "never by customer or subject")
        elif self.kind == CAMPAIGN_KIND:
            _check_campaign_report(self)
        elif self.kind == SHOPPER_KIND:
            _check_shopper_event(self)
        elif self.kind == IDENTITY_LINK_KIND:
            if self.customer is None:
                raise InvalidEvent(MISSING_FIELD, "customer: missing; an identity_link event names the customer")
            key = self.data.get("key")
            if not is_identity_key(key):
                raise InvalidEvent(MISSING_FIELD if key is None else INVALID_VALUE,
                                   "data.key: expected an identity key like 'device:app-7' or 'loyalty:1234', "
                                   f"got {_show(key) if key is not None else 'nothing'}")

    @property
    def is_consent(self) -> bool:
        return self.kind == CONSENT_KIND and self.type == CONSENT_TYPE

    @property
    def consent(self) -> dict[str, bool] | None:
        """The purposes this consent event grants or withdraws, or None for other events."""
        return dict(self.data["consent"]) if self.is_consent else None

    @property
    def link_key(self) -> str | None:
        return self.data.get("key") if self.kind == IDENTITY_LINK_KIND else None

    def to_dict(self) -> dict[str, Any]:
        """The wire form: unset optional fields are left out."""
        out: dict[str, Any] = {"event_id": self.event_id, "kind": self.kind, "ts": self.ts}
        for name in ("seq", "source", "zone", "subject", "customer", "type", "received_at"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.data:
            out["data"] = self.data
        return out


def _need(data: dict[str, Any], key: str, ok: Any, expected: str) -> Any:
    """data[key], or InvalidEvent saying what was expected there."""
    value = data.get(key)
    if value is None or not ok(value):
        reason = MISSING_FIELD if value is None else INVALID_VALUE if type(value) in (str, int) else WRONG_TYPE
        raise InvalidEvent(reason, f"data.{key}: expected {expected}, got "
                                   f"{_show(value) if value is not None else 'nothing'}")
    return value


def _is_id(value: Any) -> bool:
    return type(value) is str and ID_RE.fullmatch(value) is not None


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= 10**9


def _items(data: dict[str, Any]) -> None:
    items = _need(data, "items", lambda v: type(v) is list and 0 < len(v) <= MAX_ORDER_ITEMS,
                  f'a list of 1 to {MAX_ORDER_ITEMS} items [{{"sku", "qty"}}]')
    for i, item in enumerate(items):
        if type(item) is not dict or not _is_id(item.get("sku")) or type(item.get("qty")) is not int \
                or not 0 < item["qty"] <= 1000:
            raise InvalidEvent(INVALID_VALUE, f'data.items[{i}]: expected {{"sku": "<sku>", "qty": 1..1000}}, '
                                              f"got {_show(item)}")


def _check_campaign_report(e: WireEvent) -> None:
    """campaign applied / refused / impressions: the central keeps them per (campaign, store)."""
    if e.type not in CAMPAIGN_TYPES:
        raise InvalidEvent(INVALID_VALUE, f"type: a campaign event is one of {', '.join(CAMPAIGN_TYPES)}, "
                                          f"got {_show(e.type) if e.type is not None else 'nothing'}")
    _need(e.data, "id", _is_id, "the campaign id")
    _need(e.data, "version", lambda v: type(v) is int and v > 0, "the campaign version (a whole number > 0)")
    if e.type == "refused":
        _need(e.data, "reason", lambda v: type(v) is str and 0 < len(v) <= 500,
              "a reason of 1 to 500 characters saying what did not fit (unknown zone 'x', ...)")
    if e.type == "impressions":
        _need(e.data, "content_id", _is_id, "the content id that was shown")
        _need(e.data, "shown", _is_count, "how many times it was shown (a whole number >= 0)")
        _need(e.data, "reached", _is_count, "how many distinct shoppers or sessions saw it (a whole number >= 0)")


def _check_shopper_event(e: WireEvent) -> None:
    """wishlist_add / wishlist_remove / order_request / return: complete, or refused with the reason."""
    if e.type not in SHOPPER_TYPES:
        raise InvalidEvent(INVALID_VALUE, f"type: a shopper event is one of {', '.join(SHOPPER_TYPES)}, "
                                          f"got {_show(e.type) if e.type is not None else 'nothing'}")
    if e.type in ("wishlist_add", "wishlist_remove"):
        if e.customer is None:
            raise InvalidEvent(MISSING_FIELD, f"customer: missing; a {e.type} event names the customer")
        _need(e.data, "sku", _is_id, "the product's sku")
        return
    _need(e.data, "order_id", _is_id, "the order id (letters, digits, '_', '.', ':', '@', '-')")
    _items(e.data)
    if e.type == "order_request":
        fulfilment = _need(e.data, "fulfilment", lambda v: v in FULFILMENTS, " or ".join(FULFILMENTS))
        if fulfilment == "pickup":
            _need(e.data, "pickup_store", lambda v: type(v) is str and STORE_ID_RE.fullmatch(v) is not None,
                  "the id of the store where the order is picked up")
        for key in ("contact", "payment"):
            if e.data.get(key) is not None and type(e.data[key]) is not dict:
                raise InvalidEvent(WRONG_TYPE, f"data.{key}: expected an object, got {_show(e.data[key])}")
    else:
        for key in ("rma_id", "reason"):
            if e.data.get(key) is not None and (type(e.data[key]) is not str or not 0 < len(e.data[key]) <= 500):
                raise InvalidEvent(INVALID_VALUE, f"data.{key}: expected a text of 1 to 500 characters")


class Rejection(TypedDict):
    """An event the central store refused: `reason` is a code, `detail` says what to fix.

    `id` is the event_id when the event had a readable one, else null; `index` is its position in the batch.
    """

    id: str | None
    index: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class PushResult:
    """The answer to a batch: every event is in exactly one list. Accepted and duplicates are both
    delivered (the edge may drop them from its outbox); rejected ones will never be accepted as they are."""

    accepted: list[str]
    duplicates: list[str]
    rejected: list[Rejection]

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> PushResult:
        return cls(accepted=list(obj.get("accepted") or []), duplicates=list(obj.get("duplicates") or []),
                   rejected=[Rejection(id=r.get("id"), index=int(r.get("index", -1)), reason=str(r.get("reason")),
                                       detail=str(r.get("detail", ""))) for r in obj.get("rejected") or []])

    def to_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}

    @property
    def delivered(self) -> set[str]:
        """Event ids the central store holds now (accepted in this batch or before)."""
        return set(self.accepted) | set(self.duplicates)


# --- Store health (edge → central, with pushes) ----------------------------------------------------

HEALTH_EVERY_S = 30.0  # an edge with nothing to push still reports its health this often (an empty push)
MAX_HEALTH_LIST = 16
# field → (type, bound): what an edge reports about itself; the central keeps these fields only.
HEALTH_FIELDS: dict[str, tuple[type, float]] = {
    "version": (str, 64),  # the edge's package version
    "ready": (bool, 0),  # its /readyz verdict
    "outbox_pending": (int, 2**53),  # events not yet accepted by the central
    "outbox_oldest_age_s": (float, 10 * 365 * 86400.0),  # age of the oldest of them
    "last_pull_at": (float, TS_MAX_S),  # its last successful pull of the change feed (epoch s)
    "deadletters_last_hour": (int, 2**53),  # inputs it could not take, in the last hour
    "sent_at": (float, TS_MAX_S),  # its clock when it sent this (the central derives clock_offset_s)
    "breaker": (str, 16),  # its circuit breaker towards the central: closed | open | half_open
    "not_ready": (list, MAX_HEALTH_LIST),  # the names of its failing readiness checks
    "dead_threads": (list, MAX_HEALTH_LIST),  # threads that died (the edge exits and restarts)
}


class InvalidHealth(ValueError):
    """A health report the central cannot read; the push's events are recorded all the same."""


def parse_health(obj: Any) -> dict[str, Any]:
    """The known fields of an edge's health report, checked (unknown fields are dropped: newer edges may
    send more). Raises InvalidHealth naming the first bad field."""
    if type(obj) is not dict:
        raise InvalidHealth(f"health: expected an object, got {_type_name(obj)}")
    out: dict[str, Any] = {}
    for key, (kind, bound) in HEALTH_FIELDS.items():
        value = obj.get(key)
        if value is None:
            continue
        if kind is float and type(value) is int:
            value = float(value)
        if type(value) is not kind:
            raise InvalidHealth(f"health.{key}: expected {_type_name(kind())}, got {_type_name(value)}")
        if kind is str and (not 0 < len(value) <= bound or _not_utf8(value) or not value.isprintable()):
            raise InvalidHealth(f"health.{key}: expected 1 to {int(bound)} printable characters")
        if kind in (int, float) and not 0 <= value <= bound:
            raise InvalidHealth(f"health.{key}: expected a number between 0 and {bound:g}, got {_show(value)}")
        if kind is list:
            if len(value) > bound or not all(type(v) is str and 0 < len(v) <= 64 and v.isprintable() and
                                             not _not_utf8(v) for v in value):
                raise InvalidHealth(f"health.{key}: expected at most {int(bound)} names of 1 to 64 characters")
        out[key] = value
    return out


# --- Profiles (central → edge) ----------------------------------------------------------------------


class Consents(TypedDict):
    personalization: bool
    marketing: bool


class OrderReady(TypedDict):
    order_id: str
    items: list[Any]
    ready_at: str
    pickup_bay: NotRequired[str]
    store: NotRequired[str]  # the store where it waits for pickup (that store's feed carries the shopper)


class Profile(TypedDict):
    customer_id: str
    first_name: str | None
    segments: list[str]
    tier: str | None
    consents: Consents
    preferences: dict[str, Any]
    wishlist: list[str]
    cart: list[str]
    orders_ready: list[OrderReady]
    identities: list[str]
    version: int
    home_store: NotRequired[str | None]  # the shopper's usual store: its change feed carries them


PROFILE_FIELDS = ("customer_id", "first_name", "segments", "tier", "consents", "preferences", "wishlist",
                  "cart", "orders_ready", "identities", "version", "home_store")
# Fields a complete profile may leave out (they default to null).
OPTIONAL_PROFILE_FIELDS = ("home_store",)


class Change(TypedDict):
    """One entry of the change feed: an upsert names the customer and has the `profile`; an erasure has
    only the customer's `customer_hash` (erase_key), so the central store keeps no trace of the id."""

    customer_id: NotRequired[str]
    customer_hash: NotRequired[str]
    version: int
    op: Literal["upsert", "erase"]
    profile: NotRequired[Profile]


@dataclass(frozen=True, slots=True)
class ChangesPage:
    """GET /v1/profiles/changes: pass `next` as `since` to continue; `more` says another page is ready.

    `reset` is true when the cursor came from another central database (restored or rebuilt): the page
    then starts from the beginning, and the client should treat it as a full resync.
    """

    changes: list[Change]
    next: str
    more: bool
    reset: bool = False

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> ChangesPage:
        return cls(changes=list(obj.get("changes") or []), next=str(obj.get("next") or ""),
                   more=bool(obj.get("more")), reset=bool(obj.get("reset")))


def empty_profile(customer_id: str) -> Profile:
    return Profile(customer_id=customer_id, first_name=None, segments=[], tier=None,
                   consents=Consents(personalization=False, marketing=False), preferences={}, wishlist=[],
                   cart=[], orders_ready=[], identities=[], version=0, home_store=None)


class InvalidProfile(ValueError):
    """A profile that does not have the contract's shape; `errors` lists every problem with its path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _str_list(value: Any, path: str, errors: list[str], *, max_items: int = 500, key: bool = False) -> None:
    if type(value) is not list:
        errors.append(f"{path}: expected a list of strings, got {_type_name(value)}")
        return
    if len(value) > max_items:
        errors.append(f"{path}: at most {max_items} entries, got {len(value)}")
    for i, item in enumerate(value):
        if key and not is_identity_key(item):
            errors.append(f"{path}[{i}]: expected an identity key like 'device:app-7' or 'loyalty:1234', "
                          f"got {_show(item)}")
        elif type(item) is not str or not 0 < len(item) <= MAX_STR_LEN:
            errors.append(f"{path}[{i}]: expected a string of 1 to {MAX_STR_LEN} characters, got {_show(item)}")


def validate_profile(obj: Any, *, partial: bool = True, path: str = "") -> dict[str, Any]:
    """Check a profile (or, with partial, the fields of one to change); returns the fields given.

    `customer_id` is always required; `version` is accepted and ignored (the central store assigns it).
    Unknown fields are errors: a typo must not silently drop data. Raises InvalidProfile.
    """
    errors: list[str] = []
    if type(obj) is not dict:
        raise InvalidProfile([f"{path or 'profile'}: expected an object, got {_type_name(obj)}"])
    out: dict[str, Any] = {}
    where = lone_surrogate(obj)
    if where is not None:  # stored as UTF-8: refused whole, before any field is looked at
        raise InvalidProfile([f"{path}{surrogate_detail(where)}"])
    for key in obj:
        if key not in PROFILE_FIELDS:
            errors.append(f"{path}{printable_path(key)}: unknown field; a profile has {', '.join(PROFILE_FIELDS)}")
    for key in ("preferences", "orders_ready"):
        if nested_deeper(obj.get(key), MAX_DATA_DEPTH):
            raise InvalidProfile([f"{path}{key}: nested deeper than {MAX_DATA_DEPTH} levels"])
    cid = obj.get("customer_id")
    if type(cid) is not str or ID_RE.fullmatch(cid) is None:
        errors.append(f"{path}customer_id: expected an id of 1 to {MAX_ID_LEN} letters, digits or ._:@- "
                      f"(starting with a letter or digit), got {_show(cid) if cid is not None else 'nothing'}")
    else:
        out["customer_id"] = cid
    if not partial:
        missing = [k for k in PROFILE_FIELDS
                   if k not in obj and k not in ("customer_id", "version", *OPTIONAL_PROFILE_FIELDS)]
        if missing:
            errors.append(f"{path}: missing {', '.join(missing)}")
    for key in ("first_name", "tier"):
        if key in obj:
            value = obj[key]
            if value is not None and (type(value) is not str or not 0 < len(value) <= 100):
                errors.append(f"{path}{key}: expected a string of 1 to 100 characters or null, got {_show(value)}")
            elif key == "tier" and value is not None and value not in TIERS:
                errors.append(f"{path}tier: expected one of {', '.join(TIERS)} or null, got {_show(value)}")
            else:
                out[key] = value
    if "home_store" in obj:
        home = obj["home_store"]
        if home is not None and (type(home) is not str or STORE_ID_RE.fullmatch(home) is None):
            errors.append(f"{path}home_store: expected a store id (1 to 64 letters, digits, '_', '.', '-') or "
                          f"null, got {_show(home)}")
        else:
            out["home_store"] = home
    for key in ("segments", "wishlist", "cart", "identities"):
        if key in obj:
            before = len(errors)
            _str_list(obj[key], f"{path}{key}", errors, key=key == "identities")
            if len(errors) == before:
                out[key] = list(dict.fromkeys(obj[key]))  # de-duplicated, order kept
    if "consents" in obj:
        consents = obj["consents"]
        if type(consents) is not dict:
            errors.append(f"{path}consents: expected {{\"personalization\": bool, \"marketing\": bool}}, "
                          f"got {_type_name(consents)}")
        else:
            for purpose, granted in consents.items():
                if purpose not in CONSENT_PURPOSES:
                    errors.append(f"{path}consents.{purpose[:_SHOW_MAX]}: unknown purpose; expected "
                                  f"{' or '.join(CONSENT_PURPOSES)}")
                elif type(granted) is not bool:
                    errors.append(f"{path}consents.{purpose}: expected true or false, got {_show(granted)}")
            out["consents"] = consents
    if "preferences" in obj:
        prefs = obj["preferences"]
        if type(prefs) is not dict:
            errors.append(f"{path}preferences: expected an object, got {_type_name(prefs)}")
        elif len(json.dumps(prefs, default=repr)) > MAX_EVENT_DATA_BYTES:
            errors.append(f"{path}preferences: larger than {MAX_EVENT_DATA_BYTES} bytes serialized")
        else:
            out["preferences"] = prefs
    if "orders_ready" in obj:
        orders = obj["orders_ready"]
        if type(orders) is not list:
            errors.append(f"{path}orders_ready: expected a list of orders, got {_type_name(orders)}")
        else:
            for i, order in enumerate(orders):
                p = f"{path}orders_ready[{i}]"
                if type(order) is not dict:
                    errors.append(f"{p}: expected an object, got {_type_name(order)}")
                    continue
                unknown = set(order) - {"order_id", "items", "ready_at", "pickup_bay", "store"}
                if unknown:
                    errors.append(f"{p}: unknown field(s) {', '.join(sorted(unknown))}; an order has order_id, "
                                  "items, ready_at, pickup_bay, store")
                if type(order.get("order_id")) is not str or not order["order_id"]:
                    errors.append(f"{p}.order_id: expected a non-empty string")
                if type(order.get("items")) is not list:
                    errors.append(f"{p}.items: expected a list")
                if type(order.get("ready_at")) is not str:
                    errors.append(f"{p}.ready_at: expected an ISO 8601 string")
                else:
                    try:
                        datetime.fromisoformat(order["ready_at"])
                    except ValueError:
                        errors.append(f"{p}.ready_at: expected an ISO 8601 time, got {_show(order['ready_at'])}")
                if "pickup_bay" in order and type(order["pickup_bay"]) is not str:
                    errors.append(f"{p}.pickup_bay: expected a string")
                if "store" in order and (type(order["store"]) is not str
                                         or STORE_ID_RE.fullmatch(order["store"]) is None):
                    errors.append(f"{p}.store: expected the id of the store where the order waits")
            out["orders_ready"] = orders
    if "version" in obj and (type(obj["version"]) is not int or obj["version"] < 0):
        errors.append(f"{path}version: expected a whole number >= 0 (it is ignored: the central store assigns it)")
    if errors:
        raise InvalidProfile(errors)
    return out
