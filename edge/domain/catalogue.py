"""The products the store sells, from its config ([[products]]): what kiosks offer and name.

A kiosk offers this catalogue and nothing else (never the reference central store's demo products): a
store configured with `MY-SKU` is offered `MY-SKU`.
"""

from __future__ import annotations

from typing import Any

from edge.config import Config, ProductConfig
from edge.i18n import localized


class Catalogue:
    """The configured products by SKU, as the pages show them."""

    def __init__(self, cfg: Config) -> None:
        self.products: dict[str, ProductConfig] = {p.sku: p for p in cfg.products}
        self.language = cfg.store.language
        self.currency = cfg.store.currency

    def get(self, sku: str | None) -> ProductConfig | None:
        return self.products.get(sku) if sku else None

    def product(self, sku: str) -> dict[str, Any]:
        """A product as the pages show it: its name in the store's language, its price in the store's currency
        and, when it has them, its names in other languages (`i18n`, for edge.i18n.localized). An SKU the
        config does not list keeps its code as its name."""
        p = self.products.get(sku)
        if p is None:
            return {"sku": sku, "name": sku, "price": None, "currency": self.currency, "category": "", "zone": "",
                    "image": None}
        texts = p.texts()
        out = {"sku": p.sku, "name": localized(texts, self.language, self.language, ("name",))["name"],
               "price": p.price, "currency": self.currency, "category": "", "zone": p.zone or "", "image": p.image}
        if texts["i18n"]:
            out["i18n"] = texts["i18n"]
        return out

    def for_zone(self, zone: str | None, limit: int = 12) -> list[dict[str, Any]]:
        """A kiosk's default product list: its zone's products first, then the rest, in config order."""
        ordered = sorted(self.products.values(), key=lambda p: p.zone != zone)
        return [self.product(p.sku) for p in ordered[:limit]]
