"""One message being normalized, and the config index every format checks it against."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from edge.config import Config


@dataclass(frozen=True, slots=True)
class Site:
    """What normalize needs from a Config, indexed once: dict lookups instead of list scans."""

    cfg: Config
    prefix: str  # "P/", with the trailing slash
    max_bytes: int
    tz: tzinfo
    gateways: dict[str, str]  # gateway id -> zone (any format may also publish natively, on P/beacon/<id>)
    kiosks: dict[str, str]  # kiosk id -> zone
    screens: dict[str, str]  # screen id -> zone (an interactive window may be a configured screen)
    by_format: dict[str, dict[str, str]]  # gateway format -> its gateways' ids -> zone
    native: dict[str, tuple[str, str]]  # P/beacon/<gateway> -> (gateway, zone), for every configured gateway


_sites: dict[int, Site] = {}


def site_of(cfg: Config) -> Site:
    """The index for `cfg`, built on first use; keyed by identity since a Config is immutable."""
    site = _sites.get(id(cfg))
    if site is not None and site.cfg is cfg:
        return site
    by_format: dict[str, dict[str, str]] = {}
    for g in cfg.gateways:
        by_format.setdefault(g.format, {})[g.id] = g.zone
    prefix = cfg.prefix + "/"
    site = Site(
        cfg=cfg,
        prefix=prefix,
        max_bytes=cfg.limits.max_payload_bytes,
        tz=ZoneInfo(cfg.store.timezone),
        gateways={g.id: g.zone for g in cfg.gateways},
        kiosks={k.id: k.zone for k in cfg.kiosks},
        screens={s.id: s.zone for s in cfg.screens},
        by_format=by_format,
        native={f"{prefix}beacon/{g.id}": (g.id, g.zone) for g in cfg.gateways},
    )
    if len(_sites) >= 8:  # tests build many configs; a service has one (two during a reload)
        _sites.clear()
    _sites[id(cfg)] = site
    return site


class Inbound:
    """One message being normalized: what every payload handler needs, in one argument."""

    __slots__ = ("topic", "payload", "source", "received_at", "qos", "site", "obj", "dup")

    def __init__(self, topic: str, payload: bytes, source: str, received_at: float, qos: int,
                 site: Site, obj: dict[str, Any], dup: bool = False) -> None:
        self.topic = topic
        self.payload = payload
        self.source = source
        self.received_at = received_at
        self.qos = qos
        self.site = site
        self.obj = obj
        self.dup = dup
