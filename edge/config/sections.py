"""The config's sections that are settings, one model each: store, mqtt, db, http, central, qr, privacy, limits.

Every model forbids unknown keys (a typo must never fall back to a default silently) and is frozen.
"""

from __future__ import annotations

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.i18n import DEFAULT_CURRENCY, DEFAULT_LANGUAGE, check_currency, check_language
from sync.clients import parse_networks

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
ENV_PREFIX = "INSTORE_EDGE_"


class StrictModel(BaseModel):
    """Unknown keys are errors; a validated config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreSection(StrictModel):
    id: str = Field(pattern=ID_PATTERN)
    name: str = ""
    timezone: str = "UTC"
    # The language of signage and of pages until a shopper picks another (edge.i18n.LANGUAGES).
    language: str = DEFAULT_LANGUAGE
    # ISO 4217 code of the store's prices ([[products]] price), formatted for each page's language.
    currency: str = DEFAULT_CURRENCY
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

    @field_validator("language")
    @classmethod
    def _supported_language(cls, value: str) -> str:
        return check_language(value)

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        return check_currency(value)


class MqttSection(StrictModel):
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


class DbSection(StrictModel):
    path: str = "instore-edge.db"


class HttpTokens(StrictModel):
    # Length and strength: edge/config/checks.py (check_secrets), like every secret.
    admin: str | None = None
    kiosk: str | None = None
    signage: str | None = None


class HttpSection(StrictModel):
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
        parse_networks(value)
        return value


class CentralSection(StrictModel):
    url: str | None = Field(default=None, pattern=r"^https?://")
    token: str | None = None
    pull_interval_s: float = Field(default=1.0, gt=0)  # pause between long-polls of the change feed
    push_batch: int = Field(default=500, ge=1, le=10000)
    fetch_timeout_ms: int = Field(default=300, ge=10, le=60000)
    # The local profile cache: at most this many shoppers, each kept this long after last seen.
    cache_max_profiles: int = Field(default=5000, ge=10)
    cache_ttl_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # The outbox keeps events while the central store is unreachable; near this bound /readyz degrades.
    # Default: about a week of a busy store's presence and touchpoint events.
    outbox_max_events: int = Field(default=20_000_000, ge=1000)
    # Campaign and product assets from the central store (images, short videos), kept on this device so
    # screens play offline: the folder (default: "<db path>-assets", beside the database) and its bound (MB;
    # beyond it the least recently used go, never one an applied or pending campaign or a product uses).
    assets_dir: str | None = None
    assets_max_mb: int = Field(default=2048, ge=16)


class QrSection(StrictModel):
    secret: str | None = None
    base_url: str = Field(default="http://127.0.0.1:8080", pattern=r"^https?://")
    ttl_s: int = Field(default=30 * 24 * 3600, ge=10)




class PrivacySection(StrictModel):
    retention_days: int = Field(default=30, ge=1)
    require_consent: bool = True


class LimitsSection(StrictModel):
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
