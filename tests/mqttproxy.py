"""A TCP proxy between an MQTT client and a real Mosquitto that reads the packets going each way, for tests of
what the network does to the edge's MQTT link: it cuts the broker's stream into small pieces with pauses (so
the client's reads end anywhere inside a packet, header included), runs a check on each PUBACK before it
reaches the broker, counts PINGREQ/PINGRESP, can drop the connection halfway through a PUBLISH, and can hold
each packet from the client for a while (a slow uplink)."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

PUBLISH, PUBACK, PINGREQ, PINGRESP, CONNECT = 3, 4, 12, 13, 1


def _varint(buf: bytes | bytearray, i: int) -> tuple[int, int] | None:
    """(value, index after it) of an MQTT variable byte integer at i, or None when it is not all there yet."""
    value = shift = 0
    while i < len(buf):
        byte = buf[i]
        i += 1
        value |= (byte & 127) << shift
        if not byte & 128:
            return value, i
        shift += 7
    return None


def _split(buf: bytearray) -> list[bytes]:
    """Take the whole packets off the front of buf."""
    out = []
    while len(buf) >= 2:
        got = _varint(buf, 1)
        if got is None:
            break
        length, start = got
        if start + length > len(buf):
            break
        out.append(bytes(buf[:start + length]))
        del buf[:start + length]
    return out


@dataclass
class Published:
    topic: str
    payload: bytes
    qos: int
    mid: int
    dup: bool


def parse_publish(packet: bytes, v5: bool) -> Published:
    command = packet[0]
    _, i = _varint(packet, 1)  # type: ignore[misc]
    tlen = int.from_bytes(packet[i:i + 2], "big")
    topic = packet[i + 2:i + 2 + tlen].decode("utf-8", "replace")
    p = i + 2 + tlen
    qos = (command >> 1) & 3
    mid = 0
    if qos:
        mid = int.from_bytes(packet[p:p + 2], "big")
        p += 2
    if v5:
        plen, p = _varint(packet, p)  # type: ignore[misc]
        p += plen
    return Published(topic, packet[p:], qos, mid, bool(command & 8))


@dataclass
class MqttProxy:
    """Listens on 127.0.0.1:<port> and relays every connection to Mosquitto on upstream_port."""

    upstream_port: int
    max_piece: int = 700  # the broker's stream goes on in pieces of 1..max_piece bytes
    pause_every: float = 0.15  # the share of pieces followed by a short pause (the client reads what came)
    seed: int = 1
    # Called with the PUBLISH a PUBACK acknowledges, before the PUBACK goes on to the broker; what it raises
    # is kept in `errors`.
    on_puback: Callable[[Published], None] | None = None
    # Drop the connection (both ways) halfway through the nth PUBLISH matching cut_topic, once.
    cut_in_publish: int = 0
    cut_topic: str = "/beacon/"
    up_delay: float = 0.0  # seconds each packet from the client waits before it goes on to the broker
    port: int = 0
    connections: int = 0
    publishes: int = 0
    duplicates: int = 0
    pubacks: int = 0
    pingreqs: int = 0
    pingresps: int = 0
    cuts: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopping = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="mqttproxy-accept").start()

    def stop(self) -> None:
        self._stopping = True
        self._listener.close()
        for s in self._sockets:
            _close(s)

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [client, upstream]
            self.connections += 1
            conn = {"v5": False, "sent": {}}  # the protocol (from CONNECT), mid -> the PUBLISH it names
            threading.Thread(target=self._down, args=(upstream, client, conn), daemon=True).start()
            threading.Thread(target=self._up, args=(client, upstream, conn), daemon=True).start()

    def _up(self, client: socket.socket, upstream: socket.socket, conn: dict) -> None:
        """Client -> broker: whole packets, each PUBACK after its check."""
        buf = bytearray()
        try:
            while data := client.recv(65536):
                buf += data
                for packet in _split(buf):
                    kind = packet[0] >> 4
                    if kind == CONNECT:
                        _, i = _varint(packet, 1)  # type: ignore[misc]
                        name_len = int.from_bytes(packet[i:i + 2], "big")
                        conn["v5"] = packet[i + 2 + name_len] == 5
                    elif kind == PUBACK:
                        self.pubacks += 1
                        mid = int.from_bytes(packet[2:4], "big")
                        sent = conn["sent"].get(mid)
                        if sent is None:
                            self.errors.append(f"PUBACK for mid {mid}, never published on this connection")
                        elif self.on_puback is not None:
                            try:
                                self.on_puback(sent)
                            except Exception as exc:  # noqa: BLE001 - reported by the test
                                self.errors.append(f"{type(exc).__name__}: {exc}")
                    elif kind == PINGREQ:
                        self.pingreqs += 1
                    if self.up_delay:
                        time.sleep(self.up_delay)
                    upstream.sendall(packet)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)

    def _down(self, upstream: socket.socket, client: socket.socket, conn: dict) -> None:
        """Broker -> client: packets noted, then sent on cut at random places, with pauses."""
        buf = bytearray()
        try:
            while data := upstream.recv(65536):
                buf += data
                out = bytearray()
                for packet in _split(buf):
                    kind = packet[0] >> 4
                    if kind == PINGRESP:
                        self.pingresps += 1
                    elif kind == PUBLISH:
                        pub = parse_publish(packet, conn["v5"])
                        if pub.qos:
                            conn["sent"][pub.mid] = pub
                        if self.cut_topic in pub.topic:
                            self.publishes += 1
                            self.duplicates += pub.dup
                            if self.cut_in_publish and self.publishes == self.cut_in_publish and not self.cuts:
                                self.cuts += 1
                                self._send(client, bytes(out) + packet[:len(packet) // 2])
                                time.sleep(0.05)
                                return
                    out += packet
                self._send(client, bytes(out))
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)

    def _send(self, sock: socket.socket, data: bytes) -> None:
        i = 0
        while i < len(data):
            n = self._rng.randint(1, self.max_piece)
            sock.sendall(data[i:i + n])
            i += n
            if self._rng.random() < self.pause_every:
                time.sleep(0.002)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
