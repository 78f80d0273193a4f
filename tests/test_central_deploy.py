"""The central store deployed as docs/deploy.md says, exercised for real: the shipped systemd unit (secrets off
the command line, hardened, accepted by systemd-analyze), the database password taken from PGPASSWORD by a
real PostgreSQL with password authentication, and the shipped nginx config in front of a central with two
workers: pushes over TLS, a change streamed to a store as it is made, an oversized push refused at the door,
metrics for the chain's networks only."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import requests

from edge.broker import free_port
from sync import protocol as p
from sync.text import network_reason
from test_central import (ADMIN, TOKENS, Central, event, shopper, start_central,  # noqa: F401 (fixture)
                          token_args)
from test_deploy import assert_systemd_accepts, read_unit
from test_nginx import Nginx, localized, make_cert, running, tls_get
from tests.conftest import ROOT, now_ms, sighting, wait_until
from tests.pgserver import PostgresServer

UNIT = ROOT / "config" / "systemd" / "instore-central.service"
EDGE_TOKEN = "Qm7xT2vLp9RkWz4NcY8bHs3J"  # the test edge's store id is teststore
NGINX_CONF = ROOT / "config" / "nginx" / "instore-central.conf"


def test_the_central_unit_keeps_every_secret_off_the_command_line() -> None:
    """`ps` shows a process's arguments to every user of the machine: tokens and the database password must
    come from the root-only env file and tokens file, never from ExecStart."""
    s = read_unit(UNIT)["Service"]
    argv = s["ExecStart"].split()
    assert argv[:2] == ["/opt/instore-edge/.venv/bin/instore-edge", "central"]
    assert "--admin-token" not in argv and "--store-token" not in argv
    db = urlsplit(argv[argv.index("--db") + 1])
    assert db.scheme == "postgresql" and db.username and db.password is None
    assert argv[argv.index("--store-tokens-file") + 1] == "/etc/instore-central/store-tokens"
    assert s["EnvironmentFile"] == "/etc/instore-central/env"  # required: no admin token, no start
    assert int(argv[argv.index("--workers") + 1]) > 1


def test_the_central_unit_is_hardened_and_systemd_accepts_it(tmp_path: Path) -> None:
    unit = read_unit(UNIT)
    s = unit["Service"]
    assert s["User"] == "instore-central" and s["Restart"] == "on-failure"
    assert "postgresql.service" in unit["Unit"]["After"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "ReadWritePaths": "/var/lib/instore-central",
                       "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "CapabilityBoundingSet": ""}.items():
        assert s.get(key) == value, key
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert_systemd_accepts(UNIT, tmp_path)


def test_the_central_takes_its_database_password_from_pgpassword(tmp_path: Path, postgres: PostgresServer) -> None:
    """A PostgreSQL that asks for a password (scram-sha-256, as a chain's does): the central given a --db URL
    without one connects with PGPASSWORD (as the unit's env file gives it), and without it stops with the
    reason, before serving anything."""
    role, password = "central_pw_role", "a-database-password-0123456789"
    hba = postgres.root / "data" / "pg_hba.conf"
    if f" {role} " not in hba.read_text():
        # First match wins: this role, and only it, must give a password from 127.0.0.1.
        hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    postgres.execute(f"DROP DATABASE IF EXISTS {role}_db")
    postgres.execute(f"DROP ROLE IF EXISTS {role}")
    postgres.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    postgres.execute(f"CREATE DATABASE {role}_db OWNER {role}")
    postgres.execute("SELECT pg_reload_conf()")
    db = f"postgresql://{role}@127.0.0.1:{postgres.port}/{role}_db"
    with pytest.raises(psycopg.OperationalError):  # the rule is in force: no password, no connection
        psycopg.connect(db, connect_timeout=5).close()

    refused = subprocess.run([sys.executable, "-m", "sync.central.cli", "--db", db, "--port", str(free_port()),
                              "--admin-token", ADMIN], cwd=ROOT, capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert refused.returncode == 1, refused.stderr
    assert "not starting" in refused.stderr and "password" in refused.stderr and "check --db" in refused.stderr

    c = Central(tmp_path, *token_args(), db=db, env={"PGPASSWORD": password})
    try:
        assert c.push("s1", [event("e-1")]).json()["accepted"] == ["e-1"]
        assert password not in " ".join(c.proc.args) and password not in c.log_path.read_text()
    finally:
        c.stop()


@pytest.fixture
def central_behind_nginx(tmp_path: Path, pg_url: str, start_central: Callable[..., Central]
                         ) -> Iterator[dict[str, Any]]:
    central = start_central(*token_args(), "--store-token", f"teststore={EDGE_TOKEN}", "--workers", "2", db=pg_url)
    http_port, tls_port = free_port(), free_port()
    cert, key = make_cert(tmp_path / "tls")
    nginx = Nginx(tmp_path / "nginx", localized(NGINX_CONF, central.port, http_port, tls_port, cert, key))
    with running(nginx, tls_port, cert, "the central") as base:
        yield {"base": base, "cert": str(cert), "http_port": http_port, "central": central}


def session(token: str, cert: str) -> requests.Session:
    """A client that trusts the test certificate (with the environment trusted, REQUESTS_CA_BUNDLE would
    override a session's `verify`)."""
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {token}"
    s.trust_env = False
    s.verify = cert
    return s


def test_stores_push_and_hear_changes_through_the_shipped_nginx_config(central_behind_nginx: dict[str, Any]
                                                                        ) -> None:
    base, cert = central_behind_nginx["base"], central_behind_nginx["cert"]
    store, admin = session(TOKENS["s1"], cert), session(ADMIN, cert)

    r = store.post(base + "/v1/stores/s1/events", json={"events": [event("e-1"), event("e-2")]}, timeout=30,
                   headers={p.IDEMPOTENCY_HEADER: "batch-1"})
    assert r.status_code == 200 and r.json()["accepted"] == ["e-1", "e-2"]

    # The feed stream: a change made at the centre reaches the store through the proxy as it is made, not
    # when nginx's buffer fills or the stream ends (20 s later).
    assert admin.post(base + "/v1/admin/profiles", json=shopper("C-1", home_store="s1"), timeout=30).ok
    with store.get(base + p.CHANGES_PATH, params={"stream": "1", "wait_s": "20"}, stream=True, timeout=30) as feed:
        assert feed.status_code == 200 and feed.headers["Content-Type"].startswith(p.NDJSON)
        lines = feed.iter_lines(chunk_size=None)
        first = json.loads(next(lines))
        assert [ch["customer_id"] for ch in first["changes"]] == ["C-1"]
        changed = time.monotonic()
        assert admin.post(base + "/v1/admin/profiles", json={"customer_id": "C-1", "tier": "gold"}, timeout=30).ok
        page = json.loads(next(lines))
        arrived = time.monotonic() - changed
    assert [(ch["customer_id"], ch["profile"]["tier"]) for ch in page["changes"]] == [("C-1", "gold")]
    assert arrived < 2.0, f"the change took {arrived:.1f} s through nginx"

    # A push beyond the central's 8 MiB is refused at the door, with nothing recorded.
    big = json.dumps({"events": [event("e-big", data={"blob": "x" * (9 * 1024 * 1024)})]})
    r = store.post(base + "/v1/stores/s1/events", data=big, timeout=60, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    events = admin.get(base + "/v1/admin/events", params={"store": "s1"}, timeout=30).json()["events"]
    assert [e["event_id"] for e in events] == ["e-1", "e-2"]

    # The fleet page over HTTPS remembers the admin token in a cookie the browser keeps off plain HTTP.
    r = requests.get(base + "/", params={"token": ADMIN}, verify=cert, timeout=10)
    assert r.status_code == 200
    assert "Secure" in r.headers["Set-Cookie"] and "HttpOnly" in r.headers["Set-Cookie"]
    access_log = Path(cert).parent / "instore-central.access.log"
    visit = re.compile(r'"GET /(\?\S*)? HTTP/1\.1" 200')
    wait_until(lambda: access_log.exists() and visit.search(access_log.read_text()) is not None, timeout=10,
               what="the fleet page's visit in nginx's access log")
    assert ADMIN not in access_log.read_text() and "token=" not in access_log.read_text()

    # Metrics for the chain's monitoring, not for the internet.
    tls_port = int(urlsplit(base).port or 0)
    status, _, body = tls_get(tls_port, "/metrics", Path(cert), "127.0.0.1")
    assert status == 200 and b"instore_central_" in body
    assert tls_get(tls_port, "/metrics", Path(cert), "127.0.0.2")[0] == 403

    # An edge that does not trust the certificate, or says https:// to a plain-HTTP port, is told what to do.
    with pytest.raises(requests.exceptions.SSLError) as untrusted:
        requests.get(base + "/healthz", timeout=10)  # the usual public CAs only
    assert "not trusted here" in network_reason(untrusted.value) and "REQUESTS_CA_BUNDLE" in network_reason(
        untrusted.value)
    with pytest.raises(requests.exceptions.SSLError) as plain:
        requests.get(central_behind_nginx["central"].url.replace("http://", "https://") + "/healthz", timeout=10)
    assert "does that address speak https?" in network_reason(plain.value)

    # Plain http:// only says where to go: no token is taken over it.
    r = requests.get(f"http://127.0.0.1:{central_behind_nginx['http_port']}/", params={"token": ADMIN}, timeout=10,
                     allow_redirects=False)
    assert r.status_code == 301 and r.headers["Location"].startswith("https://")
    wait_until(lambda: '" 301 ' in access_log.read_text(), timeout=10, what="the redirect in the access log")
    assert ADMIN not in access_log.read_text()  # not even from the redirecting port


def test_a_store_syncs_with_the_central_through_the_shipped_nginx_trusting_the_chain_ca(
        central_behind_nginx: dict[str, Any], edge_process: Callable[..., Any], mqtt_client: Callable[..., Any],
        tmp_path: Path) -> None:
    """A real edge whose [central] url is the https:// name, trusting a chain's own CA the way docs/deploy.md
    says (REQUESTS_CA_BUNDLE in its env file): its sightings reach the central, the fleet view hears it, and a
    profile made at the centre for this store reaches its cache, all through the proxy."""
    base, cert = central_behind_nginx["base"], central_behind_nginx["cert"]
    admin = session(ADMIN, cert)
    edge = edge_process(central={"url": base, "token": EDGE_TOKEN})
    edge.start(env={"REQUESTS_CA_BUNDLE": cert})
    status = mqtt_client()
    status.subscribe("instore/teststore/edge/status")
    status.wait_for(lambda t, d: d["state"] == "online", timeout=20)
    mqtt_client("gateway").publish_many([("instore/teststore/beacon/gw-shoes", sighting(now_ms() - 50 + i, minor=i))
                                         for i in range(50)])

    def at_central() -> list[dict[str, Any]]:
        return admin.get(base + "/v1/admin/events", params={"store": "teststore", "limit": 1000},
                         timeout=10).json()["events"]

    wait_until(lambda: len(at_central()) >= 50, timeout=60, what="the sightings at the central through nginx")
    [row] = [r for r in admin.get(base + "/v1/admin/stores", timeout=10).json()["stores"] if r["store"] == "teststore"]
    assert row["version"] and not row["quiet"]

    assert admin.post(base + "/v1/admin/profiles", json=shopper("C-7", home_store="teststore"), timeout=30).ok

    def cached() -> bool:
        with sqlite3.connect(tmp_path / "edge.db", timeout=10) as conn:
            return conn.execute("SELECT 1 FROM profiles WHERE customer_id = 'C-7'").fetchone() is not None

    wait_until(cached, timeout=30, what="the profile in the store's cache")
    assert "CERTIFICATE_VERIFY_FAILED" not in (tmp_path / "edge.log").read_text()
