"""Zone presence: which subject is in which zone, with enter and exit events.

A sighting puts its subject in the zone of the gateway that heard it. Gateways say nothing when someone
leaves, so exit is inferred from silence (`exit_after_s` of the zone) by `expire`, which the pipeline
calls on every batch and on idle ticks. State is kept in memory and mirrored to the `presence` table in
the same transaction as the events that changed it, so it survives a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.config import Config
from edge.events import Event

ENTER = "zone_enter"
EXIT = "zone_exit"


@dataclass(slots=True)
class Presence:
    subject: str
    zone: str
    gateway: str
    entered_at: float
    last_seen: float
    customer: str | None = None

    def row(self) -> tuple[str, str, str, float, float, str | None]:
        return (self.subject, self.zone, self.gateway, self.entered_at, self.last_seen, self.customer)


class PresenceTracker:
    """Per-subject zone state; `observe` and `expire` return the derived presence events."""

    def __init__(self, cfg: Config, rows: list[dict] | None = None) -> None:
        self.cfg = cfg
        self.exit_after = {z.id: z.exit_after_s for z in cfg.zones}
        self.ignored = {b.key for b in cfg.beacons if not b.track}
        self.state: dict[str, Presence] = {}
        for r in rows or []:
            self.state[r["subject"]] = Presence(r["subject"], r["zone"], r["gateway"], r["entered_at"],
                                                r["last_seen"], r.get("customer"))
        self.dirty: set[str] = set()
        self.gone: set[str] = set()

    def observe(self, event: Event) -> list[Event]:
        """Apply one sighting; returns enter/exit events when the subject changed zone."""
        if event.kind != "beacon" or not event.subject or not event.zone or event.subject in self.ignored:
            return []
        now = event.received_at
        cur = self.state.get(event.subject)
        out: list[Event] = []
        if cur is not None and cur.zone == event.zone:
            cur.last_seen = max(cur.last_seen, now)
            cur.gateway = event.source
        else:
            if cur is not None:
                out.append(self._derived(EXIT, cur, now, now - cur.entered_at))
            cur = Presence(event.subject, event.zone, event.source, now, now, event.customer)
            self.state[event.subject] = cur
            out.append(self._derived(ENTER, cur, now, 0.0))
        self.dirty.add(event.subject)
        self.gone.discard(event.subject)
        return out

    def expire(self, now: float) -> list[Event]:
        """Subjects silent for longer than their zone's exit_after_s have left."""
        out = []
        for subject, cur in list(self.state.items()):
            if now - cur.last_seen > self.exit_after.get(cur.zone, 30.0):
                del self.state[subject]
                self.dirty.discard(subject)
                self.gone.add(subject)
                out.append(self._derived(EXIT, cur, cur.last_seen, cur.last_seen - cur.entered_at))
        return out

    def take_changes(self) -> tuple[list[tuple], list[str]]:
        """Rows to upsert and subjects to delete since the last call (for the pipeline's transaction)."""
        rows = [self.state[s].row() for s in self.dirty if s in self.state]
        gone = list(self.gone)
        self.dirty.clear()
        self.gone.clear()
        return rows, gone

    def zone_of(self, subject: str) -> str | None:
        cur = self.state.get(subject)
        return cur.zone if cur else None

    def _derived(self, kind: str, p: Presence, ts: float, dwell_s: float) -> Event:
        return Event(
            event_id=f"p:{kind}:{p.subject}:{p.zone}:{int(ts * 1000)}",
            kind=kind, source=p.gateway, ts=ts, received_at=ts, zone=p.zone, subject=p.subject,
            customer=p.customer, data={"dwell_s": round(dwell_s, 3)},
        )
