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
    """`data` (a content item's, or a rule's) with `override` (a rule's or a variant's data) on top: a text the
    override sets replaces the old one in every language, unless the override translates it too."""
    merged = {**data, **override}
    old = data.get("i18n") if isinstance(data.get("i18n"), Mapping) else {}
    new = override.get("i18n") if isinstance(override.get("i18n"), Mapping) else {}
    per: dict[str, Any] = {}
    for lang in dict.fromkeys([*old, *new]):
        kept = {f: v for f, v in (old.get(lang) or {}).items() if f not in override} \
            if isinstance(old.get(lang), Mapping) else {}
        entry = {**kept, **(new.get(lang) if isinstance(new.get(lang), Mapping) else {})}
        if entry:
            per[lang] = entry
    if per:
        merged["i18n"] = per
    else:
        merged.pop("i18n", None)
    return merged


def text_for(data: Mapping[str, Any], lang: str, cfg: Config) -> dict[str, Any]:
    """Title and body of display data in a page's language, else the store's, else as written."""
    return localized(data, lang, cfg.store.language, TEXT_FIELDS)
