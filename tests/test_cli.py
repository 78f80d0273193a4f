"""The `instore-edge` command as store IT meets it: --version, help for every option, clear refusals with
no traceback, a readable `sync status`, and /readyz details in whole words."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import ADMIN, ROOT, EdgeHandle, now_ms, sighting, store_config, wait_until
from edge.broker import free_port
from edge.cli import build_parser
from edge.config import parse_config
from edge.toml_writer import write_toml
from sync.central import CentralServer
from sync.text import network_reason, shorten

SECRET = "-xJ4uQuoZJTjLvF2OeGJTxlu"
PRODUCTS = [{"sku": "runner-42", "name": "Trail runner", "zone": "shoes", "price": 89.9}]
STORE_TOKEN = "M6pQ51zdlrVbop48KxLlXMs2"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def qr_conf(tmp_path: Path) -> Path:
    data = store_config(tmp_path, free_port(), qr={"secret": SECRET, "base_url": "https://shop.example.com"},
                        products=PRODUCTS)
    return write_toml(tmp_path / "store.toml", data)


def subcommand(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def test_version_prints_the_installed_package_version() -> None:
    out = cli("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"instore-edge {version('instore-edge')}"


@pytest.mark.parametrize("path", [("qr", "mint"), ("qr", "sheet")], ids=["qr-mint", "qr-sheet"])
def test_every_qr_option_has_help(path: tuple[str, ...]) -> None:
    parser = subcommand(build_parser(), *path)
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert options
    for action in options:
        assert action.help and action.help != argparse.SUPPRESS and len(action.help) > 10, action.option_strings


def test_qr_mint_to_a_missing_folder_says_so_without_a_traceback(qr_conf: Path, tmp_path: Path) -> None:
    target = tmp_path / "no-such-folder" / "code.png"
    for args in (["qr", "mint", "-c", str(qr_conf), "--target", "runner-42", "--out", str(target)],
                 ["qr", "sheet", "-c", str(qr_conf), "--zone", "shoes", "--out", str(target.with_suffix(".html"))]):
        out = cli(*args)
        assert out.returncode == 2
        assert "Traceback" not in out.stderr
        assert "does not exist" in out.stderr and "mkdir -p" in out.stderr and str(target.parent) in out.stderr
    assert not target.parent.exists()


def test_qr_mint_refuses_a_touchpoint_not_in_the_config_unless_forced(qr_conf: Path, tmp_path: Path) -> None:
    out = cli("qr", "mint", "-c", str(qr_conf), "--target", "runner-43", "--out", str(tmp_path / "a.png"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "'runner-43'" in out.stderr and "[[products]]" in out.stderr and "--force" in out.stderr
    assert "runner-42" in out.stderr  # the known ids, to pick from
    assert not (tmp_path / "a.png").exists()
    forced = cli("qr", "mint", "-c", str(qr_conf), "--target", "runner-43", "--force", "--out", str(tmp_path / "a.png"))
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith("https://shop.example.com/q/") and (tmp_path / "a.png").stat().st_size > 100
    # Known targets (a product, a screen, a content item) and pickups mint without --force.
    for kind, target in (("touchpoint", "runner-42"), ("touchpoint", "entrance-1"), ("touchpoint", "autumn"),
                         ("pickup", "ORD-77")):
        ok = cli("qr", "mint", "-c", str(qr_conf), "--kind", kind, "--target", target, "--out", str(tmp_path / "b.svg"))
        assert ok.returncode == 0, (target, ok.stderr)


# --- sync status ----------------------------------------------------------------------------------------

def assert_readable(text: str) -> None:
    """No Python reprs: no None/True/False, no dicts or lists, no raw epoch seconds."""
    assert not re.search(r"\b(None|True|False)\b", text), text
    assert not re.search(r"[{}]|\['|'\]|'\w+':", text), text
    assert not re.search(r"\b1[7-9]\d{8}(\.\d+)?\b", text), text


def test_sync_status_prints_a_readable_table_from_the_running_edge_and_from_the_file(
        broker: Any, mqtt_client: Any, tmp_path: Path) -> None:
    central = CentralServer(tmp_path / "central.db", "ilIM1ivwWTIlAO7iFi5kb1-h", {"teststore": STORE_TOKEN},
                            port=0).start()
    try:
        data = store_config(tmp_path, broker.port, http={"port": free_port()},
                            central={"url": central.url, "token": STORE_TOKEN, "pull_interval_s": 1.0})
        conf = write_toml(tmp_path / "store.toml", data)
        edge = EdgeHandle(parse_config(data, env={}))
        try:
            mqtt_client().publish("instore/teststore/beacon/gw-entrance", sighting(now_ms()))
            wait_until(lambda: edge.get("/api/v1/sync").json()["last_push_success"], timeout=20,
                       what="a push to the central store")
            assert edge.get("/api/v1/sync", token=None).status_code == 401
            out = cli("sync", "status", "-c", str(conf))
            assert out.returncode == 0, out.stderr
            text = out.stdout
            assert_readable(text)
            assert text.count(central.url) == 1
            rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text.splitlines())
            assert rows["read from"] == f"the running edge at http://127.0.0.1:{data['http']['port']}"
            assert rows["central store"] == f"{central.url} (store teststore)"
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d\d:\d\d \(\d+ s ago\)", rows["last push"]), text
            assert rows["breaker"] == "closed" and rows["store token"] == "accepted" and rows["last error"] == "none"
            as_json = json.loads(cli("sync", "status", "-c", str(conf), "--json").stdout)
            assert as_json["read_from"] == "edge" and as_json["last_push_success"] > 0
        finally:
            edge.stop()
        # The edge is stopped: what the database holds, and a word on what only the running edge knows.
        out = cli("sync", "status", "-c", str(conf))
        assert out.returncode == 0, out.stderr
        assert_readable(out.stdout)
        assert "no edge answered" in out.stdout and "known only to the running edge" in out.stdout
        assert json.loads(cli("sync", "status", "-c", str(conf), "--json").stdout)["read_from"] == "database"
    finally:
        central.stop()


# --- /readyz --------------------------------------------------------------------------------------------

def test_readyz_says_why_the_central_store_is_unreachable_in_whole_words(make_config: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    edge = EdgeHandle(make_config(central={"url": url, "token": STORE_TOKEN, "pull_interval_s": 1.0}))
    try:
        def detail() -> str | None:
            sync = requests.get(edge.url + "/readyz", timeout=5).json()["checks"]["sync"]
            return sync["detail"] if sync["detail"] != "ok" else None

        text = wait_until(detail, timeout=20, what="a sync error in /readyz")
    finally:
        edge.stop()
    # e.g. "profile pull failed, retrying in 0.4s: cannot reach the central store http://... (Connection refused)"
    assert text.endswith(f"cannot reach the central store {url} (Connection refused)"), text
    assert "HTTPConnectionPool" not in text and "…" not in text


def test_shorten_cuts_at_a_word_boundary_and_network_errors_keep_the_systems_words() -> None:
    text = "cannot reach the central store because the uplink of the store is down again"
    assert shorten(text, 200) == text
    cut = shorten(text, 40)
    assert len(cut) <= 40 and cut.endswith("…") and text.startswith(cut[:-1])
    assert text[len(cut) - 1] == " "  # the cut falls between two words
    assert shorten("x" * 50, 10) == "x" * 9 + "…"
    try:
        requests.get(f"http://127.0.0.1:{free_port()}/v1/profiles/changes?since=0", timeout=2)
    except requests.RequestException as exc:
        assert network_reason(exc) == "Connection refused"
    assert network_reason(ValueError("bad " * 100)).endswith("…")
