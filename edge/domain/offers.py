"""The running offer for a product, for its QR landing page: the content a screen would advertise it with.

The link is deliberately simple (README "The shopper's QR page"): a product's offer is
1. a content item whose `sku` is the product's, shown by a rule that is running now, or one in a playlist;
2. else the content of a running rule whose `show.data.sku` is the product's;
3. else the content of a running rule with `template = "offer"` whose `when.zone` is the product's zone.
Only rules for everyone count (no segments, tier, known shopper, wishlist, cart or orders condition: the
page is public, and its texts must not need a shopper's placeholders); "running" means the rule's hours and days hold now, in the store's timezone. Highest
priority first. The campaigns applied here and in their schedule (edge.domain.campaigns `for_offers`) plug in
through `rules`, `contents` and `playing`: their rules after the store's (on equal priority the store's wins),
their content items (the product named by an item's `sku` or `data.sku`), their playlist items.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from edge.config import WEEKDAYS, Config, RuleConfig, data_placeholders, parse_hours
from edge.config.layout import ContentConfig
from edge.i18n import localized

PERSONAL_WHEN = ("segments", "tier", "known", "wishlist_in_zone", "cart_not_empty", "orders_ready")


@dataclass(frozen=True)
class Offer:
    content_id: str
    title: str
    body: str


def _as_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def running(rule: RuleConfig, now: dt.datetime) -> bool:
    """The rule is for everyone and its hours/days hold at `now` (the store's local time)."""
    w = rule.when
    if any(getattr(w, name) not in (None, False) for name in PERSONAL_WHEN) or data_placeholders(rule.show.data):
        return False
    days = _as_list(w.days)
    if days and WEEKDAYS[now.weekday()] not in days:
        return False
    hours = [parse_hours(h) for h in _as_list(w.hours)]
    minute = now.hour * 60 + now.minute
    return not hours or any((a <= minute < b) if a < b else (minute >= a or minute < b) for a, b in hours)


def offer_for(cfg: Config, sku: str, zone: str | None, lang: str, *, rules: Iterable[RuleConfig] | None = None,
              contents: Mapping[str, ContentConfig] | None = None, playing: Iterable[str] = (),
              now: float | None = None) -> Offer | None:
    """The offer this product's page shows (see the module's doc), its texts in `lang`; None without one.
    `playing`: content ids in the screens' playlists besides the config's (a campaign's items)."""
    contents = contents if contents is not None else {c.id: c for c in cfg.content}
    rules = list(cfg.rules if rules is None else rules)
    local = dt.datetime.fromtimestamp(now if now is not None else dt.datetime.now().timestamp(),
                                      ZoneInfo(cfg.store.timezone))
    live = sorted((r for r in rules if running(r, local)), key=lambda r: -r.priority)
    in_playlists = {cid for s in cfg.screens for cid in s.playlist} | set(playing)
    shown = {r.show.content_id for r in live} | in_playlists

    def texts(content_id: str, data: Mapping[str, Any]) -> Offer:
        item = contents.get(content_id)
        base: dict[str, Any] = item.texts() if item else {"title": "", "body": ""}
        merged = {**base, **{k: data[k] for k in ("title", "body", "i18n") if data.get(k)}}
        t = localized(merged, lang, cfg.store.language)
        return Offer(content_id, str(t.get("title") or ""), str(t.get("body") or ""))

    for item in contents.values():
        if item.sku == sku and item.id in shown:
            rule = next((r for r in live if r.show.content_id == item.id), None)
            return texts(item.id, rule.show.data if rule else {})
    for r in live:
        if r.show.data.get("sku") == sku:
            return texts(r.show.content_id, r.show.data)
    if zone:
        for r in live:
            if r.show.template == "offer" and zone in _as_list(r.when.zone):
                return texts(r.show.content_id, r.show.data)
    return None
