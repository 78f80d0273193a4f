"""Content items as screens and pages show them: their text in the store's language, with every translation.

Config (`[[content]]`), the central store's campaigns and a rule's `show.data` all write per-language text
the same way, `{"title", "body", "i18n": {"<lang>": {"title", "body"}}}`: what is published (the retained
display payload) carries the store's language in `title`/`body` for players that know nothing of
languages, and the translations in `i18n`, so a page picks its own with `text_for`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge.config import Config
from edge.config.layout import ContentConfig
from edge.i18n import localized

TEXT_FIELDS = ("title", "body")


def content_data(item: ContentConfig, lang: str) -> dict[str, Any]:
    """A content item as display data: title and body in `lang` (the store's), image, and its translations."""
    texts = item.texts()
    data: dict[str, Any] = localized(texts, lang, lang, TEXT_FIELDS)
    if item.image:
        data["image"] = item.image
    if texts["i18n"]:
        data["i18n"] = texts["i18n"]
    return data


def without_overridden(data: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`data` (a content item's) with `override` (a rule variant's data) on top: a text the override sets
    replaces the item's in every language, so no translation of the item's old text shows instead."""
    merged = {**data, **override}
    per = data.get("i18n")
    if isinstance(per, Mapping) and "i18n" not in override:
        kept = {lang: {f: v for f, v in entry.items() if f not in override}
                for lang, entry in per.items() if isinstance(entry, Mapping)}
        kept = {lang: entry for lang, entry in kept.items() if entry}
        if kept:
            merged["i18n"] = kept
        else:
            merged.pop("i18n", None)
    return merged


def text_for(data: Mapping[str, Any], lang: str, cfg: Config) -> dict[str, Any]:
    """Title and body of display data in a page's language, else the store's, else as written."""
    return localized(data, lang, cfg.store.language, TEXT_FIELDS)
