"""Checks across sections that no one field's schema can make: ids unique, references known, rules sound,
secrets strong.

They read the raw data, not the validated model, so they run (and report) even when some keys have schema
errors: every problem comes out in one run. (A pydantic model validator would run only once every field
is valid, and report its first problem alone.)
"""

from __future__ import annotations

from typing import Any

from edge.config.issues import ConfigIssue
from edge.config.rules import (PERSONAL_PLACEHOLDERS, PRESENCE_EVENTS, TARGET_TOKENS, data_placeholders,
                               template_fields)
from edge.config.secrets import GENERATE_HINT, MIN_LENGTH, SECRET_KEYS, weakness
from edge.config.sections import ENV_PREFIX, HttpSection
from edge.model import EVENT_KINDS


def _tables(data: dict[str, Any], name: str) -> list[tuple[int, dict[str, Any]]]:
    items = data.get(name)
    return [(i, t) for i, t in enumerate(items) if isinstance(t, dict)] if isinstance(items, list) else []


def _where(section: str, i: int, table: dict[str, Any]) -> str:
    ident = table.get("id")
    return f"{section}[{i}] (id {ident!r})" if isinstance(ident, str) else f"{section}[{i}]"


def _str_list(value: Any) -> list[str]:
    """A str | list[str] key as a list; values of the wrong type are the schema's to report."""
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _known_event(name: str) -> bool:
    kind, dot, type_ = name.partition(".")
    return name in PRESENCE_EVENTS or (kind in EVENT_KINDS and (not dot or bool(type_)))


def cross_check(data: dict[str, Any]) -> list[ConfigIssue]:
    """Checks between sections that one field's schema cannot make.

    They read the raw data, not the validated model, so they run (and report) even when some keys have
    schema errors: every problem comes out in one run.
    """
    issues: list[ConfigIssue] = []
    ids: dict[str, set[str]] = {}
    for section in ("zones", "gateways", "screens", "kiosks", "content", "rules"):
        seen: set[str] = set()
        for i, table in _tables(data, section):
            ident = table.get("id")
            if not isinstance(ident, str):
                continue
            if ident in seen:
                issues.append(ConfigIssue(f"{_where(section, i, table)}.id", f"duplicate id {ident!r}",
                                          "every id must be unique"))
            seen.add(ident)
        ids[section] = seen
    zone_ids = ids["zones"]
    known_zones = ", ".join(t["id"] for _, t in _tables(data, "zones") if isinstance(t.get("id"), str)) \
        or "none defined"
    for section in ("gateways", "screens", "kiosks"):
        for i, table in _tables(data, section):
            zone = table.get("zone")
            if isinstance(zone, str) and zone not in zone_ids:
                issues.append(ConfigIssue(f"{_where(section, i, table)}.zone", f"unknown zone {zone!r}",
                                          f"use a zone defined in [[zones]] ({known_zones})"))
    for i, table in _tables(data, "screens"):
        playlist = table.get("playlist", [])
        if playlist == []:
            issues.append(ConfigIssue(f"{_where('screens', i, table)}.playlist", "empty playlist",
                                      "list at least one content id: the screen shows it when no rule matches"))
    issues += _check_adjacent(data, zone_ids, known_zones)
    issues += _check_products(data, zone_ids, known_zones)
    issues += _check_rules(data, ids, zone_ids, known_zones)
    return issues


def _check_adjacent(data: dict[str, Any], zone_ids: set[str], known_zones: str) -> list[ConfigIssue]:
    """[[zones]] adjacent names other zones of the store."""
    issues = []
    for i, table in _tables(data, "zones"):
        for zone in _str_list(table.get("adjacent", [])):
            if zone not in zone_ids:
                issues.append(ConfigIssue(f"{_where('zones', i, table)}.adjacent", f"unknown zone {zone!r}",
                                          f"use a zone defined in [[zones]] ({known_zones})"))
            elif zone == table.get("id"):
                issues.append(ConfigIssue(f"{_where('zones', i, table)}.adjacent", f"zone {zone!r} lists itself",
                                          "list only the other zones a shopper can walk into from this one"))
    return issues


def _check_products(data: dict[str, Any], zone_ids: set[str], known_zones: str) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    skus: set[str] = set()
    for i, table in _tables(data, "products"):
        sku = table.get("sku")
        where = f"products[{i}] (sku {sku!r})" if isinstance(sku, str) else f"products[{i}]"
        if isinstance(sku, str):
            if sku in skus:
                issues.append(ConfigIssue(f"{where}.sku", f"duplicate sku {sku!r}", "every sku must be unique"))
            skus.add(sku)
        zone = table.get("zone")
        if isinstance(zone, str) and zone not in zone_ids:
            issues.append(ConfigIssue(f"{where}.zone", f"unknown zone {zone!r}",
                                      f"use a zone defined in [[zones]] ({known_zones}), or leave zone out"))
    return issues


def _check_rule_data(value: Any, path: str) -> list[ConfigIssue]:
    """Placeholders in a rule's (or variant's) data: known names, no format specs, balanced braces."""
    issues: list[ConfigIssue] = []
    if isinstance(value, str):
        try:
            template_fields(value)
        except ValueError as exc:
            issues.append(ConfigIssue(path, str(exc), "placeholders are filled from the shopper's context"))
    elif isinstance(value, dict):
        for key, inner in value.items():
            issues += _check_rule_data(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            issues += _check_rule_data(inner, f"{path}[{index}]")
    return issues


def _check_rules(data: dict[str, Any], ids: dict[str, set[str]], zone_ids: set[str],
                 known_zones: str) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    products_with_zone = any(isinstance(t.get("zone"), str) for _, t in _tables(data, "products"))
    for i, table in _tables(data, "rules"):
        where = _where("rules", i, table)
        when = table.get("when") if isinstance(table.get("when"), dict) else {}
        show = table.get("show") if isinstance(table.get("show"), dict) else {}
        zones = _str_list(when.get("zone"))
        for zone in zones:
            if zone not in zone_ids:
                issues.append(ConfigIssue(f"{where}.when.zone", f"unknown zone {zone!r}",
                                          f"use a zone defined in [[zones]] ({known_zones})"))
        for key in ("event", "recent_event"):
            for event in _str_list(when.get(key)):
                if not _known_event(event):
                    issues.append(ConfigIssue(
                        f"{where}.when.{key}", f"unknown event {event!r}",
                        f"use {', '.join(EVENT_KINDS)}, 'kind.type' such as 'kiosk.identify', "
                        f"or {', '.join(PRESENCE_EVENTS)}"))
        if when.get("wishlist_in_zone") is not None and not products_with_zone:
            issues.append(ConfigIssue(f"{where}.when.wishlist_in_zone", "no product has a zone",
                                      "list the products with their zone in [[products]] (sku, name, zone): "
                                      "profiles carry only SKUs"))
        if "recent_within_s" in when and when.get("recent_event") in (None, []):
            issues.append(ConfigIssue(f"{where}.when.recent_within_s", "recent_within_s without recent_event",
                                      "set recent_event, e.g. \"window.touch\", or remove recent_within_s"))
        for key, known, kind in (("screens", ids["screens"], "screen"), ("kiosks", ids["kiosks"], "kiosk")):
            for target in _str_list(show.get(key)):
                if target not in known and target not in TARGET_TOKENS:
                    section = "[[screens]]" if kind == "screen" else "[[kiosks]]"
                    issues.append(ConfigIssue(f"{where}.show.{key}", f"unknown {kind} {target!r}",
                                              f"use a {kind} defined in {section}, \"@zone\" or \"@source\""))
        if isinstance(table.get("show"), dict) and show.get("screens", []) == [] and show.get("kiosks", []) == [] \
                and when.get("zone") in (None, []):
            issues.append(ConfigIssue(f"{where}.show.screens", "no screen to show on",
                                      "name screens in show.screens (or kiosks in show.kiosks), or restrict "
                                      "when.zone so the zone's screens are used"))
        issues += _check_rule_data(show.get("data"), f"{where}.show.data")
        if when.get("known") is False:
            personal = [k for k in ("segments", "tier", "wishlist_in_zone", "cart_not_empty", "orders_ready")
                        if when.get(k) is not None]
            try:
                personal += sorted(data_placeholders([show.get("data")] + [v.get("data") for v in
                                   table.get("variants") or [] if isinstance(v, dict)]) & set(PERSONAL_PLACEHOLDERS))
            except ValueError:
                pass  # reported above
            if personal:
                issues.append(ConfigIssue(f"{where}.when.known", "known = false never matches a rule that uses "
                                          f"the customer's profile ({', '.join(personal)})",
                                          "remove known = false, or the customer conditions and placeholders"))
        variants = table.get("variants")
        if isinstance(variants, list) and variants:
            seen: set[str] = set()
            total = 0.0
            for j, variant in enumerate(variants):
                if not isinstance(variant, dict):
                    continue
                vid = variant.get("id")
                if isinstance(vid, str):
                    if vid in seen:
                        issues.append(ConfigIssue(f"{where}.variants[{j}].id", f"duplicate variant id {vid!r}",
                                                  "every variant of a rule needs its own id"))
                    seen.add(vid)
                weight = variant.get("weight", 1.0)
                if isinstance(weight, int | float) and not isinstance(weight, bool):
                    total += max(0.0, float(weight))
                issues += _check_rule_data(variant.get("data"), f"{where}.variants[{j}].data")
            if total <= 0:
                issues.append(ConfigIssue(f"{where}.variants", "every variant has weight 0",
                                          "give at least one variant a weight above 0"))
    return issues


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1", "[::1]") or host.startswith("127.")


def check_secrets(data: dict[str, Any], from_env: dict[tuple[str, ...], str]) -> list[ConfigIssue]:
    """Every secret long, unguessable, unpublished and its own (edge/config/secrets.py); never echoed.

    A demo store (`[store] demo = true`) may keep example values, but only while it listens on this
    machine: example tokens are printed in a public repository."""
    store = data.get("store") if isinstance(data.get("store"), dict) else {}
    demo = store.get("demo") is True
    context = tuple(v for v in (store.get("id"), store.get("name")) if isinstance(v, str))
    issues: list[ConfigIssue] = []
    owner: dict[str, str] = {}
    weak_in_demo: list[str] = []
    for key in SECRET_KEYS:
        node: Any = data
        for part in key:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str):
            continue  # unset, or the wrong type (the schema reports that)
        path = ".".join(key)
        env_var = from_env.get(key)
        source = f" (value from the environment variable {env_var})" if env_var else ""
        hint = f"{GENERATE_HINT}; set it here or in {ENV_PREFIX}{'_'.join(key).upper()}"
        if node in owner:
            issues.append(ConfigIssue(path, f"is the same as {owner[node]}{source}",
                                      f"each role and service needs its own secret: {hint}"))
        owner.setdefault(node, path)
        why = weakness(node, context)
        if why is None:
            continue
        if demo and len(node) >= MIN_LENGTH:
            weak_in_demo.append(path)
            continue
        issues.append(ConfigIssue(path, f"{why}{source}", hint))
    http = data.get("http") if isinstance(data.get("http"), dict) else {}
    host = http.get("host", HttpSection.model_fields["host"].default)
    if weak_in_demo and isinstance(host, str) and not _is_loopback(host):
        issues.append(ConfigIssue(
            "http.host", f"a demo store (store.demo = true) with example secrets ({', '.join(weak_in_demo)}) "
            "must listen on this machine only",
            f'set http.host = "127.0.0.1", or replace those secrets and remove store.demo ({GENERATE_HINT})'))
    return issues
