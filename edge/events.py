"""Event schemas and the normalizers that turn each wire format into one Event shape.

Everything that reaches the store from MQTT or HTTP passes through `normalize`: it either returns
events (possibly none, for topics the edge itself publishes), raises `Rejected` with a reason code
that the dead-letter table, the `P/deadletter` topic and the metrics all use, or raises `Ignored` for
a well-formed message that is deliberately not stored (a phone's rotating address heard by an
ESPresense node): acknowledged and counted, never dead-lettered. Foreign gateway formats (ESPresense,
Theengs/OpenMQTTGateway) arrive outside P and are normalized in `edge.gateways`.

This is the ingest hot path (>10k msgs/s on two cores), so payloads are checked by hand after one
`json.loads` instead of through a schema library, and the config is indexed once per Config object.
Checks take the fast path first (right type, in range) and only build error text when a check fails.
Error details name the field by its path in the payload (`sightings[3].beacon.uuid`) and say what is
expected; they quote at most the offending value, cut to 40 characters, because dead letters are kept
and shown on the dashboard and must not become a second copy of personal data.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, Any, Callable
from zoneinfo import ZoneInfo

from edge.config import ID_PATTERN, Config
from sync.protocol import lone_surrogate, may_hold_surrogates, nested_deeper, surrogate_detail

if TYPE_CHECKING:
    from edge.gateways import Foreign

from edge.model import (ANONYMOUS_DEVICE, INVALID_VALUE, MISSING_FIELD, NOT_JSON, NOT_OBJECT, NOT_UTF8,  # noqa: F401
                         OVERSIZED, UNDECODABLE_FRAME, UNKNOWN_GATEWAY, UNKNOWN_GATEWAY_STATUS, UNKNOWN_TOPIC,
                         UNSUPPORTED_FRAME, WRONG_TYPE, Event, Ignored, Rejected)

KINDS = ("beacon", "qr", "window", "kiosk", "pos")
GATEWAY_STATUS = "gateway_status"  # a foreign gateway node went online/offline (from its status topic)
BEACON_TYPES = ("ibeacon", "eddystone-uid", "device")
WINDOW_TYPES = ("touch", "browse", "select", "handoff")

# Accepted ranges. Timestamps outside 2000..2100 are a device clock or unit bug, not an event.
TS_MIN_S = 946_684_800.0  # 2000-01-01T00:00:00Z
TS_MAX_S = 4_102_444_800.0  # 2100-01-01T00:00:00Z
RSSI_RANGE = (-130, 20)
TX_POWER_RANGE = (-128, 127)  # a signed byte on the air
U16_RANGE = (0, 65535)

# Longest accepted strings: generous for real devices, small enough to keep rows and caches bounded.
MAX_ID_LEN = 128
MAX_CODE_LEN = 4096  # a QR code holds at most ~4.3k characters
MAX_IDENTITY_LEN = 256
MAX_EXTRA_STR_LEN = 256
MAX_EXTRA_FIELDS = 16
MAX_EXTRA_ITEMS = 32
MAX_POS_ITEMS = 1000
MAX_POS_ITEM_DEPTH = 8  # nesting inside one item object: enough for options and bundles, not a stack bomb
MAX_TOTAL = 10**12  # a sale's total, in any currency unit
MAX_INT_ID = 2**63 - 1  # integer ids: what SQLite and every JSON consumer hold exactly
SHOW_MAX = 40  # characters of an offending value quoted in an error detail
MAX_DEPTH = 32  # JSON nesting: no device format needs a tenth of it


# ---------------------------------------------------------------------------------------------------
# Public entry points


def normalize(topic: str, payload: bytes, received_at: float, cfg: Config, qos: int = 1,
              dup: bool = False) -> list[Event]:
    """Turn one MQTT message into events, [] for the edge's own output topics, or raise Rejected/Ignored.

    Checks run cheapest first: topic, size (before decoding anything), UTF-8, JSON, then fields.
    `dup` is the MQTT DUP flag (a broker redelivery): it lets messages without a device timestamp dedupe.
    """
    site = _site(cfg)
    if not topic.startswith(site.prefix):
        return site.foreign.normalize(topic, payload, received_at, qos, dup, site)
    route = _route(topic, site)
    if route is None:
        return []
    handler, source = route
    if type(payload) is not bytes:
        payload = bytes(payload)
    if len(payload) > site.max_bytes:
        raise Rejected(OVERSIZED, f"payload: {len(payload)} bytes, the limit is {site.max_bytes} "
                                  "(limits.max_payload_bytes)")
    obj = _decode(payload)
    return handler(_Message(topic, payload, source, received_at, qos, site, obj))


def subject_key(beacon: Any, path: str = "beacon") -> str:
    """The stable key presence and identity use for a beacon: ibeacon:<uuid>:<major>:<minor>, ...

    Inputs are canonicalized (lowercase, hyphenated UUID) so one beacon always gets one key.
    Raises Rejected, with `path` leading the detail, when the beacon object is malformed.
    """
    return _beacon_key(beacon, path)[0]


def parse_ts(value: Any, tz: tzinfo | str = timezone.utc, path: str = "ts") -> float:
    """Epoch seconds from epoch milliseconds (int/float) or an ISO 8601 string; raise Rejected.

    Naive ISO times are wall-clock times in `tz` (the store's timezone): that is what a device
    without a timezone setting means. Times before 2000 or after 2100 are refused.
    """
    kind = type(value)
    if kind is int or kind is float:
        if 1000.0 * TS_MIN_S <= value <= 1000.0 * TS_MAX_S:
            return value / 1000.0
        hint = "; it looks like seconds, send milliseconds" if TS_MIN_S <= value <= TS_MAX_S else ""
        raise Rejected(INVALID_VALUE, f"{path}: expected epoch milliseconds between 2000 and 2100, "
                                      f"got {_show(value)}{hint}")
    if kind is str:
        return _parse_iso(value, tz, path)
    raise Rejected(WRONG_TYPE, f"{path}: expected {_TS_EXPECTED}, got {_show(value)}")


# ---------------------------------------------------------------------------------------------------
# Config index and topic routing

_TS_EXPECTED = "epoch milliseconds or an ISO 8601 time"
_ID_RE = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))
# Roots the edge publishes under P itself: they come back to us through the '#' subscription.
_OWN_ROOTS = frozenset({"display", "edge", "staff"})


@dataclass(frozen=True, slots=True)
class _Site:
    """What normalize needs from a Config, indexed once: dict lookups instead of list scans."""

    cfg: Config
    prefix: str  # "P/", with the trailing slash
    max_bytes: int
    tz: tzinfo
    gateways: dict[str, str]  # gateway id -> zone
    kiosks: dict[str, str]  # kiosk id -> zone
    screens: dict[str, str]  # screen id -> zone (an interactive window may be a configured screen)
    foreign: Foreign  # the ESPresense / Theengs gateways, by room / gateway name


_sites: dict[int, _Site] = {}


def _site(cfg: Config) -> _Site:
    """The index for `cfg`, built on first use; keyed by identity since a Config is immutable."""
    site = _sites.get(id(cfg))
    if site is not None and site.cfg is cfg:
        return site
    from edge import gateways  # it builds on this module: imported on first use, not at import time

    site = _Site(
        cfg=cfg,
        prefix=cfg.prefix + "/",
        max_bytes=cfg.limits.max_payload_bytes,
        tz=ZoneInfo(cfg.store.timezone),
        gateways={g.id: g.zone for g in cfg.gateways},
        kiosks={k.id: k.zone for k in cfg.kiosks},
        screens={s.id: s.zone for s in cfg.screens},
        foreign=gateways.Foreign(cfg),
    )
    if len(_sites) >= 8:  # tests build many configs; a service has one (two during a reload)
        _sites.clear()
    _sites[id(cfg)] = site
    return site


class _Message:
    """One message being normalized: what every payload handler needs, in one argument."""

    __slots__ = ("topic", "payload", "source", "received_at", "qos", "site", "obj", "dup")

    def __init__(self, topic: str, payload: bytes, source: str, received_at: float, qos: int,
                 site: _Site, obj: dict[str, Any], dup: bool = False) -> None:
        self.topic = topic
        self.payload = payload
        self.source = source
        self.received_at = received_at
        self.qos = qos
        self.site = site
        self.obj = obj
        self.dup = dup


Handler = Callable[[_Message], list[Event]]


def _route(topic: str, site: _Site) -> tuple[Handler, str] | None:
    """Pick the payload handler and the device id from a topic under P; None for our own output topics."""
    parts = topic[len(site.prefix):].split("/")
    root = parts[0]
    if root in _OWN_ROOTS or (root == "deadletter" and len(parts) == 1):
        return None
    route = _ROUTES.get(root)
    if route is None or len(parts) != route[0] or (route[1] and parts[2] != route[1]):
        raise Rejected(UNKNOWN_TOPIC, f"topic {_show(topic, 120)}: expected {site.prefix}beacon/<gateway>, "
                                      "qr/<scanner>, window/<window>, kiosk/<kiosk>/event or pos/<terminal>")
    source = parts[1]
    if root == "beacon":
        if source not in site.gateways:
            raise Rejected(UNKNOWN_GATEWAY, f"gateway {_show(source)} is not in the config: add it under "
                                            "[[gateways]] with the zone it covers")
    elif not _ID_RE.fullmatch(source):
        raise Rejected(UNKNOWN_TOPIC, f"topic {_show(topic, 120)}: device id {_show(source)} is not an id "
                                      "(letters, digits, '-', '_', '.'; at most 64)")
    return route[2], source


# ---------------------------------------------------------------------------------------------------
# Decoding and field checks (fast path first; error text built only on failure)

_MISSING: Any = object()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {_cut(text, SHOW_MAX)} is too large")
    return value


# NaN/Infinity (or 1e999, which Python reads as inf) would pass Python's json but break every consumer
# that speaks real JSON when the event is stored or synced. Floats are rare in payloads: the hook is cheap.
_JSON = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _decode(payload: bytes) -> dict[str, Any]:
    """Bytes -> JSON object, with a distinct reason for each way a payload can fail to be one."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(NOT_UTF8, f"payload: not UTF-8 (invalid byte at offset {exc.start})") from None
    if text[:1] == "\ufeff":  # some device SDKs write a byte-order mark; it is not JSON but harmless
        text = text[1:]
    try:
        obj = _JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise Rejected(NOT_JSON, f"payload: not JSON ({exc.msg} at character {exc.pos})") from None
    except RecursionError:
        raise Rejected(NOT_JSON, f"payload: JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # NaN/Infinity, 1e999, integers with thousands of digits
        raise Rejected(NOT_JSON, f"payload: not JSON ({_cut(str(exc), 80)})") from None
    # Where json.loads runs out of stack depends on the calling thread: a fixed limit makes the verdict the same
    # everywhere. Only text with more than MAX_DEPTH brackets can nest that deep, so most payloads skip the walk.
    if text.count("{") + text.count("[") > MAX_DEPTH and nested_deeper(obj, MAX_DEPTH):
        raise Rejected(NOT_JSON, f"payload: JSON nested deeper than {MAX_DEPTH} levels")
    if type(obj) is not dict:
        raise Rejected(NOT_OBJECT, f"payload: expected a JSON object, got {_show(obj)}")
    if "\\u" in text and may_hold_surrogates(text):  # "\ud800": text UTF-8 (so SQLite, the central) cannot hold
        where = lone_surrogate(obj)
        if where is not None:
            raise Rejected(INVALID_VALUE, surrogate_detail(where or "payload"))
    return obj


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _show(value: Any, limit: int = SHOW_MAX) -> str:
    """A short, JSON-flavoured rendering of an offending value for an error detail."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(_cut(value, limit))
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    try:
        return _cut(repr(value), limit)
    except ValueError:  # an int too long to print
        return "a huge number"


def _absent(obj: dict[str, Any], key: str, where: str, expected: str, required: bool) -> None:
    """A field that is missing or null: fine when optional, an error naming the field when required."""
    if not required:
        return None
    if key in obj:
        raise Rejected(WRONG_TYPE, f"{where}{key}: expected {expected}, got null")
    raise Rejected(MISSING_FIELD, f"{where}{key}: missing; expected {expected}")


def _int(obj: dict[str, Any], key: str, where: str, bounds: tuple[int, int], required: bool = True) -> Any:
    """An integer field within bounds; bools are refused (JSON true is not 1)."""
    value = obj.get(key)
    lo, hi = bounds
    if type(value) is int and lo <= value <= hi:
        return value
    expected = f"an integer {lo}..{hi}"
    if value is None:
        return _absent(obj, key, where, expected, required)
    reason = INVALID_VALUE if type(value) is int else WRONG_TYPE
    raise Rejected(reason, f"{where}{key}: expected {expected}, got {_show(value)}")


def _str(obj: dict[str, Any], key: str, where: str, max_len: int = MAX_ID_LEN, required: bool = True) -> Any:
    """A non-empty string field of bounded length."""
    value = obj.get(key)
    if type(value) is str and 0 < len(value) <= max_len:
        return value
    expected = f"a non-empty string of at most {max_len} characters"
    if value is None:
        return _absent(obj, key, where, expected, required)
    reason = INVALID_VALUE if type(value) is str else WRONG_TYPE
    got = f"{len(value)} characters" if type(value) is str and value else _show(value)
    raise Rejected(reason, f"{where}{key}: expected {expected}, got {got}")


def _ident(obj: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    """An id that devices send as a string or an integer (message ids, customer ids); as a string."""
    value = obj.get(key)
    kind = type(value)
    if kind is str and 0 < len(value) <= MAX_ID_LEN:
        return value
    if kind is int and -MAX_INT_ID <= value <= MAX_INT_ID:
        return str(value)
    expected = f"a string (at most {MAX_ID_LEN} characters) or an integer of at most 19 digits"
    if value is None:
        return _absent(obj, key, where, expected, required)
    reason = INVALID_VALUE if kind is str or kind is int else WRONG_TYPE
    raise Rejected(reason, f"{where}{key}: expected {expected}, got {_show(value)}")


def _ts(obj: dict[str, Any], where: str, tz: tzinfo) -> float:
    """The required "ts" field as epoch seconds."""
    value = obj.get("ts")
    if value is None:
        _absent(obj, "ts", where, _TS_EXPECTED, True)
    return parse_ts(value, tz, where + "ts")


def _parse_iso(value: str, tz: tzinfo | str, path: str) -> float:
    if len(value) > 64:
        raise Rejected(INVALID_VALUE, f"{path}: expected an ISO 8601 time, got {len(value)} characters")
    try:
        moment = datetime.fromisoformat(value)  # 3.11+: accepts a trailing 'Z'
    except ValueError:
        raise Rejected(INVALID_VALUE, f"{path}: expected an ISO 8601 time, got {_show(value)}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz) if isinstance(tz, str) else tz)
    seconds = moment.timestamp()
    if not TS_MIN_S <= seconds <= TS_MAX_S:
        raise Rejected(INVALID_VALUE, f"{path}: expected a time between 2000 and 2100, got {_show(value)}")
    return seconds


# ---------------------------------------------------------------------------------------------------
# Event ids: the dedupe key

_qos0_counter = itertools.count()


def _time_key(msg: _Message) -> str:
    """A hex millisecond prefix for hashed ids, from the payload's own "ts" (the same bytes give the same
    prefix): ids then grow with time, so the unique index on events.event_id is appended to, not written
    at a random leaf per insert (which made each commit rewrite ~1 page per event once the log is large)."""
    ts = msg.obj.get("ts")
    if ts is None:  # a {"sightings": [...]} batch: its first sighting's time
        batch = msg.obj.get("sightings")
        ts = batch[0].get("ts") if type(batch) is list and batch and type(batch[0]) is dict else None
    kind = type(ts)
    if kind is int or kind is float:
        ms = ts
    elif kind is str:
        try:
            ms = parse_ts(ts, msg.site.tz) * 1000
        except Rejected:
            return ""
    else:
        return ""
    return f"{int(ms):011x}:" if 0 <= ms < 1 << 44 else ""


def _hash_id(msg: _Message) -> str:
    """An id from the message bytes: an MQTT redelivery (same topic, same bytes) gets the same id.

    QoS 0 is never redelivered, so there identical bytes are distinct events: the receive time and
    a process counter are mixed in to keep them apart.
    """
    digest = hashlib.sha1(msg.topic.encode() + b"\0" + msg.payload, usedforsecurity=False)
    if msg.qos == 0:
        digest.update(b"\0%r:%d" % (msg.received_at, next(_qos0_counter)))
    return "h:" + _time_key(msg) + digest.hexdigest()[:20]


# (topic, payload) digest -> the id given at its latest receipt, for messages without a device timestamp
# that came at QoS 1: a broker redelivery (DUP flag) of one of them gets the same id again. Bounded: a
# redelivery follows a reconnect, and the broker redelivers at most its in-flight window per client.
_recent_ids: dict[bytes, str] = {}
RECENT_IDS_MAX = 8192


def _receipt_id(msg: _Message) -> str:
    """An id for a message that carries neither a timestamp nor a message id (foreign gateways).

    Identical bytes received twice are two real sightings (a beacon that did not move), so the receive
    time is part of the id at any QoS. A QoS 1 redelivery, which the broker flags DUP, takes back the
    id its first receipt got, if this process saw it; after a crash between commit and ack it is
    recorded a second time (a repeated sighting, harmless to presence).
    """
    digest = hashlib.sha1(msg.topic.encode() + b"\0" + msg.payload, usedforsecurity=False)
    key = digest.digest() if msg.qos else b""
    if key and msg.dup:
        known = _recent_ids.get(key)
        if known is not None:
            return known
    digest.update(b"\0%r:%d" % (msg.received_at, next(_qos0_counter)))
    event_id = f"h:{int(msg.received_at * 1000):011x}:" + digest.hexdigest()[:20]  # time first: see _time_key
    if key:
        if _recent_ids.pop(key, None) is None and len(_recent_ids) >= RECENT_IDS_MAX:
            del _recent_ids[next(iter(_recent_ids))]  # the oldest: dicts keep insertion order
        _recent_ids[key] = event_id
    return event_id


def _device_id(kind: str, msg: _Message, obj: dict[str, Any], where: str) -> str | None:
    """kind:source:id when the device numbered its message, so its own retries dedupe too."""
    ident = _ident(obj, "id", where)
    return None if ident is None else f"{kind}:{msg.source}:{ident}"


def _event_id(kind: str, msg: _Message) -> str:
    return _device_id(kind, msg, msg.obj, "") or _hash_id(msg)


# ---------------------------------------------------------------------------------------------------
# Beacons

_HEX = "[0-9a-fA-F]"
_UUID_RE = re.compile(f"({_HEX}{{8}})-?({_HEX}{{4}})-?({_HEX}{{4}})-?({_HEX}{{4}})-?({_HEX}{{12}})")
_NAMESPACE_RE = re.compile(f"{_HEX}{{20}}")
_INSTANCE_RE = re.compile(f"{_HEX}{{12}}")


def _beacon_key(beacon: Any, path: str) -> tuple[str, str]:
    """(subject key, beacon type) for a beacon object; Rejected when it is malformed."""
    if type(beacon) is not dict:
        raise Rejected(WRONG_TYPE, f"{path}: expected an object with a \"type\", got {_show(beacon)}")
    where = path + "."
    btype = beacon.get("type")
    if btype == "ibeacon":
        uuid = _str(beacon, "uuid", where, 64)
        match = _UUID_RE.fullmatch(uuid)
        if match is None:
            raise Rejected(INVALID_VALUE, f"{where}uuid: not a UUID (8-4-4-4-12 hex digits), got {_show(uuid)}")
        major = _int(beacon, "major", where, U16_RANGE)
        minor = _int(beacon, "minor", where, U16_RANGE)
        return f"ibeacon:{'-'.join(match.groups()).lower()}:{major}:{minor}", btype
    if btype == "eddystone-uid":
        namespace = _str(beacon, "namespace", where, 64)
        if not _NAMESPACE_RE.fullmatch(namespace):
            raise Rejected(INVALID_VALUE, f"{where}namespace: expected 20 hex digits, got {_show(namespace)}")
        instance = _str(beacon, "instance", where, 64)
        if not _INSTANCE_RE.fullmatch(instance):
            raise Rejected(INVALID_VALUE, f"{where}instance: expected 12 hex digits, got {_show(instance)}")
        return f"eddystone:{namespace.lower()}:{instance.lower()}", btype
    if btype == "device":
        return f"device:{_str(beacon, 'id', where)}", btype
    expected = "one of " + ", ".join(f"'{t}'" for t in BEACON_TYPES)
    if btype is None:
        _absent(beacon, "type", where, expected, True)
    reason = INVALID_VALUE if type(btype) is str else WRONG_TYPE
    raise Rejected(reason, f"{where}type: expected {expected}, got {_show(btype)}")


def _sighting(msg: _Message, obj: dict[str, Any], where: str, event_id: str | None) -> Event:
    """One native sighting -> a beacon event in the gateway's zone."""
    ts = _ts(obj, where, msg.site.tz)
    beacon = obj.get("beacon")
    if beacon is None:
        _absent(obj, "beacon", where, "a beacon object", True)
    subject, btype = _beacon_key(beacon, where + "beacon")
    data: dict[str, Any] = {"rssi": _int(obj, "rssi", where, RSSI_RANGE), "beacon_type": btype}
    tx_power = _int(obj, "tx_power", where, TX_POWER_RANGE, required=False)
    if tx_power is not None:
        data["tx_power"] = tx_power
    if event_id is None:
        event_id = _device_id("beacon", msg, obj, where) or _hash_id(msg)
    return Event(event_id=event_id, kind="beacon", source=msg.source, ts=ts, received_at=msg.received_at,
                 zone=msg.site.gateways[msg.source], subject=subject, data=data)


def _beacon(msg: _Message) -> list[Event]:
    """P/beacon/{gateway}: one sighting, or a {"sightings": [...]} batch (all or nothing)."""
    obj = msg.obj
    sightings = obj.get("sightings", _MISSING)
    if sightings is _MISSING:
        return [_sighting(msg, obj, "", None)]
    if type(sightings) is not list:
        raise Rejected(WRONG_TYPE, f"sightings: expected a list of sightings, got {_show(sightings)}")
    if not sightings:
        raise Rejected(INVALID_VALUE, "sightings: empty list; send at least one sighting")
    base = _event_id("beacon", msg)
    events = []
    for index, sighting in enumerate(sightings):
        where = f"sightings[{index}]."
        if type(sighting) is not dict:
            raise Rejected(WRONG_TYPE, f"sightings[{index}]: expected a sighting object, got {_show(sighting)}")
        own_id = _device_id("beacon", msg, sighting, where)
        events.append(_sighting(msg, sighting, where, own_id or f"{base}:{index}"))
    return events


# ---------------------------------------------------------------------------------------------------
# Touchpoints: QR scanners, interactive windows, kiosks, POS


def _qr(msg: _Message) -> list[Event]:
    """P/qr/{scanner}: a scanned code; identity resolves what it means."""
    obj = msg.obj
    return [Event(event_id=_event_id("qr", msg), kind="qr", source=msg.source, ts=_ts(obj, "", msg.site.tz),
                  received_at=msg.received_at, data={"code": _str(obj, "code", "", MAX_CODE_LEN)})]


def _window(msg: _Message) -> list[Event]:
    """P/window/{window}: an interaction on a shop window; the zone is known if it is a configured screen."""
    obj = msg.obj
    ts = _ts(obj, "", msg.site.tz)
    kind = obj.get("type")
    if kind not in WINDOW_TYPES:
        expected = "one of " + ", ".join(f"'{t}'" for t in WINDOW_TYPES)
        if kind is None:
            _absent(obj, "type", "", expected, True)
        reason = INVALID_VALUE if type(kind) is str else WRONG_TYPE
        raise Rejected(reason, f"type: expected {expected}, got {_show(kind)}")
    session = _str(obj, "session", "")
    data = {"session": session}
    item = _str(obj, "item", "", required=False)
    if item is not None:
        data["item"] = item
    return [Event(event_id=_event_id("window", msg), kind="window", source=msg.source, ts=ts,
                  received_at=msg.received_at, zone=msg.site.screens.get(msg.source), subject=f"session:{session}",
                  type=kind, data=data)]


_KIOSK_TYPE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,31}")
_KIOSK_FIELDS = frozenset({"id", "ts", "type", "customer", "identity", "session", "item"})
_SCALARS = (str, int, float, bool, type(None))


def _kiosk(msg: _Message) -> list[Event]:
    """P/kiosk/{kiosk}/event: identify carries customer or identity; others carry a session."""
    obj = msg.obj
    ts = _ts(obj, "", msg.site.tz)
    kind = _str(obj, "type", "", 32)
    if not _KIOSK_TYPE_RE.fullmatch(kind):
        raise Rejected(INVALID_VALUE, f"type: expected a short identifier (letters, digits, '_', '-'), "
                                      f"got {_show(kind)}")
    identify = kind == "identify"
    customer = _ident(obj, "customer", "")
    identity = _str(obj, "identity", "", MAX_IDENTITY_LEN, required=False)
    if identify and customer is None and identity is None:
        raise Rejected(MISSING_FIELD, "customer or identity: missing; an identify event names the customer id "
                                      "or an identity key (e.g. a loyalty card)")
    session = _str(obj, "session", "", required=not identify)
    data: dict[str, Any] = {}
    if session is not None:
        data["session"] = session
    item = _str(obj, "item", "", required=False)
    if item is not None:
        data["item"] = item
    if identity is not None:
        data["identity"] = identity
    _kiosk_extras(obj, data)
    if kind == "consent":
        _check_consent(data.get("consent"))
    zone = msg.site.kiosks.get(msg.source)
    return [Event(event_id=_event_id("kiosk", msg), kind="kiosk", source=msg.source, ts=ts,
                  received_at=msg.received_at, zone=zone, subject=f"session:{session}" if session else None,
                  customer=customer, type=kind, data=data, known_device=zone is not None)]


def _kiosk_extras(obj: dict[str, Any], data: dict[str, Any]) -> None:
    """Copy type-specific kiosk fields into data: scalars, or a small flat object/list of scalars."""
    extras = [key for key in obj if key not in _KIOSK_FIELDS]
    if len(extras) > MAX_EXTRA_FIELDS:
        raise Rejected(INVALID_VALUE, f"payload: {len(extras)} extra fields, at most {MAX_EXTRA_FIELDS} are kept")
    for key in extras:
        value = obj[key]
        path = _cut(key, SHOW_MAX)
        if type(value) is dict or type(value) is list:
            if len(value) > MAX_EXTRA_ITEMS:
                raise Rejected(INVALID_VALUE, f"{path}: at most {MAX_EXTRA_ITEMS} entries, got {len(value)}")
            if type(value) is dict:
                for name, inner in value.items():
                    _check_scalar(inner, f"{path}.{_cut(name, SHOW_MAX)}")
            else:
                for index, inner in enumerate(value):
                    _check_scalar(inner, f"{path}[{index}]")
        else:
            _check_scalar(value, path)
        data[key] = value


def _check_scalar(value: Any, path: str) -> None:
    if not isinstance(value, _SCALARS):
        raise Rejected(WRONG_TYPE, f"{path}: expected a string, number, boolean or null, got {_show(value)}")
    if type(value) is str and len(value) > MAX_EXTRA_STR_LEN:
        raise Rejected(INVALID_VALUE, f"{path}: expected at most {MAX_EXTRA_STR_LEN} characters, "
                                      f"got {len(value)}")


def _check_consent(consent: Any) -> None:
    """A consent event must say exactly what was granted: {"purpose": true|false, ...}.

    The central applies it to the profile, so a malformed one must not be half-applied later.
    """
    expected = 'an object of purposes to true/false, e.g. {"personalization": true}'
    if consent is None:
        raise Rejected(MISSING_FIELD, f"consent: missing; expected {expected}")
    if type(consent) is not dict:
        raise Rejected(WRONG_TYPE, f"consent: expected {expected}, got {_show(consent)}")
    if not consent:
        raise Rejected(INVALID_VALUE, f"consent: empty; expected {expected}")
    for purpose, granted in consent.items():
        if type(granted) is not bool:
            raise Rejected(WRONG_TYPE, f"consent.{_cut(purpose, SHOW_MAX)}: expected true or false, "
                                       f"got {_show(granted)}")


def _pos(msg: _Message) -> list[Event]:
    """P/pos/{terminal}: a sale (conversion KPIs); the terminal's own receipt id is required."""
    obj = msg.obj
    event_id = f"pos:{msg.source}:{_ident(obj, 'id', '', required=True)}"
    ts = _ts(obj, "", msg.site.tz)
    customer = _ident(obj, "customer", "")
    items = obj.get("items")
    expected_items = "a list of SKUs or item objects"
    if items is None:
        _absent(obj, "items", "", expected_items, True)
    if type(items) is not list:
        raise Rejected(WRONG_TYPE, f"items: expected {expected_items}, got {_show(items)}")
    if len(items) > MAX_POS_ITEMS:
        raise Rejected(INVALID_VALUE, f"items: at most {MAX_POS_ITEMS} entries, got {len(items)}")
    for index, item in enumerate(items):
        if type(item) is str:
            if not 0 < len(item) <= MAX_ID_LEN:
                raise Rejected(INVALID_VALUE, f"items[{index}]: expected a SKU of 1 to {MAX_ID_LEN} characters, "
                                              f"got {len(item)} characters")
        elif type(item) is not dict:
            raise Rejected(WRONG_TYPE, f"items[{index}]: expected {expected_items}, got {_show(item)}")
        elif nested_deeper(item, MAX_POS_ITEM_DEPTH):
            raise Rejected(INVALID_VALUE, f"items[{index}]: nested deeper than {MAX_POS_ITEM_DEPTH} levels")
    total = obj.get("total")
    if type(total) is not int and type(total) is not float:
        if total is None:
            _absent(obj, "total", "", "a number", True)
        raise Rejected(WRONG_TYPE, f"total: expected a number, got {_show(total)}")
    if not -MAX_TOTAL <= total <= MAX_TOTAL:  # also NaN; and no float() of a huge int (OverflowError)
        raise Rejected(INVALID_VALUE, f"total: expected a number between -{MAX_TOTAL} and {MAX_TOTAL}, "
                                      f"got {_show(total)}")
    return [Event(event_id=event_id, kind="pos", source=msg.source, ts=ts,
                  received_at=msg.received_at, customer=customer, data={"items": items, "total": total})]


# root -> (topic depth below P, required last segment or "", handler)
_ROUTES: dict[str, tuple[int, str, Handler]] = {
    "beacon": (2, "", _beacon),
    "qr": (2, "", _qr),
    "window": (2, "", _window),
    "kiosk": (3, "event", _kiosk),
    "pos": (2, "", _pos),
}
