"""Helpers for the staff app's tests: a phone-sized Chromium, staff accounts made with the real CLI, cached
profiles as sync writes them, and logging in through the real form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.config import Config
from edge.store.writer import open_writer
from conftest import ROOT, write_toml

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PHONE = {"width": 390, "height": 844}
UUID = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"
PRODUCTS = [{"sku": "4006381333931", "name": "Trail runner", "zone": "shoes", "price": 89.9},
            {"sku": "boot-7", "name": "Winter boot", "zone": "shoes", "price": 129.0},
            {"sku": "scarf-1", "name": "Wool scarf", "zone": "entrance", "price": 25.0}]
SECRET = "gQbVdOvSMNQZ0qVWwTNlTVJJ"


def launch(playwright: Any, *args: str) -> Any:
    executable = CHROMIUM if os.path.exists(CHROMIUM) else None
    return playwright.chromium.launch(executable_path=executable, args=[*CHROMIUM_ARGS, *args])


def staff_cli(config_path: Path, *args: str, pin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", "staff", *args, "-c", str(config_path)], cwd=ROOT,
                          input=pin + "\n" if pin is not None else "", capture_output=True, text=True, timeout=60)


def config_file(cfg_data: dict[str, Any], tmp_path: Path) -> Path:
    return write_toml(tmp_path / "store.toml", cfg_data)


def add_profile(cfg: Config, customer: str, first_name: str, *, consent: bool, identities: list[str] = (),
                orders_ready: list[dict[str, Any]] = (), **extra: Any) -> None:
    """A cached profile and its identity keys, as sync writes them (before or while the edge runs)."""
    profile = {"customer_id": customer, "first_name": first_name, "segments": ["runners"], "tier": "gold",
               "consents": {"personalization": consent, "marketing": False}, "preferences": {"size": "42"},
               "wishlist": ["boot-7"], "cart": ["scarf-1"], "orders_ready": list(orders_ready),
               "identities": list(identities), "version": 1, **extra}
    conn = open_writer(cfg.db.path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO profiles(customer_id, version, profile, first_name, "
                     "consent_personalization, updated_at, last_seen) VALUES (?,?,?,?,?,?,NULL)",
                     (customer, 1, json.dumps(profile), first_name, int(consent), time.time()))
        for key in identities:
            conn.execute("INSERT OR REPLACE INTO identities(key, customer_id, via, learned_at) VALUES (?,?,?,?)",
                         (key, customer, "central", time.time()))
        conn.execute("COMMIT")
    finally:
        conn.close()


def beacon_key(minor: int) -> str:
    return f"ibeacon:{UUID}:100:{minor}"


def login(page: Any, base: str, staff_id: str, pin: str) -> None:
    page.goto(base + "/staff")
    page.fill('form[data-form="staff-login"] [name="staff_id"]', staff_id)
    page.fill('form[data-form="staff-login"] [name="pin"]', pin)
    page.click('form[data-form="staff-login"] button[type="submit"]')
    page.wait_for_load_state()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    api = pytest.importorskip("playwright.sync_api")
    with api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Any) -> Iterator[Any]:
    b = launch(playwright)
    yield b
    b.close()


def phone(browser: Any, **kw: Any) -> Any:
    """A new phone-sized context and its page."""
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, **kw)
    return context.new_page()


def y4m_from_png(png: bytes, path: Path, frames: int = 10) -> Path:
    """A Chromium fake-camera file (YUV4MPEG2, 4:2:0) showing the code large on white, for
    --use-file-for-fake-video-capture: the phone's camera pointed at the shopper's screen."""
    import io

    from PIL import Image

    code = Image.open(io.BytesIO(png)).convert("L")
    # Redraw the code module by module at a whole number of pixels per module: squeezing a 450-570 px PNG
    # into the frame would give modules of uneven width, which a decoder misreads for some codes (so a test
    # would fail for some tokens only). The finder pattern (7 modules wide) gives the module size.
    pixels, (width, _) = code.load(), code.size
    top, left = next((y, x) for y in range(width) for x in range(width) if pixels[x, y] < 128)
    run = next(i for i in range(left, width) if pixels[i, top] >= 128) - left
    box = run / 7
    modules = round(width / box)
    grid = Image.new("L", (modules, modules), 255)
    for j in range(modules):
        for i in range(modules):
            grid.putpixel((i, j), pixels[min(width - 1, int((i + 0.5) * box)), min(width - 1, int((j + 0.5) * box))])
    scale = 440 // modules
    side = modules * scale
    canvas = Image.new("RGB", (640, 480), "white")
    canvas.paste(grid.resize((side, side), Image.NEAREST).convert("RGB"), ((640 - side) // 2, (480 - side) // 2))
    y, cb, cr = canvas.convert("YCbCr").split()
    quarter = (320, 240)
    frame = b"FRAME\n" + y.tobytes() + cb.resize(quarter).tobytes() + cr.resize(quarter).tobytes()
    path.write_bytes(b"YUV4MPEG2 W640 H480 F10:1 Ip A1:1 C420jpeg\n" + frame * frames)
    return path


def camera_browser(playwright: Any, video: Path, *extra: str) -> Any:
    """Chromium whose camera films `video` (granted without asking, as a phone the associate set up)."""
    return launch(playwright, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-video-capture={video}", *extra)


def screenshot(page: Any, name: str) -> None:
    """docs/screenshots/<name>.png, only when asked (INSTORE_EDGE_SCREENSHOTS=1): test runs leave the
    checkout as it was."""
    if os.environ.get("INSTORE_EDGE_SCREENSHOTS"):
        page.screenshot(path=str(ROOT / "docs" / "screenshots" / f"{name}.png"))
