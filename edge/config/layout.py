"""The store's layout: zones, gateways, beacons, screens, kiosks, content and products, one model each."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from edge.config.sections import ID_PATTERN, StrictModel
from edge.i18n import check_language


class ZoneConfig(StrictModel):
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    # Seconds without a sighting after which a subject has left the zone (gateways say nothing on exit).
    exit_after_s: float = Field(default=30.0, gt=0)
    dwell_s: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [60.0])
    # Zone changes (edge/domain/presence.py): evidence that a subject is in another zone builds up while that
    # zone's gateway out-hears this zone's best one (RSSI smoothed per gateway) by more than
    # hysteresis_db (dB; more in a noisy store), at a rate that grows with the lead; a 10 dB lead moves
    # them after switch_after_s seconds (longer when the store's measured noise is above 6 dB), a bigger
    # one sooner, and the challenging gateway needs switch_readings readings first.
    # switch_after_s = 0: a zone leading by hysteresis_db wins at once. Where a zone has one gateway and three
    # or more hear the phone, each reading is weighed instead: switch_after_s scales the log-odds a move
    # needs, hysteresis_db what a standing phone's readings count less.
    hysteresis_db: float = Field(default=1.0, ge=0)
    switch_after_s: float = Field(default=2.0, ge=0)
    switch_readings: int = Field(default=2, ge=1, le=20)
    # Sightings by this zone's gateways weaker than min_rssi (dBm) are ignored: too far away to mean "here".
    min_rssi: float = Field(default=-100.0, ge=-130, le=20)
    # Zones a shopper can walk into straight from this one (either zone's list counts both ways). A move
    # to a zone that does not touch needs more evidence. A zone without the key touches every zone.
    adjacent: list[str] | None = None


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


class GatewayConfig(StrictModel):
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


class BeaconConfig(StrictModel):
    key: str = Field(min_length=3)
    owner: str = ""
    kind: Literal["staff", "asset"] = "staff"
    track: bool = False


class ScreenConfig(StrictModel):
    id: str = Field(pattern=ID_PATTERN)
    zone: str
    playlist: list[str] = Field(default_factory=list)


class KioskConfig(StrictModel):
    id: str = Field(pattern=ID_PATTERN)
    zone: str


def _check_languages(value: dict[str, Any]) -> dict[str, Any]:
    """Per-language texts are keyed by a language the edge speaks (a typo would never show)."""
    for code in value:
        try:
            check_language(code)
        except ValueError as exc:
            raise ValueError(f"{code!r}: {exc}") from None
    return value


class ContentText(StrictModel):
    """A content item's text in one language ([content.i18n.<lang>]); what it leaves out falls back."""

    title: str | None = None
    body: str | None = None


class ContentConfig(StrictModel):
    """An item screens can show: from a playlist or a rule."""

    id: str = Field(pattern=ID_PATTERN)
    template: str = "message"
    title: str = ""
    body: str = ""
    image: str | None = None
    duration_s: float = Field(default=8.0, gt=0)
    # The product it shows: the screen shows its price from the catalogue, and re-renders when it changes.
    sku: str | None = Field(default=None, min_length=1, max_length=128)
    # Per-language text: [content.i18n.it] title = "..." (edge.i18n.localized picks the page's language).
    i18n: dict[str, ContentText] = Field(default_factory=dict)

    @field_validator("i18n")
    @classmethod
    def _supported_languages(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_languages(value)

    def texts(self) -> dict[str, Any]:
        """Title and body with their translations, as edge.i18n.localized reads them."""
        return {"title": self.title, "body": self.body,
                "i18n": {lang: t.model_dump(exclude_none=True) for lang, t in self.i18n.items()}}


# --- Rules (edge/rules.py) --------------------------------------------------------------------------


class ProductText(StrictModel):
    """A product's name in one language ([products.i18n.<lang>])."""

    name: str | None = Field(default=None, min_length=1, max_length=100)


class ProductConfig(StrictModel):
    """A catalogue entry: names the SKUs of wishlists, carts and touched items, and says where they hang."""

    sku: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=100)
    zone: str | None = None
    price: float | None = Field(default=None, ge=0)
    image: str | None = None
    # This entry wins over the central's product of the same SKU (by default the central's wins).
    prefer_local: bool = False
    # Per-language name: [products.i18n.it] name = "..." (the store's currency is [store] currency).
    i18n: dict[str, ProductText] = Field(default_factory=dict)

    @field_validator("i18n")
    @classmethod
    def _supported_languages(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _check_languages(value)

    def texts(self) -> dict[str, Any]:
        """The name with its translations, as edge.i18n.localized reads them."""
        return {"name": self.name, "i18n": {lang: t.model_dump(exclude_none=True) for lang, t in self.i18n.items()}}
