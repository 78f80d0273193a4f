"""Languages: every marked text is translated and compiled; pages speak the phone's, the kiosk shopper's or the
store's language, in a real Chromium; prices and dates are written the locale's way; content picks its
per-language text with the fallbacks the README promises."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from a11y import assert_accessible
from conftest import KIOSK, ROOT, SIGNAGE, EdgeHandle, now_ms, sighting, store_config, wait_until
from edge import i18n
from edge.broker import MosquittoBroker
from edge.config import ConfigError, parse_config
from edge.qr import Signer, sheet_html

playwright_api = pytest.importorskip("playwright.sync_api")

SECRET = "Zq8vN3kLp0Xw7rT2yU5bH9cM"
PHONE = {"width": 390, "height": 844}
LANDSCAPE = {"width": 1920, "height": 1080}
NBSP = "\u00a0"
PRODUCTS = [{"sku": "SNK-9", "name": "Canvas sneakers", "zone": "shoes", "price": 12.5,
             "i18n": {"it": {"name": "Sneakers in tela"}}},
            {"sku": "BAG-1", "name": "Tote bag", "zone": "shoes", "price": 1234.5}]
# Written in the store's language (English here), with Italian where there is one: "news" has no Italian
# body, "welcome" no translation at all.
CONTENT = [{"id": "autumn", "title": "Autumn collection", "body": "Wool and tweed.", "duration_s": 2.0,
            "i18n": {"it": {"title": "Collezione autunno", "body": "Lana e tweed."}}},
           {"id": "news", "title": "New arrivals", "body": "Fresh this week.", "i18n": {"it": {"title": "Novità"}}},
           {"id": "welcome", "title": "Welcome!"}]


# --- the catalogues ---------------------------------------------------------------------------------------

def _marked_texts() -> set[str | tuple[str, str]]:
    """Every text the code marks for translation, extracted as scripts/i18n extract does (babel.cfg)."""
    with open(ROOT / "babel.cfg", encoding="utf-8") as f:
        method_map, options_map = parse_mapping_cfg(f)
    found: set[str | tuple[str, str]] = set()
    for _file, _line, message, _comments, _context in extract_from_dir(str(ROOT), method_map, options_map):
        found.add(message)
    return found


def _po(lang: str) -> Any:
    with open(i18n.TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f)


def test_every_marked_text_is_translated_in_every_language() -> None:
    marked = _marked_texts()
    assert len(marked) > 80 and "Welcome" in marked  # the extraction found the pages' texts
    for lang in i18n.LANGUAGES:
        catalog = _po(lang)
        problems = []
        for msgid in sorted(marked, key=str):
            message = catalog.get(msgid)
            strings = (message.string if isinstance(message.string, tuple) else (message.string,)) if message else ()
            if message is None or message.fuzzy or not all(strings):
                problems.append(msgid)
        assert not problems, (f"{lang}: {len(problems)} marked text(s) without a reviewed translation in "
                              f"edge/translations/{lang}/LC_MESSAGES/messages.po (run scripts/i18n all, then "
                              f"translate): {problems[:5]}")
        # Placeholders agree with the msgid's (%(name)s kept, none invented).
        errors = [(m.id, [str(e) for e in errs]) for m, errs in catalog.check()]
        assert not errors, f"{lang}: {errors[:5]}"


def _texts(messages: Any) -> dict[Any, Any]:
    """msgid -> msgstr, plurals as tuples (the .mo reader gives lists)."""
    def key(value: Any) -> Any:
        return tuple(value) if isinstance(value, list | tuple) else value

    return {key(m.id): key(m.string) for m in messages if m.id and not m.fuzzy}


def test_committed_mo_files_match_their_po_files() -> None:
    for lang in i18n.LANGUAGES:
        with open(i18n.TRANSLATIONS / lang / "LC_MESSAGES" / "messages.mo", "rb") as f:
            compiled = _texts(read_mo(f))
        source = _texts(_po(lang))
        stale = {k for k in source.keys() | compiled.keys() if source.get(k) != compiled.get(k)}
        assert not stale, (f"edge/translations/{lang}/LC_MESSAGES/messages.mo is stale ({len(stale)} texts differ "
                           f"from messages.po): run scripts/i18n compile. E.g. {sorted(stale, key=str)[:3]}")


def test_a_language_needs_its_catalogue_and_a_clear_config_error(tmp_path: Path) -> None:
    for value, expected in (("de", "unsupported language 'de'"), ("it-IT", "write the language as 'it'"),
                            ("", "unsupported language ''")):
        with pytest.raises(ConfigError) as exc:
            parse_config(store_config(tmp_path, 1883, store={"id": "s", "language": value}), env={})
        assert "store.language" in str(exc.value) and expected in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        parse_config(store_config(tmp_path, 1883, store={"id": "s", "currency": "eur"}), env={})
    assert "store.currency" in str(exc.value) and "did you mean 'EUR'" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        parse_config(store_config(tmp_path, 1883, content=[{"id": "a", "title": "A", "i18n": {"fr": {"title": "x"}}}]),
                     env={})
    assert "content[0]" in str(exc.value) and "'fr'" in str(exc.value)
    cfg = parse_config(store_config(tmp_path, 1883), env={})
    assert (cfg.store.language, cfg.store.currency) == ("en", "EUR")


# --- formatting and choosing text (no browser) --------------------------------------------------------

def test_prices_numbers_and_dates_follow_the_locale() -> None:
    assert i18n.format_price(12.5, "EUR", "it") == f"12,50{NBSP}€"
    assert i18n.format_price(12.5, "EUR", "en") == "€12.50"
    assert i18n.format_price(1234.5, "CHF", "it") == f"1.234,50{NBSP}CHF"
    assert i18n.format_number(1234.5, "it") == "1.234,5" and i18n.format_number(1234.5, "en") == "1,234.5"
    moment = 1741946400  # 2025-03-14 10:00 UTC, 11:00 in Rome
    assert i18n.format_date(moment, "it", "Europe/Rome") == "14 mar 2025"
    assert i18n.format_date(moment, "en", "Europe/Rome") == "Mar 14, 2025"
    assert i18n.format_time(moment, "it", "Europe/Rome") == "11:00"
    assert i18n.format_time(moment, "en", "Europe/Rome").replace("\u202f", " ") == "11:00 AM"


def test_text_falls_back_to_the_stores_language_then_to_the_text_as_written() -> None:
    item = {"title": "Autumn", "body": "Wool.", "i18n": {"it": {"title": "Autunno"}, "en": {"body": "Wool!"}}}
    assert i18n.localized(item, "it", "en") == {"title": "Autunno", "body": "Wool!"}  # body: the store's
    assert i18n.localized(item, "en", "it") == {"title": "Autunno", "body": "Wool!"}  # title: the store's
    assert i18n.localized({"title": "Autumn", "body": "Wool."}, "it", "it") == {"title": "Autumn", "body": "Wool."}
    assert i18n.localized({"name": "Tote", "i18n": {"it": {"name": ""}}}, "it", "en", ("name",)) == {"name": "Tote"}
    # A central campaign's text in a language this edge does not speak is simply never picked.
    assert i18n.localized({"title": "T", "i18n": {"de": {"title": "D"}}}, "it", "en")["title"] == "T"


def test_plural_texts_for_the_browser_cover_every_cldr_category() -> None:
    forms = i18n.plural_forms("it", lambda n: i18n.translations("it").ngettext(
        "Bag: %(num)d item", "Bag: %(num)d items", n))
    assert forms == {"one": "Borsa: %(num)d articolo", "many": "Borsa: %(num)d articoli",
                     "other": "Borsa: %(num)d articoli"}


def test_the_printable_qr_sheet_speaks_the_stores_language(tmp_path: Path) -> None:
    cfg = parse_config(store_config(tmp_path, 1883, store={"language": "it"}, qr={"secret": SECRET},
                                    products=PRODUCTS, content=CONTENT), env={})
    html = sheet_html(cfg, Signer.from_config(cfg), "shoes", ttl_s=86400)
    assert '<html lang="it">' in html and "Sneakers in tela" in html and "Schermo shoes-1" in html
    assert "valido fino al" in html and "valid until" not in html


# --- pages in Chromium ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()
    gc.collect()  # see test_pages.browser


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """A page in a fresh context; `locale` sets the browser's language (and its Accept-Language)."""
    contexts: list[Any] = []
    errors: list[str] = []

    def make(viewport: dict[str, int] = LANDSCAPE, locale: str | None = None) -> Any:
        context = browser.new_context(viewport=viewport, **({"locale": locale} if locale else {}))
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield make
    for c in contexts:
        c.close()
    assert not errors, f"uncaught errors in page scripts: {errors}"


@pytest.fixture
def make_edge(tmp_path: Path, broker: MosquittoBroker) -> Iterator[Callable[..., EdgeHandle]]:
    handles: list[EdgeHandle] = []

    def make(**sections: Any) -> EdgeHandle:
        sections.setdefault("products", PRODUCTS)
        sections.setdefault("content", CONTENT)
        sections.setdefault("qr", {"secret": SECRET, "base_url": "http://127.0.0.1:1"})
        handles.append(EdgeHandle(parse_config(store_config(tmp_path, broker.port, **sections), env={})))
        return handles[-1]

    yield make
    for h in handles:
        h.stop()


def landing(edge: EdgeHandle, target: str) -> str:
    """The path of a fresh touchpoint code for `target`."""
    return "/q/" + Signer.from_config(edge.cfg).mint("touchpoint", target)


def test_a_landing_page_speaks_the_phones_language_with_its_prices(make_edge: Callable[..., EdgeHandle],
                                                                   open_page: Callable[..., Any]) -> None:
    edge = make_edge()  # an English store
    path = landing(edge, "SNK-9")
    page = open_page(PHONE, locale="it-IT")
    page.goto(edge.url + path)
    assert page.get_attribute("html", "lang") == "it"
    assert page.text_content("h1") == "Sneakers in tela"
    assert page.text_content(".price") == f"12,50{NBSP}€"
    assert "Disponibile qui, nel reparto Shoes." in page.text_content("main")
    assert page.text_content("form[data-form='assist'] button") == "Chiedi a un addetto"
    assert_accessible(page, "landing page in Italian")

    page = open_page(PHONE, locale="en-GB")
    page.goto(edge.url + path)
    assert page.get_attribute("html", "lang") == "en"
    assert page.text_content("h1") == "Canvas sneakers" and page.text_content(".price") == "€12.50"
    assert "Available here, in Shoes." in page.text_content("main")
    # A phone in a language the edge does not speak gets the store's; the switch on the page changes it and
    # the choice stays for the next code the phone opens (a cookie).
    page = open_page(PHONE, locale="de-DE")
    page.goto(edge.url + path)
    assert page.get_attribute("html", "lang") == "en"
    page.click("a[hreflang='it']")
    page.wait_for_selector("html[lang='it']")
    assert page.text_content(".price") == f"12,50{NBSP}€"
    page.goto(edge.url + landing(edge, "BAG-1"))
    assert page.get_attribute("html", "lang") == "it" and page.text_content(".price") == f"1.234,50{NBSP}€"
    assert_accessible(page, "landing page switched to Italian")
    # Switching language is not another scan: SNK-9 was scanned by three phones, BAG-1 once.
    def scans() -> dict[str, int] | None:
        counts: dict[str, int] = {}
        for e in edge.events(kind="qr"):
            if e["type"] == "touchpoint":
                counts[e["data"]["touchpoint"]] = counts.get(e["data"]["touchpoint"], 0) + 1
        return counts if counts.get("BAG-1") else None

    assert wait_until(scans, what="the scans") == {"SNK-9": 3, "BAG-1": 1}


def test_refusals_and_the_slow_down_page_speak_the_phones_language(make_edge: Callable[..., EdgeHandle]) -> None:
    edge = make_edge(limits={"public_burst": 1, "public_rate_per_s": 0.01})
    it = {"Accept-Language": "it-IT,it;q=0.9,en;q=0.5"}
    r = requests.get(edge.url + "/q/not-a-real-code", headers=it, timeout=10)
    assert r.status_code == 400 and '<html lang="it">' in r.text and "Impossibile leggere il codice" in r.text
    r = requests.get(edge.url + "/q/not-a-real-code", headers=it, timeout=10)
    assert r.status_code == 429 and "Un attimo, per favore" in r.text
    assert f"tra {r.headers['Retry-After']} secondi" in r.text


def test_content_shows_in_the_page_language_with_fallbacks(make_edge: Callable[..., EdgeHandle],
                                                           open_page: Callable[..., Any]) -> None:
    edge = make_edge(store={"language": "it"})
    page = open_page(PHONE, locale="it-IT")
    page.goto(edge.url + landing(edge, "news"))
    assert page.text_content("h1") == "Novità" and "Fresh this week." in page.text_content("main")  # no Italian body
    page = open_page(PHONE, locale="en-US")
    page.goto(edge.url + landing(edge, "news"))
    # English phone, Italian store: the item has no English text, so the store's language, then the text as written.
    assert page.text_content("h1") == "Novità" and "Fresh this week." in page.text_content("main")
    page.goto(edge.url + landing(edge, "welcome"))
    assert page.text_content("h1") == "Welcome!"


def test_signage_of_an_italian_store_is_italian(make_edge: Callable[..., EdgeHandle],
                                                open_page: Callable[..., Any]) -> None:
    edge = make_edge(store={"language": "it"})
    page = open_page(LANDSCAPE, locale="en-US")  # the screen's browser language does not matter
    page.goto(f"{edge.url}/signage/entrance-1?token={SIGNAGE}")
    page.wait_for_selector("body[data-online='yes']", state="attached")
    assert page.get_attribute("html", "lang") == "it"
    assert page.get_attribute("#offline", "aria-label") == "Non in linea: è in onda l'ultima playlist"
    assert page.get_attribute("#stage", "data-content-id") == "autumn"
    assert page.text_content("#stage .title") == "Collezione autunno" and page.text_content("#stage .body") == "Lana e tweed."
    page.wait_for_selector("#stage[data-content-id='news']", timeout=12000)  # the playlist's next item
    assert page.text_content("#stage .title") == "Novità" and page.text_content("#stage .body") == "Fresh this week."
    assert_accessible(page, "signage in Italian")
    refused = requests.get(edge.url + "/signage/entrance-1", headers={"Accept-Language": "en"}, timeout=10)
    assert refused.status_code == 401 and "Accesso non autorizzato" in refused.text


def test_the_kiosk_switches_language_for_a_session_and_back_when_idle(
        make_edge: Callable[..., EdgeHandle], open_page: Callable[..., Any], mqtt_client: Any) -> None:
    edge = make_edge(rules=[
        {"id": "shoes-news", "priority": 5, "ttl_s": 60.0, "when": {"zone": "shoes", "event": "zone_enter"},
         "show": {"content_id": "autumn", "kiosks": ["@zone"]}}])
    page = open_page(LANDSCAPE, locale="it-IT")  # the kiosk starts in the store's language, not the browser's
    page.clock.install()
    page.goto(f"{edge.url}/kiosk/kiosk-1?token={KIOSK}")
    page.wait_for_selector("#welcome:not([hidden])")
    assert page.get_attribute("html", "lang") == "en" and page.text_content("#welcome h1") == "Welcome"
    page.click("#languages [data-lang='it']")
    assert page.get_attribute("html", "lang") == "it"
    assert page.get_attribute("#languages [data-lang='it']", "aria-pressed") == "true"
    assert page.text_content("#welcome h1") == "Benvenuti" and page.text_content("#anonymous") == "Continua senza carta"
    assert_accessible(page, "kiosk welcome in Italian")
    page.click("#anonymous")
    page.wait_for_selector("#home:not([hidden])")
    card = page.locator("#products .product-card[data-sku='SNK-9']")
    assert card.locator(".name").text_content() == "Sneakers in tela"
    assert card.locator(".price").text_content() == f"12,50{NBSP}€"
    card.click()
    page.click("#add")
    assert page.text_content("#add") == "Nella tua borsa ✓" and page.text_content("#bag-count") == "Borsa: 1 articolo"
    page.click("#close-product")
    # Content a rule pushes to the kiosk arrives in every language: the session's is shown.
    mqtt_client().publish("instore/teststore/beacon/gw-shoes", sighting(now_ms(), minor=4))
    page.wait_for_selector("#pushed[data-content-id='autumn']:not([hidden])", timeout=5000)
    assert page.text_content("#pushed .title") == "Collezione autunno"
    page.click("#languages [data-lang='en']")
    assert page.text_content("#pushed .title") == "Autumn collection"
    assert page.text_content("#bag-count") == "Bag: 1 item"
    assert page.locator("#products .product-card[data-sku='SNK-9'] .price").text_content() == "€12.50"
    page.click("#languages [data-lang='it']")
    assert_accessible(page, "kiosk home in Italian")

    page.clock.fast_forward(91_000)  # 90 s without a touch: the session ends, the store's language is back
    page.wait_for_selector("#welcome:not([hidden])")
    assert page.get_attribute("html", "lang") == "en" and page.text_content("#welcome h1") == "Welcome"
    assert page.get_attribute("#languages [data-lang='en']", "aria-pressed") == "true"
    # A language picked on the welcome screen and left there goes back too.
    page.click("#languages [data-lang='it']")
    assert page.text_content("#welcome h1") == "Benvenuti"
    page.clock.fast_forward(91_000)
    page.wait_for_selector("html[lang='en']")
    assert page.text_content("#welcome h1") == "Welcome"


def test_an_italian_store_kiosk_starts_in_italian(make_edge: Callable[..., EdgeHandle],
                                                  open_page: Callable[..., Any]) -> None:
    edge = make_edge(store={"language": "it"})
    page = open_page(LANDSCAPE, locale="en-GB")
    page.goto(f"{edge.url}/kiosk/kiosk-1?token={KIOSK}")
    page.wait_for_selector("#welcome:not([hidden])")
    assert page.get_attribute("html", "lang") == "it" and page.text_content("#welcome h1") == "Benvenuti"
    boot = json.loads(page.text_content("#boot"))
    assert set(boot["strings"]) == set(i18n.LANGUAGES) and boot["lang"] == "it"
