"""Unit tests for edge.wire: every wire format in, one Event shape out, every rejection explained."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from edge import model as ev
from edge.config import parse_config
from edge.model import Event, Rejected
from edge.quarantine import message_sha1
from edge.wire.adapters.native import subject_key
from edge.wire.fields import parse_ts
from edge.wire.normalize import normalize

P = "instore/s1"
TS_MS = 1_715_000_000_123  # 2024-05-06T12:53:20.123Z
UUID = "F7826DA6-4FA2-4E98-8024-BC5B71E0893E"
IBEACON = {"type": "ibeacon", "uuid": UUID, "major": 1, "minor": 2}


@pytest.fixture
def cfg():
    return parse_config({
        "store": {"id": "s1", "timezone": "Europe/Rome"},
        "zones": [{"id": "entrance"}, {"id": "shoes"}],
        "gateways": [{"id": "gw1", "zone": "entrance"}, {"id": "gw2", "zone": "shoes"}],
        "kiosks": [{"id": "k1", "zone": "shoes"}],
        "screens": [{"id": "win1", "zone": "entrance", "playlist": ["welcome"]}],
        "limits": {"max_payload_bytes": 2048},
    }, env={})


def run(cfg, topic: str, payload, qos: int = 1, received_at: float = 1_715_000_001.0) -> list[Event]:
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return normalize(f"{P}/{topic}", raw, received_at, cfg, qos)


def one(cfg, topic: str, payload, **kw) -> Event:
    events = run(cfg, topic, payload, **kw)
    assert len(events) == 1
    return events[0]


def rejected(cfg, topic: str, payload, **kw) -> Rejected:
    with pytest.raises(Rejected) as info:
        run(cfg, topic, payload, **kw)
    return info.value


def sighting(**overrides):
    return {"ts": TS_MS, "beacon": dict(IBEACON), "rssi": -60, **overrides}


# --- accepted payloads -----------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    sighting(), sighting(tx_power=-59), sighting(id="m-7"), sighting(id=12), sighting(ts="2024-05-06T14:53:20"),
    sighting(ts=TS_MS + 0.5), sighting(beacon={"type": "eddystone-uid", "namespace": "AB" * 10, "instance": "cd" * 6}),
    sighting(beacon={"type": "device", "id": "app-7"}, tx_power=None),
    {"sightings": [sighting(), sighting(rssi=-70, id="own"), sighting(beacon={"type": "device", "id": "x"})]},
    {"id": "batch-1", "sightings": [sighting(), sighting(rssi=-70)]}, {"ts": TS_MS, "sightings": [sighting()]},
])
@pytest.mark.parametrize("qos", [1, 2])
def test_valid_native_sightings_take_the_one_pass_reader_and_read_as_the_careful_one_does(cfg, payload, qos):
    from edge.wire.adapters import native
    from edge.wire.fields import decode_json
    from edge.wire.inbound import Inbound, site_of

    raw = json.dumps(payload).encode()
    site = site_of(cfg)
    fast = native.fast_sightings(f"{P}/beacon/gw1", raw, "gw1", 1_715_000_001.0, qos, site, "entrance")
    careful = native.sightings(Inbound(f"{P}/beacon/gw1", raw, "gw1", 1_715_000_001.0, qos, site, decode_json(raw)),
                               "entrance")
    assert fast is not None and fast == careful
    assert run(cfg, "beacon/gw1", payload, qos=qos) == careful
    # as the writer calls it, with the message's sha1 at hand: the same events, the same ids
    sha1 = message_sha1(f"{P}/beacon/gw1", raw)
    assert native.fast_sightings(f"{P}/beacon/gw1", raw, "gw1", 1_715_000_001.0, qos, site, "entrance", sha1) == careful


def test_ibeacon_sighting_becomes_beacon_event_in_gateway_zone(cfg):
    e = one(cfg, "beacon/gw1", sighting(tx_power=-59))
    assert (e.kind, e.source, e.zone, e.type, e.customer) == ("beacon", "gw1", "entrance", None, None)
    assert e.subject == "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:2"
    assert e.data == {"rssi": -60, "tx_power": -59, "beacon_type": "ibeacon"}
    assert e.ts == pytest.approx(1_715_000_000.123)
    assert e.received_at == 1_715_000_001.0
    assert e.known_device is True
    assert e.event_id.startswith("h:")
    assert e.name == "beacon"


def test_tx_power_is_optional(cfg):
    assert one(cfg, "beacon/gw1", sighting()).data == {"rssi": -60, "beacon_type": "ibeacon"}


def test_eddystone_and_device_beacons_get_canonical_subject_keys(cfg):
    eddy = {"type": "eddystone-uid", "namespace": "EDD1EBEAC04E5DEFA017", "instance": "0BDB87539B67"}
    assert one(cfg, "beacon/gw2", sighting(beacon=eddy)).subject == "eddystone:edd1ebeac04e5defa017:0bdb87539b67"
    e = one(cfg, "beacon/gw2", sighting(beacon={"type": "device", "id": "irk:abc"}))
    assert (e.subject, e.zone, e.data["beacon_type"]) == ("device:irk:abc", "shoes", "device")


def test_subject_key_canonicalizes_uuid_with_or_without_hyphens():
    plain = {"type": "ibeacon", "uuid": UUID.replace("-", "").lower(), "major": 1, "minor": 2}
    assert subject_key(plain) == subject_key(IBEACON) == "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:2"


def test_batched_sightings_give_one_event_each_with_indexed_ids(cfg):
    other = {"type": "device", "id": "phone-7"}
    events = run(cfg, "beacon/gw1", {"sightings": [sighting(), sighting(beacon=other, rssi=-80)]})
    assert [e.subject for e in events] == ["ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:2", "device:phone-7"]
    assert [e.data["rssi"] for e in events] == [-60, -80]
    base = events[0].event_id.removesuffix(":0")
    assert events[1].event_id == f"{base}:1" and base.startswith("h:")


def test_batch_with_message_id_indexes_it(cfg):
    events = run(cfg, "beacon/gw1", {"id": "b7", "sightings": [sighting(), sighting()]})
    assert [e.event_id for e in events] == ["beacon:gw1:b7:0", "beacon:gw1:b7:1"]


def test_qr_scan(cfg):
    e = one(cfg, "qr/scan1", {"id": 42, "ts": TS_MS, "code": "https://x/q/abc"})
    assert (e.kind, e.source, e.zone, e.known_device) == ("qr", "scan1", None, True)
    assert e.data == {"code": "https://x/q/abc"}
    assert e.event_id == "qr:scan1:42"


def test_window_event_has_session_subject_and_type(cfg):
    e = one(cfg, "window/w9", {"ts": TS_MS, "type": "select", "session": "abc", "item": "sku-1"})
    assert (e.kind, e.type, e.subject, e.zone, e.known_device) == ("window", "select", "session:abc", None, True)
    assert e.data == {"session": "abc", "item": "sku-1"}
    assert e.name == "window.select"


def test_window_that_is_a_configured_screen_gets_its_zone(cfg):
    assert one(cfg, "window/win1", {"ts": TS_MS, "type": "touch", "session": "s"}).zone == "entrance"


def test_kiosk_identify_with_customer(cfg):
    e = one(cfg, "kiosk/k1/event", {"id": "m1", "ts": TS_MS, "type": "identify", "customer": "c-17"})
    assert (e.kind, e.type, e.customer, e.zone, e.known_device) == ("kiosk", "identify", "c-17", "shoes", True)
    assert e.subject is None and e.data == {}
    assert e.event_id == "kiosk:k1:m1"


def test_kiosk_identify_with_identity_key_and_session(cfg):
    e = one(cfg, "kiosk/k1/event", {"ts": TS_MS, "type": "identify", "identity": "loyalty:123", "session": "s1"})
    assert e.customer is None
    assert e.subject == "session:s1"
    assert e.data == {"identity": "loyalty:123", "session": "s1"}


def test_kiosk_other_types_carry_session_item_and_extra_fields(cfg):
    e = one(cfg, "kiosk/k1/event", {"ts": TS_MS, "type": "add_to_cart", "session": "s1", "item": "sku-9",
                                    "qty": 2, "size": "42"})
    assert (e.type, e.subject) == ("add_to_cart", "session:s1")
    assert e.data == {"session": "s1", "item": "sku-9", "qty": 2, "size": "42"}


def test_kiosk_consent_keeps_its_small_object(cfg):
    e = one(cfg, "kiosk/k1/event", {"ts": TS_MS, "type": "consent", "session": "s1", "customer": "c-1",
                                    "consent": {"personalization": True, "marketing": False}})
    assert e.customer == "c-1"
    assert e.data["consent"] == {"personalization": True, "marketing": False}


def test_unknown_kiosk_is_accepted_with_known_device_false(cfg):
    e = one(cfg, "kiosk/k-new/event", {"ts": TS_MS, "type": "browse", "session": "s1"})
    assert (e.source, e.zone, e.known_device) == ("k-new", None, False)


def test_pos_sale(cfg):
    e = one(cfg, "pos/till2", {"id": "r-1001", "ts": TS_MS, "customer": "c-1", "items": ["sku-1", {"sku": "x"}],
                              "total": 89.9})
    assert (e.kind, e.source, e.customer, e.zone, e.known_device) == ("pos", "till2", "c-1", None, True)
    assert e.data == {"items": ["sku-1", {"sku": "x"}], "total": 89.9}
    assert e.event_id == "pos:till2:r-1001"


# --- own topics and unknown topics -----------------------------------------------------------------

@pytest.mark.parametrize("topic", ["display/scr1/content", "edge/status", "deadletter", "staff/alerts/x", "display"])
def test_own_output_topics_are_ignored(cfg, topic):
    assert normalize(f"{P}/{topic}", b"not even json", 0.0, cfg) == []


@pytest.mark.parametrize("topic", [f"{P}/beacon", f"{P}/kiosk/k1", f"{P}/kiosk/k1/status", f"{P}/qr/a/b",
                                   f"{P}/thermostat/t1", f"{P}/deadletter/x", "instore/other/beacon/gw1",
                                   "espresense/devices/x", "home/gw/SYStoMQTT", f"{P}/window/bad id", f"{P}/qr/"])
def test_unknown_or_malformed_topics_are_rejected(cfg, topic):
    with pytest.raises(Rejected) as info:
        normalize(topic, json.dumps(sighting()).encode(), 0.0, cfg)
    assert info.value.reason == ev.UNKNOWN_TOPIC


def test_gateway_not_in_config_is_rejected(cfg):
    err = rejected(cfg, "beacon/gw-x", sighting())
    assert err.reason == ev.UNKNOWN_GATEWAY
    assert "'gw-x'" in err.detail and "[[gateways]]" in err.detail


def test_foreign_gateway_topic_of_an_unconfigured_room_is_an_unknown_gateway(cfg):
    # (edge.wire.adapters normalize the foreign formats; tests/test_gateways.py covers them)
    with pytest.raises(Rejected) as info:
        normalize("espresense/devices/x/y", json.dumps(sighting()).encode(), 0.0, cfg)
    assert info.value.reason == ev.UNKNOWN_GATEWAY and "'y'" in info.value.detail


# --- rejections, one per reason, each with a specific detail --------------------------------------

def test_oversized_payload_is_rejected_before_decoding(cfg):
    err = rejected(cfg, "qr/scan1", b"\xff" * 2049)  # invalid UTF-8 too: size must win
    assert err.reason == ev.OVERSIZED
    assert "2049 bytes" in err.detail and "2048" in err.detail


def test_not_utf8(cfg):
    err = rejected(cfg, "qr/scan1", b'{"code": "\xff"}')
    assert (err.reason, err.detail) == (ev.NOT_UTF8, "payload: not UTF-8 (invalid byte at offset 10)")


@pytest.mark.parametrize("raw", [b"", b"{nope", b'{"ts": NaN}', b'{"ts": 1e999}', b'{"a": "b"} x'],
                         ids=["empty", "broken", "nan", "infinity", "trailing"])
def test_not_json(cfg, raw):
    err = rejected(cfg, "qr/scan1", raw)
    assert err.reason == ev.NOT_JSON
    assert err.detail.startswith("payload: not JSON")


def test_deeply_nested_json_is_not_json_rather_than_a_crash():
    roomy = parse_config({"store": {"id": "s1"}}, env={})  # default 64 KiB limit
    for depth in (30000, 900, 33):  # the same verdict whether or not this thread's stack could parse it
        with pytest.raises(Rejected) as info:
            normalize(f"{P}/qr/s", b'{"code": ' + b"[" * depth + b"]" * depth + b"}", 0.0, roomy)
        assert (info.value.reason, info.value.detail) == (ev.NOT_JSON, "payload: JSON nested deeper than 32 levels")


def test_utf8_byte_order_mark_is_tolerated(cfg):
    assert one(cfg, "qr/s", b'\xef\xbb\xbf{"ts": 1715000000123, "code": "c"}').data == {"code": "c"}


def test_json_that_is_not_an_object(cfg):
    err = rejected(cfg, "qr/scan1", b"[1, 2]")
    assert (err.reason, err.detail) == (ev.NOT_OBJECT, "payload: expected a JSON object, got a list")


def test_missing_field_names_the_field_and_what_is_expected(cfg):
    payload = sighting()
    del payload["rssi"]
    err = rejected(cfg, "beacon/gw1", payload)
    assert (err.reason, err.detail) == (ev.MISSING_FIELD, "rssi: missing; expected an integer -130..20")


def test_wrong_type_quotes_the_offending_value(cfg):
    err = rejected(cfg, "beacon/gw1", sighting(rssi="strong"))
    assert (err.reason, err.detail) == (ev.WRONG_TYPE, "rssi: expected an integer -130..20, got 'strong'")


@pytest.mark.parametrize("field", ["rssi", "tx_power"])
def test_bool_is_refused_where_an_int_is_expected(cfg, field):
    err = rejected(cfg, "beacon/gw1", sighting(**{field: True}))
    assert err.reason == ev.WRONG_TYPE
    assert err.detail.endswith("got true")


def test_bool_major_is_refused(cfg):
    err = rejected(cfg, "beacon/gw1", sighting(beacon={**IBEACON, "major": False}))
    assert (err.reason, err.detail) == (ev.WRONG_TYPE, "beacon.major: expected an integer 0..65535, got false")


def test_float_rssi_is_a_wrong_type(cfg):
    assert rejected(cfg, "beacon/gw1", sighting(rssi=-60.5)).reason == ev.WRONG_TYPE


def test_out_of_range_rssi_is_an_invalid_value(cfg):
    err = rejected(cfg, "beacon/gw1", sighting(rssi=500))
    assert (err.reason, err.detail) == (ev.INVALID_VALUE, "rssi: expected an integer -130..20, got 500")


@pytest.mark.parametrize("beacon, detail", [
    ({**IBEACON, "uuid": "not-a-uuid"}, "beacon.uuid: not a UUID"),
    ({**IBEACON, "minor": 70000}, "beacon.minor: expected an integer 0..65535, got 70000"),
    ({"type": "eddystone-uid", "namespace": "abc", "instance": "0BDB87539B67"}, "beacon.namespace: expected 20 hex"),
    ({"type": "eddystone-uid", "namespace": "a" * 20, "instance": "xyz"}, "beacon.instance: expected 12 hex"),
    ({"type": "altbeacon"}, "beacon.type: expected one of 'ibeacon', 'eddystone-uid', 'device', got 'altbeacon'"),
])
def test_invalid_beacon_values(cfg, beacon, detail):
    err = rejected(cfg, "beacon/gw1", sighting(beacon=beacon))
    assert err.reason == ev.INVALID_VALUE
    assert err.detail.startswith(detail)


def test_beacon_without_type_is_missing_field(cfg):
    err = rejected(cfg, "beacon/gw1", sighting(beacon={"uuid": UUID}))
    assert err.reason == ev.MISSING_FIELD and err.detail.startswith("beacon.type: missing")


def test_one_bad_sighting_rejects_the_batch_and_names_its_index(cfg):
    bad = sighting(beacon={**IBEACON, "uuid": "zzz"})
    err = rejected(cfg, "beacon/gw1", {"sightings": [sighting(), sighting(), sighting(), bad]})
    assert err.reason == ev.INVALID_VALUE
    assert err.detail.startswith("sightings[3].beacon.uuid: not a UUID")


def test_empty_sightings_list_is_invalid(cfg):
    err = rejected(cfg, "beacon/gw1", {"sightings": []})
    assert err.reason == ev.INVALID_VALUE and err.detail.startswith("sightings: empty")


def test_sightings_must_be_a_list_of_objects(cfg):
    assert rejected(cfg, "beacon/gw1", {"sightings": {"a": 1}}).reason == ev.WRONG_TYPE
    err = rejected(cfg, "beacon/gw1", {"sightings": [sighting(), 7]})
    assert (err.reason, err.detail) == (ev.WRONG_TYPE, "sightings[1]: expected a sighting object, got 7")


def test_unknown_window_type_is_invalid(cfg):
    err = rejected(cfg, "window/w1", {"ts": TS_MS, "type": "wave", "session": "s"})
    assert err.reason == ev.INVALID_VALUE and err.detail.startswith("type: expected one of 'touch'")


def test_window_needs_a_session(cfg):
    err = rejected(cfg, "window/w1", {"ts": TS_MS, "type": "touch"})
    assert err.reason == ev.MISSING_FIELD and err.detail.startswith("session: missing")


def test_required_null_is_a_wrong_type_but_optional_null_is_absent(cfg):
    err = rejected(cfg, "window/w1", {"ts": TS_MS, "type": "touch", "session": None})
    assert (err.reason, err.detail.endswith("got null")) == (ev.WRONG_TYPE, True)
    assert "item" not in one(cfg, "window/w1", {"ts": TS_MS, "type": "touch", "session": "s", "item": None}).data


def test_kiosk_identify_needs_customer_or_identity(cfg):
    err = rejected(cfg, "kiosk/k1/event", {"ts": TS_MS, "type": "identify", "session": "s"})
    assert err.reason == ev.MISSING_FIELD and err.detail.startswith("customer or identity")


def test_kiosk_non_identify_needs_session(cfg):
    err = rejected(cfg, "kiosk/k1/event", {"ts": TS_MS, "type": "browse", "item": "sku"})
    assert err.reason == ev.MISSING_FIELD and err.detail.startswith("session: missing")


def test_kiosk_type_must_be_identifier_like(cfg):
    err = rejected(cfg, "kiosk/k1/event", {"ts": TS_MS, "type": "drop table", "session": "s"})
    assert err.reason == ev.INVALID_VALUE and err.detail.startswith("type: expected a short identifier")


def test_kiosk_extra_fields_must_be_small_and_flat(cfg):
    err = rejected(cfg, "kiosk/k1/event", {"ts": TS_MS, "type": "browse", "session": "s", "x": {"deep": {"a": 1}}})
    assert (err.reason, err.detail) == (ev.WRONG_TYPE, "x.deep: expected a string, number, boolean or null, "
                                                       "got an object")


def test_consent_values_must_be_booleans(cfg):
    err = rejected(cfg, "kiosk/k1/event", {"ts": TS_MS, "type": "consent", "session": "s",
                                           "consent": {"marketing": "yes"}})
    assert (err.reason, err.detail) == (ev.WRONG_TYPE, "consent.marketing: expected true or false, got 'yes'")


def test_pos_needs_its_receipt_id(cfg):
    err = rejected(cfg, "pos/till1", {"ts": TS_MS, "items": [], "total": 0})
    assert err.reason == ev.MISSING_FIELD and err.detail.startswith("id: missing")


def test_pos_total_must_be_a_number(cfg):
    err = rejected(cfg, "pos/till1", {"id": 1, "ts": TS_MS, "items": [], "total": "12.50"})
    assert (err.reason, err.detail) == (ev.WRONG_TYPE, "total: expected a number, got '12.50'")
    assert rejected(cfg, "pos/till1", {"id": 1, "ts": TS_MS, "items": [], "total": True}).reason == ev.WRONG_TYPE


def test_message_id_must_be_string_or_int(cfg):
    err = rejected(cfg, "qr/s", {"id": 1.5, "ts": TS_MS, "code": "c"})
    assert err.reason == ev.WRONG_TYPE and err.detail.startswith("id: expected a string")


def test_qr_code_must_be_a_string(cfg):
    err = rejected(cfg, "qr/s", {"ts": TS_MS, "code": 123})
    assert err.reason == ev.WRONG_TYPE and err.detail.startswith("code: expected a non-empty string")


def test_details_quote_at_most_40_characters_of_a_value(cfg):
    secret = "jane.doe@example.com " * 10
    err = rejected(cfg, "beacon/gw1", sighting(rssi=secret))
    assert secret not in err.detail
    assert "'" + secret[:40] + "…'" in err.detail


def test_overlong_strings_are_reported_by_length_not_content(cfg):
    err = rejected(cfg, "window/w1", {"ts": TS_MS, "type": "touch", "session": "x" * 500})
    assert err.reason == ev.INVALID_VALUE and err.detail.endswith("got 500 characters")


# --- timestamps ------------------------------------------------------------------------------------

def test_ts_is_required(cfg):
    err = rejected(cfg, "qr/s", {"code": "c"})
    assert (err.reason, err.detail) == (ev.MISSING_FIELD, "ts: missing; expected epoch milliseconds or an "
                                                         "ISO 8601 time")


def test_iso_ts_with_z_is_utc(cfg):
    e = one(cfg, "qr/s", {"ts": "2024-05-06T12:00:00Z", "code": "c"})
    assert e.ts == datetime(2024, 5, 6, 12, tzinfo=timezone.utc).timestamp()


def test_naive_iso_ts_is_in_store_timezone(cfg):
    e = one(cfg, "qr/s", {"ts": "2024-05-06T12:00:00", "code": "c"})
    assert e.ts == datetime(2024, 5, 6, 10, tzinfo=timezone.utc).timestamp()  # Rome is UTC+2 in May


@pytest.mark.parametrize("value, reason", [
    (-5, ev.INVALID_VALUE), (10**16, ev.INVALID_VALUE), ("1999-12-31T23:00:00Z", ev.INVALID_VALUE),
    ("yesterday", ev.INVALID_VALUE), (True, ev.WRONG_TYPE), ([1], ev.WRONG_TYPE),
])
def test_bad_ts_is_rejected(cfg, value, reason):
    err = rejected(cfg, "qr/s", {"ts": value, "code": "c"})
    assert err.reason == reason and err.detail.startswith("ts: ")


def test_ts_in_seconds_gets_a_hint(cfg):
    err = rejected(cfg, "qr/s", {"ts": 1_715_000_000, "code": "c"})
    assert err.reason == ev.INVALID_VALUE and "looks like seconds" in err.detail


def test_parse_ts_helper():
    assert parse_ts(TS_MS) == pytest.approx(1_715_000_000.123)
    assert parse_ts("2024-01-15T09:00:00", ZoneInfo("America/New_York")) == \
        datetime(2024, 1, 15, 14, tzinfo=timezone.utc).timestamp()
    assert parse_ts("2024-01-15T09:00:00", "Europe/Rome") == datetime(2024, 1, 15, 8, tzinfo=timezone.utc).timestamp()
    with pytest.raises(Rejected):
        parse_ts(None)


# --- event ids (dedupe key) ------------------------------------------------------------------------

def test_redelivery_gets_the_same_event_id(cfg):
    first = one(cfg, "beacon/gw1", sighting(), received_at=100.0)
    again = one(cfg, "beacon/gw1", sighting(), received_at=105.0)
    assert first.event_id == again.event_id


def test_sightings_at_different_ts_get_different_ids(cfg):
    assert one(cfg, "beacon/gw1", sighting()).event_id != one(cfg, "beacon/gw1", sighting(ts=TS_MS + 1000)).event_id


def test_same_payload_from_another_gateway_gets_another_id(cfg):
    assert one(cfg, "beacon/gw1", sighting()).event_id != one(cfg, "beacon/gw2", sighting()).event_id


def test_qos0_identical_payloads_are_distinct_events(cfg):
    a = one(cfg, "beacon/gw1", sighting(), qos=0, received_at=100.0)
    b = one(cfg, "beacon/gw1", sighting(), qos=0, received_at=100.0)
    assert a.event_id != b.event_id


def test_qos0_with_device_id_still_dedupes_on_it(cfg):
    a = one(cfg, "qr/s", {"id": "x1", "ts": TS_MS, "code": "c"}, qos=0)
    b = one(cfg, "qr/s", {"id": "x1", "ts": TS_MS, "code": "c"}, qos=0)
    assert a.event_id == b.event_id == "qr:s:x1"


def test_kinds_are_exported():
    assert ev.EVENT_KINDS == ("beacon", "qr", "window", "kiosk", "pos")


# --- text and numbers the store cannot hold --------------------------------------------------------

@pytest.mark.parametrize("topic, payload, where", [
    ("qr/s", b'{"id": "x\\ud800", "ts": %d, "code": "x"}' % TS_MS, "id"),
    ("window/w1", b'{"ts": %d, "type": "touch", "session": "s", "item": "\\uDC00"}' % TS_MS, "item"),
    ("kiosk/k1/event", b'{"ts": %d, "type": "browse", "session": "s", "extra": {"\\ud83d": 1}}' % TS_MS,
     "extra.\\ud83d"),
    ("pos/till1", b'{"id": 1, "ts": %d, "items": [{"sku": "a", "opts": ["\\udbff"]}], "total": 1}' % TS_MS,
     "items[0].opts[0]"),
    ("beacon/gw1", b'{"sightings": [{"ts": %d, "beacon": {"type": "device", "id": "\\ud800"}, "rssi": -1}]}' % TS_MS,
     "sightings[0].beacon.id"),
])
def test_a_lone_surrogate_anywhere_is_an_invalid_value_naming_where(cfg, topic, payload, where):
    err = rejected(cfg, topic, payload)
    assert err.reason == ev.INVALID_VALUE
    assert err.detail.startswith(f"{where}: a lone surrogate")
    err.detail.encode("utf-8")  # the detail itself is storable


def test_a_surrogate_pair_is_text(cfg):
    e = one(cfg, "qr/s", b'{"ts": %d, "code": "\\ud83d\\ude00 \\\\ud800"}' % TS_MS)
    assert e.data["code"] == "\U0001F600 \\ud800"


def test_numbers_past_what_the_store_holds_are_invalid_values(cfg):
    err = rejected(cfg, "qr/s", {"id": 2**63, "ts": TS_MS, "code": "c"})
    assert err.reason == ev.INVALID_VALUE and "19 digits" in err.detail
    for total in (10**400, -(10**13), 1e300):
        err = rejected(cfg, "pos/till1", {"id": 1, "ts": TS_MS, "items": [], "total": total})
        assert err.reason == ev.INVALID_VALUE and err.detail.startswith("total: expected a number between")
    assert rejected(cfg, "qr/s", {"ts": 10**400, "code": "c"}).reason == ev.INVALID_VALUE


def test_pos_items_are_bounded_in_length_and_depth(cfg):
    deep = json.loads('{"a": ' + "[" * 20 + "]" * 20 + "}")
    err = rejected(cfg, "pos/till1", {"id": 1, "ts": TS_MS, "items": ["ok", deep], "total": 1})
    assert (err.reason, err.detail) == (ev.INVALID_VALUE, "items[1]: nested deeper than 8 levels")
    err = rejected(cfg, "pos/till1", {"id": 1, "ts": TS_MS, "items": ["s" * 200], "total": 1})
    assert err.reason == ev.INVALID_VALUE and err.detail.startswith("items[0]: expected a SKU")
