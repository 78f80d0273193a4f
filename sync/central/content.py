"""Campaigns, products, store metadata and assets at the central store: the shapes the admin API takes, and
what each store is sent (a campaign or product resolved for that store).

Pure functions only (no database), shared by both storage engines and the HTTP app. The rule shape is the
edge's `[[rules]]` (edge/config/rules.py) checked structurally here: nothing in sync/ imports the edge, and
the edge checks each campaign again against its own zones, screens and templates before applying it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sync import protocol as p

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # the edge's config ids (campaign, content, rule, sku)
SHA256_RE = re.compile(r"[0-9a-f]{64}")
CURRENCY_RE = re.compile(r"[A-Z]{3}")
LANGUAGE_RE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})?")
EAN_RE = re.compile(r"\d{8,14}")
HOURS_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)-(?:([01]\d|2[0-3]):([0-5]\d)|24:00)")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

MAX_ASSET_BYTES = 16 * 1024 * 1024  # images and short videos (the central server reads no larger body)
ASSET_TYPES = ("video/mp4", "video/webm")  # and every image/*
MAX_CONTENT_ITEMS = 200
MAX_RULES = 500
MAX_TEXT = 2000
MAX_NAME = 200
ALL = "*"

# The [[rules]] shape (edge/config/rules.py RuleConfig and its parts): the keys each level may have.
RULE_KEYS = ("id", "priority", "ttl_s", "when", "show", "variants", "cap_per_shopper", "cap_per_screen")
WHEN_KEYS = ("zone", "event", "dwell_min_s", "hours", "days", "segments", "tier", "known", "wishlist_in_zone",
             "cart_not_empty", "orders_ready", "recent_event", "recent_within_s")
WHEN_BOOLS = ("known", "wishlist_in_zone", "cart_not_empty", "orders_ready")
WHEN_STR_OR_LISTS = ("zone", "event", "hours", "days", "segments", "tier", "recent_event")
SHOW_KEYS = ("content_id", "template", "data", "screens", "kiosks")
VARIANT_KEYS = ("id", "weight", "content_id", "template", "data")
CAP_KEYS = ("count", "within_s")
CONTENT_KEYS = ("id", "template", "title", "body", "image", "duration_s", "i18n", "data")
CAMPAIGN_KEYS = ("name", "targets", "schedule", "priority", "content", "rules")
PRODUCT_KEYS = ("name", "price", "currency", "image", "zone", "stores", "variants", "i18n", "ean", "description")
VARIANT_PRODUCT_KEYS = ("sku", "label", "price", "available", "image", "ean")
STORE_KEYS = ("name", "tags", "timezone", "language")


class Invalid(ValueError):
    """A body that does not have the admin API's shape: every problem, each with its path and the fix."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Checker:
    """Collects errors with their path, so one answer names every field to fix."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def keys(self, obj: Any, path: str, allowed: tuple[str, ...]) -> bool:
        """obj is an object with only `allowed` keys; False (error noted) when not an object at all."""
        if type(obj) is not dict:
            self.error(path, f"expected an object, got {type(obj).__name__}")
            return False
        for key in obj:
            if key not in allowed:
                self.error(f"{path}.{str(key)[:40]}" if path else str(key)[:40],
                           f"unknown field; allowed: {', '.join(allowed)}")
        return True

    def text(self, obj: dict[str, Any], key: str, path: str, *, required: bool = False, max_len: int = MAX_TEXT,
             pattern: re.Pattern[str] | None = None, hint: str = "") -> str | None:
        where = f"{path}.{key}" if path else key
        if key not in obj or obj[key] is None:
            if required:
                self.error(where, f"missing; {hint or 'give a text'}")
            return None
        value = obj[key]
        if type(value) is not str or not 0 < len(value) <= max_len or "\x00" in value:
            self.error(where, f"expected a text of 1 to {max_len} characters, got {show(value)}")
            return None
        if pattern is not None and pattern.fullmatch(value) is None:
            self.error(where, f"{hint or 'unexpected value'}, got {show(value)}")
            return None
        return value

    def number(self, obj: dict[str, Any], key: str, path: str, *, required: bool = False, minimum: float = 0.0,
               strict: bool = False, integer: bool = False) -> float | None:
        where = f"{path}.{key}" if path else key
        if key not in obj or obj[key] is None:
            if required:
                self.error(where, "missing; give a number")
            return None
        value = obj[key]
        ok = type(value) is int if integer else type(value) in (int, float)
        if not ok or (type(value) is float and not math.isfinite(value)):
            self.error(where, f"expected {'a whole number' if integer else 'a number'}, got {show(value)}")
            return None
        if value < minimum or (strict and value == minimum):
            self.error(where, f"expected a number {'>' if strict else '>='} {minimum:g}, got {value}")
            return None
        return value

    def flag(self, obj: dict[str, Any], key: str, path: str) -> bool | None:
        if key not in obj or obj[key] is None:
            return None
        if type(obj[key]) is not bool:
            self.error(f"{path}.{key}" if path else key, f"expected true or false, got {show(obj[key])}")
            return None
        return obj[key]

    def str_list(self, value: Any, where: str, *, pattern: re.Pattern[str] | None = None, hint: str = "",
                 allow_one: bool = False, max_items: int = 500) -> list[str]:
        """A list of texts (or, with allow_one, a single text)."""
        if allow_one and type(value) is str:
            value = [value]
        if type(value) is not list or len(value) > max_items:
            self.error(where, f"expected a list of at most {max_items} texts{' or one text' if allow_one else ''}, "
                              f"got {show(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            if type(item) is not str or not 0 < len(item) <= 256 or "\x00" in item:
                self.error(f"{where}[{i}]", f"expected a text of 1 to 256 characters, got {show(item)}")
            elif pattern is not None and pattern.fullmatch(item) is None:
                self.error(f"{where}[{i}]", f"{hint}, got {show(item)}")
            else:
                out.append(item)
        return out

    def done(self) -> None:
        if self.errors:
            raise Invalid(self.errors)


def check_id(value: str, what: str) -> None:
    """An id taken from the URL path (campaign id, sku, store)."""
    if ID_RE.fullmatch(value) is None:
        raise Invalid([f"{what} {value[:40]!r}: expected 1 to 64 letters, digits, '_', '.', '-' "
                       "(starting with a letter or digit)"])


def asset_type(content_type: str | None) -> str:
    """The media type an asset is stored with; Invalid when it is not an image or a short video."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if not kind:
        raise Invalid(["Content-Type: missing; send the asset's media type, e.g. image/png or video/mp4"])
    if not (kind.startswith("image/") and len(kind) > 6) and kind not in ASSET_TYPES:
        raise Invalid([f"Content-Type: {kind[:60]!r} is not accepted; send an image (image/png, image/jpeg, ...) "
                       f"or a short video ({', '.join(ASSET_TYPES)})"])
    return kind


def i18n_block(c: Checker, obj: dict[str, Any], path: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """{"it": {"title": ..., "body": ...}, ...}: texts per language."""
    if "i18n" not in obj or obj["i18n"] is None:
        return None
    value = obj["i18n"]
    where = f"{path}.i18n" if path else "i18n"
    if type(value) is not dict:
        c.error(where, 'expected {"<language>": {...}}, e.g. {"it": {...}}')
        return None
    for lang, texts in value.items():
        if type(lang) is not str or LANGUAGE_RE.fullmatch(lang) is None:
            c.error(f"{where}.{str(lang)[:20]}", "expected a language code such as 'it' or 'en-GB'")
            continue
        if c.keys(texts, f"{where}.{lang}", fields):
            for field in fields:
                c.text(texts, field, f"{where}.{lang}")
    return value


# --- rules (the [[rules]] shape) --------------------------------------------------------------------------


def check_rule(c: Checker, rule: Any, path: str, content_ids: set[str]) -> None:
    """One rule in the edge's [[rules]] shape; its content must be the campaign's own."""
    if not c.keys(rule, path, RULE_KEYS):
        return
    c.text(rule, "id", path, required=True, max_len=64, pattern=ID_RE, hint="expected a rule id (letters, "
           "digits, '_', '.', '-')")
    if "priority" in rule and type(rule["priority"]) is not int:
        c.error(f"{path}.priority", f"expected a whole number, got {show(rule['priority'])}")
    c.number(rule, "ttl_s", path, strict=True)
    when = rule.get("when", {})
    if c.keys(when, f"{path}.when", WHEN_KEYS):
        for key in WHEN_STR_OR_LISTS:
            if key in when:
                items = c.str_list(when[key], f"{path}.when.{key}", allow_one=True)
                if not items and type(when[key]) is list:
                    c.error(f"{path}.when.{key}", f"empty list; leave {key} out to match any")
                for item in items:
                    if key == "hours" and HOURS_RE.fullmatch(item) is None:
                        c.error(f"{path}.when.hours", f"{item!r}: expected \"HH:MM-HH:MM\" in 24-hour time")
                    elif key == "days" and item not in WEEKDAYS:
                        c.error(f"{path}.when.days", f"unknown day {item!r}; use {', '.join(WEEKDAYS)}")
                    elif key == "tier" and item not in p.TIERS:
                        c.error(f"{path}.when.tier", f"unknown tier {item!r}; use {', '.join(p.TIERS)}")
        for key in WHEN_BOOLS:
            c.flag(when, key, f"{path}.when")
        c.number(when, "dwell_min_s", f"{path}.when")
        c.number(when, "recent_within_s", f"{path}.when", strict=True)
    if "show" not in rule:
        c.error(f"{path}.show", 'missing; a rule shows content: {"content_id": "<one of the campaign\'s content '
                                'ids>"}')
    elif c.keys(rule["show"], f"{path}.show", SHOW_KEYS):
        shown = rule["show"]
        cid = c.text(shown, "content_id", f"{path}.show", required=True, max_len=64, pattern=ID_RE,
                     hint="expected the id of one of the campaign's content items")
        if cid is not None and cid not in content_ids:
            c.error(f"{path}.show.content_id", f"{cid!r} is not one of this campaign's content ids "
                                               f"({', '.join(sorted(content_ids)) or 'none'})")
        c.text(shown, "template", f"{path}.show", max_len=64)
        if "data" in shown and type(shown["data"]) is not dict:
            c.error(f"{path}.show.data", "expected an object")
        for key in ("screens", "kiosks"):
            if key in shown:
                c.str_list(shown[key], f"{path}.show.{key}")
    variants = rule.get("variants", [])
    if type(variants) is not list:
        c.error(f"{path}.variants", "expected a list of variants")
        variants = []
    for i, variant in enumerate(variants):
        vpath = f"{path}.variants[{i}]"
        if c.keys(variant, vpath, VARIANT_KEYS):
            c.text(variant, "id", vpath, required=True, max_len=64, pattern=ID_RE, hint="expected a variant id")
            c.number(variant, "weight", vpath)
            cid = c.text(variant, "content_id", vpath, max_len=64, pattern=ID_RE, hint="expected a content id")
            if cid is not None and cid not in content_ids:
                c.error(f"{vpath}.content_id", f"{cid!r} is not one of this campaign's content ids")
            c.text(variant, "template", vpath, max_len=64)
            if "data" in variant and type(variant["data"]) is not dict:
                c.error(f"{vpath}.data", "expected an object")
    for key in ("cap_per_shopper", "cap_per_screen"):
        if rule.get(key) is not None and c.keys(rule[key], f"{path}.{key}", CAP_KEYS):
            c.number(rule[key], "count", f"{path}.{key}", required=True, minimum=1, integer=True)
            c.number(rule[key], "within_s", f"{path}.{key}", required=True, strict=True)


# --- campaigns --------------------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    if type(value) is not str:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def validate_campaign(body: Any) -> dict[str, Any]:
    """A campaign draft as PUT /v1/admin/campaigns/{id} takes it; Invalid lists every problem."""
    c = Checker()
    if not c.keys(body, "", CAMPAIGN_KEYS):
        c.done()
    c.text(body, "name", "", required=True, max_len=MAX_NAME, hint="give the campaign a name")
    targets = body.get("targets")
    if targets is None:
        c.error("targets", 'missing; give {"stores": ["*"]} for every store, {"stores": ["<store>", ...]}, '
                           'or {"tags": ["<tag>", ...]}')
    elif c.keys(targets, "targets", ("stores", "tags")):
        stores = c.str_list(targets.get("stores", []), "targets.stores")
        for i, s in enumerate(stores):
            if s != ALL and p.STORE_ID_RE.fullmatch(s) is None:
                c.error(f"targets.stores[{i}]", f"expected a store id or '*', got {show(s)}")
        tags = c.str_list(targets.get("tags", []), "targets.tags", pattern=ID_RE, hint="expected a tag id")
        if not stores and not tags and not c.errors:
            c.error("targets", "no store and no tag: the campaign would reach no store; give stores or tags")
    schedule = body.get("schedule")
    if schedule is not None and c.keys(schedule, "schedule", ("start", "end", "days", "hours")):
        times = {}
        for key in ("start", "end"):
            if schedule.get(key) is not None:
                times[key] = parse_time(schedule[key])
                if times[key] is None:
                    c.error(f"schedule.{key}", f"expected an ISO 8601 time such as 2026-10-01T18:00:00+02:00, "
                                               f"got {show(schedule[key])}")
        start, end = times.get("start"), times.get("end")
        if start is not None and end is not None:
            try:
                if end <= start:
                    c.error("schedule.end", "must be after schedule.start")
            except TypeError:
                c.error("schedule", "give start and end both with a UTC offset, or both without (store time)")
        if "days" in schedule:
            for day in c.str_list(schedule["days"], "schedule.days", allow_one=True):
                if day not in WEEKDAYS:
                    c.error("schedule.days", f"unknown day {day!r}; use {', '.join(WEEKDAYS)}")
        if "hours" in schedule:
            for hours in c.str_list(schedule["hours"], "schedule.hours", allow_one=True):
                if HOURS_RE.fullmatch(hours) is None:
                    c.error("schedule.hours", f"{hours!r}: expected \"HH:MM-HH:MM\" in 24-hour time")
    if "priority" in body and type(body["priority"]) is not int:
        c.error("priority", f"expected a whole number, got {show(body['priority'])}")
    content = body.get("content")
    ids: set[str] = set()
    if type(content) is not list or not 0 < len(content) <= MAX_CONTENT_ITEMS:
        c.error("content", f"expected a list of 1 to {MAX_CONTENT_ITEMS} content items "
                           '[{"id", "template", "title", "body", "image"}]')
        content = []
    for i, item in enumerate(content):
        path = f"content[{i}]"
        if not c.keys(item, path, CONTENT_KEYS):
            continue
        cid = c.text(item, "id", path, required=True, max_len=64, pattern=ID_RE,
                     hint="expected a content id (letters, digits, '_', '.', '-')")
        if cid is not None:
            if cid in ids:
                c.error(f"{path}.id", f"{cid!r} appears twice; each content item needs its own id")
            ids.add(cid)
        c.text(item, "template", path, required=True, max_len=64, hint="name the template that shows it, e.g. "
                                                                         "'message' or 'product'")
        c.text(item, "title", path, max_len=MAX_NAME)
        c.text(item, "body", path)
        c.text(item, "image", path, pattern=SHA256_RE, hint="expected an asset's SHA-256 (64 lowercase hex "
                                                            "digits), uploaded with PUT /v1/admin/assets/<sha256>")
        c.number(item, "duration_s", path, strict=True)
        i18n_block(c, item, path, ("title", "body"))
        if "data" in item and type(item["data"]) is not dict:
            c.error(f"{path}.data", "expected an object")
    rules = body.get("rules", [])
    if type(rules) is not list or len(rules) > MAX_RULES:
        c.error("rules", f"expected a list of at most {MAX_RULES} rules in the [[rules]] shape")
        rules = []
    seen_rules: set[str] = set()
    for i, rule in enumerate(rules):
        check_rule(c, rule, f"rules[{i}]", ids)
        rid = rule.get("id") if isinstance(rule, dict) else None
        if isinstance(rid, str):
            if rid in seen_rules:
                c.error(f"rules[{i}].id", f"{rid!r} appears twice; each rule needs its own id")
            seen_rules.add(rid)
    if p.lone_surrogate(body) is not None:
        c.error(p.lone_surrogate(body) or "body", "a lone surrogate cannot be stored; send valid UTF-8")
    c.done()
    return {"name": body["name"], "targets": {"stores": list(targets.get("stores", [])),
                                              "tags": list(targets.get("tags", []))},
            "schedule": schedule or {}, "priority": body.get("priority", 0), "content": content, "rules": rules}


def images_of(campaign: dict[str, Any]) -> list[str]:
    """The assets a campaign version shows (they must be uploaded before it is saved)."""
    return sorted({item["image"] for item in campaign["content"] if item.get("image")})


# --- products and stores ----------------------------------------------------------------------------------


def validate_product(body: Any) -> dict[str, Any]:
    """A product as PUT /v1/admin/products/{sku} takes it; Invalid lists every problem."""
    c = Checker()
    if not c.keys(body, "", PRODUCT_KEYS):
        c.done()
    c.text(body, "name", "", required=True, max_len=MAX_NAME, hint="give the product's name")
    c.number(body, "price", "", required=True)
    c.text(body, "currency", "", required=True, max_len=3, pattern=CURRENCY_RE,
           hint="expected an ISO 4217 code such as EUR")
    c.text(body, "image", "", pattern=SHA256_RE, hint="expected an asset's SHA-256 (64 lowercase hex digits)")
    c.text(body, "zone", "", max_len=64, pattern=ID_RE, hint="expected a zone id")
    c.text(body, "ean", "", max_len=14, pattern=EAN_RE, hint="expected 8 to 14 digits (EAN/GTIN)")
    c.text(body, "description", "")
    stores = body.get("stores")
    if stores is not None and type(stores) is not dict:
        c.error("stores", 'expected {"<store>": {"price"?: number, "available"?: bool}}')
    for store, override in (stores or {}).items() if type(stores) is dict else ():
        where = f"stores.{str(store)[:64]}"
        if type(store) is not str or p.STORE_ID_RE.fullmatch(store) is None:
            c.error(where, "expected a store id")
        elif c.keys(override, where, ("price", "available")):
            c.number(override, "price", where)
            c.flag(override, "available", where)
    variants = body.get("variants")
    if variants is not None:
        if type(variants) is not list or len(variants) > 200:
            c.error("variants", 'expected a list of at most 200 variants [{"sku", "label", ...}]')
        else:
            skus: set[str] = set()
            for i, variant in enumerate(variants):
                where = f"variants[{i}]"
                if not c.keys(variant, where, VARIANT_PRODUCT_KEYS):
                    continue
                sku = c.text(variant, "sku", where, required=True, max_len=64, pattern=ID_RE, hint="expected a sku")
                if sku in skus:
                    c.error(f"{where}.sku", f"{sku!r} appears twice")
                skus.add(sku or "")
                c.text(variant, "label", where, required=True, max_len=MAX_NAME, hint="e.g. 'size 42'")
                c.number(variant, "price", where)
                c.flag(variant, "available", where)
                c.text(variant, "image", where, pattern=SHA256_RE, hint="expected an asset's SHA-256")
                c.text(variant, "ean", where, max_len=14, pattern=EAN_RE, hint="expected 8 to 14 digits")
    i18n_block(c, body, "", ("name", "description"))
    if p.lone_surrogate(body) is not None:
        c.error(p.lone_surrogate(body) or "body", "a lone surrogate cannot be stored; send valid UTF-8")
    c.done()
    return {k: v for k, v in body.items() if v is not None}


def validate_store(body: Any) -> dict[str, Any]:
    """Store metadata as PUT /v1/admin/stores/{store} takes it (targeting by tag, time zone, language)."""
    c = Checker()
    if not c.keys(body, "", STORE_KEYS):
        c.done()
    c.text(body, "name", "", max_len=MAX_NAME)
    if "tags" in body:
        c.str_list(body["tags"], "tags", pattern=ID_RE, hint="expected a tag (letters, digits, '_', '.', '-')")
    tz = c.text(body, "timezone", "", max_len=64)
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            c.error("timezone", f"unknown time zone {tz!r}; use an IANA name such as Europe/Rome")
    c.text(body, "language", "", max_len=16, pattern=LANGUAGE_RE, hint="expected a language code such as 'it'")
    c.done()
    return {k: v for k, v in body.items() if v is not None}


# --- what a store is sent ---------------------------------------------------------------------------------


def targets_store(targets: dict[str, Any], store: str, tags: list[str]) -> bool:
    stores = targets.get("stores") or []
    return ALL in stores or store in stores or bool(set(targets.get("tags") or []) & set(tags))


def live_version(live: dict[str, int], store: str) -> int | None:
    """The version published at this store: its own staged one, else the one for every target."""
    return live.get(store) or live.get(ALL)


@dataclass(frozen=True, slots=True)
class CampaignState:
    """A campaign as stored: its live map (store or '*' → version), the live maps before each publication
    (what rollback restores), and whether it was withdrawn."""

    id: str
    name: str
    latest: int
    live: dict[str, int]
    history: list[dict[str, int]]
    withdrawn: bool


def resolved_campaign(state: CampaignState, versions: dict[int, dict[str, Any]], store: str,
                      tags: list[str]) -> dict[str, Any] | None:
    """The campaign version live at `store` as the store is sent it, or None (nothing of it may show)."""
    if state.withdrawn:
        return None
    version = live_version(state.live, store)
    body = versions.get(version) if version is not None else None
    if body is None or not targets_store(body["targets"], store, tags):
        return None
    return {"id": state.id, "version": version, "name": body["name"], "priority": body["priority"],
            "schedule": body["schedule"], "content": body["content"], "rules": body["rules"]}


def resolved_product(sku: str, body: dict[str, Any], store: str) -> dict[str, Any]:
    """A product as `store` sells it: its own price and availability applied, other stores' left out."""
    override = (body.get("stores") or {}).get(store) or {}
    out = {k: v for k, v in body.items() if k != "stores"}
    out["sku"] = sku
    if "price" in override:
        out["price"] = override["price"]
    out["available"] = override.get("available", True)
    return out


def store_entry(meta: dict[str, Any]) -> dict[str, Any]:
    return {"name": meta.get("name"), "tags": meta.get("tags") or [], "timezone": meta.get("timezone"),
            "language": meta.get("language")}


def campaign_report(state: CampaignState, versions: dict[int, dict[str, Any]], stores: dict[str, list[str]],
                    status: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per targeted store: the version live there and applied / pending / refused (+ reason), with reach.

    `stores` maps every store the central knows of to its tags; `status` what each store reported."""
    rows = []
    for store in sorted(set(stores) | set(status)):
        live = resolved_campaign(state, versions, store, stores.get(store, []))
        reported = status.get(store) or {}
        if live is None:
            if not reported:
                continue
            state_word, version = "withdrawn", None
        else:
            version = live["version"]
            if reported.get("version") == version and reported.get("state") in ("applied", "refused"):
                state_word = reported["state"]
            else:
                state_word = "pending"
        rows.append({"store": store, "version": version, "state": state_word,
                     "reason": reported.get("reason") if state_word == "refused" else None,
                     "reported_version": reported.get("version"), "reported_at": reported.get("at"),
                     "shown": int(reported.get("shown") or 0), "reached": int(reported.get("reached") or 0)})
    return rows
