"""The central store's storage contract, run against both engines: a SQLite file and a real PostgreSQL.

Every operation of storage.Storage, and the promises that must hold with several processes writing at
once (real processes, tests/storage_worker.py): an event recorded once, versions that never go backwards,
a feed cursor that never skips a change committed late.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sync import protocol as p
from sync.central.storage import Conflict, IdempotencyKeyReused, NotFound, Settings, Storage, body_hash, open_storage
from sync.central.storage.common import InvalidCursor
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
NOW = time.time()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database of one test: a SQLite file path, or a fresh PostgreSQL database URL."""
    if request.param == "sqlite":
        return str(tmp_path / "central.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def make_storage(db: str) -> Iterator[Callable[..., Storage]]:
    made: list[Storage] = []

    def make(**settings: Any) -> Storage:
        s = open_storage(db, Settings(**settings) if settings else None)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def store(make_storage: Callable[..., Storage]) -> Storage:
    return make_storage()


def event(event_id: str, seq: int | None = None, **fields: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"event_id": event_id, "kind": "beacon", "ts": NOW, "source": "gw-1", "zone": "entrance"}
    if seq is not None:
        e["seq"] = seq
    e.update(fields)
    return e


def consent(event_id: str, customer: str, ts: float = NOW, **purposes: bool) -> dict[str, Any]:
    return {"event_id": event_id, "kind": "kiosk", "type": "consent", "ts": ts, "source": "kiosk-1",
            "customer": customer, "data": {"consent": purposes}}


def shopper(customer_id: str, **fields: Any) -> dict[str, Any]:
    return {"customer_id": customer_id, "first_name": "Giulia", "segments": ["sneakers"], "tier": "silver",
            "consents": {"personalization": False, "marketing": False}, **fields}


def upsert(store: Storage, *profiles: dict[str, Any]) -> list[dict[str, Any]]:
    return store.upsert_profiles([p.validate_profile(x) for x in profiles])


def feed(store: Storage, since: str | None = None, who: str | None = None,
         limit: int = 500) -> tuple[list[dict[str, Any]], str]:
    """Every change after `since` for a store (None: the admin's whole feed); the cursor after them."""
    out: list[dict[str, Any]] = []
    while True:
        page = store.changes(since, limit, store=who)
        out += page["changes"]
        since = page["next"]
        if not page["more"]:
            return out, since


def names(changes: list[dict[str, Any]]) -> list[str]:
    return [c.get("customer_id") or "#" + c["customer_hash"] for c in changes]


# --- events -----------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def pushes_take_the_one_statement_path(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """On PostgreSQL a push without profile-changing events is one statement; if that statement fails, the
    push still succeeds the general way and logs why: these tests would pass either way, so a failure of the
    one-statement path (a bug in its SQL) fails them here."""
    yield
    failed = [r.getMessage() for r in caplog.get_records("call") if "plain push failed" in r.getMessage()]
    assert not failed, failed


def test_a_batch_is_recorded_once_per_store_and_event_id(store: Storage) -> None:
    batch = [event(f"e-{i}", seq=i) for i in range(1, 6)]
    assert store.push_events("s1", batch) == ({"accepted": [f"e-{i}" for i in range(1, 6)], "duplicates": [],
                                               "rejected": []}, False)
    assert store.push_events("s1", batch)[0]["duplicates"] == [f"e-{i}" for i in range(1, 6)]
    assert store.push_events("s1", [event("e-5", seq=5), event("e-6", seq=6), event("e-6", seq=6)])[0] == \
        {"accepted": ["e-6"], "duplicates": ["e-5", "e-6"], "rejected": []}
    assert store.push_events("s2", [event("e-1")])[0]["accepted"] == ["e-1"]  # ids are per store
    listed = store.list_events(None, 0, 100)["events"]
    assert [(e["store"], e["event_id"]) for e in listed] == [("s1", f"e-{i}") for i in range(1, 7)] + [("s2", "e-1")]
    assert store.stats()["events"] == {"total": 7, "by_store": {"s1": 6, "s2": 1}}


def test_an_idempotency_key_replays_the_first_answer_and_refuses_another_batch(store: Storage) -> None:
    batch = [event("k-1"), event("k-2")]
    digest = body_hash(json.dumps(batch).encode())
    first = store.push_events("s1", batch, "key-1", digest)
    assert first == ({"accepted": ["k-1", "k-2"], "duplicates": [], "rejected": []}, False)
    assert store.push_events("s1", batch, "key-1", digest) == (first[0], True)
    with pytest.raises(IdempotencyKeyReused):
        store.push_events("s1", [event("k-3")], "key-1", "another-digest")
    assert store.push_events("s2", [event("k-3")], "key-1", "another-digest")[0]["accepted"] == ["k-3"]
    # Keys expire: after the TTL the same key is a new batch (its events are duplicates by id).
    store.maintain(now=time.time() + 2 * 24 * 3600)
    assert store.push_events("s1", batch, "key-1", digest) == (
        {"accepted": [], "duplicates": ["k-1", "k-2"], "rejected": []}, False)


def test_a_retry_gets_the_first_answer_with_its_duplicates_and_rejections(store: Storage) -> None:
    batch = [event("r-1"), event("r-1"), {"kind": "beacon", "ts": NOW}, event("r-2"), "text"]
    digest = body_hash(json.dumps(batch).encode())
    first, replayed = store.push_events("s1", batch, "key-r", digest)
    assert (first["accepted"], first["duplicates"], replayed) == (["r-1", "r-2"], ["r-1"], False)
    assert [(r["id"], r["index"], r["reason"]) for r in first["rejected"]] == [
        (None, 2, "missing_field"), (None, 4, "not_object")]
    assert store.push_events("s1", batch, "key-r", digest) == (first, True)
    nothing_valid = ["text", 42]
    first = store.push_events("s1", nothing_valid, "key-n", body_hash(b"n"))
    assert first[0]["accepted"] == [] and len(first[0]["rejected"]) == 2
    assert store.push_events("s1", nothing_valid, "key-n", body_hash(b"n")) == (first[0], True)
    assert store.stats()["events"]["by_store"]["s1"] == 2


def test_invalid_events_are_rejected_with_reasons_and_counted(store: Storage) -> None:
    answer, _ = store.push_events("s1", [event("ok"), {"kind": "beacon", "ts": NOW}, event("ms", ts=NOW * 1000),
                                         "text", event("bad-erase", kind="erasure", data={"customer_hash": "x"})])
    assert answer["accepted"] == ["ok"]
    assert [(r["id"], r["index"], r["reason"]) for r in answer["rejected"]] == [
        (None, 1, "missing_field"), ("ms", 2, "invalid_value"), (None, 3, "not_object"),
        ("bad-erase", 4, "invalid_value")]
    assert store.stats()["rejected"] == {"s1": {"invalid_value": 2, "missing_field": 1, "not_object": 1}}


def test_an_event_the_central_fails_on_is_refused_alone_and_the_rest_of_the_batch_recorded(
        store: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """No real input reaches these paths any more (validation refuses it first), yet a bug in applying or
    checking one event must cost that event only: the batch is redone event by event in savepoints."""
    from sync.central.storage import profiles as rules

    upsert(store, shopper("C-1"), shopper("C-2"))
    apply_event, from_dict = rules.apply_event, p.WireEvent.from_dict.__func__  # type: ignore[attr-defined]

    def failing_apply(tx: Any, e: p.WireEvent) -> str | None:
        if e.event_id == "guilty":
            raise RuntimeError("a bug in applying one event")
        return apply_event(tx, e)

    def failing_check(cls: type, obj: Any) -> p.WireEvent:
        if isinstance(obj, dict) and obj.get("event_id") == "unreadable":
            raise KeyError("a bug in validation")
        return from_dict(cls, obj)

    monkeypatch.setattr(rules, "apply_event", failing_apply)
    monkeypatch.setattr(p.WireEvent, "from_dict", classmethod(failing_check))
    answer, _ = store.push_events("s1", [consent("c-1", "C-1", personalization=True), event("b-1", customer="C-1"),
                                         consent("guilty", "C-2", personalization=True), event("unreadable"),
                                         event("b-2"), event("b-1")])
    assert answer["accepted"] == ["c-1", "b-1", "b-2"] and answer["duplicates"] == ["b-1"]
    assert [(r["id"], r["index"], r["reason"]) for r in answer["rejected"]] == [
        ("guilty", 2, "internal_error"), ("unreadable", 3, "internal_error")]
    assert "RuntimeError" in answer["rejected"][0]["detail"] and "KeyError" in answer["rejected"][1]["detail"]
    assert store.get_profile("C-1")["consents"]["personalization"] is True  # applied once, by the redo
    assert store.get_profile("C-2")["consents"]["personalization"] is False
    assert [e["event_id"] for e in store.list_events("s1", 0, 100)["events"]] == ["c-1", "b-1", "b-2"]
    assert store.stats()["rejected"] == {"s1": {"internal_error": 2}}
    monkeypatch.undo()
    # The refused event, sent again once the bug is gone, is recorded and applied.
    assert store.push_events("s1", [consent("guilty", "C-2", personalization=True)])[0]["accepted"] == ["guilty"]
    assert store.get_profile("C-2")["consents"]["personalization"] is True
    versions = [c["version"] for c in feed(store)[0] if c.get("customer_id") == "C-1"]
    assert versions == [2]  # the failed first attempt left no version behind


# --- profiles ---------------------------------------------------------------------------------------


def test_upsert_bumps_versions_and_an_identity_clash_saves_nothing(store: Storage) -> None:
    [created] = upsert(store, shopper("C-1", identities=["device:app-1"], home_store="s1"))
    assert created["version"] == 1 and set(created) == set(p.PROFILE_FIELDS)
    [updated] = upsert(store, {"customer_id": "C-1", "consents": {"marketing": True}, "cart": ["SNK-2"]})
    assert (updated["version"], updated["cart"], updated["home_store"]) == (2, ["SNK-2"], "s1")
    assert updated["consents"] == {"personalization": False, "marketing": True}
    with pytest.raises(Conflict, match="'C-1'"):
        upsert(store, shopper("C-2"), shopper("C-3", identities=["device:app-1"]))
    assert store.get_profile("C-2") is None
    assert store.get_profile("C-1") == updated
    assert store.resolve(["device:app-1", "device:app-9"]) == {"device:app-1": "C-1"}


def test_consent_events_apply_once_and_the_newest_decision_wins(store: Storage) -> None:
    upsert(store, shopper("C-1"), shopper("C-2"))
    store.push_events("s1", [consent("c-1", "C-1", personalization=True)])
    after = store.get_profile("C-1")
    assert after is not None and after["consents"]["personalization"] is True and after["version"] == 2
    store.push_events("s1", [consent("c-1", "C-1", personalization=True)])  # a retry
    store.push_events("s2", [consent("c-old", "C-1", ts=NOW - 3600, personalization=False)])  # late and older
    assert store.get_profile("C-1") == after
    upsert(store, {"customer_id": "C-2", "consents": {"marketing": True}})  # decided now, after the event below
    store.push_events("s1", [consent("c-late", "C-2", ts=NOW - 60, marketing=False),
                             consent("c-x", "C-404", personalization=True)])
    assert store.get_profile("C-2")["consents"]["marketing"] is True  # type: ignore[index]
    applied = {e["event_id"]: e["applied"] for e in store.list_events(None, 0, 100)["events"]}
    assert applied == {"c-1": "consent", "c-old": "consent:unchanged", "c-late": "consent:unchanged",
                       "c-x": "consent:unknown_customer"}


def test_identity_links_add_keys_and_never_give_one_key_two_owners(store: Storage) -> None:
    upsert(store, shopper("C-1", identities=["loyalty:1"]), shopper("C-2", identities=["device:app-2"]))
    link = {"event_id": "l-1", "kind": "identity_link", "ts": NOW, "customer": "C-1", "data": {"key": "device:app-7"}}
    store.push_events("s1", [link, {**link, "event_id": "l-2", "data": {"key": "device:app-2"}},
                             {**link, "event_id": "l-3", "data": {"key": "session:k1:abc"}},
                             {**link, "event_id": "l-4", "customer": "C-9"}])
    assert store.get_profile("C-1")["identities"] == ["loyalty:1", "device:app-7"]  # type: ignore[index]
    assert store.resolve(["device:app-7", "device:app-2"]) == {"device:app-7": "C-1", "device:app-2": "C-2"}
    applied = [e["applied"] for e in store.list_events(None, 0, 100)["events"]]
    assert applied == ["identity_link", "identity_link:conflict", "identity_link:ephemeral", "identity_link:conflict"]


def test_erasure_removes_the_customer_everywhere_and_versions_keep_growing(store: Storage) -> None:
    upsert(store, shopper("C-1", identities=["device:app-1"], home_store="s1"), shopper("C-2"))
    store.push_events("s2", [event("seen", customer="C-1", subject="device:app-1", data={"note": "Giulia"}),
                             event("anon", subject="device:app-1"), consent("c", "C-1", personalization=True)])
    _, cursor = feed(store, who="s2")
    assert store.erase("C-1") == {"customer_id": "C-1", "version": 3, "op": "erase", "events_anonymized": 3}
    assert store.get_profile("C-1") is None and store.resolve(["device:app-1"]) == {}
    assert store.export("C-1") is None  # the events are still there, but nothing in them names C-1
    events = {e["event_id"]: e for e in store.list_events(None, 0, 10)["events"]}
    assert all((e["customer"], e["subject"], e["data"]) == (None, None, None) for e in events.values())
    changes, _ = feed(store, cursor, "s2")
    assert changes == [{"customer_hash": p.erase_key("C-1"), "version": 3, "op": "erase"}]
    assert store.erase("C-1")["already_erased"] is True
    with pytest.raises(NotFound):
        store.erase("C-nobody")
    assert upsert(store, shopper("C-1"))[0]["version"] == 4  # re-created: the version goes on
    full, _ = feed(store, who="s3")
    assert names(full) == ["C-2", "C-1"]  # the erasure entry went with the re-creation


def test_a_store_asks_for_an_erasure_by_hash_and_every_store_hears_of_it(store: Storage) -> None:
    upsert(store, shopper("C-1", home_store="s1"))
    _, c2 = feed(store, who="s2")
    answer, _ = store.push_events("s1", [event("x-1", kind="erasure", data={"customer_hash": p.erase_key("C-1")}),
                                         event("x-2", kind="erasure", data={"customer_hash": p.erase_key("C-?")})])
    assert answer["accepted"] == ["x-1", "x-2"] and store.get_profile("C-1") is None
    changes, _ = feed(store, c2, "s2")
    assert sorted((c["customer_hash"], c["op"]) for c in changes) == sorted(
        [(p.erase_key("C-1"), "erase"), (p.erase_key("C-?"), "erase")])
    store.push_events("s3", [event("x-3", kind="erasure", data={"customer_hash": p.erase_key("C-1")})])
    again = [c for c in feed(store, c2, "s2")[0] if c["customer_hash"] == p.erase_key("C-1")]
    assert again[0]["version"] > next(c["version"] for c in changes if c["customer_hash"] == p.erase_key("C-1"))
    applied = [e["applied"] for e in store.list_events(None, 0, 10)["events"]]
    assert applied == ["erasure", "erasure:unknown_customer", "erasure:already_erased"]


def test_merge_folds_one_profile_into_another(store: Storage) -> None:
    upsert(store, shopper("C-1", tier="gold", identities=["loyalty:1"], wishlist=["A"], home_store="s1"),
           shopper("C-2", tier="bronze", identities=["device:app-2"], wishlist=["B", "A"]))
    store.push_events("s1", [event("by-1", customer="C-1")])
    merged = store.merge("C-1", "C-2")
    assert merged["profile"]["identities"] == ["device:app-2", "loyalty:1"]
    assert (merged["profile"]["tier"], merged["profile"]["home_store"]) == ("gold", "s1")
    assert store.get_profile("C-1") is None and store.resolve(["loyalty:1"]) == {"loyalty:1": "C-2"}
    assert store.list_events(None, 0, 10)["events"][0]["customer"] == "C-2"
    with pytest.raises(NotFound):
        store.merge("C-1", "C-2")


# --- the change feed --------------------------------------------------------------------------------


def test_the_feed_pages_compacts_and_refuses_foreign_or_malformed_cursors(store: Storage) -> None:
    upsert(store, *[shopper(f"C-{n:03d}") for n in range(1, 26)])
    seen, pages, since = [], 0, None
    while True:
        page = store.changes(since, 10, store="s1")
        seen += names(page["changes"])
        pages, since = pages + 1, page["next"]
        if not page["more"]:
            break
    assert pages == 3 and seen == [f"C-{n:03d}" for n in range(1, 26)]
    assert store.changes(since, 10, store="s1") == {"changes": [], "next": since, "more": False}
    upsert(store, {"customer_id": "C-003", "tier": "gold"})
    upsert(store, {"customer_id": "C-003", "tier": "vip"})
    [change] = store.changes(since, 10, store="s1")["changes"]
    assert (change["customer_id"], change["version"], change["profile"]["tier"]) == ("C-003", 3, "vip")
    reset = store.changes("otherdb.123", 5, store="s1")
    assert reset["reset"] is True and len(reset["changes"]) == 5
    for bad in ("garbage!", ".5", f"{store.epoch}.x"):
        with pytest.raises(InvalidCursor):
            store.changes(bad, 5, store="s1")


def test_each_store_hears_of_its_home_shoppers_their_orders_and_sightings_only(store: Storage) -> None:
    order = {"order_id": "O-1", "items": ["A"], "ready_at": "2025-03-14T10:00:00Z", "store": "s2"}
    upsert(store, shopper("C-home", home_store="s1"), shopper("C-order", home_store="s1", orders_ready=[order]),
           shopper("C-seen", home_store="s3"))
    store.push_events("s2", [event("e-1", customer="C-seen")])
    assert names(feed(store, who="s1")[0]) == ["C-home", "C-order"]
    assert sorted(names(feed(store, who="s2")[0])) == ["C-order", "C-seen"]
    assert names(feed(store, who="s3")[0]) == ["C-seen"]
    assert feed(store, who="s4")[0] == []
    assert sorted(names(feed(store)[0])) == ["C-home", "C-order", "C-seen"]  # the admin reads everything
    _, c4 = feed(store, who="s4")
    upsert(store, {"customer_id": "C-home", "tier": "vip"})
    store.erase("C-seen")
    assert feed(store, c4, "s4")[0] == [{"customer_hash": p.erase_key("C-seen"), "version": 2, "op": "erase"}]


def test_a_shopper_seen_after_the_cursor_passed_their_change_still_reaches_the_store(store: Storage) -> None:
    upsert(store, shopper("C-1", home_store="s1"))
    assert feed(store, who="s2")[0] == []
    _, cursor = feed(store, who="s2")
    store.push_events("s2", [event("e-1", customer="C-1")])
    [change] = feed(store, cursor, "s2")[0]
    assert change["customer_id"] == "C-1" and change["profile"]["home_store"] == "s1"
    _, cursor = feed(store, cursor, "s2")
    store.push_events("s2", [event("e-2", customer="C-1")])  # seen again: nothing new to send
    assert feed(store, cursor, "s2")[0] == []
    upsert(store, {"customer_id": "C-1", "consents": {"personalization": True}})
    assert [c["profile"]["consents"]["personalization"] for c in feed(store, cursor, "s2")[0]] == [True]


def test_a_store_no_longer_concerned_gets_the_change_that_ends_it(store: Storage) -> None:
    upsert(store, shopper("C-1", home_store="s1", consents={"personalization": True}))
    _, cursor = feed(store, who="s1")
    upsert(store, {"customer_id": "C-1", "home_store": "s2", "consents": {"personalization": False}})
    [change] = feed(store, cursor, "s1")[0]
    assert change["profile"]["consents"]["personalization"] is False  # the copy at s1 is brought up to date
    _, cursor = feed(store, cursor, "s1")
    upsert(store, {"customer_id": "C-1", "tier": "vip"})
    assert feed(store, cursor, "s1")[0] == [] and names(feed(store, who="s2")[0]) == ["C-1"]


def test_an_on_demand_fetch_subscribes_the_store_to_later_changes(store: Storage) -> None:
    upsert(store, shopper("C-1", home_store="s1"))
    _, cursor = feed(store, who="s2")
    assert store.get_profile("C-1", store="s2") is not None
    _, cursor = feed(store, cursor, "s2")
    upsert(store, {"customer_id": "C-1", "consents": {"personalization": True}})
    assert names(feed(store, cursor, "s2")[0]) == ["C-1"]


def test_profiles_without_a_home_store_go_everywhere_or_only_where_seen(make_storage: Callable[..., Storage]) -> None:
    everywhere = make_storage()
    upsert(everywhere, shopper("C-1"))
    assert names(feed(everywhere, who="s7")[0]) == ["C-1"]
    only_seen = make_storage(broadcast_unhomed=False)
    upsert(only_seen, shopper("C-2"))
    assert names(feed(only_seen, who="s7")[0]) == ["C-1"]  # C-2 goes nowhere yet
    only_seen.push_events("s7", [event("e", customer="C-2")])
    assert names(feed(only_seen, who="s7")[0]) == ["C-1", "C-2"]


def test_a_long_poll_answers_at_once_when_changes_exist_and_wakes_on_a_new_one(store: Storage) -> None:
    upsert(store, shopper("C-1", home_store="s1"))
    assert names(store.changes(None, 10, store="s1", wait_s=30)["changes"]) == ["C-1"]
    _, cursor = feed(store, who="s1")
    got: list[dict[str, Any]] = []
    waiter = threading.Thread(target=lambda: got.append(store.changes(cursor, 10, store="s1", wait_s=30)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.3)
    upsert(store, shopper("C-elsewhere", home_store="s2"))  # not for s1: s1 keeps waiting
    time.sleep(0.3)
    assert waiter.is_alive()
    upsert(store, {"customer_id": "C-1", "tier": "vip"})
    waiter.join(30)
    assert names(got[0]["changes"]) == ["C-1"] and time.monotonic() - started < 25


def test_stores_woken_by_one_change_each_get_their_own_page(store: Storage) -> None:
    """Twenty stores waiting at once are woken by one write (PostgreSQL reads their pages together, in one
    statement): each gets the change for everyone and its own shopper, nobody else's, and a short page
    limit still cuts each store's page at its own entries."""
    stores = [f"s{i}" for i in range(20)]
    upsert(store, *(shopper(f"C-old-{s}", home_store=s) for s in stores))
    cursors = {s: feed(store, who=s)[1] for s in stores}
    got: dict[str, dict[str, Any]] = {}
    waiters = [threading.Thread(target=lambda s=s: got.__setitem__(s, store.changes(
        cursors[s], 2 if s == "s3" else 10, store=s, wait_s=20))) for s in stores]
    for w in waiters:
        w.start()
    wait_until(lambda: store.signal.waiting == len(stores), what="every store waiting")
    upsert(store, shopper("C-all"), *(shopper(f"C-{s}", home_store=s) for s in stores),
           shopper("C-s3-b", home_store="s3"))
    for w in waiters:
        w.join(30)
    for s in stores:
        assert sorted(names(got[s]["changes"])) == ["C-all", f"C-{s}"], s
    assert got["s3"]["more"] is True and not any(got[s]["more"] for s in stores if s != "s3")
    rest, _ = feed(store, got["s3"]["next"], who="s3")
    assert names(rest) == ["C-s3-b"]


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Any]:
    s = open_storage(pg_url)
    yield s
    s.close()


def test_pages_read_together_are_the_pages_read_alone(pg_store: Any) -> None:
    """PostgreSQL's one statement for several stores' pages (what a wake-up runs) gives each store what
    its own query gives: its shoppers and the broadcast ones, from its position, within its limit."""
    store = pg_store
    upsert(store, shopper("C-all-1"), shopper("C-a", home_store="a"), shopper("C-b", home_store="b"))
    middle = feed(store, who="a")[1]
    upsert(store, shopper("C-a2", home_store="a"), shopper("C-all-2"), shopper("C-b2", home_store="b"))
    xid, seq, _ = store._position(middle)
    asked = [("a", 0, 0, 10), ("b", 0, 0, 2), ("a", xid, seq, 10), ("nobody", 0, 0, 10), ("b", xid, seq, 1)]
    together = store._feed_rows(asked)
    alone = [store._feed_rows([one])[0] for one in asked]
    strip = lambda rows: [r[:5] for r in rows]  # noqa: E731 - the snapshot's xmin may differ between reads
    assert [strip(r) for r in together] == [strip(r) for r in alone]
    assert [[r[2] for r in rows] for rows in together] == [
        ["C-all-1", "C-a", "C-a2", "C-all-2"], ["C-all-1", "C-b"], ["C-a2", "C-all-2"], ["C-all-1", "C-all-2"],
        ["C-b"]]  # b's entry of the first write sorts after a's position (one sequence for every store)


def test_a_long_poll_with_nothing_new_answers_empty_when_its_wait_ends(store: Storage) -> None:
    _, cursor = feed(store, who="s1")
    assert store.changes(cursor, 10, store="s1", wait_s=0.3) == {"changes": [], "next": cursor, "more": False}


def test_a_feed_stream_carries_each_change_as_it_comes_reading_the_feed_once_per_change(store: Storage) -> None:
    """A stream stays registered for wake-ups between its pages: after a page it waits, instead of reading its
    feed again to find it empty (at 300 stores, a change for everyone was 600 reads instead of 300)."""
    upsert(store, shopper("C-0", home_store="s1"))
    _, cursor = feed(store, who="s1")
    reads = 0
    read_page = store.feed_page

    def counted(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        return read_page(*args)

    store.feed_page = counted  # type: ignore[method-assign]
    got: list[dict[str, Any]] = []
    stream = store.change_stream(cursor, 10, store="s1", wait_s=20)
    follower = threading.Thread(target=lambda: got.extend(stream))
    follower.start()
    wait_until(lambda: len(got) == 1, what="the first page at once")
    assert got[0]["changes"] == []
    for i in range(1, 4):
        upsert(store, shopper(f"C-{i}", home_store="s1"))
        wait_until(lambda: len(got) == i + 1, what=f"change {i} on the stream")
    upsert(store, shopper("C-not-s1", home_store="s2"))
    upsert(store, {"customer_id": "C-3", "tier": "vip"})
    wait_until(lambda: len(got) == 5, what="the last change on the stream")
    assert [names(page["changes"]) for page in got] == [[], ["C-1"], ["C-2"], ["C-3"], ["C-3"]]
    assert reads <= 1 + 4 + 2, reads  # the first page, one a change for s1, the s2 change's wake-up at most
    store.signal.close()  # the server stops: the stream ends, and its registration with it
    follower.join(5)
    assert not follower.is_alive() and store.signal.waiting == 0


def test_a_feed_stream_never_misses_a_change_under_concurrent_writers(db: str, store: Storage) -> None:
    def read(cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        pages = list(store.change_stream(cursor, 7, store="s1", wait_s=0.5))  # small pages, short streams
        return pages, pages[-1]["next"]

    missing = _missed_while_writing(db, [[f"C-{w}-{i:03d}" for i in range(40)] for w in range(4)], read)
    assert not missing, f"{len(missing)} changes missed by the stream, e.g. {sorted(missing)[:5]}"


def _missed_while_writing(db: str, ids: list[list[str]],
                          read: Callable[[str | None], tuple[list[dict[str, Any]], str | None]]) -> set[str]:
    """Writer processes upsert `ids` (a list per process) while a thread follows store s1's feed with
    read(cursor) -> (pages, next cursor); the ids the follower never saw."""
    seen: set[str] = set()
    stop = threading.Event()

    def follow() -> None:
        cursor: str | None = None
        while True:
            pages, cursor = read(cursor)
            for page in pages:
                seen.update(names(page["changes"]))
            if stop.is_set() and not any(page["changes"] for page in pages):
                return

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        run_workers(db, [("upsert", {"ids": mine}) for mine in ids])
    finally:
        time.sleep(0.5)
        stop.set()
        reader.join(60)
    return {cid for mine in ids for cid in mine} - seen


# --- admin ------------------------------------------------------------------------------------------


def test_listing_events_keeps_the_received_order_and_filters_by_store(store: Storage) -> None:
    for start in (1, 4, 7):
        store.push_events("s1", [event(f"s1-{i}", seq=i) for i in range(start, start + 3)])
        store.push_events("s2", [event(f"s2-{start}")])
    listed = store.list_events(None, 0, 100)["events"]
    assert [e["received_seq"] for e in listed] == sorted(e["received_seq"] for e in listed)
    page = store.list_events("s1", 0, 4)
    rest = store.list_events("s1", page["next_after"], 100)
    assert page["more"] is True and rest["more"] is False
    assert [e["event_id"] for e in page["events"] + rest["events"]] == [f"s1-{i}" for i in range(1, 10)]


def test_export_returns_everything_held_about_a_shopper(store: Storage) -> None:
    upsert(store, shopper("C-1", identities=["device:app-1"], home_store="s1"), shopper("C-2"))
    upsert(store, {"customer_id": "C-1", "consents": {"marketing": True}})
    store.push_events("s2", [event("seen", customer="C-1"), event("beacon", subject="device:app-1"),
                             event("other", customer="C-2")])
    found = store.export("C-1")
    assert found is not None
    assert found["profile"] == store.get_profile("C-1") and found["identities"] == ["device:app-1"]
    assert found["consents"]["marketing"]["granted"] is True and found["consents"]["marketing"]["decided_at"]
    assert [e["event_id"] for e in found["events"]] == ["seen", "beacon"]
    assert [s["store"] for s in found["stores"]] == ["s2"]
    assert sorted(f["target"] for f in found["feed"]) == ["s1", "s2"]
    assert store.export("C-nobody") is None


def test_retention_drops_old_events_and_keeps_recent_ones(store: Storage) -> None:
    old = NOW - 200 * 86400
    store.push_events("s1", [event("old", ts=old), event("new")])
    done = store.maintain()
    assert [e["event_id"] for e in store.list_events(None, 0, 10)["events"]] == ["new"]
    assert done["events_deleted"] == 1
    later = store.maintain(now=NOW + 120 * 86400)  # four months on: today's events are past the retention
    assert store.list_events(None, 0, 10)["events"] == []
    if store.engine == "postgresql":  # whole partitions, not rows
        assert "events_d" + time.strftime("%Y%m%d", time.gmtime(NOW)) in later["dropped_partitions"]


def test_stores_are_listed_with_when_they_were_last_heard_from(store: Storage) -> None:
    store.push_events("s1", [event("a"), event("b")])
    store.note_store("s2", pulled=True)
    rows = {r["store"]: r for r in store.store_rows()}
    assert rows["s1"]["events_total"] == 2 and rows["s1"]["last_push_at"] and rows["s1"]["last_pull_at"] is None
    assert rows["s2"]["last_pull_at"] and rows["s2"]["last_seen_at"] == rows["s2"]["last_pull_at"]


def test_the_stores_pushing_since_a_time_are_counted(store: Storage) -> None:
    store.push_events("s1", [event("a")], now=NOW)
    store.push_events("s2", [event("b")], now=NOW + 100)
    store.note_store("s3", pulled=True, now=NOW + 100)  # a pull is not a push
    assert [store.stores_pushing(t) for t in (NOW - 1, NOW + 50, NOW + 101)] == [2, 1, 0]


def test_pulls_noted_together_keep_each_stores_latest_time(store: Storage) -> None:
    store.note_store("s1", pulled=True, now=NOW)
    store.note_pulls({"s1": NOW + 30, "s2": NOW + 20})
    store.note_pulls({"s1": NOW + 10})  # a late, older note (another process) does not take the time back
    rows = {r["store"]: r for r in store.store_rows()}
    assert (rows["s1"]["last_pull_at"], rows["s2"]["last_pull_at"]) == (NOW + 30, NOW + 20)
    assert rows["s2"]["last_push_at"] is None and rows["s2"]["events_total"] == 0


def test_a_stores_health_report_is_kept_with_its_clock_offset_until_the_next_one(store: Storage) -> None:
    health = p.parse_health({"version": "1.2.3", "ready": False, "not_ready": ["broker"], "outbox_pending": 40,
                             "outbox_oldest_age_s": 12.5, "last_pull_at": NOW - 5, "deadletters_last_hour": 3,
                             "sent_at": NOW - 2.0, "breaker": "closed", "dead_threads": []})
    store.push_events("s1", [event("a")], health=health, now=NOW)
    store.push_events("s1", [event("b")], now=NOW + 1)  # a push without a report keeps the last one
    row = {r["store"]: r for r in store.store_rows()}["s1"]
    assert (row["version"], row["ready"], row["not_ready"], row["outbox_pending"], row["outbox_oldest_age_s"]) == \
        ("1.2.3", False, ["broker"], 40, 12.5)
    assert row["deadletters_last_hour"] == 3 and row["edge_last_pull_at"] == NOW - 5 and row["health_at"] == NOW
    assert row["clock_offset_s"] == 2.0 and row["last_push_at"] == NOW + 1 and row["events_total"] == 2
    store.push_events("s1", [], health={**health, "ready": True, "outbox_pending": 0}, now=NOW + 30)  # a heartbeat
    row = {r["store"]: r for r in store.store_rows()}["s1"]
    assert (row["ready"], row["outbox_pending"], row["health_at"], row["last_seen_at"]) == (True, 0, NOW + 30, NOW + 30)


# --- several processes at once ----------------------------------------------------------------------


def run_workers(db: str, jobs: list[tuple[str, dict[str, Any]]]) -> list[list[dict[str, Any]]]:
    """Start one process per job, release them together, return each one's output lines."""
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "storage_worker.py"), db, mode, json.dumps(arg)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for mode, arg in jobs]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr.read()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        out.append([json.loads(line) for line in stdout.splitlines() if line.strip()])
    return out


def test_the_same_batches_pushed_by_several_processes_at_once_are_recorded_once(db: str, store: Storage) -> None:
    upsert(store, shopper("C-1"))
    batches = [[event(f"b-{i}", seq=i, customer="C-1") for i in range(start, start + 50)]
               + [consent(f"c-{start}", "C-1", ts=NOW + start, personalization=start % 100 == 0)]
               for start in range(0, 500, 50)]
    keyed = [("push", {"store": "s1", "batches": batches[:5], "key": "same-key"})] * 2
    results = run_workers(db, [("push", {"store": "s1", "batches": batches}) for _ in range(4)] + keyed)
    # (A replayed answer repeats the first answer to the same key: it records nothing.)
    accepted = [i for lines in results for line in lines if not line["replayed"] for i in line["answer"]["accepted"]]
    assert len(accepted) == len(set(accepted)) == 510
    assert [e["event_id"] for e in store.list_events("s1", 0, 5000)["events"]].__len__() == 510
    applied = [e["applied"] for e in store.list_events("s1", 0, 5000)["events"] if e["kind"] == "kiosk"]
    assert len(applied) == 10 and all(applied)
    versions = [c["version"] for c in feed(store)[0]]
    assert versions == [1 + sum(a == "consent" for a in applied)]  # each applied consent bumped it once


def test_profile_versions_never_go_backwards_under_concurrent_writers(db: str, store: Storage) -> None:
    upsert(store, shopper("C-hot"))
    results = run_workers(db, [("upsert", {"ids": ["C-hot"], "rounds": 25}) for _ in range(4)])
    for lines in results:  # each process saw its own writes get ever higher versions
        versions = [line["version"] for line in lines]
        assert versions == sorted(versions) and len(set(versions)) == len(versions)
    every = sorted(line["version"] for lines in results for line in lines)
    assert every == list(range(2, 102))  # one version per write, none twice
    assert store.get_profile("C-hot")["version"] == 101  # type: ignore[index]


def test_the_feed_cursor_never_skips_a_change_under_concurrent_writers(db: str, store: Storage) -> None:
    def read(cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        page = store.changes(cursor, 7, store="s1")  # small pages, read as fast as it can
        return [page], page["next"]

    missing = _missed_while_writing(db, [[f"C-{w}-{i:03d}" for i in range(60)] for w in range(6)], read)
    assert not missing, f"{len(missing)} changes skipped by the cursor, e.g. {sorted(missing)[:5]}"


def test_a_long_poll_wakes_when_another_process_changes_the_feed(db: str, store: Storage) -> None:
    upsert(store, shopper("C-1", home_store="s1"))
    _, cursor = feed(store, who="s1")
    got: list[dict[str, Any]] = []
    waiter = threading.Thread(target=lambda: got.append(store.changes(cursor, 10, store="s1", wait_s=30)))
    started = time.monotonic()
    waiter.start()
    time.sleep(0.3)
    run_workers(db, [("upsert", {"ids": ["C-1"]})])
    waiter.join(30)
    assert names(got[0]["changes"]) == ["C-1"] and time.monotonic() - started < 25


def test_a_central_erasure_removes_copies_of_the_shopper_that_secure_delete_missed(tmp_path: Path) -> None:
    """SQLite central: bytes of an erased shopper outside any live row (what a b-tree page split leaves in a
    page's gap, here planted as a freeblock by a connection without secure_delete) are found after the erasure
    and rebuilt away (sync/scrub.py), and the stats say so."""
    import sqlite3
    from contextlib import closing

    path = tmp_path / "central.db"
    central = open_storage(str(path))
    try:
        central.upsert_profiles([{"customer_id": "cust-QWXZ-9183", "first_name": "Ottoline",
                                  "identities": ["loyalty:OTT-55731"]}, {"customer_id": "C-2"}])
        central.push_events("s1", [event("e1", customer="cust-QWXZ-9183", subject="loyalty:OTT-55731")])
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("PRAGMA secure_delete=OFF")
            other.execute("INSERT INTO store_status(store) VALUES ('note on cust-QWXZ-9183 and OTT-55731')")
            other.execute("DELETE FROM store_status WHERE store LIKE 'note on %'")
            other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert b"cust-QWXZ-9183" in path.read_bytes(), "the test must start with a copy outside live rows"
        central.erase("cust-QWXZ-9183")
        raw = b"".join(f.read_bytes() for f in tmp_path.glob("central.db*"))
        assert b"cust-QWXZ-9183" not in raw and b"OTT-55731" not in raw and b"Ottoline" not in raw
        assert central.stats()["erasure_checks"] == {"clean": 0, "rebuilt": 1, "unverified": 0}
        assert central.get_profile("C-2") is not None and central.stats()["events"]["total"] == 1
    finally:
        central.close()
