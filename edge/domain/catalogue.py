"""The one catalogue every page reads (kiosk, signage, QR landing pages, the staff app): products and prices.

Two sources, merged by SKU:
- the store's TOML `[[products]]` (its own products; prices in `[store] currency`);
- the central store's products, delivered by the content feed (`{"kind": "product", "sku", "version",
  "op": "upsert"|"delete", "product": {...}}`, see docs) through `apply_product` / `delete_product`, kept in
  the `products` table so a restart offline shows the last prices.

Who wins: for an SKU both list, the central's product wins (the chain's price is the price everywhere), its
missing fields (zone, image, names) filled from the TOML entry; a TOML entry with `prefer_local = true`
wins instead (a store's own sale price, a local product that shares a code). A central delete removes the
central product only: a TOML product of the same SKU shows again. Versions only grow: an entry not newer
than the one held is ignored (a redelivery, an out-of-order page).

Writes happen in the writer's transaction (the caller's connection); listeners (the pages) hear the SKUs
that changed, to re-render every screen showing them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from edge.config import Config, ProductConfig
from edge.i18n import LANGUAGES, format_price, localized

log = logging.getLogger(__name__)

MAX_SKU = 128
MAX_NAME = 200
MAX_VARIANTS = 50
MAX_NEARBY = 20
SEARCH_LIMIT = 20


class ProductError(ValueError):
    """A central product entry the edge cannot use; the message says what to fix."""


@dataclass(frozen=True)
class Variant:
    """A size or colour of a product, and whether this store has it."""

    sku: str
    label: str
    available: bool | None = None
    ean: str | None = None


@dataclass(frozen=True)
class Nearby:
    """Another store and whether it has the product (from the central's product data)."""

    store: str
    name: str
    available: bool


@dataclass(frozen=True)
class Product:
    """A product as every page shows it. `available` None: the store does not say (a TOML product: here)."""

    sku: str
    name: str
    price: float | None
    currency: str
    zone: str | None = None
    image: str | None = None
    available: bool | None = None
    ean: str | None = None
    variants: tuple[Variant, ...] = ()
    nearby: tuple[Nearby, ...] = ()
    i18n: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    source: str = "store"  # "store" (TOML), "central", or "central+store" (merged)
    version: int = 0

    def texts(self) -> dict[str, Any]:
        """The name with its translations, as edge.i18n.localized reads them."""
        return {"name": self.name, "i18n": {k: dict(v) for k, v in self.i18n.items()}}

    def name_in(self, lang: str, default: str) -> str:
        return localized(self.texts(), lang, default, ("name",))["name"] or self.sku

    @property
    def here(self) -> bool:
        """On sale in this store (a variant available counts)."""
        if self.variants and any(v.available is not None for v in self.variants):
            return any(v.available is not False for v in self.variants)
        return self.available is not False


def _from_config(p: ProductConfig, currency: str) -> Product:
    return Product(sku=p.sku, name=p.name, price=p.price, currency=currency, zone=p.zone, image=p.image,
                   i18n={k: v for k, v in p.texts()["i18n"].items()}, source="store")


def _text(value: Any, what: str, limit: int, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ProductError(f"{what} must be a non-empty string of at most {limit} characters")
    return value


def _flag(value: Any, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ProductError(f"{what} must be true or false")


def parse_product(sku: str, body: Any, default_currency: str) -> Product:
    """A central product (the content feed's `product` object) as a Product; ProductError says what is wrong."""
    if not isinstance(body, dict):
        raise ProductError("product must be an object {sku, name, price, currency, ...}")
    name = _text(body.get("name"), "product.name", MAX_NAME, required=True)
    price = body.get("price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float) or not 0 <= price < 1e9):
        raise ProductError("product.price must be a number ≥ 0 (or absent)")
    currency = body.get("currency") or default_currency
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        raise ProductError("product.currency must be an ISO 4217 code such as EUR")
    variants = body.get("variants") or []
    if not isinstance(variants, list) or len(variants) > MAX_VARIANTS:
        raise ProductError(f"product.variants must be a list of at most {MAX_VARIANTS} objects {{sku, label, "
                           "available?}}")
    parsed_variants = []
    for i, v in enumerate(variants):
        if not isinstance(v, dict):
            raise ProductError(f"product.variants[{i}] must be an object {{sku, label, available?}}")
        vsku = _text(v.get("sku"), f"product.variants[{i}].sku", MAX_SKU, required=True)
        label = _text(v.get("label") or vsku, f"product.variants[{i}].label", 60, required=True)
        parsed_variants.append(Variant(str(vsku), str(label), _flag(v.get("available"), f"product.variants[{i}]"
                                       ".available"), _text(v.get("ean"), f"product.variants[{i}].ean", 32)))
    nearby = body.get("nearby") or []
    if not isinstance(nearby, list) or len(nearby) > MAX_NEARBY:
        raise ProductError(f"product.nearby must be a list of at most {MAX_NEARBY} objects {{store, name?, "
                           "available}}")
    parsed_nearby = []
    for i, n in enumerate(nearby):
        if not isinstance(n, dict):
            raise ProductError(f"product.nearby[{i}] must be an object {{store, name?, available}}")
        store = _text(n.get("store"), f"product.nearby[{i}].store", 64, required=True)
        parsed_nearby.append(Nearby(str(store), str(_text(n.get("name") or store, f"product.nearby[{i}].name", 100)),
                                    bool(_flag(n.get("available"), f"product.nearby[{i}].available"))))
    i18n = body.get("i18n") or {}
    if not isinstance(i18n, dict):
        raise ProductError('product.i18n must be an object {"it": {"name": "..."}}')
    names = {lang: {"name": t["name"]} for lang, t in i18n.items()
             if lang in LANGUAGES and isinstance(t, dict) and isinstance(t.get("name"), str) and t["name"].strip()}
    image = _text(body.get("image"), "product.image", 500)
    return Product(sku=sku, name=str(name), price=float(price) if price is not None else None,
                   currency=currency.upper(), zone=_text(body.get("zone"), "product.zone", 64), image=image,
                   available=_flag(body.get("available"), "product.available"),
                   ean=_text(body.get("ean"), "product.ean", 32), variants=tuple(parsed_variants),
                   nearby=tuple(parsed_nearby), i18n=names, source="central")


def _merge(central: Product, local: Product | None) -> Product:
    """The central product with the gaps filled from the store's TOML entry of the same SKU."""
    if local is None:
        return central
    i18n = {**local.i18n, **central.i18n}
    return replace(central, zone=central.zone or local.zone, image=central.image or local.image, i18n=i18n,
                   source="central+store")


def product_images(conn: sqlite3.Connection) -> set[str]:
    """The pictures the central's products and their variants name (from the `products` table, any connection):
    the asset cache keeps them and the edge serves them to the public landing pages."""
    found: set[str] = set()
    try:
        rows = conn.execute("SELECT product FROM products WHERE deleted = 0 AND product IS NOT NULL").fetchall()
    except sqlite3.OperationalError:
        return found  # a database without the table yet
    for (raw,) in rows:
        try:
            body = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        variants = body.get("variants") if isinstance(body.get("variants"), list) else []
        found |= {item["image"] for item in [body, *variants]
                  if isinstance(item, dict) and isinstance(item.get("image"), str)}
    return found


class Catalogue:
    """The merged catalogue by SKU: read from any thread; `apply_product` / `delete_product` in the writer's."""

    def __init__(self, cfg: Config, conn: sqlite3.Connection | None = None) -> None:
        self.language = cfg.store.language
        self.currency = cfg.store.currency
        self.local: dict[str, Product] = {p.sku: _from_config(p, self.currency) for p in cfg.products}
        self.local_wins = frozenset(p.sku for p in cfg.products if p.prefer_local)
        self.central: dict[str, Product] = {}
        self.versions: dict[str, int] = {}  # central versions held, tombstones (deletes) included
        self.listeners: list[Callable[[list[str]], None]] = []
        self._lock = threading.Lock()
        self._merged: dict[str, Product] = {}
        if conn is not None:
            self.load(conn)
        else:
            self._rebuild()

    # --- reading ---
    def load(self, conn: sqlite3.Connection) -> None:
        """The central products kept in the `products` table (a restart offline keeps the last prices)."""
        central, versions = {}, {}
        try:
            rows = conn.execute("SELECT sku, version, deleted, product FROM products").fetchall()
        except sqlite3.OperationalError:
            rows = []  # a database without the table yet
        for sku, version, deleted, raw in rows:
            versions[sku] = version
            if deleted:
                continue
            try:
                central[sku] = replace(parse_product(sku, json.loads(raw), self.currency), version=version)
            except (ValueError, TypeError) as exc:
                log.warning("a stored central product is unusable (%s): ignored until the central sends it again", exc)
        with self._lock:
            self.central, self.versions = central, versions
        self._rebuild()

    def _rebuild(self) -> None:
        merged = dict(self.local)
        for sku, p in self.central.items():
            if sku in self.local_wins:
                continue
            merged[sku] = _merge(p, self.local.get(sku))
        self._merged = merged  # replaced whole: readers never see a half-built dict

    def get(self, sku: str | None) -> Product | None:
        return self._merged.get(sku) if sku else None

    def __contains__(self, sku: object) -> bool:
        return sku in self._merged

    def all(self) -> list[Product]:
        """Every product: the TOML's in config order, then the central's by SKU."""
        merged = self._merged
        return [merged[s] for s in self.local if s in merged] + sorted(
            (p for s, p in merged.items() if s not in self.local), key=lambda p: p.sku)

    def by_ean(self, ean: str) -> Product | None:
        """The product (or the product of the variant) with this barcode: the staff app's scanner."""
        ean = ean.strip()
        for p in self._merged.values():
            if p.ean == ean or any(v.ean == ean for v in p.variants):
                return p
        return None

    def search(self, text: str, limit: int = SEARCH_LIMIT) -> list[Product]:
        """Products whose EAN or SKU is `text`, then whose SKU starts with it, then whose name (any language)
        contains it, case-insensitively: the staff app's POS look-up."""
        q = text.strip().casefold()
        if not q:
            return []
        exact, prefix, named = [], [], []
        for p in self.all():
            codes = [p.sku.casefold(), (p.ean or "").casefold()] + [v.sku.casefold() for v in p.variants] + \
                [(v.ean or "").casefold() for v in p.variants]
            names = [p.name.casefold()] + [t.get("name", "").casefold() for t in p.i18n.values()]
            if q in codes:
                exact.append(p)
            elif any(c.startswith(q) for c in codes if c):
                prefix.append(p)
            elif any(q in n for n in names):
                named.append(p)
        return (exact + prefix + named)[:limit]

    def product(self, sku: str, lang: str | None = None) -> dict[str, Any]:
        """A product as the pages show it: its name in `lang` (default: the store's), its price and currency,
        and its names in other languages (`i18n`). An SKU the catalogue does not list keeps its code as name."""
        p = self._merged.get(sku)
        if p is None:
            return {"sku": sku, "name": sku, "price": None, "currency": self.currency, "category": "", "zone": "",
                    "image": None}
        out: dict[str, Any] = {"sku": p.sku, "name": p.name_in(lang or self.language, self.language),
                               "price": p.price, "currency": p.currency, "category": "", "zone": p.zone or "",
                               "image": p.image}
        if p.i18n:
            out["i18n"] = {k: dict(v) for k, v in p.i18n.items()}
        if p.available is not None:
            out["available"] = p.here
        return out

    def price_text(self, sku: str, lang: str) -> str:
        """The product's price as `lang` writes it ("12,50 €"), or "" without a price."""
        p = self._merged.get(sku)
        return "" if p is None or p.price is None else format_price(p.price, p.currency, lang)

    def for_zone(self, zone: str | None, limit: int = 12) -> list[dict[str, Any]]:
        """A kiosk's default product list: its zone's products first, then the rest, in catalogue order."""
        ordered = sorted(self.all(), key=lambda p: p.zone != zone)
        return [self.product(p.sku) for p in ordered[:limit]]

    # --- changes from the central (writer thread, the caller's transaction) ---
    def apply_product(self, entry: Mapping[str, Any], conn: sqlite3.Connection) -> bool:
        """Apply one content-feed product entry (upsert or delete) in the caller's transaction: True when it
        changed the catalogue, False when not newer than what is held; ProductError when malformed."""
        if not isinstance(entry, Mapping):
            raise ProductError("a product entry must be an object {kind, sku, version, op, product?}")
        sku = _text(entry.get("sku"), "sku", MAX_SKU, required=True)
        version = entry.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ProductError("version must be a whole number ≥ 0")
        op = entry.get("op")
        if op == "delete":
            return self.delete_product(str(sku), conn, version=version)
        if op != "upsert":
            raise ProductError('op must be "upsert" or "delete"')
        body = entry.get("product")
        if isinstance(body, dict) and body.get("sku") not in (None, sku):
            raise ProductError(f"product.sku {body.get('sku')!r} differs from the entry's sku {sku!r}")
        product = replace(parse_product(str(sku), body, self.currency), version=version)
        if version <= self.versions.get(str(sku), -1):
            return False
        conn.execute("INSERT INTO products(sku, version, deleted, product, updated_at) VALUES (?,?,0,?,?) "
                     "ON CONFLICT(sku) DO UPDATE SET version = excluded.version, deleted = 0, "
                     "product = excluded.product, updated_at = excluded.updated_at",
                     (sku, version, json.dumps(body, separators=(",", ":")), time.time()))
        with self._lock:
            self.central = {**self.central, str(sku): product}
            self.versions[str(sku)] = version
            self._rebuild()
        self._changed([str(sku)])
        return True

    def delete_product(self, sku: str, conn: sqlite3.Connection, version: int | None = None) -> bool:
        """Remove the central's product (a TOML product of the same SKU shows again); the version is kept as a
        tombstone so an older upsert arriving late does not bring it back. Without a version: the next one."""
        held = self.versions.get(sku, -1)
        version = held + 1 if version is None else version
        if version <= held:
            return False
        conn.execute("INSERT INTO products(sku, version, deleted, product, updated_at) VALUES (?,?,1,NULL,?) "
                     "ON CONFLICT(sku) DO UPDATE SET version = excluded.version, deleted = 1, product = NULL, "
                     "updated_at = excluded.updated_at", (sku, version, time.time()))
        with self._lock:
            self.central = {k: v for k, v in self.central.items() if k != sku}
            self.versions[sku] = version
            self._rebuild()
        self._changed([sku])
        return True

    def _changed(self, skus: list[str]) -> None:
        for listener in list(self.listeners):
            try:
                listener(skus)
            except Exception:  # a page push must never fail a catalogue write
                log.exception("a catalogue listener failed")
