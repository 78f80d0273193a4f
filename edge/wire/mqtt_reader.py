"""paho's client with a bulk reader: many packets per recv(), PUBLISH at QoS 0/1 decoded in a few lines.

paho reads each packet with three recv() calls (the command byte, the length, the rest), one select() per
packet, and decodes a PUBLISH into a v5 Properties object, an MQTTMessage and a topic-filter match: about
30 µs of Python per message on a fast core, half of the edge's CPU per event (issue #16), and every one
of those system calls hands the GIL to the writer thread and waits to get it back. This client reads up
to 64 KiB at a time and walks the whole packets in it: a PUBLISH at QoS 0 or 1 (what devices send) goes
straight to `on_publish_fast(topic, payload, qos, mid, dup)`; every other packet (CONNACK, SUBACK,
PUBACK of our own publications, PINGRESP, QoS 2, a v5 PUBLISH using a topic alias) is handed to paho's
own handler exactly as paho would have, so sessions, keepalive, reconnects and publishing stay paho's.

This leans on paho internals (`_packet_read`, `_in_packet`, `_packet_handle`), the same 2.x ones the
pipeline's batched PUBACK uses; on a paho whose internals differ (`BULK_READ` is False), the client is
plain paho and `MqttLink` takes messages through `on_message`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import paho.mqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion

log = logging.getLogger(__name__)

READ_BYTES = 65536
# Internals this module relies on, as paho 2.1-2.2 have them.
BULK_READ = all(hasattr(mqtt.Client, name) for name in ("_packet_read", "_packet_handle", "_sock_recv")) \
    and paho.mqtt.__version__.startswith(("2.1.", "2.2."))
FastHandler = Callable[[str, bytes, int, int, bool], None]  # (topic, payload, qos, mid, dup)


def _fresh_in_packet(command: int = 0, packet: bytes = b"", remaining: int = 0) -> dict:
    """paho's `_in_packet` for one whole packet (or empty, as paho leaves it between packets)."""
    return {"command": command, "have_remaining": 1 if command else 0, "remaining_count": [],
            "remaining_mult": 1, "remaining_length": remaining, "packet": bytearray(packet), "to_process": 0,
            "pos": 0}


class BulkReadClient(mqtt.Client):
    """A paho Client whose reads take whole buffers; PUBLISH at QoS 0/1 go to `on_publish_fast` when set."""

    on_publish_fast: FastHandler | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()
        self._rbuf_sock: object = None
        self._v5 = self._protocol == MQTTProtocolVersion.MQTTv5

    def _packet_read(self) -> MQTTErrorCode:
        fast = self.on_publish_fast
        if fast is None or not BULK_READ:
            return super()._packet_read()
        sock = self._sock
        buf = self._rbuf
        if sock is not self._rbuf_sock:  # a new connection: nothing of the old one's stream is valid
            buf.clear()
            self._rbuf_sock = sock
        try:
            data = self._sock_recv(READ_BYTES)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as err:
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if not data:
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        with self._msgtime_mutex:
            self._last_bytes_received = mqtt.time_func()
        buf += data
        end_all = len(buf)
        pos = 0
        v5 = self._v5
        rc = MQTTErrorCode.MQTT_ERR_AGAIN
        while end_all - pos >= 2:
            command = buf[pos]
            # the remaining length: 1 to 4 bytes, 7 bits each
            length = 0
            shift = 0
            i = pos + 1
            while True:
                if i >= end_all:
                    length = -1
                    break
                byte = buf[i]
                length |= (byte & 127) << shift
                i += 1
                if not byte & 128:
                    break
                shift += 7
                if shift > 21:
                    buf.clear()
                    return MQTTErrorCode.MQTT_ERR_PROTOCOL
            if length < 0 or i + length > end_all:
                break  # the rest of this packet is still on its way
            end = i + length
            qos = (command >> 1) & 3
            if command & 0xF0 == 0x30 and qos < 2 and length >= 2:
                tlen = buf[i] << 8 | buf[i + 1]
                p = i + 2 + tlen
                if tlen and p + (2 if qos else 0) <= end:
                    mid = 0
                    if qos:
                        mid = buf[p] << 8 | buf[p + 1]
                        p += 2
                    if v5:  # skip the properties (a topic alias would have left the topic empty: not here)
                        plen = shift = 0
                        while p < end:
                            byte = buf[p]
                            p += 1
                            plen |= (byte & 127) << shift
                            if not byte & 128:
                                break
                            shift += 7
                        p += plen
                    if p <= end:
                        topic_bytes = bytes(buf[i + 2:i + 2 + tlen])
                        try:
                            topic = topic_bytes.decode("utf-8")
                        except UnicodeDecodeError:  # dead-lettered downstream, never fatal here
                            topic = topic_bytes.decode("utf-8", "replace")
                        fast(topic, bytes(buf[p:end]), qos, mid, bool(command & 8))
                        pos = end
                        continue
            # anything else: paho's own handler, with the packet laid out as paho's reader leaves it
            self._in_packet = _fresh_in_packet(command, bytes(buf[i:end]), length)
            try:
                rc = self._packet_handle()
            except mqtt.MalformedPacket as exc:
                self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
                rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
            self._in_packet = _fresh_in_packet()
            pos = end
            if rc:
                break
        del buf[:pos]
        return rc if rc else MQTTErrorCode.MQTT_ERR_AGAIN
