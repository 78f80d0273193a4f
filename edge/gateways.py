"""BLE gateways stores already run (ESPresense, Theengs Gateway / OpenMQTTGateway), as native sightings.

Each format arrives on its own topics, outside P, and becomes the same beacon Event a native gateway's
sighting does, with the same subject keys (`ibeacon:<uuid>:<major>:<minor>`, `eddystone:<ns>:<instance>`)
plus the identities ESPresense resolves itself (`irk:<hex>`, `known:<mac>`, `name:<alias>`):

- ESPresense `espresense/devices/{id}/{room}`: JSON with the device `id` ESPresense computed. The room
  is the gateway id in the config. `espresense/rooms/{room}/status` says "online"/"offline".
- Theengs `home/{gateway}/BTtoMQTT/{MAC}`: JSON decoded by Theengs (`model_id` "IBEACON" with uuid,
  major, minor) or, when it could not decode the frame, the raw `manufacturerdata` / `servicedata`
  hex, which the parsers below read. `home/{gateway}/LWT` says "online"/"offline".

Neither format carries a timestamp (and ESPresense publishes at QoS 0): the receive time is the
sighting time and part of the event id. Phones and other devices with rotating addresses and no
identity are not stored: they raise `Ignored` (acknowledged and counted), not `Rejected`.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from edge.config import GATEWAY_TOPICS, Config
from edge.events import (ANONYMOUS_DEVICE, GATEWAY_STATUS, INVALID_VALUE, NOT_UTF8, OVERSIZED, RSSI_RANGE,
                         TX_POWER_RANGE, U16_RANGE, UNDECODABLE_FRAME, UNKNOWN_GATEWAY, UNKNOWN_GATEWAY_STATUS,
                         UNKNOWN_TOPIC, UNSUPPORTED_FRAME, WRONG_TYPE, Event, Ignored, Rejected, _absent,
                         _decode, _int, _Message, _receipt_id, _show, _Site, _str, _UUID_RE)

# Where each foreign gateway says whether it is up ("online"/"offline", retained, its MQTT last will).
STATUS_TOPICS = {"espresense": "espresense/rooms/{id}/status", "theengs": "home/{id}/LWT"}

MAX_HEX_CHARS = 1024  # an extended advertisement is at most 254 bytes
DISTANCE_RANGE = (0, 10_000)  # metres, as the gateway estimated them
EDDYSTONE_1M_LOSS = 41  # Eddystone sends its power at 0 m; the spec says 41 dB less at 1 m


def subscriptions(cfg: Config) -> list[str]:
    """Topic filters the edge subscribes to besides P/#: each foreign gateway's sightings and status."""
    topics: list[str] = []
    for g in cfg.gateways:
        if g.format in STATUS_TOPICS:
            for topic in (g.topic or GATEWAY_TOPICS[g.format].format(id=g.id), STATUS_TOPICS[g.format].format(id=g.id)):
                if topic not in topics:
                    topics.append(topic)
    return topics


# ---------------------------------------------------------------------------------------------------
# Advertising data parsers (pure: bytes in, a beacon out, or Ignored saying why not)


class Beacon(NamedTuple):
    """What a frame identifies: the subject key, the beacon_type for the event, the 1 m power if sent."""

    subject: str
    type: str
    tx_power: int | None = None


def hex_bytes(text: str) -> bytes:
    """The bytes of a gateway's hex dump: either case, optional '0x', optional spaces between bytes."""
    text = text.strip()
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    if len(text) > MAX_HEX_CHARS:
        raise Ignored(UNDECODABLE_FRAME, f"hex data: {len(text)} characters, more than an advertisement holds")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise Ignored(UNDECODABLE_FRAME, f"hex data: not hex, got {_show(text)}") from None


def _uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _signed(byte: int) -> int:
    return byte - 256 if byte > 127 else byte


def decode_manufacturer_data(data: bytes) -> Beacon:
    """An iBeacon from manufacturer-specific data, which gateways dump company id first, little-endian.

    iBeacon (25 bytes): 4c 00 (Apple, 0x004C) | 02 15 (type iBeacon, 21 bytes follow) | UUID (16) |
    major (2, big-endian) | minor (2, big-endian) | measured power at 1 m (1, signed). Other Apple
    types (Continuity: phones, watches) and other companies are devices without a beacon identity.
    """
    if len(data) < 2:
        raise Ignored(UNDECODABLE_FRAME, f"manufacturer data: {len(data)} byte(s), no company id")
    if data[0] == 0x4C and data[1] == 0x00:
        if len(data) < 4:
            raise Ignored(UNDECODABLE_FRAME, f"manufacturer data: Apple, {len(data)} bytes, no type")
        if data[2] == 0x02 and data[3] == 0x15:
            if len(data) < 25:
                raise Ignored(UNDECODABLE_FRAME, f"manufacturer data: iBeacon cut short at {len(data)} of 25 bytes")
            major = data[20] << 8 | data[21]
            minor = data[22] << 8 | data[23]
            return Beacon(f"ibeacon:{_uuid(data[4:20])}:{major}:{minor}", "ibeacon", _signed(data[24]))
        raise Ignored(ANONYMOUS_DEVICE, f"manufacturer data: Apple type 0x{data[2]:02x}, not an iBeacon")
    if len(data) >= 4 and data[2] == 0xBE and data[3] == 0xAC:
        raise Ignored(UNSUPPORTED_FRAME, "manufacturer data: AltBeacon")
    raise Ignored(ANONYMOUS_DEVICE, f"manufacturer data: company 0x{data[1]:02x}{data[0]:02x}")


def service_uuid16(text: str) -> int | None:
    """A 16-bit service UUID from "0xfeaa", "FEAA" or its 128-bit form 0000feaa-0000-1000-8000-00805f9b34fb."""
    text = text.strip().lower().removeprefix("0x")
    if len(text) == 36 and text.startswith("0000") and text.endswith("-0000-1000-8000-00805f9b34fb"):
        text = text[4:8]
    if len(text) == 4:
        try:
            return int(text, 16)
        except ValueError:
            return None
    return None


EDDYSTONE_UUID = 0xFEAA
_EDDYSTONE_OTHER_FRAMES = {0x10: "URL", 0x20: "TLM", 0x30: "EID", 0x40: "ETLM"}


def decode_service_data(uuid: str | None, data: bytes) -> Beacon:
    """An Eddystone-UID from the service data of service 0xFEAA.

    UID frame (18 bytes, 20 with the reserved pair): 00 (frame type UID) | power at 0 m (1, signed) |
    namespace (10) | instance (6) | [2 reserved]. The event's tx_power is at 1 m, like iBeacon's.
    """
    if uuid is None:
        raise Ignored(UNDECODABLE_FRAME, "service data: without its service uuid")
    if service_uuid16(uuid) != EDDYSTONE_UUID:
        raise Ignored(ANONYMOUS_DEVICE, f"service data: service {_show(uuid)}, not Eddystone")
    if not data:
        raise Ignored(UNDECODABLE_FRAME, "service data: Eddystone, empty")
    frame = data[0]
    if frame == 0x00:
        if len(data) < 18:
            raise Ignored(UNDECODABLE_FRAME, f"service data: Eddystone-UID cut short at {len(data)} of 18 bytes")
        power = _signed(data[1]) - EDDYSTONE_1M_LOSS
        tx_power = power if TX_POWER_RANGE[0] <= power <= TX_POWER_RANGE[1] else None
        return Beacon(f"eddystone:{data[2:12].hex()}:{data[12:18].hex()}", "eddystone-uid", tx_power)
    if frame in _EDDYSTONE_OTHER_FRAMES:
        raise Ignored(UNSUPPORTED_FRAME, f"service data: Eddystone-{_EDDYSTONE_OTHER_FRAMES[frame]}")
    raise Ignored(UNDECODABLE_FRAME, f"service data: Eddystone frame type 0x{frame:02x}")


_IGNORE_ORDER = {UNDECODABLE_FRAME: 0, UNSUPPORTED_FRAME: 1, ANONYMOUS_DEVICE: 2}


def decode_raw(manufacturer_data: str | None, service_data: str | None, service_uuid: str | None) -> Beacon:
    """The beacon in a frame's raw hex fields; else Ignored with the most telling reason of the fields.

    A garbled frame says more (a beacon may be misconfigured) than an unsupported one, which says more
    than a device without a beacon identity.
    """
    ignored: list[Ignored] = []
    if manufacturer_data is not None:
        try:
            return decode_manufacturer_data(hex_bytes(manufacturer_data))
        except Ignored as exc:
            ignored.append(exc)
    if service_data is not None:
        try:
            return decode_service_data(service_uuid, hex_bytes(service_data))
        except Ignored as exc:
            ignored.append(exc)
    if not ignored:
        raise Ignored(ANONYMOUS_DEVICE, "no manufacturer or service data")
    raise min(ignored, key=lambda exc: _IGNORE_ORDER.get(exc.reason, 3))


# ---------------------------------------------------------------------------------------------------
# ESPresense device ids

_HEX = "[0-9a-fA-F]"
# <uuid>-<major>-<minor>, then the "-<tx>" some releases append (tx may be negative: "-1--59").
_ESP_IBEACON_RE = re.compile(f"{_UUID_RE.pattern}-(\\d{{1,5}})-(\\d{{1,5}})(?:--?\\d{{1,3}})?")
_IRK_RE = re.compile(f"{_HEX}{{32}}")
_MAC_RE = re.compile(f"{_HEX}{{2}}(?:[:\\-]?{_HEX}{{2}}){{5}}")
_HEX_RE = re.compile(f"{_HEX}+")


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
                                          f"got {_show(device_id, 80)}")
        uuid = "-".join(match.group(i) for i in range(1, 6)).lower()
        return Beacon(f"ibeacon:{uuid}:{major}:{minor}", "ibeacon")
    if kind == "eddy":
        namespace, _, instance = rest.partition("-")
        if len(namespace) == 22 and namespace[8:10] == namespace[10:12]:
            # ESPresense prints the namespace's fifth byte twice (all releases so far): drop the copy.
            namespace = namespace[:10] + namespace[12:]
        if len(namespace) != 20 or len(instance) != 12 or not _HEX_RE.fullmatch(namespace + instance):
            raise Rejected(INVALID_VALUE, f"id: expected eddy:<namespace: 20 hex>-<instance: 12 hex>, "
                                          f"got {_show(device_id, 80)}")
        return Beacon(f"eddystone:{namespace.lower()}:{instance.lower()}", "eddystone-uid")
    if kind == "irk":
        if not _IRK_RE.fullmatch(rest):
            raise Rejected(INVALID_VALUE, f"id: expected irk:<32 hex digits>, got {_show(device_id)}")
        return Beacon(f"irk:{rest.lower()}", "irk")
    if kind == "known":
        if not _MAC_RE.fullmatch(rest):
            raise Rejected(INVALID_VALUE, f"id: expected known:<MAC address>, got {_show(device_id)}")
        return Beacon(f"known:{rest.replace(':', '').replace('-', '').lower()}", "known")
    if kind == "name":
        return Beacon(f"name:{rest}", "name")
    if kind in ("altbeacon", "alt"):
        raise Ignored(UNSUPPORTED_FRAME, "id: AltBeacon")
    raise Ignored(ANONYMOUS_DEVICE, f"id: a {_show(kind, 16)} fingerprint, without an identity")


# ---------------------------------------------------------------------------------------------------
# Payload handlers


def _number(obj: dict[str, Any], key: str, bounds: tuple[int, int], required: bool) -> Any:
    """A number field (these gateways send floats where native ones send integers); bools refused."""
    value = obj.get(key)
    kind = type(value)
    lo, hi = bounds
    if (kind is int or kind is float) and lo <= value <= hi:
        return value
    expected = f"a number {lo}..{hi}"
    if value is None:
        return _absent(obj, key, "", expected, required)
    reason = INVALID_VALUE if kind is int or kind is float else WRONG_TYPE
    raise Rejected(reason, f"{key}: expected {expected}, got {_show(value)}")


def _optional_text(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    raise Rejected(WRONG_TYPE, f"{key}: expected a string, got {_show(value)}")


def _beacon_event(msg: _Message, zone: str, beacon: Beacon, rssi: Any, tx_power: Any, distance: Any) -> Event:
    data: dict[str, Any] = {"rssi": round(rssi), "beacon_type": beacon.type}
    if tx_power is None:
        tx_power = beacon.tx_power
    if tx_power is not None:
        data["tx_power"] = round(tx_power)
    if distance is not None:
        data["distance"] = distance
    return Event(event_id=_receipt_id(msg), kind="beacon", source=msg.source, ts=msg.received_at,
                 received_at=msg.received_at, zone=zone, subject=beacon.subject, data=data)


def _espresense(msg: _Message, zone: str) -> list[Event]:
    """espresense/devices/{id}/{room}: one device as the room's node sees it."""
    obj = msg.obj
    beacon = espresense_beacon(_str(obj, "id", ""))
    rssi = _number(obj, "rssi", RSSI_RANGE, True)
    tx_power = _number(obj, "rssi@1m", TX_POWER_RANGE, False)
    distance = _number(obj, "distance", DISTANCE_RANGE, False)
    return [_beacon_event(msg, zone, beacon, rssi, tx_power, distance)]


def _theengs(msg: _Message, zone: str) -> list[Event]:
    """home/{gateway}/BTtoMQTT/{MAC}: a frame Theengs decoded (iBeacon), or its raw hex when it could not."""
    obj = msg.obj
    _str(obj, "id", "")  # the MAC (or the iBeacon UUID with presenceUseBeaconUuid): checked, not used
    model = _optional_text(obj, "model_id")
    if model is not None and model.upper() == "IBEACON":
        match = _UUID_RE.fullmatch(_str(obj, "uuid", "", 64))
        if match is None:
            raise Rejected(INVALID_VALUE, f"uuid: not a UUID (32 hex digits), got {_show(obj['uuid'])}")
        major = _int(obj, "major", "", U16_RANGE)
        minor = _int(obj, "minor", "", U16_RANGE)
        beacon = Beacon(f"ibeacon:{'-'.join(match.groups()).lower()}:{major}:{minor}", "ibeacon")
    else:
        mfd = _optional_text(obj, "manufacturerdata")
        service_data = _optional_text(obj, "servicedata")
        service_uuid = _optional_text(obj, "servicedatauuid")
        if model is not None and mfd is None and service_data is None:
            raise Ignored(ANONYMOUS_DEVICE, f"model_id {_show(model)}: a device without a beacon identity")
        beacon = decode_raw(mfd, service_data, service_uuid)
    rssi = _number(obj, "rssi", RSSI_RANGE, True)
    tx_power = _number(obj, "txpower", TX_POWER_RANGE, False)
    distance = _number(obj, "distance", DISTANCE_RANGE, False)
    return [_beacon_event(msg, zone, beacon, rssi, tx_power, distance)]


def _status(msg: _Message, zone: str) -> list[Event]:
    """A gateway node's status topic: plain "online" or "offline" (its MQTT last will)."""
    try:
        text = msg.payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(NOT_UTF8, f"payload: not UTF-8 (invalid byte at offset {exc.start})") from None
    state = text.strip().lower()
    if state != "online" and state != "offline":
        raise Rejected(INVALID_VALUE, f"payload: expected online or offline, got {_show(text)}")
    return [Event(event_id=_receipt_id(msg), kind=GATEWAY_STATUS, source=msg.source, ts=msg.received_at,
                  received_at=msg.received_at, zone=zone, data={"state": state})]


_TOPICS_HELP = "espresense/devices/<id>/<room>, espresense/rooms/<room>/status, home/<gateway>/BTtoMQTT/<MAC> " \
               "or home/<gateway>/LWT"


class Foreign:
    """The foreign gateways of one Config, by ESPresense room / Theengs gateway name, for routing."""

    __slots__ = ("espresense", "theengs")

    def __init__(self, cfg: Config) -> None:
        self.espresense = {g.id: g.zone for g in cfg.gateways if g.format == "espresense"}
        self.theengs = {g.id: g.zone for g in cfg.gateways if g.format == "theengs"}

    def normalize(self, topic: str, payload: bytes, received_at: float, qos: int, dup: bool,
                  site: _Site) -> list[Event]:
        """events.normalize for a topic outside P: route by topic shape, then check and decode."""
        parts = topic.split("/")
        depth = len(parts)
        handler = None
        if depth == 4 and parts[0] == "espresense":
            if parts[1] == "devices":
                handler, gateways, what = _espresense, self.espresense, "espresense"
                source = parts[3]
            elif parts[1] == "rooms" and parts[3] == "status":
                handler, gateways, what = _status, self.espresense, "espresense"
                source = parts[2]
        elif parts[0] == "home":
            if depth == 4 and parts[2] == "BTtoMQTT":
                handler, gateways, what = _theengs, self.theengs, "theengs"
                source = parts[1]
            elif depth == 3 and parts[2] == "LWT":
                handler, gateways, what = _status, self.theengs, "theengs"
                source = parts[1]
        if handler is None:
            raise Rejected(UNKNOWN_TOPIC, f"topic {_show(topic, 120)}: expected {site.prefix}... or a gateway "
                                          f"topic: {_TOPICS_HELP}")
        zone = gateways.get(source)
        if zone is None:
            if handler is _status:
                raise Ignored(UNKNOWN_GATEWAY_STATUS, f"{what} node {_show(source)} is not in the config")
            name = "ESPresense room" if what == "espresense" else "Theengs/OpenMQTTGateway gateway"
            raise Rejected(UNKNOWN_GATEWAY, f"{name} {_show(source)} is not in the config: add it under "
                                            f"[[gateways]] with format = \"{what}\", its name as id and the "
                                            "zone it covers")
        if type(payload) is not bytes:
            payload = bytes(payload)
        if len(payload) > site.max_bytes:
            raise Rejected(OVERSIZED, f"payload: {len(payload)} bytes, the limit is {site.max_bytes} "
                                      "(limits.max_payload_bytes)")
        obj = {} if handler is _status else _decode(payload)  # status payloads are plain text
        return handler(_Message(topic, payload, source, received_at, qos, site, obj, dup), zone)
