"""A real, throwaway PostgreSQL server for the tests (and bench/fleet.py), started the way the broker fixture
starts Mosquitto.

Debian's binaries (/usr/lib/postgresql/<version>/bin, the newest installed), `initdb` into a temporary
folder, `postgres` on a free port bound to 127.0.0.1 with its socket in that folder; torn down after.
`initdb` and `postgres` refuse to run as root (CI runs as root): then the folder belongs to the
`postgres` user and both run through `runuser -u postgres --`. Each test gets a fresh database cloned
from a template that already has the central store's schema (CREATE DATABASE ... TEMPLATE: quick).
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from edge.broker import free_port

TEMPLATE = "central_template"


class PostgresMissing(RuntimeError):
    """PostgreSQL's server binaries are not installed."""


def find_bindir() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb and postgres."""
    root = Path("/usr/lib/postgresql")
    versions = sorted((d for d in root.glob("*") if d.name.isdigit()), key=lambda d: int(d.name), reverse=True) \
        if root.is_dir() else []
    for d in versions:
        if (d / "bin" / "initdb").exists() and (d / "bin" / "postgres").exists():
            return d / "bin"
    raise PostgresMissing("PostgreSQL is not installed: the central store tests need a real server. Run the test "
                          "command from the README (scripts/test), which installs it, or `sudo apt-get install "
                          "postgresql`.")


class PostgresServer:
    """One PostgreSQL server on 127.0.0.1:<free port>, data in a temporary folder."""

    def __init__(self, *, durable: bool = False, settings: dict[str, str] | None = None) -> None:
        """`durable`: fsync and full page writes on, as in production (bench/fleet.py); off for the tests,
        where a power cut never matters and commits are then nearly free. `settings`: more `-c` options."""
        self.durable = durable
        self.settings = settings or {}
        self.bindir = find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="instore-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._as_root = os.geteuid() == 0
        self._names = itertools.count(1)

    def _cmd(self, *argv: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if self._as_root else list(argv)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> PostgresServer:
        if self._as_root:
            shutil.chown(self.root, "postgres")
        data = self.root / "data"
        init = subprocess.run(self._cmd(str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                        "--no-sync", "-E", "UTF8", "--locale=C"),
                              capture_output=True, text=True, timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        log = open(self.root / "postgres.log", "ab")
        durability = "on" if self.durable else "off"
        options = {"listen_addresses": "127.0.0.1", "fsync": durability, "full_page_writes": durability,
                   "max_connections": "300", "shared_buffers": "64MB", **self.settings}
        self.proc = subprocess.Popen(
            self._cmd(str(self.bindir / "postgres"), "-D", str(data), "-k", str(self.root), "-p", str(self.port),
                      *(arg for key, value in options.items() for arg in ("-c", f"{key}={value}"))),
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._wait_ready()
        self._make_template()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                assert self.proc is not None
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("PostgreSQL did not start:\n" + self.log()) from None
                time.sleep(0.1)

    def log(self) -> str:
        path = self.root / "postgres.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def _make_template(self) -> None:
        from sync.central.storage.postgres import PostgresStorage

        self.execute(f"CREATE DATABASE {TEMPLATE}")
        PostgresStorage(self.url(TEMPLATE), listen=False).close()  # schema and today's partitions

    def execute(self, query: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(query)  # type: ignore[arg-type]

    def new_database(self) -> str:
        """A fresh database with the central schema (and its own feed epoch); returns its URL."""
        name = f"central_{next(self._names)}_{secrets.token_hex(3)}"
        self.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
        self.execute(f"UPDATE meta SET value = '{secrets.token_hex(4)}' WHERE key = 'feed_epoch'", name)
        return self.url(name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            pidfile = self.root / "data" / "postmaster.pid"
            try:  # the postmaster itself (under runuser, self.proc is runuser)
                os.kill(int(pidfile.read_text().split()[0]), signal.SIGINT)  # "fast" shutdown
            except (OSError, ValueError, IndexError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)
