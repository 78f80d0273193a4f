"""HTTP that a phone cannot take down, against the edge as a real `instore-edge run` process (and the central
store's real server): oversized bodies refused before they are read, absurdly nested JSON refused without a
traceback, /healthz, /q/ and page streams serving with 300 idle or trickling connections open, one client's
page streams and connections bounded, and /q/ scans rate-limited per client before they become events.

Clients are raw sockets bound to different loopback addresses (127.0.0.2, ...), so "another phone" really
is another client address to the server."""

from __future__ import annotations

import http.client
import json
import re
import socket
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import ADMIN, KIOSK, SIGNAGE, sighting, now_ms, wait_until
from sync.jsonbody import nesting_depth_exceeds
from edge.ratelimit import RateLimiter

QR_SECRET = "http-limits-qr-secret-0123456789"
P = "instore/teststore"
MB = 1024 * 1024


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n  [measured] {line}")


# --- helpers -------------------------------------------------------------------------------------------

class Edge:
    """A running `instore-edge run` process and its port."""

    def __init__(self, proc: Any, log: Path) -> None:
        self.proc = proc
        self.port: int = proc.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log

    def get(self, path: str, token: str | None = ADMIN, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.url + path, headers=headers, timeout=10, **kw)

    def post(self, path: str, body: bytes, token: str | None = ADMIN) -> requests.Response:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        return requests.post(self.url + path, data=body, headers=headers, timeout=30)

    def metric(self, line_start: str) -> float:
        text = requests.get(self.url + "/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start))

    def mint_touchpoint(self, target: str = "runner-42") -> str:
        r = requests.post(self.url + "/api/v1/qr", json={"kind": "touchpoint", "target": target},
                          headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
        assert r.status_code == 201, r.text
        return "/q/" + r.json()["token"]


@pytest.fixture
def start_edge(edge_process: Callable[..., Any], tmp_path: Path) -> Callable[..., Edge]:
    def start(**sections: Any) -> Edge:
        sections.setdefault("qr", {"secret": QR_SECRET, "base_url": "https://shop.example-store.com"})
        sections.setdefault("products", [{"sku": "runner-42", "name": "Trail runner", "zone": "shoes"}])
        proc = edge_process(**sections).start()
        edge = Edge(proc, tmp_path / "edge.log")

        def up() -> bool:
            try:
                return requests.get(edge.url + "/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, timeout=30, what="the edge process to serve /healthz")
        return edge

    return start


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def get(port: int, path: str, *, source: str = "127.0.0.1", headers: dict[str, str] | None = None,
        timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def timed_healthz(port: int, n: int = 20) -> list[float]:
    """n GET /healthz, each on a new connection (what a monitoring probe does); their latencies in ms."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        status, _, body = get(port, "/healthz", timeout=10)
        out.append((time.perf_counter() - t0) * 1000)
        assert status == 200 and json.loads(body)["status"] == "ok"
    return out


class SseClient:
    """A page stream on a raw socket: the status, then whatever the stream sends."""

    def __init__(self, port: int, path: str, token: str, source: str = "127.0.0.1") -> None:
        self.sock = connect(port, source)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: edge\r\nAccept: text/event-stream\r\n"
                          f"Authorization: Bearer {token}\r\n\r\n".encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head = self.buf.split(b"\r\n", 1)[0]
        self.status = int(head.split()[1]) if head else 0

    def wait_for(self, needle: bytes, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while needle not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return False
            if not chunk:
                return False
            self.buf += chunk
        return True

    def close(self) -> None:
        self.sock.close()


def sources(n: int) -> Iterator[str]:
    """Loopback addresses other than 127.0.0.1, round robin: n "other clients"."""
    for i in range(n):
        yield f"127.0.1.{i % 10 + 1}"


def open_idle(port: int, n: int) -> list[socket.socket]:
    return [connect(port, src) for src in sources(n)]


def open_trickling(port: int, n: int) -> tuple[list[socket.socket], threading.Event]:
    """n connections that send a request line, then one more header byte per second, never finishing."""
    socks = []
    for src in sources(n):
        s = connect(port, src)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: edge\r\nX-Slow: ")
        socks.append(s)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for s in socks:
                try:
                    s.send(b"a")
                except OSError:
                    pass

    threading.Thread(target=trickle, daemon=True).start()
    return socks, stop


def server_closed(s: socket.socket, timeout: float) -> bool:
    """True when the server closes the connection within timeout."""
    s.settimeout(timeout or 0.001)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (TimeoutError, BlockingIOError):
        return False


def stream_upload(port: int, path: str, *, total: int, chunked: bool, token: str | None = None,
                  give_up_after: int = 64 * MB) -> tuple[int, bytes, float]:
    """POST `total` bytes (Content-Length, or chunked) as fast as the server takes them, reading at the same
    time; (bytes sent when the response arrived, the response, seconds to it). Gives up once
    `give_up_after` bytes went unanswered (the server is reading the body: that is the bug)."""
    s = connect(port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n{auth}{framing}\r\n\r\n"
              .encode())
    s.setblocking(False)
    block = b"0" * 65536
    piece = (b"%x\r\n" % len(block)) + block + b"\r\n" if chunked else block
    sent, response, t0 = 0, b"", time.monotonic()
    import select

    try:
        while sent < total and sent < give_up_after:
            readable, writable, _ = select.select([s], [s], [], 10)
            if not readable and not writable:
                break
            if readable:
                data = s.recv(65536)
                if not data:
                    break
                response += data
                if b"\r\n\r\n" in response:
                    break
            if writable:
                try:
                    sent += s.send(piece)
                except (BlockingIOError, InterruptedError):
                    pass
        s.setblocking(True)
        s.settimeout(10)
        while b"\r\n\r\n" not in response or not _body_complete(response):
            data = s.recv(65536)
            if not data:
                break
            response += data
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return sent, response, time.monotonic() - t0


def _body_complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return m is None or len(body) >= int(m.group(1))


def parse_response(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b"\r\n", 1)[0].split()[1]) if head else 0
    try:
        return status, json.loads(body)
    except ValueError:
        return status, {"raw": body[:200].decode(errors="replace")}


# --- request bodies ------------------------------------------------------------------------------------

def test_a_300_mb_upload_is_refused_with_413_before_the_server_reads_it(
        start_edge: Callable[..., Edge], capsys: pytest.CaptureFixture[str]) -> None:
    edge = start_edge()
    sent, raw, seconds = stream_upload(edge.port, "/api/v1/events", total=300 * MB, chunked=False)
    status, body = parse_response(raw)
    assert status == 413, (sent, raw[:300])
    assert body["error"]["code"] == "payload_too_large" and "131072" in body["error"]["message"]
    # What the client got into the socket buffers before the answer, not what the server read.
    assert sent < 16 * MB, f"the edge read {sent / MB:.0f} MB before refusing the body"
    report(capsys, f"300 MB body (Content-Length, no token): 413 after {seconds * 1000:.1f} ms, "
                   f"{sent / MB:.1f} MB sent by then")
    # A chunked body has no length up front: refused once it passes the cap.
    sent, raw, seconds = stream_upload(edge.port, "/api/v1/events", total=300 * MB, chunked=True, token=KIOSK)
    status, body = parse_response(raw)
    assert status == 413 and body["error"]["code"] == "payload_too_large", raw[:300]
    assert sent < 16 * MB
    report(capsys, f"300 MB chunked body: 413 after {seconds * 1000:.1f} ms, {sent / MB:.1f} MB sent by then")
    # A body under the cap still works, and the edge is fine.
    ok = edge.post("/api/v1/events", json.dumps({"kind": "window", "device": "w-1", "event": {
        "ts": now_ms(), "type": "touch", "session": "s1", "item": "i", "pad": "x" * 60000}}).encode(), token=KIOSK)
    assert ok.status_code == 201, ok.text
    assert edge.get("/healthz").status_code == 200


def test_the_central_store_refuses_an_oversized_body_before_reading_it(tmp_path: Path) -> None:
    from sync.central import CentralServer
    from sync.protocol import MAX_BODY_BYTES

    central = CentralServer(tmp_path / "central.db", "central-admin-token-0000", {"s1": "store-token-s1-0000"},
                            port=0).start()
    try:
        port = int(central.port)
        sent, raw, _ = stream_upload(port, "/v1/stores/s1/events", total=300 * MB, chunked=False)
        status, body = parse_response(raw)
        assert status == 413 and body["error"]["code"] == "payload_too_large", raw[:300]
        assert sent < MAX_BODY_BYTES + 16 * MB
        sent, raw, _ = stream_upload(port, "/v1/stores/s1/events", total=300 * MB, chunked=True,
                                     token="store-token-s1-0000")
        assert parse_response(raw)[0] == 413 and sent < MAX_BODY_BYTES + 16 * MB
        assert requests.get(central.url + "/healthz", timeout=5).status_code == 200
    finally:
        central.stop()


DEEP = b"[" * 30000 + b"]" * 30000


def test_30000_deep_json_gets_400_too_deep_and_no_traceback(start_edge: Callable[..., Edge], tmp_path: Path) -> None:
    edge = start_edge()
    deep_object = b'{"kind": "window", "device": "w-1", "event": ' + b'{"a":' * 20000 + b"1" + b"}" * 20001
    for path, body, token in (("/api/v1/events", DEEP, KIOSK), ("/api/v1/events", deep_object, KIOSK),
                              ("/api/v1/qr", DEEP, ADMIN), ("/kiosk/kiosk-1/handoff", DEEP, KIOSK)):
        r = edge.post(path, body, token)
        assert r.status_code == 400, (path, r.status_code, r.text[:200])
        assert r.json()["error"]["code"] == "too_deep", r.text
        assert "32" in r.json()["error"]["message"]
    # Nesting a real payload needs is fine; brackets inside strings do not count.
    nested: Any = "[[[[" * 40
    for _ in range(10):
        nested = {"n": nested}
    ok = edge.post("/api/v1/events", json.dumps({"kind": "window", "device": "w-1", "event": {
        "ts": now_ms(), "type": "touch", "session": "s1", "item": "i", "extra": nested}}).encode(), token=KIOSK)
    assert ok.status_code == 201, ok.text
    assert edge.get("/healthz").status_code == 200
    log = edge.log.read_text(errors="replace")
    assert "RecursionError" not in log and "Traceback" not in log, log[-2000:]


def test_the_central_store_answers_deep_json_with_400_too_deep(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from sync.central import CentralServer

    central = CentralServer(tmp_path / "central.db", "central-admin-token-0000", {"s1": "store-token-s1-0000"},
                            port=0).start()
    try:
        r = requests.post(central.url + "/v1/stores/s1/events", data=DEEP, timeout=10,
                          headers={"Authorization": "Bearer store-token-s1-0000", "Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "too_deep", r.text
    finally:
        central.stop()
    assert "RecursionError" not in caplog.text and "Traceback" not in caplog.text


def test_depth_scan_counts_only_brackets_outside_strings() -> None:
    assert nesting_depth_exceeds(DEEP, 32)
    assert not nesting_depth_exceeds(b"[" * 32 + b"]" * 32, 32)
    assert nesting_depth_exceeds(b"[" * 33 + b"]" * 33, 32)
    assert not nesting_depth_exceeds(json.dumps({"s": "[{" * 5000, "t": '\\"[' * 100}).encode(), 32)
    assert not nesting_depth_exceeds(b'"' + b'\\"[' * 50000, 32)  # an unterminated string: linear, not deep
    t0 = time.perf_counter()
    nesting_depth_exceeds(b'\\"' * 100000 + b"[" * 100, 32)  # escapes everywhere: still one pass
    assert time.perf_counter() - t0 < 1.0


# --- connections ---------------------------------------------------------------------------------------

def _probe_everything(edge: Edge, mqtt_client: Callable[..., Any], stream: SseClient, q_path: str) -> list[float]:
    """/healthz (20 new connections), a shopper's /q/ page, a new page stream, and the stream opened before
    the flood still delivering: the screen switches to the welcome rule within seconds."""
    latencies = timed_healthz(edge.port)
    status, _, page = get(edge.port, q_path)
    assert status == 200 and b"Trail runner" in page
    fresh = SseClient(edge.port, "/signage/shoes-1/stream", SIGNAGE)
    try:
        assert fresh.status == 200 and fresh.wait_for(b"event: content", 10)
    finally:
        fresh.close()
    pub = mqtt_client()
    pub.publish(f"{P}/beacon/gw-entrance", sighting(now_ms(), minor=7, rssi=-50))
    assert stream.wait_for(b'"content_id":"welcome"', 15), stream.buf[-500:]
    return latencies


def test_healthz_q_and_streams_serve_with_300_idle_connections_open(
        start_edge: Callable[..., Edge], mqtt_client: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    edge = start_edge()
    q_path = edge.mint_touchpoint()
    stream = SseClient(edge.port, "/signage/entrance-1/stream", SIGNAGE)
    assert stream.status == 200
    baseline = timed_healthz(edge.port)
    idle = open_idle(edge.port, 300)
    try:
        wait_until(lambda: edge.metric("instore_edge_http_connections ") >= 300, timeout=10,
                   what="the 300 idle connections to be open at the edge")
        latencies = _probe_everything(edge, mqtt_client, stream, q_path)
        assert all(not server_closed(s, 0.0) for s in idle[:10])  # nobody was cut to make room
    finally:
        for s in idle:
            s.close()
        stream.close()
    report(capsys, f"/healthz with 300 idle connections open: median {statistics.median(latencies):.1f} ms, "
                   f"max {max(latencies):.1f} ms (without: median {statistics.median(baseline):.1f} ms)")


def test_healthz_q_and_streams_serve_with_300_connections_trickling_a_header(
        start_edge: Callable[..., Edge], mqtt_client: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    edge = start_edge()
    q_path = edge.mint_touchpoint()
    stream = SseClient(edge.port, "/signage/entrance-1/stream", SIGNAGE)
    assert stream.status == 200
    slow, stop = open_trickling(edge.port, 300)
    try:
        time.sleep(2.5)  # a few bytes trickled on each
        latencies = _probe_everything(edge, mqtt_client, stream, q_path)
    finally:
        stop.set()
        for s in slow:
            s.close()
        stream.close()
    report(capsys, f"/healthz with 300 connections trickling a header: median {statistics.median(latencies):.1f} "
                   f"ms, max {max(latencies):.1f} ms")


def test_a_request_trickled_slower_than_request_timeout_is_cut_off(start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(http={"request_timeout_s": 2.0})
    slow, stop = open_trickling(edge.port, 3)
    try:
        t0 = time.monotonic()
        assert all(server_closed(s, 10) for s in slow)
        assert time.monotonic() - t0 < 10
        assert edge.metric('instore_edge_http_connections_dropped_total{reason="slow_request"}') >= 1
    finally:
        stop.set()
        for s in slow:
            s.close()
    # A client that sends its request at once is not affected, even on a connection kept alive for longer.
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    for _ in range(3):
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() and True
        time.sleep(1.5)
    conn.close()


def test_one_client_cannot_hold_more_than_its_share_of_connections(start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(http={"connections_per_client": 20})
    hog = [connect(edge.port, "127.0.0.9") for _ in range(100)]
    try:
        closed = [s for s in hog if server_closed(s, 0.2)]
        # The oldest idle ones were closed to make room for that client's newer ones.
        assert len(closed) >= 79 and all(not server_closed(s, 0.0) for s in hog[-10:])
        assert edge.metric('instore_edge_http_connections_dropped_total{reason="per_client"}') >= 79
        status, _, _ = get(edge.port, "/healthz", source="127.0.0.9")  # the same client is still served
        assert status == 200
        assert timed_healthz(edge.port, 3)
    finally:
        for s in hog:
            s.close()


def test_a_full_connection_table_makes_room_for_a_newcomer(start_edge: Callable[..., Edge]) -> None:
    edge = start_edge(http={"connection_limit": 50})
    crowd = open_idle(edge.port, 150)  # 15 per address, under the per-client cap: only the total is full
    try:
        latencies = timed_healthz(edge.port, 5)
        assert len(latencies) == 5
        assert edge.metric('instore_edge_http_connections_dropped_total{reason="limit"}') >= 100
        assert edge.metric("instore_edge_http_connections ") <= 52
        assert server_closed(crowd[0], 1.0)  # the longest idle went first
    finally:
        for s in crowd:
            s.close()


def test_50_page_streams_from_one_client_cannot_starve_screens_or_pages(
        start_edge: Callable[..., Edge], mqtt_client: Callable[..., Any]) -> None:
    screens = [{"id": "entrance-1", "zone": "entrance", "playlist": ["autumn", "news"]},
               {"id": "shoes-1", "zone": "shoes", "playlist": ["autumn"]}]
    screens += [{"id": f"aisle-{i}", "zone": "shoes", "playlist": ["autumn"]} for i in range(8)]
    edge = start_edge(screens=screens)
    q_path = edge.mint_touchpoint()
    screen = SseClient(edge.port, "/signage/entrance-1/stream", SIGNAGE)  # the real screen, first
    assert screen.status == 200
    # A holder of the signage token opens 50 streams to every screen in turn.
    abuse = [SseClient(edge.port, f"/signage/{screens[i % 10]['id']}/stream", SIGNAGE, source="127.0.0.66")
             for i in range(50)]
    try:
        statuses = [a.status for a in abuse]
        assert set(statuses) == {200, 429} and statuses[:4] == [200] * 4 and statuses[4] == 429, statuses
        refused = abuse[4]
        assert refused.wait_for(b"too_many_streams", 5) and b"Retry-After: 5" in refused.buf
        # It never holds more than its share (a reload only replaces its own stream)...
        live = edge.get("/api/v1/kpis").json()["live"]["streams"]
        assert live <= 1 + 4, live
        # ...the real screen kept its stream, and the rest of the store is served.
        kiosk = SseClient(edge.port, "/kiosk/kiosk-1/stream", KIOSK)
        assert kiosk.status == 200
        kiosk.close()
        assert timed_healthz(edge.port, 3)
        assert get(edge.port, q_path)[0] == 200
        pub = mqtt_client()
        pub.publish(f"{P}/beacon/gw-entrance", sighting(now_ms(), minor=9, rssi=-50))
        assert screen.wait_for(b'"content_id":"welcome"', 15), screen.buf[-500:]
    finally:
        for a in abuse:
            a.close()
        screen.close()


# --- rate limits on the shoppers' pages ------------------------------------------------------------------

def test_300_scans_of_one_touchpoint_in_a_second_become_only_a_burst_of_events(start_edge: Callable[..., Edge]) -> None:
    edge = start_edge()
    q_path = edge.mint_touchpoint()
    results: list[tuple[int, dict[str, str], bytes]] = []
    lock = threading.Lock()
    t0 = time.monotonic()

    def scan(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
        for _ in range(n):
            conn.request("GET", q_path)
            r = conn.getresponse()
            item = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
            with lock:
                results.append(item)
        conn.close()

    workers = [threading.Thread(target=scan, args=(50,)) for _ in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    elapsed = time.monotonic() - t0
    ok = [r for r in results if r[0] == 200]
    limited = [r for r in results if r[0] == 429]
    assert len(results) == 300 and len(ok) + len(limited) == 300
    assert 10 <= len(ok) <= 10 + 2.0 * elapsed + 1, (len(ok), elapsed)
    status, headers, page = limited[0]
    assert int(headers["retry-after"]) >= 1
    assert b"One moment, please" in page and b'data-reason="rate_limited"' in page
    assert b"Test store" in page and headers["content-type"].startswith("text/html")
    # Only the scans that were served became events; every refused one left no trace.
    wait_until(lambda: len(edge.get("/api/v1/events", params={"kind": "qr", "limit": 1000}).json()["events"])
               >= len(ok), timeout=10, what="the served scans to be recorded")
    time.sleep(0.5)
    events = edge.get("/api/v1/events", params={"kind": "qr", "limit": 1000}).json()["events"]
    assert len(events) == len(ok)
    kpis = edge.get("/api/v1/kpis").json()
    assert kpis["engagement"]["qr_scans"] == len(ok)
    assert edge.metric('instore_edge_http_rate_limited_total{route="/q/"}') == len(limited)
    import sqlite3

    conn = sqlite3.connect(edge.proc.config_path.parent / "edge.db")
    try:
        outbox = conn.execute("SELECT count(*) FROM outbox JOIN events ON events.seq = outbox.event_seq "
                              "WHERE events.kind = 'qr'").fetchone()[0]
    finally:
        conn.close()
    assert outbox == len(ok)
    # Another phone is not held back by that one.
    assert get(edge.port, q_path, source="127.0.0.23")[0] == 200


def test_rate_limiter_refills_and_keeps_a_bounded_table() -> None:
    limiter = RateLimiter(2.0, 3, max_clients=1000)
    assert [limiter.wait("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait("a", now=0.0) == pytest.approx(0.5)
    assert limiter.wait("a", now=0.5) == 0.0  # one token back after 1/rate seconds
    assert limiter.wait("b", now=0.5) == 0.0  # every client has its own bucket
    for i in range(20000):
        limiter.wait(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", now=1.0)
    assert len(limiter) == 1000
    assert RateLimiter.retry_after(0.2) == 1 and RateLimiter.retry_after(2.1) == 3
