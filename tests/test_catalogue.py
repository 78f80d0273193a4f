"""One catalogue on the edge: the store's [[products]] and the central's products merged by SKU, the central's
price winning unless the store pins its own, versions only growing, kept across a restart, searchable by
EAN or name; and a price change re-renders the open kiosk page and the signage showing the product."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from a11y import assert_accessible
from conftest import KIOSK, SIGNAGE, EdgeHandle, store_config
from edge.broker import MosquittoBroker
from edge.config import Config, parse_config
from edge.domain.catalogue import Catalogue, ProductError
from edge.store.writer import open_writer

PRODUCTS = [
    {"sku": "SNK-001", "name": "Corsa Runner sneakers", "zone": "shoes", "price": 119.0},
    {"sku": "ACC-002", "name": "Merino scarf", "price": 45.0, "prefer_local": True},
]


def entry(sku: str, version: int, price: float, **product: Any) -> dict[str, Any]:
    return {"kind": "product", "sku": sku, "version": version, "op": "upsert",
            "product": {"sku": sku, "name": product.pop("name", f"Central {sku}"), "price": price,
                        "currency": "EUR", "available": True, **product}}


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return parse_config(store_config(tmp_path, 1883, products=PRODUCTS), env={})


@pytest.fixture
def conn(cfg: Config) -> Iterator[Any]:
    c = open_writer(cfg.db.path)
    yield c
    c.close()


def test_the_centrals_price_wins_over_the_tomls_unless_the_store_prefers_its_own(cfg: Config, conn: Any) -> None:
    cat = Catalogue(cfg, conn)
    assert cat.get("SNK-001").price == 119.0 and cat.get("SNK-001").source == "store"
    assert cat.apply_product(entry("SNK-001", 3, 99.0, image="a" * 64), conn)
    p = cat.get("SNK-001")
    assert (p.price, p.source, p.zone) == (99.0, "central+store", "shoes")  # the TOML fills the zone
    assert cat.apply_product(entry("ACC-002", 1, 10.0), conn)
    assert cat.get("ACC-002").price == 45.0  # prefer_local = true
    assert cat.apply_product(entry("NEW-1", 1, 20.0), conn)
    assert [q.sku for q in cat.all()] == ["SNK-001", "ACC-002", "NEW-1"]


def test_versions_only_grow_and_a_delete_brings_back_the_tomls_product(cfg: Config, conn: Any) -> None:
    cat = Catalogue(cfg, conn)
    assert cat.apply_product(entry("SNK-001", 5, 80.0), conn)
    assert not cat.apply_product(entry("SNK-001", 5, 70.0), conn)  # a redelivery
    assert not cat.apply_product(entry("SNK-001", 4, 60.0), conn)  # an older page arriving late
    assert cat.get("SNK-001").price == 80.0
    assert cat.apply_product({"kind": "product", "sku": "SNK-001", "version": 6, "op": "delete"}, conn)
    assert cat.get("SNK-001").price == 119.0 and cat.get("SNK-001").source == "store"
    assert not cat.apply_product(entry("SNK-001", 6, 1.0), conn)  # the tombstone holds version 6


def test_central_products_survive_a_restart(cfg: Config, conn: Any) -> None:
    cat = Catalogue(cfg, conn)
    conn.execute("BEGIN")
    cat.apply_product(entry("NEW-1", 2, 20.0, variants=[{"sku": "NEW-1-M", "label": "M", "available": False}]), conn)
    conn.execute("COMMIT")
    again = Catalogue(cfg, conn)
    p = again.get("NEW-1")
    assert p is not None and p.price == 20.0 and p.variants[0].label == "M" and not p.here
    assert not again.apply_product(entry("NEW-1", 2, 30.0), conn)


def test_search_finds_by_ean_sku_and_name_in_any_language(cfg: Config, conn: Any) -> None:
    cat = Catalogue(cfg, conn)
    cat.apply_product(entry("COAT-9", 1, 199.0, name="Cappotto in lana", ean="8001234567890",
                            i18n={"en": {"name": "Wool coat"}},
                            variants=[{"sku": "COAT-9-L", "label": "L", "ean": "8001234567891"}]), conn)
    assert [p.sku for p in cat.search("8001234567890")] == ["COAT-9"]
    assert cat.by_ean("8001234567891").sku == "COAT-9"
    assert [p.sku for p in cat.search("wool")] == ["COAT-9"]
    assert [p.sku for p in cat.search("snk")] == ["SNK-001"]
    assert cat.search("  ") == []


@pytest.mark.parametrize("bad, says", [
    ({"sku": "X", "version": "1", "op": "upsert", "product": {"name": "x"}}, "version"),
    ({"sku": "X", "version": 1, "op": "replace"}, "op must be"),
    ({"sku": "X", "version": 1, "op": "upsert", "product": {"name": "x", "price": -1}}, "price"),
    ({"sku": "X", "version": 1, "op": "upsert", "product": {"name": "x", "price": True}}, "price"),
    ({"sku": "X", "version": 1, "op": "upsert", "product": {"name": ""}}, "product.name"),
    ({"sku": "X", "version": 1, "op": "upsert", "product": {"name": "x", "currency": "euro"}}, "currency"),
    ({"sku": "X", "version": 1, "op": "upsert", "product": {"name": "x", "variants": [1]}}, "variants[0]"),
    ({"sku": "X", "version": 1, "op": "upsert", "product": {"sku": "Y", "name": "x"}}, "differs"),
    ({"sku": "", "version": 1, "op": "delete"}, "sku"),
    ("junk", "object"),
])
def test_a_malformed_entry_is_refused_with_what_to_fix_and_changes_nothing(cfg: Config, conn: Any, bad: Any,
                                                                           says: str) -> None:
    cat = Catalogue(cfg, conn)
    with pytest.raises(ProductError, match=None) as info:
        cat.apply_product(bad, conn)
    assert says in str(info.value)
    assert cat.get("X") is None and conn.execute("SELECT count(*) FROM products").fetchone()[0] == 0


# --- in Chromium: a price change re-renders every screen showing it ------------------------------------------

@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    api = pytest.importorskip("playwright.sync_api")
    with api.sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None,
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()
    gc.collect()


@pytest.fixture
def shop(tmp_path: Path, broker: MosquittoBroker) -> Iterator[EdgeHandle]:
    content = [{"id": "autumn", "title": "Autumn collection", "sku": "SNK-001"}, {"id": "news", "title": "New"},
               {"id": "welcome", "title": "Welcome!"}]
    cfg = parse_config(store_config(tmp_path, broker.port, products=PRODUCTS, content=content,
                                    store={"language": "it"}), env={})
    handle = EdgeHandle(cfg)
    yield handle
    handle.stop()


def test_a_price_change_rerenders_the_open_kiosk_page_and_the_signage_showing_it(shop: EdgeHandle,
                                                                                 browser: Any) -> None:
    ctx = browser.new_context(viewport={"width": 1080, "height": 1920})
    try:
        kiosk = ctx.new_page()
        kiosk.goto(f"{shop.url}/kiosk/kiosk-1?token={KIOSK}")
        kiosk.click("#anonymous")
        card = "#products .product-card[data-sku='SNK-001'] .price"
        assert kiosk.text_content(card) == "119,00\xa0€"
        kiosk.click("#products .product-card[data-sku='SNK-001']")
        assert kiosk.text_content("#product .price") == "119,00\xa0€"
        signage = ctx.new_page()
        signage.goto(f"{shop.url}/signage/shoes-1?token={SIGNAGE}")  # its playlist: "autumn", showing SNK-001
        assert signage.text_content("#stage .price") == "119,00\xa0€"
        for page in (kiosk, signage):  # both streams open before the change
            page.wait_for_function("() => document.body.getAttribute('data-online') === 'yes'")

        assert shop.service.apply_product(entry("SNK-001", 7, 89.9))

        kiosk.wait_for_function(f"() => document.querySelector(\"{card}\").textContent === '89,90\\u00a0€'")
        assert kiosk.text_content("#product .price") == "89,90\xa0€"  # the open product sheet too
        signage.wait_for_function("() => document.querySelector('#stage .price').textContent === '89,90\\u00a0€'")
        assert_accessible(signage, "signage with a price")
        # A page opened after the change reads the same catalogue.
        fresh = ctx.new_page()
        fresh.goto(f"{shop.url}/signage/shoes-1?token={SIGNAGE}")
        assert fresh.text_content("#stage .price") == "89,90\xa0€"
    finally:
        ctx.close()
