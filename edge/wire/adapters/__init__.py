"""The gateway formats the edge reads, in one table: a new format is one module and one row here."""

from __future__ import annotations

from edge.config import Config
from edge.wire.adapters import espresense, native, theengs
from edge.wire.adapters.base import Adapter

ADAPTERS: dict[str, Adapter] = {a.format: a for a in (native.ADAPTER, espresense.ADAPTER, theengs.ADAPTER)}


def subscriptions(cfg: Config) -> list[str]:
    """Topic filters the edge subscribes to besides P/#: each foreign gateway's sightings and status."""
    topics: list[str] = []
    for g in cfg.gateways:
        for topic in ADAPTERS[g.format].topics(g):
            if topic not in topics:
                topics.append(topic)
    return topics
