"""The push interval a central asks of its stores when more of them push than its budget."""

from __future__ import annotations

import time
from pathlib import Path

from sync import protocol as p
from sync.central.pacing import RECOUNT_S, SLOW_PUSH_S, Pacer, interval_for
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


def test_slow_pushes_stretch_the_interval_up_to_four_times_and_quick_ones_give_it_back() -> None:
    """A central short of CPU (its pushes take longer than SLOW_PUSH_S) asks for fewer, larger pushes."""
    pacer = Pacer(100.0, lambda since: 300)  # 300 stores, 100 pushes a second: every 3 s
    now = time.time()
    asked = [pacer.every_s(now)]
    for step in range(1, 6):
        for _ in range(5):
            pacer.observe(SLOW_PUSH_S * 2)
        asked.append(pacer.every_s(now + step * RECOUNT_S))
    assert asked == [3.0, 4.5, 7.0, 10.5, 12.0, 12.0]  # the budget / 1.5 at each slow count, at most / 4
    for step in range(6, 12):
        pacer.observe(SLOW_PUSH_S / 4)
        asked.append(pacer.every_s(now + step * RECOUNT_S))
    assert asked[6:] == [8.0, 5.5, 4.0, 3.0, 3.0, 3.0]  # back to the budget's interval, never below it
    pacer.observe(SLOW_PUSH_S * 0.75)  # neither slow nor quick: the interval holds
    assert pacer.every_s(now + 12 * RECOUNT_S) == 3.0


def test_a_slow_central_paces_a_fleet_within_its_budget_too() -> None:
    pacer = Pacer(100.0, lambda since: 60)
    now = time.time()
    assert pacer.every_s(now) is None
    intervals = []
    for step in range(1, 4):
        pacer.observe(1.0)
        intervals.append(pacer.every_s(now + step * RECOUNT_S))
    assert intervals == [None, 1.5, 2.5]  # 60 stores within 66 pushes a second, then 44 and 30


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
