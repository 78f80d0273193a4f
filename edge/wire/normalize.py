"""Every message that reaches the store from MQTT or HTTP becomes events here, or a refusal with its reason.

`normalize` either returns events (possibly none, for topics the edge itself publishes), raises
`Rejected` with a reason code that the dead-letter table, the `P/deadletter` topic and the metrics all
use, or raises `Ignored` for a well-formed message that is deliberately not stored (a phone's rotating
address heard by an ESPresense node): acknowledged and counted, never dead-lettered.

Checks run cheapest first: topic, size (before decoding anything), UTF-8, JSON, then fields. Native
sightings, nearly all of the traffic, are first read by a one-pass decoder (edge.wire.adapters.native
`fast_sightings`); what it does not accept is read again by the careful path, which names the reason. Topics under
P go to the native gateway format or to the store's own devices (edge.wire.touchpoints); topics outside
P to the gateway format that claims them (edge.wire.adapters).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from edge.config import ID_PATTERN, Config
from edge.model import (OVERSIZED, UNKNOWN_GATEWAY, UNKNOWN_GATEWAY_STATUS, UNKNOWN_TOPIC, Event, Ignored,
                        Rejected)
from edge.wire import touchpoints
from edge.wire.adapters import ADAPTERS, native
from edge.wire.adapters.base import Decoder
from edge.wire.fields import decode_json, show
from edge.wire.inbound import Inbound, Site, site_of

_ID_RE = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))
# Roots the edge publishes under P itself: they come back to us through the '#' subscription.
_OWN_ROOTS = frozenset({"display", "edge", "staff"})
Handler = Callable[[Inbound], list[Event]]
# root under P -> (topic depth below P, required last segment or "", handler)
_ROUTES: dict[str, tuple[int, str, Handler]] = {
    "qr": (2, "", touchpoints.qr),
    "window": (2, "", touchpoints.window),
    "kiosk": (3, "event", touchpoints.kiosk),
    "pos": (2, "", touchpoints.pos),
}
_FOREIGN = [a for a in ADAPTERS.values() if a.topics_help]
_TOPICS_HELP = ", ".join(h for a in _FOREIGN for h in a.topics_help).rpartition(", ")
_TOPICS_HELP_TEXT = f"{_TOPICS_HELP[0]} or {_TOPICS_HELP[2]}" if _TOPICS_HELP[0] else _TOPICS_HELP[2]


def normalize(topic: str, payload: bytes, received_at: float, cfg: Config, qos: int = 1,
              dup: bool = False, sha1: bytes | None = None) -> list[Event]:
    """Turn one MQTT message into events, [] for the edge's own output topics, or raise Rejected/Ignored.

    `dup` is the MQTT DUP flag (a broker redelivery): it lets messages without a device timestamp dedupe.
    `sha1`: sha1(topic + NUL + payload), when the caller has it (the writer does, for the quarantine).
    """
    site = site_of(cfg)
    native_route = site.native.get(topic)
    if native_route is not None and type(payload) is bytes and len(payload) <= site.max_bytes:
        # a configured gateway's P/beacon/<gateway>, nearly all of the traffic: the one-pass reader first
        events = native.fast_sightings(topic, payload, native_route[0], received_at, qos, site, native_route[1],
                                       sha1)
        if events is not None:
            return events
    if not topic.startswith(site.prefix):
        return _foreign(topic, payload, received_at, qos, dup, site)
    parts = topic[len(site.prefix):].split("/")
    root = parts[0]
    if root in _OWN_ROOTS or (root == "deadletter" and len(parts) == 1):
        return []
    if root == "beacon" and len(parts) == 2:
        source = parts[1]
        zone = site.gateways.get(source)
        if zone is None:
            raise Rejected(UNKNOWN_GATEWAY, f"gateway {show(source)} is not in the config: add it under "
                                            "[[gateways]] with the zone it covers")
        return native.sightings(_inbound(topic, payload, source, received_at, qos, dup, site), zone)
    route = _ROUTES.get(root)
    if route is None or len(parts) != route[0] or (route[1] and parts[2] != route[1]):
        raise Rejected(UNKNOWN_TOPIC, f"topic {show(topic, 120)}: expected {site.prefix}beacon/<gateway>, "
                                      "qr/<scanner>, window/<window>, kiosk/<kiosk>/event or pos/<terminal>")
    source = parts[1]
    if not _ID_RE.fullmatch(source):
        raise Rejected(UNKNOWN_TOPIC, f"topic {show(topic, 120)}: device id {show(source)} is not an id "
                                      "(letters, digits, '-', '_', '.'; at most 64)")
    return route[2](_inbound(topic, payload, source, received_at, qos, dup, site))


def _inbound(topic: str, payload: bytes, source: str, received_at: float, qos: int, dup: bool, site: Site, *,
             text: bool = False) -> Inbound:
    """The message checked for size and, unless it is plain text, decoded as a JSON object."""
    if type(payload) is not bytes:
        payload = bytes(payload)
    if len(payload) > site.max_bytes:
        raise Rejected(OVERSIZED, f"payload: {len(payload)} bytes, the limit is {site.max_bytes} "
                                  "(limits.max_payload_bytes)")
    obj = {} if text else decode_json(payload)  # status payloads are plain text
    return Inbound(topic, payload, source, received_at, qos, site, obj, dup)


def _foreign(topic: str, payload: bytes, received_at: float, qos: int, dup: bool, site: Site) -> list[Event]:
    """A topic outside P: the gateway format that claims it reads it, in its gateway's zone."""
    levels = topic.split("/")
    for adapter in _FOREIGN:
        route = adapter.route(levels)
        if route is not None:
            break
    else:
        raise Rejected(UNKNOWN_TOPIC, f"topic {show(topic, 120)}: expected {site.prefix}... or a gateway "
                                      f"topic: {_TOPICS_HELP_TEXT}")
    zone = site.by_format.get(adapter.format, {}).get(route.gateway)
    if zone is None:
        if route.status:
            raise Ignored(UNKNOWN_GATEWAY_STATUS, f"{adapter.format} node {show(route.gateway)} is not in the config")
        raise Rejected(UNKNOWN_GATEWAY, f"{adapter.gateway_name} {show(route.gateway)} is not in the config: add it "
                                        f"under [[gateways]] with format = \"{adapter.format}\", its name as id and "
                                        "the zone it covers")
    decode: Decoder = route.decode
    return decode(_inbound(topic, payload, route.gateway, received_at, qos, dup, site, text=route.status), zone)
