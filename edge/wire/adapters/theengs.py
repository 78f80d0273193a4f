"""Theengs Gateway / OpenMQTTGateway: `home/{gateway}/BTtoMQTT/{MAC}`, JSON decoded by Theengs (`model_id`
"IBEACON" with uuid, major, minor) or, when it could not decode the frame, the raw `manufacturerdata` /
`servicedata` hex, which edge.wire.adapters.frames reads. `home/{gateway}/LWT` says "online"/"offline".

No timestamp: the receive time is the sighting time and part of the event id. Devices without a beacon
identity raise `Ignored` (acknowledged and counted), not `Rejected`.
"""

from __future__ import annotations

from edge.model import ANONYMOUS_DEVICE, INVALID_VALUE, Event, Ignored, Rejected
from edge.wire.adapters.base import DISTANCE_RANGE, Adapter, Route, beacon_event, number, optional_text, status
from edge.wire.adapters.frames import Beacon, decode_raw
from edge.wire.fields import RSSI_RANGE, TX_POWER_RANGE, U16_RANGE, UUID_RE, int_field, show, str_field
from edge.wire.inbound import Inbound


def sighting(msg: Inbound, zone: str) -> list[Event]:
    """home/{gateway}/BTtoMQTT/{MAC}: a frame Theengs decoded (iBeacon), or its raw hex when it could not."""
    obj = msg.obj
    str_field(obj, "id", "")  # the MAC (or the iBeacon UUID with presenceUseBeaconUuid): checked, not used
    model = optional_text(obj, "model_id")
    if model is not None and model.upper() == "IBEACON":
        match = UUID_RE.fullmatch(str_field(obj, "uuid", "", 64))
        if match is None:
            raise Rejected(INVALID_VALUE, f"uuid: not a UUID (32 hex digits), got {show(obj['uuid'])}")
        major = int_field(obj, "major", "", U16_RANGE)
        minor = int_field(obj, "minor", "", U16_RANGE)
        beacon = Beacon(f"ibeacon:{'-'.join(match.groups()).lower()}:{major}:{minor}", "ibeacon")
    else:
        mfd = optional_text(obj, "manufacturerdata")
        service_data = optional_text(obj, "servicedata")
        service_uuid = optional_text(obj, "servicedatauuid")
        if model is not None and mfd is None and service_data is None:
            raise Ignored(ANONYMOUS_DEVICE, f"model_id {show(model)}: a device without a beacon identity")
        beacon = decode_raw(mfd, service_data, service_uuid)
    rssi = number(obj, "rssi", RSSI_RANGE, True)
    tx_power = number(obj, "txpower", TX_POWER_RANGE, False)
    distance = number(obj, "distance", DISTANCE_RANGE, False)
    return [beacon_event(msg, zone, beacon, rssi, tx_power, distance)]


def route(levels: list[str]) -> Route | None:
    """home/<gateway>/BTtoMQTT/<MAC> (a sighting) or home/<gateway>/LWT."""
    if levels[0] != "home":
        return None
    if len(levels) == 4 and levels[2] == "BTtoMQTT":
        return Route(levels[1], sighting)
    if len(levels) == 3 and levels[2] == "LWT":
        return Route(levels[1], status, status=True)
    return None


ADAPTER = Adapter("theengs", "Theengs/OpenMQTTGateway gateway", ("home/<gateway>/BTtoMQTT/<MAC>", "home/<gateway>/LWT"),
                  route, status_topic="home/{id}/LWT")
