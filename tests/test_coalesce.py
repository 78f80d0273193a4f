"""Concurrent calls run as batches (the central's feed reads after a change for every store)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from sync.central.storage.coalesce import Coalescer


def test_callers_arriving_together_share_batches_and_each_gets_its_own_answer() -> None:
    batches: list[list[int]] = []

    def run(keys: Sequence[int]) -> list[int]:
        batches.append(list(keys))
        time.sleep(0.05)  # a query's round trip: meanwhile the others queue
        return [k * 10 for k in keys]

    c: Coalescer[int, int] = Coalescer(run)
    answers: dict[int, int] = {}
    threads = [threading.Thread(target=lambda k=k: answers.__setitem__(k, c.call(k))) for k in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert answers == {k: k * 10 for k in range(60)}
    assert sorted(k for b in batches for k in b) == list(range(60))  # each asked once
    assert len(batches) < 10  # not one query each


def test_a_failed_batch_fails_its_callers_and_the_next_calls_run_again() -> None:
    failing = threading.Event()
    failing.set()

    def run(keys: Sequence[str]) -> list[str]:
        time.sleep(0.02)
        if failing.is_set():
            raise ConnectionError("database away")
        return [k.upper() for k in keys]

    c: Coalescer[str, str] = Coalescer(run)
    errors: list[BaseException] = []

    def call(k: str) -> None:
        try:
            c.call(k)
        except ConnectionError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(f"k{i}",)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(errors) == 20 and not any(t.is_alive() for t in threads)  # nobody left waiting
    failing.clear()
    assert c.call("back") == "BACK"


def test_a_batch_is_never_larger_than_its_limit() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def run(keys: Sequence[int]) -> list[int]:
        sizes.append(len(keys))
        gate.wait(5)
        return list(keys)

    c: Coalescer[int, int] = Coalescer(run, max_batch=4)
    threads = [threading.Thread(target=c.call, args=(k,)) for k in range(13)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    gate.set()
    for t in threads:
        t.join(10)
    assert sum(sizes) == 13 and max(sizes) == 4


@pytest.mark.parametrize("keys", [1, 2])
def test_a_lone_caller_runs_its_own_call_at_once(keys: int) -> None:
    c: Coalescer[int, int] = Coalescer(lambda ks: [k + 1 for k in ks])
    assert [c.call(k) for k in range(keys)] == [k + 1 for k in range(keys)]
