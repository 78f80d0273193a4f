"""What every gateway hears of a phone in each zone, learned from the crowd: it lets a move weigh them all.

The presence engine's sequential test compares a zone with the current one. With two gateways that is
the lead of one over the other. A phone is usually heard by more: at 5-8 m spacing by every gateway
within 20-30 m. Each of them says something about which of the two zones the phone is in (a gateway
past zone B hears a phone in B better than one in A), and their noise is independent, so together they
say more than the pair (in bench/presence_quality.py's 5 m grid, about 1.5 times as much: the farther
gateways' differences between two neighbouring zones are small).

The map keeps, per (zone, gateway), the level that gateway is expected to hear relative to the zone's
own best gateway. It starts from a prior that needs no positions: 0 for the zone's own gateways,
PRIOR_NEAR_DB below for the gateways of zones that touch it (`[[zones]] adjacent`; every zone, when the
store does not list them) and PRIOR_FAR_DB below for the others. It learns from phones the engine is
sure of (in their zone for LEARN_AFTER_S with no other zone building a case): each of their sightings
moves one cell towards what was heard (a running mean over the first LEARN_N, then an average of about
the last LEARN_N). A phone's own offset (phones differ by several dB) cancels: the map holds differences
and the lead below uses only differences between gateways.

`lead(A, B, ...)`: for Gaussian readings, the log-likelihood ratio of B against A from levels L_g is
sum_g d_g (L_g - m_g) / s^2, with d_g the difference of the two zones' expected levels at g and m_g
their midpoint. Centring d over the gateways used removes the phone's offset. Scaled by
sqrt(sum d_g^2 / 2), the statistic has the noise of one lead between two gateways (variance 2 s^2) and,
for exactly two gateways, is that lead (plus the midpoint correction, zero for a symmetric map): so
every rule and threshold of the engine, made for a lead in dB, keeps its meaning. A gateway's level
counts at most FADE_CLIP_DB below its slow reference: a body fade takes one link down, a walk moves
them all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

PRIOR_NEAR_DB = 10.0  # a gateway of a zone touching the phone's zone hears it this much less than its own
PRIOR_FAR_DB = 16.0  # ... a gateway of a zone further away, this much less
PRIOR_N = 20.0  # the prior counts as this many readings
LEARN_N = 400.0  # a learned cell averages about this many readings
LEARN_AFTER_S = 8.0  # a phone teaches the map once it has been in its zone this long, no other zone near winning
FADE_CLIP_DB = 8.0  # a gateway's level counts at most this far below its slow reference
MIN_SPREAD_DB = 2.0  # the expected levels must differ by this much (root mean square) for a lead to be taken


class Heard(Protocol):
    """A gateway's view of one phone (presence._Gateway)."""

    zone: str
    level: float
    ref: float
    last: float
    since: float
    vals: list[float]


class HearingMap:
    """Expected level of each gateway for a phone in each zone, relative to the zone's own best gateway."""

    def __init__(self, touches: dict[str, frozenset[str]] | None) -> None:
        self._touches = touches
        self._rel: dict[str, dict[str, float]] = {}  # zone -> gateway -> expected level (dB, own best = 0)
        self._n: dict[str, dict[str, float]] = {}  # zone -> gateway -> readings the cell stands for

    def expected(self, zone: str, gateway: str, gateway_zone: str) -> float:
        """The level gateway hears of a phone in zone, relative to the zone's own best gateway."""
        row = self._rel.get(zone)
        if row is None:
            row = self._rel[zone] = {}
            self._n[zone] = {}
        v = row.get(gateway)
        if v is None:
            v = row[gateway] = self._prior(zone, gateway_zone)
            self._n[zone][gateway] = PRIOR_N
        return v

    def _prior(self, zone: str, gateway_zone: str) -> float:
        if gateway_zone == zone:
            return 0.0
        touches = self._touches
        if touches is None or gateway_zone in touches.get(zone, ()):
            return -PRIOR_NEAR_DB
        return -PRIOR_FAR_DB

    def learn(self, zone: str, gateway: str, gateway_zone: str, relative: float) -> None:
        """A phone surely in zone was heard by gateway `relative` dB from its zone's best gateway."""
        v = self.expected(zone, gateway, gateway_zone)
        ns = self._n[zone]
        n = ns[gateway] + 1.0
        if n > LEARN_N:
            n = LEARN_N
        ns[gateway] = n
        self._rel[zone][gateway] = v + (relative - v) / n

    def lead(self, cur: str, zone: str, gateways: Iterable[tuple[str, Heard]],
             settled: float) -> tuple[float, float] | None:
        """How far zone leads cur, in the dB of a two-gateway lead, from levels and from slow references
        (every gateway given; a gateway heard only since `settled` has no reference yet: its level
        stands in); None when the map cannot tell the zones apart."""
        n = 0
        sd = sdd = sl = sdl = sr = sdr = sm = sdm = 0.0
        rows = self._rel
        row_a = rows.get(cur) or {}
        row_b = rows.get(zone) or {}
        for gid, g in gateways:
            ea = row_a.get(gid)
            if ea is None:
                ea = self.expected(cur, gid, g.zone)
                row_a = rows[cur]
            eb = row_b.get(gid)
            if eb is None:
                eb = self.expected(zone, gid, g.zone)
                row_b = rows[zone]
            d = eb - ea
            m = (ea + eb) * 0.5
            lv = g.level
            if g.since <= settled:
                rf = g.ref
                if lv < rf - FADE_CLIP_DB:  # a fade takes off one link what no move takes off alone
                    lv = rf - FADE_CLIP_DB
            else:
                rf = lv
            n += 1
            sd += d
            sdd += d * d
            sl += lv
            sdl += d * lv
            sr += rf
            sdr += d * rf
            sm += m
            sdm += d * m
        if n < 2:
            return None
        mean = sd / n
        spread = sdd - mean * sd  # sum of the centred d squared
        if spread < MIN_SPREAD_DB * MIN_SPREAD_DB * n:
            return None
        norm = math.sqrt(spread * 0.5)
        mid = sdm - mean * sm
        return (sdl - mean * sl - mid) / norm, (sdr - mean * sr - mid) / norm
