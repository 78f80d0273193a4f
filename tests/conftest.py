"""Fixtures that build a fresh world per test: a real Mosquitto on a free port, real SQLite files,
the edge in-process or as a real subprocess (for kill -9), and MQTT helpers that wait for acks."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion

from edge.toml_writer import write_toml
from edge.broker import MosquittoBroker, find_mosquitto, free_port, wait_for_port
from edge.config import Config, parse_config
from pgserver import PostgresMissing, PostgresServer

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "rxPccXxRXbQNLwUVDB9VF-aQ"
KIOSK = "ZL_QHcUwurivTRmVNB5IQwkh"
SIGNAGE = "PgrVimCyC5BODlvPrjCtO0Vg"


def pytest_sessionstart(session: pytest.Session) -> None:
    if find_mosquitto() is None:
        raise pytest.UsageError("Mosquitto is not installed: the tests need a real broker. Run the test "
                                "command from the README (scripts/test), which installs it, or "
                                "`sudo apt-get install mosquitto`.")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (started on first use)."""
    try:
        server = PostgresServer()
    except PostgresMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A fresh database with the central store's schema: its postgresql:// URL."""
    return postgres.new_database()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    b = MosquittoBroker(tmp_path / "mosquitto").start()
    yield b
    b.stop()


def store_config(tmp_path: Path, broker_port: int, **sections: Any) -> dict[str, Any]:
    """The test store: two zones with a gateway and a screen each, a kiosk, a welcome rule."""
    data: dict[str, Any] = {
        "store": {"id": "teststore", "name": "Test store", "timezone": "Europe/Rome"},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": f"edge-{tmp_path.name}"[:60]},
        "db": {"path": str(tmp_path / "edge.db")},
        "http": {"host": "127.0.0.1", "port": 0, "tokens": {"admin": ADMIN, "kiosk": KIOSK, "signage": SIGNAGE}},
        "zones": [{"id": "entrance", "name": "Entrance", "exit_after_s": 2.0},
                  {"id": "shoes", "name": "Shoes", "exit_after_s": 2.0}],
        "gateways": [{"id": "gw-entrance", "zone": "entrance"}, {"id": "gw-shoes", "zone": "shoes"}],
        "screens": [{"id": "entrance-1", "zone": "entrance", "playlist": ["autumn", "news"]},
                    {"id": "shoes-1", "zone": "shoes", "playlist": ["autumn"]}],
        "kiosks": [{"id": "kiosk-1", "zone": "shoes"}],
        "content": [{"id": "autumn", "title": "Autumn collection"}, {"id": "news", "title": "New arrivals"},
                    {"id": "welcome", "title": "Welcome!"}],
        "rules": [{"id": "entrance-welcome", "priority": 10, "ttl_s": 2.0,
                   "when": {"zone": "entrance", "event": "zone_enter"},
                   "show": {"content_id": "welcome", "template": "message", "data": {"title": "Welcome!"}}}],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


@pytest.fixture
def make_config(tmp_path: Path, broker: MosquittoBroker) -> Callable[..., Config]:
    def make(**sections: Any) -> Config:
        return parse_config(store_config(tmp_path, broker.port, **sections), env={})

    return make


class EdgeHandle:
    """An in-process edge service with its HTTP base URL."""

    def __init__(self, cfg: Config) -> None:
        from edge.app import App

        self.cfg = cfg
        self.service = App(cfg).start()
        self.url = f"http://127.0.0.1:{self.service.http_port}"
        assert self.service.mqtt.connected.wait(10), "edge did not connect to the broker"

    def get(self, path: str, token: str | None = ADMIN, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.url + path, headers=headers, timeout=10, **kw)

    def events(self, kind: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        params = {"limit": limit, **({"kind": kind} if kind else {})}
        r = self.get("/api/v1/events", params=params)
        r.raise_for_status()
        return r.json()["events"]

    def stop(self) -> None:
        self.service.stop()


@pytest.fixture
def edge(make_config: Callable[..., Config]) -> Iterator[EdgeHandle]:
    handle = EdgeHandle(make_config())
    yield handle
    handle.stop()


class EdgeProcess:
    """The edge as a real `instore-edge run` process, for crash tests."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> EdgeProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "-c", str(self.config_path)],
                                     cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})})
        log.close()
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def edge_process(tmp_path: Path, broker: MosquittoBroker) -> Iterator[Callable[..., EdgeProcess]]:
    started: list[EdgeProcess] = []

    def make(**sections: Any) -> EdgeProcess:
        port = free_port()
        data = store_config(tmp_path, broker.port, http={"port": port, **sections.pop("http", {})}, **sections)
        path = write_toml(tmp_path / "store.toml", data)
        p = EdgeProcess(path, tmp_path / "edge.log")
        p.port = port  # type: ignore[attr-defined]
        started.append(p)
        return p

    yield make
    for p in started:
        if p.proc and p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


class MqttHelper:
    """A test client: publishes at QoS 1 waiting for acks (paho's message ids wrap at 65,535), and records
    what arrives on subscribed topics."""

    def __init__(self, port: int, client_id: str = "", *, clean: bool = True) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=clean)
        self.client.max_inflight_messages_set(200)
        self.received: queue.Queue[tuple[str, bytes, bool]] = queue.Queue()
        self.client.on_message = lambda c, u, m: self.received.put((m.topic, m.payload, m.retain))
        self.connected = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.client.on_disconnect = lambda c, u, f, rc, p: self.connected.clear()
        # Acks by message id: MQTTMessageInfo raises for a message queued while disconnected, although paho
        # keeps it and sends it after reconnecting.
        self.acked: set[int] = set()
        self._acked_lock = threading.Lock()
        self.client.on_publish = self._on_publish
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        assert self.connected.wait(10), "test client could not connect to the broker"

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._acked_lock:
            self.acked.add(mid)

    def publish(self, topic: str, payload: dict | bytes | str, qos: int = 1, retain: bool = False) -> None:
        data = json.dumps(payload) if isinstance(payload, dict) else payload
        info = self.client.publish(topic, data, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(20)

    def publish_many(self, items: list[tuple[str, dict | bytes]], window: int = 500, timeout: float = 180) -> None:
        """Publish everything at QoS 1, never more than `window` unacknowledged at once. Survives broker
        restarts: paho keeps unacknowledged messages and resends them after reconnecting."""
        pending: list[mqtt.MQTTMessageInfo] = []
        deadline = time.monotonic() + timeout

        def drain() -> None:
            for info in pending:
                while True:
                    with self._acked_lock:
                        if info.mid in self.acked:
                            self.acked.discard(info.mid)
                            break
                    if time.monotonic() > deadline:
                        raise AssertionError("publisher: broker did not acknowledge in time")
                    time.sleep(0.005)
            pending.clear()

        for topic, payload in items:
            data = json.dumps(payload) if isinstance(payload, dict) else payload
            pending.append(self.client.publish(topic, data, qos=1))
            if len(pending) >= window:
                drain()
        drain()

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)

    def wait_for(self, predicate: Callable[[str, dict], bool], timeout: float = 10) -> tuple[str, dict, bool]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("expected MQTT message did not arrive in time")
            try:
                topic, payload, retain = self.received.get(timeout=remaining)
            except queue.Empty:
                continue
            try:
                data = json.loads(payload)
            except ValueError:
                continue
            if predicate(topic, data):
                return topic, data, retain

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mqtt_client(broker: MosquittoBroker) -> Iterator[Callable[..., MqttHelper]]:
    clients: list[MqttHelper] = []

    def make(client_id: str = "", clean: bool = True) -> MqttHelper:
        c = MqttHelper(broker.port, client_id, clean=clean)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 10, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what or 'condition'}")


def sighting(ts_ms: int, minor: int = 1, rssi: int = -60) -> dict[str, Any]:
    return {"ts": ts_ms, "beacon": {"type": "ibeacon", "uuid": "f7826da6-4fa2-4e98-8024-bc5b71e0893e",
                                    "major": 100, "minor": minor}, "rssi": rssi}


def now_ms() -> int:
    return int(time.time() * 1000)


__all__ = ["ADMIN", "KIOSK", "SIGNAGE", "EdgeHandle", "MqttHelper", "sighting", "now_ms", "wait_until",
           "write_toml", "store_config", "wait_for_port", "os"]
