"""The reference central profile store, as a real `python -m sync.central.cli` process over HTTP.

The tests that take `any_central` run twice: on a SQLite file and on a real PostgreSQL; the others (tokens,
limits, files on disk) on SQLite."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from edge.broker import free_port, wait_for_port
from sync import protocol as p
from sync.central import cli as central_cli
from sync.central.demo_data import CATALOGUE_BY_SKU, generate_profiles

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "central-admin-token-0123456789"
TOKENS = {"s1": "store-one-token-0123456789", "s2": "store-two-token-0123456789"}
NOW = time.time()


class Central:
    """A running central store process and a small requests helper."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str] | None = None,
                 db: Path | str | None = None) -> None:
        self.port = free_port()
        self.db = db or tmp_path / "central.db"
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"central-{self.port}.log"
        argv = [sys.executable, "-m", "sync.central.cli", "--db", str(self.db), "--port", str(self.port), *args]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})})
        log.close()
        try:
            wait_for_port(self.port, 15)
        except Exception:
            self.stop()
            raise AssertionError(f"central store did not start:\n{self.log_path.read_text()}") from None

    def request(self, method: str, path: str, token: str | None = ADMIN, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def push(self, store: str, events: list[Any], token: str | None = None, **kw: Any) -> requests.Response:
        return self.request("POST", f"/v1/stores/{store}/events", token or TOKENS.get(store, ADMIN),
                            json={"events": events}, **kw)

    def upsert(self, *profiles: dict[str, Any]) -> requests.Response:
        body = profiles[0] if len(profiles) == 1 else {"profiles": list(profiles)}
        return self.request("POST", "/v1/admin/profiles", json=body)

    def profile(self, customer_id: str) -> requests.Response:
        return self.request("GET", f"/v1/profiles/{customer_id}", TOKENS["s1"])

    def changes(self, since: str | None = None, limit: int | None = None) -> dict[str, Any]:
        params = {k: v for k, v in (("since", since), ("limit", limit)) if v is not None}
        r = self.request("GET", "/v1/profiles/changes", TOKENS["s2"], params=params)
        assert r.status_code == 200, r.text
        return r.json()

    def all_changes(self, since: str | None = None, limit: int = 500) -> tuple[list[dict[str, Any]], str]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.changes(since, limit)
            out += page["changes"]
            since = page["next"]
            if not page["more"]:
                return out, since

    def events(self, store: str | None = None, limit: int = 5000) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, **({"store": store} if store else {})}
        r = self.request("GET", "/v1/admin/events", params=params)
        assert r.status_code == 200, r.text
        return r.json()["events"]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def token_args() -> list[str]:
    args = ["--admin-token", ADMIN]
    for store, token in TOKENS.items():
        args += ["--store-token", f"{store}={token}"]
    return args


@pytest.fixture
def start_central(tmp_path: Path) -> Iterator[Callable[..., Central]]:
    started: list[Central] = []

    def start(*args: str, env: dict[str, str] | None = None, db: Path | str | None = None) -> Central:
        c = Central(tmp_path, *args, env=env, db=db)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def central(start_central: Callable[..., Central]) -> Central:
    return start_central(*token_args())


@pytest.fixture(params=["sqlite", "postgresql"])
def any_central(request: pytest.FixtureRequest, start_central: Callable[..., Central]) -> Central:
    """The central store on each engine in turn."""
    db = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    return start_central(*token_args(), db=db)


def event(event_id: str, seq: int | None = None, **fields: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"event_id": event_id, "kind": "beacon", "ts": NOW, "source": "gw-1", "zone": "entrance"}
    if seq is not None:
        e["seq"] = seq
    e.update(fields)
    return e


def consent_event(event_id: str, customer: str, ts: float = NOW, **purposes: bool) -> dict[str, Any]:
    return {"event_id": event_id, "kind": "kiosk", "type": "consent", "ts": ts, "source": "kiosk-1",
            "customer": customer, "data": {"session": "sess-1", "consent": purposes}}


def shopper(customer_id: str, **fields: Any) -> dict[str, Any]:
    return {"customer_id": customer_id, "first_name": "Giulia", "segments": ["sneakers"], "tier": "silver",
            "consents": {"personalization": False, "marketing": False}, **fields}


# --- tokens -----------------------------------------------------------------------------------------


def test_healthz_answers_without_a_token(central: Central) -> None:
    r = requests.get(central.url + "/healthz", timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_missing_wrong_and_other_stores_tokens_are_refused_with_clear_errors(central: Central) -> None:
    batch = [event("e-1")]
    r = central.request("POST", "/v1/stores/s1/events", token=None, json={"events": batch})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"
    assert "Authorization: Bearer" in r.json()["error"]["message"]

    r = central.push("s1", batch, token="not-a-token")
    assert r.status_code == 401 and "unknown token" in r.json()["error"]["message"]

    r = central.push("s1", batch, token=TOKENS["s2"])
    assert r.status_code == 403
    assert r.json()["error"] == {"code": "forbidden", "message": "this token belongs to store 's2'; it cannot "
                                                                  "act for store 's1'"}

    r = central.request("GET", "/v1/admin/stats", TOKENS["s1"])
    assert r.status_code == 403 and "admin token" in r.json()["error"]["message"]
    r = central.request("POST", "/v1/admin/profiles", TOKENS["s1"], json=shopper("C-1"))
    assert r.status_code == 403

    r = central.request("GET", "/v1/profiles/changes", token=None)
    assert r.status_code == 401

    # Nothing was recorded by the refused pushes; a store's own token and the admin token work.
    assert central.events() == []
    assert central.push("s1", batch).json()["accepted"] == ["e-1"]
    assert central.push("s9", [event("e-2")], token=ADMIN).json()["accepted"] == ["e-2"]
    assert [(e["store"], e["event_id"]) for e in central.events()] == [("s1", "e-1"), ("s9", "e-2")]


def test_tokens_can_come_from_the_environment(start_central: Callable[..., Central]) -> None:
    c = start_central(env={"INSTORE_CENTRAL_ADMIN_TOKEN": ADMIN,
                           "INSTORE_CENTRAL_STORE_TOKENS": f"s1={TOKENS['s1']}, s2={TOKENS['s2']}"})
    assert c.push("s2", [event("x")]).json()["accepted"] == ["x"]
    assert c.push("s1", [event("x")], token=TOKENS["s2"]).status_code == 403
    assert c.request("GET", "/v1/admin/stats").status_code == 200


def test_a_chain_gives_its_store_tokens_in_a_file(tmp_path: Path, start_central: Callable[..., Central]) -> None:
    tokens = tmp_path / "store-tokens"
    tokens.write_text(f"# one line a store\ns1={TOKENS['s1']}\n\n  s2 = {TOKENS['s2']}\n")
    tokens.chmod(0o640)
    # The environment's token for s2 gives way to the file's; the environment still adds s3.
    c = start_central("--admin-token", ADMIN, "--store-tokens-file", str(tokens),
                      env={"INSTORE_CENTRAL_STORE_TOKENS": "s2=an-old-token-for-s2-0000,s3=store-three-token-0123456789"})
    assert c.push("s1", [event("a")]).json()["accepted"] == ["a"]
    assert c.push("s2", [event("b")]).json()["accepted"] == ["b"]
    assert c.push("s2", [event("c")], token="an-old-token-for-s2-0000").status_code == 401
    assert c.push("s3", [event("d")], token="store-three-token-0123456789").json()["accepted"] == ["d"]
    assert c.push("s1", [event("e")], token=TOKENS["s2"]).status_code == 403


def test_a_store_tokens_file_that_cannot_be_used_stops_the_start_and_says_why(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTORE_CENTRAL_")}
    tokens = tmp_path / "store-tokens"
    base = [sys.executable, "-m", "sync.central.cli", "--db", str(tmp_path / "c.db"), "--port", "0",
            "--admin-token", ADMIN, "--store-tokens-file", str(tokens)]

    def start() -> subprocess.CompletedProcess[str]:
        return subprocess.run(base, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)

    r = start()
    assert r.returncode == 2 and "cannot read it" in r.stderr and str(tokens) in r.stderr
    tokens.write_text("s1=a-token-for-s1-00000001\nbare-secret-token-0000002\n")
    tokens.chmod(0o600)
    r = start()
    assert r.returncode == 2 and "line 2" in r.stderr and "STORE=TOKEN" in r.stderr
    assert "bare-secret-token" not in r.stderr
    tokens.write_text("s1=a-token-for-s1-00000001\ns2=a-token-for-s2-00000002\ns1=a-token-for-s1-00000003\n")
    r = start()
    assert r.returncode == 2 and "lines 1 and 3" in r.stderr and "a-token-for" not in r.stderr
    tokens.write_text("s1=a-token-for-s1-00000001\n")
    tokens.chmod(0o644)
    r = start()
    assert r.returncode == 2 and "every user of this machine can read it" in r.stderr and "chmod 640" in r.stderr


def test_refuses_to_start_without_an_admin_token_or_with_a_malformed_store_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSTORE_CENTRAL_")}
    base = [sys.executable, "-m", "sync.central.cli", "--db", str(tmp_path / "c.db"), "--port", "0"]
    r = subprocess.run(base, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "no admin token" in r.stderr and "INSTORE_CENTRAL_ADMIN_TOKEN" in r.stderr
    r = subprocess.run(base + ["--admin-token", ADMIN, "--store-token", "secret-without-store"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "STORE=TOKEN" in r.stderr and "secret-without-store" not in r.stderr
    r = subprocess.run(base + ["--admin-token", ADMIN, "--store-token", "a=same", "--store-token", "b=same"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "share a token" in r.stderr


def test_add_parser_adds_the_central_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="instore-edge")
    sub = parser.add_subparsers(dest="command", required=True)
    central_cli.add_parser(sub)
    args = parser.parse_args(["central", "--db", "x.db", "--port", "9", "--admin-token", "T",
                              "--store-token", "a=1", "--store-token", "b=2", "--demo-data"])
    assert args.func is central_cli.run
    assert (args.db, args.port, args.host, args.demo_data) == ("x.db", 9, "127.0.0.1", True)
    admin, stores = central_cli.resolve_tokens(args, {"INSTORE_CENTRAL_STORE_TOKENS": "a=env,c=3"})
    assert admin == "T" and stores == {"a": "1", "c": "3", "b": "2"}


# --- events -----------------------------------------------------------------------------------------


def test_the_same_batch_twice_is_recorded_once(any_central: Central) -> None:
    central = any_central
    batch = [event(f"e-{i}", seq=i) for i in range(1, 6)]
    first = central.push("s1", batch)
    assert first.status_code == 200
    assert first.json() == {"accepted": [f"e-{i}" for i in range(1, 6)], "duplicates": [], "rejected": []}
    second = central.push("s1", batch).json()
    assert second == {"accepted": [], "duplicates": [f"e-{i}" for i in range(1, 6)], "rejected": []}
    # A retry that overlaps: one old event, one new.
    third = central.push("s1", [event("e-5", seq=5), event("e-6", seq=6)]).json()
    assert third == {"accepted": ["e-6"], "duplicates": ["e-5"], "rejected": []}
    assert [e["event_id"] for e in central.events("s1")] == [f"e-{i}" for i in range(1, 7)]
    # Event ids are per store: another store's e-1 is another event.
    assert central.push("s2", [event("e-1")]).json()["accepted"] == ["e-1"]
    stats = central.request("GET", "/v1/admin/stats").json()
    assert stats["events"] == {"total": 7, "by_store": {"s1": 6, "s2": 1}}


def test_a_push_answer_says_how_long_the_app_and_the_database_took(any_central: Central) -> None:
    r = any_central.push("s1", [event("timed-1"), event("timed-2")])
    assert r.status_code == 200
    timing = dict(re.fullmatch(r"(\w+);dur=([0-9.]+)", part.strip()).groups()  # type: ignore[union-attr]
                  for part in r.headers["Server-Timing"].split(","))
    assert set(timing) == {"app", "db"}
    assert 0 <= float(timing["db"]) <= float(timing["app"]) and float(timing["app"]) > 0


def test_a_duplicate_inside_one_batch_counts_once(central: Central) -> None:
    r = central.push("s1", [event("a"), event("a"), event("b")]).json()
    assert r == {"accepted": ["a", "b"], "duplicates": ["a"], "rejected": []}


def test_bad_events_are_rejected_with_a_reason_and_the_rest_accepted(central: Central) -> None:
    batch: list[Any] = [
        event("ok-1"),
        {"kind": "beacon", "ts": NOW},  # no event_id
        {"event_id": "no-kind", "ts": NOW},
        {"event_id": "no-ts", "kind": "beacon"},
        {"event_id": 42, "kind": "beacon", "ts": NOW},
        event("ts-string-junk", ts="yesterday"),
        event("ts-millis", ts=NOW * 1000),
        event("bad-seq", seq="7"),
        event("bad-data", data=[1, 2]),
        consent_event("bad-consent", "C-1") | {"data": {"consent": {"personalization": "yes"}}},
        {"event_id": "bad-link", "kind": "identity_link", "ts": NOW, "customer": "C-1", "data": {}},
        "not an object",
        event("ok-iso", ts="2025-03-14T10:00:00Z"),
    ]
    r = central.push("s1", batch)
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == ["ok-1", "ok-iso"]
    rejected = {(x["id"], x["index"]): (x["reason"], x["detail"]) for x in body["rejected"]}
    assert rejected[(None, 1)][0] == "missing_field" and "event_id" in rejected[(None, 1)][1]
    assert rejected[("no-kind", 2)][0] == "missing_field" and "kind" in rejected[("no-kind", 2)][1]
    assert rejected[("no-ts", 3)][0] == "missing_field" and "ts" in rejected[("no-ts", 3)][1]
    assert rejected[(None, 4)][0] == "wrong_type"
    assert rejected[("ts-string-junk", 5)][0] == "invalid_value"
    assert "milliseconds" in rejected[("ts-millis", 6)][1]
    assert rejected[("bad-seq", 7)][0] == "wrong_type"
    assert rejected[("bad-data", 8)][0] == "wrong_type"
    assert rejected[("bad-consent", 9)][0] == "wrong_type" and "consent" in rejected[("bad-consent", 9)][1]
    assert rejected[("bad-link", 10)][0] == "missing_field" and "data.key" in rejected[("bad-link", 10)][1]
    assert rejected[(None, 11)][0] == "not_object"
    assert len(body["rejected"]) == 11
    stats = central.request("GET", "/v1/admin/stats").json()
    assert stats["rejected"]["s1"]["missing_field"] == 4


def test_an_event_the_store_cannot_hold_is_rejected_alone_and_the_rest_of_the_batch_accepted(
        any_central: Central) -> None:
    """Lone surrogates, NUL characters (PostgreSQL's text cannot hold them), numbers past SQLite's integers or
    a float's range, deep nesting: one bad event is one rejection, never a 500 that refuses the whole batch
    (the edge would retry it forever)."""
    central = any_central
    batch: list[Any] = [
        event("ok-1"),
        event("bad-subject", subject="session:\ud800"),
        event("bad-data-key", data={"k\udc00": 1}),
        event("bad-data-value", data={"items": [{"name": "x\udbff"}]}),
        event("x\ud800"),
        event("huge-seq", seq=2**64),
        event("huge-ts", ts=10**400),
        event("deep", data={"a": json.loads("[" * 25 + "]" * 25)}),  # deeper than an event may be, within the body limit
        event("nul-zone", zone="entr\x00ance"),
        event("ok-2", data={"emoji": "\U0001F600", "nul": "a\x00b"}),
    ]
    r = central.push("s1", batch)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == ["ok-1", "ok-2"]
    rejected = {x["index"]: (x["id"], x["reason"], x["detail"]) for x in body["rejected"]}
    assert sorted(rejected) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert rejected[1] == ("bad-subject", "invalid_value", rejected[1][2]) and "subject" in rejected[1][2]
    assert rejected[2][1] == "invalid_value" and "data.k\\udc00" in rejected[2][2]
    assert rejected[3][1] == "invalid_value" and "data.items[0].name" in rejected[3][2]
    assert rejected[4][:2] == (None, "invalid_value")  # an id that cannot be stored is not echoed either
    assert rejected[5][:2] == ("huge-seq", "invalid_value")
    assert rejected[6][:2] == ("huge-ts", "invalid_value")
    assert rejected[7][:2] == ("deep", "invalid_value") and "nested" in rejected[7][2]
    assert rejected[8][:2] == ("nul-zone", "invalid_value") and "zone" in rejected[8][2]
    assert [e["event_id"] for e in central.events("s1")] == ["ok-1", "ok-2"]
    assert central.events("s1")[1]["data"] == {"emoji": "\U0001F600", "nul": "a\x00b"}


def test_admin_requests_with_a_lone_surrogate_are_refused_with_400(any_central: Central) -> None:
    central = any_central
    assert central.upsert(shopper("C-1")).status_code == 200
    cases = [
        ("POST", "/v1/admin/profiles", shopper("C-2", first_name="Giu\ud800")),
        ("POST", "/v1/admin/profiles", {"profiles": [shopper("C-3", preferences={"\udfff": 1})]}),
        ("POST", "/v1/admin/profiles/merge", {"from": "C-1\ud800", "into": "C-1"}),
        ("POST", "/v1/identities/resolve", {"keys": ["loyalty:\ud800"]}),
    ]
    for method, path, body in cases:
        r = central.request(method, path, json=body)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]["code"] in ("invalid_value", "invalid_profile") and "surrogate" in r.text
    # A NUL character is text, but PostgreSQL's cannot hold it: never a 500, on either engine.
    assert central.request("POST", "/v1/identities/resolve", json={"keys": ["loyalty:\x00"]}).status_code in (200, 400)
    assert central.request("GET", "/v1/profiles/C-1%00").status_code in (400, 404)
    deep = shopper("C-4", preferences={"a": json.loads("[" * 40 + "]" * 40)})
    r = central.upsert(deep)
    assert r.status_code == 400 and "nested" in r.text
    assert central.profile("C-2").status_code == 404
    assert central.request("GET", "/healthz").status_code == 200


def test_admin_listing_keeps_the_received_order(central: Central) -> None:
    for start in (1, 4, 7):
        central.push("s1", [event(f"s1-{i}", seq=i) for i in range(start, start + 3)])
        central.push("s2", [event(f"s2-{start}", seq=start)])
    listed = central.events()
    assert [e["received_seq"] for e in listed] == sorted(e["received_seq"] for e in listed)
    assert [e["event_id"] for e in listed if e["store"] == "s1"] == [f"s1-{i}" for i in range(1, 10)]
    s1 = central.events("s1")
    assert [e["seq"] for e in s1] == list(range(1, 10)) and {e["store"] for e in s1} == {"s1"}
    # Paging forward with `after`.
    r = central.request("GET", "/v1/admin/events", params={"store": "s1", "limit": 4}).json()
    assert len(r["events"]) == 4 and r["more"] is True
    rest = central.request("GET", "/v1/admin/events", params={"store": "s1", "after": r["next_after"]}).json()
    assert [e["event_id"] for e in r["events"] + rest["events"]] == [f"s1-{i}" for i in range(1, 10)]


def test_an_idempotency_key_replays_the_first_answer(any_central: Central) -> None:
    central = any_central
    batch = [event("k-1"), event("k-2")]
    headers = {"Idempotency-Key": "batch-0001"}
    first = central.push("s1", batch, headers=headers)
    again = central.push("s1", batch, headers=headers)
    assert first.json() == again.json() == {"accepted": ["k-1", "k-2"], "duplicates": [], "rejected": []}
    assert again.headers.get("Idempotent-Replayed") == "true"
    # Without the key the same batch is all duplicates; a reused key with another batch is refused.
    assert central.push("s1", batch).json()["duplicates"] == ["k-1", "k-2"]
    reused = central.push("s1", [event("k-3")], headers=headers)
    assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"
    # Keys are per store.
    assert central.push("s2", [event("k-3")], headers=headers).json()["accepted"] == ["k-3"]
    assert len(central.events()) == 3


def test_a_concurrent_burst_records_each_event_once(any_central: Central) -> None:
    central = any_central
    central.upsert(shopper("C-1"))
    errors: list[str] = []
    answers: list[dict[str, Any]] = []
    lock = threading.Lock()

    def pusher(worker: int) -> None:
        session = requests.Session()
        for start in range(0, 200, 20):
            # Overlapping windows: every thread pushes every event, in batches that straddle each other.
            lo = max(0, start - 10 * (worker % 2))
            batch = [event(f"b-{i}", seq=i) for i in range(lo, start + 20)]
            batch.append(consent_event(f"consent-{start}", "C-1", ts=NOW + start, personalization=start % 40 == 0))
            r = session.post(f"{central.url}/v1/stores/s1/events", json={"events": batch}, timeout=30,
                             headers={"Authorization": f"Bearer {TOKENS['s1']}"})
            with lock:
                if r.status_code != 200:
                    errors.append(r.text)
                else:
                    answers.append(r.json())

    threads = [threading.Thread(target=pusher, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    accepted = [i for a in answers for i in a["accepted"]]
    assert len(accepted) == len(set(accepted)) == 210  # 200 beacon events + 10 consent events
    assert all(not a["rejected"] for a in answers)
    ids = [e["event_id"] for e in central.events("s1")]
    assert len(ids) == len(set(ids)) == 210
    # Each consent applied once: one version bump per change of value (10 events, alternating values).
    profile = central.profile("C-1").json()
    assert profile["consents"]["personalization"] is False  # the newest (ts) consent event said False
    applied = [e["applied"] for e in central.events("s1") if e["kind"] == "kiosk"]
    assert len(applied) == 10


# --- applying events to profiles --------------------------------------------------------------------


def test_a_consent_event_changes_the_profile_and_feeds_a_change(any_central: Central) -> None:
    central = any_central
    central.upsert(shopper("C-1"), shopper("C-2"))
    _, cursor = central.all_changes()
    before = central.profile("C-1").json()
    assert before["consents"] == {"personalization": False, "marketing": False}

    r = central.push("s1", [consent_event("c-1", "C-1", personalization=True, marketing=False)]).json()
    assert r["accepted"] == ["c-1"]
    after = central.profile("C-1").json()
    assert after["consents"] == {"personalization": True, "marketing": False}
    assert after["version"] == before["version"] + 1

    page = central.changes(cursor)
    assert [(c["customer_id"], c["op"], c["version"]) for c in page["changes"]] == \
        [("C-1", "upsert", after["version"])]
    assert page["changes"][0]["profile"]["consents"]["personalization"] is True
    assert central.events("s1")[-1]["applied"] == "consent"

    # A retry does not bump again; an older consent arriving late does not override the newer one.
    central.push("s1", [consent_event("c-1", "C-1", personalization=True)])
    central.push("s2", [consent_event("c-old", "C-1", ts=NOW - 3600, personalization=False)])
    assert central.profile("C-1").json() == after
    assert central.changes(page["next"])["changes"] == []
    # A decision made at the central store after the event was captured wins over the late event.
    central.upsert({"customer_id": "C-2", "consents": {"marketing": True}})
    central.push("s1", [consent_event("c-late", "C-2", ts=NOW - 60, marketing=False)])
    assert central.profile("C-2").json()["consents"]["marketing"] is True
    assert central.events("s1")[-1]["applied"] == "consent:unchanged"
    # A consent for an unknown customer is recorded, not applied.
    central.push("s1", [consent_event("c-x", "C-404", personalization=True)])
    assert central.events("s1")[-1]["applied"] == "consent:unknown_customer"
    assert central.profile("C-404").status_code == 404


def test_an_identity_link_event_adds_the_key_to_the_profile(central: Central) -> None:
    central.upsert(shopper("C-1", identities=["loyalty:1234"]), shopper("C-2", identities=["device:app-2"]))
    link = {"event_id": "l-1", "kind": "identity_link", "ts": NOW, "customer": "C-1",
            "data": {"key": "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100:7"}}
    taken = {**link, "event_id": "l-2", "data": {"key": "device:app-2"}}
    session = {**link, "event_id": "l-3", "data": {"key": "session:kiosk-1:abc"}}
    assert central.push("s1", [link, taken, session]).json()["accepted"] == ["l-1", "l-2", "l-3"]
    profile = central.profile("C-1").json()
    assert profile["identities"] == ["loyalty:1234", "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100:7"]
    assert profile["version"] == 2
    r = central.request("POST", "/v1/identities/resolve", TOKENS["s1"],
                        json={"keys": ["ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100:7", "device:app-2"]})
    assert r.json()["matches"] == {"ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:100:7": "C-1",
                                   "device:app-2": "C-2"}
    assert [e["applied"] for e in central.events()] == ["identity_link", "identity_link:conflict",
                                                        "identity_link:ephemeral"]


# --- profiles, erase, merge, resolve ----------------------------------------------------------------


def test_admin_upsert_validates_and_bumps_the_version(central: Central) -> None:
    r = central.upsert(shopper("C-1", wishlist=["SNK-001"], identities=["device:app-1"]))
    assert r.status_code == 200
    created = r.json()
    assert created["version"] == 1 and created["cart"] == [] and created["orders_ready"] == []
    assert set(created) == set(p.PROFILE_FIELDS)
    updated = central.upsert({"customer_id": "C-1", "consents": {"marketing": True}, "cart": ["SNK-002"]}).json()
    assert updated["version"] == 2 and updated["wishlist"] == ["SNK-001"] and updated["cart"] == ["SNK-002"]
    assert updated["consents"] == {"personalization": False, "marketing": True}

    bad = central.upsert({"customer_id": "C-2", "tier": "platinum", "wishlist": "SNK-001", "colour": "red",
                          "consents": {"personalization": "yes"}, "identities": ["no-prefix"]})
    assert bad.status_code == 400
    err = bad.json()["error"]
    assert err["code"] == "invalid_profile"
    text = " ".join(err["errors"])
    for expected in ("tier", "wishlist", "colour: unknown field", "consents.personalization", "identities[0]"):
        assert expected in text
    assert central.profile("C-2").status_code == 404

    # One identity, one customer: a clash is a 409 naming the owner, and nothing of the batch is saved.
    clash = central.upsert(shopper("C-3"), shopper("C-4", identities=["device:app-1"]))
    assert clash.status_code == 409 and "'C-1'" in clash.json()["error"]["message"]
    assert central.profile("C-3").status_code == 404


def test_erase_feeds_an_erase_change_and_the_profile_is_gone(any_central: Central) -> None:
    central = any_central
    central.upsert(shopper("C-1", identities=["device:app-1"]), shopper("C-2"))
    central.push("s1", [event("seen", customer="C-1", subject="device:app-1", data={"rssi": -60})])
    _, cursor = central.all_changes()
    r = central.request("DELETE", "/v1/admin/profiles/C-1")
    assert r.status_code == 200
    assert r.json()["op"] == "erase" and r.json()["events_anonymized"] == 1
    page = central.changes(cursor)
    assert page["changes"] == [{"customer_hash": p.erase_key("C-1"), "version": 2, "op": "erase"}]
    assert central.profile("C-1").status_code == 404
    assert central.profile("C-1").json()["error"]["code"] == "not_found"
    assert central.request("POST", "/v1/identities/resolve", TOKENS["s1"],
                           json={"keys": ["device:app-1"]}).json()["matches"] == {}
    [ev] = central.events()
    assert (ev["event_id"], ev["customer"], ev["subject"], ev["data"]) == ("seen", None, None, None)
    # Erasing again is harmless; unknown ids are 404; a later re-creation gets a higher version.
    assert central.request("DELETE", "/v1/admin/profiles/C-1").json()["already_erased"] is True
    assert central.request("DELETE", "/v1/admin/profiles/C-nobody").status_code == 404
    assert central.upsert(shopper("C-1")).json()["version"] == 3
    # A fresh reader sees only the latest change per customer.
    full, _ = central.all_changes()
    assert [(c["customer_id"], c["op"]) for c in full] == [("C-2", "upsert"), ("C-1", "upsert")]


def traces(db: Path, *needles: str) -> dict[str, int]:
    """Occurrences of each needle (UTF-8, UTF-16 LE/BE) in the raw bytes of a SQLite file, its WAL and -shm."""
    found: dict[str, int] = {}
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        data = path.read_bytes() if path.exists() else b""
        for needle in needles:
            for enc in ("utf-8", "utf-16-le", "utf-16-be"):
                if n := data.count(needle.encode(enc)):
                    found[f"{path.name}:{needle}:{enc}"] = n
    return found


def test_an_erasure_leaves_no_byte_of_the_customer_in_the_central_files(central: Central) -> None:
    cid, name, key = "cust-QWXZ-9183", "Ottoline", "loyalty:OTT-55731"
    central.upsert(shopper(cid, first_name=name, identities=[key]), shopper("C-2"))
    for i in range(3):  # versions pile up old page images in the WAL
        central.upsert({"customer_id": cid, "tier": ("bronze", "silver", "gold")[i]})
    central.push("s1", [event("seen-1", customer=cid, subject=key, data={"note": f"{name} at the till"}),
                        event("seen-2", subject=key, data={"rssi": -60})])
    assert traces(central.db, cid, name, key), "the test must start with the customer on disk"
    assert central.request("DELETE", f"/v1/admin/profiles/{cid}").status_code == 200
    assert traces(central.db, cid, name, key) == {}
    print(f"central files after the erasure: { {f.name: f.stat().st_size for f in central.db.parent.glob('central.db*')} }"
          " bytes, 0 traces")
    # The feed and the stats still say that someone was erased, by hash only.
    feed, _ = central.all_changes()
    assert {"customer_hash": p.erase_key(cid), "op": "erase"}.items() <= feed[-1].items()
    assert central.request("GET", "/v1/admin/stats").json()["erased"] == 1
    # The same after a restart (the erased rows are not in the file either).
    assert central.stop() == 0
    assert traces(central.db, cid, name, key) == {}


def test_a_store_asks_for_an_erasure_by_hash_and_every_store_is_told(any_central: Central) -> None:
    central = any_central
    central.upsert(shopper("C-1", identities=["device:app-1"]), shopper("C-2"))
    central.push("s2", [event("seen", customer="C-1", subject="device:app-1")])
    _, cursor = central.all_changes()
    erasures = [event("x-1", kind="erasure", data={"customer_hash": p.erase_key("C-1")}),
                event("x-2", kind="erasure", data={"customer_hash": p.erase_key("C-unknown")}),
                event("x-3", kind="erasure", data={"customer_hash": "C-2"}),
                event("x-4", kind="erasure", customer="C-2", data={"customer_hash": p.erase_key("C-2")})]
    r = central.push("s1", erasures)
    assert r.json()["accepted"] == ["x-1", "x-2"]
    assert [(x["id"], x["reason"]) for x in r.json()["rejected"]] == [("x-3", "invalid_value"), ("x-4", "invalid_value")]
    assert "customer_hash" in r.json()["rejected"][0]["detail"]
    assert central.profile("C-1").status_code == 404 and central.profile("C-2").status_code == 200
    assert central.request("POST", "/v1/identities/resolve", TOKENS["s2"],
                           json={"keys": ["device:app-1"]}).json()["matches"] == {}
    seen = next(e for e in central.events() if e["event_id"] == "seen")
    assert (seen["customer"], seen["subject"]) == (None, None)
    applied = {e["event_id"]: e["applied"] for e in central.events(store="s1")}
    assert applied == {"x-1": "erasure", "x-2": "erasure:unknown_customer"}
    # Every store's feed gets both erasures (the unknown one too: the asking store waits to see it).
    page = central.changes(cursor)["changes"]
    assert sorted((c["customer_hash"], c["op"]) for c in page) == sorted(
        [(p.erase_key("C-1"), "erase"), (p.erase_key("C-unknown"), "erase")])
    assert all("customer_id" not in c for c in page)
    # Asked again (another store, or a retry with a new id): fed again, with a higher version.
    r = central.push("s2", [event("x-5", kind="erasure", data={"customer_hash": p.erase_key("C-1")})])
    assert r.json()["accepted"] == ["x-5"]
    again = central.changes(cursor)["changes"]
    [entry] = [c for c in again if c["customer_hash"] == p.erase_key("C-1")]
    assert entry["version"] > next(c["version"] for c in page if c["customer_hash"] == p.erase_key("C-1"))
    assert central.events(store="s2")[-1]["applied"] == "erasure:already_erased"


def test_a_central_file_from_before_hashed_erasures_is_migrated_and_keeps_no_erased_id(tmp_path: Path) -> None:
    import sqlite3

    from sync.central.storage.sqlite import MIGRATIONS, SqliteStorage

    db = tmp_path / "old-central.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
    MIGRATIONS[0](conn)
    conn.execute("INSERT INTO schema_version VALUES (1, datetime('now'))")
    conn.execute("INSERT INTO profiles(customer_id, version, body, updated_at) VALUES ('C-kept', 1, ?, 0)",
                 (json.dumps(p.empty_profile("C-kept")),))
    conn.execute("INSERT INTO changes(customer_id, version, op, changed_at) VALUES ('C-kept', 1, 'upsert', 0), "
                 "('cust-erased-long-ago', 4, 'erase', 0)")
    conn.close()
    store = SqliteStorage(db)
    try:
        feed = store.changes(None, 10)["changes"]
        assert feed == [{"customer_id": "C-kept", "version": 1, "op": "upsert", "profile": p.empty_profile("C-kept")},
                        {"customer_hash": p.erase_key("cust-erased-long-ago"), "version": 4, "op": "erase"}]
        reader = sqlite3.connect(db)
        assert reader.execute("SELECT erase_key FROM profiles").fetchone()[0] == p.erase_key("C-kept")
        reader.close()
        assert traces(db, "cust-erased-long-ago") == {}
        # Re-created later, the customer continues from the erased version.
        assert store.upsert_profiles([{"customer_id": "cust-erased-long-ago"}])[0]["version"] == 5
    finally:
        store.close()


def test_merge_unites_two_profiles_and_erases_the_source(any_central: Central) -> None:
    central = any_central
    central.upsert(
        shopper("C-1", first_name="Marco", tier="gold", identities=["loyalty:1"], wishlist=["SNK-001"],
                cart=["ACC-001"], orders_ready=[{"order_id": "O-1", "items": ["SNK-003"],
                                                 "ready_at": "2025-03-14T10:00:00Z", "pickup_bay": "B2"}]),
        shopper("C-2", first_name="Marco", tier="silver", identities=["device:app-2"], wishlist=["SNK-002", "SNK-001"],
                preferences={"size": "L"}))
    central.push("s1", [event("by-c1", customer="C-1")])
    _, cursor = central.all_changes()
    r = central.request("POST", "/v1/admin/profiles/merge", json={"from": "C-1", "into": "C-2"})
    assert r.status_code == 200, r.text
    merged = r.json()["profile"]
    assert merged["customer_id"] == "C-2"
    assert merged["identities"] == ["device:app-2", "loyalty:1"]
    assert merged["wishlist"] == ["SNK-002", "SNK-001"] and merged["cart"] == ["ACC-001"]
    assert [o["order_id"] for o in merged["orders_ready"]] == ["O-1"]
    assert merged["tier"] == "gold" and merged["preferences"] == {"size": "L"}
    assert central.profile("C-1").status_code == 404
    changes = {c.get("customer_id") or c["customer_hash"]: c for c in central.changes(cursor)["changes"]}
    assert changes[p.erase_key("C-1")]["op"] == "erase" and changes["C-2"]["op"] == "upsert"
    assert changes["C-2"]["profile"] == merged
    assert central.request("POST", "/v1/identities/resolve", TOKENS["s1"],
                           json={"keys": ["loyalty:1"]}).json()["matches"] == {"loyalty:1": "C-2"}
    assert central.events()[0]["customer"] == "C-2"
    bad = central.request("POST", "/v1/admin/profiles/merge", json={"from": "C-2", "into": "C-2"})
    assert bad.status_code == 400
    missing = central.request("POST", "/v1/admin/profiles/merge", json={"from": "C-1", "into": "C-2"})
    assert missing.status_code == 404 and "C-1" in missing.json()["error"]["message"]


def test_resolve_returns_only_known_keys(central: Central) -> None:
    central.upsert(shopper("C-1", identities=["device:app-1", "loyalty:555"]))
    r = central.request("POST", "/v1/identities/resolve", TOKENS["s2"],
                        json={"keys": ["device:app-1", "loyalty:555", "device:app-999", "whatever"]})
    assert r.status_code == 200
    assert r.json() == {"matches": {"device:app-1": "C-1", "loyalty:555": "C-1"}}
    r = central.request("POST", "/v1/identities/resolve", TOKENS["s2"], json={"keys": "device:app-1"})
    assert r.status_code == 400


# --- change feed ------------------------------------------------------------------------------------


def test_the_change_feed_pages_with_a_cursor_and_compacts(any_central: Central) -> None:
    central = any_central
    central.upsert(*[shopper(f"C-{n:03d}") for n in range(1, 26)])
    seen: list[str] = []
    since = None
    pages = 0
    while True:
        page = central.changes(since, limit=10)
        pages += 1
        seen += [c["customer_id"] for c in page["changes"]]
        assert all(c["op"] == "upsert" and c["profile"]["version"] == c["version"] for c in page["changes"])
        since = page["next"]
        if not page["more"]:
            break
    assert pages == 3 and seen == [f"C-{n:03d}" for n in range(1, 26)]
    # Caught up: an empty page keeps the cursor.
    empty = central.changes(since)
    assert empty == {"changes": [], "next": since, "more": False}
    # Two updates of one customer: the reader gets the latest only, once.
    central.upsert({"customer_id": "C-003", "tier": "gold"})
    central.upsert({"customer_id": "C-003", "tier": "vip"})
    page = central.changes(since)
    assert [(c["customer_id"], c["version"], c["profile"]["tier"]) for c in page["changes"]] == [("C-003", 3, "vip")]
    # Exactly limit left: more is false.
    assert central.changes(since, limit=1)["more"] is False
    # limits and cursors are checked.
    r = central.request("GET", "/v1/profiles/changes", TOKENS["s1"], params={"limit": 5001})
    assert r.status_code == 400 and "limit" in r.json()["error"]["message"]
    r = central.request("GET", "/v1/profiles/changes", TOKENS["s1"], params={"since": "garbage!"})
    assert r.status_code == 400 and "cursor" in r.json()["error"]["message"]


def test_cursors_survive_a_restart_and_a_cursor_from_another_database_resets(
        start_central: Callable[..., Central], tmp_path: Path) -> None:
    c = start_central(*token_args())
    c.upsert(shopper("C-1"), shopper("C-2"))
    _, cursor = c.all_changes()
    c.stop()
    c = start_central(*token_args(), db=c.db)
    c.upsert({"customer_id": "C-2", "tier": "gold"})
    assert [x["customer_id"] for x in c.changes(cursor)["changes"]] == ["C-2"]
    other = start_central(*token_args(), db=tmp_path / "other.db")
    other.upsert(shopper("C-9"))
    page = other.changes(cursor)
    assert page["reset"] is True and [x["customer_id"] for x in page["changes"]] == ["C-9"]


# --- demo data --------------------------------------------------------------------------------------


def test_demo_data_loads_once_and_device_ids_resolve(start_central: Callable[..., Central], tmp_path: Path) -> None:
    c = start_central(*token_args(), "--demo-data")
    stats = c.request("GET", "/v1/admin/stats").json()
    assert stats["profiles"] >= 200
    r = c.request("POST", "/v1/identities/resolve", TOKENS["s1"],
                  json={"keys": ["device:app-7", "device:app-300", "device:app-301"]})
    assert r.json()["matches"] == {"device:app-7": "C-0007", "device:app-300": "C-0300"}
    profile = c.profile("C-0007").json()
    assert "device:app-7" in profile["identities"]
    assert all(sku in CATALOGUE_BY_SKU for sku in profile["wishlist"] + profile["cart"])
    feed, _ = c.all_changes(limit=5000)
    assert len(feed) == stats["profiles"]
    # Restarting with --demo-data does not reload over existing data.
    c.upsert({"customer_id": "C-0007", "tier": "vip"})
    c.stop()
    c = start_central(*token_args(), "--demo-data", db=c.db)
    assert c.profile("C-0007").json()["tier"] == "vip"
    assert c.request("GET", "/v1/admin/stats").json()["profiles"] == stats["profiles"]


def test_demo_data_is_deterministic_and_plausible() -> None:
    a, b = generate_profiles(), generate_profiles()
    assert a == b and len(a) == 300
    assert [x["customer_id"] for x in a[:2]] == ["C-0001", "C-0002"]
    share = sum(x["consents"]["personalization"] for x in a) / len(a)
    assert 0.6 < share < 0.8
    assert {x["tier"] for x in a} == set(p.TIERS)
    assert any(x["orders_ready"] for x in a)
    assert sum(any(k.startswith("loyalty:") for k in x["identities"]) for x in a) > 150
    for x in a:
        p.validate_profile(dict(x), partial=False)
        n = int(x["customer_id"][2:])
        assert f"device:app-{n}" in x["identities"]
        for order in x["orders_ready"]:
            assert all(sku in CATALOGUE_BY_SKU for sku in order["items"])


# --- bad input --------------------------------------------------------------------------------------


def test_bad_requests_get_json_errors_never_a_crash(central: Central) -> None:
    url = f"{central.url}/v1/stores/s1/events"
    auth = {"Authorization": f"Bearer {TOKENS['s1']}"}
    cases = [
        (b"not json", 400), (b"", 400), (b"[1, 2]", 400), (b'{"events": {}}', 400), (b'{"events": [NaN]}', 400),
        (b"[" * 100000 + b"]" * 100000, 400), (b"\xff\xfe", 400),
    ]
    for body, status in cases:
        r = requests.post(url, data=body, headers={**auth, "Content-Type": "application/json"}, timeout=30)
        assert r.status_code == status, (body[:20], r.text)
        assert r.json()["error"]["message"]
    big = json.dumps({"events": [event(f"e-{i}", data={"pad": "x" * 1000}) for i in range(9000)]})
    r = requests.post(url, data=big, headers={**auth, "Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    too_many = central.push("s1", [event(f"e-{i}") for i in range(p.MAX_BATCH_EVENTS + 1)])
    assert too_many.status_code == 413 and "split" in too_many.json()["error"]["message"]
    r = central.request("GET", "/v1/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = central.request("PUT", "/v1/profiles/changes")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    r = central.request("GET", "/v1/admin/events", params={"limit": "ten"})
    assert r.status_code == 400
    r = central.push("bad store!", [event("x")], token=ADMIN)
    assert r.status_code in (400, 404)
    assert central.events() == []
    assert central.request("GET", "/healthz").status_code == 200


# --- protocol types ---------------------------------------------------------------------------------


def test_wire_event_round_trips_and_validates() -> None:
    e = p.WireEvent.from_dict({"event_id": "kiosk:k1:9", "kind": "kiosk", "type": "consent", "ts": NOW, "seq": 9,
                               "customer": "C-1", "source": "k1", "received_at": NOW,
                               "data": {"consent": {"personalization": True}}, "future_field": 1})
    assert e.consent == {"personalization": True} and e.is_consent
    assert p.WireEvent.from_dict(e.to_dict()) == e
    assert p.WireEvent.from_dict({"event_id": "x", "kind": "qr", "ts": "2025-01-01T00:00:00+01:00"}).ts == 1735686000.0
    with pytest.raises(p.InvalidEvent) as exc:
        p.WireEvent.from_dict({"event_id": "x", "kind": "qr", "ts": True})
    assert exc.value.reason == "wrong_type"
    rejection = {"id": "c", "index": 2, "reason": "missing_field", "detail": "kind"}
    result = p.PushResult.from_dict({"accepted": ["a"], "duplicates": ["b"], "rejected": [rejection]})
    assert result.delivered == {"a", "b"} and result.rejected[0]["reason"] == "missing_field"


# --- the fleet view ----------------------------------------------------------------------------------


def test_the_fleet_lists_every_store_quietest_first_with_the_health_it_reported(any_central: Central) -> None:
    central = any_central
    health = {"version": "0.9.1", "ready": True, "outbox_pending": 7, "outbox_oldest_age_s": 3.5,
              "last_pull_at": time.time() - 4, "deadletters_last_hour": 2, "sent_at": time.time() - 1.5,
              "breaker": "closed", "not_ready": [], "dead_threads": [], "from_a_newer_edge": {"x": 1}}
    r = central.request("POST", "/v1/stores/s1/events", TOKENS["s1"], json={"events": [event("e-1")], "health": health})
    assert r.status_code == 200 and r.json()["accepted"] == ["e-1"]
    fleet = central.request("GET", "/v1/admin/stores").json()["stores"]
    assert [row["store"] for row in fleet] == ["s2", "s1"]  # s2 has a token and was never heard from: first
    s2, s1 = fleet
    assert s2["quiet"] is True and s2["last_seen_at"] is None and s2["version"] is None
    assert s1["quiet"] is False and s1["version"] == "0.9.1" and s1["ready"] is True and s1["outbox_pending"] == 7
    assert s1["outbox_oldest_age_s"] == 3.5 and s1["deadletters_last_hour"] == 2 and 1.0 < s1["clock_offset_s"] < 5
    assert "from_a_newer_edge" not in s1 and s1["events_total"] == 1
    one = central.request("GET", "/v1/admin/stores/s1").json()
    assert one["store"] == "s1" and one["rejected"] == {} and one["version"] == "0.9.1"
    assert central.request("GET", "/v1/admin/stores/nowhere").status_code == 404
    assert central.request("GET", "/v1/admin/stores", TOKENS["s1"]).status_code == 403


def test_a_health_report_it_cannot_read_never_costs_the_events(any_central: Central) -> None:
    central = any_central
    r = central.request("POST", "/v1/stores/s1/events", TOKENS["s1"],
                        json={"events": [event("e-1")], "health": {"ready": "yes", "outbox_pending": -1}})
    assert r.status_code == 200 and r.json()["accepted"] == ["e-1"]
    assert "health.ready" in r.json()["health_error"]
    assert central.request("GET", "/v1/admin/stores/s1").json()["ready"] is None


def test_a_retried_batch_with_fresher_health_is_the_same_batch(central: Central) -> None:
    """The Idempotency-Key covers the events: a retry carries a newer health report, and is replayed."""
    events = [event("e-1"), event("e-2", data={"k": "v"})]
    headers = {p.IDEMPOTENCY_HEADER: "s1:1-2:abc"}
    first = central.request("POST", "/v1/stores/s1/events", TOKENS["s1"], headers=headers,
                            json={"events": events, "health": {"outbox_pending": 2, "sent_at": time.time()}})
    again = central.request("POST", "/v1/stores/s1/events", TOKENS["s1"], headers=headers,
                            json={"events": events, "health": {"outbox_pending": 0, "sent_at": time.time()}})
    assert first.status_code == again.status_code == 200 and again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["accepted"] == ["e-1", "e-2"]
    other = central.request("POST", "/v1/stores/s1/events", TOKENS["s1"], headers=headers,
                            json={"events": [event("e-3")], "health": {"outbox_pending": 0}})
    assert other.status_code == 422


def test_metrics_count_events_by_result_and_reason_and_show_the_fleet(central: Central) -> None:
    central.push("s1", [event("e-1"), event("e-2"), {"kind": "beacon"}])
    central.push("s1", [event("e-1")])
    text = central.request("GET", "/metrics", token=None).text
    for line in ('instore_central_events_total{result="accepted"} 2.0',
                 'instore_central_events_total{result="duplicate"} 1.0',
                 'instore_central_events_total{result="rejected"} 1.0',
                 'instore_central_events_rejected_total{reason="missing_field"} 1.0',
                 'instore_central_push_seconds_count 2.0',
                 'instore_central_stores{state="known"} 2.0', 'instore_central_stores{state="quiet"} 1.0',
                 'instore_central_info{engine="sqlite"'):
        assert line in text, line
