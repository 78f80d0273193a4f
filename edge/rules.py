"""Personalization rules: an event in a zone → content on screens, each decision with its reason.

Rules come from the store config. `decide` is called for every recorded event; for each screen the
highest-priority matching rule wins. Conditions live in `matches` so new ones (segments, dwell, time
of day, consent...) add a clause there without changing the engine's shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge.config import Config, RuleConfig
from edge.events import Event


@dataclass(frozen=True, slots=True)
class Decision:
    """What one screen should show because of one event, and why."""

    screen: str
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


def _as_set(value: str | list[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset([value] if isinstance(value, str) else value)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    rule: RuleConfig
    zones: frozenset[str] | None
    events: frozenset[str] | None

    def matches(self, event: Event) -> bool:
        if self.zones is not None and event.zone not in self.zones:
            return False
        if self.events is not None and event.kind not in self.events and event.name not in self.events:
            return False
        return True


class RuleEngine:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        compiled = [CompiledRule(r, _as_set(r.when.zone), _as_set(r.when.event)) for r in cfg.rules]
        # Highest priority first; config order breaks ties, so the file reads top-down.
        self.rules = sorted(compiled, key=lambda c: -c.rule.priority)
        self.screens_by_zone: dict[str, list[str]] = {}
        for s in cfg.screens:
            self.screens_by_zone.setdefault(s.zone, []).append(s.id)
        # Index by event kind so most events look at few rules.
        self.by_kind: dict[str, list[CompiledRule]] = {}
        self.any_kind: list[CompiledRule] = []
        for c in self.rules:
            if c.events is None:
                self.any_kind.append(c)
            else:
                for name in c.events:
                    self.by_kind.setdefault(name.split(".", 1)[0], []).append(c)

    def candidates(self, event: Event) -> list[CompiledRule]:
        specific = self.by_kind.get(event.kind, [])
        if not self.any_kind:
            return specific
        return sorted({id(c): c for c in specific + self.any_kind}.values(), key=lambda c: -c.rule.priority)

    def decide(self, event: Event, now: float) -> list[Decision]:
        """The decisions this event causes: at most one per screen, the best rule's."""
        if event.kind == "gateway_status" or (event.data and (event.data.get("staff") or event.data.get("asset"))):
            return []  # infrastructure and staff never drive content
        taken: set[str] = set()
        out: list[Decision] = []
        for c in self.candidates(event):
            if not c.matches(event):
                continue
            rule = c.rule
            screens = rule.show.screens or self.screens_by_zone.get(event.zone or "", [])
            reason = f"rule {rule.id}: {event.name}" + (f" in zone {event.zone}" if event.zone else "")
            for screen in screens:
                if screen in taken:
                    continue
                taken.add(screen)
                out.append(Decision(
                    screen=screen, content_id=rule.show.content_id, template=rule.show.template,
                    data=dict(rule.show.data), rule_id=rule.id, priority=rule.priority, reason=reason, ts=now,
                    expires_at=now + rule.ttl_s, event_id=event.event_id, zone=event.zone,
                ))
        return out
