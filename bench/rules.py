"""Rule engine benchmark: CPU per event through RuleEngine.decide with many rules and a profile cache.

A synthetic store: ZONES zones with two screens and one kiosk each, a 120-product catalogue, RULES rules
drawn from a seed with a mix of every condition (zone/event lists, dwell, hours/days, segments, tier,
known, wishlist_in_zone, cart, orders, recent events), placeholders, frequency caps and A/B variants.
PROFILES customers sit in an in-memory `profiles` table (the edge's schema), 70% with the
personalization consent. The event stream is what the writer feeds the engine: presence events
(enter/dwell/exit), window and kiosk interactions, sales and raw beacon sightings, half of the shopper
events identified. A warm-up pass fills the profile cache (as a running store has it), then each
`decide` call is timed on its own.

Figures: CPU time per decide() call (thread CPU clock): us_per_event (mean), p50/p99/max, events_per_s
(1 / mean, one core); wall-clock mean and p99 (which include preemption on a busy machine); decisions per
event; the cost of a profile cache miss (first sight of a customer: one SELECT + JSON parse). The last
line is JSON.

    python bench/rules.py [--rules 200] [--events 50000] [--profiles 2000] [--seed 7]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.config import parse_config  # noqa: E402
from edge.domain.shoppers import CustomerContext  # noqa: E402
from edge.model import Event  # noqa: E402
from edge.domain.rules import RuleEngine  # noqa: E402
from edge.store.schema import migrate  # noqa: E402

ZONES = 10
SEGMENTS = ("sneakers", "outdoor", "formal", "kids", "denim", "accessories", "athleisure")
TIERS = ("bronze", "silver", "gold", "vip")
START = 1_741_946_400.0  # Friday 14 March 2025, 11:00 in Rome


def build_config(n_rules: int, rng: random.Random) -> dict[str, Any]:
    zones = [f"z{i}" for i in range(ZONES)]
    products = [{"sku": f"P-{i:03d}", "name": f"Product {i}", "zone": zones[i % ZONES], "price": 10.0 + i}
                for i in range(120)]
    rules = []
    for i in range(n_rules):
        when: dict[str, Any] = {}
        show: dict[str, Any] = {"content_id": f"c{i % 20}", "data": {"title": f"Rule {i}", "body": "Hello"}}
        r = rng.random()
        if r < 0.7:
            when["zone"] = rng.choice(zones)
        elif r < 0.85:
            when["zone"] = rng.sample(zones, rng.randint(2, 3))
        else:
            show["screens"] = [f"scr-{rng.choice(zones)}-{rng.randint(0, 1)}"]
        when["event"] = rng.choice(["zone_enter", "zone_enter", "zone_dwell", "kiosk.identify", "kiosk",
                                    "window.touch", ["zone_enter", "zone_dwell"], "kiosk.browse"])
        if when["event"] == "zone_dwell" and rng.random() < 0.6:
            when["dwell_min_s"] = rng.choice([30, 60, 120])
        if rng.random() < 0.3:
            when["hours"] = rng.choice(["09:00-12:30", "10:00-20:00", ["08:00-10:00", "17:00-19:00"], "22:00-02:00"])
        if rng.random() < 0.2:
            when["days"] = rng.sample(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], rng.randint(2, 6))
        if rng.random() < 0.25:
            when["segments"] = rng.sample(SEGMENTS, rng.randint(1, 3))
        if rng.random() < 0.2:
            when["tier"] = rng.sample(TIERS, rng.randint(1, 2))
        if rng.random() < 0.15:
            when["known"] = rng.random() < 0.7
        if rng.random() < 0.1:
            when["wishlist_in_zone"] = True
            show["data"]["item"] = "{wishlist_item}"
        if rng.random() < 0.1:
            when["cart_not_empty"] = True
        if rng.random() < 0.05:
            when["orders_ready"] = True
        if rng.random() < 0.15:
            when["recent_event"] = rng.choice(["window.touch", "kiosk", "zone_enter"])
            when["recent_within_s"] = 900
        personal = any(k in when for k in ("segments", "tier", "wishlist_in_zone", "cart_not_empty", "orders_ready"))
        if rng.random() < 0.3 and when.get("known") is not False:
            show["data"]["greeting"] = "Ciao {first_name}"
        if when.get("known") is False and (personal or "{wishlist_item}" in str(show["data"])):
            del when["known"]  # anonymous-only rules cannot use the profile: the config check refuses them
        if rng.random() < 0.1:
            show["data"]["where"] = "in {zone}"
        rule: dict[str, Any] = {"id": f"r{i}", "priority": rng.randint(0, 50), "ttl_s": 30.0, "when": when,
                                "show": show}
        if rng.random() < 0.3:
            rule["cap_per_shopper"] = {"count": rng.randint(1, 3), "within_s": 600}
        if rng.random() < 0.1:
            rule["cap_per_screen"] = {"count": 5, "within_s": 60}
        if rng.random() < 0.15:
            rule["variants"] = [{"id": "a", "weight": 1}, {"id": "b", "weight": 1, "data": {"body": "Hi {zone}"}}]
        rules.append(rule)
    return {
        "store": {"id": "bench", "timezone": "Europe/Rome"},
        "zones": [{"id": z} for z in zones],
        "screens": [{"id": f"scr-{z}-{k}", "zone": z, "playlist": ["c0"]} for z in zones for k in (0, 1)],
        "kiosks": [{"id": f"kiosk-{z}", "zone": z} for z in zones],
        "content": [{"id": f"c{i}", "title": f"Content {i}"} for i in range(20)],
        "products": products,
        "rules": rules,
    }


def fill_profiles(conn: sqlite3.Connection, n: int, rng: random.Random) -> None:
    migrate(conn)
    rows = []
    for i in range(n):
        consent = rng.random() < 0.7
        profile = {"customer_id": f"C-{i:05d}", "first_name": rng.choice(["Giulia", "Marco", "Anna", None]),
                   "segments": rng.sample(SEGMENTS, rng.randint(1, 3)), "tier": rng.choice(TIERS),
                   "consents": {"personalization": consent, "marketing": False}, "preferences": {"size": "M"},
                   "wishlist": [f"P-{rng.randrange(120):03d}" for _ in range(rng.randint(0, 4))],
                   "cart": [f"P-{rng.randrange(120):03d}" for _ in range(rng.choice((0, 0, 1, 2)))],
                   "orders_ready": [{"order_id": f"O-{i}", "items": [], "ready_at": "2025-03-14T09:00:00Z",
                                     "pickup_bay": "B1"}] if rng.random() < 0.08 else [],
                   "identities": [f"device:app-{i}"], "version": 1}
        rows.append((profile["customer_id"], 1, json.dumps(profile), profile["first_name"], int(consent), 0.0))
    conn.executemany("INSERT INTO profiles(customer_id, version, profile, first_name, consent_personalization, "
                     "updated_at) VALUES (?,?,?,?,?,?)", rows)


def make_events(n: int, n_profiles: int, rng: random.Random) -> list[tuple[Event, float]]:
    out = []
    t = START
    for i in range(n):
        t += rng.uniform(0.0, 0.2)
        zone = f"z{rng.randrange(ZONES)}"
        shopper = rng.randrange(5000)
        customer = f"C-{rng.randrange(n_profiles):05d}" if rng.random() < 0.5 else None
        r = rng.random()
        if r < 0.05:
            e = Event(f"b{i}", "beacon", f"gw-{zone}", t, t, zone, f"ibeacon:u:1:{shopper}", None, None,
                      {"rssi": -60, "beacon_type": "ibeacon"})
        elif r < 0.65:
            kind = rng.choice(["zone_enter", "zone_enter", "zone_dwell", "zone_exit"])
            data: dict[str, Any] = {"visit_id": f"v{shopper}", "dwell_s": rng.choice([0.0, 45.0, 90.0, 150.0])}
            if rng.random() < 0.01:
                data["staff"] = True
            e = Event(f"p{i}", kind, f"gw-{zone}", t, t, zone, f"ibeacon:u:1:{shopper}", customer, None, data)
        elif r < 0.8:
            e = Event(f"w{i}", "window", f"scr-{zone}-0", t, t, zone, f"session:w{shopper}", customer,
                      rng.choice(["touch", "browse", "select"]), {"session": f"w{shopper}",
                                                                  "item": f"P-{rng.randrange(120):03d}"})
        elif r < 0.95:
            typ = rng.choice(["identify", "browse", "add_to_cart"])
            e = Event(f"k{i}", "kiosk", f"kiosk-{zone}", t, t, zone, f"session:k{shopper}", customer, typ,
                      {"session": f"k{shopper}", "item": f"P-{rng.randrange(120):03d}"})
        else:
            e = Event(f"s{i}", "pos", "till-1", t, t, None, None, customer, None, {"items": ["P-001"], "total": 10})
        out.append((e, t))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rules", type=int, default=200)
    ap.add_argument("--events", type=int, default=50000)
    ap.add_argument("--profiles", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    cfg = parse_config(build_config(args.rules, rng), source="bench", env={})
    conn = sqlite3.connect(":memory:", isolation_level=None)
    fill_profiles(conn, args.profiles, rng)

    # Cold profile look-ups: one SELECT + JSON parse each.
    ctx = CustomerContext(cfg, conn)
    t0 = time.perf_counter()
    for i in range(args.profiles):
        ctx.profile(f"C-{i:05d}")
    miss_us = (time.perf_counter() - t0) / args.profiles * 1e6

    engine = RuleEngine(cfg, ctx)
    warm = make_events(min(args.events, 20000), args.profiles, rng)
    for e, t in warm:
        engine.decide(e, t)
    events = make_events(args.events, args.profiles, random.Random(args.seed + 1))
    # Replay after the warm-up in time, so caps and recent activity see a running store.
    shift = warm[-1][1] - START + 1.0
    events = [(Event(e.event_id, e.kind, e.source, t + shift, t + shift, e.zone, e.subject, e.customer, e.type,
                     e.data), t + shift) for e, t in events]

    cpu_ns: list[int] = []
    wall_ns: list[int] = []
    decisions = 0
    personalized = 0
    cpu_clock, wall_clock = time.thread_time_ns, time.perf_counter_ns
    gc.collect()
    gc.disable()
    for e, t in events:
        c0, w0 = cpu_clock(), wall_clock()
        out = engine.decide(e, t)
        w1, c1 = wall_clock(), cpu_clock()
        cpu_ns.append(c1 - c0)
        wall_ns.append(w1 - w0)
        decisions += len(out)
        personalized += sum(1 for d in out if d.customer)
    gc.enable()
    cpu_ns.sort()
    wall_ns.sort()
    n = len(cpu_ns)
    mean_us = statistics.fmean(cpu_ns) / 1000
    result = {
        "rules": args.rules, "events": n, "profiles": args.profiles,
        # CPU time of the calling thread per decide() (includes ~1 µs of clock reads); wall time
        # percentiles too, which on a busy machine include preemption.
        "us_per_event": round(mean_us, 2),
        "p50_us": round(cpu_ns[n // 2] / 1000, 2),
        "p99_us": round(cpu_ns[int(n * 0.99)] / 1000, 2),
        "max_us": round(cpu_ns[-1] / 1000, 1),
        "events_per_s": round(1e6 / mean_us),
        "wall_us_per_event": round(statistics.fmean(wall_ns) / 1000, 2),
        "wall_p99_us": round(wall_ns[int(n * 0.99)] / 1000, 2),
        "decisions_per_event": round(decisions / n, 3),
        "personalized_share": round(personalized / max(1, decisions), 3),
        "profile_miss_us": round(miss_us, 2),
        "candidate_shapes": len(engine._candidates),
    }
    print(f"{args.rules} rules, {n} events, CPU per event: mean {result['us_per_event']} µs, "
          f"p50 {result['p50_us']} µs, p99 {result['p99_us']} µs, max {result['max_us']} µs "
          f"({result['events_per_s']} events/s of one core); {result['decisions_per_event']} decisions per event, "
          f"{result['personalized_share']:.0%} of them personalized; profile cache miss "
          f"{result['profile_miss_us']} µs")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
