"""`instore-edge demo`: broker, edge and shopper simulator on this machine, with no setup; prints URLs.

The demo is a list of steps, each starting one component and registering how to stop it; they stop in
reverse order on Ctrl-C, SIGTERM or after --duration. Adding a component (the central profile store) is
one more step in `Demo.run`.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

from edge.broker import BrokerError, EmbeddedBroker, MosquittoBroker, find_mosquitto, free_port
from edge.config import Config, ConfigError, parse_config
from edge.model import Decision, EdgeError

log = logging.getLogger(__name__)

# A source checkout has config/demo.toml next to the package; an installed package may ship a copy.
DEMO_CONFIGS = (Path(__file__).resolve().parent.parent / "config" / "demo.toml",
                Path(__file__).resolve().parent / "demo_store.toml")
DEMO_SHOPPERS = 12
DEMO_RATE = 2.0  # advertisements heard per second per phone: what a store app in the background manages
DECISION_LINES_PER_S = 5


class DemoError(EdgeError):
    """The demo cannot start; the message says what to do."""


def find_demo_config() -> Path:
    for path in DEMO_CONFIGS:
        if path.is_file():
            return path
    raise DemoError(f"the demo store config is missing (looked for {', '.join(str(p) for p in DEMO_CONFIGS)}): "
                    "run the demo from a source checkout (scripts/demo)")


def demo_config(path: Path, *, mqtt_port: int, http_port: int, db_path: Path, mqtt_v311: bool,
                central_url: str | None = None) -> Config:
    """config/demo.toml with this run's broker, HTTP port and files."""
    data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    data["mqtt"] = {**data.get("mqtt", {}), "host": "127.0.0.1", "port": mqtt_port, "embedded": mqtt_v311}
    if mqtt_v311:
        data["mqtt"]["protocol"] = "3.1.1"  # amqtt speaks MQTT 3.1.1 only
    data["http"] = {**data.get("http", {}), "host": "127.0.0.1", "port": http_port}
    data["db"] = {**data.get("db", {}), "path": str(db_path)}
    data["qr"] = {**data.get("qr", {}), "base_url": f"http://127.0.0.1:{http_port}"}
    if central_url:
        data["central"] = {**data.get("central", {}), "url": central_url}
    return parse_config(data, source=str(path), env={})


_AMQTT_STARTUP_NOISE = (
    "No data to decode MQTT packet fixed header",  # the port probe that waits for the broker to listen
    "'sys_interval' key is not set",  # $SYS topics are off on purpose
)


def _quiet_amqtt_startup(record: logging.LogRecord) -> bool:
    """Drop amqtt's complaints about our own start-up probe and settings: they alarm, and mean nothing."""
    if not record.name.startswith("amqtt"):
        return True
    message = record.getMessage()
    return not any(text in message for text in _AMQTT_STARTUP_NOISE)


def demo_card() -> tuple[str, dict[str, Any]] | None:
    """A loyalty card of a demo shopper who gave the personalization consent, to try the kiosk with: the
    first one with a wishlist and an order ready for pickup (the seeded demo data is the same every run)."""
    from sync.central.demo_data import generate_profiles

    best: tuple[str, dict[str, Any]] | None = None
    for profile in generate_profiles():
        cards = [key.split(":", 1)[1] for key in profile["identities"] if key.startswith("loyalty:")]
        if not cards or profile["consents"].get("personalization") is not True or not profile["wishlist"]:
            continue
        if profile["orders_ready"]:
            return cards[0], dict(profile)
        best = best or (cards[0], dict(profile))
    return best


def card_line(card: str, profile: dict[str, Any]) -> str:
    """What the banner says about the demo card: whose it is and what the kiosk will show."""
    shows = [f"{len(profile['wishlist'])} wishlist item" + ("s" if len(profile["wishlist"]) != 1 else "")]
    if profile["orders_ready"]:
        shows.append("an order ready for pickup")
    return (f"  try it      type loyalty card {card} on a kiosk: {profile['first_name']} ({profile['customer_id']}, "
            f"gave the personalization consent; {', '.join(shows)})")


def decision_line(d: Decision) -> str:
    return f"screen {d.display} ← {d.content_id} (rule {d.rule_id}, zone {d.zone or '-'})"


class DecisionPrinter:
    """Prints a line per decision, at most `per_second` a second, then "… and N more decisions".

    The pipeline calls it from the writer thread: it only queues, so a slow terminal never slows ingest.
    """

    def __init__(self, out: TextIO, per_second: int = DECISION_LINES_PER_S) -> None:
        self.out = out
        self.per_second = per_second
        self.queue: queue.SimpleQueue[Decision | None] = queue.SimpleQueue()
        self.printed = 0
        self.total = 0
        self._thread = threading.Thread(target=self._run, name="demo-decisions", daemon=True)

    def __call__(self, decision: Decision) -> None:
        self.queue.put(decision)

    def start(self) -> DecisionPrinter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.queue.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        window_start = time.monotonic()
        shown = held = 0
        while True:
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                item = False  # nothing new: only roll the window
            now = time.monotonic()
            if now - window_start >= 1.0 or item is None:
                if held:
                    self._print(f"… and {held} more decisions")
                window_start, shown, held = now, 0, 0
            if item is None:
                return
            if isinstance(item, Decision):
                self.total += 1
                if shown < self.per_second:
                    shown += 1
                    self.printed += 1
                    self._print(decision_line(item))
                else:
                    held += 1

    def _print(self, line: str) -> None:
        try:
            print(line, file=self.out, flush=True)
        except (OSError, ValueError):  # the terminal went away: keep the demo running
            pass


class Demo:
    def __init__(self, args: argparse.Namespace, out: TextIO | None = None) -> None:
        self.args = args
        self.out = out or sys.stdout
        self.stop_event = threading.Event()
        self.broker: MosquittoBroker | EmbeddedBroker | None = None
        self.cfg: Config | None = None
        self.service: Any = None

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    # --- steps: each starts one component and registers its stop on the stack ---
    def data_dir(self, stack: ExitStack) -> Path:
        if self.args.data_dir:
            path = Path(self.args.data_dir).resolve()
            path.mkdir(parents=True, exist_ok=True)
            return path
        return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="instore-edge-demo-")))

    def start_broker(self, stack: ExitStack, data_dir: Path) -> MosquittoBroker | EmbeddedBroker:
        mosquitto = None if self.args.embedded_broker else find_mosquitto()
        try:
            if mosquitto:
                broker: MosquittoBroker | EmbeddedBroker = MosquittoBroker(data_dir / "mosquitto",
                                                                           port=self.args.mqtt_port).start()
            else:
                self.say("note: using the embedded Python broker (amqtt, MQTT 3.1.1), for this demo only; a store "
                         "runs Mosquitto (config/mosquitto/)" +
                         ("" if self.args.embedded_broker else ", which is not installed here"))
                for name in ("amqtt", "transitions"):  # chatty at INFO: keep the terminal for the demo
                    logging.getLogger(name).setLevel(logging.WARNING)
                for handler in logging.getLogger().handlers:  # logger filters would miss amqtt's child loggers
                    handler.addFilter(_quiet_amqtt_startup)
                broker = EmbeddedBroker(port=self.args.mqtt_port).start()
        except BrokerError as exc:
            raise DemoError(str(exc)) from None
        stack.callback(broker.stop)
        return broker

    def start_central(self, stack: ExitStack, data_dir: Path, config_path: Path) -> Any:
        """The reference central profile store with the demo shoppers (C-0001..., app beacons device:app-N)."""
        from sync.central import CentralServer

        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
        store_id = raw["store"]["id"]
        token = raw.get("central", {}).get("token") or "demo-central-token-0000"
        central = CentralServer(data_dir / "central.db", "demo-central-admin-token-0000", {store_id: token},
                                port=0, demo_data=True).start()
        stack.callback(central.stop)
        return central

    def start_edge(self, stack: ExitStack, cfg: Config, on_decision: Callable[[Decision], None]) -> Any:
        from edge.app import App
        from edge.store.db import StoreError

        try:
            service = App(cfg, on_decision=on_decision)
        except StoreError as exc:
            raise DemoError(str(exc)) from None
        try:
            service.start()
        except OSError as exc:
            service.stop()
            raise DemoError(f"cannot serve HTTP on 127.0.0.1:{cfg.http.port} ({exc.strerror or exc}): "
                            "pick another port with --http-port") from None
        stack.callback(service.stop)
        if not service.mqtt.connected.wait(15):
            raise DemoError(f"the edge could not connect to the broker at 127.0.0.1:{cfg.mqtt.port}")
        return service

    def start_decision_printer(self, stack: ExitStack) -> DecisionPrinter:
        printer = DecisionPrinter(self.out).start()
        stack.callback(printer.stop)
        return printer

    def start_simulator(self, stack: ExitStack, cfg: Config, port: int) -> threading.Thread:
        from edge.simulate import run_simulator
        from edge.staff.demo import first_shopper

        sim_stop = threading.Event()
        thread = threading.Thread(
            target=run_simulator, name="simulator", daemon=True,
            kwargs={"cfg": cfg, "shoppers": DEMO_SHOPPERS, "rate": DEMO_RATE, "stop_event": sim_stop,
                    "port_override": port, "out": self.out, "first_known": first_shopper()})
        thread.start()

        def stop() -> None:
            sim_stop.set()
            thread.join(15)

        stack.callback(stop)
        return thread

    def print_banner(self, cfg: Config, broker: MosquittoBroker | EmbeddedBroker, data_dir: Path) -> None:
        base = f"http://127.0.0.1:{self.service.http_port}"
        tokens = cfg.http.tokens
        kind = "Mosquitto" if isinstance(broker, MosquittoBroker) else "embedded amqtt"
        self.say(f"instore-edge demo: store {cfg.store.id!r} ({cfg.store.name}), files in {data_dir}")
        self.say(f"  dashboard   {base}/?token={tokens.admin}")
        for screen in cfg.screens:
            self.say(f"  signage     {base}/signage/{screen.id}?token={tokens.signage}")
        for kiosk in cfg.kiosks:
            self.say(f"  kiosk       {base}/kiosk/{kiosk.id}?token={tokens.kiosk}")
        found = demo_card()
        if found:
            self.say(card_line(*found))
        staff_id, pin = self.staff_login
        self.say(f"  staff app   {base}/staff   (staff id {staff_id}, PIN {pin}; a phone-sized window works best)")
        self.say(f"  metrics     {base}/metrics")
        self.say(f"  readiness   {base}/readyz")
        self.say(f"  MQTT        mqtt://127.0.0.1:{broker.port} ({kind}; topics {cfg.prefix}/#)")
        self.say(f"  central     {self.central.url}/v1/admin/stats (reference profile store with the demo "
                 f"shoppers; admin token demo-central-admin-token-0000)")
        self.say(f"  admin token {tokens.admin}   e.g. curl -H 'Authorization: Bearer {tokens.admin}' "
                 f"{base}/api/v1/decisions")
        self.say(f"  kiosk token {tokens.kiosk}")
        until = f"for {self.args.duration:g}s" if self.args.duration else "until Ctrl-C"
        self.say(f"Simulating {DEMO_SHOPPERS} shoppers {until}; decisions as they happen:")

    # --- the whole run ---
    def run(self) -> int:
        if not getattr(self.args, "verbose", False):
            for name in ("edge", "sync", "instore_edge", "instore_central"):  # the demo prints what matters
                logging.getLogger(name).setLevel(logging.WARNING)
        restore = self._handle_signals()
        try:
            with ExitStack() as stack:
                try:
                    data_dir = self.data_dir(stack)
                    config_path = find_demo_config()
                    http_port = self.args.http_port or free_port()
                    self.broker = self.start_broker(stack, data_dir)
                    self.central = self.start_central(stack, data_dir, config_path)
                    mqtt_v311 = isinstance(self.broker, EmbeddedBroker)
                    self.cfg = demo_config(config_path, mqtt_port=self.broker.port, http_port=http_port,
                                           db_path=data_dir / "demo.db", mqtt_v311=mqtt_v311,
                                           central_url=self.central.url)
                    from edge.staff.demo import add_demo_associate, orders_ready_here

                    orders_ready_here(self.central.url, "demo-central-admin-token-0000", self.cfg.store.id)
                    self.staff_login = add_demo_associate(self.cfg.db.path)
                    printer = self.start_decision_printer(stack)
                    self.service = self.start_edge(stack, self.cfg, printer)
                    self.print_banner(self.cfg, self.broker, data_dir)
                    self.start_simulator(stack, self.cfg, self.broker.port)
                except (DemoError, ConfigError) as exc:
                    print(f"instore-edge demo: {exc}", file=sys.stderr, flush=True)
                    return 1
                self._wait()
                self.say("stopping the demo...")
            self.say("demo stopped")
            return 0
        finally:
            restore()

    def _wait(self) -> None:
        deadline = time.monotonic() + self.args.duration if self.args.duration else None
        while not self.stop_event.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                break

    def _handle_signals(self) -> Callable[[], None]:
        """SIGINT/SIGTERM end the wait (only the main thread can install handlers)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: object) -> None:
            self.stop_event.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


def run_demo(args: argparse.Namespace) -> int:
    return Demo(args).run()
