"""Data lifecycle and operations helpers: retention purge, online backup, erasure over HTTP, MQTT diagnosis.

`purge_expired` runs in the writer thread (the app's housekeeping hands it to the writer's inbox), so
the one write connection stays the only one; `backup` uses SQLite's online backup API from its own
connection and works while the service writes; `erase_via_http` and `diagnose_mqtt` back CLI commands
and clearer error messages.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class PurgeResult:
    events: int = 0
    decisions: int = 0
    deadletters: int = 0
    sync_rejects: int = 0

    @property
    def total(self) -> int:
        return self.events + self.decisions + self.deadletters + self.sync_rejects


def purge_expired_detail(conn: sqlite3.Connection, retention_days: float, now: float | None = None,
                         limit: int | None = None) -> PurgeResult:
    """Delete what is older than `retention_days`: events already accepted by the central store (an event
    still in the outbox is kept whatever its age: nothing leaves the device unsynced), decisions, dead
    letters and sync rejects. Age is the edge's receive time (devices' clocks may be wrong).

    Runs inside the caller's transaction when there is one (a writer task), else in its own.
    `limit` bounds the events deleted per call, so a first purge of months of data does not hold the
    writer for long: call again while it returns `limit` events.
    """
    cutoff = (time.time() if now is None else now) - retention_days * DAY_S
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN IMMEDIATE")
    try:
        lim = "" if limit is None else f" LIMIT {int(limit)}"
        # The outbox holds the seqs not yet accepted (contiguous, from its min): never delete those.
        events = conn.execute(
            "DELETE FROM events WHERE seq IN (SELECT e.seq FROM events e WHERE e.received_at < ? AND NOT EXISTS "
            f"(SELECT 1 FROM outbox o WHERE o.event_seq = e.seq) ORDER BY e.seq{lim})", (cutoff,)).rowcount
        decisions = conn.execute("DELETE FROM decisions WHERE ts < ?", (cutoff,)).rowcount
        deadletters = conn.execute("DELETE FROM deadletters WHERE received_at < ?", (cutoff,)).rowcount
        rejects = 0
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='sync_rejects'").fetchone():
            rejects = conn.execute("DELETE FROM sync_rejects WHERE rejected_at < ?", (cutoff,)).rowcount
        if own:
            conn.execute("COMMIT")
    except BaseException:
        if own and conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return PurgeResult(events, decisions, deadletters, rejects)


def purge_expired(conn: sqlite3.Connection, retention_days: float, now: float | None = None,
                  limit: int | None = None) -> int:
    """`purge_expired_detail`, returning the number of rows deleted."""
    return purge_expired_detail(conn, retention_days, now, limit).total


def backup(db_path: str | Path, dest: str | Path, pages_per_step: int = 1024) -> dict[str, Any]:
    """Copy the live database to `dest` with SQLite's online backup API (consistent, while the service
    writes), then check the copy. Returns {"path", "bytes", "events", "integrity"}. Raises on failure;
    a failed copy is removed so a half-written file is never mistaken for a backup."""
    src_path, dest_path = Path(db_path), Path(dest)
    if not src_path.exists():
        raise FileNotFoundError(f"no database at {src_path}")
    if dest_path.exists() and dest_path.resolve() == src_path.resolve():
        raise ValueError("the backup destination is the live database")
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_path.with_name(dest_path.name + ".partial")
    tmp.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30)
    try:
        out = sqlite3.connect(str(tmp))
        try:
            # Small steps with a pause let the writer keep committing during a large copy.
            src.backup(out, pages=pages_per_step, sleep=0.005)
            out.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file
            integrity = out.execute("PRAGMA integrity_check").fetchone()[0]
            events = out.execute("SELECT count(*) FROM events").fetchone()[0] \
                if out.execute("SELECT 1 FROM sqlite_master WHERE name='events'").fetchone() else 0
        finally:
            out.close()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    if integrity != "ok":
        tmp.unlink(missing_ok=True)
        raise sqlite3.DatabaseError(f"the backup failed its integrity check: {integrity}")
    tmp.replace(dest_path)
    return {"path": str(dest_path), "bytes": dest_path.stat().st_size, "events": events, "integrity": integrity}


def http_base(host: str, port: int) -> str:
    """The URL to reach the edge's HTTP server from this machine (a wildcard bind is reached on loopback)."""
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "[::1]"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def erase_via_http(base_url: str, token: str | None, customer: str, timeout: float = 35.0) -> tuple[bool, str]:
    """Ask the running edge to erase a customer (DELETE /api/v1/customers/<id>). Returns (ok, message)."""
    import urllib.parse

    import requests

    if not token:
        return False, "no admin token: set [http.tokens] admin in the config or INSTORE_EDGE_HTTP_TOKENS_ADMIN"
    url = f"{base_url}/api/v1/customers/{urllib.parse.quote(customer, safe='')}"
    try:
        r = requests.delete(url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
    except requests.RequestException as exc:
        return False, f"cannot reach the edge at {base_url}: {exc.__class__.__name__}; is it running " \
                      "(systemctl status instore-edge) and are [http] host/port right?"
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code == 200:
        return True, (f"erased customer {customer!r} from this store's edge; the central store is asked to erase "
                      "them everywhere (sent with the next sync)")
    err = body.get("error", {}) if isinstance(body, dict) else {}
    message = err.get("message") if isinstance(err, dict) else None
    return False, f"the edge refused the erasure: HTTP {r.status_code} {message or r.text[:200]}"


def diagnose_mqtt(host: str, port: int, tls_ca: str | None = None, timeout: float = 3.0) -> str:
    """Why the broker cannot be reached, in words store IT can act on (paho loses the exception when a
    connection attempt fails in its loop thread). Returns "ok" when TCP (and TLS) succeed."""
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        return f"cannot resolve the broker host {host!r} ({exc.strerror}): check mqtt.host"
    except ConnectionRefusedError:
        return f"nothing listens on {where} (connection refused): is mosquitto running " \
               "(systemctl status mosquitto) and are mqtt.host / mqtt.port right?"
    except TimeoutError:
        return f"no answer from {where} within {timeout:.0f}s: check the network, firewall, mqtt.host / mqtt.port"
    except OSError as exc:
        return f"cannot connect to {where}: {exc.strerror or exc}"
    with sock:
        if not tls_ca:
            return "ok"
        try:
            ctx = ssl.create_default_context(cafile=tls_ca)
        except (OSError, ssl.SSLError) as exc:
            return f"cannot load mqtt.tls_ca {tls_ca!r}: {getattr(exc, 'strerror', None) or exc}"
        sock.settimeout(timeout)
        try:
            with ctx.wrap_socket(sock, server_hostname=host):
                return "ok"
        except ssl.SSLCertVerificationError as exc:
            return f"TLS: the broker's certificate is not trusted ({exc.verify_message}): mqtt.tls_ca must be " \
                   "the CA that signed the broker's certificate, and the certificate must name the host " \
                   f"{host!r} (subjectAltName)"
        except ssl.SSLError as exc:
            return f"TLS handshake with {where} failed ({exc.reason or exc}): is this the broker's TLS " \
                   "listener (8883)? A plain listener (1883) does not speak TLS"
        except (OSError, TimeoutError) as exc:
            return f"TLS handshake with {where} failed: {exc}; is this the broker's TLS listener (8883)?"


def refusal_hint(reason: str) -> str:
    """A fix for a CONNACK refusal reason (paho's reason code text)."""
    text = reason.lower()
    if "not authori" in text or "bad user" in text or "password" in text:
        return "check mqtt.username / mqtt.password (or INSTORE_EDGE_MQTT_PASSWORD) against the broker's " \
               "password file (mosquitto_passwd) and the acl"
    if "identifier" in text:
        return "the broker refused mqtt.client_id"
    if "unavailable" in text or "busy" in text:
        return "the broker is overloaded or shutting down; it will be retried"
    return ""


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
