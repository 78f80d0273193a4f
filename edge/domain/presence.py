"""Zone presence from noisy BLE RSSI: per-gateway levels, a sequential test per other zone, visits.

Levels. For each (subject, gateway) the level is the mean of the best two of the last FILTER_K readings
(no older than FILTER_AGE_S), and `ref` follows the level slowly (REF_TAU_S). Why the best two: BLE
noise is not symmetric. A body between phone and gateway takes 10-20 dB off a few readings (a fade);
nothing adds as much. Dropping the lowest of three ignores a one-reading fade, follows a walk within a
reading or two, and costs an upward bias that is the same for every gateway and cancels in a lead.

Zone. Whether the subject has moved is a sequential test between its zone and each other zone heard
(their best fresh gateways; fresh = heard in the last STALE_S). For each other zone, evidence builds
up, sighting after sighting, as the time integral of that zone's lead minus an allowance, and falls
back (never below zero) while the lead is below the allowance: a one-sided CUSUM test per zone, which
is a forward filter over zones whose log-odds are floored by the chance of a move. The subject moves
when a zone's evidence reaches the threshold. A large lead moves a subject in a second or two, a small
lasting one in several, noise around no lead rarely, and a dip does not throw away what a move has
built up (the earlier hysteresis reset its evidence on every dip, which made it slow and, where the
lead stayed small, blind).
- Threshold: `switch_after_s` seconds of a 10 dB lead (LEAD_REF_DB), times (noise / NOISE_REF_DB)^2
  when the store's RSSI noise is above NOISE_REF_DB: for two means in Gaussian noise the log-likelihood
  ratio grows as lead / noise^2, so a noisier store needs longer for the same confidence. (Not shorter
  below: fades and reflections do not shrink with the noise, and a lower threshold there lets them
  move a standing shopper.) The noise is
  measured, not configured: the mean difference between successive readings of subjects' own-zone
  gateways, over the whole store. The allowance is `hysteresis_db`, or NOISE_ALLOWANCE times the noise
  if that is more.
- A lead counts at most LEAD_CAP_DB, and for at most MAX_STEP_S after a sighting, so that one wild
  reading cannot carry a move on its own, even after a silence.
- A fade is not a move: the current zone's drop below its slow reference counts only up to FADE_DB
  more than the other zone's rise above its own. Walking over weakens one gateway and strengthens the
  other; a body fade only weakens one.
- Standing still is not walking: while the other zone's rise and the current zone's drop add up to
  less than MOVE_DB, the lead counts only as far as the slow references agree, less STILL_DB. A shopper
  standing near a border then keeps their zone through the noise; one the engine has placed wrong
  is still moved, as the slow references show the lead.
- A zone that does not touch the current one (when the store lists them: [[zones]] adjacent) needs
  JUMP_EVIDENCE times the evidence: shoppers walk, they do not jump across the store.
- Going back to the zone left less than RETURN_WINDOW_S ago needs RETURN_EVIDENCE times the evidence:
  it slows a phone flapping on a border down, and costs a real return little.
- Every gateway has its say, reading by reading: when three or more gateways hear the subject (within
  HEARD_WITHIN_DB of the current zone's best) and the current and the other zone are each served by one
  gateway, the lead is not used: each new reading is scored against the hearing map (edge.domain.hearing)
  as the log-likelihood ratio of the two zones (the phone's offset taken from the mean level of the
  gateways hearing it, Gaussian noise of the measured spread plus SPOT_DB, or a body fade), and the
  evidence is the sum of those ratios, floored at zero: a forward filter over the two zones whose floor is
  the chance of a move. A move needs MOVE_NATS (times switch_after_s / its default; the jump and return
  rules below apply too); a standing phone's readings (the rule above) count STANDING_NATS less each
  (times hysteresis_db / its default), which keeps a phone on a border from changing zone every few
  seconds. Readings are scored while another zone's best gateway is within SCORED_WITHIN_DB of the
  current zone's; a faint gateway's reading changes nothing. Against the lead this filter weighed the
  levels, it uses each raw reading once and does not wait for the slow references, which made stopped
  shoppers wait (bench/presence_quality.py: 5 m / 5 dB p90 6.1 -> 5.65 s). A zone served by several
  gateways keeps the best pair: one expected view per zone does not describe it (in bench/presence.py's
  store, two gateways a zone, a weighed lead made three times the spurious moves).
- A report without the phone is evidence too (a silence): a gateway that publishes what it heard in the
  last second and leaves the phone out says the phone is probably not near it. When a report ends (the next
  sighting comes from another report, or the pipeline's tick), each subject that gateway heard in the last
  FILTER_AGE_S and not since its previous report (read at most every SCAN_S) gets, in the same filter, the
  log-ratio of being missed in each other zone against the current one, times SILENCE_WEIGHT, from the
  heard-rates of edge.domain.hearing. Only the two zones' own gateways count: the current zone's gateway
  missing the phone speaks for a move, the other zone's gateway missing it against that zone. A farther
  gateway's silences depend on the phone's own strength, which the crowd's rates do not know: counted,
  they held shoppers in place (bench/presence_quality.py, 8 m / 8 dB: 79 % right instead of 94 %). The
  gain: 8 and 12 m / 8 dB, p90 8.45 -> 7.8 s and 7.9 -> 6.5 s. A gateway that sends nothing says nothing.
The challenging gateway needs `switch_readings` readings (up to FILTER_K) in its window first.
`switch_after_s = 0` turns the test off: a zone leading by `hysteresis_db` wins at once. The first
sighting places the subject at once and starts a visit. Sightings weaker than the zone's `min_rssi` are
ignored altogether. bench/presence_quality.py measures all this against ground truth on a simulated
store; the README's presence section has the figures.

Events (ts = the receive time that proved them; gateways' clocks are not trusted): `visit_start`, then
`zone_enter`; `zone_dwell` once per threshold of the zone's `dwell_s` per stay, when a reading proves
the subject is still there (ts = entered_at + threshold); `zone_exit` + `zone_enter` on a move;
`zone_exit` + `visit_end` after the zone's `exit_after_s` of silence from every gateway (ts = last
seen). Every event carries data `visit_id` and `dwell_s`; tracked staff/asset beacons add
{"staff": true} or {"asset": true}; untracked ones leave no state at all. Event ids are
`p:{kind}:{subject}:{zone}:{ms}`, computed from the inputs only, so a replay yields the same ids.
The engine's only clock is its input (receive times, and `now` given to `expire`).

Silence is found by `expire` from a timer wheel: each subject is filed under the quarter-second slot of
its deadline (last seen + exit_after_s). A sighting only moves `last_seen`; when its slot comes, a
subject heard since is filed again under its new deadline. So a tick visits only the slots that have
come due, never every subject: with 2,000 subjects it costs tens of microseconds, and each subject is
re-filed at most once per `exit_after_s`.

The hearing map is shared by all subjects and, like the levels, not persisted: it starts from its
prior after a restart and relearns within minutes.

Persistence: `take_changes()` returns the `presence` table's rows (COLUMNS: where, since when, who, the
visit, and `state`, JSON: dwell thresholds done, zones of the visit) for `Writer.upsert_presence`. A row
is written when the zone, visit or dwell state changes, otherwise at most every PERSIST_EVERY_S per subject (last_seen alone). Levels, evidence and
the noise estimate are not persisted: they refill from fresh readings within seconds of a restart.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.config import Config, ZoneConfig
from edge.domain.hearing import FADE_CLIP_DB, LEARN_AFTER_S, HearingMap
from edge.model import Event

ENTER = "zone_enter"
DWELL = "zone_dwell"
EXIT = "zone_exit"
VISIT_START = "visit_start"
VISIT_END = "visit_end"
KINDS = (VISIT_START, ENTER, DWELL, EXIT, VISIT_END)

FILTER_K = 3  # readings per (subject, gateway) a level is taken from (the best two of them)
FILTER_AGE_S = 10.0  # ... none older than this
STALE_S = 5.0  # a gateway that has not heard the subject for this long does not count
REF_TAU_S = 10.0  # time constant of a gateway's slow reference level
UNHEARD_DBM = -100.0  # where a gateway's reference starts: it has just begun to hear the subject
LEAD_REF_DB = 10.0  # switch_after_s is the time a lead of this many dB needs
LEAD_CAP_DB = 15.0  # a lead above the allowance counts at most this much
MAX_STEP_S = 1.0  # a sighting's lead counts for at most this long (gateways report about once a second)
FADE_DB = 2.0  # the current zone's drop counts at most this much more than the other zone's rise
MOVE_DB = 7.0  # a rise plus a drop smaller than this: the subject is standing still ...
STILL_DB = 3.0  # ... and then the slow lead counts, and must beat this much more allowance
NOISE_REF_DB = 6.0  # above this RSSI noise (dB) the threshold grows with the noise squared
NOISE_ALLOWANCE = 0.5  # the allowance is at least this many times the noise
NOISE_START_DB = 5.0  # the noise assumed until the store's own is measured
NOISE_WEIGHT = 0.001  # weight of one reading pair in the measured noise (about the last thousand)
MIN_GATEWAYS = 3  # heard by this many gateways, each reading is weighed against the hearing map ...
HEARD_WITHIN_DB = 15.0  # ... (gateways hearing it at most this much weaker than the current zone's best)
MOVE_NATS = 12.0  # ... and a move needs log-odds of this much (at the default switch_after_s)
SPOT_DB = 2.0  # ... the map's own error: where in its zone a phone stands (added to the noise)
STANDING_NATS = 0.05  # ... a standing phone's reading counts this much less (x hysteresis_db / its default)
SCORED_WITHIN_DB = 6.0  # ... readings are scored while a zone's best gateway is at most this much behind
JUMP_EVIDENCE = 1.5  # a move to a zone that does not touch the current one needs this much evidence
RETURN_EVIDENCE = 1.5  # going back to the zone the subject left ...
RETURN_WINDOW_S = 120.0  # ... this recently needs this much evidence
SCAN_S = 0.9  # a gateway's reports are read for silences (a report without a subject) at most this often ...
SILENCE_WEIGHT = 1.5  # ... and its log-likelihood ratio counts this much (bench/presence_quality.py: 1 to 2 alike)
PERSIST_EVERY_S = 1.0  # when only last_seen moved, a subject's row is written at most this often
SLOTS_PER_S = 4  # the silence timer's resolution: the pipeline's tick is 0.25 s
MAX_VISIT_ZONES = 64  # a visit lists at most this many zones (the first ones), to bound its row

# Columns of the presence table written by take_changes (files from before schema v2 have the first six only).
COLUMNS = ("subject", "zone", "gateway", "entered_at", "last_seen", "customer", "visit_id", "visit_started_at",
           "state")

_INF = math.inf
_DEFAULT_HYSTERESIS_DB = ZoneConfig.model_fields["hysteresis_db"].default
# Weighed evidence (nats) is kept in the dB x s of the best-pair test: MOVE_NATS is the default threshold.
_DB_S_PER_NAT = LEAD_REF_DB * ZoneConfig.model_fields["switch_after_s"].default / MOVE_NATS
_MAD_TO_SIGMA = math.sqrt(math.pi) / 2  # Gaussian noise sigma from the mean |difference| of two readings


@dataclass(frozen=True, slots=True)
class _ZoneRules:
    """A zone's presence thresholds, read once from its ZoneConfig."""

    exit_after: float
    dwell: tuple[float, ...]
    allowance: float  # dB another zone must lead by before evidence builds up
    threshold: float  # evidence (dB x s) that moves a subject, at NOISE_REF_DB or less of noise
    standing: float  # nats a standing phone's weighed reading counts less
    eligible: int  # readings a challenging gateway needs in its window
    min_rssi: float
    touches: frozenset[str] | None  # zones a subject can walk to from here; None: any

    @classmethod
    def of(cls, z: ZoneConfig, touches: frozenset[str] | None = None) -> _ZoneRules:
        return cls(z.exit_after_s, tuple(sorted(set(z.dwell_s))), z.hysteresis_db, LEAD_REF_DB * z.switch_after_s,
                   STANDING_NATS * z.hysteresis_db / _DEFAULT_HYSTERESIS_DB, min(z.switch_readings, FILTER_K),
                   z.min_rssi, touches)


class _Gateway:
    """One gateway's recent readings of one subject, their level and its slow reference."""

    __slots__ = ("zone", "times", "vals", "level", "ref", "last", "since")

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self.times: list[float] = []
        self.vals: list[float] = []
        self.level = -_INF
        self.ref = -_INF
        self.last = -_INF
        self.since = _INF  # heard without a break since: the reference means something REF_TAU_S later

    def add(self, now: float, rssi: float) -> None:
        times = self.times
        vals = self.vals
        times.append(now)
        vals.append(rssi)
        if len(times) > FILTER_K:
            del times[0]
            del vals[0]
        cutoff = now - FILTER_AGE_S
        while times[0] < cutoff:  # ends: times[-1] == now
            del times[0]
            del vals[0]
        n = len(vals)
        if n == 1:
            level = rssi
        elif n == 2:
            level = (vals[0] + vals[1]) * 0.5
        else:  # the best two of three
            a, b, c = vals
            level = (a + b + c - min(a, b, c)) * 0.5
        self.level = level
        if n == 1:  # newly heard (again): it rose from nothing over the last second
            self.ref = UNHEARD_DBM
            self.last = now - 1.0
            self.since = now
        self.ref += (1.0 - math.exp((self.last - now) / REF_TAU_S)) * (level - self.ref)
        self.last = now


@dataclass(slots=True, eq=False)
class Presence:
    """Where one subject is: its zone and visit, plus the engine's working state."""

    subject: str
    zone: str
    gateway: str  # the current zone's best gateway
    entered_at: float
    last_seen: float
    customer: str | None = None
    visit_id: str = ""
    visit_started_at: float = 0.0
    dwell_done: int = 0  # thresholds of the zone's dwell_s already reported in this stay
    zones: list[str] = field(default_factory=list)  # zones of the visit, in order
    tag: str | None = None  # "staff" or "asset" for a tracked known beacon
    gateways: dict[str, _Gateway] = field(default_factory=dict, repr=False)
    evidence: dict[str, float] = field(default_factory=dict, repr=False)  # zone -> dB x s for a move there
    evidence_at: float = 0.0  # when the evidence was last brought up to date
    left: str | None = None  # the zone the subject came from, and when
    left_at: float = -_INF
    next_dwell: float = _INF
    saved_seen: float = -_INF  # last_seen as last handed to take_changes
    deadline: int = 0  # the timer slot the subject is filed under (entries in other slots are stale)
    state_json: str | None = None

    def row(self) -> tuple[Any, ...]:
        if self.state_json is None:
            self.state_json = json.dumps({"dwell_done": self.dwell_done, "zones": self.zones},
                                         separators=(",", ":"))
        return (self.subject, self.zone, self.gateway, self.entered_at, self.last_seen, self.customer,
                self.visit_id, self.visit_started_at, self.state_json)


def _touching(cfg: Config) -> dict[str, frozenset[str]] | None:
    """Which zones touch which, from [[zones]] adjacent (either side's list counts); None when no zone
    has the key. A zone without the key touches every zone: nobody said otherwise."""
    listed = {z.id: z.adjacent for z in cfg.zones}
    if all(adj is None for adj in listed.values()):
        return None
    touch: dict[str, set[str]] = {zid: set() for zid in listed}
    for zid, adj in listed.items():
        for other in adj or ():
            touch[zid].add(other)
            touch.setdefault(other, set()).add(zid)
    for zid, adj in listed.items():
        if adj is None:
            touch[zid] = set(listed)
            for t in touch.values():
                t.add(zid)
    return {zid: frozenset(t - {zid}) for zid, t in touch.items()}


class PresenceTracker:
    """Per-subject zone and visit state; `observe` and `expire` return the derived presence events."""

    def __init__(self, cfg: Config, rows: list[dict] | None = None) -> None:
        self.cfg = cfg
        self._store = cfg.store.id
        touch = _touching(cfg)
        self._rules = {z.id: _ZoneRules.of(z, touch.get(z.id) if touch else None) for z in cfg.zones}
        self._map = HearingMap(touch)
        served: dict[str, int] = {}
        for gw in cfg.gateways:
            served[gw.zone] = served.get(gw.zone, 0) + 1
        # The map describes a zone by one gateway's view: it fits zones that one gateway serves.
        self._mapped = frozenset(z for z, n in served.items() if n == 1)
        self._default = _ZoneRules.of(ZoneConfig(id="unknown"))
        self._ignored = frozenset(b.key for b in cfg.beacons if not b.track)
        self._tags = {b.key: b.kind for b in cfg.beacons if b.track}
        self.state: dict[str, Presence] = {}
        self.dirty: set[str] = set()
        self.gone: set[str] = set()
        self._mad = NOISE_START_DB / _MAD_TO_SIGMA  # mean |difference| of successive own-zone readings
        # Timer wheel: slot (a quarter second) -> subjects whose silence deadline falls in it.
        self._wheel: dict[int, list[Presence]] = {}
        self._slot = -(1 << 62)  # the last slot expire() has handled
        # Silences: which subjects each gateway has heard lately, when its reports were last read for them,
        # and the report (gateway, receive time) being read now.
        self._watch: dict[str, set[str]] = {}
        self._scan_at: dict[str, float] = {}
        self._report: tuple[str, float] | None = None
        for r in rows or []:
            self._restore(r)

    def reload(self, rows: list[dict]) -> None:
        """Start over from stored rows (after a rolled-back transaction), in place: the pipeline owns this object
        and an erasure must find the state that is in use."""
        self.state.clear()
        self.dirty.clear()
        self.gone.clear()
        self._wheel.clear()
        self._slot = -(1 << 62)
        self._watch.clear()
        self._scan_at.clear()
        self._report = None
        for r in rows:
            self._restore(r)

    def forget(self, customer: str, keys: Sequence[str] = ()) -> None:
        """Erasure: subjects linked to the customer stay present, anonymous (persisted with the next commit)."""
        for subject, st in list(self.state.items()):
            if st.customer == customer:
                self.set_customer(subject, None)

    @property
    def noise_db(self) -> float:
        """The store's RSSI noise (dB, one reading) as measured so far: it sets how much evidence a move needs."""
        return self._mad * _MAD_TO_SIGMA

    # --- input ---
    def observe(self, event: Event) -> list[Event]:
        """Apply one sighting; returns the presence events it causes (usually none)."""
        subject = event.subject
        zone = event.zone
        if event.kind != "beacon" or not subject or not zone or subject in self._ignored:
            return []
        rssi = event.data.get("rssi")
        rules = self._rules.get(zone) or self._default
        if rssi is None or rssi < rules.min_rssi:
            return []
        source = event.source
        report = self._report  # (ignored sightings are not part of it: as if never reported)
        if report is None or report[1] != event.received_at or report[0] != source:
            if report is not None:
                self._end_report()
            self._report = (source, event.received_at)
        now = event.received_at
        st = self.state.get(subject)
        if st is None:
            return self._arrive(event, subject, zone, now, rssi)
        if now < st.last_seen:
            now = st.last_seen
        gateways = st.gateways
        g = seen = gateways.get(source)
        if g is None:
            g = seen = gateways[source] = _Gateway(zone)
            self._watching(source, subject)
        elif zone == st.zone and now - g.last < 1.6:
            # The store's noise, from successive readings by the subject's own zone (strong ones, well above
            # what gateways drop); a fade counts at most three times the mean, so fades hardly move it.
            diff = abs(rssi - g.vals[-1])
            cap = 3.0 * self._mad
            self._mad += NOISE_WEIGHT * ((diff if diff < cap else cap) - self._mad)
        g.add(now, rssi)
        st.last_seen = now
        if event.customer is not None and event.customer != st.customer:
            st.customer = event.customer
            st.saved_seen = -_INF

        # The best fresh gateway of the current zone, and of each other zone (with enough readings).
        cur = st.zone
        here = self._rules.get(cur) or self._default
        stale = now - STALE_S
        forget = now - FILTER_AGE_S
        need = here.eligible
        cur_best = cur_ref = top = -_INF
        cur_gw = None
        dead = None
        for gid, g in gateways.items():
            if g.last < stale:
                if g.last < forget:
                    if dead is None:
                        dead = [gid]
                    else:
                        dead.append(gid)
            elif g.zone == cur:
                if g.level > cur_best:
                    cur_best = g.level
                    cur_ref = g.ref
                    cur_gw = gid
            elif g.level > top and len(g.vals) >= need:
                top = g.level
        if dead is not None:
            for gid in dead:
                del gateways[gid]
        if cur_gw is not None:
            st.gateway = cur_gw
            if not st.evidence and now - st.entered_at >= LEARN_AFTER_S:  # sure of the zone: teach the map
                self._map.learn(cur, source, seen.zone, seen.level - cur_best)

        evidence = st.evidence
        elapsed = now - st.evidence_at
        if elapsed > MAX_STEP_S:  # after a gap, one fresh reading must not stand for all of it
            elapsed = MAX_STEP_S
        st.evidence_at = now
        # (Every rule below only takes from a lead: with no evidence yet and no zone leading by the zone's
        # own allowance, nothing can move; a weighed zone's readings are scored from SCORED_WITHIN_DB behind.
        # Most sightings stop here, so the per-zone view is built after.)
        if evidence or top - cur_best >= (-SCORED_WITHIN_DB if cur in self._mapped else here.allowance):
            others: dict[str, tuple[float, float, str]] = {}  # zone -> (level, ref, gateway) of its best gateway
            for gid, g in gateways.items():
                if g.zone != cur and g.last >= stale and len(g.vals) >= need:
                    other = others.get(g.zone)
                    if other is None or g.level > other[0]:
                        others[g.zone] = (g.level, g.ref, gid)
            to = self._decide(st, here, others, evidence, elapsed, cur_best, cur_ref, now, seen, source)
            if to is not None:
                return self._move(st, to, others[to][2], now)

        if now >= st.next_dwell:
            self.dirty.add(subject)
            return self._dwell(st, now)
        if now - st.saved_seen >= PERSIST_EVERY_S:
            self.dirty.add(subject)
        return []

    def _decide(self, st: Presence, here: _ZoneRules, others: dict[str, tuple[float, float, str]],
                evidence: dict[str, float], elapsed: float, cur_best: float, cur_ref: float,
                now: float, seen: _Gateway, source: str) -> str | None:
        """Bring each other zone's evidence up to now; the zone the subject has moved to, if any."""
        allowance = here.allowance
        if here.threshold <= 0.0:  # no test: a zone leading by the allowance wins at once
            best = max(others, key=lambda z: others[z][0], default=None)
            return best if best is not None and others[best][0] - cur_best >= allowance else None
        noise = self._mad * _MAD_TO_SIGMA
        if NOISE_ALLOWANCE * noise > allowance:
            allowance = NOISE_ALLOWANCE * noise
        threshold = threshold_weighed = here.threshold
        if noise > NOISE_REF_DB:
            threshold *= (noise / NOISE_REF_DB) ** 2
        drop = cur_ref - cur_best if cur_best > -_INF else 0.0  # how much the current zone has weakened lately
        # Every gateway that hears the phone well enough has its say (edge.domain.hearing).
        cur = st.zone
        stale = now - STALE_S
        need = here.eligible
        faint = cur_best - HEARD_WITHIN_DB
        heard = [(gid, g) for gid, g in st.gateways.items()
                 if g.last >= stale and g.level >= faint and (g.zone == cur or len(g.vals) >= need)]
        mapped = self._mapped
        weighed = cur in mapped and cur_best > -_INF and len(heard) >= MIN_GATEWAYS
        # The reading just heard, scored against the hearing map; None: it says nothing (a faint gateway).
        llr = self._map.llr if weighed and seen.level >= faint and (seen.zone == cur or len(seen.vals) >= need) \
            else None
        if llr is not None:
            settled = now - REF_TAU_S
            total = 0.0
            for _, g in heard:  # the phone's level, from raw readings (a fade counts at most FADE_CLIP_DB)
                vals = g.vals
                lv = sum(vals) / len(vals)
                if g.since <= settled and lv < g.ref - FADE_CLIP_DB:
                    lv = g.ref - FADE_CLIP_DB
                total += lv
            mean_level = total / len(heard)
            reading = seen.vals[-1]
            var = noise * noise + SPOT_DB * SPOT_DB
        touches = here.touches
        back = st.left if now - st.left_at < RETURN_WINDOW_S else None
        winner = None
        surplus = 1.0
        kept: dict[str, float] = {}  # zones no longer heard drop out: their case is closed
        for zone, (level, ref, _) in others.items():
            rise = level - ref
            if rise < 0.0:
                rise = 0.0
            excuse = rise + FADE_DB
            weakened = drop
            if drop > excuse:  # the current zone weakened more than this one strengthened: partly a fade
                weakened = excuse
            standing = rise + (weakened if weakened > 0.0 else 0.0) < MOVE_DB
            if weighed and zone in mapped:  # a forward filter over the two zones, reading by reading
                e = evidence.get(zone, 0.0)
                if llr is not None:
                    x = llr(cur, zone, heard, source, reading, mean_level, var)
                    if standing:
                        x -= here.standing
                    e += x * _DB_S_PER_NAT
                if e <= 0.0:
                    continue
                kept[zone] = e
                needed = threshold_weighed if touches is None or zone in touches else threshold_weighed * JUMP_EVIDENCE
                ratio = e / (needed * RETURN_EVIDENCE if zone == back else needed)
                if ratio >= surplus:
                    winner, surplus = zone, ratio
                continue
            lead = level - cur_best
            if lead < -LEAD_CAP_DB and zone not in evidence:
                continue  # far behind, and nothing to take back
            slow = ref - cur_ref
            if drop > excuse:
                lead -= drop - excuse
            if standing:
                lead = (lead if lead < slow else slow) - STILL_DB
            x = lead - allowance
            e = evidence.get(zone, 0.0) + (LEAD_CAP_DB if x > LEAD_CAP_DB else -LEAD_CAP_DB if x < -LEAD_CAP_DB
                                           else x) * elapsed
            if e <= 0.0:
                continue
            kept[zone] = e
            if x > 0.0:
                needed = threshold if touches is None or zone in touches else threshold * JUMP_EVIDENCE
                ratio = e / (needed * RETURN_EVIDENCE if zone == back else needed)
                if ratio >= surplus:
                    winner, surplus = zone, ratio
        st.evidence = kept
        return winner

    def expire(self, now: float) -> list[Event]:
        """Subjects silent for longer than their zone's exit_after_s have left the zone and the store."""
        if self._report is not None:
            self._end_report()
            self._report = None
        current = math.floor(now * SLOTS_PER_S)
        last = self._slot
        if current <= last or not self._wheel:
            self._slot = max(current, last)
            return []
        wheel = self._wheel
        if current - last <= len(wheel) + 64:
            slots: Iterable[int] = range(last + 1, current + 1)
        else:  # a long gap (a restart after an outage): visit the armed slots, not every slot between
            slots = sorted(k for k in wheel if k <= current)
        self._slot = current
        out: list[Event] = []
        state = self.state
        rules, default = self._rules, self._default
        for slot in slots:
            bucket = wheel.pop(slot, None)
            if bucket is None:
                continue
            for st in bucket:
                subject = st.subject
                if st.deadline != slot or state.get(subject) is not st:
                    continue  # re-armed elsewhere, or gone
                actual = st.last_seen + (rules.get(st.zone) or default).exit_after
                if actual >= now:  # heard since it was armed
                    later = math.ceil(actual * SLOTS_PER_S)
                    st.deadline = later if later > current else current + 1
                    b = wheel.get(st.deadline)
                    if b is None:
                        wheel[st.deadline] = [st]
                    else:
                        b.append(st)
                    continue
                del state[subject]
                self.dirty.discard(subject)
                self.gone.add(subject)
                ts = st.last_seen
                dwell = round(ts - st.entered_at, 3)
                out.append(self._event(EXIT, st, ts, {"dwell_s": dwell}))
                out.append(self._event(VISIT_END, st, ts, {
                    "dwell_s": dwell, "duration_s": round(ts - st.visit_started_at, 3), "zones": list(st.zones)}))
        return out

    # --- output ---
    def take_changes(self) -> tuple[list[tuple], list[str]]:
        """Rows (COLUMNS, for Writer.upsert_presence) and subjects to delete since the last call."""
        rows = []
        state = self.state
        for s in self.dirty:
            st = state.get(s)
            if st is not None:
                st.saved_seen = st.last_seen
                rows.append(st.row())
        gone = list(self.gone)
        self.dirty.clear()
        self.gone.clear()
        return rows, gone

    def zone_of(self, subject: str) -> str | None:
        cur = self.state.get(subject)
        return cur.zone if cur else None

    def set_customer(self, subject: str, customer: str | None) -> None:
        """A subject turned out to be a customer (identification) or was erased: persisted with the next commit."""
        st = self.state.get(subject)
        if st is not None and st.customer != customer:
            st.customer = customer
            self.dirty.add(subject)

    def visit_of(self, subject: str) -> tuple[str | None, float | None]:
        """(visit id, visit start) of a subject in the store, else (None, None): what Identity.on_identify takes.

        The visit id is the anonymous visitor id: stable for the visit, across restarts too.
        """
        cur = self.state.get(subject)
        return (cur.visit_id, cur.visit_started_at) if cur else (None, None)

    # --- internals ---
    def _watching(self, gateway: str, subject: str) -> None:
        watch = self._watch.get(gateway)
        if watch is None:
            self._watch[gateway] = {subject}
        else:
            watch.add(subject)

    def _end_report(self) -> None:
        """A gateway's report has been read: the subjects it heard lately and did not report now are silences.

        Read at most every SCAN_S per gateway (a report is about a second of hearing): a subject counts as
        heard when the gateway heard it since the last read, else as silent. A silence is evidence, in the
        same forward filter as the readings, for the zones where that gateway hears phones less often
        (edge.domain.hearing's heard-rates, learned from subjects sure of their zone).
        """
        source, at = self._report  # type: ignore[misc]
        last = self._scan_at.get(source)
        if last is not None and at - last < SCAN_S:
            return
        self._scan_at[source] = at
        watch = self._watch.get(source)
        if last is None or not watch:
            return
        state = self.state
        forget = at - FILTER_AGE_S
        learn = self._map.learn_heard
        mapped = self._mapped
        dropped = None
        for subject in watch:
            st = state.get(subject)
            g = st.gateways.get(source) if st is not None else None
            if g is None or g.last < forget:
                if dropped is None:
                    dropped = [subject]
                else:
                    dropped.append(subject)
                continue
            heard = g.last > last
            if not st.evidence and at - st.entered_at >= LEARN_AFTER_S and at - st.last_seen < STALE_S:
                learn(st.zone, source, g.zone, heard)
            if not heard and st.zone in mapped:
                self._silence(st, source, g.zone, at)
        if dropped is not None:
            watch.difference_update(dropped)

    def _silence(self, st: Presence, source: str, source_zone: str, now: float) -> None:
        """Gateway `source` reported without the subject: the case for a move to each zone gains or loses.

        Only the silences of the two zones' own gateways count: the current zone's gateway not hearing the
        phone speaks for every other zone, the other zone's gateway not hearing it speaks against that zone.
        Farther gateways' silences depend on the phone's own strength (a weak phone goes unheard by every
        far gateway), which the crowd's heard-rates do not know: counted, they kept shoppers from moving.
        """
        cur = st.zone
        evidence = st.evidence
        mapped = self._mapped
        if source_zone == cur:
            stale = now - STALE_S
            zones = {g.zone for g in st.gateways.values() if g.zone != cur and g.last >= stale and g.zone in mapped}
            zones.update(evidence)
        elif source_zone in evidence or (source_zone in mapped and st.gateways[source].last >= now - STALE_S):
            zones = {source_zone}
        else:
            return
        silence_llr = self._map.silence_llr
        own = source_zone == cur
        for zone in zones:
            x = silence_llr(cur, zone, source, source_zone)
            # A gateway hears phones in its own zone at least as often as phones elsewhere, whatever the
            # heard-rates learned so far say (a zone nobody has stood in yet still has its prior).
            if (x < 0.0) if own else (x > 0.0):
                continue
            e = evidence.get(zone, 0.0) + x * (SILENCE_WEIGHT * _DB_S_PER_NAT)
            if e > 0.0:
                evidence[zone] = e
            else:
                evidence.pop(zone, None)

    def _arrive(self, event: Event, subject: str, zone: str, now: float, rssi: float) -> list[Event]:
        """The first sighting of a subject not in the store: a visit starts, the zone is entered."""
        st = Presence(subject, zone, event.source, now, now, event.customer,
                      visit_id=self._visit_id(subject, now), visit_started_at=now, zones=[zone],
                      tag=self._tags.get(subject), evidence_at=now)
        g = st.gateways[event.source] = _Gateway(zone)
        g.add(now, rssi)
        self._watching(event.source, subject)
        rules = self._rules.get(zone) or self._default
        st.next_dwell = now + rules.dwell[0] if rules.dwell else _INF
        self.state[subject] = st
        self._arm(st, now + rules.exit_after)
        self.dirty.add(subject)
        self.gone.discard(subject)
        return [self._event(VISIT_START, st, now, {"dwell_s": 0.0}), self._event(ENTER, st, now, {"dwell_s": 0.0})]

    def _move(self, st: Presence, to: str, gateway: str, now: float) -> list[Event]:
        out = [self._event(EXIT, st, now, {"dwell_s": round(now - st.entered_at, 3)})]
        st.left, st.left_at = st.zone, now
        st.zone = to
        st.gateway = gateway
        st.entered_at = now
        st.dwell_done = 0
        st.evidence = {}
        if len(st.zones) < MAX_VISIT_ZONES:
            st.zones.append(to)
        st.state_json = None
        rules = self._rules.get(to) or self._default
        st.next_dwell = now + rules.dwell[0] if rules.dwell else _INF
        if math.ceil((now + rules.exit_after) * SLOTS_PER_S) < st.deadline:  # a shorter exit_after_s
            self._arm(st, now + rules.exit_after)
        self.dirty.add(st.subject)
        out.append(self._event(ENTER, st, now, {"dwell_s": 0.0}))
        return out

    def _dwell(self, st: Presence, now: float) -> list[Event]:
        thresholds = (self._rules.get(st.zone) or self._default).dwell
        out = []
        while st.dwell_done < len(thresholds) and st.entered_at + thresholds[st.dwell_done] <= now:
            t = thresholds[st.dwell_done]
            st.dwell_done += 1
            out.append(self._event(DWELL, st, st.entered_at + t, {"dwell_s": t}))
        st.next_dwell = st.entered_at + thresholds[st.dwell_done] if st.dwell_done < len(thresholds) else _INF
        st.state_json = None
        return out

    def _arm(self, st: Presence, deadline: float) -> None:
        """File the subject under the first timer slot at or after `deadline` (it may be early: expire checks)."""
        slot = math.ceil(deadline * SLOTS_PER_S)
        if slot <= self._slot:
            slot = self._slot + 1
        st.deadline = slot
        bucket = self._wheel.get(slot)
        if bucket is None:
            self._wheel[slot] = [st]
        else:
            bucket.append(st)

    def _restore(self, r: dict[str, Any]) -> None:
        """One presence row back into memory; rows written before schema v2 get their visit derived."""
        subject, zone = r.get("subject"), r.get("zone")
        if not subject or not zone or subject in self._ignored:
            if subject:
                self.gone.add(subject)  # e.g. a beacon now configured as untracked: forget it
            return
        entered, seen = float(r["entered_at"]), float(r["last_seen"])
        rules = self._rules.get(zone) or self._default
        try:
            extra = json.loads(r.get("state") or "{}")
        except ValueError:
            extra = {}
        done = extra.get("dwell_done")
        if not isinstance(done, int):  # not recorded: do not report again what was surely reported
            done = sum(1 for t in rules.dwell if entered + t <= seen)
        zones = extra.get("zones")
        if not isinstance(zones, list) or not zones:
            zones = [zone]
        started = r.get("visit_started_at")
        started = entered if started is None else float(started)
        st = Presence(subject, zone, r.get("gateway") or "", entered, seen, r.get("customer"),
                      visit_id=r.get("visit_id") or self._visit_id(subject, started), visit_started_at=started,
                      dwell_done=min(done, len(rules.dwell)), zones=[str(z) for z in zones],
                      tag=self._tags.get(subject), saved_seen=seen, evidence_at=seen)
        st.next_dwell = entered + rules.dwell[st.dwell_done] if st.dwell_done < len(rules.dwell) else _INF
        self.state[subject] = st
        self._arm(st, seen + rules.exit_after)

    def _visit_id(self, subject: str, start: float) -> str:
        key = f"{self._store}|{subject}|{round(start * 1000)}".encode()
        return "v-" + hashlib.blake2b(key, digest_size=6).hexdigest()

    def _event(self, kind: str, st: Presence, ts: float, data: dict[str, Any]) -> Event:
        data["visit_id"] = st.visit_id
        if st.tag is not None:
            data[st.tag] = True
        return Event(
            # Hashed: an erased shopper's subject key must not survive inside event ids.
            # Time first, so the unique index on event_id is appended to (see edge.wire.ids._time_key).
            event_id=f"p:{kind}:{round(ts * 1000):011x}:"
                     + hashlib.sha1(f"{st.subject}|{st.zone}|{round(ts * 1000)}".encode()).hexdigest()[:20],
            kind=kind, source=st.gateway, ts=ts, received_at=ts, zone=st.zone, subject=st.subject,
            customer=st.customer, data=data,
        )
