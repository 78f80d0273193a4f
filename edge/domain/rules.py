"""Personalization rules: an event → content on screens and kiosks, each decision with its reason.

Rules come from the store config ([[rules]]; the keys are documented in config/store.example.toml).
`decide(event, now)` runs in the writer thread for every recorded event. For each screen (or kiosk) the
highest-priority matching rule wins (config order breaks ties). A rule matches when every condition it
sets holds, its frequency caps allow it, and every placeholder in its data has a value: a rule never
shows "Hello {first_name}" with the name missing; a lower-priority rule gets the screen instead.

Consent gate. A rule is *personal* when it reads the customer's profile or identity: conditions
segments, tier, known = true, wishlist_in_zone, cart_not_empty, orders_ready, or a personal placeholder
({first_name}, {wishlist_item}...). A personal rule matches only an identified shopper, and, while
privacy.require_consent is true (the default), only one whose cached profile has consents.personalization
= true. Anonymous-safe rules (zone content, dwell, time of day, the device's own recent events) match
everybody. Only personal decisions carry the customer id. Staff and asset events and gateway status
never drive content.

Speed. Rules are compiled once into small closures; the candidates for an event are indexed by (event
kind, type, zone) and cached, so an event looks only at rules that could match it, best first. The
profile is read (from the context's LRU) at most once per event, the local time at most once.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from edge.config import (PERSONAL_PLACEHOLDERS, WEEKDAYS, Config, RuleCap, RuleConfig, data_placeholders,
                         parse_hours, template_fields)
from edge.config.layout import ContentConfig
from edge.domain.catalogue import Catalogue, Product
from edge.domain.content import content_data, without_overridden
from edge.domain.shoppers import NOT_NOTED, CustomerContext, Shopper, consented
from edge.model import KIOSK, SCREEN, Decision, EdgeError, Event

PLACEHOLDER_MAX = 60  # characters of one filled-in value (a long name is cut with "…")
TEXT_MAX = 500  # characters of a string with placeholders, once filled in
ITEM_RECENT_S = 600.0  # {item}: the last item the same device/session touched, at most this long ago
CANDIDATES_CACHE_MAX = 4096  # (kind, type, zone) keys; kiosk types are free-form, so the cache is bounded
TARGETS_CACHE_MAX = 256  # (zone, source) keys per rule
CAP_KEYS_MAX = 100_000  # frequency-cap counters kept; expired ones are dropped beyond this



def _as_set(value: str | list[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset([value] if isinstance(value, str) else value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


class _Missing(EdgeError):
    """A placeholder without a value: the rule does not match."""


# --- data templates ------------------------------------------------------------------------------


class _Text:
    """A data string with placeholders, split once into (literal, placeholder) parts."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[tuple[str, str | None]]) -> None:
        self.parts = parts

    def render(self, fill: Callable[[str], str | None]) -> str:
        out = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                value = fill(name)
                if not value:
                    raise _Missing(name)
                out.append(_cut(value, PLACEHOLDER_MAX))
        return _cut("".join(out), TEXT_MAX)


def _compile_data(value: Any) -> Any:
    if isinstance(value, str):
        parts = template_fields(value)
        if any(name for _, name in parts):
            return _Text(parts)
        return value.replace("{{", "{").replace("}}", "}") if "{{" in value or "}}" in value else value
    if isinstance(value, dict):
        return {k: _compile_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compile_data(v) for v in value]
    return value


def _render(node: Any, fill: Callable[[str], str | None]) -> Any:
    if isinstance(node, _Text):
        return node.render(fill)
    if isinstance(node, dict):
        return {k: _render(v, fill) for k, v in node.items()}
    if isinstance(node, list):
        return [_render(v, fill) for v in node]
    return node


@dataclass(frozen=True, slots=True)
class _Content:
    """What a rule (or one of its variants) shows: compiled once."""

    variant: str | None
    weight: float
    content_id: str
    template: str
    data: Any  # compiled: _Text where placeholders are
    static: bool  # no placeholders: data is shown as written

    def render(self, fill: Callable[[str], str | None]) -> dict[str, Any]:
        return dict(self.data) if self.static else _render(self.data, fill)


# --- per-event evaluation state ------------------------------------------------------------------


class _Eval:
    """What rules read about one event, computed at most once each: local time, profile, placeholders."""

    __slots__ = ("engine", "event", "now", "_local", "_shopper", "_loaded", "values")

    def __init__(self, engine: RuleEngine, event: Event, now: float) -> None:
        self.engine = engine
        self.event = event
        self.now = now
        self._local: tuple[int, int] | None = None
        self._shopper: Shopper | None = None
        self._loaded = False
        self.values: dict[str, str | None] = {}

    def local(self) -> tuple[int, int]:
        """(minutes since local midnight, weekday 0 = Monday) in the store's timezone."""
        if self._local is None:
            t = datetime.fromtimestamp(self.now, self.engine.tz)
            self._local = (t.hour * 60 + t.minute, t.weekday())
        return self._local

    def shopper(self) -> Shopper | None:
        if not self._loaded:
            self._loaded = True
            ctx = self.engine.context
            if ctx is not None and self.event.customer:
                self._shopper = ctx.profile(self.event.customer)
        return self._shopper

    def gate(self, needs_profile: bool) -> bool:
        """The consent gate: an identified shopper, with a profile (and the personalization consent when
        privacy.require_consent) when the rule needs one."""
        if not self.event.customer:
            return False
        if not needs_profile:
            return True
        return consented(self.shopper(), self.engine.require_consent)


Check = Callable[[_Eval, dict[str, Any]], bool]


@dataclass(slots=True)
class CompiledRule:
    rule: RuleConfig
    order: int
    zones: frozenset[str] | None
    events: frozenset[str] | None
    checks: list[Check]
    personal: bool  # reads the profile or the identity: consent-gated, decisions carry the customer
    contents: list[_Content]  # one, or one per variant
    total_weight: float
    screens: tuple[str, ...]  # fixed targets
    kiosks: tuple[str, ...]
    zone_screens: bool  # the event zone's screens (default when no target is named, or "@zone")
    zone_kiosks: bool
    source_screen: bool  # "@source"
    source_kiosk: bool
    target_cache: dict[tuple[str | None, str | None, bool], tuple[tuple[str, str], ...]] = \
        field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.rule.id

    @property
    def priority(self) -> int:
        return self.rule.priority


@dataclass(frozen=True, slots=True)
class CampaignRule:
    """A rule of a campaign from the central store (edge.domain.campaigns), with when its campaign shows."""

    rule: RuleConfig
    campaign: str
    campaign_priority: int
    active: Callable[[float], bool]  # the campaign's schedule, at an event's time


class RuleEngine:
    def __init__(self, cfg: Config, context: CustomerContext | None = None) -> None:
        """`context`: profiles and activity (None: no rule sees a customer)."""
        self.cfg = cfg
        self.context = context
        self.tz = ZoneInfo(cfg.store.timezone)
        self.require_consent = cfg.privacy.require_consent
        self.screen_ids = frozenset(s.id for s in cfg.screens)
        self.kiosk_ids = frozenset(k.id for k in cfg.kiosks)
        self.screens_by_zone: dict[str, list[str]] = {}
        for s in cfg.screens:
            self.screens_by_zone.setdefault(s.zone, []).append(s.id)
        self.kiosks_by_zone: dict[str, list[str]] = {}
        for k in cfg.kiosks:
            self.kiosks_by_zone.setdefault(k.zone, []).append(k.id)
        self.zone_names = {z.id: z.name or z.id for z in cfg.zones}
        # The one catalogue (edge.domain.catalogue): TOML and central products; it changes while the edge runs.
        self.catalogue = context.catalogue if context is not None else Catalogue(cfg)
        self.lang = cfg.store.language  # placeholders are filled with names in the store's language
        self.campaign_content: dict[str, ContentConfig] = {}
        self.campaign_data: dict[str, Mapping[str, Any]] = {}
        self.store_rules = [self._compile(r, i) for i, r in enumerate(cfg.rules)]
        self._use(self.store_rules)
        # Frequency caps: (scope, key, rule id) -> the times of the last `count` showings.
        self.caps: dict[tuple[str, str, str], tuple[deque[float], float]] = {}

    def set_campaigns(self, rules: Sequence[CampaignRule], content: Mapping[str, ContentConfig],
                      content_data: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """The central store's campaign rules join the store's own, replacing the previous set in one step (in
        the writer thread, between two events). On equal priority the store's rule wins, then the order given
        (campaigns by priority, then id). A campaign rule matches only while its campaign is in its schedule.
        `content_data`: a campaign content item's extra display data (subtitle, price...), under its texts."""
        self.campaign_content = dict(content)
        self.campaign_data = dict(content_data or {})
        base = len(self.store_rules)
        compiled = []
        for i, cr in enumerate(rules):
            c = self._compile(cr.rule, base + i)
            active = cr.active
            c.checks.insert(0, lambda ev, m, active=active: active(ev.now))
            compiled.append(c)
        self._use(self.store_rules + compiled)

    def _use(self, rules: list[CompiledRule]) -> None:
        """These rules from now on, with the caches derived from them started afresh."""
        # Highest priority first; config order breaks ties, so the file reads top-down.
        self.rules = sorted(rules, key=lambda c: (-c.rule.priority, c.order))
        self._candidates: dict[tuple[str, str | None, str | None], list[CompiledRule]] = {}
        self._plans: dict[tuple[str, str | None, str | None, str | None], list] = {}
        self._by_source = any(c.source_screen or c.source_kiosk for c in self.rules)  # targets depend on the source
        # Kinds no rule can match and the shoppers' activity does not keep (raw sightings, nearly all events):
        # decide returns at once.
        self._inert = frozenset(k for k in NOT_NOTED
                                if not any(c.events is None or any(e == k or e.startswith(k + ".") for e in c.events)
                                           for c in self.rules))

    def content_item(self, content_id: str) -> ContentConfig | None:
        """A content item of the store's config, else of an applied campaign."""
        return self.cfg.content_item(content_id) or self.campaign_content.get(content_id)

    # --- compiling ---
    def _compile(self, r: RuleConfig, order: int) -> CompiledRule:
        w = r.when
        checks: list[Check] = []
        datas = [r.show.data] + [v.data for v in r.variants]
        placeholders = set().union(*(data_placeholders(d) for d in datas))
        personal_fields = placeholders & set(PERSONAL_PLACEHOLDERS)
        uses_profile = bool(personal_fields) or any(
            x is not None for x in (w.segments, w.tier, w.wishlist_in_zone, w.cart_not_empty, w.orders_ready))
        personal = uses_profile or w.known is True
        needs_profile = uses_profile or (personal and self.require_consent)

        if w.dwell_min_s is not None:
            checks.append(self._check_dwell(w.dwell_min_s))
        if w.hours is not None or w.days is not None:
            checks.append(self._check_time(w.hours, w.days))
        if w.known is False:
            checks.append(_check_anonymous)
        if personal:
            checks.append(lambda ev, m: ev.gate(needs_profile))
        if w.segments is not None:
            checks.append(_check_segments(_as_set(w.segments) or frozenset()))
        if w.tier is not None:
            checks.append(_check_tier(_as_set(w.tier) or frozenset()))
        if w.wishlist_in_zone is not None:
            checks.append(self._check_wishlist_in_zone(w.wishlist_in_zone))
        if w.cart_not_empty is not None:
            checks.append(_check_cart(w.cart_not_empty))
        if w.orders_ready is not None:
            checks.append(_check_orders(w.orders_ready))
        if w.recent_event is not None:
            checks.append(self._check_recent(_as_set(w.recent_event) or frozenset(), w.recent_within_s))

        contents = [self._content(r, None)] if not r.variants else [self._content(r, v) for v in r.variants]
        show = r.show
        named = bool(show.screens or show.kiosks)
        return CompiledRule(
            rule=r, order=order, zones=_as_set(w.zone), events=_as_set(w.event), checks=checks,
            personal=personal, contents=contents, total_weight=sum(c.weight for c in contents),
            screens=tuple(dict.fromkeys(s for s in show.screens if not s.startswith("@"))),
            kiosks=tuple(dict.fromkeys(k for k in show.kiosks if not k.startswith("@"))),
            zone_screens=not named or "@zone" in show.screens, zone_kiosks="@zone" in show.kiosks,
            source_screen="@source" in show.screens, source_kiosk="@source" in show.kiosks)

    def _content(self, r: RuleConfig, variant: Any) -> _Content:
        """The rule's content, or a variant's: its content_id/template, its data merged over the rule's.

        A rule without data shows its [[content]] item's title/body/image, with the item's translations
        (so does a variant that names another content_id and has no data of its own)."""
        content_id = variant.content_id if variant is not None and variant.content_id else r.show.content_id
        template = variant.template if variant is not None and variant.template else r.show.template
        base = r.show.data
        if not base or (content_id != r.show.content_id and variant is not None and not variant.data):
            item = self.content_item(content_id)
            if item is not None:
                base = {**self.campaign_data.get(content_id, {}), **content_data(item, self.cfg.store.language)}
        data = without_overridden(base, variant.data if variant is not None else {})
        return _Content(variant.id if variant is not None else None, variant.weight if variant is not None else 1.0,
                        content_id, template, _compile_data(data), not data_placeholders(data))

    def _check_dwell(self, minimum: float) -> Check:
        def check(ev: _Eval, m: dict[str, Any]) -> bool:
            dwell = ev.event.data.get("dwell_s") if ev.event.data else None
            if type(dwell) not in (int, float) or dwell < minimum:
                return False
            m["dwell_s"] = dwell
            m["dwell_min_s"] = minimum
            return True
        return check

    def _check_time(self, hours: str | list[str] | None, days: str | list[str] | None) -> Check:
        ranges = [parse_hours(h) for h in ([hours] if isinstance(hours, str) else hours or [])]
        weekdays = None if days is None else frozenset(
            WEEKDAYS.index(d) for d in ([days] if isinstance(days, str) else days))

        def check(ev: _Eval, m: dict[str, Any]) -> bool:
            minute, weekday = ev.local()
            if weekdays is not None and weekday not in weekdays:
                return False
            if ranges and not any((start <= minute < end) if start < end else (minute >= start or minute < end)
                                  for start, end in ranges):
                return False
            m["local_time"] = f"{WEEKDAYS[weekday]} {minute // 60:02d}:{minute % 60:02d}"
            return True
        return check

    def _check_wishlist_in_zone(self, wanted: bool) -> Check:
        catalogue = self.catalogue

        def check(ev: _Eval, m: dict[str, Any]) -> bool:
            shopper = ev.shopper()
            zone = ev.event.zone
            if shopper is None or zone is None:
                return False
            for sku in shopper.wishlist:
                p = catalogue.get(sku)
                if p is not None and p.zone == zone:
                    if wanted:
                        m["wishlist_sku"] = sku
                    return wanted
            if not wanted:
                m["wishlist_in_zone"] = False
            return not wanted
        return check

    def _check_recent(self, names: frozenset[str], within_s: float) -> Check:
        def check(ev: _Eval, m: dict[str, Any]) -> bool:
            ctx = ev.engine.context
            if ctx is None:
                return False
            since = ev.now - within_s
            event = ev.event
            touch = ctx.recent(event.subject, names, since)
            if touch is None and event.customer and event.customer != event.subject \
                    and ev.gate(ev.engine.require_consent):
                # Across devices (phone beacon, kiosk session) only through the customer id: personal.
                touch = ctx.recent(event.customer, names, since)
                if touch is not None:
                    m["via_customer"] = True
            if touch is None:
                return False
            m["recent"] = {"event": touch.name, "ago_s": round(ev.now - touch.ts, 1)}
            return True
        return check

    # --- deciding ---
    def candidates(self, event: Event) -> list[CompiledRule]:
        """The rules whose zone and event conditions this event meets, best first (cached per shape)."""
        key = (event.kind, event.type, event.zone)
        found = self._candidates.get(key)
        if found is None:
            kind, name, zone = event.kind, event.name, event.zone
            found = [c for c in self.rules if (c.zones is None or zone in c.zones)
                     and (c.events is None or kind in c.events or name in c.events)]
            if len(self._candidates) >= CANDIDATES_CACHE_MAX:
                self._candidates.clear()
            self._candidates[key] = found
        return found

    def decide(self, event: Event, now: float) -> list[Decision]:
        """The decisions this event causes: at most one per screen/kiosk, the best matching rule's."""
        if event.kind in self._inert:
            return []
        if event.kind == "gateway_status" or (event.data and (event.data.get("staff") or event.data.get("asset"))):
            return []  # infrastructure and staff never drive content, and are not shopper activity
        try:
            plan = self._plan(event)
            return self._decide(event, now, plan) if plan else []
        finally:
            if self.context is not None:
                self.context.note(event, now)  # after deciding: an event is not its own "recent" event

    def _plan(self, event: Event) -> list[tuple[CompiledRule, tuple[tuple[str, str], ...], frozenset]]:
        """The candidates, best first, each with its targets for this event and every target it or a worse one
        could take (once better rules hold all of those, the rest cannot show anything): cached per shape."""
        candidates = self.candidates(event)
        if not candidates:
            return []
        key = (event.kind, event.type, event.zone, event.source if self._by_source else None)
        plan = self._plans.get(key)
        if plan is None:
            rest: frozenset = frozenset()
            plan = []
            for c in reversed(candidates):
                targets = self._targets(c, event)
                rest = rest | frozenset(targets)
                plan.append((c, targets, rest))
            plan.reverse()
            if len(self._plans) >= CANDIDATES_CACHE_MAX:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def _decide(self, event: Event, now: float, plan: list) -> list[Decision]:
        ev = _Eval(self, event, now)
        taken: set[tuple[str, str]] = set()
        out: list[Decision] = []
        for c, targets, rest in plan:
            if taken:
                if taken >= rest:
                    break  # every screen a remaining rule could use is taken by a better one
                targets = [t for t in targets if t not in taken]
            if not targets:
                continue
            m: dict[str, Any] = {}
            for check in c.checks:
                if not check(ev, m):
                    break
            else:
                self._apply(c, ev, m, targets, taken, out)
        return out

    def _apply(self, c: CompiledRule, ev: _Eval, m: dict[str, Any], targets: Any, taken: set[tuple[str, str]],
               out: list[Decision]) -> None:
        """A rule whose conditions hold, with free targets: caps, variant, placeholders → decisions."""
        event, now, rule = ev.event, ev.now, c.rule
        shopper_key = event.customer or event.subject
        cap = rule.cap_per_shopper
        if cap is not None and shopper_key and not self._cap_ok(("shopper", shopper_key, rule.id), cap, now):
            return
        content = c.contents[0] if len(c.contents) == 1 else self._variant(c, shopper_key or event.event_id)
        try:
            data = content.render(lambda name: self._fill(name, ev, m))
        except _Missing as missing:
            m["missing"] = str(missing)
            return
        screen_cap = rule.cap_per_screen
        if screen_cap is not None:
            targets = [t for t in targets if self._cap_ok(("screen", t[1], rule.id), screen_cap, now)]
        if not targets:
            return
        if cap is not None and shopper_key:
            self._cap_add(("shopper", shopper_key, rule.id), cap, now)
        personal = c.personal or bool(m.get("via_customer"))
        customer = event.customer if personal else None
        reason, extra = self._explain(c, ev, m, content, personal)
        expires_at = now + rule.ttl_s
        for target in targets:
            taken.add(target)
            if screen_cap is not None:
                self._cap_add(("screen", target[1], rule.id), screen_cap, now)
            out.append(Decision(
                display=target[1], content_id=content.content_id, template=content.template, data=data,
                rule_id=rule.id, priority=rule.priority, reason=reason, ts=now, expires_at=expires_at,
                event_id=event.event_id, zone=event.zone, customer=customer,
                extra={**extra, "target": target[0]}, target=target[0]))

    def _targets(self, c: CompiledRule, event: Event) -> tuple[tuple[str, str], ...]:
        """Where a rule shows for this event: (target kind, id) pairs, cached per zone and source."""
        key = (event.zone, event.source if c.source_screen or c.source_kiosk else None, event.kind == "kiosk")
        found = c.target_cache.get(key)
        if found is None:
            found = tuple(self._resolve_targets(c, event))
            if len(c.target_cache) >= TARGETS_CACHE_MAX:
                c.target_cache.clear()
            c.target_cache[key] = found
        return found

    def _resolve_targets(self, c: CompiledRule, event: Event) -> list[tuple[str, str]]:
        out = [(SCREEN, s) for s in c.screens]
        zone = event.zone
        if c.zone_screens and zone:
            out += [(SCREEN, s) for s in self.screens_by_zone.get(zone, ())]
        if c.source_screen and event.source in self.screen_ids:
            out.append((SCREEN, event.source))
        out += [(KIOSK, k) for k in c.kiosks]
        if c.zone_kiosks and zone:
            out += [(KIOSK, k) for k in self.kiosks_by_zone.get(zone, ())]
        if c.source_kiosk and event.kind == "kiosk" and event.source in self.kiosk_ids:
            out.append((KIOSK, event.source))
        return list(dict.fromkeys(out)) if len(out) > 1 else out

    def _variant(self, c: CompiledRule, key: str) -> _Content:
        """A stable A/B split: the same shopper always gets the same variant of a rule."""
        digest = hashlib.blake2b(f"{c.rule.id}\0{key}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") / 2.0**64 * c.total_weight
        for content in c.contents:
            if content.weight <= 0:
                continue
            point -= content.weight
            if point < 0:
                return content
        return next(content for content in reversed(c.contents) if content.weight > 0)

    # --- placeholders ---
    def _fill(self, name: str, ev: _Eval, m: dict[str, Any]) -> str | None:
        if name == "wishlist_item" or name == "wishlist_image":
            product = self._wishlist_product(ev, m)
            return None if product is None else self._name(product) if name == "wishlist_item" \
                else product.image
        values = ev.values
        if name in values:
            return values[name]
        value = self._value(name, ev)
        values[name] = value
        return value

    def _name(self, product: Product) -> str:
        return product.name_in(self.lang, self.lang)

    def _wishlist_product(self, ev: _Eval, m: dict[str, Any]) -> Any:
        """The wishlist item the rule matched (wishlist_in_zone), else the first one the catalogue names."""
        sku = m.get("wishlist_sku")
        if sku is not None:
            return self.catalogue.get(sku)
        shopper = ev.shopper()
        if shopper is None:
            return None
        return next((p for p in map(self.catalogue.get, shopper.wishlist) if p is not None), None)

    def _value(self, name: str, ev: _Eval) -> str | None:
        event = ev.event
        if name == "zone":
            return self.zone_names.get(event.zone, event.zone) if event.zone else None
        if name == "zone_id":
            return event.zone
        if name in ("item", "item_image"):
            sku = event.data.get("item") if event.data else None
            if not isinstance(sku, str) and self.context is not None:
                sku = self.context.last_item(event.subject, ev.now - ITEM_RECENT_S)
            product = self.catalogue.get(sku) if isinstance(sku, str) else None
            return None if product is None else self._name(product) if name == "item" else product.image
        shopper = ev.shopper()
        if shopper is None:
            return None
        if name == "first_name":
            return shopper.first_name
        if name == "tier":
            return shopper.tier
        if name == "cart_item":
            return next((self._name(p) for p in map(self.catalogue.get, shopper.cart) if p is not None), None)
        if name == "cart_count":
            return str(len(shopper.cart)) if shopper.cart else None
        if name in ("order_id", "pickup_bay"):
            for order in shopper.orders_ready:
                value = order.get(name)
                if isinstance(value, str) and value:
                    return value
            return None
        return None

    # --- frequency caps ---
    def _cap_ok(self, key: tuple[str, str, str], cap: RuleCap, now: float) -> bool:
        entry = self.caps.get(key)
        if entry is None:
            return True
        times = entry[0]
        return len(times) < cap.count or times[0] <= now - cap.within_s

    def _cap_add(self, key: tuple[str, str, str], cap: RuleCap, now: float) -> None:
        entry = self.caps.get(key)
        if entry is None:
            if len(self.caps) >= CAP_KEYS_MAX:
                self._prune_caps(now)
            entry = self.caps[key] = (deque(maxlen=cap.count), cap.within_s)
        entry[0].append(now)

    def _prune_caps(self, now: float) -> None:
        """Drop counters whose window has passed; if that is not enough, the oldest half."""
        for key in [k for k, (times, within) in self.caps.items() if not times or times[-1] <= now - within]:
            del self.caps[key]
        if len(self.caps) >= CAP_KEYS_MAX:
            for key in list(self.caps)[:CAP_KEYS_MAX // 2]:
                del self.caps[key]

    def forget(self, customer: str, keys: Sequence[str] = ()) -> None:
        """Erasure: drop the cap counters kept under the customer and under their phones and kiosk sessions."""
        whose = {customer, *keys}
        for key in [k for k in self.caps if k[1] in whose]:
            del self.caps[key]

    # --- reasons ---
    def _explain(self, c: CompiledRule, ev: _Eval, m: dict[str, Any], content: _Content,
                 personal: bool) -> tuple[str, dict[str, Any]]:
        """A sentence for people ("why did screen 3 show this?") and the same facts as data."""
        event, w = ev.event, c.rule.when
        parts = [f"rule {c.rule.id}: {event.name}" + (f" in zone {event.zone}" if event.zone else "")]
        matched: dict[str, Any] = {}
        if event.zone and c.zones is not None:
            matched["zone"] = event.zone
        if c.events is not None:
            matched["event"] = event.name
        if "dwell_s" in m:
            matched["dwell_s"] = m["dwell_s"]
            parts.append(f"dwell {m['dwell_s']:.0f}s ≥ {m['dwell_min_s']:.0f}s")
        if "local_time" in m:
            matched["local_time"] = m["local_time"]
            parts.append(f"at {m['local_time']} ({self.cfg.store.timezone})")
        if w.known is not None:
            matched["known"] = w.known
            parts.append("identified customer" if w.known else "anonymous shopper")
        shopper = ev.shopper() if personal else None
        if w.segments is not None and shopper is not None:
            wanted = _as_set(w.segments) or frozenset()
            segment = next((s for s in shopper.segments if s in wanted), None)
            matched["segment"] = segment
            parts.append(f"segment {segment}")
        if w.tier is not None and shopper is not None:
            matched["tier"] = shopper.tier
            parts.append(f"tier {shopper.tier}")
        if w.wishlist_in_zone is not None:
            matched["wishlist_in_zone"] = w.wishlist_in_zone
            if "wishlist_sku" in m:
                matched["wishlist_sku"] = m["wishlist_sku"]
            parts.append("a wishlist item is stocked here" if w.wishlist_in_zone else "no wishlist item here")
        if w.cart_not_empty is not None:
            matched["cart_not_empty"] = w.cart_not_empty
            parts.append("cart not empty" if w.cart_not_empty else "cart empty")
        if w.orders_ready is not None:
            matched["orders_ready"] = w.orders_ready
            parts.append("an order is ready" if w.orders_ready else "no order ready")
        if "recent" in m:
            matched["recent"] = m["recent"]
            parts.append(f"{m['recent']['event']} {m['recent']['ago_s']:.0f}s ago")
        if content.variant is not None:
            parts.append(f"variant {content.variant}")
        if personal:
            parts.append("personalized (consent given)" if self.require_consent else "personalized")
        extra: dict[str, Any] = {"rule": c.rule.id, "priority": c.rule.priority, "event": event.name,
                                 "event_id": event.event_id, "zone": event.zone, "matched": matched,
                                 "personalized": personal}
        if content.variant is not None:
            extra["variant"] = content.variant
        return "; ".join(parts), extra


def _check_anonymous(ev: _Eval, m: dict[str, Any]) -> bool:
    return not ev.event.customer


def _check_segments(wanted: frozenset[str]) -> Check:
    def check(ev: _Eval, m: dict[str, Any]) -> bool:
        shopper = ev.shopper()
        return shopper is not None and not wanted.isdisjoint(shopper.segments)
    return check


def _check_tier(wanted: frozenset[str]) -> Check:
    def check(ev: _Eval, m: dict[str, Any]) -> bool:
        shopper = ev.shopper()
        return shopper is not None and shopper.tier in wanted
    return check


def _check_cart(wanted: bool) -> Check:
    def check(ev: _Eval, m: dict[str, Any]) -> bool:
        shopper = ev.shopper()
        return shopper is not None and bool(shopper.cart) == wanted
    return check


def _check_orders(wanted: bool) -> Check:
    def check(ev: _Eval, m: dict[str, Any]) -> bool:
        shopper = ev.shopper()
        return shopper is not None and bool(shopper.orders_ready) == wanted
    return check
