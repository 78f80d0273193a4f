"""The push interval a central asks of its stores when more of them push than its budget."""

from __future__ import annotations

import random
import time
from pathlib import Path

from sync import protocol as p
from sync import push
from sync.central.pacing import Pacer, interval_for
from sync.central.storage import Settings, open_storage


def test_the_push_interval_grows_with_the_stores_pushing_and_forgets_quiet_ones(tmp_path: Path) -> None:
    store = open_storage(tmp_path / "central.db", Settings())
    now = time.time()
    for name in ("s1", "s2", "s3"):
        store.push_events(name, [{"event_id": f"{name}-1", "kind": "window", "ts": now}], now=now)
    assert Pacer(2.0, store.stores_pushing).every_s(now + 1) == 1.5  # 3 stores, 2 pushes a second: every 1.5 s
    assert Pacer(3.0, store.stores_pushing).every_s(now + 1) is None  # within the budget: nothing asked
    assert Pacer(0.0, store.stores_pushing).every_s(now + 1) is None  # a budget of 0 never asks
    assert Pacer(2.0, store.stores_pushing).every_s(now + 600) is None  # stores gone quiet do not count
    store.close()


def test_the_interval_is_rounded_up_to_half_seconds_and_bounded() -> None:
    assert interval_for(300, 100) == 3.0
    assert interval_for(301, 100) == 3.5
    assert interval_for(2000, 100) == 20.0
    assert interval_for(10**6, 1) == p.MAX_PUSH_EVERY_S


def test_the_fleet_benchmark_follows_the_protocols_push_interval_header() -> None:
    """bench/fleet.py cannot import the sync package (bench/sync.py shadows it): its copy must match."""
    source = (Path(__file__).resolve().parents[1] / "bench" / "fleet.py").read_text()
    assert f'PUSH_EVERY_HEADER = "{p.PUSH_EVERY_HEADER}"' in source
    assert f"MAX_PUSH_EVERY_S = {p.MAX_PUSH_EVERY_S}" in source
    assert f"PUSH_SPREAD = {push.PUSH_SPREAD}" in source


def test_stores_told_an_interval_at_once_spread_over_it_and_a_slow_answer_does_not_bunch_them() -> None:
    """300 stores hear "every 3 s" in the same round of answers: their next pushes fall all over the 3 s
    after (not together), never sooner than asked; after that each keeps its place, counted from when its
    push began (not when its answer came: a busy moment at the central answers many stores at once)."""
    rnd = random.Random(7)
    told_at = 100.0
    first = [push.next_push_at(told_at, 3.0, True, rnd) for _ in range(300)]
    assert all(told_at + 3.0 <= at <= told_at + 6.0 for at in first)
    per_half_second = [sum(1 for at in first if told_at + 3.0 + k / 2 <= at < told_at + 3.5 + k / 2) for k in range(6)]
    assert min(per_half_second) >= 25, per_half_second  # 50 expected in each
    began = [told_at + k * 0.01 for k in range(300)]  # pushes that began over 3 s, answered together much later
    after = [push.next_push_at(b, 3.0, False, rnd) for b in began]
    assert all(b + 3.0 <= at <= b + 3.0 * (1 + push.PUSH_SPREAD) for b, at in zip(began, after))
