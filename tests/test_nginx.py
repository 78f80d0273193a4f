"""The shipped nginx config (config/nginx/instore-edge.conf) run for real in front of a real edge process, with
only ports and certificate paths replaced: TLS with a throwaway certificate made by openssl, /q/ proxied and
rate-limited per client, an oversized body refused by nginx, a page stream flowing through unbuffered, and
the edge telling clients apart through the trusted proxy's X-Forwarded-For."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import ADMIN, ROOT, SIGNAGE, now_ms, sighting, wait_until
from edge.broker import free_port, wait_for_port

CONF = ROOT / "config" / "nginx" / "instore-edge.conf"
P = "instore/teststore"
QR_SECRET = "nginx-test-qr-secret-0123456789"


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    assert found, "nginx is missing: scripts/test installs the nginx package"
    return found


def make_cert(d: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1."""
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", "edge.key",
                    "-out", "edge.crt", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   cwd=d, check=True, capture_output=True)
    return d / "edge.crt", d / "edge.key"


def localized(conf: Path, upstream_port: int, http_port: int, tls_port: int, cert: Path, key: Path) -> str:
    """A shipped nginx site with its upstream's port, its listen ports, its certificate paths and its own
    access log's folder (to the certificate's) replaced, nothing else."""
    text = conf.read_text()
    replacements = [
        (r"(?m)^\s*listen \[::\]:\d+.*\n", ""),  # no IPv6 listeners in the sandbox
        (r"server 127\.0\.0\.1:\d+;", f"server 127.0.0.1:{upstream_port};"),
        (r"listen 80;", f"listen 127.0.0.1:{http_port};"),
        (r"listen 443 ssl http2;", f"listen 127.0.0.1:{tls_port} ssl http2;"),
        (r"ssl_certificate \S+;", f"ssl_certificate {cert};"),
        (r"ssl_certificate_key \S+;", f"ssl_certificate_key {key};"),
    ]
    for pattern, new in replacements:
        text, n = re.subn(pattern, new, text)
        assert n >= 1, f"{pattern!r} not found in {conf.name}"
    # A site's own access log, if it has one, goes to the test's folder too.
    return re.sub(r"access_log /var/log/nginx/(\S+)", lambda m: f"access_log {cert.parent}/{m.group(1)}", text)


class Nginx:
    """nginx in the foreground with its own prefix, pid and logs under tmp."""

    def __init__(self, tmp: Path, site: str) -> None:
        self.dir = tmp
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi", "logs"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        (tmp / "instore-edge.conf").write_text(site)
        user = "user root;\n" if os.geteuid() == 0 else ""
        (tmp / "nginx.conf").write_text(f"""{user}worker_processes 1;
error_log {tmp}/logs/error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp}/logs/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/instore-edge.conf;
}}
""")
        self.args = [nginx_binary(), "-p", str(tmp), "-e", str(tmp / "logs" / "error.log"), "-c",
                     str(tmp / "nginx.conf")]
        self.proc: subprocess.Popen[bytes] | None = None

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.args + ["-t"], capture_output=True, text=True)

    def start(self) -> Nginx:
        self.proc = subprocess.Popen(self.args + ["-g", "daemon off;"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.dir / "logs" / "stderr.log", "wb"))
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def proxied(tmp_path: Path, edge_process: Callable[..., Any]) -> Iterator[dict[str, Any]]:
    http_port, tls_port = free_port(), free_port()
    edge = edge_process(http={"trusted_proxies": ["127.0.0.1"]},
                        qr={"secret": QR_SECRET, "base_url": f"https://127.0.0.1:{tls_port}"},
                        products=[{"sku": "runner-42", "name": "Trail runner", "zone": "shoes"}]).start()
    cert, key = make_cert(tmp_path / "tls")
    nginx = Nginx(tmp_path / "nginx", localized(CONF, edge.port, http_port, tls_port, cert, key))
    with running(nginx, tls_port, cert, "the edge") as base:
        yield {"base": base, "cert": cert, "tls_port": tls_port, "http_port": http_port, "edge": edge,
               "nginx": nginx}


@contextmanager
def running(nginx: Nginx, tls_port: int, cert: Path, what: str) -> Iterator[str]:
    """nginx checked (`-t`), started and stopped after; yields its https:// base once `what` behind it answers
    /healthz through it."""
    checked = nginx.check()
    assert checked.returncode == 0, checked.stderr
    nginx.start()
    try:
        wait_for_port(tls_port, 15)
        base = f"https://127.0.0.1:{tls_port}"

        def up() -> bool:
            try:
                return requests.get(base + "/healthz", verify=str(cert), timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, timeout=30, what=f"{what} to answer through nginx")
        yield base
    finally:
        nginx.stop()


def tls_get(port: int, path: str, cert: Path, source: str, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
    ctx = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, source_address=(source, 0), context=ctx)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_shipped_nginx_config_in_front_of_the_edge(proxied: dict[str, Any], mqtt_client: Callable[..., Any]) -> None:
    base, cert, tls_port = proxied["base"], proxied["cert"], proxied["tls_port"]
    verify = str(cert)

    # TLS with the certificate; plain HTTP only redirects; security headers on every answer.
    r = requests.get(base + "/healthz", verify=verify, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(base + "/healthz", timeout=10)  # not trusted without the certificate
    plain = requests.get(f"http://127.0.0.1:{proxied['http_port']}/healthz", allow_redirects=False, timeout=10)
    assert plain.status_code == 301 and plain.headers["Location"].startswith("https://")

    # /q/ through nginx: served, then rate-limited by the edge per client (it sees each phone's address
    # through the trusted X-Forwarded-For, not nginx's own).
    minted = requests.post(base + "/api/v1/qr", json={"kind": "touchpoint", "target": "runner-42"},
                           headers={"Authorization": f"Bearer {ADMIN}"}, verify=verify, timeout=10)
    assert minted.status_code == 201, minted.text
    q = "/q/" + minted.json()["token"]
    first = [tls_get(tls_port, q, cert, "127.0.0.2") for _ in range(25)]
    assert first[0][0] == 200 and b"Trail runner" in first[0][2]
    limited = [r for r in first if r[0] == 429]
    assert limited and b'data-reason="rate_limited"' in limited[0][2] and "retry-after" in limited[0][1]
    assert tls_get(tls_port, q, cert, "127.0.0.3")[0] == 200  # another phone: its own budget at the edge
    # A spoofed X-Forwarded-For does not buy a fresh budget: nginx appends the real address.
    assert tls_get(tls_port, q, cert, "127.0.0.2", {"X-Forwarded-For": "203.0.113.9"})[0] == 429
    metrics = requests.get(base + "/metrics", verify=verify, timeout=10).text
    assert re.search(r'instore_edge_http_rate_limited_total\{route="/q/"\} (\d+)', metrics)
    # nginx's own limit stops a flood before the edge.
    flood = [tls_get(tls_port, q, cert, "127.0.0.4") for _ in range(80)]
    assert any(s == 429 and b"Too many requests from your connection" in body for s, _, body in flood)

    # An oversized body is refused by nginx.
    big = requests.post(base + "/api/v1/events", data=b"0" * (1024 * 1024), verify=verify, timeout=30,
                        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN}"})
    assert big.status_code == 413 and "nginx" in big.text

    # A token in the address (a signage screen's ?token=) stays out of nginx's access log.
    assert requests.get(base + "/signage/entrance-1", params={"token": SIGNAGE}, verify=verify,
                        timeout=10).status_code == 200
    access_log = cert.parent / "instore-edge.access.log"
    wait_until(lambda: access_log.exists() and "GET /signage/entrance-1 " in access_log.read_text(), timeout=10,
               what="the signage page's visit in nginx's access log")
    assert SIGNAGE not in access_log.read_text() and "token=" not in access_log.read_text()

    # A page stream flows through unbuffered: a rule's content arrives as soon as it is decided.
    stream = requests.get(base + "/signage/entrance-1/stream", headers={"Authorization": f"Bearer {SIGNAGE}"},
                          verify=verify, stream=True, timeout=10)
    try:
        assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        lines = stream.iter_lines(chunk_size=1)
        assert next(line for line in lines if line.startswith(b"data:"))  # the current content, at once
        pub = mqtt_client()
        t0 = time.monotonic()
        pub.publish(f"{P}/beacon/gw-entrance", sighting(now_ms(), minor=3, rssi=-50))
        got = next(line for line in lines if b'"content_id":"welcome"' in line)
        assert got and time.monotonic() - t0 < 5
    finally:
        stream.close()
