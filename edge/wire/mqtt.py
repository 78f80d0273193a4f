"""The MQTT link: a persistent QoS 1 session whose messages are acknowledged only after their commit.

`on_message` never blocks and never decides: it stamps the receive time and hands the message to the
pipeline's queue. The pipeline calls `ack` once the message's events (or its dead letter) are committed,
so a crash at any moment leaves every unacknowledged message with the broker, which redelivers it.

`connected` is set only once the broker has granted every subscription (its SUBACK), not at its CONNACK:
on a new session the broker routes a message to the edge only after it has processed the SUBSCRIBE, so
whoever waits for `connected` before publishing (the demo, the tests, a deployment check on /readyz) would
otherwise see its first messages go nowhere when the SUBSCRIBE is slower than its publications (a loaded
machine, a slow link).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge import faults
from edge.config import Config
from edge.jsontext import compact
from edge.model import Message, Publication
from edge.wire.adapters import subscriptions
from edge.wire.mqtt_reader import BulkReadClient

log = logging.getLogger(__name__)
_PUBACK_HEAD = bytes((0x40, 2))


class MqttLink:
    """`sink` takes every received message (the writer's inbox), `backlog` says how many wait for the writer,
    `retained` is the state to publish again after every (re)connect (what each display shows)."""

    def __init__(self, cfg: Config, sink: Callable[[Message], None], *, backlog: Callable[[], int] | None = None,
                 retained: Callable[[], Iterable[Publication]] | None = None) -> None:
        self.cfg = cfg
        self.sink = sink
        self.retained = retained
        self.connected = threading.Event()  # connected, and every subscription granted
        self._subscribe_mid: int | None = None  # the SUBSCRIBE of this connection, until its SUBACK
        self._topics: list[str] = []
        self._linked = False  # between a CONNACK and the disconnection
        self.stopping = False
        self.taking = True  # False once stopping: what arrives then stays unacknowledged with the broker
        self.backlog = backlog  # messages received and not yet committed
        self.high_water = 2 * cfg.limits.ingest_batch
        self.generation = 0
        self.thread: threading.Thread | None = None  # paho's network loop, once started
        self.connects = 0
        self.last_error: str | None = None
        m = cfg.mqtt
        self.v5 = m.protocol == "5"
        client_id = m.client_id or f"instore-edge-{cfg.store.id}"
        self.client = BulkReadClient(
            CallbackAPIVersion.VERSION2, client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if self.v5 else False, manual_ack=True,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=15)
        # Our own outputs may be published faster than the broker acks them during bursts: let paho keep more
        # in flight than its default of 20, bounded well below the 65,535 message ids.
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        if m.username:
            self.client.username_pw_set(m.username, m.password)
        if m.tls_ca:
            self.client.tls_set(ca_certs=m.tls_ca, cert_reqs=ssl.CERT_REQUIRED)
        self.status_topic = f"{cfg.prefix}/edge/status"
        self.client.will_set(self.status_topic, json.dumps({"state": "offline"}), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message  # QoS 2, or any paho without the bulk reader
        self.client.on_publish_fast = self._on_publish
        self.client.on_connect_fail = self._on_connect_fail
        self._last_diagnosis = 0.0
        self.extra_topics: list[str] = subscriptions(cfg)  # foreign gateways: sightings and status

    # --- paho callbacks (network thread) ---
    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags, reason_code,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            from edge.maintenance import refusal_hint

            hint = refusal_hint(str(reason_code))
            self.last_error = f"broker refused the connection: {reason_code}" + (f" ({hint})" if hint else "")
            log.error("MQTT %s:%s refused the connection: %s%s", self.cfg.mqtt.host, self.cfg.mqtt.port,
                      reason_code, f" ({hint})" if hint else "")
            return
        self.generation += 1
        self.connects += 1
        self._linked = True
        self.last_error = None
        topics = self._topics = [f"{self.cfg.prefix}/#", *self.extra_topics]
        if self.v5:
            # no_local: do not hear our own retained display/status messages.
            _, self._subscribe_mid = client.subscribe([(t, SubscribeOptions(qos=1, noLocal=True)) for t in topics])
        else:
            _, self._subscribe_mid = client.subscribe([(t, 1) for t in topics])
        client.publish(self.status_topic, json.dumps({"state": "online", "since": int(time.time() * 1000)}),
                       qos=1, retain=True)
        if flags.session_present or self.connects == 1:
            log.info("MQTT connected to %s:%s (session %s)", self.cfg.mqtt.host, self.cfg.mqtt.port,
                     "resumed" if flags.session_present else "new")
        else:  # a reconnect that found no session: it expired, or the broker lost its state (no persistence)
            log.warning("MQTT reconnected to %s:%s with a NEW session: what gateways and kiosks published while the "
                        "edge was away was not kept for it (raise [mqtt] session_expiry_s, or enable the "
                        "broker's persistence)", self.cfg.mqtt.host, self.cfg.mqtt.port)
        if self.retained is not None:  # make the retained content of every display match our state
            try:
                for pub in self.retained():
                    self.publish(pub.topic, pub.payload, retain=pub.retain)
            except Exception:
                log.exception("after-connect step failed")

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, reason_codes: list,
                      properties: Properties | None) -> None:
        """Ready once every subscription is granted; a refused one is an error the operator must see, since
        the broker then drops what is published there without telling anyone."""
        if mid != self._subscribe_mid:
            return
        self._subscribe_mid = None
        refused = [f"{topic} ({code})" for topic, code in zip(self._topics, reason_codes) if code.is_failure]
        if refused:
            self.last_error = (f"broker refused the subscription to {', '.join(refused)}: allow the edge's MQTT "
                               "user to subscribe to them in the broker's access control (ACL or plugin)")
            log.error("MQTT %s", self.last_error)
            return
        downgraded = [topic for topic, code in zip(self._topics, reason_codes) if code.value == 0]
        if downgraded:  # QoS 0: the broker neither queues these for us while we are away nor redelivers them
            log.error("MQTT broker granted QoS 0 instead of 1 to %s: messages there sent while the edge is "
                      "disconnected or restarting will be lost; allow QoS 1 (mosquitto: max_qos)", ", ".join(downgraded))
        self.connected.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        """TCP/TLS failure: paho drops the exception, so probe once a minute and say why in words."""
        if time.monotonic() - self._last_diagnosis < 60 and self.last_error:
            return
        self._last_diagnosis = time.monotonic()
        from edge.maintenance import diagnose_mqtt

        m = self.cfg.mqtt
        why = diagnose_mqtt(m.host, m.port, m.tls_ca)
        self.last_error = f"cannot connect to the broker {m.host}:{m.port}: " + \
            (why if why != "ok" else "the connection failed (see the log)")
        log.error("MQTT %s", self.last_error)

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags, reason_code,
                       properties: Properties | None) -> None:
        was = self._linked
        self._linked = False
        self.connected.clear()
        if was and not self.stopping:
            log.warning("MQTT disconnected (%s); reconnecting, events wait in the broker meanwhile", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if faults.THREADS:
            faults.thread_start("mqtt")
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # a broker that let a non-UTF-8 topic through: dead-lettered, not fatal
            topic = msg._topic.decode("utf-8", "replace")  # paho raising here would end its network thread
        self.sink(Message(topic, msg.payload, msg.qos, msg.mid, time.time(), self.generation, bool(msg.dup)))
        backlog = self.backlog
        if backlog is not None and backlog() > self.high_water:
            self._pause(backlog)

    def _on_publish(self, topic: str, payload: bytes, qos: int, mid: int, dup: bool) -> None:
        """A PUBLISH at QoS 0/1 from the bulk reader (edge.wire.mqtt_reader): the same as _on_message."""
        if not self.taking:
            return
        if faults.THREADS:
            faults.thread_start("mqtt")
        self.sink(Message(topic, payload, qos, mid, time.time(), self.generation, dup))
        backlog = self.backlog
        if backlog is not None and backlog() > self.high_water:
            self._pause(backlog)

    def _pause(self, backlog: Callable[[], int]) -> None:
        """Stop reading while the writer is far behind: the rest stays with the broker (persisted), not in
        our RAM, and the writer gets the GIL. Mosquitto 2.0.11 streams a resumed session's whole backlog
        once the first PUBACK arrives, ignoring max_inflight_messages and Receive Maximum, so the broker
        does not do this for us. Never for long: this thread also sends the keepalive pings."""
        deadline = time.monotonic() + 1.0
        low = self.high_water // 2
        while backlog() > low and time.monotonic() < deadline and not self.stopping:
            time.sleep(0.002)

    # --- used by the app ---
    def stop_taking(self) -> None:
        """Stop taking new messages (on the way out): unacknowledged ones stay with the broker."""
        self.taking = False
        self.client.on_message = None

    def start(self) -> None:
        m = self.cfg.mqtt
        props = None
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = m.session_expiry_s
        log.info("MQTT connecting to %s:%s as %s", m.host, m.port, self.client._client_id.decode())
        self.client.connect_async(m.host, m.port, keepalive=m.keepalive_s,
                                  clean_start=False if self.v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                                  properties=props)
        self.client.loop_start()
        self.thread = self.client._thread  # paho forgets its thread when it ends: keep it, to watch it

    def ack(self, messages: Iterable[Message]) -> None:
        """Acknowledge committed messages received on the current connection (older ones are redelivered)."""
        gen = self.generation
        acks = bytearray()
        for msg in messages:
            if msg.mid and msg.generation == gen:
                if msg.qos == 1:
                    acks += _PUBACK_HEAD + msg.mid.to_bytes(2, "big")
                elif msg.qos == 2:
                    self.client.ack(msg.mid, msg.qos)
        if acks:
            # One write for the batch's PUBACKs (0x40, 2, mid: "success" in MQTT 3.1.1 and 5) instead of one
            # paho packet, loop wake-up and send() per message. paho has no public batch ack: _packet_queue
            # is what Client.ack -> _send_puback uses.
            self.client._packet_queue(mqtt.PUBACK, bytes(acks), 0, 0)

    def publish(self, topic: str, payload: dict | str, *, retain: bool = False, qos: int = 1) -> None:
        """Queue a publication; paho sends it now or after reconnecting, never drops it."""
        data = payload if isinstance(payload, str) else compact(payload)
        self.client.publish(topic, data, qos=qos, retain=retain)

    def stop(self) -> None:
        """Graceful stop: say offline (retained) ourselves, since the last will is only sent on a crash."""
        self.stopping = True
        try:
            if self.client.is_connected():
                info = self.client.publish(self.status_topic, json.dumps({"state": "offline"}), qos=1, retain=True)
                info.wait_for_publish(2)
        except Exception:
            pass
        self.client.disconnect()
        self.client.loop_stop()
