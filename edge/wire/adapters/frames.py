"""Raw advertising data, as gateways dump it when they could not decode a frame: iBeacon and Eddystone-UID.

Pure: bytes in, a beacon out, or Ignored saying why not.
"""

from __future__ import annotations

from typing import NamedTuple

from edge.model import ANONYMOUS_DEVICE, UNDECODABLE_FRAME, UNSUPPORTED_FRAME, Ignored
from edge.wire.fields import TX_POWER_RANGE, show

MAX_HEX_CHARS = 1024  # an extended advertisement is at most 254 bytes
EDDYSTONE_1M_LOSS = 41  # Eddystone sends its power at 0 m; the spec says 41 dB less at 1 m


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
        raise Ignored(UNDECODABLE_FRAME, f"hex data: not hex, got {show(text)}") from None


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
        raise Ignored(ANONYMOUS_DEVICE, f"service data: service {show(uuid)}, not Eddystone")
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
