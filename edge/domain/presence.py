"""Zone presence from noisy BLE RSSI: a smoothed level per gateway, the zone with hysteresis, visits.

Smoothing. For each (subject, gateway) the level is the median of the last FILTER_K readings no older
than FILTER_AGE_S (the upper median for an even count). Why a median and not a 1-D Kalman filter: BLE RSSI
noise is not Gaussian. A body or a shelf between beacon and gateway drops single readings by 10-20 dB,
reflections add the odd strong one; a Kalman filter is a weighted mean, so each such reading pulls it,
and it needs process/measurement noise tuned per store. The median ignores up to two outliers in five
readings, needs no tuning, forgets in FILTER_AGE_S, and costs a sort of five numbers.

Zone. The zone is that of the best gateway, with hysteresis. The subject keeps its zone while no other
zone's gateway beats the zone's best fresh one (heard in the last STALE_S) by more than the zone's
`hysteresis_db`. While one does, evidence builds up at a rate proportional to the lead above that
margin, so that a lead of twice the margin moves the subject after `switch_after_s`, a clear move
(a lead of 20-30 dB) in a second or two, and a lead hovering just above the margin, which is what
noise gives a shopper standing between two zones, practically never; the evidence is lost as soon
as no zone leads by the margin. The move also needs `switch_readings` sightings by gateways of the two
zones, and the challenging gateway that many readings (up to FILTER_K) in its window, so a single
strong reflection never moves anyone. (This is a one-sided CUSUM test on the lead; the plain rule
"lead above the margin for N seconds" flapped several times more in bench/presence.py for the same
move latency.) The first sighting places the subject at once and starts a visit. Sightings weaker than the
zone's `min_rssi` are ignored altogether.

Events (ts = the receive time that proved them; gateways' clocks are not trusted): `visit_start`, then
`zone_enter`; `zone_dwell` once per threshold of the zone's `dwell_s` per stay, when a reading proves
the subject is still there (ts = entered_at + threshold); `zone_exit` + `zone_enter` on a move;
`zone_exit` + `visit_end` after the zone's `exit_after_s` of silence from every gateway (ts = last
seen). Every event carries data `visit_id` and `dwell_s`; tracked staff/asset beacons add
{"staff": true} or {"asset": true}; untracked ones leave no state at all. Event ids are
`p:{kind}:{subject}:{zone}:{ms}`, computed from the inputs only, so a replay yields the same ids.

Silence is found by `expire` from a timer wheel: each subject is filed under the quarter-second slot of
its deadline (last seen + exit_after_s). A sighting only moves `last_seen`; when its slot comes, a
subject heard since is filed again under its new deadline. So a tick visits only the slots that have
come due, never every subject: with 2,000 subjects it costs tens of microseconds, and each subject is
re-filed at most once per `exit_after_s`.

Persistence: `take_changes()` returns the `presence` table's rows (COLUMNS: where, since when, who, the
visit, and `state`, JSON: dwell thresholds done, zones of the visit) for `Writer.upsert_presence`. A row is written when the zone, visit or dwell state
changes, otherwise at most every PERSIST_EVERY_S per subject (last_seen alone). Filters are not
persisted: they refill from fresh readings within seconds of a restart.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge.config import Config, ZoneConfig
from edge.model import Event

ENTER = "zone_enter"
DWELL = "zone_dwell"
EXIT = "zone_exit"
VISIT_START = "visit_start"
VISIT_END = "visit_end"
KINDS = (VISIT_START, ENTER, DWELL, EXIT, VISIT_END)

FILTER_K = 5  # readings per (subject, gateway) the median is taken over
FILTER_AGE_S = 10.0  # ... none older than this
STALE_S = 5.0  # a gateway that has not heard the subject for this long does not count
PERSIST_EVERY_S = 1.0  # when only last_seen moved, a subject's row is written at most this often
SLOTS_PER_S = 4  # the silence timer's resolution: the pipeline's tick is 0.25 s
MAX_SPEEDUP = 4.0  # a large lead moves a subject at most this many times sooner than switch_after_s
MAX_VISIT_ZONES = 64  # a visit lists at most this many zones (the first ones), to bound its row

# Columns of the presence table written by take_changes (files from before schema v2 have the first six only).
COLUMNS = ("subject", "zone", "gateway", "entered_at", "last_seen", "customer", "visit_id", "visit_started_at",
           "state")

_INF = math.inf


@dataclass(frozen=True, slots=True)
class _ZoneRules:
    """A zone's presence thresholds, read once from its ZoneConfig."""

    exit_after: float
    dwell: tuple[float, ...]
    margin: float
    switch_after: float
    switch_readings: int
    eligible: int  # readings a challenging gateway needs in its window
    min_rssi: float
    rate: float  # evidence per second per dB of lead above the margin
    max_rate: float  # evidence per second at most (also for a lead over a zone no longer heard)
    max_excess: float  # the lead above the margin that gives max_rate

    @classmethod
    def of(cls, z: ZoneConfig) -> _ZoneRules:
        margin, after = z.hysteresis_db, z.switch_after_s
        if after <= 0:  # moves at once (after switch_readings sightings)
            rate = max_rate = max_excess = 0.0
        elif margin > 0:  # a lead of twice the margin moves the subject in switch_after_s
            rate = 1.0 / (margin * after)
            max_rate = MAX_SPEEDUP / after
            max_excess = MAX_SPEEDUP * margin
        else:  # no margin: any lead, held for switch_after_s
            rate = 0.0
            max_rate = 1.0 / after
            max_excess = 0.0
        return cls(z.exit_after_s, tuple(sorted(set(z.dwell_s))), margin, after, z.switch_readings,
                   min(z.switch_readings, FILTER_K), z.min_rssi, rate, max_rate, max_excess)


class _Gateway:
    """One gateway's recent readings of one subject, and their median (`level`)."""

    __slots__ = ("zone", "times", "vals", "level", "last")

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self.times: list[float] = []
        self.vals: list[float] = []
        self.level = -_INF
        self.last = -_INF

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
        self.level = vals[0] if n == 1 else sorted(vals)[n >> 1]
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
    candidate: str | None = None  # the zone beating this one by the margin, while one does
    candidate_at: float = 0.0  # when that was last checked
    candidate_n: int = 0  # sightings since, by gateways of either zone
    evidence: float = 0.0  # 1.0 moves the subject
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


class PresenceTracker:
    """Per-subject zone and visit state; `observe` and `expire` return the derived presence events."""

    def __init__(self, cfg: Config, rows: list[dict] | None = None) -> None:
        self.cfg = cfg
        self._store = cfg.store.id
        self._rules = {z.id: _ZoneRules.of(z) for z in cfg.zones}
        self._default = _ZoneRules.of(ZoneConfig(id="unknown"))
        self._ignored = frozenset(b.key for b in cfg.beacons if not b.track)
        self._tags = {b.key: b.kind for b in cfg.beacons if b.track}
        self.state: dict[str, Presence] = {}
        self.dirty: set[str] = set()
        self.gone: set[str] = set()
        # Timer wheel: slot (a quarter second) -> subjects whose silence deadline falls in it.
        self._wheel: dict[int, list[Presence]] = {}
        self._slot = -(1 << 62)  # the last slot expire() has handled
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
        for r in rows:
            self._restore(r)

    def forget(self, customer: str, keys: Sequence[str] = ()) -> None:
        """Erasure: subjects linked to the customer stay present, anonymous (persisted with the next commit)."""
        for subject, st in list(self.state.items()):
            if st.customer == customer:
                self.set_customer(subject, None)

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
        now = event.received_at
        st = self.state.get(subject)
        if st is None:
            return self._arrive(event, subject, zone, now, rssi)
        if now < st.last_seen:
            now = st.last_seen
        gateways = st.gateways
        source = event.source
        g = gateways.get(source)
        if g is None:
            g = gateways[source] = _Gateway(zone)
        g.add(now, rssi)
        st.last_seen = now
        if event.customer is not None and event.customer != st.customer:
            st.customer = event.customer
            st.saved_seen = -_INF

        # The best fresh gateway of the current zone, and the best eligible one of any other zone.
        cur = st.zone
        here = self._rules.get(cur) or self._default
        stale = now - STALE_S
        forget = now - FILTER_AGE_S
        need = here.eligible
        cur_best = best = -_INF
        cur_gw = best_gw = None
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
                    cur_gw = gid
            elif g.level > best and len(g.vals) >= need:
                best = g.level
                best_gw = gid
        if dead is not None:
            for gid in dead:
                del gateways[gid]
        if cur_gw is not None:
            st.gateway = cur_gw

        # Hysteresis: evidence that the subject left its zone builds up while another zone leads by more
        # than the margin, at a rate that grows with the lead; it drops to nothing when the lead fails.
        if best_gw is not None and best - cur_best >= here.margin:
            to = gateways[best_gw].zone
            if st.candidate is None:
                st.candidate_n = 1
                st.evidence = 0.0
            else:
                if zone == to or zone == cur:  # a sighting that tells something about the two zones
                    st.candidate_n += 1
                excess = best - cur_best - here.margin
                st.evidence += (here.max_rate if excess >= here.max_excess else excess * here.rate) \
                    * (now - st.candidate_at)
            st.candidate = to
            st.candidate_at = now
            if st.candidate_n >= here.switch_readings and (st.evidence >= 1.0 or here.switch_after <= 0.0):
                return self._move(st, to, best_gw, now)
        elif st.candidate is not None:
            st.candidate = None

        if now >= st.next_dwell:
            self.dirty.add(subject)
            return self._dwell(st, now)
        if now - st.saved_seen >= PERSIST_EVERY_S:
            self.dirty.add(subject)
        return []

    def expire(self, now: float) -> list[Event]:
        """Subjects silent for longer than their zone's exit_after_s have left the zone and the store."""
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
    def _arrive(self, event: Event, subject: str, zone: str, now: float, rssi: float) -> list[Event]:
        """The first sighting of a subject not in the store: a visit starts, the zone is entered."""
        st = Presence(subject, zone, event.source, now, now, event.customer,
                      visit_id=self._visit_id(subject, now), visit_started_at=now, zones=[zone],
                      tag=self._tags.get(subject))
        g = st.gateways[event.source] = _Gateway(zone)
        g.add(now, rssi)
        rules = self._rules.get(zone) or self._default
        st.next_dwell = now + rules.dwell[0] if rules.dwell else _INF
        self.state[subject] = st
        self._arm(st, now + rules.exit_after)
        self.dirty.add(subject)
        self.gone.discard(subject)
        return [self._event(VISIT_START, st, now, {"dwell_s": 0.0}), self._event(ENTER, st, now, {"dwell_s": 0.0})]

    def _move(self, st: Presence, to: str, gateway: str, now: float) -> list[Event]:
        out = [self._event(EXIT, st, now, {"dwell_s": round(now - st.entered_at, 3)})]
        st.zone = to
        st.gateway = gateway
        st.entered_at = now
        st.dwell_done = 0
        st.candidate = None
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
                      tag=self._tags.get(subject), saved_seen=seen)
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
