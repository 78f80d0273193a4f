"""Shared pieces of the benchmarks: the store config, payloads, MQTT roles run in their own processes,
and small helpers (/proc RSS, percentiles).

Each MQTT role (publisher, raw subscriber, display watcher) is a plain function meant to run in a
separate process (multiprocessing "spawn"), so the process under test never shares a GIL with the
load generator or the measuring client.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.toml_writer import write_toml  # noqa: E402  (re-exported for the benchmarks)

STORE = "benchstore"
PREFIX = f"instore/{STORE}"
# The raw subscriber's rounds go to another store's topics of the same length: the edge, subscribed to
# PREFIX/#, never hears them, and the raw side parses the same bytes it would.
RAW_PREFIX = "instore/rawbenches"
GW_ENTRANCE = "gw-entrance"
GW_SHOES = "gw-shoes"
RULE_ID = "entrance-welcome"
UUID_POOL = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"  # regulars walking around (always present)
UUID_NEW = "b9407f30-f5f8-466e-aff9-25556b57fe6d"  # subjects entering the store, one per sighting
POOL_SIZE = 500
ADMIN = "wvsTw6pISMZiFT5zDGBwWwqh"


# ---------------------------------------------------------------------------------------------------
# Config (the same shape as tests/conftest.py's store_config, kept here so bench/ owns its copy)


def store_config(tmp: Path, broker_port: int, client_id: str = "bench-edge", protocol: str = "5") -> dict[str, Any]:
    return {
        "store": {"id": STORE, "name": "Bench store", "timezone": "Europe/Rome"},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": client_id, "protocol": protocol},
        "db": {"path": str(tmp / "edge.db")},
        "http": {"host": "127.0.0.1", "port": 0, "tokens": {"admin": ADMIN}},
        "zones": [{"id": "entrance", "name": "Entrance", "exit_after_s": 30.0},
                  {"id": "shoes", "name": "Shoes", "exit_after_s": 30.0}],
        "gateways": [{"id": GW_ENTRANCE, "zone": "entrance"}, {"id": GW_SHOES, "zone": "shoes"}],
        "screens": [{"id": "entrance-1", "zone": "entrance", "playlist": ["autumn", "news"]},
                    {"id": "shoes-1", "zone": "shoes", "playlist": ["autumn"]}],
        "content": [{"id": "autumn", "title": "Autumn collection"}, {"id": "news", "title": "New arrivals"},
                    {"id": "welcome", "title": "Welcome!"}],
        "rules": [{"id": RULE_ID, "priority": 10, "ttl_s": 2.0,
                   "when": {"zone": "entrance", "event": "zone_enter"},
                   "show": {"content_id": "welcome", "template": "message", "data": {"title": "Welcome!"}}}],
    }


# ---------------------------------------------------------------------------------------------------
# The load: native single-sighting payloads (docs/architecture.md, "P/beacon/{gateway}")


def sighting(ts_ms: int, uuid: str, major: int, minor: int, rssi: int) -> bytes:
    return json.dumps({"ts": ts_ms, "beacon": {"type": "ibeacon", "uuid": uuid, "major": major, "minor": minor},
                       "rssi": rssi}, separators=(",", ":")).encode()


def mixed_message(i: int, ts_ms: int, new_every: int, new_major_base: int,
                  prefix: str = PREFIX) -> tuple[str, bytes, int | None]:
    """Message i of the mix: every `new_every`-th is a NEW subject at the entrance (→ zone_enter → rule →
    retained display message), the rest are repeat sightings of POOL_SIZE regulars, each always heard by
    the same gateway (so they stay in one zone: no enter/exit churn). Returns (topic, payload, new index)."""
    if new_every and i % new_every == 0:
        k = i // new_every
        major, minor = new_major_base + k // 65536, k % 65536
        # a strong reading: well above any zone's min_rssi, so the first sighting places the subject
        return f"{prefix}/beacon/{GW_ENTRANCE}", sighting(ts_ms, UUID_NEW, major, minor, -50 - k % 10), k
    rssi = -45 - (i % 40)
    j = (i - (i // new_every if new_every else 0) - 1) % POOL_SIZE  # the regulars in turn
    gw = GW_SHOES if j % 2 else GW_ENTRANCE
    return f"{prefix}/beacon/{gw}", sighting(ts_ms, UUID_POOL, 1, j, rssi), None


def seed_history(cfg_data: dict[str, Any], n: int, days: float = 30.0) -> float:
    """Give the edge's database the event log of a store that has been running: n past beacon sightings
    (spread over `days`, ids made by the edge's own normalizer, already synced: no outbox rows).
    Inserting into a big log is what the indexes on `events` make slow or not. Returns seconds taken."""
    from edge.config import parse_config
    from edge.wire.normalize import normalize
    from edge.store.writer import open_writer

    t0 = time.time()
    cfg = parse_config(cfg_data, env={})
    conn = open_writer(cfg.db.path)
    start_ms = int((time.time() - days * 86400) * 1000)
    step_ms = days * 86400 * 1000 / max(n, 1)

    def rows():
        for i in range(n):
            ts_ms = start_ms + int(i * step_ms)
            topic, payload, _ = mixed_message(i, ts_ms, 10, 50000)
            for e in normalize(topic, payload, ts_ms / 1000 + 0.05, cfg, 1):
                yield (e.event_id, e.kind, e.type, e.source, e.zone, e.subject, e.customer, e.ts, e.received_at,
                       json.dumps(e.data, separators=(",", ":")) if e.data else None)

    conn.execute("BEGIN")
    conn.executemany("INSERT OR IGNORE INTO events(event_id, kind, type, source, zone, subject, customer, ts, "
                     "received_at, data) VALUES (?,?,?,?,?,?,?,?,?,?)", rows())
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.time() - t0


# ---------------------------------------------------------------------------------------------------
# MQTT roles (each runs in its own process)


def _client(client_id: str = "", *, v5: bool = True, clean: bool = True):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    if v5:
        return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                           protocol=MQTTProtocolVersion.MQTTv5)
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                       protocol=MQTTProtocolVersion.MQTTv311, clean_session=clean)


def _connect_props(expiry_s: int):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry_s
    return props


def create_session(port: int, client_id: str, topics: list[str], *, no_local: bool = True,
                   expiry_s: int = 3600, timeout: float = 10.0, v5: bool = True) -> None:
    """Create a persistent session (MQTT v5 with an expiry, or 3.1.1 clean_session=False) with QoS 1
    subscriptions, then go offline: the broker queues everything published on those topics for that
    client id until it comes back."""
    from paho.mqtt.subscribeoptions import SubscribeOptions

    c = _client(client_id, v5=v5, clean=False)
    done = threading.Event()
    if v5:
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(
            [(t, SubscribeOptions(qos=1, noLocal=no_local)) for t in topics])
    else:
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe([(t, 1) for t in topics])
    c.on_subscribe = lambda cl, u, mid, rcs, p: done.set()
    if v5:
        c.connect("127.0.0.1", port, clean_start=True, properties=_connect_props(expiry_s))
    else:
        c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        if not done.wait(timeout):
            raise RuntimeError(f"could not create the session {client_id!r}")
    finally:
        c.disconnect()
        c.loop_stop()


class _Window:
    """At most `size` QoS 1 publications unacknowledged (paho's message ids wrap at 65,535)."""

    def __init__(self, size: int) -> None:
        self.sem = threading.BoundedSemaphore(size)
        self.acked = 0

    def on_publish(self, client, userdata, mid, rc, props) -> None:
        self.acked += 1
        self.sem.release()


def publisher(port: int, mode: str, n: int, rate: float, new_every: int, new_major_base: int,
              window: int, conn, prefix: str = PREFIX) -> None:
    """Publish n mixed sightings at QoS 1. mode "flood": as fast as the broker acks within the window;
    mode "paced": message i at t0 + i/rate, each carrying its publish time (ms) as "ts". Sends back
    {"elapsed", "sent", "new": {k: publish time (s)}}."""
    try:
        c = _client(f"bench-pub-{os.getpid()}")
        c.max_inflight_messages_set(window)
        win = _Window(window)
        c.on_publish = win.on_publish
        connected = threading.Event()
        c.on_connect = lambda cl, u, f, rc, p: connected.set()
        c.connect("127.0.0.1", port)
        c.loop_start()
        if not connected.wait(10):
            raise RuntimeError("publisher could not connect")
        new_times: dict[int, float] = {}
        t0 = time.time()
        last_ms = 0
        for i in range(n):
            if mode == "paced":
                due = t0 + i / rate
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
            now = time.time()
            ts_ms = int(now * 1000)
            if ts_ms <= last_ms and mode == "paced":
                ts_ms = last_ms + 1  # unique bytes per message; redelivery dedupe hashes the payload
            last_ms = ts_ms
            topic, payload, k = mixed_message(i, ts_ms, new_every, new_major_base, prefix)
            win.sem.acquire()
            if k is not None:
                new_times[k] = time.time()
            c.publish(topic, payload, qos=1)
        deadline = time.time() + 60
        while win.acked < n and time.time() < deadline:
            time.sleep(0.002)
        elapsed = time.time() - t0
        c.disconnect()
        c.loop_stop()
        if win.acked < n:
            raise RuntimeError(f"broker acknowledged only {win.acked} of {n} publications")
        conn.send({"ok": True, "elapsed": elapsed, "sent": n, "new": new_times})
    except BaseException as exc:  # reported to the parent, which fails the run
        conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def raw_subscriber(port: int, topic: str, ctl, v5: bool = True, bulk: bool = False) -> None:
    """A bare subscriber: one live connection with a persistent session (MQTT v5 like the edge's default, or
    3.1.1), QoS 1 (paho acks each message as it is delivered), json.loads only: the most a paho consumer
    can drain, to compare the edge with. With `bulk`, the same through the edge's own reader
    (edge.wire.mqtt_reader) with PUBACKs written 64 at a time, as the edge writes them per commit: the most
    the edge's process could drain if it did nothing else.

    Protocol with the parent over `ctl` (a Pipe): sends {"pid"} once subscribed; then for each round
    receives {"n": N}, answers {"armed"} and counts the next N messages (the parent stops this process with
    SIGSTOP while the backlog is published, then SIGCONT), sends {"first", "last", "count"} after the Nth;
    receives "stop" at the end."""
    try:
        import paho.mqtt.client as mqtt  # noqa: F401  (imported before the first round: not in its CPU)

        loads = json.loads
        state = {"n": 0, "count": 0, "first": 0.0, "last": 0.0, "bad": 0}
        done = threading.Event()
        subscribed = threading.Event()

        def on_message(cl, u, msg) -> None:
            now = time.time()
            try:
                loads(msg.payload)
            except ValueError:
                state["bad"] += 1
            if state["count"] == 0:
                state["first"] = now
            state["count"] += 1
            state["last"] = now
            if state["count"] == state["n"]:
                done.set()

        if bulk:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

            from edge.wire.mqtt_reader import BulkReadClient

            c = BulkReadClient(CallbackAPIVersion.VERSION2, client_id="bench-raw-bulk", manual_ack=True,
                               protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
                               clean_session=None if v5 else False)
            acks = bytearray()

            def on_publish_fast(topic_: str, payload: bytes, qos: int, mid: int, dup: bool) -> None:
                nonlocal acks
                now = time.time()
                try:
                    loads(payload)
                except ValueError:
                    state["bad"] += 1
                if state["count"] == 0:
                    state["first"] = now
                state["count"] += 1
                state["last"] = now
                acks += b"\x40\x02" + mid.to_bytes(2, "big")
                if len(acks) >= 256 or state["count"] == state["n"]:
                    c._packet_queue(mqtt.PUBACK, bytes(acks), 0, 0)
                    acks = bytearray()
                if state["count"] == state["n"]:
                    done.set()

            c.on_publish_fast = on_publish_fast
        else:
            c = _client("bench-raw-sub", v5=v5, clean=False)
        c.on_message = on_message
        c.on_subscribe = lambda cl, u, mid, rcs, p: subscribed.set()
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
        if v5:
            c.connect("127.0.0.1", port, clean_start=True, properties=_connect_props(3600))
        else:
            c.connect("127.0.0.1", port)
        c.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("raw subscriber could not subscribe")
        ctl.send({"ok": True, "pid": os.getpid()})
        while True:
            cmd = ctl.recv()
            if cmd == "stop":
                break
            state.update(n=cmd["n"], count=0, first=0.0, last=0.0, bad=0)
            done.clear()
            ctl.send({"ok": True, "state": "armed"})
            finished = done.wait(180)
            ctl.send({"ok": finished, "count": state["count"], "first": state["first"], "last": state["last"],
                      "bad": state["bad"],
                      **({} if finished else {"error": f"received {state['count']} of {cmd['n']} in 180 s"})})
        c.unsubscribe(topic)
        time.sleep(0.2)
        c.disconnect()
        c.loop_stop()
    except BaseException as exc:
        ctl.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def display_watcher(port: int, topic: str, ctl) -> None:
    """Record every message on the display topics with its receive time, until told "stop"."""
    try:
        got: list[tuple[float, str, bytes]] = []
        c = _client(f"bench-watch-{os.getpid()}")
        subscribed = threading.Event()
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1)
        c.on_subscribe = lambda cl, u, mid, rcs, p: subscribed.set()
        c.on_message = lambda cl, u, m: got.append((time.time(), m.topic, m.payload))
        c.connect("127.0.0.1", port)
        c.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("display watcher could not subscribe")
        ctl.send({"ok": True, "state": "ready"})
        ctl.recv()
        c.disconnect()
        c.loop_stop()
        ctl.send({"ok": True, "messages": [(t, tp, p.decode()) for t, tp, p in got]})
    except BaseException as exc:
        ctl.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


# ---------------------------------------------------------------------------------------------------
# Small helpers


def proc_status_kb(pid: int, key: str) -> int | None:
    """A kB field of /proc/<pid>/status (VmHWM = peak RSS, VmRSS = current)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


_TCK = os.sysconf("SC_CLK_TCK")


def _system_busy() -> int:
    """Busy jiffies of the whole machine (all CPUs) from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # minus idle and iowait


def _tree_cpu(root: int) -> dict[int, int]:
    """utime+stime jiffies of `root` and all its descendants, by pid."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            out[pid] = stats[pid][1]
        todo += children.get(pid, [])
    return out


class Noise:
    """CPU used on this machine by processes outside the benchmark's own tree during a phase, in cores:
    other developers' tests or builds on a shared 2-core box make the figures unreliable."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.busy0 = _system_busy()
        self.tree0 = _tree_cpu(os.getpid())

    def cores(self) -> float:
        elapsed = time.monotonic() - self.t0
        busy = _system_busy() - self.busy0
        tree = _tree_cpu(os.getpid())
        ours = sum(v - self.tree0.get(pid, 0) for pid, v in tree.items())
        return max(0.0, (busy - ours) / _TCK / elapsed) if elapsed > 0 else 0.0


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user+sys) per thread of a process, keyed "main" or "<comm>/<tid>"."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        key = "main" if tid == str(pid) else f"{name}/{tid}"  # Python does not name OS threads before 3.14
        out[key] = (int(fields[11]) + int(fields[12])) / _TCK
    return out


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return math.nan
    s = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(s)))
    return s[rank - 1]


# ---------------------------------------------------------------------------------------------------
# A busy store: BUSY_SUBJECTS shoppers, each heard by 3 of BUSY_ZONES * BUSY_GATEWAYS_PER_ZONE gateways once a
# second (2 of its zone's, 1 of the next zone's), walking to the next zone every BUSY_MOVE_S seconds.

BUSY_ZONES = 10
BUSY_GATEWAYS_PER_ZONE = 5
BUSY_SUBJECTS = 2000
BUSY_MOVE_S = 90
UUID_BUSY = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"


def busy_config(tmp: Path, broker_port: int, protocol: str = "5") -> dict[str, Any]:
    """The store of the busy-store run: 10 zones of 5 gateways, a screen per zone, rules on entering a zone."""
    zones = [f"z{z}" for z in range(BUSY_ZONES)]
    return {
        "store": {"id": STORE, "name": "Busy bench store", "timezone": "Europe/Rome"},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "client_id": "bench-busy-edge", "protocol": protocol},
        "db": {"path": str(tmp / "edge.db")},
        "http": {"host": "127.0.0.1", "port": 0, "tokens": {"admin": ADMIN}},
        "zones": [{"id": z, "name": f"Zone {z}", "exit_after_s": 30.0} for z in zones],
        "gateways": [{"id": busy_gateway(g), "zone": zones[g // BUSY_GATEWAYS_PER_ZONE]}
                     for g in range(BUSY_ZONES * BUSY_GATEWAYS_PER_ZONE)],
        "screens": [{"id": f"screen-{z}", "zone": z, "playlist": ["autumn"]} for z in zones],
        "content": [{"id": "autumn", "title": "Autumn collection"}, {"id": "welcome", "title": "Welcome!"},
                    {"id": "zone", "title": "In this zone"}],
        "rules": [{"id": RULE_ID, "priority": 10, "ttl_s": 2.0, "when": {"zone": zones[0], "event": "zone_enter"},
                   "show": {"content_id": "welcome", "template": "message", "data": {"title": "Welcome!"}}},
                  {"id": "zone-content", "priority": 5, "ttl_s": 5.0, "when": {"event": "zone_enter"},
                   "show": {"content_id": "zone", "template": "message", "data": {"title": "Now in {zone}"},
                            "screens": ["@zone"]}}],
    }


def busy_gateway(g: int) -> str:
    return f"gw-{g:02d}"


def busy_schedule(subjects: int) -> list[tuple[float, int, int, int]]:
    """One second of the busy store: (phase in the second, subject, which of its 3 gateways, rssi noise)."""
    import random

    rng = random.Random(7)
    out = [(rng.random(), s, j, rng.randint(-5, 5)) for s in range(subjects) for j in range(3)]
    out.sort()
    return out


def busy_message(second: int, s: int, j: int, noise: int, ts_ms: int) -> tuple[str, bytes]:
    zone = (s + (second + s * 7) // BUSY_MOVE_S) % BUSY_ZONES
    if j < 2:
        g = zone * BUSY_GATEWAYS_PER_ZONE + (s + j) % BUSY_GATEWAYS_PER_ZONE
        rssi = -58 - s % 7 + noise
    else:
        g = (zone + 1) % BUSY_ZONES * BUSY_GATEWAYS_PER_ZONE + s % BUSY_GATEWAYS_PER_ZONE
        rssi = -80 + noise
    return f"{PREFIX}/beacon/{busy_gateway(g)}", sighting(ts_ms, UUID_BUSY, 2, s, rssi)


def busy_publisher(port: int, subjects: int, seconds: int, window: int, part: int, parts: int, conn) -> None:
    """Publish the busy store's sightings of subjects s with s % parts == part on their schedule at QoS 1 for
    `seconds`; each carries its publish time (ms) as "ts". Sends back {"sent", "elapsed", "late_max"} (how far
    behind schedule it fell)."""
    try:
        schedule = [x for x in busy_schedule(subjects) if x[1] % parts == part]
        c = _client(f"bench-busy-pub-{os.getpid()}")
        c.max_inflight_messages_set(window)
        win = _Window(window)
        c.on_publish = win.on_publish
        connected = threading.Event()
        c.on_connect = lambda cl, u, f, rc, p: connected.set()
        c.connect("127.0.0.1", port)
        c.loop_start()
        if not connected.wait(10):
            raise RuntimeError("busy publisher could not connect")
        t0 = time.time() + 0.1
        sent = 0
        late_max = 0.0
        for second in range(seconds):
            base = t0 + second
            for phase, s, j, noise in schedule:
                due = base + phase
                now = time.time()
                if due - now > 0.002:
                    time.sleep(due - now)
                    now = time.time()
                late_max = max(late_max, now - due)
                topic, payload = busy_message(second, s, j, noise, int(now * 1000))
                win.sem.acquire()
                c.publish(topic, payload, qos=1)
                sent += 1
        deadline = time.time() + 60
        while win.acked < sent and time.time() < deadline:
            time.sleep(0.002)
        elapsed = time.time() - t0
        c.disconnect()
        c.loop_stop()
        conn.send({"ok": True, "sent": sent, "elapsed": elapsed, "late_max": late_max})
    except BaseException as exc:
        conn.send({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


class Link:
    """One kept-alive HTTP connection to the central, reopened after an error."""

    def __init__(self, port: int, token: str, timeout: float) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.last_headers: http.client.HTTPMessage | None = None  # of the last answer

    def lines(self, path: str) -> Iterator[bytes]:
        """GET a streamed answer (one JSON object a line) and yield its lines as they arrive; an error status
        or a broken connection raises OSError / HTTPException (the connection is reopened next time)."""
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request("GET", path, headers=self.headers)
            r = self.conn.getresponse()
            if r.status != 200:
                r.read()
                raise http.client.HTTPException(f"HTTP {r.status}")
            while line := r.readline():
                yield line
        except BaseException:
            self.conn.close()
            self.conn = None
            raise

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
                r = self.conn.getresponse()
                self.last_headers = r.headers
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
