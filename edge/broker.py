"""Start an MQTT broker for the demo and the tests: Mosquitto when installed, amqtt for the demo otherwise.

Production runs Mosquitto under systemd with config/mosquitto/mosquitto.conf; this module is for
`instore-edge demo` and the test fixtures, which need a private broker on a free loopback port.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge.model import EdgeError

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


class BrokerError(EdgeError):
    """The broker could not be started."""


def find_mosquitto() -> str | None:
    """Mosquitto's path: Debian installs it in /usr/sbin, which is not on a normal user's PATH."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if Path(p).exists()), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BrokerError(f"nothing is listening on {host}:{port} after {timeout:.0f}s")


def mosquitto_conf(port: int, data_dir: Path, extra: str = "") -> str:
    """A loopback-only Mosquitto config with persistence and queues sized for long edge outages."""
    return "\n".join([
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        # Started as root (CI, containers), Mosquitto would drop to the `mosquitto` user and then fail to
        # write its persistence file in our folder: stay the user who started it.
        f"user {getpass.getuser()}",
        "persistence true",
        f"persistence_location {data_dir}/",
        "autosave_interval 1",
        # The edge may be down for a while: keep everything queued for it (the default is 1000).
        "max_queued_messages 1000000",
        "max_queued_bytes 0",
        "max_inflight_messages 1000",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        extra,
        "",
    ])


@dataclass
class MosquittoBroker:
    """A private Mosquitto process; restartable with its persistence kept (for no-loss tests)."""

    data_dir: Path
    port: int = 0
    extra_conf: str = ""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> MosquittoBroker:
        exe = find_mosquitto()
        if exe is None:
            raise BrokerError("mosquitto is not installed: run `sudo apt-get install mosquitto`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(mosquitto_conf(self.port, self.data_dir, self.extra_conf))
        log = open(self.data_dir / "mosquitto.log", "ab")
        # Its own process group: a terminal's Ctrl-C goes to the whole foreground group, and a broker that
        # dies with it before the edge and the simulator have stopped makes them complain and wait. The
        # owner stops it last, with stop().
        self.process = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                        process_group=0)
        log.close()
        try:
            wait_for_port(self.port)
        except BrokerError:
            self.stop()
            raise BrokerError(f"mosquitto did not start: see {self.data_dir / 'mosquitto.log'}") from None
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM): Mosquitto writes its persistence file on the way out."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


class EmbeddedBroker:
    """amqtt in a background thread, bound to 127.0.0.1: for the demo on a machine without Mosquitto.

    amqtt speaks MQTT 3.1.1 only and is known to leak memory over days: never use it in a store.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self._thread: threading.Thread | None = None
        self._loop = None
        self._broker = None
        self._error: BaseException | None = None

    def start(self) -> EmbeddedBroker:
        import asyncio

        try:
            from amqtt.broker import Broker
        except ImportError as exc:
            raise BrokerError("no MQTT broker: install Mosquitto (`sudo apt-get install mosquitto`) "
                              "or the demo extra (`pip install 'instore-edge[demo]'`)") from exc
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._broker = Broker(config, loop=loop)
                loop.run_until_complete(self._broker.start())
            except BaseException as exc:  # reported to the starting thread
                self._error = exc
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="embedded-broker", daemon=True)
        self._thread.start()
        ready.wait(15)
        if self._error is not None:
            raise BrokerError(f"embedded broker failed to start: {self._error}")
        if not ready.is_set():
            raise BrokerError("embedded broker did not start within 15 s")
        return self

    def stop(self) -> None:
        import asyncio

        if self._loop and self._broker:
            fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                fut.result(10)
            except Exception:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(5)
