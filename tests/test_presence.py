"""The presence engine: noisy RSSI in, trustworthy zone and visit events out.

Unit tests drive PresenceTracker directly with synthetic sightings whose receive times are chosen by the
test (no clock, no sleeps), calling expire() every 0.25 s of that time as the pipeline does. The last
test goes through MQTT and the real pipeline.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from edge.config import Config, ConfigError, parse_config
from edge.model import Event
from edge.domain.presence import COLUMNS, PresenceTracker
from edge.store.writer import Writer, open_writer

T0 = 1_760_000_000.0
TICK = 0.25
SUBJECT = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100:1"
STAFF = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100:7"
TROLLEY = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100:8"
BADGE = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100:9"


def config(zones: list[dict[str, Any]] | None = None, beacons: list[dict[str, Any]] | None = None) -> Config:
    zones = zones or [{"id": "entrance", "exit_after_s": 10.0, "dwell_s": [20.0, 60.0]},
                      {"id": "shoes", "exit_after_s": 10.0, "dwell_s": [20.0, 60.0]}]
    gateways = [{"id": f"gw-{z['id']}", "zone": z["id"]} for z in zones]
    return parse_config({"store": {"id": "teststore"}, "zones": zones, "gateways": gateways,
                         "beacons": beacons or []}, env={})


def sighting(cfg: Config, gateway: str, rssi: float, t: float, subject: str = SUBJECT) -> Event:
    """A beacon event as the normalizer makes it; the gateway's own clock is an hour off on purpose."""
    zone = next(g.zone for g in cfg.gateways if g.id == gateway)
    return Event(event_id=f"b:{gateway}:{subject}:{t}", kind="beacon", source=gateway, ts=t - 3600.0,
                 received_at=t, zone=zone, subject=subject, data={"rssi": int(round(rssi)), "beacon_type": "ibeacon"})


class Clock:
    """Feeds sightings in receive order and calls expire() every TICK in between, like the pipeline."""

    def __init__(self, tracker: PresenceTracker, start: float = T0) -> None:
        self.tracker = tracker
        self.next_tick = start
        self.events: list[Event] = []

    def until(self, t: float) -> list[Event]:
        out = []
        while self.next_tick <= t:
            out += self.tracker.expire(self.next_tick)
            self.next_tick += TICK
        self.events += out
        return out

    def feed(self, sightings: Iterable[Event]) -> list[Event]:
        out = []
        for e in sorted(sightings, key=lambda e: e.received_at):
            out += self.until(e.received_at)
            derived = self.tracker.observe(e)
            self.events += derived
            out += derived
        return out


def noisy(rng: random.Random, mean: float) -> float:
    """BLE-like RSSI: Gaussian noise, with the odd deep fade and strong reflection."""
    r = mean + rng.gauss(0, 4.0)
    u = rng.random()
    if u < 0.10:
        r -= rng.uniform(8, 20)
    elif u < 0.12:
        r += rng.uniform(6, 12)
    return r


def walk(cfg: Config, rng: random.Random, start: float, seconds: float, means: dict[str, float],
         subject: str = SUBJECT) -> list[Event]:
    """Each gateway reports the subject about once a second (jittered, 5% lost) around its mean RSSI."""
    out = []
    for i, (gw, mean) in enumerate(means.items()):
        t = start + 0.37 * i
        while t < start + seconds:
            if rng.random() >= 0.05:
                out.append(sighting(cfg, gw, noisy(rng, mean), t + rng.uniform(0, 0.1), subject))
            t += 1.0
    return out


def stroll(cfg: Config, rng: random.Random, where: Callable[[float], float], gateways: dict[str, float],
           seconds: float, sigma: float = 5.0, fades: bool = True) -> list[Event]:
    """A shopper at x = where(t) metres along a row of gateways (at x = gateways[id], 1.5 m above the
    phone), as a store hears them: log-distance RSSI (-59 dBm at 1 m, exponent 2.4) with Gaussian noise,
    body fades (2 % of readings start one: -15 dB for 2-5 readings), 10 % lost, each gateway reporting
    once a second at its own phase."""
    out = []
    for gw, gx in gateways.items():
        phase, fade = rng.random(), 0
        for second in range(int(seconds)):
            t = second + phase
            if fade == 0 and rng.random() < 0.02 and fades:
                fade = rng.randint(2, 5)
            faded = 15.0 if fade else 0.0
            fade = max(0, fade - 1)
            if rng.random() < 0.10:
                continue
            d = math.hypot(where(t) - gx, 1.5)
            out.append(sighting(cfg, gw, -59.0 - 24.0 * math.log10(d) + rng.gauss(0, sigma) - faded, T0 + t))
    return out


def kinds(events: list[Event]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.zone) for e in events]


def test_first_sighting_starts_a_visit_and_enters_the_zone():
    cfg = config()
    tracker = PresenceTracker(cfg)
    out = tracker.observe(sighting(cfg, "gw-entrance", -65, T0))
    assert kinds(out) == [("visit_start", "entrance"), ("zone_enter", "entrance")]
    visit_id = out[0].data["visit_id"]
    assert visit_id.startswith("v-") and all(e.data["visit_id"] == visit_id for e in out)
    assert all(e.ts == T0 and e.source == "gw-entrance" and e.subject == SUBJECT for e in out)  # receive time
    assert out[1].data["dwell_s"] == 0.0 and "staff" not in out[1].data
    assert tracker.zone_of(SUBJECT) == "entrance" and tracker.visit_of(SUBJECT) == (visit_id, T0)
    assert tracker.state[SUBJECT].zone == "entrance"
    # Deterministic (a replay gives the same id) and free of the subject key (erasure leaves no trace).
    assert out[1].event_id.startswith("p:zone_enter:") and SUBJECT not in out[1].event_id
    assert PresenceTracker(cfg).observe(sighting(cfg, "gw-entrance", -65, T0))[1].event_id == out[1].event_id
    # More sightings in the same zone say nothing new.
    assert tracker.observe(sighting(cfg, "gw-entrance", -66, T0 + 1)) == []
    assert tracker.zone_of("ibeacon:someone-else") is None
    assert tracker.visit_of("ibeacon:someone-else") == (None, None)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_shopper_standing_between_two_zones_does_not_flap(seed):
    cfg = config([{"id": "entrance", "exit_after_s": 10.0, "dwell_s": [600.0]},
                  {"id": "shoes", "exit_after_s": 10.0, "dwell_s": [600.0]}])
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    rng = random.Random(seed)
    # Ten minutes halfway between the two gateways: both hear -70 dBm on average. Either zone is right.
    # An engine that follows a real move within seconds may change zone now and then here (the two
    # cases differ by a few dB that noise covers), but rarely, and it never bounces the shopper back.
    out = clock.feed(walk(cfg, rng, T0, 600.0, {"gw-entrance": -70.0, "gw-shoes": -70.0}))
    assert kinds(out)[:1] == [("visit_start", "entrance")] or kinds(out)[:1] == [("visit_start", "shoes")]
    enters = [e.ts for e in out if e.kind == "zone_enter"]
    assert [e.kind for e in out if e.kind not in ("zone_enter", "zone_exit")] == ["visit_start"]
    assert len(enters) - 1 <= 3, kinds(out)
    assert all(b - a >= 5.0 for a, b in zip(enters, enters[1:])), enters


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_raising_hysteresis_db_holds_a_shopper_on_a_border(seed):
    """Where two zones' screens face each other, a store trades some speed for calm with hysteresis_db."""
    cfg = config([{"id": "entrance", "exit_after_s": 10.0, "dwell_s": [600.0], "hysteresis_db": 5.0},
                  {"id": "shoes", "exit_after_s": 10.0, "dwell_s": [600.0], "hysteresis_db": 5.0}])
    out = Clock(PresenceTracker(cfg)).feed(
        walk(cfg, random.Random(seed), T0, 600.0, {"gw-entrance": -70.0, "gw-shoes": -70.0}))
    assert [e.kind for e in out] == ["visit_start", "zone_enter"], kinds(out)


def test_a_clear_move_exits_one_zone_and_enters_the_other():
    cfg = config()
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    rng = random.Random(4)
    clock.feed(walk(cfg, rng, T0, 30.0, {"gw-entrance": -60.0, "gw-shoes": -82.0}))
    assert tracker.zone_of(SUBJECT) == "entrance"
    visit_id, _ = tracker.visit_of(SUBJECT)
    before = len(clock.events)
    # The shopper walks over to the shoes: now that gateway hears them well, the entrance one hardly.
    clock.feed(walk(cfg, rng, T0 + 30.0, 30.0, {"gw-entrance": -84.0, "gw-shoes": -58.0}))
    moved = [e for e in clock.events[before:] if e.kind in ("zone_exit", "zone_enter")]
    assert kinds(moved) == [("zone_exit", "entrance"), ("zone_enter", "shoes")]
    exit_, enter = moved
    assert exit_.ts == enter.ts and T0 + 30.0 < enter.ts < T0 + 30.0 + 8.0  # within seconds of the move
    assert exit_.source == "gw-entrance" and enter.source == "gw-shoes"
    assert exit_.data["dwell_s"] == pytest.approx(enter.ts - T0, abs=0.2)
    assert tracker.zone_of(SUBJECT) == "shoes" and tracker.visit_of(SUBJECT)[0] == visit_id  # same visit
    assert {e.data["visit_id"] for e in moved} == {visit_id}


def test_a_walking_shopper_is_shown_in_the_next_zone_within_seconds():
    """Gateways 8 m apart, 5 dB noise: a shopper stands 1 m from the entrance gateway, walks over at
    1.2 m/s and stops 1 m from the shoes gateway 35 s in. Over ten shoppers the shoes zone knows it
    a median 3 s after the stop and at worst 8 s (the engine before #15: 9.2 s and 18.6 s)."""
    cfg = config()

    def where(t: float) -> float:  # stands at x = 1 until 30 s, walks 6 m in 5 s, stands at x = 7
        return 1.0 + min(max(t - 30.0, 0.0), 5.0) * 1.2

    after_stop = []
    for seed in range(1, 11):
        clock = Clock(PresenceTracker(cfg))
        clock.feed(stroll(cfg, random.Random(seed), where, {"gw-entrance": 0.0, "gw-shoes": 8.0}, 75.0))
        # (The first sighting may come from the shoes gateway: it places the shopper there, briefly.)
        moves = [(e.kind, e.zone, e.ts - T0) for e in clock.events if e.kind in ("zone_exit", "zone_enter")
                 and e.ts - T0 > 10.0]
        assert [m[:2] for m in moves] == [("zone_exit", "entrance"), ("zone_enter", "shoes")], moves
        assert moves[1][2] > 32.5, moves  # not before crossing the middle
        after_stop.append(moves[1][2] - 35.0)
    assert sorted(after_stop)[4] <= 3.5 and max(after_stop) <= 8.0, sorted(after_stop)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_a_body_fade_does_not_move_a_standing_shopper(seed):
    """Standing 2 m from the entrance gateway (6 m from the shoes one), the phone's link to the entrance
    gateway loses 15 dB for four seconds every 40 s: the shoes gateway now hears it better, yet nobody
    walked anywhere (the shoes gateway did not hear it any better than before)."""
    cfg = config([{"id": "entrance", "dwell_s": [600.0]}, {"id": "shoes", "dwell_s": [600.0]}])
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    sightings = stroll(cfg, random.Random(seed), lambda t: 2.0, {"gw-entrance": 0.0, "gw-shoes": 8.0}, 600.0,
                       sigma=3.0, fades=False)
    for e in sightings:
        if e.source == "gw-entrance" and 20.0 <= (e.received_at - T0) % 40.0 < 24.0:
            e.data["rssi"] -= 15
    out = clock.feed(sightings)
    # (The first sighting may come from the shoes gateway: the first seconds put that right.)
    assert [kinds([e]) for e in out if e.ts - T0 > 10.0] == [] and tracker.zone_of(SUBJECT) == "entrance", kinds(out)


# A 3 x 2 grid of zones, 6 m square, a gateway at each centre; each zone lists its neighbours.
GRID = {"a0": (3.0, 3.0), "a1": (9.0, 3.0), "a2": (15.0, 3.0), "b0": (3.0, 9.0), "b1": (9.0, 9.0), "b2": (15.0, 9.0)}


def grid_config() -> Config:
    def touching(z: str) -> list[str]:
        (x, y) = GRID[z]
        return [o for o, (ox, oy) in GRID.items() if abs(ox - x) + abs(oy - y) == 6.0]

    return config([{"id": z, "dwell_s": [600.0], "adjacent": touching(z)} for z in GRID])


def heard(cfg: Config, rng: random.Random, where: Callable[[float], tuple[float, float]], seconds: float,
          sigma: float, gateways: Iterable[str] = GRID) -> list[Event]:
    """`stroll` on the grid: the shopper at where(t), every gateway listed hearing them (fades included)."""
    out = []
    for zone in gateways:
        gx, gy = GRID[zone]
        phase, fade = rng.random(), 0
        for second in range(int(seconds)):
            t = second + phase
            if fade == 0 and rng.random() < 0.02:
                fade = rng.randint(2, 5)
            faded = 15.0 if fade else 0.0
            fade = max(0, fade - 1)
            if rng.random() < 0.10:
                continue
            x, y = where(t)
            d = math.sqrt((x - gx) ** 2 + (y - gy) ** 2 + 1.5 ** 2)
            out.append(sighting(cfg, f"gw-{zone}", -59.0 - 24.0 * math.log10(d) + rng.gauss(0, sigma) - faded, T0 + t))
    return out


def grid_move(seed: int, sigma: float, gateways: Iterable[str] = GRID) -> tuple[float, list[tuple[str, str, float]]]:
    """A shopper stands in a1 for 40 s, walks 6 m to b1 at 1.2 m/s and stands there: (seconds from stopping
    in b1 to being shown there, every zone change after the first 10 s)."""
    cfg = grid_config()
    a, b = (9.8, 3.7), (8.6, 9.9)

    def where(t: float) -> tuple[float, float]:
        f = min(max(t - 40.0, 0.0) * 1.2 / math.dist(a, b), 1.0)
        return a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f

    stop = 40.0 + math.dist(a, b) / 1.2
    clock = Clock(PresenceTracker(cfg))
    clock.feed(heard(cfg, random.Random(seed), where, 100.0, sigma, gateways))
    moves = [(e.kind, e.zone, e.ts - T0) for e in clock.events if e.kind == "zone_enter" and e.ts - T0 > 10.0]
    shown = next((t for _, z, t in moves if z == "b1"), math.inf)
    return max(shown - stop, 0.0), moves


def test_a_phone_heard_by_six_gateways_is_shown_in_its_new_zone_within_seconds():
    """Every gateway that hears the phone has its say: at 6 dB of noise per reading (and body fades) the
    shopper walking from a1 to b1 is shown in b1 a median 2 s after stopping and at worst 5 s, never in a
    third zone (with the best two gateways alone, before: 2.2 s and 14.3 s)."""
    took = []
    for seed in range(1, 11):
        after, moves = grid_move(seed, 6.0)
        assert [z for _, z, _ in moves] == ["b1"], moves
        took.append(after)
    assert sorted(took)[4] <= 2.0 and max(took) <= 5.0, sorted(took)


def test_in_a_noisy_store_a_walk_to_the_next_zone_is_shown_about_a_second_after_stopping():
    """8 dB of noise per reading (and body fades), six gateways: of 20 shoppers walking from a1 to b1, half
    are shown in b1 within 1.5 s of stopping and 18 within 6 s (each reading weighed against the hearing
    map; the weighed lead of smoothed levels before it: 1.8 s and 7.5 s)."""
    took = sorted(grid_move(seed, 8.0)[0] for seed in range(1, 21))
    assert took[9] <= 1.5 and took[17] <= 6.0, took


def test_a_shopper_standing_in_a_zone_heard_by_six_gateways_stays_there():
    """Ten shoppers, ten minutes each, standing 2.5 m inside a1 (3.5 m from the b1 gateway), 5 dB of
    noise, body fades, and every 40 s a 4 s fade of 15 dB on the a1 link: at most one brief excursion in
    all, and every one of them is in a1 at the end (the issue's target: at most one false change an hour)."""
    changes = 0
    for seed in range(1, 11):
        cfg = grid_config()
        tracker = PresenceTracker(cfg)
        sightings = heard(cfg, random.Random(seed), lambda t: (9.5, 3.5), 600.0, 5.0)
        for e in sightings:
            if e.source == "gw-a1" and 20.0 <= (e.received_at - T0) % 40.0 < 24.0:
                e.data["rssi"] -= 15
        out = Clock(tracker).feed(sightings)
        changes += sum(1 for e in out if e.kind == "zone_enter" and e.ts - T0 > 10.0)
        assert tracker.zone_of(SUBJECT) == "a1", kinds(out)
    assert changes <= 2, changes


def reports(cfg: Config, rng: random.Random, where: dict[str, Callable[[float], tuple[float, float]]],
            seconds: float, sigma: float, floor: float) -> list[Event]:
    """Every grid gateway's report once a second, as in `heard`, of several phones at once (where: subject ->
    position at t); a gateway does not report a reading below `floor` dBm."""
    out = []
    for zone, (gx, gy) in GRID.items():
        phase, fades = rng.random(), dict.fromkeys(where, 0)
        for second in range(int(seconds)):
            t = second + phase
            for subject, at in where.items():
                if fades[subject] == 0 and rng.random() < 0.02:
                    fades[subject] = rng.randint(2, 5)
                faded = 15.0 if fades[subject] else 0.0
                fades[subject] = max(0, fades[subject] - 1)
                if rng.random() < 0.10:
                    continue
                x, y = at(t)
                rssi = -59.0 - 24.0 * math.log10(math.sqrt((x - gx) ** 2 + (y - gy) ** 2 + 1.5 ** 2))
                rssi += rng.gauss(0, sigma) - faded
                if rssi >= floor:
                    out.append(sighting(cfg, f"gw-{zone}", rssi, T0 + t, subject))
    return out


def test_a_gateway_that_stops_hearing_a_shopper_who_walked_off_shows_them_moved_sooner():
    """A gateway's report without a phone is evidence too. Shoppers walk from a1 to b1 at 8 dB of noise; once
    they are past the border, a shelf hides them from a1's gateway. When that gateway keeps reporting (a
    phone lies next to it), its reports without the shopper say they are not near it any more: they are
    shown in b1 sooner than when it falls quiet and says nothing (30 shoppers: on average 4.5 s after
    crossing the border against 5.0 s; the same without silences as evidence)."""
    lying = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100:2"
    a, b = (9.8, 3.7), (8.6, 9.9)
    crossed = 40.0 + (6.0 - a[1]) / (b[1] - a[1]) * math.dist(a, b) / 1.2  # into b1

    def where(t: float) -> tuple[float, float]:
        f = min(max(t - 40.0, 0.0) * 1.2 / math.dist(a, b), 1.0)
        return a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f

    def shown_after(seed: int, reporting: bool) -> float:
        cfg = grid_config()
        clock = Clock(PresenceTracker(cfg))
        sightings = [e for e in reports(cfg, random.Random(seed), {SUBJECT: where, lying: lambda t: (9.0, 3.0)},
                                        80.0, 8.0, -95.0)
                     if e.source == "gw-a1" or e.subject == SUBJECT]
        clock.feed(e for e in sightings if e.source != "gw-a1" or e.received_at < T0 + crossed
                   or (reporting and e.subject == lying))
        enters = [e for e in clock.events if e.subject == SUBJECT and e.kind == "zone_enter"]
        assert enters[-1].zone == "b1", kinds(enters)
        return enters[-1].ts - T0 - crossed  # when the shopper was shown in b1 for good

    quiet = sorted(shown_after(seed, False) for seed in range(1, 31))
    reporting = sorted(shown_after(seed, True) for seed in range(1, 31))
    assert sum(reporting) / 30 <= sum(quiet) / 30 - 0.33, (quiet, reporting)


def test_the_hearing_map_learns_what_each_gateway_hears_from_phones_settled_in_a_zone():
    """The prior says a neighbouring zone's gateway hears a phone 10 dB below the phone's own; phones
    standing in a1 teach the map what the gateways really hear of them there."""
    cfg = grid_config()
    tracker = PresenceTracker(cfg)
    rng = random.Random(3)
    spot = (9.5, 3.5)
    for n in range(10):
        where = (spot[0] + rng.uniform(-1, 1), spot[1] + rng.uniform(-1, 1))
        subject = f"ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:200:{n}"
        Clock(tracker).feed(sighting(cfg, e.source, e.data["rssi"], e.received_at, subject)
                            for e in heard(cfg, rng, lambda t, w=where: w, 60.0, 3.0))
    # Log-distance from about (9.5, 3.5): b1 (5.7 m) some 13 dB below a1 (1.6 m); a0 and a2 (6.7, 5.7 m) 14-15
    # and 13 dB below.
    learned = {g: tracker._map.expected("a1", f"gw-{g}", g) for g in ("a1", "b1", "a0", "a2")}
    assert learned["a1"] == 0.0
    assert all(-17.0 < learned[g] < -11.0 for g in ("b1", "a0", "a2")), learned


def test_a_zone_that_does_not_touch_the_current_one_needs_more_evidence():
    """With [[zones]] adjacent, a jump across the store takes longer than a step to a neighbour."""
    zones = [{"id": "entrance", "dwell_s": [600.0]}, {"id": "shoes", "dwell_s": [600.0]},
             {"id": "bags", "dwell_s": [600.0]}]
    took = {}
    for target in ("shoes", "bags"):
        cfg = config([{**zones[0], "adjacent": ["shoes"]}, {**zones[1], "adjacent": ["bags"]},
                      {**zones[2], "adjacent": []}])
        tracker = PresenceTracker(cfg)
        clock = Clock(tracker)
        clock.feed(sighting(cfg, "gw-entrance", -60, T0 + i) for i in range(5))
        # From 5 s on the target zone's gateway hears the phone 10 dB better than the entrance one.
        out = clock.feed([sighting(cfg, "gw-entrance", -70, T0 + 5 + i) for i in range(20)]
                         + [sighting(cfg, f"gw-{target}", -60, T0 + 5.5 + i) for i in range(20)])
        took[target] = next(e.ts - T0 for e in out if e.kind == "zone_enter") - 5.0
    assert took["bags"] >= 1.3 * took["shoes"], took
    assert took["shoes"] <= 4.0, took


def test_adjacent_must_name_zones_of_the_store():
    with pytest.raises(ConfigError) as err:
        config([{"id": "entrance", "adjacent": ["shoes", "garden"]}, {"id": "shoes", "adjacent": ["shoes"]}])
    text = str(err.value)
    assert "zones[0] (id 'entrance').adjacent: unknown zone 'garden'" in text
    assert "zones[1] (id 'shoes').adjacent: zone 'shoes' lists itself" in text


def test_a_move_to_a_zone_no_longer_heard_from_is_made_too():
    cfg = config()
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    clock.feed(sighting(cfg, "gw-entrance", -60, T0 + i) for i in range(5))
    # The entrance gateway goes quiet (the shopper is out of its range); only the shoes one hears, weakly.
    out = clock.feed(sighting(cfg, "gw-shoes", -88, T0 + 5 + i) for i in range(8))
    assert kinds(out) == [("zone_exit", "entrance"), ("zone_enter", "shoes")]


def test_silence_exits_the_zone_and_ends_the_visit():
    cfg = config()
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    clock.feed(walk(cfg, random.Random(5), T0, 30.0, {"gw-entrance": -60.0, "gw-shoes": -82.0}))
    clock.feed(walk(cfg, random.Random(6), T0 + 30.0, 30.0, {"gw-entrance": -84.0, "gw-shoes": -58.0}))
    last_seen = tracker.state[SUBJECT].last_seen
    visit_id, _ = tracker.visit_of(SUBJECT)
    assert clock.until(last_seen + 9.9) == []  # exit_after_s is 10
    out = clock.until(last_seen + 10.3)
    assert kinds(out) == [("zone_exit", "shoes"), ("visit_end", "shoes")]
    exit_, end = out
    assert exit_.ts == end.ts == last_seen  # they were last seen then
    assert end.data["visit_id"] == visit_id and end.data["zones"] == ["entrance", "shoes"]
    assert end.data["duration_s"] == pytest.approx(last_seen - T0, abs=0.2)
    assert tracker.state == {} and tracker.zone_of(SUBJECT) is None
    rows, gone = tracker.take_changes()
    assert gone == [SUBJECT] and SUBJECT not in [r[0] for r in rows]
    # Coming back later is a new visit.
    back = tracker.observe(sighting(cfg, "gw-entrance", -60, last_seen + 120))
    assert kinds(back) == [("visit_start", "entrance"), ("zone_enter", "entrance")]
    assert back[0].data["visit_id"] != visit_id


def test_a_gateway_hearing_a_subject_from_another_zone_keeps_it_in_the_store():
    cfg = config()
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    clock.feed([sighting(cfg, "gw-entrance", -60, T0)])
    # The shopper stays near the entrance and is only heard, weakly, by the shoes gateway for a while:
    # no silence, so no exit (and the lead over a gateway gone quiet moves them, which is right).
    out = clock.feed(sighting(cfg, "gw-shoes", -92, T0 + 1 + i) for i in range(30))
    assert "visit_end" not in [e.kind for e in out]


def test_moving_to_a_zone_with_a_shorter_exit_after_s_expires_on_time():
    cfg = config([{"id": "entrance", "exit_after_s": 60.0}, {"id": "shoes", "exit_after_s": 5.0}])
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    clock.feed(sighting(cfg, "gw-entrance", -60, T0 + i) for i in range(3))
    clock.feed(sighting(cfg, "gw-shoes", -50, T0 + 3 + i * 0.5) for i in range(12))
    assert tracker.zone_of(SUBJECT) == "shoes"
    last = tracker.state[SUBJECT].last_seen
    assert kinds(clock.until(last + 5.3)) == [("zone_exit", "shoes"), ("visit_end", "shoes")]


def test_dwell_thresholds_fire_once_each_per_stay():
    cfg = config()  # dwell_s = [20, 60]
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    clock.feed(walk(cfg, random.Random(7), T0, 90.0, {"gw-entrance": -60.0, "gw-shoes": -85.0}))
    dwell = [e for e in clock.events if e.kind == "zone_dwell"]
    assert [(e.zone, e.data["dwell_s"]) for e in dwell] == [("entrance", 20.0), ("entrance", 60.0)]
    entered = tracker.state[SUBJECT].entered_at
    assert [e.ts for e in dwell] == [entered + 20.0, entered + 60.0]
    assert len({e.event_id for e in dwell}) == 2
    # A new stay (moved to shoes) counts again from its own enter.
    clock.feed(walk(cfg, random.Random(8), T0 + 90.0, 30.0, {"gw-entrance": -85.0, "gw-shoes": -58.0}))
    dwell = [(e.zone, e.data["dwell_s"]) for e in clock.events if e.kind == "zone_dwell"]
    assert dwell == [("entrance", 20.0), ("entrance", 60.0), ("shoes", 20.0)]


def test_dwell_needs_the_subject_to_be_heard_past_the_threshold():
    cfg = config()
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    clock.feed(sighting(cfg, "gw-entrance", -60, T0 + i) for i in range(15))
    # Last heard at 14 s; the 20 s threshold passes in silence, then the exit comes: no dwell.
    clock.until(T0 + 40)
    assert [e.kind for e in clock.events] == ["visit_start", "zone_enter", "zone_exit", "visit_end"]


def test_outliers_do_not_move_the_subject():
    cfg = config()
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    rng = random.Random(9)
    steady = {"gw-entrance": -62.0, "gw-shoes": -76.0}
    clock.feed(walk(cfg, rng, T0, 20.0, steady))
    n = len(clock.events)
    # A deep fade at the entrance gateway, then a strong reflection at the shoes gateway, twice over.
    clock.feed([sighting(cfg, "gw-entrance", -99, T0 + 20.2), sighting(cfg, "gw-shoes", -45, T0 + 20.4),
                sighting(cfg, "gw-entrance", -97, T0 + 23.2), sighting(cfg, "gw-shoes", -46, T0 + 23.4)]
               + walk(cfg, rng, T0 + 20.0, 24.0, steady))
    assert kinds(clock.events[n:]) == [("zone_dwell", "entrance")] and tracker.zone_of(SUBJECT) == "entrance"


def test_sightings_below_the_zone_min_rssi_are_ignored():
    cfg = config([{"id": "entrance", "min_rssi": -85.0}, {"id": "shoes"}])
    tracker = PresenceTracker(cfg)
    assert tracker.observe(sighting(cfg, "gw-entrance", -91, T0)) == []  # a passer-by outside
    assert tracker.state == {} and tracker.take_changes() == ([], [])
    assert kinds(tracker.observe(sighting(cfg, "gw-entrance", -80, T0 + 1)))[1] == ("zone_enter", "entrance")


def test_hysteresis_can_be_turned_off():
    cfg = config([{"id": "entrance", "hysteresis_db": 0, "switch_after_s": 0, "switch_readings": 1},
                  {"id": "shoes", "hysteresis_db": 0, "switch_after_s": 0, "switch_readings": 1}])
    tracker = PresenceTracker(cfg)
    tracker.observe(sighting(cfg, "gw-entrance", -60, T0))
    out = tracker.observe(sighting(cfg, "gw-shoes", -60, T0 + 0.5))
    assert kinds(out) == [("zone_exit", "entrance"), ("zone_enter", "shoes")]


def test_an_untracked_staff_beacon_leaves_no_trace():
    cfg = config(beacons=[{"key": STAFF, "kind": "staff", "track": False}])
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    clock.feed(walk(cfg, random.Random(10), T0, 60.0, {"gw-entrance": -60.0, "gw-shoes": -70.0}, subject=STAFF))
    clock.until(T0 + 120)
    assert clock.events == [] and tracker.state == {} and tracker.take_changes() == ([], [])


def test_tracked_staff_and_asset_beacons_are_marked_so_rules_never_personalize_them():
    cfg = config(beacons=[{"key": STAFF, "kind": "staff", "track": True},
                          {"key": TROLLEY, "kind": "asset", "track": True},
                          {"key": BADGE, "kind": "staff", "track": False}])
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    for subject in (STAFF, TROLLEY, BADGE, SUBJECT):
        clock.feed(walk(cfg, random.Random(11), T0, 30.0, {"gw-entrance": -60.0, "gw-shoes": -80.0}, subject))
    clock.until(T0 + 60)
    by_subject: dict[str, list[Event]] = {}
    for e in clock.events:
        by_subject.setdefault(e.subject, []).append(e)
    assert BADGE not in by_subject
    expected = ["visit_start", "zone_enter", "zone_dwell", "zone_exit", "visit_end"]
    for subject, mark in ((STAFF, "staff"), (TROLLEY, "asset")):
        assert [e.kind for e in by_subject[subject]] == expected
        assert all(e.data.get(mark) is True for e in by_subject[subject])
    assert not any("staff" in e.data or "asset" in e.data for e in by_subject[SUBJECT])


def _rows_as_dicts(rows: list[tuple], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    return [dict(zip(columns, r)) for r in rows]


def test_presence_survives_a_restart():
    cfg = config()
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    clock.feed(walk(cfg, random.Random(12), T0, 30.0, {"gw-entrance": -60.0, "gw-shoes": -82.0}))
    clock.feed(walk(cfg, random.Random(13), T0 + 30.0, 30.0, {"gw-entrance": -84.0, "gw-shoes": -58.0}))
    before = tracker.state[SUBJECT]
    assert before.zone == "shoes" and before.dwell_done == 1  # the 20 s threshold in shoes fired
    rows, gone = tracker.take_changes()
    assert [len(r) for r in rows] == [len(COLUMNS)] and gone == []

    # The edge restarts a few seconds later and rebuilds presence from the rows.
    restarted = PresenceTracker(cfg, _rows_as_dicts(rows, COLUMNS))
    assert restarted.zone_of(SUBJECT) == "shoes"
    assert restarted.visit_of(SUBJECT) == (before.visit_id, before.visit_started_at)
    after = restarted.state[SUBJECT]
    assert (after.entered_at, after.gateway, after.zones) == (before.entered_at, before.gateway, ["entrance", "shoes"])
    clock2 = Clock(restarted, T0 + 62.0)
    clock2.feed(walk(cfg, random.Random(14), T0 + 62.0, 40.0, {"gw-entrance": -84.0, "gw-shoes": -58.0}))
    # No new visit, no new enter, the 20 s dwell not again; the 60 s one in its time.
    assert [(e.kind, e.data["dwell_s"]) for e in clock2.events] == [("zone_dwell", 60.0)]
    last = restarted.state[SUBJECT].last_seen
    end = clock2.until(last + 11)
    assert kinds(end) == [("zone_exit", "shoes"), ("visit_end", "shoes")]
    assert end[1].data["visit_id"] == before.visit_id and end[1].data["zones"] == ["entrance", "shoes"]


def test_a_restart_after_a_long_outage_ends_the_visits_at_their_last_sighting():
    cfg = config()
    tracker = PresenceTracker(cfg)
    tracker.observe(sighting(cfg, "gw-entrance", -60, T0))
    tracker.observe(sighting(cfg, "gw-entrance", -60, T0 + 3))
    rows, _ = tracker.take_changes()
    restarted = PresenceTracker(cfg, _rows_as_dicts(rows, COLUMNS))
    out = restarted.expire(T0 + 3600)
    assert kinds(out) == [("zone_exit", "entrance"), ("visit_end", "entrance")]
    assert out[0].ts == T0 + 3 and out[1].data["duration_s"] == 3.0


def test_presence_round_trips_through_the_presence_table(tmp_path):
    cfg = config()
    conn = open_writer(tmp_path / "edge.db")
    writer = Writer(conn)
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    clock.feed(walk(cfg, random.Random(15), T0, 30.0, {"gw-entrance": -60.0, "gw-shoes": -82.0}))
    rows, gone = tracker.take_changes()
    writer.begin()
    writer.upsert_presence(rows)
    writer.commit()
    # The HTTP API's six columns keep their meaning.
    api = conn.execute("SELECT subject, zone, gateway, entered_at, last_seen, customer FROM presence").fetchall()
    st = tracker.state[SUBJECT]
    assert api == [(SUBJECT, "entrance", st.gateway, st.entered_at, st.last_seen, None)]
    cur = conn.execute("SELECT * FROM presence")  # what the service reads at start
    cols = [c[0] for c in cur.description]
    restarted = PresenceTracker(cfg, [dict(zip(cols, r)) for r in cur])
    assert restarted.visit_of(SUBJECT) == (st.visit_id, st.visit_started_at)
    assert restarted.state[SUBJECT].dwell_done == st.dwell_done
    # A silence exit deletes the row.
    restarted.expire(T0 + 3600)
    rows, gone = restarted.take_changes()
    writer.begin()
    writer.delete_presence(gone)
    writer.commit()
    assert conn.execute("SELECT count(*) FROM presence").fetchone() == (0,)


def test_six_column_rows_still_restore_without_repeating_events(tmp_path):
    """Rows an edge from before schema v2 wrote (no visit columns) restore with a derived visit id."""
    cfg = config()
    conn = open_writer(tmp_path / "edge.db")
    writer = Writer(conn)
    tracker = PresenceTracker(cfg)
    clock = Clock(tracker)
    clock.feed(sighting(cfg, "gw-entrance", -60, T0 + i) for i in range(25))  # past the 20 s dwell
    rows, _ = tracker.take_changes()
    writer.begin()
    conn.executemany("INSERT INTO presence(subject, zone, gateway, entered_at, last_seen, customer) "
                     "VALUES (?,?,?,?,?,?)", [r[:6] for r in rows])
    writer.commit()
    cur = conn.execute("SELECT * FROM presence")
    cols = [c[0] for c in cur.description]
    restarted = PresenceTracker(cfg, [dict(zip(cols, r)) for r in cur])
    again = PresenceTracker(cfg, [dict(zip(cols, r)) for r in conn.execute("SELECT * FROM presence")])
    assert restarted.visit_of(SUBJECT) == again.visit_of(SUBJECT)  # stable across restarts
    out = Clock(restarted, T0 + 25).feed(sighting(cfg, "gw-entrance", -60, T0 + 25 + i) for i in range(5))
    assert out == []


def test_replayed_sightings_give_the_same_event_ids():
    cfg = config()
    sightings = walk(cfg, random.Random(16), T0, 30.0, {"gw-entrance": -60.0, "gw-shoes": -82.0}) + \
        walk(cfg, random.Random(17), T0 + 30.0, 30.0, {"gw-entrance": -84.0, "gw-shoes": -58.0})
    runs = []
    for _ in range(2):
        clock = Clock(PresenceTracker(cfg))
        clock.feed(sightings)
        clock.until(T0 + 120)
        runs.append([e.event_id for e in clock.events])
    assert runs[0] == runs[1] and len(set(runs[0])) == len(runs[0])
    assert [i.split(":")[1] for i in runs[0]] == [
        "visit_start", "zone_enter", "zone_dwell", "zone_exit", "zone_enter", "zone_dwell", "zone_exit", "visit_end"]


def test_persisting_last_seen_alone_is_throttled():
    cfg = config()
    tracker = PresenceTracker(cfg)
    tracker.observe(sighting(cfg, "gw-entrance", -60, T0))
    assert len(tracker.take_changes()[0]) == 1
    tracker.observe(sighting(cfg, "gw-entrance", -60, T0 + 0.3))
    assert tracker.take_changes() == ([], [])  # only last_seen moved, by less than a second
    tracker.observe(sighting(cfg, "gw-entrance", -60, T0 + 1.2))
    assert tracker.take_changes()[0][0][4] == T0 + 1.2


# --- through MQTT and the pipeline ----------------------------------------------------------------


def test_a_shopper_walking_to_another_zone_over_mqtt(edge, mqtt_client):
    """The shape of test_ingest's move test under hysteresis: the new zone must clearly win for a moment."""
    from conftest import now_ms, sighting as payload, wait_until

    p = "instore/teststore"
    pub = mqtt_client()
    pub.publish(f"{p}/beacon/gw-entrance", payload(now_ms(), minor=31, rssi=-70))
    wait_until(lambda: edge.events(kind="zone_enter"), what="enter at the entrance")

    def walked_over() -> bool:
        pub.publish(f"{p}/beacon/gw-shoes", payload(now_ms(), minor=31, rssi=-45))
        return len(edge.events(kind="zone_enter")) == 2

    wait_until(walked_over, interval=0.3, what="enter in shoes")
    assert [e["zone"] for e in edge.events(kind="zone_exit")] == ["entrance"]
    assert [e["zone"] for e in edge.events(kind="visit_start")] == ["entrance"]
    assert [p["zone"] for p in edge.get("/api/v1/presence").json()["presence"]] == ["shoes"]
