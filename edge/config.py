"""Load and validate the store config (one TOML file) into one typed, immutable object.

Every error is reported at once with its key path and a hint, because store IT fixes a config by reading
the message, not the source. Unknown keys are errors: a typo must never silently fall back to a default.
Secrets may come from the environment: INSTORE_EDGE_<SECTION>_<KEY> (e.g. INSTORE_EDGE_MQTT_PASSWORD,
INSTORE_EDGE_HTTP_TOKENS_ADMIN, INSTORE_EDGE_QR_SECRET, INSTORE_EDGE_CENTRAL_TOKEN); from there or from the
file, a short, placeholder, published, guessable or shared secret is an error unless `[store] demo = true`.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from edge.model import EdgeError
from edge.secret_policy import GENERATE_HINT, MIN_LENGTH, SECRET_KEYS, weakness

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
ENV_PREFIX = "INSTORE_EDGE_"
# What rules can match on: a kind, "kind.type", or a presence event.
EVENT_KINDS = ("beacon", "qr", "window", "kiosk", "pos")
PRESENCE_EVENTS = ("zone_enter", "zone_exit", "zone_dwell", "visit_start", "visit_end")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSection(_Model):
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    timezone: str = "UTC"
    # A demo store (config/demo.toml): example secrets are accepted, as long as it serves this machine only.
    demo: bool = False

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}; use an IANA name such as 'Europe/Rome'") from exc
        return value


class MqttSection(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    tls_ca: str | None = None
    topic_prefix: str = Field(default="instore", pattern=r"^[^#+/][^#+]*$")
    # "embedded" starts the demo's Python broker in-process: for `instore-edge demo` only.
    embedded: bool = False
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    # How long the broker keeps our session (and queues events for us) while the edge is down.
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=60)


class DbSection(_Model):
    path: str = "instore-edge.db"


class HttpTokens(_Model):
    # Length and strength: _check_secrets (edge/secret_policy.py), like every secret.
    admin: str | None = None
    kiosk: str | None = None
    signage: str | None = None


class HttpSection(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    tokens: HttpTokens = HttpTokens()
    # Reverse proxies (addresses or CIDR ranges) whose X-Forwarded-For / X-Real-IP name the client.
    trusted_proxies: list[str] = Field(default_factory=list)
    # Connections open at once; past it the longest-waiting idle or unfinished one is closed.
    connection_limit: int = Field(default=1000, ge=16, le=100_000)
    # Connections one client address may hold (trusted proxies exempt).
    connections_per_client: int = Field(default=64, ge=2)
    # A request (headers and body) must arrive within this many seconds of its first byte.
    request_timeout_s: float = Field(default=20.0, gt=0, le=3600)
    # An idle keep-alive connection is closed after this many seconds.
    idle_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    # Open page streams (signage/kiosk SSE) per client address.
    streams_per_client: int = Field(default=4, ge=1)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        from edge.clients import parse_networks

        parse_networks(value)
        return value


class CentralSection(_Model):
    url: str | None = Field(default=None, pattern=r"^https?://")
    token: str | None = None
    pull_interval_s: float = Field(default=30.0, gt=0)
    push_batch: int = Field(default=500, ge=1, le=10000)
    fetch_timeout_ms: int = Field(default=300, ge=10, le=60000)
    # The local profile cache: at most this many shoppers, each kept this long after last seen.
    cache_max_profiles: int = Field(default=5000, ge=10)
    cache_ttl_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # The outbox keeps events while the central store is unreachable; near this bound /readyz degrades.
    # Default: about a week of a busy store's presence and touchpoint events.
    outbox_max_events: int = Field(default=20_000_000, ge=1000)


class QrSection(_Model):
    secret: str | None = None
    base_url: str = Field(default="http://127.0.0.1:8080", pattern=r"^https?://")
    ttl_s: int = Field(default=30 * 24 * 3600, ge=10)


class ZoneConfig(_Model):
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    # Seconds without a sighting after which a subject has left the zone (gateways say nothing on exit).
    exit_after_s: float = Field(default=30.0, gt=0)
    dwell_s: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [60.0])
    # Hysteresis (edge/presence.py), so a shopper standing between two zones does not flap: another
    # zone takes a subject from this one only while its gateway's smoothed RSSI beats this zone's best
    # by more than hysteresis_db (dB), and only after switch_after_s seconds of a lead of twice that
    # (a bigger lead moves them sooner, down to a quarter of it; a smaller one later) and at least
    # switch_readings sightings. hysteresis_db = 0 and switch_after_s = 0: the best gateway wins at once.
    hysteresis_db: float = Field(default=8.0, ge=0)
    switch_after_s: float = Field(default=3.0, ge=0)
    switch_readings: int = Field(default=3, ge=1, le=20)
    # Sightings by this zone's gateways weaker than min_rssi (dBm) are ignored: too far away to mean "here".
    min_rssi: float = Field(default=-100.0, ge=-130, le=20)


# The topic filter a foreign gateway publishes on when its `topic` is not set: the gateway id is the
# ESPresense room name, or the Theengs Gateway / OpenMQTTGateway gateway name.
GATEWAY_TOPICS = {"espresense": "espresense/devices/+/{id}", "theengs": "home/{id}/BTtoMQTT/+"}


def _check_filter(topic: str) -> str | None:
    """What is wrong with an MQTT topic filter, or None: '+' and '#' fill a whole level, '#' comes last."""
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if not level:
            return "has an empty level"
        if ("+" in level or "#" in level) and len(level) > 1:
            return f"level {level!r} mixes a wildcard with text"
        if level == "#" and i != len(levels) - 1:
            return "has '#' before the last level"
    return None


def _gateway_topic_error(fmt: str, gateway_id: str, topic: str) -> str | None:
    """Why a custom topic cannot carry this foreign gateway's sightings to it, or None.

    The edge routes foreign sightings by topic (ESPresense by the room level, Theengs by the gateway
    level), so the level that names the gateway must be its id or a wildcard.
    """
    problem = _check_filter(topic)
    if problem:
        return f"topic {topic!r} {problem}"
    levels = topic.split("/")
    if fmt == "espresense":
        shape = ("espresense/devices/<device or +>/<room>, with the room level equal to the gateway id "
                 f"{gateway_id!r} (its ESPresense room name) or '+'")
        ok = levels[:2] == ["espresense", "devices"] and (
            levels[2:] == ["#"] or (len(levels) == 4 and levels[3] in (gateway_id, "+", "#")))
    else:
        shape = (f"home/<gateway>/BTtoMQTT/<MAC or +>, with the gateway level equal to the gateway id "
                 f"{gateway_id!r} or '+'")
        ok = len(levels) == 4 and levels[0] == "home" and levels[1] in (gateway_id, "+") \
            and levels[2] == "BTtoMQTT"
    return None if ok else f"topic {topic!r} does not route to this gateway: expected {shape}"


class GatewayConfig(_Model):
    id: str = Field(pattern=ID_PATTERN)
    zone: str
    format: Literal["native", "espresense", "theengs"] = "native"
    # Foreign gateways: defaults to GATEWAY_TOPICS[format]; native gateways always use P/beacon/{id}.
    topic: str | None = Field(default=None, validate_default=True)

    @field_validator("topic")
    @classmethod
    def _foreign_topic(cls, value: str | None, info: ValidationInfo) -> str | None:
        fmt, gateway_id = info.data.get("format"), info.data.get("id")
        if fmt not in GATEWAY_TOPICS or gateway_id is None:
            return value  # native, or a format/id error already reported
        if value is None:
            return GATEWAY_TOPICS[fmt].format(id=gateway_id)
        error = _gateway_topic_error(fmt, gateway_id, value)
        if error:
            raise ValueError(f"{error}; or leave topic out for {GATEWAY_TOPICS[fmt].format(id=gateway_id)!r}")
        return value


class BeaconConfig(_Model):
    key: str = Field(min_length=3)
    owner: str = ""
    kind: Literal["staff", "asset"] = "staff"
    track: bool = False


class ScreenConfig(_Model):
    id: str = Field(pattern=ID_PATTERN)
    zone: str
    playlist: list[str] = Field(default_factory=list)


class KioskConfig(_Model):
    id: str = Field(pattern=ID_PATTERN)
    zone: str


class ContentConfig(_Model):
    """An item screens can show: from a playlist or a rule."""

    id: str = Field(pattern=ID_PATTERN)
    template: str = "message"
    title: str = ""
    body: str = ""
    image: str | None = None
    duration_s: float = Field(default=8.0, gt=0)


# --- Rules (edge/rules.py) --------------------------------------------------------------------------

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


class ProductConfig(_Model):
    """A catalogue entry: names the SKUs of wishlists, carts and touched items, and says where they hang."""

    sku: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=100)
    zone: str | None = None
    price: float | None = Field(default=None, ge=0)
    image: str | None = None


class RuleCap(_Model):
    """At most `count` showings within `within_s` seconds (a sliding window)."""

    count: int = Field(ge=1)
    within_s: float = Field(gt=0)


class RuleVariant(_Model):
    """One arm of an A/B test: shoppers are split by a stable hash, in proportion to `weight`."""

    id: str = Field(pattern=ID_PATTERN)
    weight: float = Field(default=1.0, ge=0)
    content_id: str | None = Field(default=None, pattern=ID_PATTERN)
    template: str | None = None
    # Merged over the rule's show.data (this variant's keys win).
    data: dict[str, Any] = Field(default_factory=dict)


class RuleWhen(_Model):
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


class RuleShow(_Model):
    content_id: str = Field(pattern=ID_PATTERN)
    template: str = "message"
    data: dict[str, Any] = Field(default_factory=dict)
    # Screens that show it; with kiosks also empty, every screen in the zone where the event happened.
    # "@zone": the event zone's screens; "@source": the screen that sent the event (a shop window).
    screens: list[str] = Field(default_factory=list)
    # Kiosks that show it; "@zone": the event zone's kiosks; "@source": the kiosk that sent the event.
    kiosks: list[str] = Field(default_factory=list)


class RuleConfig(_Model):
    id: str = Field(pattern=ID_PATTERN)
    priority: int = 0
    ttl_s: float = Field(default=30.0, gt=0)
    when: RuleWhen = RuleWhen()
    show: RuleShow
    variants: list[RuleVariant] = Field(default_factory=list)
    # Frequency caps: per shopper (customer id, else device/session) and per screen, for this rule.
    cap_per_shopper: RuleCap | None = None
    cap_per_screen: RuleCap | None = None


class PrivacySection(_Model):
    retention_days: int = Field(default=30, ge=1)
    require_consent: bool = True


class LimitsSection(_Model):
    max_payload_bytes: int = Field(default=64 * 1024, ge=1024)
    ingest_batch: int = Field(default=1000, ge=1, le=10000)
    # Largest HTTP request body; refused with 413 before it is read. Default: max_payload_bytes + 64 KiB.
    max_http_body_bytes: int | None = Field(default=None, ge=1024)
    # Requests per client address to the public pages (/q/...): a burst, then a steady rate per second.
    public_burst: int = Field(default=10, ge=1)
    public_rate_per_s: float = Field(default=2.0, gt=0)

    @property
    def http_body_bytes(self) -> int:
        """The HTTP body cap: large enough for POST /api/v1/events to carry a max_payload_bytes event."""
        return self.max_http_body_bytes or self.max_payload_bytes + 64 * 1024


class Config(_Model):
    store: StoreSection
    mqtt: MqttSection = MqttSection()
    db: DbSection = DbSection()
    http: HttpSection = HttpSection()
    central: CentralSection = CentralSection()
    qr: QrSection = QrSection()
    privacy: PrivacySection = PrivacySection()
    limits: LimitsSection = LimitsSection()
    zones: list[ZoneConfig] = Field(default_factory=list)
    gateways: list[GatewayConfig] = Field(default_factory=list)
    beacons: list[BeaconConfig] = Field(default_factory=list)
    screens: list[ScreenConfig] = Field(default_factory=list)
    kiosks: list[KioskConfig] = Field(default_factory=list)
    content: list[ContentConfig] = Field(default_factory=list)
    products: list[ProductConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)

    @property
    def prefix(self) -> str:
        """Topic prefix P = {topic_prefix}/{store_id}."""
        return f"{self.mqtt.topic_prefix}/{self.store.id}"

    def zone(self, zone_id: str) -> ZoneConfig | None:
        return next((z for z in self.zones if z.id == zone_id), None)

    def gateway(self, gateway_id: str) -> GatewayConfig | None:
        return next((g for g in self.gateways if g.id == gateway_id), None)

    def screens_in_zone(self, zone_id: str) -> list[ScreenConfig]:
        return [s for s in self.screens if s.zone == zone_id]

    def content_item(self, content_id: str) -> ContentConfig | None:
        return next((c for c in self.content if c.id == content_id), None)


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file: where it is, what is wrong, how to fix it."""

    path: str
    message: str
    hint: str = ""

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}"
        return f"{text} (hint: {self.hint})" if self.hint else text


class ConfigError(EdgeError):
    """The config file cannot be used; `issues` lists every problem found."""

    def __init__(self, source: str, issues: list[ConfigIssue]) -> None:
        self.source = source
        self.issues = issues
        lines = "\n".join(f"  - {issue}" for issue in issues)
        super().__init__(f"{source}: {len(issues)} problem(s) in the config:\n{lines}")


_HINTS = {
    "extra_forbidden": "check its spelling against config/store.example.toml",
    "missing": "this key is required",
    "int_parsing": "write a whole number without quotes",
    "int_type": "write a whole number without quotes",
    "float_parsing": "write a number without quotes",
    "bool_parsing": "write true or false without quotes",
    "bool_type": "write true or false without quotes",
    "string_type": "write a quoted string",
    "string_pattern_mismatch": "ids use letters, digits, '-', '_' and '.'; URLs start with http:// or https://",
    "literal_error": "use one of the listed values",
    "list_type": "write a list, e.g. [\"a\", \"b\"]",
    "model_type": "write a table ([section]) here",
}


_SECRET_KEYS = {"password", "tokens", "token", "secret"}


def _loc_to_path(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """Turn pydantic's location into a key path a person can find in the file: zones[2].id."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            label = ""
            if isinstance(node, list) and 0 <= item < len(node) and isinstance(node[item], dict):
                ident = node[item].get("id") or node[item].get("key")
                label = f" (id {ident!r})" if isinstance(ident, str) else ""
            parts[-1] = f"{parts[-1]}[{item}]{label}" if parts else f"[{item}]"
            node = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts) or "(top level)"


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the schema allows in the table that holds loc[-1]."""
    model: Any = Config
    for item in loc[:-1]:
        if isinstance(item, int):
            continue
        field = model.model_fields.get(item) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = field.annotation
        if get_origin(model) is list:
            model = get_args(model)[0]
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _issues_from_validation(exc: ValidationError, data: dict[str, Any],
                            from_env: dict[tuple[str, ...], str] | None = None) -> list[ConfigIssue]:
    issues = []
    unions_seen: set[tuple[Any, ...]] = set()
    for err in exc.errors():
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and x.startswith("function-")))
        union = any(x in ("str", "list[str]") for x in loc)
        loc = tuple(x for x in loc if x not in ("str", "list[str]"))
        message = err["msg"].removeprefix("Value error, ")
        hint = _HINTS.get(err["type"], "")
        secret = any(isinstance(x, str) and x in _SECRET_KEYS for x in loc)
        if union:
            # Pydantic reports a str|list[str] mismatch once per member: report it once.
            if loc in unions_seen:
                continue
            unions_seen.add(loc)
            if err["type"] in ("string_type", "list_type"):
                message, hint = "should be a string or a list of strings", 'e.g. "entrance" or ["entrance", "fitting"]'
        if err["type"] == "extra_forbidden":
            message = "unknown key"
            known = _known_keys(loc)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = (f"did you mean {close[0]!r}? " if close else "") + \
                (f"keys allowed here: {', '.join(known)}" if known else hint)
        elif "input" in err and err["type"] not in ("missing", "value_error") \
                and not isinstance(err["input"], dict | list) and not secret:
            # (value_error messages come from our validators, which already name the value.)
            message = f"{message} (got {err['input']!r})"
        env_var = (from_env or {}).get(tuple(x for x in loc if isinstance(x, str)))
        if env_var:
            message = f"{message} (value from the environment variable {env_var})"
        issues.append(ConfigIssue(_loc_to_path(loc, data), message, hint))
    seen: set[tuple[str, str]] = set()
    unique = []
    for issue in issues:
        if (issue.path, issue.message) not in seen:
            seen.add((issue.path, issue.message))
            unique.append(issue)
    return unique


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


def _cross_check(data: dict[str, Any]) -> list[ConfigIssue]:
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
    issues += _check_products(data, zone_ids, known_zones)
    issues += _check_rules(data, ids, zone_ids, known_zones)
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


def _check_secrets(data: dict[str, Any], from_env: dict[tuple[str, ...], str]) -> list[ConfigIssue]:
    """Every secret long, unguessable, unpublished and its own (edge/secret_policy.py); never echoed.

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


def _apply_env(data: dict[str, Any], model: type[BaseModel], env: dict[str, str], path: list[str],
               applied: dict[tuple[str, ...], str] | None = None) -> dict[tuple[str, ...], str]:
    """Overlay INSTORE_EDGE_<SECTION>_<KEY> environment values on scalar keys of table sections.

    Returns {key path: variable} for the values taken from the environment. An empty variable is unset.
    """
    applied = {} if applied is None else applied
    for name, field in model.model_fields.items():
        annotation = field.annotation
        key_path = [*path, name]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sub = data.get(name)
            if sub is None:
                sub = {}
            if isinstance(sub, dict):
                _apply_env(sub, annotation, env, key_path, applied)
                if sub:
                    data[name] = sub
            continue
        var = ENV_PREFIX + "_".join(key_path).upper()
        if env.get(var):
            data[name] = env[var]
            applied[tuple(key_path)] = var
    return applied


def parse_config(data: dict[str, Any], source: str = "<config>", env: dict[str, str] | None = None) -> Config:
    """Validate a config mapping; raise ConfigError listing every problem."""
    data = copy.deepcopy(data)  # the environment overlay must not write into the caller's tables
    from_env = _apply_env(data, Config, dict(os.environ) if env is None else env, [])
    issues: list[ConfigIssue] = []
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        issues = _issues_from_validation(exc, data, from_env)
    issues += _cross_check(data)
    issues += _check_secrets(data, from_env)
    if issues:
        raise ConfigError(source, issues)
    return cfg


def load_config(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Config:
    """Read and validate a TOML config file; relative db paths are taken from the config's folder."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(p), [ConfigIssue("(file)", "file not found",
                                               "copy config/store.example.toml and edit it")]) from None
    except OSError as exc:
        raise ConfigError(str(p), [ConfigIssue("(file)", f"cannot read: {exc.strerror}")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(str(p), [ConfigIssue("(file)", "not UTF-8 text", "save the file as UTF-8")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(p), [ConfigIssue("(syntax)", str(exc),
                                               "check quotes, brackets and '=' on that line")]) from None
    db = data.get("db")
    if isinstance(db, dict) and isinstance(db.get("path"), str) and not os.path.isabs(db["path"]) \
            and db["path"] != ":memory:" and not db["path"].startswith("file:"):
        data = {**data, "db": {**db, "path": str((p.parent / db["path"]).resolve())}}
    return parse_config(data, str(p), env)
