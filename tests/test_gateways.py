"""Foreign BLE gateways (ESPresense, Theengs / OpenMQTTGateway) become native beacon events.

Unit tests call events.normalize with fixtures written from each format's documentation; one test runs
the edge against a real Mosquitto and publishes one message of each format.
"""

from __future__ import annotations

import json

import pytest

from conftest import EdgeHandle, wait_until
from edge import model as ev
from edge.config import ConfigError, parse_config
from edge.model import Event, Ignored, Rejected
from edge.wire.adapters import espresense, frames, subscriptions
from edge.wire.normalize import normalize

RECEIVED = 1_715_000_001.5
UUID = "e5ca1ade-f007-ba11-0000-000000000000"
IBEACON_KEY = f"ibeacon:{UUID}:100:1"
NAMESPACE, INSTANCE = "edd1ebeac04e5defa017", "0bdb87539b67"
EDDYSTONE_KEY = f"eddystone:{NAMESPACE}:{INSTANCE}"

# iBeacon advertising data as Theengs forwards it when it did not decode it, byte by byte:
RAW_IBEACON = (
    "4C00"  # company id 0x004C (Apple), little-endian
    "02"  # Apple type 0x02: iBeacon
    "15"  # 0x15 = 21 bytes follow
    "E2C56DB5DFFB48D2B060D0F5A71096E0"  # proximity UUID, 16 bytes
    "0102"  # major, big-endian: 0x0102 = 258
    "0A0B"  # minor, big-endian: 0x0A0B = 2571
    "C5"  # measured power at 1 m, signed: 0xC5 = -59 dBm
)
RAW_IBEACON_KEY = "ibeacon:e2c56db5-dffb-48d2-b060-d0f5a71096e0:258:2571"

# Eddystone-UID service data (service 0xFEAA), byte by byte:
RAW_EDDYSTONE = (
    "00"  # frame type 0x00: UID
    "EE"  # calibrated power at 0 m, signed: 0xEE = -18 dBm (so -59 dBm at 1 m)
    "EDD1EBEAC04E5DEFA017"  # namespace, 10 bytes
    "0BDB87539B67"  # instance, 6 bytes
)
RESERVED = "0000"  # two reserved bytes, which some beacons send and some gateways drop


@pytest.fixture
def cfg():
    return parse_config({
        "store": {"id": "s1", "timezone": "Europe/Rome"},
        "zones": [{"id": "entrance"}, {"id": "shoes"}],
        "gateways": [{"id": "gw1", "zone": "entrance"},
                     {"id": "shoes-back", "zone": "shoes", "format": "espresense"},
                     {"id": "omg-entrance", "zone": "entrance", "format": "theengs"}],
        "limits": {"max_payload_bytes": 2048},
    }, env={})


def run(cfg, topic: str, payload, qos: int = 0, received_at: float = RECEIVED, dup: bool = False) -> list[Event]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return normalize(topic, raw, received_at, cfg, qos, dup)


def one(cfg, topic: str, payload, **kw) -> Event:
    events = run(cfg, topic, payload, **kw)
    assert len(events) == 1
    return events[0]


def ignored(cfg, topic: str, payload, **kw) -> Ignored:
    with pytest.raises(Ignored) as info:
        run(cfg, topic, payload, **kw)
    return info.value


def rejected(cfg, topic: str, payload, **kw) -> Rejected:
    with pytest.raises(Rejected) as info:
        run(cfg, topic, payload, **kw)
    return info.value


# --- ESPresense ------------------------------------------------------------------------------------

ESP_TOPIC = "espresense/devices/{id}/shoes-back"


def esp(device_id: str, **overrides) -> dict:
    """An ESPresense report as a node publishes it (no timestamp)."""
    return {"id": device_id, "mac": "c1b2a3d4e5f6", "rssi@1m": -59, "rssi": -67.4, "raw": -66.0,
            "distance": 2.31, "var": 0.12, "int": 1020, "close": True, **overrides}


def esp_event(cfg, device_id: str, **overrides) -> Event:
    return one(cfg, ESP_TOPIC.format(id=device_id), esp(device_id, **overrides))


def test_espresense_ibeacon_becomes_a_beacon_event_in_the_rooms_zone(cfg):
    e = esp_event(cfg, f"iBeacon:{UUID}-100-1")
    assert (e.kind, e.source, e.zone, e.subject) == ("beacon", "shoes-back", "shoes", IBEACON_KEY)
    assert e.data == {"rssi": -67, "beacon_type": "ibeacon", "tx_power": -59, "distance": 2.31}
    assert e.ts == e.received_at == RECEIVED  # no timestamp on the wire: received is when it was seen
    assert e.known_device and e.event_id.startswith("h:")


@pytest.mark.parametrize("device_id", [f"iBeacon:{UUID}-100-1-59", f"iBeacon:{UUID}-100-1--59",
                                       f"iBeacon:{UUID.upper()}-100-1", f"ibeacon:{UUID.replace('-', '')}-100-1"])
def test_espresense_ibeacon_id_with_trailing_tx_or_other_spelling_is_the_same_beacon(cfg, device_id):
    assert esp_event(cfg, device_id).subject == IBEACON_KEY


def test_espresense_eddystone_id_including_the_firmwares_doubled_namespace_byte(cfg):
    assert esp_event(cfg, f"eddy:{NAMESPACE}-{INSTANCE}").subject == EDDYSTONE_KEY
    # ESPresense prints the namespace's fifth byte twice: eddy:edd1ebeac0 4e 4e 5defa017-...
    doubled = NAMESPACE[:10] + NAMESPACE[8:10] + NAMESPACE[10:]
    e = esp_event(cfg, f"eddy:{doubled}-{INSTANCE}")
    assert (e.subject, e.data["beacon_type"]) == (EDDYSTONE_KEY, "eddystone-uid")


def test_espresense_identities_resolved_by_the_node_are_subjects(cfg):
    irk = "0123456789ABCDEF0123456789ABCDEF"
    assert esp_event(cfg, f"irk:{irk}").subject == f"irk:{irk.lower()}"
    assert esp_event(cfg, "known:C1B2A3D4E5F6").subject == "known:c1b2a3d4e5f6"
    assert esp_event(cfg, "known:c1:b2:a3:d4:e5:f6").subject == "known:c1b2a3d4e5f6"
    e = esp_event(cfg, "name:staff-badge-7")
    assert (e.subject, e.data["beacon_type"]) == ("name:staff-badge-7", "name")


@pytest.mark.parametrize("device_id", ["apple:1007:11-12", "msft:cdp:0109", "md:0075:17", "sd:0xfe9f",
                                       "exp:20", "apple:findmy", "c1b2a3d4e5f6"])
def test_espresense_fingerprints_and_plain_macs_are_ignored_as_anonymous(cfg, device_id):
    assert ignored(cfg, ESP_TOPIC.format(id=device_id), esp(device_id)).reason == ev.ANONYMOUS_DEVICE


def test_espresense_altbeacon_is_an_unsupported_frame(cfg):
    device_id = f"altBeacon:{UUID}-1-2"
    assert ignored(cfg, ESP_TOPIC.format(id=device_id), esp(device_id)).reason == ev.UNSUPPORTED_FRAME


def test_espresense_optional_fields_may_be_missing(cfg):
    payload = {"id": f"iBeacon:{UUID}-100-1", "rssi": -70}
    assert one(cfg, ESP_TOPIC.format(id="x"), payload).data == {"rssi": -70, "beacon_type": "ibeacon"}


@pytest.mark.parametrize("payload, reason, detail", [
    ({"rssi": -60}, ev.MISSING_FIELD, "id: missing"),
    ({"id": 7, "rssi": -60}, ev.WRONG_TYPE, "id: expected a non-empty string"),
    ({"id": f"iBeacon:{UUID}-100-1", "rssi": "near"}, ev.WRONG_TYPE, "rssi: expected a number -130..20, got 'near'"),
    ({"id": f"iBeacon:{UUID}-100-1"}, ev.MISSING_FIELD, "rssi: missing"),
    ({"id": f"iBeacon:{UUID}-100-1", "rssi": True}, ev.WRONG_TYPE, "rssi: expected a number"),
    ({"id": f"iBeacon:{UUID}-100-1", "rssi": -60, "distance": "far"}, ev.WRONG_TYPE, "distance: expected"),
    ({"id": f"iBeacon:{UUID}-70000-1", "rssi": -60}, ev.INVALID_VALUE, "id: expected iBeacon:<uuid>"),
    ({"id": "iBeacon:not-a-uuid-1-2", "rssi": -60}, ev.INVALID_VALUE, "id: expected iBeacon:<uuid>"),
    ({"id": "eddy:abc-def", "rssi": -60}, ev.INVALID_VALUE, "id: expected eddy:"),
    ({"id": "irk:abcd", "rssi": -60}, ev.INVALID_VALUE, "id: expected irk:<32 hex digits>"),
    ({"id": "known:nope", "rssi": -60}, ev.INVALID_VALUE, "id: expected known:<MAC address>"),
])
def test_malformed_espresense_reports_are_rejected_with_a_specific_reason(cfg, payload, reason, detail):
    err = rejected(cfg, ESP_TOPIC.format(id="x"), payload)
    assert err.reason == reason and err.detail.startswith(detail), err.detail


def test_espresense_payload_that_is_not_json_is_rejected(cfg):
    assert rejected(cfg, ESP_TOPIC.format(id="x"), b"{oops").reason == ev.NOT_JSON


def test_espresense_room_not_in_config_is_an_unknown_gateway(cfg):
    err = rejected(cfg, f"espresense/devices/iBeacon:{UUID}-100-1/kitchen", esp(f"iBeacon:{UUID}-100-1"))
    assert err.reason == ev.UNKNOWN_GATEWAY
    assert "'kitchen'" in err.detail and 'format = "espresense"' in err.detail


def test_room_of_another_format_is_not_an_espresense_room(cfg):
    err = rejected(cfg, "espresense/devices/x/omg-entrance", esp(f"iBeacon:{UUID}-100-1"))
    assert err.reason == ev.UNKNOWN_GATEWAY


# --- event ids: no timestamp on the wire ------------------------------------------------------------

def test_qos0_identical_reports_are_two_sightings(cfg):
    payload = esp(f"iBeacon:{UUID}-100-1")
    a = one(cfg, ESP_TOPIC.format(id="x"), payload, qos=0)
    b = one(cfg, ESP_TOPIC.format(id="x"), payload, qos=0)
    assert a.event_id != b.event_id


def test_qos1_identical_reports_are_two_sightings_but_a_redelivery_is_one(cfg):
    payload = esp(f"iBeacon:{UUID}-100-1", rssi=-61.9)
    first = one(cfg, ESP_TOPIC.format(id="x"), payload, qos=1, received_at=100.0)
    again = one(cfg, ESP_TOPIC.format(id="x"), payload, qos=1, received_at=101.0)
    assert first.event_id != again.event_id  # the beacon did not move: still a new sighting
    redelivered = one(cfg, ESP_TOPIC.format(id="x"), payload, qos=1, received_at=130.0, dup=True)
    assert redelivered.event_id == again.event_id  # the broker's DUP resend of the latest receipt


def test_redelivery_of_a_message_this_process_never_saw_is_recorded(cfg):
    e = one(cfg, ESP_TOPIC.format(id="x"), esp(f"iBeacon:{UUID}-100-1", rssi=-62.25), qos=1, dup=True)
    assert e.subject == IBEACON_KEY


# --- Theengs Gateway / OpenMQTTGateway -------------------------------------------------------------

OMG_TOPIC = "home/omg-entrance/BTtoMQTT/6087574C9BC2"


def omg(**fields) -> dict:
    """A Theengs/OpenMQTTGateway report (no timestamp)."""
    return {"id": "60:87:57:4C:9B:C2", "mac_type": 1, "rssi": -78, **fields}


def test_theengs_decoded_ibeacon(cfg):
    # From OpenMQTTGateway's documentation of an iBeacon report.
    payload = omg(distance=7.85288, brand="GENERIC", model="iBeacon", model_id="IBEACON", mfid="4c00",
                  uuid="1de4b189115e45f6b44e509352269977", major=0, minor=0, txpower=-66)
    e = one(cfg, OMG_TOPIC, payload)
    assert (e.kind, e.source, e.zone) == ("beacon", "omg-entrance", "entrance")
    assert e.subject == "ibeacon:1de4b189-115e-45f6-b44e-509352269977:0:0"
    assert e.data == {"rssi": -78, "beacon_type": "ibeacon", "tx_power": -66, "distance": 7.85288}
    assert e.ts == e.received_at == RECEIVED


@pytest.mark.parametrize("hexdata", [RAW_IBEACON, RAW_IBEACON.lower(), "0x" + RAW_IBEACON,
                                     RAW_IBEACON + "00"])  # (a trailing byte some stacks add)
def test_theengs_undecoded_ibeacon_is_parsed_from_manufacturer_data(cfg, hexdata):
    e = one(cfg, OMG_TOPIC, omg(manufacturerdata=hexdata))
    assert e.subject == RAW_IBEACON_KEY
    assert e.data == {"rssi": -78, "beacon_type": "ibeacon", "tx_power": -59}


@pytest.mark.parametrize("hexdata", [RAW_EDDYSTONE, RAW_EDDYSTONE + RESERVED, RAW_EDDYSTONE.lower()])
@pytest.mark.parametrize("uuid", ["0xfeaa", "0xFEAA", "feaa", "0000feaa-0000-1000-8000-00805f9b34fb"])
def test_theengs_undecoded_eddystone_uid_is_parsed_from_service_data(cfg, hexdata, uuid):
    e = one(cfg, OMG_TOPIC, omg(servicedata=hexdata, servicedatauuid=uuid))
    assert e.subject == EDDYSTONE_KEY
    assert e.data == {"rssi": -78, "beacon_type": "eddystone-uid", "tx_power": -59}


def test_theengs_reported_txpower_wins_over_the_frames(cfg):
    assert one(cfg, OMG_TOPIC, omg(manufacturerdata=RAW_IBEACON, txpower=-60)).data["tx_power"] == -60


@pytest.mark.parametrize("payload", [
    omg(),  # a random address, nothing decodable
    omg(brand="Microsoft", model="CDP device", model_id="MS-CDP"),
    omg(brand="Apple", model="Apple continuity", model_id="APPLE_CONT", manufacturerdata="4c001006331d0a8c1b58"),
    omg(manufacturerdata="4c001005031c0e9a41"),  # Apple Continuity (type 0x10), not an iBeacon
    omg(manufacturerdata="060001092002c5e3"),  # Microsoft (0x0006) CDP beacon
    omg(servicedata="0201", servicedatauuid="0xfd6f"),  # exposure notification, not Eddystone
])
def test_theengs_frames_without_a_beacon_identity_are_ignored_as_anonymous(cfg, payload):
    assert ignored(cfg, OMG_TOPIC, payload).reason == ev.ANONYMOUS_DEVICE


@pytest.mark.parametrize("fields", [
    {"manufacturerdata": "4c000215zz"},  # not hex
    {"manufacturerdata": "4c0002150"},  # odd number of digits
    {"manufacturerdata": RAW_IBEACON[:30]},  # iBeacon cut short after a part of its UUID
    {"manufacturerdata": "4c"},  # no whole company id
    {"servicedata": RAW_EDDYSTONE[:20], "servicedatauuid": "0xfeaa"},  # UID cut inside the namespace
    {"servicedata": "", "servicedatauuid": "0xfeaa"},  # empty Eddystone
    {"servicedata": RAW_EDDYSTONE},  # without the service uuid it belongs to
])
def test_theengs_garbled_or_short_hex_is_ignored_as_undecodable(cfg, fields):
    assert ignored(cfg, OMG_TOPIC, omg(**fields)).reason == ev.UNDECODABLE_FRAME


@pytest.mark.parametrize("fields", [
    {"servicedata": "20000bb80a0000000e1000000a0b", "servicedatauuid": "0xfeaa"},  # Eddystone-TLM
    {"servicedata": "10ee03676f6f676c6507", "servicedatauuid": "0xfeaa"},  # Eddystone-URL
    {"manufacturerdata": "1801beac" + "00" * 22},  # AltBeacon
])
def test_theengs_beacon_formats_we_do_not_store_are_unsupported(cfg, fields):
    assert ignored(cfg, OMG_TOPIC, omg(**fields)).reason == ev.UNSUPPORTED_FRAME


def test_the_most_telling_reason_wins_when_both_fields_fail(cfg):
    payload = omg(manufacturerdata="4c001005031c0e9a41", servicedata="00ee12", servicedatauuid="0xfeaa")
    assert ignored(cfg, OMG_TOPIC, payload).reason == ev.UNDECODABLE_FRAME


@pytest.mark.parametrize("payload, reason, detail", [
    (omg(rssi="strong", manufacturerdata=RAW_IBEACON), ev.WRONG_TYPE, "rssi: expected a number"),
    (omg(manufacturerdata=12), ev.WRONG_TYPE, "manufacturerdata: expected a string"),
    (omg(model_id=5), ev.WRONG_TYPE, "model_id: expected a string"),
    (omg(model_id="IBEACON", uuid="1de4b189115e45f6b44e509352269977", major="1", minor=0), ev.WRONG_TYPE,
     "major: expected an integer 0..65535"),
    (omg(model_id="IBEACON", major=1, minor=0), ev.MISSING_FIELD, "uuid: missing"),
    (omg(model_id="IBEACON", uuid="xyz", major=1, minor=0), ev.INVALID_VALUE, "uuid: not a UUID"),
    ({"rssi": -70, "manufacturerdata": RAW_IBEACON}, ev.MISSING_FIELD, "id: missing"),
])
def test_malformed_theengs_reports_are_rejected(cfg, payload, reason, detail):
    err = rejected(cfg, OMG_TOPIC, payload)
    assert err.reason == reason and err.detail.startswith(detail), err.detail


def test_theengs_gateway_not_in_config_is_an_unknown_gateway(cfg):
    err = rejected(cfg, "home/OpenMQTTGateway/BTtoMQTT/608757AC9BC2", omg(manufacturerdata=RAW_IBEACON))
    assert err.reason == ev.UNKNOWN_GATEWAY and "'OpenMQTTGateway'" in err.detail


def test_oversized_foreign_payload_is_rejected_before_decoding(cfg):
    assert rejected(cfg, OMG_TOPIC, b"\xff" * 2049).reason == ev.OVERSIZED


# --- gateway status --------------------------------------------------------------------------------

@pytest.mark.parametrize("topic, payload, source, zone, state", [
    ("espresense/rooms/shoes-back/status", b"online", "shoes-back", "shoes", "online"),
    ("espresense/rooms/shoes-back/status", b"offline", "shoes-back", "shoes", "offline"),
    ("home/omg-entrance/LWT", b"offline", "omg-entrance", "entrance", "offline"),
    ("home/omg-entrance/LWT", b"Online\n", "omg-entrance", "entrance", "online"),
])
def test_gateway_status_topics_become_gateway_status_events(cfg, topic, payload, source, zone, state):
    e = one(cfg, topic, payload)
    assert (e.kind, e.source, e.zone, e.subject, e.data) == (ev.GATEWAY_STATUS, source, zone, None, {"state": state})
    assert e.ts == RECEIVED


@pytest.mark.parametrize("topic", ["espresense/rooms/kitchen/status", "home/OpenMQTTGateway/LWT",
                                   "home/shoes-back/LWT"])
def test_status_of_a_node_not_in_config_is_ignored(cfg, topic):
    assert ignored(cfg, topic, b"online").reason == ev.UNKNOWN_GATEWAY_STATUS


def test_status_payload_must_be_online_or_offline(cfg):
    err = rejected(cfg, "home/omg-entrance/LWT", b"rebooting")
    assert (err.reason, err.detail) == (ev.INVALID_VALUE, "payload: expected online or offline, got 'rebooting'")
    assert rejected(cfg, "home/omg-entrance/LWT", b"\xff").reason == ev.NOT_UTF8


@pytest.mark.parametrize("topic", ["espresense/rooms/shoes-back/telemetry", "home/omg-entrance/SYStoMQTT",
                                   "home/omg-entrance/BTtoMQTT", "espresense/devices/a/b/c", "zigbee2mqtt/x"])
def test_other_topics_are_unknown(cfg, topic):
    assert rejected(cfg, topic, b"{}").reason == ev.UNKNOWN_TOPIC


# --- parsers, on their own ------------------------------------------------------------------------

def test_manufacturer_data_parser():
    beacon = frames.decode_manufacturer_data(bytes.fromhex(RAW_IBEACON))
    assert beacon == frames.Beacon(RAW_IBEACON_KEY, "ibeacon", -59)
    with pytest.raises(Ignored) as info:
        frames.decode_manufacturer_data(bytes.fromhex(RAW_IBEACON)[:24])
    assert info.value.reason == ev.UNDECODABLE_FRAME and "24 of 25" in info.value.detail


def test_service_data_parser_and_uuid_forms():
    assert frames.decode_service_data("0xfeaa", bytes.fromhex(RAW_EDDYSTONE)) == \
        frames.Beacon(EDDYSTONE_KEY, "eddystone-uid", -59)
    assert [frames.service_uuid16(u) for u in ("0xFEAA", "feaa", "0000FEAA-0000-1000-8000-00805F9B34FB", "zz",
                                           "f7826da6-4fa2-4e98-8024-bc5b71e0893e")] == [0xFEAA] * 3 + [None] * 2


def test_hex_bytes_accepts_case_prefix_and_spaces_and_refuses_junk():
    assert frames.hex_bytes(" 0x4C00 0215 ") == frames.hex_bytes("4c000215") == b"\x4c\x00\x02\x15"
    for junk in ("4c0", "4g00", "x" * 2000):
        with pytest.raises(Ignored):
            frames.hex_bytes(junk)


def test_espresense_id_parser():
    assert espresense.espresense_beacon(f"iBeacon:{UUID}-100-1-59") == frames.Beacon(IBEACON_KEY, "ibeacon")
    with pytest.raises(Ignored):
        espresense.espresense_beacon("apple:1007:11-12")


def test_ignored_is_not_a_rejection():
    exc = Ignored(ev.ANONYMOUS_DEVICE)
    assert exc.reason == "anonymous_device" and exc.detail == "" and not isinstance(exc, Rejected)


# --- config: default topics, custom topic checks, subscriptions ---------------------------------

def gateways_config(*gateways: dict):
    return parse_config({"store": {"id": "s1"}, "zones": [{"id": "z"}], "gateways": list(gateways)}, env={})


def test_foreign_gateways_get_default_topics_and_the_edge_subscribes_to_them_and_their_status():
    cfg = gateways_config({"id": "gw1", "zone": "z"},
                          {"id": "shoes-back", "zone": "z", "format": "espresense"},
                          {"id": "omg", "zone": "z", "format": "theengs"})
    assert [g.topic for g in cfg.gateways] == [None, "espresense/devices/+/shoes-back", "home/omg/BTtoMQTT/+"]
    assert subscriptions(cfg) == ["espresense/devices/+/shoes-back", "espresense/rooms/shoes-back/status",
                                     "home/omg/BTtoMQTT/+", "home/omg/LWT"]


def test_shared_custom_filters_are_subscribed_once():
    cfg = gateways_config({"id": "a", "zone": "z", "format": "espresense", "topic": "espresense/devices/+/+"},
                          {"id": "b", "zone": "z", "format": "espresense", "topic": "espresense/devices/+/+"},
                          {"id": "c", "zone": "z", "format": "espresense", "topic": "espresense/devices/#"},
                          {"id": "d", "zone": "z", "format": "theengs", "topic": "home/+/BTtoMQTT/#"})
    assert subscriptions(cfg) == ["espresense/devices/+/+", "espresense/rooms/a/status",
                                     "espresense/rooms/b/status", "espresense/devices/#",
                                     "espresense/rooms/c/status", "home/+/BTtoMQTT/#", "home/d/LWT"]


@pytest.mark.parametrize("gateway, message", [
    ({"format": "espresense", "topic": "espresense/devices/+/hall"}, "does not route to this gateway"),
    ({"format": "espresense", "topic": "esp/devices/+/room1"}, "does not route to this gateway"),
    ({"format": "espresense", "topic": "espresense/#/room1"}, "has '#' before the last level"),
    ({"format": "espresense", "topic": "espresense/devices/x+/room1"}, "mixes a wildcard with text"),
    ({"format": "theengs", "topic": "home/#"}, "does not route to this gateway"),
    ({"format": "theengs", "topic": "home/other/BTtoMQTT/+"}, "does not route to this gateway"),
    ({"format": "theengs", "topic": "home//BTtoMQTT/+"}, "has an empty level"),
])
def test_custom_topic_that_cannot_reach_the_gateway_is_a_config_error(gateway, message):
    with pytest.raises(ConfigError) as info:
        gateways_config({"id": "room1", "zone": "z", **gateway})
    [issue] = info.value.issues
    assert issue.path == "gateways[0] (id 'room1').topic"
    assert message in issue.message and "or leave topic out" in issue.message


def test_custom_topics_that_route_are_accepted():
    cfg = gateways_config({"id": "room1", "zone": "z", "format": "espresense",
                           "topic": "espresense/devices/iBeacon:x-1-2/room1"},
                          {"id": "gwx", "zone": "z", "format": "theengs", "topic": "home/gwx/BTtoMQTT/AABBCCDDEEFF"})
    assert [g.topic for g in cfg.gateways] == ["espresense/devices/iBeacon:x-1-2/room1",
                                               "home/gwx/BTtoMQTT/AABBCCDDEEFF"]


# --- end to end, against a real broker ------------------------------------------------------------

@pytest.fixture
def edge(make_config):
    """The edge with one ESPresense room and one OpenMQTTGateway besides the native gateways."""
    handle = EdgeHandle(make_config(gateways=[
        {"id": "gw-entrance", "zone": "entrance"}, {"id": "gw-shoes", "zone": "shoes"},
        {"id": "shoes-back", "zone": "shoes", "format": "espresense"},
        {"id": "omg-entrance", "zone": "entrance", "format": "theengs"},
    ]))
    yield handle
    handle.stop()


def test_espresense_and_theengs_messages_are_recorded_as_beacon_events(edge, mqtt_client):
    pub = mqtt_client()
    device_id = f"iBeacon:{UUID}-100-1"
    pub.publish(f"espresense/devices/{device_id}/shoes-back", json.dumps(esp(device_id)), qos=0)
    pub.publish("home/omg-entrance/BTtoMQTT/C1B2A3D4E5F6", json.dumps(omg(manufacturerdata=RAW_IBEACON)), qos=0)

    beacons = wait_until(lambda: len(edge.events("beacon")) >= 2 and edge.events("beacon"),
                         what="both foreign sightings recorded")
    assert {(e["source"], e["zone"], e["subject"]) for e in beacons} == {
        ("shoes-back", "shoes", IBEACON_KEY), ("omg-entrance", "entrance", RAW_IBEACON_KEY)}
    assert len(edge.events("zone_enter")) == 2


def test_gateway_health_follows_status_topics_and_sightings(make_config, mqtt_client):
    """Store IT sees an ESPresense room that went offline, and when each gateway last heard anything."""
    from conftest import EdgeHandle, now_ms, sighting, wait_until

    cfg = make_config(gateways=[{"id": "gw-entrance", "zone": "entrance"},
                                {"id": "shoes-room", "zone": "shoes", "format": "espresense"}])
    handle = EdgeHandle(cfg)
    try:
        pub = mqtt_client()
        pub.publish("instore/teststore/beacon/gw-entrance", sighting(now_ms()))
        pub.publish("espresense/rooms/shoes-room/status", b"offline")
        gws = wait_until(lambda: (g := {x["id"]: x for x in handle.get("/api/v1/gateways").json()["gateways"]})
                         and g["shoes-room"]["state"] == "offline" and g, what="gateway health")
        assert gws["gw-entrance"]["silent_s"] is not None and gws["shoes-room"]["silent_s"] is None
        ready = handle.get("/readyz", token=None).json()["checks"]["gateways"]
        assert ready["offline"] == ["shoes-room"]
        assert handle.get("/api/v1/gateways", token=None).status_code == 401
    finally:
        handle.stop()
