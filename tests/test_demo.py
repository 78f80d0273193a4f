"""The demo and the shopper simulator: `instore-edge demo` for real, as a user runs it, and seeded journeys
that the edge records end to end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from a11y import assert_accessible
from conftest import ROOT, wait_until
from edge.broker import free_port
from edge.config import load_config
from edge.simulate import Crowd, Simulator, StoreLayout, run_simulator

DECISION_LINE = re.compile(r"^screen (\S+) ← (\S+) \(rule (\S+), zone (\S+)\)$")
BEACON_EVENTS = re.compile(r'^instore_edge_events_total\{kind="beacon"\} (\d+(?:\.\d+)?)$', re.M)


class DemoRun:
    """`instore-edge demo` as a subprocess: its output lines and what its HTTP port answered while it ran."""

    def __init__(self, tmp_path: Path, *extra: str, duration: int = 12) -> None:
        self.port = free_port()
        self.lines: list[str] = []
        self.ready_codes: list[int] = []
        self.metrics_ok = 0
        self.beacon_events = 0.0
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # Its own process group, as a shell gives a foreground job: a terminal's Ctrl-C reaches the whole group.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "demo", "--duration", str(duration), "--http-port", str(self.port),
             "--data-dir", str(tmp_path / "demo"), *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            encoding="utf-8", process_group=0)
        self.stderr = ""
        self._out = threading.Thread(target=self._read_stdout, daemon=True)
        self._err = threading.Thread(target=self._read_stderr, daemon=True)
        self._out.start()
        self._err.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def poll_http_until_exit(self, timeout: float = 90) -> int:
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            try:
                r = requests.get(base + "/readyz", timeout=2)
                self.ready_codes.append(r.status_code)
                m = requests.get(base + "/metrics", timeout=2)
                if m.status_code == 200:
                    self.metrics_ok += 1
                    found = BEACON_EVENTS.search(m.text)
                    if found:
                        self.beacon_events = max(self.beacon_events, float(found.group(1)))
            except requests.RequestException:
                pass  # not listening yet, or already stopped
            time.sleep(0.5)
        try:
            code = self.proc.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the demo did not stop after --duration; output:\n{self.output}")
        self._out.join(10)
        self._err.join(10)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines) + "\n--- stderr ---\n" + self.stderr

    def wait_for_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        found = wait_until(lambda: next((m for line in self.lines if (m := re.search(pattern, line))), None),
                           timeout=timeout, what=f"a demo line matching {pattern!r}")
        return found

    def stop(self, sig: signal.Signals, timeout: float = 60) -> tuple[int, float]:
        """Send `sig` (SIGINT to the whole process group, like Ctrl-C; SIGTERM to the process, like kill) and
        wait: (exit code, seconds it took)."""
        start = time.monotonic()
        if sig == signal.SIGINT:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"the demo did not stop within {timeout}s of {sig.name}:\n{self.output}")
        took = time.monotonic() - start
        self._out.join(10)
        self._err.join(10)
        return code, took


@pytest.mark.parametrize("extra", [[], ["--embedded-broker"]], ids=["mosquitto", "embedded-amqtt"])
def test_demo_runs_prints_urls_and_decisions_serves_http_and_exits_0(tmp_path: Path, extra: list[str]) -> None:
    demo = DemoRun(tmp_path, *extra)
    code = demo.poll_http_until_exit()
    out = demo.output
    assert code == 0, out
    assert "Traceback" not in out, out

    base = f"http://127.0.0.1:{demo.port}"
    text = "\n".join(demo.lines)
    assert f"{base}/" in text
    assert re.search(rf"{re.escape(base)}/signage/scr-entrance\?token=\S+", text), out
    assert f"{base}/kiosk/kiosk-womenswear" in text
    assert f"{base}/metrics" in text and f"{base}/readyz" in text
    assert re.search(r"mqtt://127\.0\.0\.1:\d+", text), out
    assert "demo-admin-token-0000" in text
    if extra:
        assert "embedded" in text and "Mosquitto" in text  # says a store runs Mosquitto

    decisions = [m for line in demo.lines if (m := DECISION_LINE.match(line))]
    assert decisions, f"no decision line printed:\n{out}"
    assert ("scr-entrance", "welcome", "entrance-welcome", "entrance") in {m.groups() for m in decisions}

    assert 200 in demo.ready_codes, f"/readyz never answered 200 ({demo.ready_codes}):\n{out}"
    assert demo.metrics_ok > 0
    assert demo.beacon_events > 0, out
    assert any(line.startswith("simulator: ") for line in demo.lines), out
    assert demo.lines[-1] == "demo stopped", out


NOISE = re.compile(r"ERROR|Traceback|cannot connect|not acknowledged|WARNING", re.I)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_stops_quietly_and_promptly_on_ctrl_c_or_sigterm(tmp_path: Path, sig: signal.Signals,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    demo = DemoRun(tmp_path, duration=0)  # until stopped
    try:
        demo.wait_for_line(r"^Simulating ")
        base = f"http://127.0.0.1:{demo.port}"
        assert requests.get(base + "/readyz", timeout=5).status_code == 200
        # A signage page is open (its stream holds an HTTP thread) and shoppers are walking.
        stream = requests.get(f"{base}/signage/scr-entrance/stream", params={"token": "demo-signage-token-0000"},
                              stream=True, timeout=10)
        assert stream.status_code == 200
        wait_until(lambda: any(DECISION_LINE.match(line) for line in demo.lines), timeout=30, what="a decision")
    except BaseException:
        os.killpg(demo.proc.pid, signal.SIGKILL)
        raise
    code, took = demo.stop(sig)
    stream.close()
    with capsys.disabled():
        print(f"\n  [timing] demo stopped {took:.2f} s after {sig.name}")
    out = demo.output
    assert code == 0, out
    noisy = [line for line in out.splitlines() if NOISE.search(line)]
    assert not noisy, out
    assert demo.lines[-2:] == ["stopping the demo...", "demo stopped"] or \
        (demo.lines[-1] == "demo stopped" and "stopping the demo..." in demo.lines), out
    assert took < 15, f"stopping took {took:.1f}s"


def test_demo_prints_a_loyalty_card_that_identifies_on_the_kiosk(tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    demo = DemoRun(tmp_path, duration=0)
    try:
        card = demo.wait_for_line(r"^  try it +type loyalty card (\d+) on a kiosk: (\S+) \((C-\d{4}), gave the "
                                  r"personalization consent")
        number, name, customer = card.groups()
        kiosk_url = demo.wait_for_line(r"^  kiosk +(http://\S+/kiosk/\S+)").group(1)
        with playwright_api.sync_playwright() as p:
            exe = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = browser.new_page(viewport={"width": 1080, "height": 1920})
                page.goto(kiosk_url)
                page.wait_for_selector("#welcome:not([hidden])")
                # The edge pulls the demo shoppers from the central store as it starts: try until it has.
                deadline = time.monotonic() + 30
                while True:
                    page.fill("#code", number)
                    page.press("#code", "Enter")
                    page.wait_for_selector("#home:not([hidden])")
                    if page.text_content("#greeting") == f"Ciao, {name}!" or time.monotonic() > deadline:
                        break
                    page.click("#finish")
                    page.wait_for_selector("#welcome:not([hidden])")
                    page.wait_for_timeout(500)
                assert page.text_content("#greeting") == f"Ciao, {name}!"  # the demo store is Italian
                assert page.is_visible("#wishlist") and page.is_visible("#orders")
                assert_accessible(page, "kiosk, identified with the demo card")
            finally:
                browser.close()
        identified = wait_until(lambda: [e for e in requests.get(
            kiosk_url.split("/kiosk/")[0] + "/api/v1/events", params={"kind": "kiosk", "limit": 1000},
            headers={"Authorization": "Bearer demo-admin-token-0000"}, timeout=5).json()["events"]
            if e["type"] == "identify" and e["customer"] == customer], timeout=10, what="the identify event")
        assert identified
    finally:
        code, _ = demo.stop(signal.SIGINT)
    assert code == 0, demo.output


def test_demo_decision_lines_do_not_flood_the_terminal() -> None:
    from edge.demo import DecisionPrinter
    from edge.model import Decision
    import io

    out = io.StringIO()
    printer = DecisionPrinter(out, per_second=5).start()
    for i in range(40):
        printer(Decision(display="scr-entrance", content_id="welcome", template="message", data={},
                         rule_id="entrance-welcome", priority=10, reason="r", ts=0.0, expires_at=None,
                         zone="entrance"))
    printer.stop()
    lines = out.getvalue().splitlines()
    assert lines[:5] == ["screen scr-entrance ← welcome (rule entrance-welcome, zone entrance)"] * 5
    assert lines[5] == "… and 35 more decisions"
    assert len(lines) == 6


# --- The simulator --------------------------------------------------------------------------------------

def test_the_demos_first_shopper_is_the_app_user_with_an_order_ready_whatever_the_draw() -> None:
    """So the staff app shows a pickup arrival in the demo's first minute, every run (it failed once when
    the draw brought none of the shoppers with an order in that minute)."""
    from edge.staff.demo import READY_HERE, first_shopper
    from sync.central.demo_data import generate_profiles

    FIRST_SHOPPER = first_shopper()
    profile = generate_profiles()[FIRST_SHOPPER - 1]  # the one the kiosk and the staff app will show
    assert profile["consents"]["personalization"] is True and FIRST_SHOPPER <= READY_HERE
    layout = StoreLayout.from_config(load_config(ROOT / "config" / "demo.toml", env={}))
    for seed in range(20):
        crowd = Crowd(layout, shoppers=12, rate=2, seed=seed, max_journeys=12, first_known=FIRST_SHOPPER)
        first = next(iter(crowd))
        assert crowd.started[0].customer == FIRST_SHOPPER
        assert crowd.started[0].start < 1 and first.at < 2  # in at once, heard within a couple of seconds
        assert len([j for j in crowd.started if j.customer == FIRST_SHOPPER]) == 1  # never twice at once


def test_seeded_crowd_is_repeatable_and_uses_only_configured_devices() -> None:
    cfg = load_config(ROOT / "config" / "demo.toml", env={})
    layout = StoreLayout.from_config(cfg)

    def plan(seed: int) -> list[tuple[float, str, str]]:
        crowd = Crowd(layout, shoppers=8, rate=2, seed=seed, speed=5, max_journeys=12)
        return [(round(s.at, 6), s.topic, repr(s.payload)) for s in crowd]

    first = plan(11)
    assert first == plan(11)
    assert first != plan(12)
    gateways = {g.id for g in cfg.gateways}
    kiosks = {k.id for k in cfg.kiosks}
    for _, topic, _ in first:
        parts = topic.split("/")
        assert parts[:2] == ["instore", "demo"]
        if parts[2] == "beacon":
            assert parts[3] in gateways
        elif parts[2] == "kiosk":
            assert parts[3] in kiosks and parts[4] == "event"
        else:
            assert parts[2] in ("window", "qr", "pos"), topic
    assert [t for t, *_ in first] == sorted(t for t, *_ in first)


def test_seeded_simulator_publishes_journeys_that_the_edge_records(edge) -> None:
    sim = Simulator(edge.cfg, shoppers=6, rate=4, seed=7, speed=10, journeys=8, window=20)
    stats = sim.run(duration_s=60)
    assert len(sim.crowd.started) == 8 and sim.crowd.finished == 8
    assert stats["acked"] == stats["messages"] > 0

    def recorded(kind: str, n: int) -> list[dict]:
        return wait_until(lambda: (rows := edge.events(kind=kind)) and len(rows) >= n and rows,
                          what=f"{n} {kind} events recorded")

    beacons = recorded("beacon", stats["sightings"])
    assert len(beacons) == stats["sightings"]
    assert {e["zone"] for e in beacons} == {"entrance", "shoes"}
    subjects = {e["subject"] for e in beacons}
    assert any(s.startswith("ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:") for s in subjects)
    assert any(s.startswith("device:app-") for s in subjects)
    assert recorded("zone_enter", 8)

    kiosk = recorded("kiosk", stats["kiosk"])
    identified = [e for e in kiosk if e["type"] == "identify" and e["customer"]]
    assert identified and all(re.fullmatch(r"C-000\d", e["customer"]) for e in identified)
    assert {e["zone"] for e in kiosk} == {"shoes"}
    assert {e["type"] for e in kiosk} >= {"identify", "browse"}
    assert all(e["data"].get("session") for e in kiosk)

    pos = recorded("pos", stats["pos"])
    assert pos and all(e["source"] == "till-1" and e["data"]["items"] and e["data"]["total"] > 0 for e in pos)
    if stats["window"]:
        assert recorded("window", stats["window"])

    dead = edge.get("/api/v1/deadletters").json()["deadletters"]
    assert dead == [], dead


def test_simulate_command_prints_a_summary_and_stops_on_duration(edge, capsys) -> None:
    code = run_simulator(edge.cfg, shoppers=3, rate=5, duration_s=2, seed=1)
    assert code == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("simulator: 3 shoppers") and "sightings" in summary
    assert wait_until(lambda: edge.events(kind="beacon"), what="beacon events")


def test_simulator_without_a_broker_says_so_and_exits_1(make_config, capsys) -> None:
    cfg = make_config(mqtt={"port": free_port()})
    start = time.monotonic()
    code = run_simulator(cfg, duration_s=1, seed=1, connect_timeout=2)
    assert code == 1
    assert "no MQTT broker answered" in capsys.readouterr().err
    assert time.monotonic() - start < 10
