"""What each display (a screen, or a kiosk) shows now: rule content until it expires, else its fallback.

Displays are driven by state, not by messages: the current content of every display is kept in the
`displays` table and published retained on `P/display/{display}/content`, so a display that (re)connects,
an edge that restarts, or a broker that comes back always converges on the right content. The pipeline
owns this object: decisions, expiries and erasures change it in its writer thread, and it persists and
publishes what changed (`take_changes`) after each commit.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edge.config import Config
from edge.domain.content import content_data
from edge.model import FALLBACK_PRIORITY, SCREEN, Decision, Publication

PLAYLIST_CONTENT_ID = "playlist"
KIOSK_IDLE_CONTENT_ID = "kiosk-idle"


@dataclass(slots=True)
class Showing:
    payload: dict[str, Any]
    priority: int
    expires_at: float | None


def _iso_ms(ts: float | None) -> int | None:
    return None if ts is None else int(ts * 1000)


class Displays:
    """Current content per display. Mutated only by the pipeline thread; read by HTTP/SSE under a lock."""

    def __init__(self, cfg: Config, rows: list[dict] | None = None) -> None:
        self.cfg = cfg
        self.prefix = cfg.prefix
        self.lock = threading.Lock()
        self.current: dict[str, Showing] = {}
        self.changed: dict[str, dict[str, Any]] = {}  # back to their fallback since take_changes
        self.screen_ids = {s.id for s in cfg.screens}
        self.known = self.screen_ids | {k.id for k in cfg.kiosks}
        self.campaign_items: list[dict[str, Any]] = []  # the applied campaigns' playlist items, before the screen's
        self.current = self._restore(rows or [])

    def _restore(self, rows: list[dict]) -> dict[str, Showing]:
        current = {}
        for r in rows:
            if r["screen"] in self.known:
                current[r["screen"]] = Showing(json.loads(r["payload"]), r["priority"], r["expires_at"])
        for ident in self.known:
            current.setdefault(ident, Showing(self.fallback(ident), FALLBACK_PRIORITY, None))
        return current

    def reload(self, rows: list[dict]) -> None:
        """Take the stored content again (after a rolled-back transaction), in place: what displays show is
        what committed."""
        current = self._restore(rows)
        with self.lock:
            self.current = current
            self.changed.clear()

    def fallback(self, screen: str) -> dict[str, Any]:
        """The screen's playlist, as the content to show when no rule is active (a kiosk: its own UI)."""
        conf = next((s for s in self.cfg.screens if s.id == screen), None)
        if conf is None:
            return {"content_id": KIOSK_IDLE_CONTENT_ID, "template": "kiosk-idle", "data": {},
                    "reason": "no rule is active on this kiosk", "expires_at": None, "screen": screen,
                    "target": "kiosk"}
        items = [dict(i) for i in self.campaign_items]
        for cid in conf.playlist:
            item = self.cfg.content_item(cid)
            if item is None:
                items.append({"content_id": cid, "template": "message", "title": cid, "body": "", "image": None,
                              "duration_s": 8.0})
            else:
                items.append({"content_id": item.id, "template": item.template, "image": None,
                              **content_data(item, self.cfg.store.language), "duration_s": item.duration_s})
        return {"content_id": PLAYLIST_CONTENT_ID, "template": "playlist", "data": {"items": items},
                "reason": "fallback playlist: no rule is active on this screen", "expires_at": None,
                "screen": screen}

    def apply(self, d: Decision) -> dict[str, Any] | None:
        """Show a decision unless a higher-priority, unexpired content holds the screen; returns the payload."""
        cur = self.current.get(d.display)
        if cur is not None and cur.expires_at is not None and cur.expires_at > d.ts and cur.priority > d.priority:
            return None
        payload: dict[str, Any] = {"content_id": d.content_id, "template": d.template, "data": d.data,
                                   "reason": d.reason, "rule": d.rule_id, "expires_at": _iso_ms(d.expires_at),
                                   "screen": d.display, "ts": _iso_ms(d.ts)}
        if d.customer:
            payload["customer"] = d.customer
        if d.target != SCREEN:
            payload["target"] = d.target
        with self.lock:
            self.current[d.display] = Showing(payload, d.priority, d.expires_at)
        self.changed.pop(d.display, None)  # the decision's content, not an earlier fallback, is what it shows
        return payload

    def set_campaign_items(self, items: list[dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> None:
        """The central store's campaigns changed (edge.domain.campaigns): screens playing their playlist take the
        new one; a display showing content that `keep` refuses (its campaign withdrawn, or out of its schedule)
        returns to its fallback. Published like any change (take_changes)."""
        self.campaign_items = list(items)
        for screen, cur in list(self.current.items()):
            if cur.priority == FALLBACK_PRIORITY:
                if screen in self.screen_ids and cur.payload != self.fallback(screen):
                    self._fall_back(screen)
            elif not keep(cur.payload):
                self._fall_back(screen)

    def expire(self, now: float) -> None:
        """Displays whose content ran out return to their fallback (see take_changes)."""
        for screen, cur in list(self.current.items()):
            if cur.expires_at is not None and cur.expires_at <= now:
                self._fall_back(screen)

    def forget(self, customer: str, keys: Sequence[str] = ()) -> None:
        """Erasure, or a revoked consent: displays showing this customer's content return to their fallback."""
        for screen, cur in list(self.current.items()):
            if cur.payload.get("customer") == customer:
                self._fall_back(screen)

    def _fall_back(self, screen: str) -> None:
        payload = self.fallback(screen)
        with self.lock:
            self.current[screen] = Showing(payload, FALLBACK_PRIORITY, None)
        self.changed[screen] = payload

    def take_changes(self) -> list[tuple[str, dict[str, Any]]]:
        """Displays back to their fallback since the last call: to store (FALLBACK_PRIORITY) and publish."""
        out = list(self.changed.items())
        self.changed.clear()
        return out

    def snapshot(self, screen: str) -> dict[str, Any] | None:
        with self.lock:
            cur = self.current.get(screen)
            return dict(cur.payload) if cur else None

    def all(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {k: dict(v.payload) for k, v in self.current.items()}

    def publication(self, screen: str, payload: dict[str, Any]) -> Publication:
        """The retained message that tells a display (and anything watching it) what it shows."""
        return Publication(f"{self.prefix}/display/{screen}/content", payload, retain=True)

    def publications(self) -> list[Publication]:
        """What every display shows, as retained messages: sent after every (re)connect to the broker."""
        return [self.publication(screen, payload) for screen, payload in self.all().items()]
