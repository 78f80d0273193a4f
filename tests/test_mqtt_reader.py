"""The bulk MQTT reader: every PUBLISH arrives once, whole and in order, however the stream is cut into reads."""

from __future__ import annotations

import socket

import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge.wire.mqtt_reader import BULK_READ, BulkReadClient

pytestmark = pytest.mark.skipif(not BULK_READ, reason="this paho's internals differ: the edge uses plain paho")


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 127, n >> 7
        out.append(byte | (128 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: str, payload: bytes, qos: int, mid: int, v5: bool, dup: bool = False,
                   props: bytes = b"") -> bytes:
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + (mid.to_bytes(2, "big") if qos else b"")
    if v5:
        body += _length(len(props)) + props
    body += payload
    return bytes([0x30 | qos << 1 | (8 if dup else 0)]) + _length(len(body)) + body


def _client(v5: bool) -> tuple[BulkReadClient, list, list]:
    c = BulkReadClient(CallbackAPIVersion.VERSION2, client_id="reader-test", manual_ack=True,
                       protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311)
    fast: list = []
    slow: list = []
    c.on_publish_fast = lambda topic, payload, qos, mid, dup: fast.append((topic, payload, qos, mid, dup))
    c.on_message = lambda cl, u, m: slow.append((m.topic, m.payload, m.qos, m.mid))
    return c, fast, slow


@pytest.mark.parametrize("v5", [True, False])
@pytest.mark.parametrize("chunk", [1, 7, 1000, 65536])
def test_publishes_cut_anywhere_between_reads_arrive_whole_and_in_order(v5, chunk):
    c, fast, slow = _client(v5)
    sent = []
    stream = b""
    for i in range(300):
        topic = f"instore/s1/beacon/gw-{i % 3}"
        payload = (b'{"ts":%d,"rssi":-50}' % i) + b"x" * (i * 7 % 400)  # some packets need 2 length bytes
        qos = i % 2
        sent.append((topic, payload, qos, (i + 1) if qos else 0, i % 5 == 0))
        # a v5 packet may carry properties (here a user property): the reader skips them
        props = b"\x26\x00\x01k\x00\x01v" if v5 and i % 4 == 0 else b""
        stream += publish_packet(topic, payload, qos, i + 1, v5, dup=i % 5 == 0, props=props)
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    c._sock = reader
    try:
        for k in range(0, len(stream), chunk):
            writer.sendall(stream[k:k + chunk])
            while c._packet_read() == 0:
                pass
        assert fast == sent
        assert slow == []
    finally:
        c._sock = None
        reader.close()
        writer.close()


def test_qos2_and_non_utf8_topics_still_reach_the_edge():
    c, fast, slow = _client(True)
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    c._sock = reader
    try:
        writer.sendall(publish_packet("instore/s1/qr/scanner-1", b"{}", 2, 9, True) + b"\x62\x02\x00\x09"  # + PUBREL
                       + b"\x32" + _length(2 + 4 + 2 + 1 + 2) + b"\x00\x04ab\xffc" + b"\x00\x05" + b"\x00" + b"{}")
        while c._packet_read() == 0:
            pass
        assert slow == [("instore/s1/qr/scanner-1", b"{}", 2, 9)]  # paho's own path (PUBREC, PUBREL)
        assert fast == [("ab\ufffdc", b"{}", 1, 5, False)]  # dead-lettered downstream (unknown_topic)
    finally:
        c._sock = None
        reader.close()
        writer.close()
