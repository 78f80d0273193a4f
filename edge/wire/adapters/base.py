"""The one small interface every gateway format implements, and what their decoders share.

A format is an `Adapter`: its name in the config (`[[gateways]] format`), the topics outside P that carry
it (none for the native format, whose gateways publish on P/beacon/<id>), how a topic names the gateway
it came from, and the decoders that turn a message into beacon events in that gateway's zone. The table
of formats is `edge.wire.adapters.ADAPTERS`: a new format is one new module and one row there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.config.layout import GATEWAY_TOPICS, GatewayConfig
from edge.model import GATEWAY_STATUS, INVALID_VALUE, NOT_UTF8, WRONG_TYPE, Event, Rejected
from edge.wire.adapters.frames import Beacon
from edge.wire.fields import absent, show
from edge.wire.ids import receipt_id
from edge.wire.inbound import Inbound

DISTANCE_RANGE = (0, 10_000)  # metres, as the gateway estimated them

Decoder = Callable[[Inbound, str], list[Event]]  # (the message, its gateway's zone) -> events


@dataclass(frozen=True, slots=True)
class Route:
    """Where a topic outside P leads: the gateway it names, and how to read its payload."""

    gateway: str
    decode: Decoder
    status: bool = False  # a plain-text "online"/"offline" status, not JSON


@dataclass(frozen=True, slots=True)
class Adapter:
    """One gateway format behind the one interface the ingest path knows."""

    format: str  # [[gateways]] format = "..."
    gateway_name: str  # how store IT names one of its gateways, in a refusal
    topics_help: tuple[str, ...] = ()  # the topic shapes it arrives on, for a refusal
    route: Callable[[list[str]], Route | None] = lambda levels: None  # topic levels outside P -> Route
    status_topic: str | None = None  # where a gateway says "online"/"offline" ({id}: the gateway id)

    def topics(self, g: GatewayConfig) -> list[str]:
        """The filters to subscribe to for one gateway of this format: its sightings and its status."""
        if self.status_topic is None:  # native: P/beacon/<id>, under P/# already
            return []
        return [g.topic or GATEWAY_TOPICS[self.format].format(id=g.id), self.status_topic.format(id=g.id)]


def number(obj: dict[str, Any], key: str, bounds: tuple[int, int], required: bool) -> Any:
    """A number field (these gateways send floats where native ones send integers); bools refused."""
    value = obj.get(key)
    kind = type(value)
    lo, hi = bounds
    if (kind is int or kind is float) and lo <= value <= hi:
        return value
    expected = f"a number {lo}..{hi}"
    if value is None:
        return absent(obj, key, "", expected, required)
    reason = INVALID_VALUE if kind is int or kind is float else WRONG_TYPE
    raise Rejected(reason, f"{key}: expected {expected}, got {show(value)}")


def optional_text(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or type(value) is str:
        return value
    raise Rejected(WRONG_TYPE, f"{key}: expected a string, got {show(value)}")


def beacon_event(msg: Inbound, zone: str, beacon: Beacon, rssi: Any, tx_power: Any, distance: Any) -> Event:
    data: dict[str, Any] = {"rssi": round(rssi), "beacon_type": beacon.type}
    if tx_power is None:
        tx_power = beacon.tx_power
    if tx_power is not None:
        data["tx_power"] = round(tx_power)
    if distance is not None:
        data["distance"] = distance
    return Event(event_id=receipt_id(msg), kind="beacon", source=msg.source, ts=msg.received_at,
                 received_at=msg.received_at, zone=zone, subject=beacon.subject, data=data)


def status(msg: Inbound, zone: str) -> list[Event]:
    """A gateway node's status topic: plain "online" or "offline" (its MQTT last will)."""
    try:
        text = msg.payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(NOT_UTF8, f"payload: not UTF-8 (invalid byte at offset {exc.start})") from None
    state = text.strip().lower()
    if state != "online" and state != "offline":
        raise Rejected(INVALID_VALUE, f"payload: expected online or offline, got {show(text)}")
    return [Event(event_id=receipt_id(msg), kind=GATEWAY_STATUS, source=msg.source, ts=msg.received_at,
                  received_at=msg.received_at, zone=zone, data={"state": state})]
