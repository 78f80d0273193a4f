"""Property tests (Hypothesis): whatever arrives, every input ends as an event, a dead letter, an ignored
count or a 4xx, nothing stops a thread, and a good event sent after it is still recorded.

Inputs: arbitrary bytes; arbitrary JSON values (lone surrogates, NUL, NaN/Infinity, huge integers, deep
nesting, wrong types); and near-valid mutations of good payloads (a field replaced, removed, added,
wrapped), which find more than noise does. On every device topic and foreign gateway format, through:
- `normalize` alone (the most examples): never an exception other than Rejected/Ignored, and every event
  it makes is storable and is an event the central store accepts;
- the writer (`Pipeline.process`, a real SQLite file): one batch per example, every message accounted for;
- a real Mosquitto and a real `instore-edge run`: published = events + dead letters + ignored + duplicates;
- every JSON endpoint of the edge and of the central store, over real HTTP: never a 5xx.

Examples are derandomized (the same on every run, no example database): CI is reproducible. Counts are in
EXAMPLES; INSTORE_EDGE_HYPOTHESIS_SCALE=10 runs ten times more (and HYPOTHESIS_PROFILE=explore varies them).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from conftest import ADMIN, KIOSK, MqttHelper, store_config, wait_until
from edge import model as ev
from edge.broker import MosquittoBroker, free_port, wait_for_port
from edge.config import parse_config
from edge.model import INTERNAL_ERROR, Message
from edge.toml_writer import write_toml
from edge.wire.adapters import native, subscriptions
from edge.wire.fields import decode_json
from edge.wire.inbound import Inbound, site_of
from edge.wire.normalize import normalize
from sync import protocol as p
from test_central import Central, token_args
from test_central import ADMIN as CENTRAL_ADMIN
from test_central import TOKENS as CENTRAL_TOKENS

# Real servers answer in milliseconds, not microseconds: no deadline, and "slow" examples are expected.
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True,
                          suppress_health_check=SLOW_OK)
settings.register_profile("explore", deadline=None, derandomize=False, database=None, print_blob=True,
                          suppress_health_check=SLOW_OK)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
SCALE = float(os.environ.get("INSTORE_EDGE_HYPOTHESIS_SCALE", "1"))
EXAMPLES = {"normalize": 5000, "writer": 2000, "mqtt": 300, "edge_http": 1000, "central_http": 1000}


def examples(name: str) -> int:
    return max(1, int(EXAMPLES[name] * SCALE))


INPUTS: dict[str, int] = {}  # inputs actually tried, per test: printed at the end (pytest -s)


def tried(name: str, n: int = 1) -> None:
    INPUTS[name] = INPUTS.get(name, 0) + n


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print("\nHypothesis inputs tried: " + ", ".join(f"{k} {v:,}" for k, v in INPUTS.items()))


P = "instore/teststore"
NOW_MS = int(time.time() * 1000)
UUID = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"
MAC = "AA:BB:CC:DD:EE:FF"
IBEACON_MFD = "4c000215" + UUID.replace("-", "") + "00640007c5"

# --- strategies -------------------------------------------------------------------------------------

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=())
CHARS = st.one_of(st.characters(exclude_categories=()), SURROGATES, st.sampled_from('\x00\ufeff\\"/:+#\n'))
TEXT = st.one_of(st.text(CHARS, max_size=24), st.sampled_from(
    ["", " ", "online", "offline", "identify", "touch", "ibeacon", "x" * 300, "2025-03-14T10:00:00Z",
     "iBeacon:" + UUID + "-1-2", "irk:" + "ab" * 16, "session:s-1", "\ud800", "a\udfffb", "\ud83d\ude00"]))
NUMBERS = st.one_of(st.integers(), st.floats(), st.sampled_from(
    [0, -1, 2**63, -(2**63) - 1, 2**64, 10**30, 10**400, -(10**400), NOW_MS, NOW_MS // 1000, 1e308, -0.0]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(SCALARS, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(TEXT, kids, max_size=4),
                    max_leaves=12)
DEPTHS = st.integers(min_value=10, max_value=3000)


def encode(value: Any) -> bytes:
    """JSON text as devices send it: surrogates as \\u escapes, NaN/Infinity as bare words."""
    return json.dumps(value).encode()


def valid_payloads(ts: int) -> dict[str, list[Any]]:
    """Good payloads per topic kind; mutations start from these."""
    sighting = {"ts": ts, "beacon": {"type": "ibeacon", "uuid": UUID, "major": 100, "minor": 1}, "rssi": -60,
                "tx_power": -59}
    return {
        "beacon": [sighting, {"sightings": [sighting, {"ts": ts, "beacon": {"type": "eddystone-uid",
                   "namespace": "ab" * 10, "instance": "cd" * 6}, "rssi": -70}, {"ts": ts, "beacon": {
                   "type": "device", "id": "app-7"}, "rssi": -50}]}],
        "qr": [{"id": "q1", "ts": ts, "code": "LOYALTY-1234"}, {"ts": "2025-03-14T10:00:00", "code": "x"}],
        "window": [{"id": 7, "ts": ts, "type": "touch", "session": "s-1", "item": "SKU-1"}],
        "kiosk": [{"ts": ts, "type": "identify", "customer": "C-1", "session": "k-s1"},
                  {"ts": ts, "type": "browse", "session": "k-s1", "item": "SKU-1", "page": 2,
                   "filters": {"size": 42, "color": "red"}},
                  {"ts": ts, "type": "consent", "session": "k-s1", "customer": "C-1",
                   "consent": {"personalization": True, "marketing": False}}],
        "pos": [{"id": "r-1", "ts": ts, "customer": "C-1", "items": ["SKU-1", {"sku": "SKU-2", "qty": 2}],
                 "total": 59.9}],
        "espresense": [{"id": "iBeacon:" + UUID + "-100-1", "rssi": -60.5, "rssi@1m": -59, "distance": 1.2},
                       {"id": "irk:" + "ab" * 16, "rssi": -70}, {"id": "apple:1007:11-12", "rssi": -80}],
        "theengs": [{"id": MAC, "model_id": "IBEACON", "uuid": UUID, "major": 100, "minor": 1, "rssi": -60},
                    {"id": MAC, "manufacturerdata": IBEACON_MFD, "rssi": -70, "txpower": -59},
                    {"id": MAC, "servicedatauuid": "0xfeaa", "servicedata": "00e5" + "ab" * 10 + "cd" * 6,
                     "rssi": -75}],
    }


TOPICS = {
    "beacon": [f"{P}/beacon/gw-entrance", f"{P}/beacon/gw-shoes"],
    "qr": [f"{P}/qr/scanner-1", f"{P}/qr/web"],
    "window": [f"{P}/window/window-1", f"{P}/window/entrance-1"],
    "kiosk": [f"{P}/kiosk/kiosk-1/event", f"{P}/kiosk/kiosk-9/event"],
    "pos": [f"{P}/pos/till-1"],
    "espresense": ["espresense/devices/iBeacon:x/room-1"],
    "theengs": [f"home/theengs-1/BTtoMQTT/{MAC.replace(':', '')}"],
}
STATUS_TOPICS = ["espresense/rooms/room-1/status", "home/theengs-1/LWT", "espresense/rooms/room-9/status"]
ODD_TOPICS = [f"{P}/lighting/lamp-1", f"{P}/beacon/gw-nowhere", f"{P}/qr/bad id!", f"{P}/kiosk/kiosk-1/other",
              f"{P}/deadletter/x", f"{P}/pos/till-1/extra", "espresense/devices/x/room-9", "home/theengs-9/BTtoMQTT/x"]


@st.composite
def mutated(draw: st.DrawFn, template: Any) -> Any:
    """A good payload with one or two things wrong: a value replaced, a key removed or added, a wrap."""
    value = json.loads(json.dumps(template))
    for _ in range(draw(st.integers(1, 2))):
        paths: list[list[Any]] = []

        def walk(node: Any, path: list[Any]) -> None:
            paths.append(path)
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, [*path, k])
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, [*path, i])

        walk(value, [])
        op = draw(st.sampled_from(["replace", "replace", "remove", "add", "wrap", "deep", "root"]))
        if op == "root":  # the whole payload: another JSON value, or this one wrapped in a list
            return draw(st.one_of(JSON, st.just([value])))
        if len(paths) == 1:  # nothing inside (an earlier mutation emptied it): replace it all
            return draw(JSON)
        path = draw(st.sampled_from(paths[1:]))
        parent = value
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        target = parent[key]
        if op == "replace":
            parent[key] = draw(SCALARS | JSON)
        elif op == "remove":
            del parent[key]
        elif op == "add" and isinstance(target, dict):
            target[draw(TEXT | st.sampled_from(["id", "ts", "type", "session", "beacon", "items", "consent"]))] = \
                draw(JSON)
        elif op == "add" and isinstance(target, list):
            target.append(draw(JSON))
        elif op == "wrap":
            parent[key] = draw(st.sampled_from([[target], {"value": target}, str(target)[:50]]))
        elif op == "deep":
            depth = draw(st.integers(5, 60))
            inner: Any = target
            for _ in range(depth):
                inner = [inner]
            parent[key] = inner
    return value


VARIABLE_KEYS = frozenset({"id", "session", "item", "code", "customer", "target", "event_id", "sku"})
SUFFIXES = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", max_size=8)


@st.composite
def varied(draw: st.DrawFn, template: Any) -> Any:
    """A good payload with its ids and sessions varied (Hypothesis does not repeat an identical example)."""
    def vary(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (v + draw(SUFFIXES) if k in VARIABLE_KEYS and isinstance(v, str) and ":" not in v
                        else vary(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [vary(v) for v in node]
        return node

    return vary(template)


def payloads(kind: str) -> st.SearchStrategy[bytes]:
    templates = valid_payloads(NOW_MS)[kind]
    near_valid = st.sampled_from(templates).flatmap(mutated).map(encode)  # most of the finds come from these
    good = st.sampled_from(templates).flatmap(varied).map(encode)
    return st.one_of(
        near_valid, near_valid, near_valid, near_valid, good, good,
        JSON.map(encode),
        st.binary(max_size=200),
        DEPTHS.map(lambda n: ("[" * n + "]" * n).encode()),
        DEPTHS.map(lambda n: ('{"a":' * n + "1" + "}" * n).encode()),
        st.sampled_from([b"NaN", b'{"ts": NaN}', b'{"ts": Infinity, "code": "x"}', b'{"total": 1e999}',
                         b"\xef\xbb\xbf{}", b'{"id": "x\\ud800", "ts": 1715000000000, "code": "x"}',
                         b'{"a": 1' + b"0" * 5000 + b"}", b"\xed\xa0\x80"]),
    )


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from([*TOPICS, *TOPICS, "status", "odd"]))
    if kind == "status":
        return draw(st.sampled_from(STATUS_TOPICS)), draw(st.one_of(
            st.sampled_from([b"online", b"offline", b" Online\n", b"OFFLINE"]), st.binary(max_size=20),
            TEXT.map(lambda t: t.encode("utf-8", "surrogatepass"))))
    if kind == "odd":
        return draw(st.sampled_from(ODD_TOPICS)), draw(payloads(draw(st.sampled_from(list(TOPICS)))))
    return draw(st.sampled_from(TOPICS[kind])), draw(payloads(kind))


# --- the store's configuration ----------------------------------------------------------------------

def config_data(tmp: Path, broker_port: int, http_port: int = 0) -> dict[str, Any]:
    data = store_config(tmp, broker_port, http={"port": http_port}, qr={"secret": "property-test-secret-0123456789"})
    data["gateways"] = [*data["gateways"], {"id": "room-1", "zone": "shoes", "format": "espresense"},
                        {"id": "theengs-1", "zone": "entrance", "format": "theengs"}]
    return data


def outcome(cfg: Any, topic: str, payload: bytes) -> tuple[str, Any]:
    """What the edge must do with a message: ("events", [Event]), ("dead", reason) or ("ignored", reason)."""
    try:
        events = normalize(topic, payload, time.time(), cfg, 1)
    except ev.Rejected as exc:
        return "dead", exc.reason
    except ev.Ignored as exc:
        return "ignored", exc.reason
    return "events", events


def as_wire(e: ev.Event, seq: int) -> dict[str, Any]:
    """The event as the edge's sync client sends it (edge/store/outbox.py, outbox_batch)."""
    out: dict[str, Any] = {"event_id": e.event_id, "kind": e.kind, "ts": e.ts, "seq": seq, "received_at": e.received_at}
    for name in ("type", "source", "zone", "subject", "customer"):
        if getattr(e, name) is not None:
            out[name] = getattr(e, name)
    if e.data:
        out["data"] = json.loads(json.dumps(e.data, separators=(",", ":")))
    return out


# --- 1. normalize: the most examples ----------------------------------------------------------------

@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return parse_config(config_data(tmp_path_factory.mktemp("cfg"), 1883), env={})


@settings(max_examples=examples("normalize"))
@given(message=messages())
def test_normalize_refuses_or_makes_events_the_store_and_the_central_can_hold(cfg, message):
    topic, payload = message
    tried("normalize: messages")
    verdict, value = outcome(cfg, topic, payload)  # raises if normalize raised anything else: a bug
    event(f"{verdict}: {value if verdict != 'events' else len(value)}")  # --hypothesis-show-statistics
    if verdict != "events":
        assert isinstance(value, str) and value
        return
    for i, e in enumerate(value):
        for name in ("event_id", "kind", "source", "zone", "subject", "customer", "type"):
            text = getattr(e, name)
            assert text is None or (isinstance(text, str) and p.lone_surrogate(text) is None), name
        json.dumps(e.data, allow_nan=False).encode("utf-8")  # storable as strict JSON, UTF-8
        try:
            p.WireEvent.from_dict(as_wire(e, i + 1))
        except p.InvalidEvent as exc:  # the central store would refuse it: only for size, never for shape
            assert exc.reason == p.OVERSIZED, (exc.reason, exc.detail)


@settings(max_examples=examples("normalize"))
@given(topic=st.sampled_from(TOPICS["beacon"]), payload=payloads("beacon"))
def test_the_one_pass_sighting_reader_accepts_only_what_the_careful_one_accepts_and_reads_it_alike(cfg, topic,
                                                                                                 payload):
    tried("normalize: native sightings, fast vs careful")
    site = site_of(cfg)
    gateway = topic.rsplit("/", 1)[1]
    fast = native.fast_sightings(topic, payload, gateway, 1715000000.5, 1, site, site.gateways[gateway])
    event(f"fast reader: {'accepted' if fast is not None else 'referred to the careful one'}")
    if fast is None:
        return
    careful = native.sightings(Inbound(topic, payload, gateway, 1715000000.5, 1, site, decode_json(payload)),
                               site.gateways[gateway])
    assert fast == careful


# --- 2. the writer: one batch per example, on a real SQLite file ------------------------------------

@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from edge.app import App

    tmp = tmp_path_factory.mktemp("writer")
    svc = App(parse_config(config_data(tmp, 1883), env={}))  # not started: the test drives the writer
    svc.conn.execute("PRAGMA synchronous=OFF")  # durability is not what this test is about: speed is
    yield svc
    svc.conn.close()


_serial = iter(range(10**9))


@settings(max_examples=examples("writer"))
@given(batch=st.lists(messages(), min_size=1, max_size=12))
def test_the_writer_accounts_for_every_message_of_any_batch_and_goes_on(service, batch):
    pipeline = service.pipeline
    tried("writer: batches")
    tried("writer: messages", len(batch))
    now = time.time()
    expected = [outcome(service.cfg, topic, payload) for topic, payload in batch]
    msgs = [Message(topic, payload, 1, 0, now) for topic, payload in batch]
    res = pipeline.process(msgs, now)  # no exception: a raise here would have cost the batch a careful redo
    assert [d["reason"] for d in res.deadletters if d["reason"] == INTERNAL_ERROR] == []
    assert sorted(d["reason"] for d in res.deadletters) == sorted(v for k, v in expected if k == "dead")
    assert sum(res.ignored.values()) == sum(1 for k, _ in expected if k == "ignored")
    produced = sum(len(v) for k, v in expected if k == "events")
    device_events = sum(n for kind, n in res.recorded.items() if kind in ev.EVENT_KINDS or kind == ev.GATEWAY_STATUS)
    assert device_events + res.duplicates >= produced
    native = [e.event_id for k, v in expected if k == "events" for e in v if not e.event_id.startswith("h:")]
    if native:
        marks = ",".join("?" * len(native))
        found = {r[0] for r in service.conn.execute(f"SELECT event_id FROM events WHERE event_id IN ({marks})",
                                                    native)}
        assert found == set(native)
    good = Message(f"{P}/qr/scanner-1", encode({"id": f"good-{next(_serial)}", "ts": NOW_MS, "code": "x"}), 1, 0, now)
    assert pipeline.process([good], now).recorded["qr"] == 1


# --- 3. end to end: real broker, real `instore-edge run`, real HTTP ---------------------------------

class World:
    """A Mosquitto, an `instore-edge run` and a central store for the whole module (one per test is too slow)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.broker = MosquittoBroker(tmp / "mosquitto").start()
        self.http_port = free_port()
        data = config_data(tmp, self.broker.port, self.http_port)
        self.cfg = parse_config(data, env={})
        self.db = tmp / "edge.db"
        self.log = tmp / "edge.log"
        with open(self.log, "ab") as log:
            self.edge = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "run", "-c", str(write_toml(tmp / "store.toml", data))],
                cwd=Path(__file__).resolve().parent.parent, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        wait_for_port(self.http_port, 20)
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.pub = MqttHelper(self.broker.port)
        self.serial = 0

    def edge_alive(self) -> bool:
        ok = self.edge.poll() is None and requests.get(self.url + "/healthz", timeout=10).status_code == 200
        return ok

    def query(self, sql: str, *params: Any) -> list[tuple]:
        with sqlite3.connect(self.db, timeout=10) as conn:
            return conn.execute(sql, params).fetchall()

    def ignored_total(self) -> int:
        text = requests.get(self.url + "/metrics", timeout=10).text
        return sum(int(float(v)) for v in re.findall(r"^instore_edge_ignored_total\{[^}]*\} (\S+)$", text, re.M))

    def close(self) -> None:
        self.pub.close()
        if self.edge.poll() is None:
            self.edge.terminate()
            try:
                self.edge.wait(15)
            except subprocess.TimeoutExpired:
                self.edge.kill()
                self.edge.wait()
        self.broker.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("world"))
    try:
        wait_until(w.edge_alive, timeout=20, what="the edge")
        yield w
    finally:
        w.close()
    assert w.edge.returncode == 0, w.log.read_text()[-3000:]


@settings(max_examples=examples("mqtt"))
@given(batch=st.lists(messages(), min_size=5, max_size=40))
def test_every_published_message_is_an_event_a_dead_letter_or_ignored_and_ingest_goes_on(world, batch):
    world.serial += 1
    tried("mqtt: batches")
    tried("mqtt: messages", len(batch))
    sentinel = f"sentinel-{world.serial}"
    # The edge hears P/# and its foreign gateways' topics: a message on another topic never reaches it.
    filters = [f"{P}/#", *subscriptions(world.cfg)]
    expected = [outcome(world.cfg, topic, payload) for topic, payload in batch
                if any(topic_matches_sub(f, topic) for f in filters)]
    dead_before = world.query("SELECT count(*) FROM deadletters")[0][0]
    ignored_before = world.ignored_total()
    world.pub.publish_many([*batch, (f"{P}/qr/scanner-1", {"id": sentinel, "ts": NOW_MS, "code": "x"})])
    wait_until(lambda: world.query("SELECT 1 FROM events WHERE event_id = ?", f"qr:scanner-1:{sentinel}"),
               timeout=20, what="the good event after the batch")
    reasons = sorted(v for k, v in expected if k == "dead")

    def dead() -> list[str]:
        return sorted(r[0] for r in world.query("SELECT reason FROM deadletters WHERE id > ?", dead_before))

    wait_until(lambda: len(dead()) >= len(reasons), timeout=10, what="the dead letters")
    assert dead() == reasons
    n_ignored = sum(1 for k, _ in expected if k == "ignored")
    wait_until(lambda: world.ignored_total() - ignored_before == n_ignored, timeout=10, what="the ignored count")
    native = {e.event_id for k, v in expected if k == "events" for e in v if not e.event_id.startswith("h:")}
    for event_id in native:  # recorded now, or before (a duplicate)
        assert world.query("SELECT 1 FROM events WHERE event_id = ?", event_id), event_id
    assert world.edge_alive()


# --- 4. every JSON endpoint of the edge --------------------------------------------------------------

def bodies(template: Any) -> st.SearchStrategy[bytes]:
    """Request bodies: near-valid mutations, any JSON value, bytes. Nesting stays below the JSON parser's
    recursion limit here: how deeper bodies are refused belongs to the HTTP layer's own tests."""
    good = varied(template).map(encode)
    return st.one_of(mutated(template).map(encode), mutated(template).map(encode), good, good,
                     JSON.map(encode), st.binary(max_size=100),
                     st.integers(5, 200).map(lambda n: ("[" * n + "]" * n).encode()))


EDGE_ENDPOINTS = {
    "events": ("POST", "/api/v1/events", KIOSK, {"kind": "window", "device": "window-1", "event": {
        "ts": NOW_MS, "type": "touch", "session": "s-1", "item": "SKU-1"}}),
    "qr": ("POST", "/api/v1/qr", ADMIN, {"kind": "touchpoint", "target": "SKU-1", "ttl_s": 3600, "format": "svg"}),
    "handoff": ("POST", "/kiosk/kiosk-1/handoff", KIOSK, {"session": "k-s1", "customer": "C-1"}),
}


@st.composite
def edge_requests(draw: st.DrawFn) -> tuple[str, str, str, bytes]:
    name = draw(st.sampled_from([*EDGE_ENDPOINTS, "erase"]))
    if name == "erase":
        customer = draw(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=140))
        return "DELETE", "/api/v1/customers/" + quote(customer, safe=""), ADMIN, b""
    method, path, token, template = EDGE_ENDPOINTS[name]
    return method, path, token, draw(bodies(template))


@settings(max_examples=examples("edge_http"))
@given(call=edge_requests())
def test_every_edge_endpoint_answers_any_body_with_a_success_or_a_4xx(world, call):
    method, path, token, body = call
    tried("edge HTTP: requests")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    r = requests.request(method, world.url + path, data=body, headers=headers, timeout=20)
    event(f"{path.rsplit('/', 1)[0] if method == 'DELETE' else path}: {r.status_code}")
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.json()["error"]["code"] and r.json()["error"]["message"]
    world.serial += 1
    good = {"kind": "qr", "device": "scanner-1", "event": {"id": f"http-{world.serial}", "ts": NOW_MS, "code": "x"}}
    after = requests.post(world.url + "/api/v1/events", json=good, headers={"Authorization": f"Bearer {KIOSK}"},
                          timeout=20)
    assert after.status_code == 201, after.text


# --- 5. every JSON endpoint of the central store -----------------------------------------------------

@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def central(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Central]:
    """The central store on each engine in turn (PostgreSQL cannot hold what SQLite can: a NUL, for one)."""
    db = request.getfixturevalue("postgres").new_database() if request.param == "postgresql" else None
    c = Central(tmp_path_factory.mktemp("central"), *token_args(), db=db)
    c.upsert({"customer_id": "C-1", "first_name": "Giulia", "identities": ["loyalty:1"]})
    c.upsert({"customer_id": "C-2", "first_name": "Marco"})
    yield c
    assert c.stop() == 0


WIRE_EVENT = {"event_id": "e-1", "kind": "kiosk", "type": "consent", "ts": NOW_MS / 1000, "seq": 1, "source": "kiosk-1",
              "zone": "shoes", "subject": "session:s-1", "customer": "C-1", "received_at": NOW_MS / 1000,
              "data": {"session": "s-1", "consent": {"personalization": True}}}
CENTRAL_ENDPOINTS = {
    "push": ("POST", "/v1/stores/s1/events", CENTRAL_TOKENS["s1"], {"events": [
        WIRE_EVENT, {"event_id": "e-2", "kind": "identity_link", "ts": NOW_MS / 1000, "customer": "C-1",
                     "data": {"key": "loyalty:9", "via": "kiosk:kiosk-1"}}, {"event_id": "e-3", "kind": "beacon",
                                                                              "ts": NOW_MS / 1000}]}),
    "resolve": ("POST", "/v1/identities/resolve", CENTRAL_TOKENS["s2"], {"keys": ["loyalty:1", "device:x"]}),
    "profiles": ("POST", "/v1/admin/profiles", CENTRAL_ADMIN, {
        "customer_id": "C-1", "first_name": "Giulia", "segments": ["a"], "tier": "gold",
        "consents": {"personalization": True, "marketing": False}, "preferences": {"size": 42},
        "wishlist": ["SKU-1"], "cart": [], "identities": ["loyalty:1"],
        "orders_ready": [{"order_id": "o-1", "items": ["SKU-1"], "ready_at": "2025-03-14T10:00:00Z"}]}),
    "merge": ("POST", "/v1/admin/profiles/merge", CENTRAL_ADMIN, {"from": "C-2", "into": "C-1"}),
}


@st.composite
def central_requests(draw: st.DrawFn) -> tuple[str, str, str, bytes]:
    name = draw(st.sampled_from([*CENTRAL_ENDPOINTS, "erase", "changes"]))
    if name in ("erase", "changes"):
        text = quote(draw(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=60)), safe="")
        if name == "erase":
            return "DELETE", f"/v1/admin/profiles/{text}", CENTRAL_ADMIN, b""
        return "GET", f"/v1/profiles/changes?since={text}", CENTRAL_TOKENS["s1"], b""
    method, path, token, template = CENTRAL_ENDPOINTS[name]
    if name == "push" and draw(st.booleans()):  # a batch of events, one by one mutated: per-event rejections
        events = draw(st.lists(st.sampled_from(template["events"]).flatmap(mutated), min_size=1, max_size=8))
        return method, path, token, encode({"events": events})
    return method, path, token, draw(bodies(template))


@settings(max_examples=examples("central_http"))
@given(call=central_requests())
def test_every_central_endpoint_answers_any_body_with_a_success_or_a_4xx(central, call):
    method, path, token, body = call
    tried("central HTTP: requests")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    r = central.request(method, path, token=None, data=body, headers=headers)
    event(f"{path.split('?')[0].rsplit('/', 1)[0] if method != 'POST' else path}: {r.status_code}")
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.json()["error"]["code"] and r.json()["error"]["message"]
    elif path.endswith("/events"):  # every event of the batch in exactly one list
        sent = json.loads(body)["events"]
        answer = r.json()
        assert len(answer["accepted"]) + len(answer["duplicates"]) + len(answer["rejected"]) == len(sent)
        assert len({x["index"] for x in answer["rejected"]}) == len(answer["rejected"])
    good = {"event_id": f"good-{time.monotonic_ns()}", "kind": "beacon", "ts": NOW_MS / 1000}
    after = central.push("s1", [good])
    assert after.status_code == 200 and after.json()["accepted"] == [good["event_id"]]
