"""The native format: a gateway publishes on P/beacon/<gateway>, one sighting or a batch, with its own clock.

`{"ts": ms|ISO8601, "beacon": {"type": "ibeacon", "uuid", "major", "minor"} | {"type": "eddystone-uid",
"namespace", "instance"} | {"type": "device", "id"}, "rssi": int, "tx_power": int?}` or
`{"sightings": [...same...]}` (all or nothing).

Two readers, one verdict. `fast_sightings` decodes and type-checks a payload in one pass in C (msgspec
Structs that allow exactly the fields this format has), then checks ranges and builds the events; it
returns None for anything it does not accept, and the careful reader (`sightings`, on edge.wire.fields'
hand validation) then gives the exact reason and path. So the fast reader only has to be right about
what it accepts: the same events, ids included, as the careful one (tests/test_events.py and
tests/test_properties.py hold both to that). Valid messages are nearly all of a busy store's traffic.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from edge.model import INVALID_VALUE, WRONG_TYPE, Event, Rejected
from edge.wire.adapters.base import Adapter
from edge.wire.fields import (HEX, MAX_ID_LEN, MAX_INT_ID, MISSING, RSSI_RANGE, TS_MAX_S, TS_MIN_S, TX_POWER_RANGE,
                              U16_RANGE, UUID_RE, absent, int_field, parse_ts, show, str_field, ts_field)
from edge.wire.ids import device_id, hash_id, hashed_id, message_id, time_key
from edge.wire.inbound import Inbound, Site

BEACON_TYPES = ("ibeacon", "eddystone-uid", "device")
_NAMESPACE_RE = re.compile(f"{HEX}{{20}}")
_INSTANCE_RE = re.compile(f"{HEX}{{12}}")


def subject_key(beacon: Any, path: str = "beacon") -> str:
    """The stable key presence and identity use for a beacon: ibeacon:<uuid>:<major>:<minor>, ...

    Inputs are canonicalized (lowercase, hyphenated UUID) so one beacon always gets one key.
    Raises Rejected, with `path` leading the detail, when the beacon object is malformed.
    """
    return beacon_key(beacon, path)[0]


def beacon_key(beacon: Any, path: str) -> tuple[str, str]:
    """(subject key, beacon type) for a beacon object; Rejected when it is malformed."""
    if type(beacon) is not dict:
        raise Rejected(WRONG_TYPE, f"{path}: expected an object with a \"type\", got {show(beacon)}")
    where = path + "."
    btype = beacon.get("type")
    if btype == "ibeacon":
        uuid = str_field(beacon, "uuid", where, 64)
        match = UUID_RE.fullmatch(uuid)
        if match is None:
            raise Rejected(INVALID_VALUE, f"{where}uuid: not a UUID (8-4-4-4-12 hex digits), got {show(uuid)}")
        major = int_field(beacon, "major", where, U16_RANGE)
        minor = int_field(beacon, "minor", where, U16_RANGE)
        return f"ibeacon:{'-'.join(match.groups()).lower()}:{major}:{minor}", btype
    if btype == "eddystone-uid":
        namespace = str_field(beacon, "namespace", where, 64)
        if not _NAMESPACE_RE.fullmatch(namespace):
            raise Rejected(INVALID_VALUE, f"{where}namespace: expected 20 hex digits, got {show(namespace)}")
        instance = str_field(beacon, "instance", where, 64)
        if not _INSTANCE_RE.fullmatch(instance):
            raise Rejected(INVALID_VALUE, f"{where}instance: expected 12 hex digits, got {show(instance)}")
        return f"eddystone:{namespace.lower()}:{instance.lower()}", btype
    if btype == "device":
        return f"device:{str_field(beacon, 'id', where)}", btype
    expected = "one of " + ", ".join(f"'{t}'" for t in BEACON_TYPES)
    if btype is None:
        absent(beacon, "type", where, expected, True)
    reason = INVALID_VALUE if type(btype) is str else WRONG_TYPE
    raise Rejected(reason, f"{where}type: expected {expected}, got {show(btype)}")


def _sighting(msg: Inbound, zone: str, obj: dict[str, Any], where: str, event_id: str | None) -> Event:
    """One native sighting -> a beacon event in the gateway's zone."""
    ts = ts_field(obj, where, msg.site.tz)
    beacon = obj.get("beacon")
    if beacon is None:
        absent(obj, "beacon", where, "a beacon object", True)
    subject, btype = beacon_key(beacon, where + "beacon")
    data: dict[str, Any] = {"rssi": int_field(obj, "rssi", where, RSSI_RANGE), "beacon_type": btype}
    tx_power = int_field(obj, "tx_power", where, TX_POWER_RANGE, required=False)
    if tx_power is not None:
        data["tx_power"] = tx_power
    if event_id is None:
        event_id = device_id("beacon", msg, obj, where) or hash_id(msg)
    return Event(event_id=event_id, kind="beacon", source=msg.source, ts=ts, received_at=msg.received_at,
                 zone=zone, subject=subject, data=data)


def sightings(msg: Inbound, zone: str) -> list[Event]:
    """P/beacon/{gateway}: one sighting, or a {"sightings": [...]} batch (all or nothing)."""
    obj = msg.obj
    sightings = obj.get("sightings", MISSING)
    if sightings is MISSING:
        return [_sighting(msg, zone, obj, "", None)]
    if type(sightings) is not list:
        raise Rejected(WRONG_TYPE, f"sightings: expected a list of sightings, got {show(sightings)}")
    if not sightings:
        raise Rejected(INVALID_VALUE, "sightings: empty list; send at least one sighting")
    base = message_id("beacon", msg)
    events = []
    for index, sighting in enumerate(sightings):
        where = f"sightings[{index}]."
        if type(sighting) is not dict:
            raise Rejected(WRONG_TYPE, f"sightings[{index}]: expected a sighting object, got {show(sighting)}")
        own_id = device_id("beacon", msg, sighting, where)
        events.append(_sighting(msg, zone, sighting, where, own_id or f"{base}:{index}"))
    return events


# --- the fast reader ------------------------------------------------------------------------------------

_UNSET: Any = msgspec.UNSET


class _Beacon(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    uuid: str | msgspec.UnsetType = _UNSET
    major: int | msgspec.UnsetType = _UNSET
    minor: int | msgspec.UnsetType = _UNSET
    namespace: str | msgspec.UnsetType = _UNSET
    instance: str | msgspec.UnsetType = _UNSET
    id: str | msgspec.UnsetType = _UNSET


class _Sighting(msgspec.Struct, forbid_unknown_fields=True):
    ts: int | float | str
    beacon: _Beacon
    rssi: int
    tx_power: int | None = None
    id: str | int | None = None


class _Payload(msgspec.Struct, forbid_unknown_fields=True):
    """One sighting, or a batch: the fields of both, so that one decoder reads either."""

    ts: int | float | str | None = None
    beacon: _Beacon | None = None
    rssi: int | None = None
    tx_power: int | None = None
    id: str | int | None = None
    sightings: list[_Sighting] | msgspec.UnsetType = _UNSET


_decode = msgspec.json.Decoder(_Payload).decode
_TS_MIN_MS, _TS_MAX_MS = 1000.0 * TS_MIN_S, 1000.0 * TS_MAX_S
_KEY_MAX_MS = 1 << 44  # time_key's range
_RSSI_MIN, _RSSI_MAX = RSSI_RANGE
_TX_MIN, _TX_MAX = TX_POWER_RANGE
_uuids: dict[str, str | None] = {}  # uuid as sent -> canonical (lowercase, hyphenated), or None: not a UUID
_UUIDS_MAX = 4096


class _Refer(Exception):
    """Not for the fast reader: the careful one decides."""


def _fast_subject(b: _Beacon) -> tuple[str, str]:
    btype = b.type
    if btype == "ibeacon":
        uuid, major, minor = b.uuid, b.major, b.minor
        if uuid is _UNSET or major is _UNSET or minor is _UNSET or not 0 <= major <= 65535 \
                or not 0 <= minor <= 65535:
            raise _Refer
        canonical = _uuids.get(uuid, "")
        if canonical == "":
            match = UUID_RE.fullmatch(uuid) if 0 < len(uuid) <= 64 else None
            canonical = None if match is None else "-".join(match.groups()).lower()
            if len(_uuids) >= _UUIDS_MAX:
                _uuids.clear()
            _uuids[uuid] = canonical
        if canonical is None:
            raise _Refer
        return f"ibeacon:{canonical}:{major}:{minor}", btype
    if btype == "eddystone-uid":
        namespace, instance = b.namespace, b.instance
        if namespace is _UNSET or instance is _UNSET or not _NAMESPACE_RE.fullmatch(namespace) \
                or not _INSTANCE_RE.fullmatch(instance):
            raise _Refer
        return f"eddystone:{namespace.lower()}:{instance.lower()}", btype
    if btype == "device":
        ident = b.id
        if ident is _UNSET or not 0 < len(ident) <= MAX_ID_LEN:
            raise _Refer
        return f"device:{ident}", btype
    raise _Refer


def _fast_ident(value: str | int | None) -> str | None:
    if value is None:
        return None
    if type(value) is str:
        if 0 < len(value) <= MAX_ID_LEN:
            return value
    elif -MAX_INT_ID <= value <= MAX_INT_ID:
        return str(value)
    raise _Refer


def _fast_event(s: _Sighting | _Payload, source: str, received_at: float, zone: str, site: Site,
                event_id: str) -> Event:
    ts = s.ts
    if type(ts) is str:
        try:
            seconds = parse_ts(ts, site.tz)
        except Rejected:
            raise _Refer from None
    elif _TS_MIN_MS <= ts <= _TS_MAX_MS:  # type: ignore[operator]
        seconds = ts / 1000.0  # type: ignore[operator]
    else:
        raise _Refer
    rssi = s.rssi
    if not _RSSI_MIN <= rssi <= _RSSI_MAX:  # type: ignore[operator]
        raise _Refer
    subject, btype = _fast_subject(s.beacon)  # type: ignore[arg-type]
    tx_power = s.tx_power
    if tx_power is None:
        data = {"rssi": rssi, "beacon_type": btype}
    elif _TX_MIN <= tx_power <= _TX_MAX:
        data = {"rssi": rssi, "beacon_type": btype, "tx_power": tx_power}
    else:
        raise _Refer
    return Event(event_id=event_id, kind="beacon", source=source, ts=seconds, received_at=received_at, zone=zone,
                 subject=subject, data=data)


def fast_sightings(topic: str, payload: bytes, source: str, received_at: float, qos: int, site: Site,
                   zone: str, sha1: bytes | None = None) -> list[Event] | None:
    """P/beacon/{gateway} read in one pass; None when the careful reader must decide (any doubt at all)."""
    try:
        p = _decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return None
    try:
        batch = p.sightings
        if batch is _UNSET:
            if p.ts is None or p.beacon is None or p.rssi is None:
                return None
            own = _fast_ident(p.id)
            ts = p.ts
            if own is not None:
                event_id = f"beacon:{source}:{own}"
            elif sha1 is not None and qos and type(ts) is int and 0 <= ts < _KEY_MAX_MS:
                event_id = f"h:{ts:011x}:{sha1[:10].hex()}"  # hashed_id(.., time_key(ts), sha1), the usual case inline
            else:
                event_id = hashed_id(topic, payload, qos, received_at, time_key(ts, site.tz), sha1)
            return [_fast_event(p, source, received_at, zone, site, event_id)]
        if not batch:
            return None
        own = _fast_ident(p.id)
        base = f"beacon:{source}:{own}" if own is not None else \
            hashed_id(topic, payload, qos, received_at, time_key(p.ts if p.ts is not None else batch[0].ts, site.tz),
                      sha1)
        events = []
        for index, s in enumerate(batch):
            own = _fast_ident(s.id)
            events.append(_fast_event(s, source, received_at, zone, site,
                                      f"beacon:{source}:{own}" if own is not None else f"{base}:{index}"))
        return events
    except _Refer:
        return None


ADAPTER = Adapter("native", "gateway")
