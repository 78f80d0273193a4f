"""Presence engine benchmark: sightings/s through PresenceTracker.observe, expire() cost, and flapping.

A synthetic store: GATEWAYS gateways on a 6 m grid (10 per row), two neighbouring gateways per zone,
SUBJECTS beacons. Each gateway within HEAR_M of a beacon reports it about once a second (jittered, 5%
lost) with a log-distance RSSI plus noise: Gaussian (4 dB), deep fades (10%, -8..-20 dB), reflections
(2%, +6..+12 dB) and a slow per-(beacon, gateway) shadowing drift (AR(1), 2 dB). A quarter of the
beacons stand exactly halfway between two gateways of different zones (the flapping case); 10% walk,
mid-run, to within a metre of a gateway of another zone (a clear move). Sightings are built per 0.25 s
slice outside the timed region; each slice is fed to observe() and followed by one expire() call, as the
pipeline's tick does.

Figures: updates_per_s (observe calls per second of CPU, with the expire ticks included), expire cost per
tick with SUBJECTS present (and, for comparison, the cost of scanning them all), the cost of one tick
that lets every subject go (store closing), take_changes cost and rows per tick; and quality after a
warm-up (the beacons appear in the first 10 s at random spots, so some are first placed at a farther
gateway and then corrected): spurious_transitions (a subject entering a zone other than the one it
stands in (or one within 3 dB of it) or walks through, a subject switching between two such zones, a
visit ended while the beacon is still heard), moves detected and their latency from arrival at the
new spot.
--shadow-db 0 leaves white noise only: what remains is the engine's own doing, not the physics'.
The last line printed is a JSON object with all figures.

    python bench/presence.py [--subjects 2000] [--gateways 50] [--seconds 120] [--seed 7] [--shadow-db 2]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.config import parse_config  # noqa: E402
from edge.model import Event  # noqa: E402
from edge.domain.presence import PresenceTracker  # noqa: E402

SPACING_M = 6.0
PER_ROW = 10
HEAR_M = 10.0
TICK_S = 0.25
ARRIVE_S = 10.0  # beacons are first heard during the first 10 s
WARMUP_S = 25.0
WALK_S = 5.0  # a walker crosses the floor in 5 s
AMBIGUOUS_DB = 3.0  # zones whose mean RSSI differs by less than this are equally right


def rssi_at(d: float) -> float:
    """Mean RSSI at d metres: 1 m power -59 dBm, path-loss exponent 2.2 (indoor, open floor)."""
    return -59.0 - 22.0 * math.log10(max(d, 0.5))


def build_config(gateways: int):
    zones, gws = [], []
    for i in range(gateways):
        col, row = i % PER_ROW, i // PER_ROW
        zone = f"z{row}-{col // 2}"
        if not zones or zones[-1]["id"] != zone:
            zones.append({"id": zone, "exit_after_s": 10.0, "dwell_s": [30.0, 90.0]})
        gws.append({"id": f"gw-{i}", "zone": zone})
    return parse_config({"store": {"id": "bench"}, "zones": zones, "gateways": gws}, env={})


class World:
    def __init__(self, cfg, subjects: int, seed: int, seconds: float, shadow_db: float = 2.0) -> None:
        self.rng = random.Random(seed)
        self.shadow_db = shadow_db
        rng = self.rng
        self.gw = [(g.id, g.zone, (i % PER_ROW) * SPACING_M, (i // PER_ROW) * SPACING_M)
                   for i, g in enumerate(cfg.gateways)]
        width = (PER_ROW - 1) * SPACING_M
        height = ((len(self.gw) - 1) // PER_ROW) * SPACING_M
        self.subjects = []
        pairs = [(a, a + 1) for a in range(len(self.gw) - 1)
                 if self.gw[a][1] != self.gw[a + 1][1] and self.gw[a][3] == self.gw[a + 1][3]]
        for n in range(subjects):
            kind = "between" if n % 4 == 0 else "still"
            if kind == "between":
                a, b = rng.choice(pairs)
                pos = ((self.gw[a][2] + self.gw[b][2]) / 2, self.gw[a][3])
            else:
                pos = (rng.uniform(0, width), rng.uniform(0, height))
            home = self.home_zones(pos)
            mover = n % 10 == 5
            dest = None
            while mover and (dest is None or self.nearest_zone(dest) in home):
                _, _, gx, gy = rng.choice(self.gw)  # a clear move: to within a metre of another zone's gateway
                dest = (gx + rng.uniform(-0.7, 0.7), gy + rng.uniform(-0.7, 0.7))
            self.subjects.append({
                "key": f"ibeacon:bench:{n}", "pos": pos, "start": pos, "dest": dest,
                "move_at": rng.uniform(WARMUP_S + 10, seconds - 30) if mover else None,
                "arrive": rng.uniform(0, ARRIVE_S),
                "phase": {}, "shadow": {}, "kind": kind, "home": home,
            })
        self.seq = 0

    def position(self, s: dict, t: float) -> tuple[float, float]:
        if s["dest"] is None or t < s["move_at"]:
            return s["start"]
        f = min(1.0, (t - s["move_at"]) / WALK_S)
        (x0, y0), (x1, y1) = s["start"], s["dest"]
        return (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f)

    def home_zones(self, pos: tuple[float, float]) -> tuple[str, ...]:
        """The zone of the nearest gateway, and any zone heard within AMBIGUOUS_DB of it on average:
        from there, either is a right answer (a subject halfway between two zones has two)."""
        level: dict[str, float] = {}
        for _, zone, gx, gy in self.gw:
            level[zone] = max(level.get(zone, -999.0), rssi_at(math.hypot(gx - pos[0], gy - pos[1])))
        top = max(level.values())
        return tuple(z for z, v in level.items() if v >= top - AMBIGUOUS_DB)

    def nearest_zone(self, pos: tuple[float, float]) -> str:
        return min(self.gw, key=lambda g: (g[2] - pos[0]) ** 2 + (g[3] - pos[1]) ** 2)[1]

    def slice(self, t0: float, t1: float) -> list[Event]:
        """Every sighting received in [t0, t1), in receive order."""
        rng = self.rng
        out = []
        for s in self.subjects:
            if t0 < s["arrive"]:
                continue
            x, y = self.position(s, t0)
            for gid, zone, gx, gy in self.gw:
                d = math.hypot(gx - x, gy - y)
                if d > HEAR_M:
                    continue
                phase = s["phase"].get(gid)
                if phase is None:
                    phase = s["phase"][gid] = rng.random()
                t = math.floor(t0) + phase  # once a second at this gateway's phase
                if not (t0 <= t < t1) and not (t0 <= t + 1 < t1):
                    continue
                t = t if t0 <= t < t1 else t + 1
                if rng.random() < 0.05:
                    continue  # lost
                sh = s["shadow"].get(gid, 0.0) * 0.9 + rng.gauss(0, self.shadow_db * math.sqrt(1 - 0.81))
                s["shadow"][gid] = sh
                r = rssi_at(d) + sh + rng.gauss(0, 4.0)
                u = rng.random()
                if u < 0.10:
                    r -= rng.uniform(8, 20)
                elif u < 0.12:
                    r += rng.uniform(6, 12)
                self.seq += 1
                t += rng.uniform(-0.05, 0.05)
                out.append(Event(event_id=f"b{self.seq}", kind="beacon", source=gid, ts=t,
                                 received_at=min(max(t, t0), t1 - 1e-6), zone=zone, subject=s["key"],
                                 data={"rssi": int(round(max(-130.0, r)))}))
        out.sort(key=lambda e: e.received_at)
        return out


def run(subjects: int, gateways: int, seconds: float, seed: int, shadow_db: float = 2.0) -> dict:
    cfg = build_config(gateways)
    world = World(cfg, subjects, seed, seconds, shadow_db)
    tracker = PresenceTracker(cfg)
    t0 = 1_700_000_000.0
    observe_s = 0.0
    expire_s = 0.0
    expire_times: list[float] = []
    scan_times: list[float] = []
    take_times: list[float] = []
    row_counts: list[int] = []
    updates = 0
    changes: dict[str, list[tuple[float, str, str]]] = {}
    steps = int(seconds / TICK_S)
    gc.collect()
    for step in range(steps):
        a, b = t0 + step * TICK_S, t0 + (step + 1) * TICK_S
        batch = world.slice(a - t0, b - t0)
        for e in batch:
            e.received_at += t0
        observe = tracker.observe
        derived = []
        start = time.perf_counter()
        for e in batch:
            d = observe(e)
            if d:
                derived.extend(d)
        mid = time.perf_counter()
        derived.extend(tracker.expire(b))
        end = time.perf_counter()
        rows, _ = tracker.take_changes()
        taken = time.perf_counter()
        # For comparison: what scanning every subject each tick (the first presence engine) costs.
        due = 0
        for st in tracker.state.values():
            if b - st.last_seen > 10.0:
                due += 1
        scan_times.append(time.perf_counter() - taken)
        take_times.append(taken - end)
        row_counts.append(len(rows))
        observe_s += mid - start
        expire_s += end - mid
        expire_times.append(end - mid)
        updates += len(batch)
        for d in derived:
            if d.kind in ("zone_enter", "visit_end"):
                changes.setdefault(d.subject, []).append((d.ts - t0, d.kind, d.zone))

    # Flapping, after the warm-up (beacons appear in the first seconds, some first placed at a farther
    # gateway and then corrected). "Home" is the zone whose gateway is nearest to where the subject
    # stands, plus any zone within AMBIGUOUS_DB of it (both zones for a subject standing halfway between
    # two). Entering a home zone from elsewhere is a correction; entering a zone that is not home, or
    # leaving a home zone for another one, is spurious. For a walker, after it starts walking, home is
    # every home zone of a point of its walk and only entering a zone off the walk is spurious. A visit
    # that ends (silence) is spurious.
    spurious = 0
    between_spurious = 0
    moved = detected = 0
    latencies = []
    for s in world.subjects:
        evs = changes.get(s["key"], [])
        between = s["dest"] is None and s["kind"] == "between"
        home = set(s["home"])
        walk = _walk_zones(world, s) if s["dest"] is not None else set()
        bad = 0
        prev = None
        for ts, kind, zone in evs:
            if kind == "visit_end":
                bad += ts >= WARMUP_S
                prev = None
                continue
            if ts >= WARMUP_S:
                if s["dest"] is not None and ts >= s["move_at"]:
                    bad += zone not in walk
                else:
                    bad += zone not in home or prev in home
            prev = zone
        if s["dest"] is not None:
            target = world.nearest_zone(s["dest"])
            placed = [c[2] for c in evs if c[0] < s["move_at"] and c[1] == "zone_enter"]
            if target not in home and placed[-1:] != [target]:  # (it may have been put there at first)
                moved += 1
                arrived = [c for c in evs if c[0] >= s["move_at"] and c[1] == "zone_enter" and c[2] == target]
                if arrived:
                    detected += 1
                    latencies.append(arrived[0][0] - (s["move_at"] + WALK_S))  # from arrival at the spot
        spurious += bad
        between_spurious += bad if between else 0

    steady = sorted(expire_times[int(WARMUP_S / TICK_S):])
    present = len(tracker.state)
    # Closing time: nobody is heard any more, one tick lets everyone go.
    last = t0 + steps * TICK_S
    start = time.perf_counter()
    gone = tracker.expire(last + 60.0)
    closing_ms = (time.perf_counter() - start) * 1000
    return {
        "updates_per_s": round(updates / (observe_s + expire_s)),
        "observe_us": round(observe_s / updates * 1e6, 2),
        "subjects": subjects,
        "gateways": gateways,
        "zones": len(cfg.zones),
        "sightings": updates,
        "simulated_s": seconds,
        "shadow_db": shadow_db,
        "sightings_per_simulated_s": round(updates / seconds),
        "realtime_factor": round(seconds / (observe_s + expire_s), 1),
        "present_at_end": present,
        "expire_us_per_tick_mean": round(statistics.fmean(steady) * 1e6, 1),
        "expire_us_per_tick_p99": round(steady[int(len(steady) * 0.99)] * 1e6, 1),
        "expire_scan_us_per_tick": round(statistics.fmean(scan_times[int(WARMUP_S / TICK_S):]) * 1e6, 1),
        "expire_ms_all_leave": round(closing_ms, 2),
        "take_changes_us_per_tick": round(statistics.fmean(take_times) * 1e6, 1),
        "rows_per_tick": round(statistics.fmean(row_counts), 1),
        "exits_all_leave": sum(1 for e in gone if e.kind == "zone_exit"),
        "spurious_transitions": spurious,
        "spurious_between_zones": between_spurious,
        "subjects_between_zones": sum(1 for s in world.subjects if s["kind"] == "between" and s["dest"] is None),
        "moves": moved,
        "moves_detected": detected,
        "move_latency_s_p50": round(statistics.median(latencies), 2) if latencies else None,
        "move_latency_s_p90": round(sorted(latencies)[int(len(latencies) * 0.9)], 2) if latencies else None,
    }


def _walk_zones(world: World, s: dict) -> set[str]:
    """The home zones of the points of a walk (sampled every half metre)."""
    (x0, y0), (x1, y1) = s["start"], s["dest"]
    steps = max(1, int(math.hypot(x1 - x0, y1 - y0) / 0.5))
    zones: set[str] = set()
    for i in range(steps + 1):
        zones.update(world.home_zones((x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)))
    return zones


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subjects", type=int, default=2000)
    ap.add_argument("--gateways", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--shadow-db", type=float, default=2.0, help="slow shadowing drift per link (0: white noise only)")
    args = ap.parse_args()
    res = run(args.subjects, args.gateways, args.seconds, args.seed, args.shadow_db)
    print(f"{res['updates_per_s']:,} presence updates/s ({res['observe_us']} us each) for {res['subjects']} "
          f"subjects, {res['gateways']} gateways; {res['realtime_factor']}x real time")
    print(f"expire(): {res['expire_us_per_tick_mean']} us per tick (p99 {res['expire_us_per_tick_p99']} us; "
          f"scanning every subject would take {res['expire_scan_us_per_tick']} us), "
          f"{res['expire_ms_all_leave']} ms for a tick that lets all {res['exits_all_leave']} leave")
    print(f"take_changes(): {res['take_changes_us_per_tick']} us per tick, {res['rows_per_tick']} rows to write")
    print(f"spurious transitions: {res['spurious_transitions']} ({res['spurious_between_zones']} among "
          f"{res['subjects_between_zones']} subjects standing between zones); moves detected "
          f"{res['moves_detected']}/{res['moves']}, latency p50 {res['move_latency_s_p50']} s")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
