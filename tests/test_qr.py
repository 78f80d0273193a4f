"""QR journeys: signed tokens, codes that a real decoder (zxing-cpp) reads back, landing pages without JS,
kiosk handoff to a phone, click & collect under concurrent scans, returns, refusals, minting API and CLI."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edge.config import Config
from edge.qr import KINDS, QrError, Signer, qr_matrix, qr_png, qr_svg, qr_version, svg_matrix, token_from_code
from a11y import assert_accessible
from conftest import ADMIN, KIOSK, ROOT, MqttHelper, now_ms, store_config, wait_until, write_toml

zxingcpp = pytest.importorskip("zxingcpp")
Image = pytest.importorskip("PIL.Image")

SECRET = "gQbVdOvSMNQZ0qVWwTNlTVJJ"
BASE_URL = "https://shop.example-store.com"  # a typical base URL (31 characters)
P = "instore/teststore"
PRODUCTS = [{"sku": "runner-42", "name": "Trail runner <42>", "zone": "shoes", "price": 89.9},
            {"sku": "boot-7", "name": "Winter boot", "zone": "shoes", "price": 129.0},
            {"sku": "scarf-1", "name": "Wool scarf", "zone": "entrance"}]
ORDER = {"order_id": "ORD-1001", "items": ["boot-7", "scarf-1"], "ready_at": "2026-01-01T10:00:00Z",
         "pickup_bay": "B3"}
PROFILE = {"customer_id": "cust-anna", "first_name": "Anna", "segments": [], "tier": "gold",
           "consents": {"personalization": True, "marketing": False}, "preferences": {},
           "wishlist": ["runner-42"], "cart": [], "orders_ready": [ORDER], "identities": [], "version": 1}


def decode_png(png: bytes) -> list[str]:
    img = Image.open(io.BytesIO(png)).convert("L")
    return [r.text for r in zxingcpp.read_barcodes(img)]


class QrEdge:
    """The edge (edge/app.py wires the QR journeys) with helpers for minted URLs."""

    def __init__(self, cfg: Config) -> None:
        from edge.app import App

        self.cfg = cfg
        svc = App(cfg)
        self.service = svc.start()
        self.url = f"http://127.0.0.1:{svc.http_port}"
        assert svc.mqtt.connected.wait(10)

    def local(self, url: str) -> str:
        """A minted URL (on the public base URL) → the same path on this test server."""
        return self.url + url[len(BASE_URL):]

    def mint(self, kind: str, target: str, **kw: Any) -> dict[str, Any]:
        r = requests.post(self.url + "/api/v1/qr", json={"kind": kind, "target": target, **kw},
                          headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
        assert r.status_code == 201, r.text
        return r.json()

    def events(self, kind: str = "qr") -> list[dict[str, Any]]:
        r = requests.get(self.url + "/api/v1/events", params={"kind": kind, "limit": 1000},
                         headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
        r.raise_for_status()
        return r.json()["events"]

    def put_profile(self, profile: dict[str, Any]) -> None:
        done = threading.Event()

        def task(writer: Any) -> None:
            writer.conn.execute(
                "INSERT OR REPLACE INTO profiles(customer_id, version, profile, first_name, consent_personalization, "
                "updated_at) VALUES (?,?,?,?,?,?)", (profile["customer_id"], profile["version"], json.dumps(profile),
                                                     profile["first_name"], 1, time.time()))

        self.service.inbox.submit_task(task, done.set)
        assert done.wait(10)
        self.service.pipeline.shoppers.invalidate([profile["customer_id"]])

    def metric(self, name: str) -> str:
        return "\n".join(line for line in requests.get(self.url + "/metrics", timeout=10).text.splitlines()
                         if line.startswith(name))


@pytest.fixture
def qcfg(make_config: Callable[..., Config]) -> Callable[..., Config]:
    def make(**kw: Any) -> Config:
        return make_config(qr={"secret": SECRET, "base_url": BASE_URL}, products=PRODUCTS, **kw)

    return make


@pytest.fixture
def qedge(qcfg: Callable[..., Config]) -> Iterator[QrEdge]:
    h = QrEdge(qcfg())
    yield h
    h.service.stop()


# --- tokens ----------------------------------------------------------------------------------------------

def test_tokens_are_small_enough_for_qr_version_6_at_m() -> None:
    s = Signer(SECRET, "teststore", BASE_URL, 30 * 86400, old_secrets=[])
    for kind in ("touchpoint", "handoff", "pickup", "return"):
        token = s.mint(kind, "x" * 24)  # a long-ish target: product sku, order or RMA id
        url = s.url(token)
        assert qr_version(url) <= 6, (kind, url, qr_version(url))
        tok = s.verify(token)
        assert (tok.kind, tok.target) == (kind, "x" * 24)
        assert tok.single_use == (kind != "touchpoint")
        assert token_from_code(url) == token
        assert token_from_code(url + "?utm=1") == token
    assert len(s.mint("touchpoint", "runner-42")) <= 48


def test_key_rotation_old_codes_keep_working(monkeypatch: pytest.MonkeyPatch) -> None:
    old = Signer("old-secret-0123456789", "teststore", BASE_URL, 3600, old_secrets=[])
    printed = old.mint("touchpoint", "runner-42")
    new = Signer(SECRET, "teststore", BASE_URL, 3600, old_secrets=[])
    with pytest.raises(Exception) as exc:
        new.verify(printed)
    assert exc.value.reason == "forged"  # type: ignore[attr-defined]
    monkeypatch.setenv("INSTORE_EDGE_QR_OLD_SECRETS", "something-else-xyz, old-secret-0123456789")
    rotated = Signer(SECRET, "teststore", BASE_URL, 3600)
    assert rotated.verify(printed).target == "runner-42"
    assert rotated.verify(rotated.mint("pickup", "o1")).kid == new.verify(new.mint("pickup", "o1")).kid


# --- codes decode back to their URL ----------------------------------------------------------------------

def _chromium_decode_svg(svg: str) -> list[str] | None:
    """Rasterize the SVG in headless Chromium and decode the screenshot; None without a browser."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    exe = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
            try:
                page = b.new_page(viewport={"width": 800, "height": 800})
                page.set_content(f"<body style='margin:0;background:#fff'>{svg}</body>")
                png = page.locator("svg").screenshot()
            finally:
                b.close()
    except Exception:  # pragma: no cover - no browser on this machine
        return None
    return decode_png(png)


def test_png_and_svg_from_the_api_decode_to_their_url(qedge: QrEdge) -> None:
    for kind, target in (("touchpoint", "runner-42"), ("pickup", "ORD-1001"), ("return", "RMA-77")):
        png = qedge.mint(kind, target)
        assert png["url"] == f"{BASE_URL}/q/{png['token']}"
        assert decode_png(base64.b64decode(png["png_base64"])) == [png["url"]]
        assert qr_version(png["url"]) <= 6
        svg = qedge.mint(kind, target, format="svg")
        assert "png_base64" not in svg and svg["svg"].startswith("<svg")
        # The SVG draws exactly the matrix the (decoded) PNG draws...
        assert svg_matrix(svg["svg"]) == qr_matrix(svg["url"])
        assert decode_png(qr_png(svg["url"])) == [svg["url"]]
    # ...and, rasterized by a real browser, decodes on its own.
    decoded = _chromium_decode_svg(svg["svg"])
    if decoded is not None or Path("/usr/bin/chromium").exists():
        assert decoded == [svg["url"]]


def test_cli_mint_and_printable_sheet(tmp_path: Path, broker: Any) -> None:
    data = store_config(tmp_path, broker.port, qr={"secret": SECRET, "base_url": BASE_URL}, products=PRODUCTS)
    conf = write_toml(tmp_path / "store.toml", data)
    cli = [sys.executable, "-c", "import sys, argparse; from edge import qr; p = argparse.ArgumentParser(); "
           "qr.add_parser(p.add_subparsers(dest='command')); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))"]
    out = subprocess.run(cli + ["qr", "mint", "--kind", "touchpoint", "--target", "runner-42", "-c", str(conf),
                                "--out", str(tmp_path / "code.png")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    url = out.stdout.strip()
    assert url.startswith(BASE_URL + "/q/")
    assert decode_png((tmp_path / "code.png").read_bytes()) == [url]
    out = subprocess.run(cli + ["qr", "mint", "--target", "boot-7", "-c", str(conf), "--out",
                                str(tmp_path / "code.svg")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    svg_url = out.stdout.strip()
    assert svg_matrix((tmp_path / "code.svg").read_text()) == qr_matrix(svg_url)
    out = subprocess.run(cli + ["qr", "sheet", "-c", str(conf), "--zone", "shoes", "--out",
                                str(tmp_path / "sheet.html")], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    sheet = (tmp_path / "sheet.html").read_text()
    assert "@page{size:A4" in sheet and sheet.count("<svg") == 4  # screen shoes-1, its "autumn", 2 products
    assert "Trail runner &lt;42&gt;" in sheet and "Winter boot" in sheet and "Wool scarf" not in sheet
    signer = Signer(SECRET, "teststore", BASE_URL, 3600, old_secrets=[])
    import re

    for svg in re.findall(r"<svg.*?</svg>", sheet):
        m = svg_matrix(svg)
        # Each card's matrix is a QR of a touchpoint URL of this store: decode the same matrix as PNG.
        size = len(m)
        png_url = None
        for text in decode_png(_matrix_png(m)):
            png_url = text
        assert png_url and signer.verify(token_from_code(png_url)).kind == "touchpoint"
        assert size == len(qr_matrix(png_url))
    bad = subprocess.run(cli + ["qr", "mint", "--target", "x", "-c", str(conf), "--out", str(tmp_path / "x.gif")],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2


@pytest.mark.parametrize("text", [
    "https://shop.example-store.com/q/FEkBazaLA0BNnAhOanNrdS0wMDAwvd8cuBOvuXvIaA", "0", "12345678901234567890",
    "HTTPS://SHOP.EXAMPLE/Q/ABC 123 $%*+-./:", "loyalty:4711 0815 " + "9" * 40 + " end", "Grüße, 店 " * 12,
    "x" * 150, "A1" * 400, "https://example.test/" + "a" * 1800])
def test_codes_of_every_size_and_data_mode_read_back_with_a_real_decoder(text):
    # byte, numeric and alphanumeric segments, versions 1 to ~35 (version info bits from 7, many RS blocks)
    assert decode_png(qr_png(text, box=4)) == [text]
    assert svg_matrix(qr_svg(text)) == qr_matrix(text)


def _matrix_png(m: list[list[bool]], box: int = 8) -> bytes:
    img = Image.new("L", (len(m) * box, len(m) * box), 255)
    px = img.load()
    for y, row in enumerate(m):
        for x, dark in enumerate(row):
            if dark:
                for dy in range(box):
                    for dx in range(box):
                        px[x * box + dx, y * box + dy] = 0
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


# --- refusals --------------------------------------------------------------------------------------------

def test_every_refusal_is_a_page_that_says_what_to_do_and_is_counted(qedge: QrEdge) -> None:
    good = qedge.mint("touchpoint", "runner-42")["token"]
    raw = bytearray(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    raw[15] ^= 0x01  # alter the target
    altered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    other_key = Signer("another-secret-0123456789", "teststore", BASE_URL, 3600, old_secrets=[])
    other_store = Signer(SECRET, "otherstore", BASE_URL, 3600, old_secrets=[])
    mine = Signer(SECRET, "teststore", BASE_URL, 3600, old_secrets=[])
    cases = {
        "malformed": "not-a-token!",
        "forged": other_key.mint("touchpoint", "runner-42"),
        "wrong_store": other_store.mint("touchpoint", "runner-42"),
        "expired": mine.mint("pickup", "ORD-1001", 10, now=time.time() - 60),
    }
    for reason, token in [*cases.items(), ("forged", altered)]:
        r = requests.get(f"{qedge.url}/q/{token}", timeout=10)
        assert 400 <= r.status_code < 500, (reason, r.status_code)
        assert r.headers["Content-Type"].startswith("text/html")
        assert f'data-reason="{reason}"' in r.text
        assert 'name="viewport"' in r.text and "<script" not in r.text
        assert "staff" in r.text or "new code" in r.text
    # Replayed single-use code (a return completed by a scanner, then scanned again) → refused.
    ret = qedge.mint("return", "RMA-5")
    scanner = MqttHelper(qedge.cfg.mqtt.port)
    try:
        scanner.publish(f"{P}/qr/desk-1", {"ts": now_ms(), "code": ret["url"]})
        scanner.publish(f"{P}/qr/desk-1", {"ts": now_ms() + 1, "code": ret["url"]})
        evs = wait_until(lambda: [e for e in qedge.events() if e["source"] == "desk-1"]
                         if len([e for e in qedge.events() if e["source"] == "desk-1"]) == 2 else None)
    finally:
        scanner.close()
    assert sorted(e["type"] for e in evs) == ["refused", "return"]
    assert next(e for e in evs if e["type"] == "refused")["data"]["reason"] == "used"
    text = qedge.metric("instore_edge_qr_refused_total")
    for reason in ("malformed", "forged", "wrong_store", "expired", "used"):
        assert f'reason="{reason}"' in text, text
    assert 'instore_edge_qr_refused_total{reason="forged"} 2' in text


def _other_spellings(token: str) -> dict[str, str]:
    """Texts a lenient base64 decoder reads as the same bytes as `token`."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    spare_bits = {2: 4, 3: 2}[len(token) % 4]  # unused low bits of the last character
    assert last % (1 << spare_bits) == 0
    out = {"padding": token + "==", "one_pad": token + "=", "stray": token + "!!", "inner_stray": token[:5] + "." +
           token[5:], "trailing_bits": token[:-1] + alphabet[last + 1], "space": token[:8] + " " + token[8:]}
    if "-" in token:
        out["plus"] = token.replace("-", "+")
    if "_" in token:
        out["slash"] = token.replace("_", "/")
    return out


def test_a_token_has_exactly_one_spelling_and_every_other_is_refused_as_malformed(
        qcfg: Callable[..., Config]) -> None:
    # Dozens of page loads from one address: lift the per-phone /q/ rate limit for this test.
    qedge = QrEdge(qcfg(limits={"public_burst": 10_000}))
    try:
        _check_one_spelling(qedge)
    finally:
        qedge.service.stop()


def _check_one_spelling(qedge: QrEdge) -> None:
    signer = Signer(SECRET, "teststore", BASE_URL, 3600, old_secrets=[])
    # Tokens with a '-' and a '_' (the nonce is random), and a target length with unused bits at the end.
    tokens = {}
    while len(tokens) < 2:
        t = qedge.mint("touchpoint", "runner-42")["token"]
        for ch in "-_":
            if ch in t and ch not in tokens:
                tokens[ch] = t
    for token in tokens.values():
        assert signer.verify(token).target == "runner-42"
        assert requests.get(f"{qedge.url}/q/{token}", timeout=10).status_code == 200
        variants = _other_spellings(token)
        assert "plus" in variants or "slash" in variants
        for name, text in variants.items():
            with pytest.raises(QrError) as err:
                signer.verify(text)
            assert err.value.reason == "malformed", name
            if "/" in text or " " in text:
                continue  # not one path segment: checked through the scanner below
            r = requests.get(f"{qedge.url}/q/{text}", timeout=10)
            assert r.status_code == 400 and 'data-reason="malformed"' in r.text, (name, r.status_code)
        # A scanner reading any other spelling records a refusal, never a touchpoint scan.
        scanner = MqttHelper(qedge.cfg.mqtt.port)
        try:
            for i, text in enumerate(variants.values()):
                scanner.publish(f"{P}/qr/desk-9", {"id": f"v-{token[:6]}-{i}", "ts": now_ms(),
                                                   "code": f"{BASE_URL}/q/{text}"})
        finally:
            scanner.close()
        mine = lambda: [e for e in qedge.events() if e["event_id"].startswith(f"qr:desk-9:v-{token[:6]}-")]  # noqa: E731
        evs = wait_until(lambda: mine() if len(mine()) == len(variants) else None)
        assert {(e["type"], e["data"]["reason"]) for e in evs} == {("refused", "malformed")}


def test_without_a_secret_minting_and_landing_are_refused_clearly(make_config: Callable[..., Config]) -> None:
    from edge.app import App

    cfg = make_config()
    assert cfg.qr.secret is None
    svc = App(cfg)
    try:
        client = svc.create_app().test_client()
        r = client.post("/api/v1/qr", json={"kind": "touchpoint", "target": "x"},
                        headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 503 and "[qr] secret" in r.get_json()["error"]["message"]
        r = client.get("/q/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        assert r.status_code == 503 and b"[qr] secret" in r.data and b"staff" in r.data
        assert client.post("/api/v1/qr", json={"kind": "touchpoint", "target": "x"}).status_code == 401
    finally:
        svc.conn.close()


def test_mint_api_validates_its_input(qedge: QrEdge) -> None:
    h = {"Authorization": f"Bearer {ADMIN}"}
    for body in ({}, {"kind": "coupon", "target": "x"}, {"kind": "touchpoint"}, {"kind": "touchpoint", "target": ""},
                 {"kind": "touchpoint", "target": "x", "ttl_s": -1}, {"kind": "touchpoint", "target": "x", "format": "gif"},
                 {"kind": "handoff", "target": "x"}, {"kind": "touchpoint", "target": "x" * 100}):
        r = requests.post(qedge.url + "/api/v1/qr", json=body, headers=h, timeout=10)
        assert r.status_code == 400 and "error" in r.json(), body
    r = requests.post(qedge.url + "/api/v1/qr", json={"kind": "touchpoint", "target": "x"},
                      headers={"Authorization": f"Bearer {KIOSK}"}, timeout=10)
    assert r.status_code == 403


# --- journeys --------------------------------------------------------------------------------------------

def test_touchpoint_landing_without_js_records_a_scan_with_zone(qedge: QrEdge) -> None:
    code = qedge.mint("touchpoint", "runner-42")
    r = requests.get(qedge.local(code["url"]), timeout=10)
    assert r.status_code == 200
    assert "Trail runner &lt;42&gt;" in r.text and "<script" not in r.text
    assert 'data-view="product"' in r.text and "89.90" in r.text and "Hi " not in r.text
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    css = requests.get(qedge.url + "/ui/static/landing.css", timeout=10)
    assert css.status_code == 200 and len(r.content) + len(css.content) < 8000
    ev = wait_until(lambda: next((e for e in qedge.events() if e["type"] == "touchpoint"), None))
    assert ev["zone"] == "shoes" and ev["data"]["touchpoint"] == "runner-42" and ev["source"] == "web"
    # A screen touchpoint (content of its playlist) works too.
    r = requests.get(qedge.local(qedge.mint("touchpoint", "entrance-1")["url"]), timeout=10)
    assert r.status_code == 200 and "Autumn collection" in r.text


def _kiosk_event(qedge: QrEdge, event: dict[str, Any]) -> None:
    r = requests.post(qedge.url + "/api/v1/events", json={"kind": "kiosk", "device": "kiosk-1", "event": event},
                      headers={"Authorization": f"Bearer {KIOSK}"}, timeout=10)
    assert r.status_code == 201, r.text


def test_handoff_opens_the_kiosk_cart_on_the_phone_once_and_knows_the_phone(qedge: QrEdge) -> None:
    qedge.put_profile(PROFILE)
    session = "sess-abc123"
    _kiosk_event(qedge, {"ts": now_ms(), "type": "add_to_cart", "session": session, "item": "runner-42"})
    _kiosk_event(qedge, {"ts": now_ms() + 1, "type": "add_to_cart", "session": session, "item": "boot-7"})
    _kiosk_event(qedge, {"ts": now_ms() + 2, "type": "add_to_cart", "session": "someone-else", "item": "scarf-1"})
    r = requests.post(qedge.url + "/kiosk/kiosk-1/handoff", json={"session": session, "customer": "cust-anna"},
                      headers={"Authorization": f"Bearer {KIOSK}"}, timeout=10)
    assert r.status_code == 201, r.text
    handoff = r.json()
    assert decode_png(base64.b64decode(handoff["png_base64"])) == [handoff["url"]]
    assert qr_version(handoff["url"]) <= 6
    phone = requests.Session()
    page = phone.get(qedge.local(handoff["url"]), timeout=10)
    assert page.status_code == 200 and page.url.endswith("/q/session")
    assert 'data-sku="runner-42"' in page.text and 'data-sku="boot-7"' in page.text
    assert "scarf-1" not in page.text and "Anna, your selection" in page.text
    # Reload on the same phone: still there. Another phone with the same (single-use) code: refused.
    assert 'data-sku="boot-7"' in phone.get(qedge.url + "/q/session", timeout=10).text
    other = requests.get(qedge.local(handoff["url"]), timeout=10)
    assert other.status_code == 409 and 'data-reason="used"' in other.text
    assert requests.get(qedge.url + "/q/session", timeout=10).status_code == 404
    # The phone is now known: touchpoints greet Anna and notice her wishlist.
    tp = phone.get(qedge.local(qedge.mint("touchpoint", "runner-42")["url"]), timeout=10)
    assert "Hi, Anna!" in tp.text and "On your wishlist" in tp.text
    # A forged phone cookie is ignored.
    fake = requests.get(qedge.local(qedge.mint("touchpoint", "runner-42")["url"]),
                        cookies={"instore_edge_phone": "AAAA"}, timeout=10)
    assert fake.status_code == 200 and "Anna" not in fake.text


def test_handoff_opens_the_same_cart_in_a_second_browser_context(qedge: QrEdge) -> None:
    """Kiosk page (context 1, JS) → add to bag → "Continue on your phone" → decode the QR it shows →
    open it on a phone (context 2, JavaScript off): the same bag; a third context is refused."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    exe = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            kiosk = b.new_context(viewport={"width": 1080, "height": 1920}).new_page()
            kiosk.goto(f"{qedge.url}/kiosk/kiosk-1?token={KIOSK}")
            kiosk.wait_for_selector("#welcome:not([hidden])")
            kiosk.click("#anonymous")
            kiosk.wait_for_selector("#home:not([hidden])")
            card = kiosk.locator("#products .product-card").first
            sku = card.get_attribute("data-sku")
            card.click()
            kiosk.wait_for_selector("#product:not([hidden])")
            kiosk.click("#add")
            kiosk.click("#close-product")
            kiosk.click("#handoff")
            kiosk.wait_for_selector("#qr-img:not([hidden])")
            assert_accessible(kiosk, "kiosk, handoff QR code")
            src = kiosk.get_attribute("#qr-img", "src")
            assert src.startswith("data:image/png;base64,")
            [url] = decode_png(base64.b64decode(src.split(",", 1)[1]))
            assert url.startswith(BASE_URL + "/q/")
            wait_until(lambda: any(e["type"] == "handoff" for e in qedge.events("kiosk")), what="handoff event")
            phone = b.new_context(viewport={"width": 390, "height": 844}, java_script_enabled=False).new_page()
            phone.goto(qedge.local(url))
            assert phone.url.endswith("/q/session")
            assert phone.locator(f'[data-sku="{sku}"]').count() == 1
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # mobile-first, no overflow
            assert_accessible(phone, "landing, kiosk session on the phone", javascript=False)
            phone.reload()
            assert phone.locator(f'[data-sku="{sku}"]').count() == 1
            third = b.new_context(java_script_enabled=False).new_page()
            resp = third.goto(qedge.local(url))
            assert resp is not None and resp.status == 409
            assert_accessible(third, "landing, code already used", javascript=False)
        finally:
            b.close()


def test_pickup_collected_exactly_once_under_concurrent_scans(qedge: QrEdge) -> None:
    orders = [{**ORDER, "order_id": f"ORD-{i}", "pickup_bay": f"B{i % 4}"} for i in range(12)]
    qedge.put_profile({**PROFILE, "orders_ready": orders})
    codes = [qedge.mint("pickup", o["order_id"])["url"] for o in orders]
    # The shopper's phone shows the order and its code (not consumed by looking at it).
    page = requests.get(qedge.local(codes[0]), timeout=10)
    assert page.status_code == 200 and "B0" in page.text and "<svg" in page.text and "Winter boot" in page.text
    staff = MqttHelper(qedge.cfg.mqtt.port)
    staff.subscribe(f"{P}/staff/pickup")
    time.sleep(0.3)
    a, b = MqttHelper(qedge.cfg.mqtt.port), MqttHelper(qedge.cfg.mqtt.port)
    try:
        barrier = threading.Barrier(2)

        def scan(client: MqttHelper, scanner: str) -> None:
            barrier.wait()
            client.publish_many([(f"{P}/qr/{scanner}", {"ts": now_ms(), "code": c}) for c in codes])

        threads = [threading.Thread(target=scan, args=(a, "scanner-a")), threading.Thread(target=scan, args=(b, "scanner-b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        got: list[dict[str, Any]] = []
        for _ in orders:
            got.append(staff.wait_for(lambda t, d: t == f"{P}/staff/pickup")[1])
        time.sleep(0.5)
        assert staff.received.empty(), "a pickup was announced twice"
    finally:
        for c in (a, b, staff):
            c.close()
    assert sorted(g["order_id"] for g in got) == sorted(o["order_id"] for o in orders)
    first = next(g for g in got if g["order_id"] == "ORD-1")
    assert first["bay"] == "B1" and first["customer"] == "cust-anna" and first["items"] == ["boot-7", "scarf-1"]
    assert first["scanner"] in ("scanner-a", "scanner-b") and "first_name" not in first and "Anna" not in json.dumps(got)
    evs = wait_until(lambda: (lambda e: e if len(e) == 2 * len(orders) else None)(
        [e for e in qedge.events() if e["source"].startswith("scanner-")]))
    assert sum(e["type"] == "pickup" for e in evs) == len(orders)
    assert all(e["data"]["reason"] == "used" for e in evs if e["type"] != "pickup")
    # The pickup events are in the outbox (they sync to the central store like every event).
    from edge.store.db import connect

    conn = connect(qedge.cfg.db.path)
    try:
        n = conn.execute("SELECT count(*) FROM events JOIN outbox ON outbox.event_seq = events.seq "
                         "WHERE events.type = 'pickup' AND events.customer = 'cust-anna'").fetchone()[0]
        rows = conn.execute("SELECT count(*) FROM pickups").fetchone()[0]
    finally:
        conn.close()
    assert n == len(orders) and rows == len(orders)
    page = requests.get(qedge.local(codes[0]), timeout=10)
    assert "Collected" in page.text and "<svg" not in page.text
    # Erasure keeps that the orders were collected, not by whom.
    assert qedge.service.erase("cust-anna")
    conn = connect(qedge.cfg.db.path)
    try:
        assert conn.execute("SELECT count(*) FROM pickups WHERE customer_id IS NOT NULL").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pickups").fetchone()[0] == len(orders)
    finally:
        conn.close()


def test_unknown_order_and_wrong_kind_scans_are_refused(qedge: QrEdge) -> None:
    code = qedge.mint("pickup", "ORD-NOPE")["url"]
    assert requests.get(qedge.local(code), timeout=10).status_code == 404
    scanner = MqttHelper(qedge.cfg.mqtt.port)
    try:
        scanner.publish(f"{P}/qr/desk-2", {"ts": now_ms(), "code": code})
        scanner.publish(f"{P}/qr/desk-2", {"ts": now_ms() + 1, "code": "LOYALTY-123"})
    finally:
        scanner.close()
    evs = wait_until(lambda: (lambda e: e if len(e) == 2 else None)(
        [e for e in qedge.events() if e["source"] == "desk-2"]))
    by_code = {e["data"]["code"]: e for e in evs}
    assert by_code[code]["type"] == "refused" and by_code[code]["data"]["reason"] == "unknown_order"
    assert by_code["LOYALTY-123"]["type"] in (None, "")  # not one of our codes: left to identity


def test_return_completed_in_store_is_recorded_and_announced(qedge: QrEdge) -> None:
    ret = qedge.mint("return", "RMA-2001")
    page = requests.get(qedge.local(ret["url"]), timeout=10)
    assert page.status_code == 200 and "returns desk" in page.text
    staff = MqttHelper(qedge.cfg.mqtt.port)
    staff.subscribe(f"{P}/staff/return")
    time.sleep(0.3)
    try:
        staff.publish(f"{P}/qr/returns-desk", {"ts": now_ms(), "code": ret["url"]})
        _, msg, _ = staff.wait_for(lambda t, d: t == f"{P}/staff/return")
    finally:
        staff.close()
    assert msg["rma_id"] == "RMA-2001" and msg["scanner"] == "returns-desk"
    ev = wait_until(lambda: next((e for e in qedge.events() if e["type"] == "return"), None))
    assert ev["data"]["rma_id"] == "RMA-2001"
    assert "Return received" in requests.get(qedge.local(ret["url"]), timeout=10).text


def test_all_kinds_known() -> None:
    assert set(KINDS) >= {"touchpoint", "handoff", "pickup", "return"}
    assert qr_svg("x").count("<path") == 1
