"""Gateway health: the state each gateway's status topic reports, and when each last heard anything."""

from __future__ import annotations

import logging
import time
from typing import Any

from edge.config import Config
from edge.model import GATEWAY_STATUS, Event

log = logging.getLogger(__name__)


class GatewayHealth:
    """Fed every recorded event by the pipeline; read by /readyz and GET /api/v1/gateways."""

    def __init__(self, cfg: Config) -> None:
        self.gateways = cfg.gateways
        self.state: dict[str, str] = {}
        self.last_heard: dict[str, float] = {}

    def observe(self, event: Event) -> None:
        if event.kind == GATEWAY_STATUS:
            state = str(event.data.get("state", "unknown"))
            if self.state.get(event.source) != state:
                log.log(logging.WARNING if state == "offline" else logging.INFO, "gateway %s is %s",
                        event.source, state)
            self.state[event.source] = state
        elif event.kind == "beacon":
            self.last_heard[event.source] = event.received_at

    def report(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every configured gateway: its reported state and seconds since it last sent a sighting."""
        now = time.time() if now is None else now
        out = []
        for g in self.gateways:
            heard = self.last_heard.get(g.id)
            out.append({"id": g.id, "zone": g.zone, "format": g.format, "state": self.state.get(g.id, "unknown"),
                        "silent_s": None if heard is None else round(now - heard, 1)})
        return out
