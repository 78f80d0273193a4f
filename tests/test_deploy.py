"""The shipped deployment files, exercised for real: Mosquitto started from config/mosquitto/mosquitto.conf
with the shipped acl (passwords made with mosquitto_passwd, certificates with openssl), the edge connecting
with username/password and over TLS, and the systemd unit's hardening."""

from __future__ import annotations

import configparser
import getpass
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion

from edge.broker import find_mosquitto, free_port, wait_for_port
from edge.config import parse_config
from edge.maintenance import diagnose_mqtt
from tests.conftest import ROOT, store_config, wait_until

CONF = ROOT / "config" / "mosquitto" / "mosquitto.conf"
ACL = ROOT / "config" / "mosquitto" / "acl"
UNIT = ROOT / "config" / "systemd" / "instore-edge.service"
P = "instore/teststore"
USERS = {
    "edge": "_It0fgLy1abEynJpz33-HHLo",
    "kiosk/kiosk-1": "kiosk-password-0123456789",
    "display/entrance-1": "signage-password-0123456",
    "beacon/gw-entrance": "gateway-password-0123456",
}


def make_certs(d: Path) -> dict[str, Path]:
    """A private CA and a server certificate for 127.0.0.1/localhost: the commands of the README."""
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "ca.key", "-out", "ca.crt",
        "-subj", "/CN=instore-edge test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-out", "server.crt", "-extfile", "san.ext")
    return {"ca": d / "ca.crt", "cert": d / "server.crt", "key": d / "server.key"}


@dataclass
class SecureBroker:
    """Mosquitto running the shipped mosquitto.conf, with only paths and ports replaced."""

    dir: Path
    port: int = 0
    tls_port: int = 0
    certs: dict[str, Path] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> SecureBroker:
        exe = find_mosquitto()
        passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        self.dir.mkdir(parents=True, exist_ok=True)
        pw = self.dir / "passwd"
        for i, (user, password) in enumerate(USERS.items()):
            subprocess.run([passwd, *(["-c"] if i == 0 else []), "-b", str(pw), user, password], check=True,
                           capture_output=True)
        self.certs = make_certs(self.dir / "certs")
        self.port, self.tls_port = free_port(), free_port()
        conf = CONF.read_text()
        replacements = {
            "listener 1883 127.0.0.1": f"listener {self.port} 127.0.0.1",
            "listener 8883": f"listener {self.tls_port} 127.0.0.1",
            "/etc/mosquitto/passwd": str(pw),
            "/etc/mosquitto/acl": str(ACL),  # the shipped ACL, unchanged
            "/etc/mosquitto/certs/ca.crt": str(self.certs["ca"]),
            "/etc/mosquitto/certs/server.crt": str(self.certs["cert"]),
            "/etc/mosquitto/certs/server.key": str(self.certs["key"]),
            "/var/lib/mosquitto/": f"{self.dir}/",
            "log_dest syslog": "log_dest stderr",
        }
        for old, new in replacements.items():
            assert old in conf, f"the shipped mosquitto.conf no longer has {old!r}: update this test"
            conf = conf.replace(old, new)
        # Started as root, Mosquitto would switch to the `mosquitto` user and fail to read our temp files.
        conf += f"\nuser {getpass.getuser()}\n"
        (self.dir / "mosquitto.conf").write_text(conf)
        log = open(self.dir / "mosquitto.log", "ab")
        self.process = subprocess.Popen([exe, "-c", str(self.dir / "mosquitto.conf")], stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL)
        log.close()
        try:
            wait_for_port(self.port)
            wait_for_port(self.tls_port)
        except Exception:
            self.stop()
            raise AssertionError("mosquitto did not start with the shipped config:\n"
                                 + (self.dir / "mosquitto.log").read_text()) from None
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[SecureBroker]:
    b = SecureBroker(tmp_path / "secure-mosquitto").start()
    yield b
    b.stop()


class Client:
    """An authenticated MQTT client recording what it receives."""

    def __init__(self, port: int, username: str, password: str | None = None) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{username.replace('/', '-')}",
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(username, USERS[username] if password is None else password)
        self.received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.client.on_message = lambda c, u, m: self.received.put((m.topic, m.payload))
        self.connected = threading.Event()
        self.refused: list[str] = []

        def on_connect(c: Any, u: Any, f: Any, rc: Any, p: Any) -> None:
            (self.refused.append(str(rc)) if rc.is_failure else self.connected.set())

        self.client.on_connect = on_connect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def subscribe(self, topic: str) -> None:
        result, mid = self.client.subscribe(topic, qos=1)
        assert result == mqtt.MQTT_ERR_SUCCESS

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def topics_until(self, marker: str, timeout: float = 10) -> list[str]:
        """Topics received up to and including `marker` (later messages on one connection come later)."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while marker not in seen:
            try:
                seen.append(self.received.get(timeout=max(0.01, deadline - time.monotonic()))[0])
            except queue.Empty:
                raise AssertionError(f"{marker} never arrived; got {seen}") from None
        return seen

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def clients(secure_broker: SecureBroker) -> Iterator[Any]:
    made: list[Client] = []

    def make(username: str, password: str | None = None, wait: bool = True) -> Client:
        c = Client(secure_broker.port, username, password)
        made.append(c)
        if wait:
            assert c.connected.wait(10), f"{username} could not connect: {c.refused}"
            time.sleep(0.05)
        return c

    yield make
    for c in made:
        c.close()


def test_anonymous_and_wrong_password_are_refused(clients: Any, secure_broker: SecureBroker) -> None:
    bad = clients("edge", "wrong-password", wait=False)
    wait_until(lambda: bad.refused, what="refusal")
    assert not bad.connected.is_set()
    anon = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    codes: list[str] = []
    anon.on_connect = lambda c, u, f, rc, p: codes.append(str(rc))
    anon.connect("127.0.0.1", secure_broker.port)
    anon.loop_start()
    try:
        wait_until(lambda: codes, what="anonymous refusal")
        assert codes[0] != "Success"
    finally:
        anon.loop_stop()


def test_kiosk_cannot_publish_as_a_gateway(clients: Any) -> None:
    edge = clients("edge")
    edge.subscribe(f"{P}/#")
    time.sleep(0.2)
    kiosk = clients("kiosk/kiosk-1")
    kiosk.publish(f"{P}/beacon/gw-x", '{"ts": 1, "beacon": {"type": "device", "id": "spoof"}, "rssi": -50}')
    kiosk.publish(f"{P}/beacon/gw-entrance", '{"spoof": true}')
    kiosk.publish(f"{P}/kiosk/kiosk-2/event", '{"type": "identify", "customer": "someone-else"}')
    kiosk.publish(f"{P}/kiosk/kiosk-1/event", '{"type": "browse", "session": "s1"}')
    seen = edge.topics_until(f"{P}/kiosk/kiosk-1/event")
    assert seen == [f"{P}/kiosk/kiosk-1/event"], "the broker let a kiosk publish outside its own topic"
    # The real gateway may publish its sightings.
    gw = clients("beacon/gw-entrance")
    gw.publish(f"{P}/beacon/gw-entrance", '{"sightings": []}')
    assert edge.topics_until(f"{P}/beacon/gw-entrance") == [f"{P}/beacon/gw-entrance"]


def test_signage_reads_its_display_and_cannot_publish_events(clients: Any) -> None:
    edge = clients("edge")
    edge.subscribe(f"{P}/#")
    edge.publish(f"{P}/display/entrance-1/content", '{"content_id": "autumn"}', retain=True)
    edge.publish(f"{P}/display/shoes-1/content", '{"content_id": "shoes"}', retain=True)
    signage = clients("display/entrance-1")
    signage.subscribe(f"{P}/display/entrance-1/content")
    signage.subscribe(f"{P}/display/shoes-1/content")  # another screen's: the ACL filters it out
    topic, payload = signage.received.get(timeout=10)
    assert (topic, payload) == (f"{P}/display/entrance-1/content", b'{"content_id": "autumn"}')
    time.sleep(0.3)
    assert signage.received.empty()
    edge.topics_until(f"{P}/display/shoes-1/content")  # drain the edge's own retained publications
    for topic in (f"{P}/kiosk/kiosk-1/event", f"{P}/qr/scanner-1", f"{P}/pos/till-1", f"{P}/beacon/gw-entrance",
                  f"{P}/display/entrance-1/content"):
        signage.publish(topic, '{"type": "browse", "session": "x"}')
    kiosk = clients("kiosk/kiosk-1")
    kiosk.publish(f"{P}/kiosk/kiosk-1/event", '{"type": "browse", "session": "marker"}')
    assert edge.topics_until(f"{P}/kiosk/kiosk-1/event") == [f"{P}/kiosk/kiosk-1/event"]


def _service(tmp_path: Path, port: int, **mqtt_section: Any) -> Any:
    from edge.app import App

    data = store_config(tmp_path, port, mqtt={"host": "127.0.0.1", "port": port, "client_id": "edge-deploy",
                                              **mqtt_section})
    return App(parse_config(data, env={})).start()


def test_edge_with_credentials_runs_and_hears_devices(tmp_path: Path, secure_broker: SecureBroker,
                                                      clients: Any) -> None:
    service = _service(tmp_path, secure_broker.port, username="edge", password=USERS["edge"])
    try:
        assert service.mqtt.connected.wait(10), service.mqtt.last_error
        url = f"http://127.0.0.1:{service.http_port}"
        # Its screen content (retained, written under the edge's ACL) reaches the signage account.
        signage = clients("display/entrance-1")
        signage.subscribe(f"{P}/display/entrance-1/content")
        assert signage.received.get(timeout=10)[0] == f"{P}/display/entrance-1/content"
        kiosk = clients("kiosk/kiosk-1")
        kiosk.publish(f"{P}/kiosk/kiosk-1/event",
                      '{"id": "k-evt-1", "ts": %d, "type": "browse", "session": "s1"}' % int(time.time() * 1000))
        from tests.conftest import ADMIN

        def recorded() -> bool:
            r = requests.get(f"{url}/api/v1/events", params={"kind": "kiosk"},
                             headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5)
            return any(e["source"] == "kiosk-1" and e["type"] == "browse" for e in r.json()["events"])

        try:
            wait_until(recorded, what="the kiosk event recorded by the edge")
        except AssertionError:
            print(requests.get(f"{url}/api/v1/deadletters", headers={"Authorization": f"Bearer {ADMIN}"}).text)
            print(requests.get(f"{url}/api/v1/events", headers={"Authorization": f"Bearer {ADMIN}"}).text)
            raise
        r = requests.get(f"{url}/readyz", timeout=5)
        assert r.json()["checks"]["broker"] == {"ok": True, "detail": "connected"}
    finally:
        service.stop()


def test_wrong_password_readyz_says_why(tmp_path: Path, secure_broker: SecureBroker) -> None:
    service = _service(tmp_path, secure_broker.port, username="edge", password="sZXtuY40XO9HqGxMfd6TixNn")
    try:
        wait_until(lambda: service.mqtt.last_error, what="the refusal recorded")
        r = requests.get(f"http://127.0.0.1:{service.http_port}/readyz", timeout=5)
        assert r.status_code == 503
        broker = r.json()["checks"]["broker"]
        assert broker["ok"] is False
        detail = broker["detail"].lower()
        assert "refused" in detail and ("not authorized" in detail or "bad user name or password" in detail), detail
        assert "not-the-password" not in r.text
    finally:
        service.stop()


def test_edge_connects_over_tls_with_the_ca(tmp_path: Path, secure_broker: SecureBroker) -> None:
    service = _service(tmp_path, secure_broker.tls_port, username="edge", password=USERS["edge"],
                       tls_ca=str(secure_broker.certs["ca"]))
    try:
        assert service.mqtt.connected.wait(10), service.mqtt.last_error
    finally:
        service.stop()


def test_diagnose_mqtt_explains_tls_and_port_mistakes(tmp_path: Path, secure_broker: SecureBroker) -> None:
    ca = str(secure_broker.certs["ca"])
    assert diagnose_mqtt("127.0.0.1", secure_broker.tls_port, ca) == "ok"
    other = make_certs(tmp_path / "other-ca")["ca"]
    msg = diagnose_mqtt("127.0.0.1", secure_broker.tls_port, str(other))
    assert "not trusted" in msg and "tls_ca" in msg, msg
    msg = diagnose_mqtt("127.0.0.1", secure_broker.port, ca)  # TLS against the plain listener
    assert "TLS" in msg and "8883" in msg, msg
    msg = diagnose_mqtt("127.0.0.1", free_port())
    assert "connection refused" in msg and "mqtt.port" in msg, msg
    msg = diagnose_mqtt("127.0.0.1", secure_broker.tls_port, str(tmp_path / "missing-ca.crt"))
    assert "cannot load mqtt.tls_ca" in msg, msg


def read_unit(path: Path) -> configparser.ConfigParser:
    """A shipped systemd unit as sections of keys, case kept."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment, method-assign]
    unit.read(path)
    return unit


def assert_systemd_accepts(path: Path, tmp_path: Path) -> None:
    """systemd-analyze verify finds nothing to say about the shipped unit (its ExecStart binary, absent here,
    pointed at /bin/true, everything else as shipped)."""
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing: scripts/test installs the systemd package"
    copy = tmp_path / path.name
    copy.write_text(path.read_text().replace("/opt/instore-edge/.venv/bin/instore-edge", "/bin/true"))
    r = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_systemd_unit_is_hardened() -> None:
    unit = read_unit(UNIT)
    s = unit["Service"]
    assert s["User"] == "instore-edge"
    assert s["Restart"] == "on-failure"
    assert s["ExecStart"] == "/opt/instore-edge/.venv/bin/instore-edge run -c /etc/instore-edge/store.toml"
    assert "network-online.target" in unit["Unit"]["After"] and "mosquitto.service" in unit["Unit"]["After"]
    assert s["EnvironmentFile"] == "-/etc/instore-edge/env"
    expected = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/instore-edge",
                "ProtectHome": "yes", "PrivateTmp": "yes", "ProtectKernelTunables": "yes",
                "ProtectKernelModules": "yes", "ProtectControlGroups": "yes",
                "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}
    for key, value in expected.items():
        assert s.get(key) == value, key
    assert s.get("MemoryMax") and s.get("CapabilityBoundingSet") == ""
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    assert_systemd_accepts(UNIT, tmp_path)
