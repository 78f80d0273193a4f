"""Rules ([[rules]]): their models, and the template and hours helpers the rule engine shares with them."""

from __future__ import annotations

import re
import string
from typing import Any

from pydantic import Field, field_validator

from edge.config.sections import ID_PATTERN, StrictModel

# What rules can match on: a kind (edge.model.EVENT_KINDS), "kind.type", or a presence event.
PRESENCE_EVENTS = ("zone_enter", "zone_exit", "zone_dwell", "visit_start", "visit_end")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TIERS = ("bronze", "silver", "gold", "vip")  # the loyalty tiers profiles carry (sync.protocol.TIERS)
_HOURS_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-(?:([01]\d|2[0-3]):([0-5]\d)|(24):(00))")
# Placeholders rule data may use. Personal ones come from the shopper's profile: a rule using one shows
# only to an identified shopper whose cached profile has the personalization consent (privacy.require_consent).
PERSONAL_PLACEHOLDERS = ("first_name", "tier", "wishlist_item", "wishlist_image", "cart_item", "cart_count",
                         "order_id", "pickup_bay")
# Anonymous-safe ones come from the event itself: its zone, and the product it is about (or the last one
# the same device/session touched).
EVENT_PLACEHOLDERS = ("zone", "zone_id", "item", "item_image")
PLACEHOLDERS = PERSONAL_PLACEHOLDERS + EVENT_PLACEHOLDERS
# Target tokens in show.screens / show.kiosks: the event's zone's devices, or the device that sent it.
TARGET_TOKENS = ("@zone", "@source")


def parse_hours(value: str) -> tuple[int, int]:
    """'09:00-12:30' -> (540, 750), minutes since local midnight, end exclusive; may wrap past midnight."""
    match = _HOURS_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"hours {value!r}: expected \"HH:MM-HH:MM\" in 24-hour time, e.g. \"09:00-12:30\"")
    h1, m1, h2, m2, h24, m24 = match.groups()
    start = int(h1) * 60 + int(m1)
    end = 24 * 60 if h24 else int(h2) * 60 + int(m2)
    if start == end:
        raise ValueError(f"hours {value!r}: the range is empty; use \"00:00-24:00\" for all day")
    return start, end


def template_fields(text: str) -> list[tuple[str, str | None]]:
    """Split a data string into (literal, placeholder or None) parts; '{{' and '}}' are literal braces.

    Raises ValueError naming the problem: an unknown placeholder, a format spec, an unbalanced brace.
    """
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"{text[:40]!r}: {exc}; write {{{{ and }}}} for literal braces") from None
    out: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parsed:
        if name is not None:
            if name not in PLACEHOLDERS:
                raise ValueError(f"unknown placeholder {{{name}}}; use one of "
                                 + ", ".join("{" + p + "}" for p in PLACEHOLDERS))
            if spec or conversion:
                raise ValueError(f"placeholder {{{name}}} has a format spec or conversion; write just {{{name}}}")
        out.append((literal, name))
    return out


def data_placeholders(data: Any) -> set[str]:
    """Every placeholder used in the string values of a rule's data (nested tables and lists included)."""
    found: set[str] = set()
    if isinstance(data, str):
        found.update(name for _, name in template_fields(data) if name)
    elif isinstance(data, dict):
        for value in data.values():
            found |= data_placeholders(value)
    elif isinstance(data, list):
        for value in data:
            found |= data_placeholders(value)
    return found


def _str_or_list(value: str | list[str] | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)



class RuleCap(StrictModel):
    """At most `count` showings within `within_s` seconds (a sliding window)."""

    count: int = Field(ge=1)
    within_s: float = Field(gt=0)


class RuleVariant(StrictModel):
    """One arm of an A/B test: shoppers are split by a stable hash, in proportion to `weight`."""

    id: str = Field(pattern=ID_PATTERN)
    weight: float = Field(default=1.0, ge=0)
    content_id: str | None = Field(default=None, pattern=ID_PATTERN)
    template: str | None = None
    # Merged over the rule's show.data (this variant's keys win).
    data: dict[str, Any] = Field(default_factory=dict)


class RuleWhen(StrictModel):
    zone: str | list[str] | None = None
    event: str | list[str] | None = None
    # zone_dwell (and zone_exit) events carry data["dwell_s"], the seconds spent in the zone so far.
    dwell_min_s: float | None = Field(default=None, ge=0)
    # Local time in [store].timezone: "HH:MM-HH:MM" ranges (end exclusive, may wrap past midnight) and days.
    hours: str | list[str] | None = None
    days: str | list[str] | None = None
    # Customer conditions (personal: need the personalization consent when privacy.require_consent).
    segments: str | list[str] | None = None
    tier: str | list[str] | None = None
    known: bool | None = None
    wishlist_in_zone: bool | None = None
    cart_not_empty: bool | None = None
    orders_ready: bool | None = None
    # An earlier event of the same shopper, e.g. "window.touch", at most recent_within_s seconds ago.
    recent_event: str | list[str] | None = None
    recent_within_s: float = Field(default=600.0, gt=0)

    @field_validator("hours")
    @classmethod
    def _valid_hours(cls, value: str | list[str] | None) -> str | list[str] | None:
        for item in _str_or_list(value):
            parse_hours(item)
        if value == []:
            raise ValueError("empty list of hours; leave hours out to match at any time")
        return value

    @field_validator("days")
    @classmethod
    def _valid_days(cls, value: str | list[str] | None) -> str | list[str] | None:
        for item in _str_or_list(value):
            if item not in WEEKDAYS:
                raise ValueError(f"unknown day {item!r}; use {', '.join(WEEKDAYS)}")
        if value == []:
            raise ValueError("empty list of days; leave days out to match on any day")
        return value

    @field_validator("tier")
    @classmethod
    def _valid_tier(cls, value: str | list[str] | None) -> str | list[str] | None:
        for item in _str_or_list(value):
            if item not in TIERS:
                raise ValueError(f"unknown tier {item!r}; use {', '.join(TIERS)}")
        return value


class RuleShow(StrictModel):
    content_id: str = Field(pattern=ID_PATTERN)
    template: str = "message"
    data: dict[str, Any] = Field(default_factory=dict)
    # Screens that show it; with kiosks also empty, every screen in the zone where the event happened.
    # "@zone": the event zone's screens; "@source": the screen that sent the event (a shop window).
    screens: list[str] = Field(default_factory=list)
    # Kiosks that show it; "@zone": the event zone's kiosks; "@source": the kiosk that sent the event.
    kiosks: list[str] = Field(default_factory=list)


class RuleConfig(StrictModel):
    id: str = Field(pattern=ID_PATTERN)
    priority: int = 0
    ttl_s: float = Field(default=30.0, gt=0)
    when: RuleWhen = RuleWhen()
    show: RuleShow
    variants: list[RuleVariant] = Field(default_factory=list)
    # Frequency caps: per shopper (customer id, else device/session) and per screen, for this rule.
    cap_per_shopper: RuleCap | None = None
    cap_per_screen: RuleCap | None = None
