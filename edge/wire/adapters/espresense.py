"""ESPresense: `espresense/devices/{id}/{room}`, JSON with the device `id` ESPresense computed; the room is the
gateway id in the config. `espresense/rooms/{room}/status` says "online"/"offline".

ESPresense publishes at QoS 0 and sends no timestamp: the receive time is the sighting time and part of
the event id. Besides the beacon keys, it resolves identities itself (`irk:<hex>`, `known:<mac>`,
`name:<alias>`); phones and other devices with rotating addresses and no identity are not stored: they
raise `Ignored` (acknowledged and counted), not `Rejected`.
"""

from __future__ import annotations

import re

from edge.model import ANONYMOUS_DEVICE, INVALID_VALUE, UNSUPPORTED_FRAME, Event, Ignored, Rejected
from edge.wire.adapters.base import DISTANCE_RANGE, Adapter, Route, beacon_event, number, status
from edge.wire.adapters.frames import Beacon
from edge.wire.fields import HEX, RSSI_RANGE, TX_POWER_RANGE, U16_RANGE, UUID_RE, show, str_field
from edge.wire.inbound import Inbound

# <uuid>-<major>-<minor>, then the "-<tx>" some releases append (tx may be negative: "-1--59").
# <uuid>-<major>-<minor>, then the "-<tx>" some releases append (tx may be negative: "-1--59").
_ESP_IBEACON_RE = re.compile(f"{UUID_RE.pattern}-(\\d{{1,5}})-(\\d{{1,5}})(?:--?\\d{{1,3}})?")
_IRK_RE = re.compile(f"{HEX}{{32}}")
_MAC_RE = re.compile(f"{HEX}{{2}}(?:[:\\-]?{HEX}{{2}}){{5}}")
_HEX_RE = re.compile(f"{HEX}+")


def espresense_beacon(device_id: str) -> Beacon:
    """The beacon an ESPresense device id names; Ignored for ids without a stable identity.

    Kept: iBeacon:<uuid>-<major>-<minor>[-<tx>], eddy:<namespace>-<instance>, irk:<32 hex>,
    known:<mac>, name:<alias>. Ignored: plain MACs (random addresses) and fingerprints (apple:1007:11-12,
    msft:cdp:0109, md:..., sd:..., exp:...). Raises Rejected when a kept kind is malformed.
    """
    prefix, sep, rest = device_id.partition(":")
    kind = prefix.lower()
    if not sep or not rest:
        raise Ignored(ANONYMOUS_DEVICE, "id: a MAC address, without an identity")
    if kind == "ibeacon":
        match = _ESP_IBEACON_RE.fullmatch(rest)
        major = int(match.group(6)) if match else -1
        minor = int(match.group(7)) if match else -1
        if match is None or major > U16_RANGE[1] or minor > U16_RANGE[1]:
            raise Rejected(INVALID_VALUE, f"id: expected iBeacon:<uuid>-<major>-<minor> (0..65535), "
                                          f"got {show(device_id, 80)}")
        uuid = "-".join(match.group(i) for i in range(1, 6)).lower()
        return Beacon(f"ibeacon:{uuid}:{major}:{minor}", "ibeacon")
    if kind == "eddy":
        namespace, _, instance = rest.partition("-")
        if len(namespace) == 22 and namespace[8:10] == namespace[10:12]:
            # ESPresense prints the namespace's fifth byte twice (all releases so far): drop the copy.
            namespace = namespace[:10] + namespace[12:]
        if len(namespace) != 20 or len(instance) != 12 or not _HEX_RE.fullmatch(namespace + instance):
            raise Rejected(INVALID_VALUE, f"id: expected eddy:<namespace: 20 hex>-<instance: 12 hex>, "
                                          f"got {show(device_id, 80)}")
        return Beacon(f"eddystone:{namespace.lower()}:{instance.lower()}", "eddystone-uid")
    if kind == "irk":
        if not _IRK_RE.fullmatch(rest):
            raise Rejected(INVALID_VALUE, f"id: expected irk:<32 hex digits>, got {show(device_id)}")
        return Beacon(f"irk:{rest.lower()}", "irk")
    if kind == "known":
        if not _MAC_RE.fullmatch(rest):
            raise Rejected(INVALID_VALUE, f"id: expected known:<MAC address>, got {show(device_id)}")
        return Beacon(f"known:{rest.replace(':', '').replace('-', '').lower()}", "known")
    if kind == "name":
        return Beacon(f"name:{rest}", "name")
    if kind in ("altbeacon", "alt"):
        raise Ignored(UNSUPPORTED_FRAME, "id: AltBeacon")
    raise Ignored(ANONYMOUS_DEVICE, f"id: a {show(kind, 16)} fingerprint, without an identity")


def sighting(msg: Inbound, zone: str) -> list[Event]:
    """espresense/devices/{id}/{room}: one device as the room's node sees it."""
    obj = msg.obj
    beacon = espresense_beacon(str_field(obj, "id", ""))
    rssi = number(obj, "rssi", RSSI_RANGE, True)
    tx_power = number(obj, "rssi@1m", TX_POWER_RANGE, False)
    distance = number(obj, "distance", DISTANCE_RANGE, False)
    return [beacon_event(msg, zone, beacon, rssi, tx_power, distance)]


def route(levels: list[str]) -> Route | None:
    """espresense/devices/<id>/<room> (a sighting) or espresense/rooms/<room>/status."""
    if len(levels) != 4 or levels[0] != "espresense":
        return None
    if levels[1] == "devices":
        return Route(levels[3], sighting)
    if levels[1] == "rooms" and levels[3] == "status":
        return Route(levels[2], status, status=True)
    return None


ADAPTER = Adapter("espresense", "ESPresense room", ("espresense/devices/<id>/<room>", "espresense/rooms/<room>/status"),
                  route, status_topic="espresense/rooms/{id}/status")
