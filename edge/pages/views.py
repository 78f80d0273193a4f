"""What a page receives of a screen's content: the display payload, minus what a screen has no use for.

Signage is public: the customer id never goes to the page. Rule content gets the title, body and
image of its content item (from config) unless its data sets its own. Images must be served by the edge
(an absolute path, not a URL elsewhere): store screens keep working offline and load nothing from the internet.
Texts come in the page's language (edge.domain.content.text_for): signage speaks the store's; a kiosk, whose
shopper may switch, also gets `texts` in every language.
"""

from __future__ import annotations

from typing import Any

from flask import Response, render_template

from edge.config import Config
from edge.domain.catalogue import Catalogue
from edge.domain.content import text_for, without_overridden
# What a kiosk shows when no rule targets it (Displays.fallback): its own UI, nothing pushed.
from edge.domain.displays import KIOSK_IDLE_CONTENT_ID, PLAYLIST_CONTENT_ID
from edge.i18n import LANGUAGES, format_price, localized

def local_image(value: Any) -> str | None:
    """An absolute path on the edge itself ("/media/autumn.jpg"), or None: URLs elsewhere, data URLs,
    relative paths and junk are dropped."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//") or len(value) > 500:
        return None
    if "\\" in value or any(ord(c) < 32 for c in value):
        return None
    return value


def _text(value: Any, limit: int = 500) -> str:
    return "" if value is None else str(value)[:limit]


def _duration(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 8.0
    return min(max(seconds, 1.0), 3600.0)


def _texts(cfg: Config, data: dict[str, Any], lang: str) -> dict[str, str]:
    texts = text_for(data, lang, cfg)
    return {"title": _text(texts["title"]), "body": _text(texts["body"], 2000)}


def _sku(data: dict[str, Any], item: Any) -> str | None:
    """The product a content shows: its data's `sku` (a rule's, a campaign's), else its content item's."""
    sku = data.get("sku")
    if isinstance(sku, str) and 0 < len(sku) <= 128:
        return sku
    return getattr(item, "sku", None)


def product_view(cfg: Config, catalogue: Catalogue | None, sku: str | None) -> dict[str, Any] | None:
    """What a screen shows of a product it advertises, from the one catalogue: its name and price in each
    language the edge speaks (`texts`), so a price change re-renders the screen without another lookup."""
    if catalogue is None or not sku or sku not in catalogue:
        return None
    return with_texts(cfg, catalogue.product(sku))


def screen_view(cfg: Config, payload: dict[str, Any] | None, lang: str | None = None, *,
                every_language: bool = False, catalogue: Catalogue | None = None) -> dict[str, Any] | None:
    """The page's view of a display payload, its texts in `lang` (default: the store's language); with
    `every_language` (a kiosk) also `texts`: {lang: {"title", "body"}} for each language the edge speaks.
    Content that shows a product (`sku`) carries `product` (name and price from the catalogue)."""
    lang = lang or cfg.store.language
    if not payload:
        return None
    content_id = _text(payload.get("content_id"), 64)
    view: dict[str, Any] = {"content_id": content_id, "template": _text(payload.get("template"), 64),
                            "expires_at": payload.get("expires_at"), "rule": payload.get("rule"),
                            "reason": _text(payload.get("reason")), "ts": payload.get("ts")}
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    view["idle"] = content_id in (PLAYLIST_CONTENT_ID, KIOSK_IDLE_CONTENT_ID)  # the fallback, no rule active
    if content_id == KIOSK_IDLE_CONTENT_ID:
        view["expires_at"] = None
        return view
    if content_id == PLAYLIST_CONTENT_ID:
        view["items"] = [{"content_id": _text(i.get("content_id"), 64), "template": _text(i.get("template"), 64),
                          **_texts(cfg, i, lang), "image": local_image(i.get("image")),
                          "duration_s": _duration(i.get("duration_s")),
                          "product": product_view(cfg, catalogue, _sku(i, cfg.content_item(str(i.get("content_id")))))}
                         for i in data.get("items") or [] if isinstance(i, dict)]
        view["expires_at"] = None
        return view
    item = cfg.content_item(content_id)
    # The rule's data, else its content item's texts (with their translations).
    texts = without_overridden(item.texts() if item else {},
                               {k: data[k] for k in ("title", "body", "i18n") if data.get(k) is not None})
    view.update(_texts(cfg, texts, lang))
    if every_language:
        view["texts"] = {code: _texts(cfg, texts, code) for code in LANGUAGES}
    view["subtitle"] = _text(data.get("subtitle"))
    view["image"] = local_image(data.get("image") if data.get("image") is not None else (item.image if item else None))
    view["product"] = product_view(cfg, catalogue, _sku(data, item))
    return view


def with_texts(cfg: Config, product: dict[str, Any]) -> dict[str, Any]:
    """A product (edge.domain.catalogue) with `texts`: its name and formatted price in each language the edge
    speaks, so a page script switches language without formatting anything itself."""
    default = cfg.store.language
    price = product.get("price")
    currency = product.get("currency") or cfg.store.currency
    texts = {}
    for lang in LANGUAGES:
        name = localized(product, lang, default, ("name",))["name"]
        texts[lang] = {"name": name, "price": format_price(price, currency, lang) if isinstance(price, int | float)
                       and not isinstance(price, bool) else ""}
    return {**product, "texts": texts}


def error_page(status: int, title: str, message: str, *, token_form: bool = False) -> Response:
    return Response(render_template("error.html", status=status, title=title, message=message,
                                    token_form=token_form), status=status, mimetype="text/html")
