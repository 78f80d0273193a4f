"""The edge's MQTT link (paho with the bulk reader, edge/wire/mqtt_reader.py) against a real Mosquitto, with the
network in between cutting the broker's stream anywhere (tests/mqttproxy.py): every message is recorded
whole, once and in order, each PUBACK leaves only after its message's commit, pings are answered, a
connection dropped halfway through a PUBLISH loses nothing, and the same over TLS; the link says it is
connected only once the broker has granted its subscriptions, and says which one it refused."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import EdgeHandle, MqttHelper, now_ms, sighting, store_config, wait_until
from edge.app import App
from edge.broker import MosquittoBroker, free_port
from edge.config import parse_config
from mqttproxy import MqttProxy, Published

P = "instore/teststore"
UUID = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"
BIG_BATCH = 1200  # sightings in one message: ~130 KB, two recv() of 64 KiB and more


def _marker(text: str) -> str:
    found = re.search(r"bad-\d+", text)
    assert found, f"no marker in {text[:80]!r}"
    return found.group()


def _subject(minor: int) -> str:
    return f"ibeacon:{UUID}:100:{minor}"


class Stream:
    """n messages on P/beacon/gw-shoes: batches of 1-7 sightings (each a new beacon, in order), one big batch,
    and every 50th a bad one (not JSON, or a wrong type) carrying a marker to find its dead letter by."""

    def __init__(self, n: int, big_at: int | None = None) -> None:
        base = now_ms() - 10_000_000
        self.items: list[tuple[str, bytes]] = []
        self.minors: list[int] = []  # every sighting's beacon, in publish order
        self.bad: dict[str, str] = {}  # marker -> the dead letter's reason
        minor = 0
        for i in range(n):
            topic = f"{P}/beacon/gw-shoes"
            if i % 50 == 25:
                marker = f"bad-{i}"
                if i % 100 == 25:
                    self.items.append((topic, f"{{{marker} not json".encode()))
                    self.bad[marker] = "not_json"
                else:
                    self.items.append((topic, json.dumps({"rssi": marker, **{k: v for k, v in sighting(base).items() if k != "rssi"}}).encode()))
                    self.bad[marker] = "wrong_type"
                continue
            count = BIG_BATCH if i == big_at else 1 + i % 7
            batch = [sighting(base + minor + k, minor=minor + k, rssi=-40 - (minor + k) % 50) for k in range(count)]
            self.minors += range(minor, minor + count)
            minor += count
            self.items.append((topic, json.dumps(batch[0] if count == 1 else {"sightings": batch}).encode()))


class Committed:
    """Reads the edge's SQLite file as another process would: only what is committed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.local = threading.local()

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10, isolation_level=None,
                                   check_same_thread=False)
            self.local.conn = conn
        return conn

    def check_acked(self, pub: Published) -> None:
        """The message a PUBACK acknowledges must already be committed: its events, or its dead letter."""
        if "/beacon/" not in pub.topic:
            return
        try:
            data = json.loads(pub.payload)
        except ValueError:
            data = None
        first = data.get("sightings", [data])[0] if isinstance(data, dict) else None
        if first is not None and isinstance(first.get("rssi"), int):
            subject = _subject(first["beacon"]["minor"])
            row = self.conn().execute("SELECT 1 FROM events WHERE subject = ? AND kind = 'beacon'", (subject,)).fetchone()
            assert row, f"acknowledged before its events were committed: {subject}"
        else:
            marker = _marker(pub.payload.decode())
            row = self.conn().execute("SELECT 1 FROM deadletters WHERE payload_excerpt LIKE ?",
                                      (f"%{marker}%",)).fetchone()
            assert row, f"acknowledged before its dead letter was committed: {marker}"

    def beacon_minors(self) -> list[int]:
        rows = self.conn().execute("SELECT subject FROM events WHERE kind = 'beacon' ORDER BY seq").fetchall()
        return [int(s.rsplit(":", 1)[1]) for (s,) in rows]

    def counts(self) -> tuple[int, int]:
        return self.conn().execute("SELECT count(*), count(DISTINCT event_id) FROM events WHERE kind = 'beacon'"
                                   ).fetchone()

    def deadletters(self) -> list[tuple[str, str]]:
        return self.conn().execute("SELECT reason, payload_excerpt FROM deadletters ORDER BY id").fetchall()


def _edge(tmp_path: Path, port: int, **sections: Any) -> EdgeHandle:
    zones = [{"id": "entrance", "exit_after_s": 600.0}, {"id": "shoes", "exit_after_s": 600.0}]
    data = store_config(tmp_path, port, zones=zones, limits={"max_payload_bytes": 512 * 1024}, **sections)
    return EdgeHandle(parse_config(data, env={}))


def _check_all_recorded(db: Committed, stream: Stream, proxy: MqttProxy | None) -> None:
    expected = len(stream.minors)
    wait_until(lambda: db.counts()[0] >= expected and len(db.deadletters()) >= len(stream.bad), timeout=90,
               what="every message recorded")
    if proxy is not None:
        wait_until(lambda: proxy.pubacks >= len(stream.items), timeout=30, what="every message acknowledged")
    time.sleep(0.5)  # anything recorded twice would show up now
    assert db.counts() == (expected, expected)
    assert db.beacon_minors() == stream.minors  # whole, once, in the order published
    assert {_marker(excerpt): reason for reason, excerpt in db.deadletters()} == stream.bad


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_stream_cut_anywhere_is_recorded_whole_in_order_and_each_ack_follows_its_commit(tmp_path, broker,
                                                                                          protocol):
    proxy = MqttProxy(broker.port)
    edge = _edge(tmp_path, proxy.port, mqtt={"protocol": protocol})
    db = Committed(edge.cfg.db.path)
    proxy.on_puback = db.check_acked
    publisher = MqttHelper(broker.port, "stream-publisher")
    try:
        stream = Stream(400, big_at=200)
        publisher.publish_many(stream.items, window=100)
        _check_all_recorded(db, stream, proxy)
        assert proxy.errors == []
        assert proxy.connections == 1 and edge.service.mqtt.connects == 1
    finally:
        publisher.close()
        edge.stop()
        proxy.stop()


def test_a_connection_dropped_halfway_through_a_publish_loses_nothing_and_records_nothing_twice(tmp_path, broker):
    proxy = MqttProxy(broker.port, cut_in_publish=150)
    edge = _edge(tmp_path, proxy.port)
    db = Committed(edge.cfg.db.path)
    proxy.on_puback = db.check_acked
    publisher = MqttHelper(broker.port, "stream-publisher")
    try:
        stream = Stream(400, big_at=300)
        publisher.publish_many(stream.items, window=100)
        _check_all_recorded(db, stream, None)
        assert proxy.cuts == 1 and proxy.connections == 2
        assert edge.service.mqtt.connects == 2
        assert proxy.duplicates >= 1  # the broker sent the half-read message again (DUP), and it counted once
        assert proxy.errors == []
    finally:
        publisher.close()
        edge.stop()
        proxy.stop()


def test_a_reconnect_to_a_broker_that_lost_the_session_is_a_warning_that_says_what_to_change(tmp_path, caplog):
    """A broker restarted without its persistence kept nothing for the edge while it was away: the edge
    says so (a resumed session stays an info line), since messages sent meanwhile are gone."""
    first = MosquittoBroker(tmp_path / "broker-a").start()
    edge = _edge(tmp_path, first.port)
    try:
        wait_until(lambda: edge.service.mqtt.connected.is_set(), what="the edge connected")
        first.restart()  # persistence kept: the session resumes
        wait_until(lambda: edge.service.mqtt.connects == 2 and edge.service.mqtt.connected.is_set(),
                   what="the edge back on the same broker")
        assert not [r for r in caplog.records if "NEW session" in r.getMessage()]
        first.stop()
        second = MosquittoBroker(tmp_path / "broker-b", port=first.port).start()  # same address, no state
        try:
            wait_until(lambda: edge.service.mqtt.connects == 3, what="the edge on the fresh broker")
            warned = [r for r in caplog.records if "NEW session" in r.getMessage()]
            assert warned and warned[0].levelname == "WARNING" and "session_expiry_s" in warned[0].getMessage()
        finally:
            second.stop()
    finally:
        edge.stop()
        first.stop()


def test_an_idle_link_keeps_its_connection_with_every_ping_answered(tmp_path, broker):
    proxy = MqttProxy(broker.port)
    edge = _edge(tmp_path, proxy.port, mqtt={"keepalive_s": 5})
    publisher = MqttHelper(broker.port, "late-publisher")
    try:
        time.sleep(12.5)  # 2.5 keepalive periods without a message: a PINGRESP left unread drops the link at 10 s
        assert proxy.pingreqs >= 2 and proxy.pingresps >= 2
        assert proxy.connections == 1 and edge.service.mqtt.connects == 1
        publisher.publish(f"{P}/beacon/gw-shoes", sighting(now_ms(), minor=77))
        db = Committed(edge.cfg.db.path)
        wait_until(lambda: db.beacon_minors() == [77], what="a sighting after the idle time")
    finally:
        publisher.close()
        edge.stop()
        proxy.stop()


def test_a_message_published_once_the_edge_says_connected_reaches_it_over_a_slow_uplink(tmp_path, broker):
    # A new session: the broker routes a message to the edge only once it has processed the edge's SUBSCRIBE,
    # which here reaches it 0.3 s after the CONNACK. `connected` (what the demo, the tests and /readyz wait
    # for) must mean subscribed, or whoever publishes right after it sees the message go nowhere.
    proxy = MqttProxy(broker.port, up_delay=0.3)
    publisher = MqttHelper(broker.port, "early-publisher")
    edge = None
    try:
        edge = _edge(tmp_path, proxy.port)  # returns once edge.service.mqtt.connected is set
        publisher.publish(f"{P}/beacon/gw-shoes", sighting(now_ms(), minor=5))
        db = Committed(edge.cfg.db.path)
        wait_until(lambda: db.beacon_minors() == [5], what="the sighting published once the edge was connected")
    finally:
        publisher.close()
        if edge is not None:
            edge.stop()
        proxy.stop()


def test_a_refused_subscription_makes_the_edge_not_ready_and_says_which_topic_and_what_to_fix(tmp_path):
    # Mosquitto's acl_file grants every SUBSCRIBE (it filters at delivery); its dynamic security plugin refuses
    # one the client's roles do not allow. Here: anything under instore/, nothing for the espresense gateway.
    plugin = next(iter(sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))), None)
    assert plugin is not None, "Mosquitto's dynamic security plugin is missing: apt-get install mosquitto"
    roles = tmp_path / "dynamic-security.json"
    roles.write_text(json.dumps({
        "defaultACLAccess": {"publishClientSend": False, "publishClientReceive": True, "subscribe": False,
                             "unsubscribe": True},
        "clients": [], "anonymousGroup": "anonymous",
        "groups": [{"groupname": "anonymous", "roles": [{"rolename": "store"}]}],
        "roles": [{"rolename": "store", "acls": [{"acltype": "publishClientSend", "topic": "instore/#", "allow": True},
                                                 {"acltype": "subscribePattern", "topic": "instore/#", "allow": True}]}],
    }))
    broker = MosquittoBroker(tmp_path / "mosquitto-roles",
                             extra_conf=f"plugin {plugin}\nplugin_opt_config_file {roles}").start()
    gateways = [{"id": "gw-shoes", "zone": "shoes"}, {"id": "shoes-back", "zone": "shoes", "format": "espresense"}]
    service = App(parse_config(store_config(tmp_path, broker.port, gateways=gateways), env={})).start()
    publisher = MqttHelper(broker.port, "publisher")
    try:
        url = f"http://127.0.0.1:{service.http_port}/readyz"
        refused = wait_until(lambda: service.mqtt.last_error, what="the refused subscription reported")
        assert "espresense/" in refused and "allow the edge's MQTT user to subscribe" in refused
        assert f"{P}/#" not in refused
        r = requests.get(url, timeout=5)
        assert r.status_code == 503
        assert r.json()["checks"]["broker"] == {"ok": False, "detail": refused}
        assert not service.mqtt.connected.is_set()
        # what the broker granted still arrives
        publisher.publish(f"{P}/beacon/gw-shoes", sighting(now_ms(), minor=9))
        db = Committed(service.cfg.db.path)
        wait_until(lambda: db.beacon_minors() == [9], what="a sighting on the granted topic")
    finally:
        publisher.close()
        service.stop()
        broker.stop()


def _certificate(d: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (the edge trusts it as its CA)."""
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "broker.key",
                    "-out", "broker.crt", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   cwd=d, check=True, capture_output=True)
    return d / "broker.crt", d / "broker.key"


def test_over_tls_every_message_arrives_whole_and_in_order(tmp_path):
    cert, key = _certificate(tmp_path / "tls")
    tls_port = free_port()
    broker = MosquittoBroker(tmp_path / "mosquitto-tls",
                             extra_conf=f"listener {tls_port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}").start()
    edge = None
    publisher = MqttHelper(broker.port, "stream-publisher")  # the plain listener; the edge takes the TLS one
    try:
        edge = _edge(tmp_path, tls_port, mqtt={"tls_ca": str(cert)})
        db = Committed(edge.cfg.db.path)
        stream = Stream(300, big_at=100)
        publisher.publish_many(stream.items, window=100)
        _check_all_recorded(db, stream, None)
        assert edge.service.mqtt.connects == 1
    finally:
        publisher.close()
        if edge is not None:
            edge.stop()
        broker.stop()
