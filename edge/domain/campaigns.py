"""Campaigns from the central store at this store: validated against the store, applied atomically, scheduled in
the store's timezone, and reported back.

A campaign version (from the content channel, sync/content.py) is checked against this store before it is
applied: its rules in the `[[rules]]` language (the same checks as the config's: zones, events, screens,
kiosks, placeholders), its content's templates (TEMPLATES, or one the store's own content uses), the content
its rules show, its schedule. One that does not fit is refused with the reason (an outbox `campaign` event the
central store shows), and the version applied before stays. One that fits but whose assets are not all on
the device waits (`pending`) and applies once the downloader brought them: a screen never shows a campaign
before its assets are here.

Applying is one writer task: the tables change in one transaction, and in the same step the rule engine
takes the new set of campaign rules and the displays their new playlists (`install`), so a screen never shows
half a campaign. Who wins when a campaign rule and a store rule both match a screen: the higher priority (a
campaign rule's own `priority`, else its campaign's); on a tie the store's own rule, then the campaign with
the higher priority, then by campaign id. Content items that none of the campaign's rules shows join every
screen's fallback playlist (before the store's own items) while the campaign is in its schedule.

The schedule (`start`/`end` ISO 8601, naive times in the store's timezone; `days`; `hours` "HH:MM-HH:MM") is
evaluated at each event's time (the engine's `now`) and at every `tick`: a campaign leaving its schedule (or
withdrawn) takes its content off the screens showing it, and its playlist items out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from edge.config import WEEKDAYS, Config, data_placeholders, parse_hours
from edge.config.checks import cross_check
from edge.config.layout import ContentConfig
from edge.config.rules import RuleConfig
from edge.domain.catalogue import Catalogue, ProductError, product_images
from edge.domain.content import content_data
from edge.domain.displays import Displays
from edge.domain.rules import CampaignRule, RuleEngine
from edge.i18n import LANGUAGES
from edge.model import INVALID_VALUE, Event
from edge.store import campaigns as table
from edge.store.writer import Writer
from sync.assets import is_sha256
from sync.local import ContentApplied, ContentChanges, ProductChange

log = logging.getLogger(__name__)

# The layouts the edge's players know (a store's own [[content]] may name more: those are known too).
TEMPLATES = ("message", "offer", "image", "video", "product")
RULE_PREFIX = "campaign:"
REASON_MAX = 500
ASSET_KEYS = ("image", "video", "poster", "asset")  # keys whose SHA-256 values in content data are assets
CONTENT_KEYS = ("id", "template", "title", "body", "image", "duration_s", "i18n")
KIND = "campaign"
CONTENT_TOPIC = "central/content"  # the dead letters' topic for a channel entry the edge cannot take


class Refused(Exception):
    """A campaign version that does not fit this store; the message is the reason reported back."""


def rule_id(campaign: str, rule: str) -> str:
    """A campaign rule's id at the edge (decisions, caps, metrics): never the same as a store rule's."""
    return f"{RULE_PREFIX}{campaign}:{rule}"


def campaign_of(rule: str | None) -> str | None:
    """The campaign a decision's rule id belongs to, or None for a store rule."""
    if not rule or not rule.startswith(RULE_PREFIX):
        return None
    return rule[len(RULE_PREFIX):].rpartition(":")[0] or None


# --- schedule ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a campaign shows: [start, end) as instants, on `days` (0 = Monday) within `hours` (minutes since
    local midnight, end exclusive, may wrap past midnight), in the store's timezone."""

    tz: ZoneInfo
    start: float | None = None
    end: float | None = None
    days: frozenset[int] | None = None
    hours: tuple[tuple[int, int], ...] = ()

    def active(self, now: float) -> bool:
        if self.start is not None and now < self.start:
            return False
        if self.end is not None and now >= self.end:
            return False
        if self.days is None and not self.hours:
            return True
        t = datetime.fromtimestamp(now, self.tz)
        if self.days is not None and t.weekday() not in self.days:
            return False
        minute = t.hour * 60 + t.minute
        return not self.hours or any((a <= minute < b) if a < b else (minute >= a or minute < b)
                                     for a, b in self.hours)


def _instant(value: Any, key: str, tz: ZoneInfo) -> float | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Refused(f"schedule.{key}: expected an ISO 8601 date-time, e.g. \"2026-10-01T09:00\"")
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise Refused(f"schedule.{key}: {value[:40]!r} is not an ISO 8601 date-time, e.g. \"2026-10-01T09:00\"") \
            from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=tz)  # a local time of this store
    return t.timestamp()


def _names(value: Any) -> list[Any]:
    return [value] if isinstance(value, str | int) else list(value) if isinstance(value, list) else [object()]


def parse_schedule(raw: Any, tz: ZoneInfo) -> Schedule:
    """A campaign's `schedule` in this store's timezone; raises Refused naming what is wrong."""
    if raw is None:
        return Schedule(tz)
    if not isinstance(raw, dict):
        raise Refused("schedule: expected an object with start, end, days, hours")
    unknown = sorted(set(raw) - {"start", "end", "days", "hours"})
    if unknown:
        raise Refused(f"schedule: unknown key {unknown[0]!r}; use start, end, days, hours")
    start, end = _instant(raw.get("start"), "start", tz), _instant(raw.get("end"), "end", tz)
    if start is not None and end is not None and end <= start:
        raise Refused("schedule: end is not after start")
    days: frozenset[int] | None = None
    if raw.get("days") is not None:
        found = set()
        for d in _names(raw["days"]):
            name = d.strip().lower()[:3] if isinstance(d, str) else None
            if name not in WEEKDAYS:
                raise Refused(f"schedule.days: unknown day {str(d)[:20]!r}; use {', '.join(WEEKDAYS)}")
            found.add(WEEKDAYS.index(name))
        days = frozenset(found)
    hours: list[tuple[int, int]] = []
    if raw.get("hours") is not None:
        for h in _names(raw["hours"]):
            try:
                hours.append(parse_hours(h))
            except ValueError as exc:
                raise Refused(f"schedule.hours: {exc}") from None
    return Schedule(tz, start, end, days, tuple(hours))


# --- one campaign version, checked and compiled ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Campaign:
    """A campaign version as this store applies it."""

    id: str
    version: int
    name: str
    priority: int
    schedule: Schedule
    content: tuple[ContentConfig, ...]
    rules: tuple[RuleConfig, ...]  # ids made unique (rule_id), priorities resolved
    playlist: tuple[ContentConfig, ...]  # content no rule of it shows: the screens' fallback playlists
    assets: frozenset[str]
    content_ids: frozenset[str] = field(default_factory=frozenset)
    data: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # content id → its extra display data


def _assets_in(value: Any, found: set[str], key: str | None = None) -> None:
    if isinstance(value, str):
        if key in ASSET_KEYS and is_sha256(value):
            found.add(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _assets_in(v, found, k)
    elif isinstance(value, list):
        for v in value:
            _assets_in(v, found, key)


def _asset_urls(value: Any, key: str | None = None) -> Any:
    """Rule data with asset names turned into the edge's own URLs (/assets/<sha256>), as players load them."""
    if isinstance(value, str):
        return f"/assets/{value}" if key in ASSET_KEYS and is_sha256(value) else value
    if isinstance(value, dict):
        return {k: _asset_urls(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_asset_urls(v, key) for v in value]
    return value


def assets_of(body: Mapping[str, Any] | None) -> set[str]:
    """Every asset a campaign body names (content images, SHA-256 values under image/video/poster keys)."""
    found: set[str] = set()
    if isinstance(body, Mapping):
        _assets_in(body.get("content"), found)
        _assets_in(body.get("rules"), found)
    return found


def _validation_reason(where: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    return f"{where}{'.' + loc if loc else ''}: {err['msg']}"


def store_templates(cfg: Config) -> frozenset[str]:
    return frozenset(TEMPLATES) | {c.template for c in cfg.content} | {r.show.template for r in cfg.rules}


def compile_campaign(cfg: Config, cid: str, version: int, body: Mapping[str, Any]) -> Campaign:
    """Check a campaign version against this store and compile it; raises Refused with what did not fit."""
    tz = ZoneInfo(cfg.store.timezone)
    name = body.get("name") if isinstance(body.get("name"), str) else cid
    priority = body.get("priority", 0)
    if type(priority) is not int:
        raise Refused("priority: expected an integer")
    raw_content = body.get("content", [])
    raw_rules = body.get("rules", [])
    if not isinstance(raw_content, list) or not all(isinstance(c, dict) for c in raw_content):
        raise Refused("content: expected a list of objects")
    if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
        raise Refused("rules: expected a list of objects")
    schedule = parse_schedule(body.get("schedule"), tz)
    templates = store_templates(cfg)
    content: list[ContentConfig] = []
    extra_data: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(raw_content):
        where = f"content[{i}]" + (f" (id {item['id']!r})" if isinstance(item.get("id"), str) else "")
        image = item.get("image")
        if image is not None and not is_sha256(image):
            raise Refused(f"{where}.image: expected the SHA-256 name of an asset uploaded to the central store")
        i18n = item.get("i18n") if isinstance(item.get("i18n"), dict) else {}
        fields = {k: item[k] for k in CONTENT_KEYS if k in item and item[k] is not None}
        fields["i18n"] = {lang: t for lang, t in i18n.items() if lang in LANGUAGES}  # others: not spoken here
        if image is not None:
            fields["image"] = f"/assets/{image}"
        try:
            c = ContentConfig.model_validate(fields)
        except ValidationError as exc:
            raise Refused(_validation_reason(where, exc)) from None
        extra = item.get("data")
        if extra is not None:
            if not isinstance(extra, dict):
                raise Refused(f"{where}.data: expected an object")
            try:
                named = data_placeholders(extra)
            except ValueError as exc:
                raise Refused(f"{where}.data: {exc}") from None
            if named:
                raise Refused(f"{where}.data: placeholders ({', '.join(sorted(named))}) belong in a rule's "
                              "show.data, where the consent gate sees them")
            extra_data[c.id] = {k: v for k, v in _asset_urls(extra).items() if k not in ("title", "body", "i18n")}
        if c.template not in templates:
            raise Refused(f"{where}.template: unknown template {c.template!r}; this store knows "
                          f"{', '.join(sorted(templates))}")
        content.append(c)
    own = {c.id for c in content}
    rules: list[RuleConfig] = []
    shown: set[str] = set()
    for i, raw in enumerate(raw_rules):
        where = f"rules[{i}]" + (f" (id {raw['id']!r})" if isinstance(raw.get("id"), str) else "")
        try:
            r = RuleConfig.model_validate(raw)
        except ValidationError as exc:
            raise Refused(_validation_reason(where, exc)) from None
        ids = [r.show.content_id] + [v.content_id for v in r.variants if v.content_id]
        for content_id in ids:
            if content_id not in own and cfg.content_item(content_id) is None:
                raise Refused(f"{where}.show.content_id: unknown content {content_id!r}; add it to the campaign's "
                              "content")
        shown.update(ids)
        for template in [r.show.template] + [v.template for v in r.variants if v.template]:
            if template not in templates:
                raise Refused(f"{where}.show.template: unknown template {template!r}; this store knows "
                              f"{', '.join(sorted(templates))}")
        show = r.show.model_copy(update={"data": _asset_urls(r.show.data)})
        variants = [v.model_copy(update={"data": _asset_urls(v.data)}) for v in r.variants]
        rules.append(r.model_copy(update={"id": rule_id(cid, r.id), "show": show, "variants": variants,
                                          "priority": r.priority if "priority" in raw else priority}))
    # The config's own checks, on the store's layout with this campaign's content and rules.
    data = {"zones": [z.model_dump() for z in cfg.zones], "screens": [s.model_dump() for s in cfg.screens],
            "kiosks": [k.model_dump() for k in cfg.kiosks], "products": [p.model_dump() for p in cfg.products],
            "content": [c.model_dump() for c in cfg.content] + [{"id": c.id} for c in content],
            "rules": raw_rules}
    for issue in cross_check(data):
        if issue.path.startswith(("rules", "content")):
            text = str(issue) + (f" ({issue.hint})" if issue.hint else "")
            raise Refused(text[:REASON_MAX])
    assets = frozenset(assets_of(body))
    playlist = tuple(c for c in content if c.id not in shown)
    return Campaign(cid, version, name[:200], priority, schedule, tuple(content), tuple(rules), playlist, assets,
                    frozenset(own), extra_data)


# --- the campaigns held here ---------------------------------------------------------------------------------


def _event(kind_type: str, data: dict[str, Any], event_id: str, now: float) -> Event:
    return Event(event_id=event_id, kind=KIND, type=kind_type, source="edge", ts=now, received_at=now, data=data)


class Campaigns:
    """The campaigns applied here, in memory: the rule engine's campaign rules and the screens' playlists follow
    them. Owned by the pipeline's writer: every method that changes them runs in a writer task."""

    def __init__(self, cfg: Config, rules: RuleEngine, displays: Displays, *,
                 has_asset: Callable[[str], bool], clock: Callable[[], float] = time.time,
                 catalogue: Catalogue | None = None) -> None:
        """`catalogue`: the one catalogue (edge.domain.catalogue; default: the rule engine's), where the channel's
        products go."""
        self.cfg = cfg
        self.catalogue = catalogue if catalogue is not None else rules.catalogue
        self.engine = rules
        self.displays = displays
        self.has_asset = has_asset
        self.clock = clock
        self.applied: dict[str, Campaign] = {}  # replaced, never changed in place (`due` reads it from any thread)
        self.active: frozenset[str] = frozenset()  # applied and in their schedule at the last install/tick

    # --- reading (any thread) ---
    def due(self, now: float) -> bool:
        """A campaign entered or left its schedule since the last tick (cheap; the tick runs in the writer)."""
        applied = self.applied
        return frozenset(c for c, camp in applied.items() if camp.schedule.active(now)) != self.active

    def for_offers(self, now: float) -> tuple[list[RuleConfig], dict[str, ContentConfig], frozenset[str]]:
        """What a product's landing page may offer from the campaigns applied here and in their schedule at `now`
        (edge.domain.offers): their rules (priorities resolved), their content items (the product named by an
        item's `data.sku`) and the items they add to the screens' playlists. Any thread."""
        live = [c for c in sorted(self.applied.values(), key=lambda c: (-c.priority, c.id)) if c.schedule.active(now)]
        content: dict[str, ContentConfig] = {}
        for camp in live:
            for item in camp.content:
                sku = camp.data.get(item.id, {}).get("sku")
                if item.sku is None and isinstance(sku, str) and sku:
                    item = item.model_copy(update={"sku": sku})
                content.setdefault(item.id, item)
        return ([r for c in live for r in c.rules], content,
                frozenset(item.id for c in live for item in c.playlist))

    # --- in the writer ---
    def reload(self, conn: Any) -> None:
        """Take the applied campaigns and the catalogue's central products from the tables (at start, and after a
        rolled-back transaction)."""
        self.catalogue.load(conn)
        applied: dict[str, Campaign] = {}
        for row in table.applied(conn):
            try:
                applied[row.id] = compile_campaign(self.cfg, row.id, row.applied_version or 0, row.applied_body or {})
            except Refused as exc:  # the store's config changed since it was applied
                log.warning("campaign %s (version %s) no longer fits this store and is not shown: %s", row.id,
                            row.applied_version, exc)
        self.applied = applied
        self.install(self.clock())

    def install(self, now: float) -> None:
        """The engine's campaign rules and the displays' playlists from `applied`, in one step; screens showing
        content of a campaign no longer applied or out of its schedule go back to their playlist."""
        ordered = sorted(self.applied.values(), key=lambda c: (-c.priority, c.id))
        rules = [CampaignRule(r, c.id, c.priority, c.schedule.active) for c in ordered for r in c.rules]
        content = {item.id: item for c in ordered for item in c.content}
        extra = {cid: d for c in ordered for cid, d in c.data.items()}
        self.engine.set_campaigns(rules, content, extra)
        self.active = frozenset(c.id for c in ordered if c.schedule.active(now))
        lang = self.cfg.store.language
        items = [{**c.data.get(item.id, {}), "content_id": item.id, "template": item.template, "image": None,
                  **content_data(item, lang), "duration_s": item.duration_s, "campaign": c.id}
                 for c in ordered if c.id in self.active for item in c.playlist]
        active = {c.id: c.content_ids for c in ordered if c.id in self.active}

        def keep(payload: Mapping[str, Any]) -> bool:
            owner = campaign_of(payload.get("rule") if isinstance(payload.get("rule"), str) else None)
            return owner is None or payload.get("content_id") in active.get(owner, ())

        self.displays.set_campaign_items(items, keep)

    def tick(self, writer: Writer | None = None) -> bool:
        """Schedules: re-install when a campaign entered or left its schedule; True when it did."""
        now = self.clock()
        if not self.due(now):
            return False
        self.install(now)
        return True

    def take(self, writer: Writer, changes: ContentChanges) -> ContentApplied:
        """A content channel page, in the writer's transaction: campaigns and products newer than held, the
        cursor; each live version validated, then applied, refused (reported) or left pending; one install."""
        conn = writer.conn
        now = self.clock()
        taken = applied = refused = pending = 0
        changed = False
        for ch in changes.campaigns:
            held = table.campaign(conn, ch.id)
            if held is not None and held.version >= ch.version:
                continue  # the channel's entry versions only grow: this one is not newer than what is held
            taken += 1
            if ch.op == "withdrawn":
                table.receive(conn, ch.id, ch.version, None, ch.op, None, table.WITHDRAWN, None, now)
                table.unapply(conn, ch.id)
                if ch.id in self.applied:  # a new dict, never changed in place: the clock thread reads it
                    self.applied = {k: v for k, v in self.applied.items() if k != ch.id}
                    changed = True
                continue
            body = ch.campaign or {}
            # The campaign's own version (a rollback brings an older one back under a newer entry).
            version = body["version"] if type(body.get("version")) is int else ch.version
            try:
                camp = compile_campaign(self.cfg, ch.id, version, body)
            except Exception as exc:  # a version no check foresaw must not stall the channel: refused too
                if not isinstance(exc, Refused):
                    log.exception("checking campaign %s version %d failed", ch.id, version)
                reason = (str(exc) if isinstance(exc, Refused) else
                          f"the edge could not check it ({type(exc).__name__}; a bug: the edge log has the "
                          "traceback)")[:REASON_MAX]
                table.receive(conn, ch.id, ch.version, version, ch.op, body, table.REFUSED, reason, now)
                writer.insert_event(_event("refused", {"id": ch.id, "version": version, "reason": reason},
                                           f"campaign:{ch.id}:{ch.version}:refused", now))
                log.warning("campaign %s version %d refused: %s", ch.id, version, reason)
                refused += 1
                continue
            table.receive(conn, ch.id, ch.version, version, ch.op, body, table.PENDING, None, now)
            if not all(self.has_asset(a) for a in camp.assets):
                pending += 1
                continue
            self._apply(writer, camp, body, ch.version, now)
            applied += 1
            changed = True
        if changes.store is not None and changes.store_version is not None:
            taken += int(table.keep_store(conn, changes.store_version, changes.store))
        if changes.cursor is not None:
            table.keep_cursor(conn, changes.cursor)
        # Last: the catalogue's memory changes with its rows (a failure after it would leave memory ahead).
        taken += self._take_products(writer, changes.products, now)
        if changed:
            self.install(now)
        return ContentApplied(taken, applied, refused, pending)

    def _take_products(self, writer: Writer, products: Sequence[ProductChange], now: float) -> int:
        """The channel's products into the one catalogue, each only if newer than held (the entry's version); its
        listeners re-render the pages showing them. One the catalogue cannot read becomes a dead letter with the
        reason (the central store checked it: a newer central, or a bug) and the channel moves on."""
        taken = 0
        for ch in products:
            entry: dict[str, Any] = {"kind": "product", "sku": ch.sku, "version": ch.version, "op": ch.op}
            if ch.product is not None:
                entry["product"] = ch.product
            try:
                taken += self.catalogue.apply_product(entry, writer.conn)
            except ProductError as exc:
                detail = f"product {ch.sku!r} version {ch.version} not taken: {exc}"[:REASON_MAX]
                writer.insert_deadletters([(CONTENT_TOPIC, INVALID_VALUE, detail, "", now)])
                log.warning("content channel: %s", detail)
        return taken

    def assets_arrived(self, writer: Writer, names: Sequence[str]) -> int:
        """Pending campaigns whose assets are now all here apply (one install for all of them)."""
        conn = writer.conn
        now = self.clock()
        applied = 0
        for row in table.campaigns(conn, (table.PENDING,)):
            try:
                camp = compile_campaign(self.cfg, row.id, row.campaign_version or row.version, row.body or {})
            except Refused:
                continue  # checked when it arrived; the config cannot change under a running edge
            if all(self.has_asset(a) for a in camp.assets):
                self._apply(writer, camp, row.body or {}, row.version, now)
                applied += 1
        if applied:
            self.install(now)
        return applied

    def _apply(self, writer: Writer, camp: Campaign, body: Mapping[str, Any], entry: int, now: float) -> None:
        table.mark_applied(writer.conn, camp.id, camp.version, body, now)
        writer.insert_event(_event("applied", {"id": camp.id, "version": camp.version},
                                   f"campaign:{camp.id}:{entry}:applied", now))
        self.applied = {**self.applied, camp.id: camp}
        log.info("campaign %s version %d applied (%d rules, %d content items, %d assets)", camp.id, camp.version,
                 len(camp.rules), len(camp.content), len(camp.assets))

    # --- reporting: impressions ---
    def report_impressions(self, writer: Writer, since: float, until: float) -> int:
        """One outbox event per campaign content shown in [since, until): times shown, distinct shoppers (or
        devices, sessions) reached. Returns how many events."""
        rows = writer.conn.execute(
            "SELECT d.rule_id, d.content_id, count(*), count(DISTINCT coalesce(e.customer, e.subject, d.event_id)) "
            "FROM decisions d LEFT JOIN events e ON e.event_id = d.event_id "
            "WHERE d.ts >= ? AND d.ts < ? AND d.rule_id LIKE 'campaign:%' GROUP BY d.rule_id, d.content_id",
            (since, until)).fetchall()
        per: dict[tuple[str, str], list[int]] = {}
        for rule, content_id, shown, reached in rows:
            cid = campaign_of(rule)
            if cid is None:
                continue
            entry = per.setdefault((cid, content_id), [0, 0])
            entry[0] += shown
            entry[1] += reached  # distinct per rule; a shopper reached by two rules of it counts twice
        n = 0
        for (cid, content_id), (shown, reached) in per.items():
            camp = self.applied.get(cid)
            row = table.campaign(writer.conn, cid) if camp is None else None
            version = camp.version if camp is not None else (row.applied_version or row.campaign_version or 0
                                                             if row else 0)
            writer.insert_event(_event("impressions", {
                "id": cid, "version": version, "content_id": content_id, "shown": shown, "reached": reached,
                "from": since, "to": until}, f"campaign:{cid}:{content_id}:impressions:{since:.3f}", until))
            n += 1
        return n


def listing(conn: Any) -> list[dict[str, Any]]:
    """GET /api/v1/campaigns: the campaigns applied here, and what became of the latest version received (also
    those refused or pending; not those withdrawn, which show nothing)."""
    out = []
    for row in table.campaigns(conn):
        if row.applied_version is None and row.state == table.WITHDRAWN:
            continue
        entry: dict[str, Any] = {"id": row.id, "version": row.applied_version, "applied_at": row.applied_at,
                                 "latest": row.campaign_version, "state": row.state}
        if row.reason:
            entry["reason"] = row.reason
        out.append(entry)
    return out


def wanted_assets(conn: Any) -> set[str]:
    """Assets of the campaigns applied or pending here and of the products: what the cache must hold."""
    found: set[str] = set()
    for row in table.campaigns(conn):
        if row.state == table.PENDING:
            found |= assets_of(row.body)
        if row.applied_body is not None:
            found |= assets_of(row.applied_body)
    found |= {a for a in product_images(conn) if is_sha256(a)}
    return found
