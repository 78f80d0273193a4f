"""The native format: a gateway publishes on P/beacon/<gateway>, one sighting or a batch, with its own clock.

`{"ts": ms|ISO8601, "beacon": {"type": "ibeacon", "uuid", "major", "minor"} | {"type": "eddystone-uid",
"namespace", "instance"} | {"type": "device", "id"}, "rssi": int, "tx_power": int?}` or
`{"sightings": [...same...]}` (all or nothing).
"""

from __future__ import annotations

import re
from typing import Any

from edge.model import INVALID_VALUE, WRONG_TYPE, Event, Rejected
from edge.wire.adapters.base import Adapter
from edge.wire.fields import (HEX, MISSING, RSSI_RANGE, TX_POWER_RANGE, U16_RANGE, UUID_RE, absent, int_field, show,
                              str_field, ts_field)
from edge.wire.ids import device_id, hash_id, message_id
from edge.wire.inbound import Inbound

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


ADAPTER = Adapter("native", "gateway")
