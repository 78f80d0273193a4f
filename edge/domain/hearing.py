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
and the ratio below uses only differences between gateways.

`llr(A, B, ...)`: the log-likelihood ratio of zone B against zone A from one new reading r of a gateway
g. The phone's own level is taken as the mean level L of the gateways hearing it (raw readings, a fade
counting at most FADE_CLIP_DB below its slow reference), so each zone predicts r = L + e_g - mean(e), from
its expected levels e; r is scored as Gaussian noise around that, or, with odds FADE_SHARE, a body fade
FADE_MEAN_DB down (a fade on the current zone's gateway then costs a little, not a move). A phone's offset
cancels; the presence engine sums these ratios into a forward filter over the two zones.

Heard-rates: per (zone, gateway), the share of that gateway's reports that include a phone surely in the
zone (of the phones it heard in the last few seconds), learned from the same settled phones (PRIOR_HEARD
first: its own zone's phones nearly always, a touching zone's less, others less still). `silence_llr`
turns a report without the phone into a log-likelihood ratio of two zones: the presence engine's silences.
"""

from __future__ import annotations

import math
from typing import Protocol

PRIOR_NEAR_DB = 10.0  # a gateway of a zone touching the phone's zone hears it this much less than its own
PRIOR_FAR_DB = 16.0  # ... a gateway of a zone further away, this much less
PRIOR_N = 20.0  # the prior counts as this many readings
LEARN_N = 400.0  # a learned cell averages about this many readings
LEARN_AFTER_S = 8.0  # a phone teaches the map once it has been in its zone this long, no other zone near winning
FADE_CLIP_DB = 8.0  # a gateway's level counts at most this far below its slow reference
FADE_SHARE = 0.1  # a reading is a body fade with these odds ...
FADE_MEAN_DB = 15.0  # ... taking about this much off
FADE_SD_DB = 5.0  # ... give or take this much
_FADE_VAR = FADE_SD_DB * FADE_SD_DB
PRIOR_HEARD = (0.9, 0.8, 0.6)  # share of a gateway's reports that include a phone in its own, a touching, another zone
HEARD_N = 400.0  # a heard-rate cell averages about this many reports
HEARD_CLIP = (0.05, 0.9)  # a rate counts as at least / at most this (a report misses any phone now and then)


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
        self._heard: dict[tuple[str, str], list[float]] = {}  # (zone, gateway) -> [heard-rate, reports it stands for]

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

    def _rate(self, zone: str, gateway: str, gateway_zone: str) -> list[float]:
        cell = self._heard.get((zone, gateway))
        if cell is None:
            near = self._touches is None or gateway_zone in self._touches.get(zone, ())
            prior = PRIOR_HEARD[0 if gateway_zone == zone else 1 if near else 2]
            cell = self._heard[(zone, gateway)] = [prior, PRIOR_N]
        return cell

    def learn_heard(self, zone: str, gateway: str, gateway_zone: str, heard: bool) -> None:
        """One report of gateway about a phone surely in zone: it included the phone, or not."""
        cell = self._rate(zone, gateway, gateway_zone)
        n = cell[1] + 1.0
        if n > HEARD_N:
            n = HEARD_N
        cell[1] = n
        cell[0] += ((1.0 if heard else 0.0) - cell[0]) / n

    def silence_llr(self, cur: str, zone: str, gateway: str, gateway_zone: str) -> float:
        """Log-likelihood ratio of zone against cur from a report of gateway without the phone (nats)."""
        lo, hi = HEARD_CLIP
        a = self._rate(zone, gateway, gateway_zone)[0]
        b = self._rate(cur, gateway, gateway_zone)[0]
        a = lo if a < lo else hi if a > hi else a
        b = lo if b < lo else hi if b > hi else b
        return math.log((1.0 - a) / (1.0 - b))

    def llr(self, cur: str, zone: str, gateways: list[tuple[str, Heard]], source: str, reading: float,
            mean_level: float, var: float) -> float:
        """Log-likelihood ratio of zone against cur from one reading of gateway `source` (nats), given the
        mean level of the gateways hearing the phone (which stands in for the phone's own offset)."""
        return (_log_p(reading - mean_level - self._centred(zone, gateways, source), var)
                - _log_p(reading - mean_level - self._centred(cur, gateways, source), var))

    def _centred(self, zone: str, gateways: list[tuple[str, Heard]], source: str) -> float:
        """What `source` hears of a phone in zone, less the mean of what the gateways given hear of it."""
        row = self._rel.get(zone) or {}
        total = mine = 0.0
        for gid, g in gateways:
            e = row.get(gid)
            if e is None:
                e = self.expected(zone, gid, g.zone)
                row = self._rel[zone]
            total += e
            if gid == source:
                mine = e
        return mine - total / len(gateways)


def _log_p(residual: float, var: float) -> float:
    """Log-density (up to a constant) of a reading `residual` dB from what a zone predicts: Gaussian noise
    of variance var, or, with odds FADE_SHARE, a body fade of about FADE_MEAN_DB."""
    f = residual + FADE_MEAN_DB
    return math.log((1.0 - FADE_SHARE) * math.exp(-0.5 * residual * residual / var) / math.sqrt(var)
                    + FADE_SHARE * math.exp(-0.5 * f * f / _FADE_VAR) / FADE_SD_DB + 1e-300)
