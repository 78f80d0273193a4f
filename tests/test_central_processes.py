"""The central store as several processes on one real PostgreSQL, over HTTP: two `instore-edge central`
processes on two ports (as on two machines), N workers on one port (gunicorn), a worker killed with -9 in
the middle of pushes; and what an erasure leaves in the database."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from sync import protocol as p
from sync.central.app import STREAM_SPREAD
from sync.central.storage import pg_schema
from test_central import (ADMIN, TOKENS, Central, central, event, shopper, start_central,  # noqa: F401 (fixtures)
                          token_args)
from tests.conftest import wait_until


def push_until_answered(url: str, store: str, batches: list[list[dict[str, Any]]], key: str | None,
                        answers: list[dict[str, Any]], errors: list[str], retries: list[int] | None = None) -> None:
    """Push each batch like the edge does: the same batch (same Idempotency-Key, same event ids) again after
    a connection error or a 5xx, until the central store answers it."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKENS.get(store, ADMIN)}"
    for i, batch in enumerate(batches):
        headers = {p.IDEMPOTENCY_HEADER: f"{key}-{i}"} if key else {}
        deadline = time.monotonic() + 60
        while True:
            try:
                r = session.post(f"{url}/v1/stores/{store}/events", json={"events": batch}, headers=headers, timeout=30)
                if r.status_code == 200:
                    # A replay repeats the first answer, which another pusher of the same batch got; a pusher alone
                    # with its key gets one only when the first answer was lost (a worker killed after the commit).
                    if r.headers.get("Idempotent-Replayed") != "true" or retries is not None:
                        answers.append(r.json())
                    break
                if r.status_code < 500:
                    errors.append(r.text)
                    break
            except requests.RequestException:
                session.close()
                if retries is not None:
                    retries.append(i)
            if time.monotonic() > deadline:
                errors.append(f"batch {i} never answered")
                break
            time.sleep(0.05)


def batches_of(n_batches: int, size: int, prefix: str = "e") -> list[list[dict[str, Any]]]:
    return [[event(f"{prefix}-{b}-{i}", seq=b * size + i) for i in range(size)] for b in range(n_batches)]


def assert_once(central: Central, batches: list[list[dict[str, Any]]], answers: list[dict[str, Any]],
                errors: list[str], store: str = "s1") -> None:
    assert not errors, errors[:3]
    expected = {e["event_id"] for batch in batches for e in batch}
    accepted = [i for a in answers for i in a["accepted"]]
    assert len(accepted) == len(set(accepted)), "an event was accepted twice"
    assert set(accepted) == expected
    stored = [e["event_id"] for e in central.events(store, limit=5000)]
    assert sorted(stored) == sorted(expected)
    assert central.request("GET", "/v1/admin/stats").json()["events"]["by_store"][store] == len(expected)


def run_pushers(jobs: list[tuple[str, list[list[dict[str, Any]]], str | None]]) -> tuple[list, list]:
    answers: list[dict[str, Any]] = []
    errors: list[str] = []
    threads = [threading.Thread(target=push_until_answered, args=(url, "s1", batches, key, answers, errors))
               for url, batches, key in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return answers, errors


def worker_pids(master: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{master}/task/{master}/children").read_text().split()]
    except OSError:
        return []


def test_two_centrals_on_one_database_record_batches_pushed_through_both_once(
        start_central: Callable[..., Central], pg_url: str) -> None:
    a = start_central(*token_args(), db=pg_url)
    b = start_central(*token_args(), db=pg_url)
    batches = batches_of(10, 100)
    # The same batches through both processes at once: retries with the same key, and without a key.
    answers, errors = run_pushers([(a.url, batches, "k"), (b.url, batches, "k"), (a.url, batches, None),
                                   (b.url, batches, None)])
    assert_once(a, batches, answers, errors)


def test_workers_on_one_port_record_each_event_once(start_central: Callable[..., Central], pg_url: str) -> None:
    c = start_central(*token_args(), "--workers", "2", db=pg_url)
    wait_until(lambda: len(worker_pids(c.proc.pid)) == 2, what="two worker processes")
    batches = batches_of(10, 100)
    answers, errors = run_pushers([(c.url, batches, "k"), (c.url, batches, "k"), (c.url, batches, None)])
    assert_once(c, batches, answers, errors)
    # /metrics adds up every worker's counters, whichever worker answers the scrape.
    for _ in range(4):
        text = requests.get(f"{c.url}/metrics", timeout=10).text
        assert 'instore_central_events_total{result="accepted"} 1000.0' in text
        assert 'instore_central_info{engine="postgresql",version=' in text and 'workers="2"' in text
        assert 'instore_central_stores{state="known"} 2.0' in text


def test_a_worker_killed_during_pushes_loses_and_duplicates_nothing(
        start_central: Callable[..., Central], pg_url: str) -> None:
    c = start_central(*token_args(), "--workers", "2", db=pg_url)
    wait_until(lambda: len(worker_pids(c.proc.pid)) == 2, what="two worker processes")
    batches = batches_of(120, 40)  # enough to still be pushing through both kills (a push takes milliseconds)
    answers: list[dict[str, Any]] = []
    errors: list[str] = []
    retries: list[int] = []
    pushers = [threading.Thread(target=push_until_answered, args=(c.url, "s1", batches[i::2], f"k{i}", answers,
                                                                  errors, retries)) for i in range(2)]
    for t in pushers:
        t.start()
    wait_until(lambda: len(answers) >= 4, what="the first pushes")
    victims = worker_pids(c.proc.pid)
    for pid in victims:  # both workers, one after the other, while pushes are in flight
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: len([x for x in worker_pids(c.proc.pid) if x not in victims]) >= 1, timeout=30,
                   what="the arbiter to start a new worker")
        time.sleep(0.2)
    for t in pushers:
        t.join(120)
    assert retries, "the kills should have cut pushes off (then retried)"
    assert_once(c, batches, answers, errors)


def test_a_change_made_through_one_central_wakes_a_store_long_polling_another(
        start_central: Callable[..., Central], pg_url: str) -> None:
    a = start_central(*token_args(), db=pg_url)
    b = start_central(*token_args(), db=pg_url)
    assert b.upsert(shopper("C-1", home_store="s2")).status_code == 200
    cursor = a.changes()["next"]  # s2's feed, caught up
    got: list[requests.Response] = []
    waiter = threading.Thread(target=lambda: got.append(a.request(
        "GET", "/v1/profiles/changes", TOKENS["s2"], params={"since": cursor, "wait_s": 25})))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.5)
    b.upsert({"customer_id": "C-1", "tier": "vip"})
    waiter.join(30)
    [change] = got[0].json()["changes"]
    assert (change["customer_id"], change["profile"]["tier"]) == ("C-1", "vip")
    assert time.monotonic() - started < 20  # woken by the change, not by the end of the wait


@pytest.mark.parametrize("server", ["sqlite", "postgresql-2-workers"])
def test_a_streamed_change_feed_carries_each_change_as_it_comes_on_one_open_request(
        request: pytest.FixtureRequest, start_central: Callable[..., Central], server: str) -> None:
    """stream=1 through both servers (waitress for one process, gunicorn for workers): each change is a line
    of the open answer as soon as it is made, the answer ends when its wait does, and its last `next` goes
    on from there without a change sent twice."""
    workers = ("--workers", "2") if server != "sqlite" else ()
    c = start_central(*token_args(), *workers, db=request.getfixturevalue("pg_url") if server != "sqlite" else None)
    assert c.upsert(shopper("C-1", home_store="s2")).status_code == 200
    started = time.monotonic()
    with requests.get(c.url + p.CHANGES_PATH, params={"stream": "1", "wait_s": "5"}, stream=True, timeout=30,
                      headers={"Authorization": f"Bearer {TOKENS['s2']}"}) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(p.NDJSON)
        lines = r.iter_lines(chunk_size=None)
        first = json.loads(next(lines))  # at once: what the feed has now
        assert [ch["customer_id"] for ch in first["changes"]] == ["C-1"]
        for tier in ("silver", "gold"):
            time.sleep(0.5)
            c.upsert({"customer_id": "C-1", "tier": tier})
            page = json.loads(next(lines))
            assert [(ch["customer_id"], ch["profile"]["tier"]) for ch in page["changes"]] == [("C-1", tier)]
        assert list(lines) == []  # nothing else; the answer ends when the wait does
    assert time.monotonic() - started >= 5 * (1 - STREAM_SPREAD) - 0.1
    after = c.request("GET", p.CHANGES_PATH, TOKENS["s2"], params={"since": page["next"]}).json()
    assert after["changes"] == []


def test_streams_begun_together_end_at_different_moments(central: Central) -> None:
    """Stores whose streams began at once (after a restart) must not all come back at once every wait_s:
    each stream ends somewhere in the last quarter of its wait."""
    ended: list[float] = []

    def follow(store: str) -> None:
        with requests.get(central.url + p.CHANGES_PATH, params={"stream": "1", "wait_s": "4"}, stream=True,
                          timeout=30, headers={"Authorization": f"Bearer {TOKENS[store]}"}) as r:
            assert r.status_code == 200
            for _ in r.iter_lines(chunk_size=None):
                pass
        ended.append(time.monotonic() - started)

    started = time.monotonic()
    followers = [threading.Thread(target=follow, args=(store,)) for store in list(TOKENS) * 6]
    for t in followers:
        t.start()
    for t in followers:
        t.join(30)
    assert len(ended) == len(followers)
    assert all(4 * (1 - STREAM_SPREAD) - 0.1 <= at <= 4 + 1.5 for at in ended), ended
    assert max(ended) - min(ended) >= 0.3, ended  # 12 ends over a second: all within 0.3 s, a chance in 50,000


def test_a_bad_stream_request_is_refused_before_the_stream_begins(central: Central) -> None:
    for params, says in (({"stream": "yes"}, "'stream' must be 1 or 0"), ({"stream": "1", "since": "nope"}, "cursor")):
        r = central.request("GET", p.CHANGES_PATH, TOKENS["s2"], params=params)
        assert r.status_code == 400 and says in r.json()["error"]["message"], r.text


def test_an_erasure_leaves_no_row_of_the_customer_and_is_vacuumed(
        start_central: Callable[..., Central], pg_url: str) -> None:
    c = start_central(*token_args(), db=pg_url)
    cid, name, key = "cust-QWXZ-9183", "Ottoline", "loyalty:OTT-55731"
    c.upsert(shopper(cid, first_name=name, identities=[key], home_store="s1"), shopper("C-2"))
    c.upsert({"customer_id": cid, "consents": {"marketing": True}})
    c.push("s2", [event("seen-1", customer=cid, subject=key, data={"note": f"{name} at the till"}),
                  event("seen-2", subject=key, data={"rssi": -60})])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        def vacuums() -> int:
            row = conn.execute("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'profiles'").fetchone()
            return int(row[0]) if row else 0

        before = vacuums()
        assert c.request("DELETE", f"/v1/admin/profiles/{cid}").status_code == 200
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r'")]
        for table in tables:  # every table, every partition: no row mentions the customer
            hits = conn.execute(f'SELECT count(*) FROM "{table}" t WHERE t::text LIKE %s OR t::text LIKE %s '
                                f"OR t::text LIKE %s", (f"%{cid}%", f"%{name}%", f"%{key}%")).fetchone()[0]
            assert hits == 0, f"{table} still holds the customer"
        # The deleted row versions are vacuumed soon after (README: what remains until then).
        wait_until(lambda: vacuums() > before, timeout=20, what="VACUUM after the erasure")
        dead = conn.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'profiles'").fetchone()[0]
        assert dead == 0
    assert c.request("GET", f"/v1/admin/profiles/{cid}/export").status_code == 404


def test_processes_starting_together_on_an_empty_database_migrate_it_once(postgres: Any) -> None:
    from test_central_storage import run_workers

    name = f"empty_{os.getpid()}_{int(time.time() * 1000) % 100000}"
    postgres.execute(f"CREATE DATABASE {name}")
    url = postgres.url(name)
    results = run_workers(url, [("upsert", {"ids": [f"C-{i}"]}) for i in range(4)])
    assert [lines[0]["version"] for lines in results] == [1, 1, 1, 1]
    with psycopg.connect(url) as conn:
        # Each migration step once, however many processes raced to apply it.
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == pg_schema.SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM profiles").fetchone()[0] == 4
