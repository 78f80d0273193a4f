"""What crosses the edge's boundaries, named once: events, decisions, publications, inbound messages,
the reason codes of refusals, and the one exception base every edge error derives from.

The leaf of the package: it imports nothing from `edge`, so every other module may import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class EdgeError(Exception):
    """Base of every error the edge raises on purpose (bad input, bad config, an unusable file...)."""


# Reason codes of dead letters (P/deadletter, the deadletters table, instore_edge_deadletters_total{reason}):
# metric label values, so short and stable.
NOT_UTF8 = "not_utf8"
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
INVALID_VALUE = "invalid_value"
OVERSIZED = "oversized"
UNKNOWN_TOPIC = "unknown_topic"
UNKNOWN_GATEWAY = "unknown_gateway"
INTERNAL_ERROR = "internal_error"  # processing the message raised (a bug: see the log)
QUARANTINED = "quarantined"  # the message was in flight when the edge died, twice

# Reason codes of ignored messages (instore_edge_ignored_total{reason}): valid, deliberately not stored.
ANONYMOUS_DEVICE = "anonymous_device"  # no stable identity: rotating MAC, ESPresense fingerprint, phone
UNSUPPORTED_FRAME = "unsupported_frame"  # a beacon format the edge does not store (Eddystone-URL/TLM, AltBeacon)
UNDECODABLE_FRAME = "undecodable_frame"  # raw advertising data that is garbled or cut short
UNKNOWN_GATEWAY_STATUS = "unknown_gateway_status"  # a status topic of a node that is not in the config

# What devices send (the MQTT topics under P, and the kinds rules match on), and what gateways report of themselves.
EVENT_KINDS = ("beacon", "qr", "window", "kiosk", "pos")
GATEWAY_STATUS = "gateway_status"  # a foreign gateway node went online/offline (from its status topic)

# The priority of what a display shows when no rule holds it (its playlist, a kiosk's own UI): any rule wins.
FALLBACK_PRIORITY = -(10**9)

# Where a decision shows: a screen (signage) or a kiosk.
SCREEN = "screen"
KIOSK = "kiosk"


class Rejected(EdgeError):
    """A message that cannot become an event; `reason` is a code, `detail` says what to fix."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Ignored(EdgeError):
    """A valid message that is deliberately not stored; `reason` is a short code for the metrics."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Event:
    """One thing that happened in the store, normalized from any wire format."""

    event_id: str
    kind: str
    source: str
    ts: float
    received_at: float
    zone: str | None = None
    subject: str | None = None
    customer: str | None = None
    type: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    known_device: bool = True

    @property
    def name(self) -> str:
        """What rules match on: the kind, or kind.type for typed events (kiosk.identify)."""
        return f"{self.kind}.{self.type}" if self.type else self.kind


@dataclass(frozen=True, slots=True)
class Decision:
    """What one display (a screen, or a kiosk: `target` says which) should show because of one event, and why.

    `reason` is a sentence for people; `extra` the same as data (rule, matched inputs, variant) for
    `GET /api/v1/decisions`, where the display id is the column `screen`. `customer` is set only when the
    content is personal.
    """

    display: str
    content_id: str
    template: str
    data: dict[str, Any]
    rule_id: str
    priority: int
    reason: str
    ts: float
    expires_at: float | None
    event_id: str | None = None
    zone: str | None = None
    customer: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    target: str = SCREEN


@dataclass(frozen=True, slots=True)
class Publication:
    """An MQTT message the edge sends once the transaction that caused it has committed."""

    topic: str
    payload: dict[str, Any]
    retain: bool = False


@dataclass(slots=True)
class Message:
    """A received message, stamped with the connection it came on (acks are only valid on that one), or a
    write task for the pipeline's writer (`task`), which runs it in its transaction."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    received_at: float
    generation: int = 0
    dup: bool = False
    task: Callable[..., None] | None = None
    done: Callable[[], None] | None = None  # for HTTP-submitted events and tasks: called after the commit
    outcome: str | None = None  # the dead-letter reason, when the pipeline dead-lettered it (HTTP answers with it)
