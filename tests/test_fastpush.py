"""The push body's fast path (sync.fastpush, msgspec) answers exactly what the exact path
(protocol.WireEvent.from_dict) answers: the same event for a valid one, and for anything else it steps
aside (None) so the exact path gives each bad event its reason."""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sync import fastpush
from sync import protocol as p

NOW = time.time()
VALID: list[dict[str, Any]] = [
    {"event_id": "e-1", "kind": "presence", "ts": NOW},
    {"event_id": "e-2", "kind": "presence", "type": "zone_enter", "ts": int(NOW), "seq": 7, "received_at": NOW,
     "source": "gw-1", "zone": "shoes", "subject": "device:1", "customer": "C-1", "data": {"rssi": -60, "x": [1, {}]}},
    {"event_id": "e-3", "kind": "kiosk", "type": "consent", "ts": NOW, "customer": "C-1",
     "data": {"consent": {"personalization": True}}},
    {"event_id": "e-4", "kind": "erasure", "ts": NOW, "data": {"customer_hash": p.erase_key("C-9")}},
    {"event_id": "e-5", "kind": "identity_link", "ts": NOW, "customer": "C-1", "data": {"key": "loyalty:1"}},
    {"event_id": "é-6 \U0001F600", "kind": "presence", "ts": NOW, "data": {"emoji": "\U0001F600"}, "unknown": 1},
    {"event_id": "e-7", "kind": "presence", "ts": NOW, "data": None, "source": None},
]
INVALID: list[Any] = [
    "text", {"kind": "presence", "ts": NOW}, {"event_id": "", "kind": "k", "ts": NOW},
    {"event_id": "e", "kind": "k", "ts": NOW * 1000},
    {"event_id": "e", "kind": "k", "ts": NOW, "seq": -1}, {"event_id": "e", "kind": "k", "ts": NOW, "seq": 2**64},
    {"event_id": "e", "kind": "k", "ts": NOW, "seq": True}, {"event_id": "e", "kind": "k", "ts": NOW, "zone": 5},
    {"event_id": "e", "kind": "k", "ts": NOW, "zone": "z" * 300}, {"event_id": "e", "kind": "k", "ts": NOW, "data": []},
    {"event_id": "e\x00", "kind": "k", "ts": NOW}, {"event_id": "e\ud800", "kind": "k", "ts": NOW},
    {"event_id": "e", "kind": "k", "ts": NOW, "data": {"a": "\udc00"}},
    {"event_id": "e", "kind": "k", "ts": NOW, "data": {"a": json.loads("[" * 20 + "]" * 20)}},
    {"event_id": "e", "kind": "k", "ts": NOW, "data": {"a": "x" * (p.MAX_EVENT_DATA_BYTES + 1)}},
    {"event_id": "e", "kind": "kiosk", "type": "consent", "ts": NOW, "customer": "C-1", "data": {}},
    {"event_id": "e", "kind": "erasure", "ts": NOW, "data": {"customer_hash": "nope"}},
]


def refused_by_the_exact_path(obj: Any) -> bool:
    try:
        p.WireEvent.from_dict(obj)
    except p.InvalidEvent:
        return True
    return False


def body(events: list[Any], **more: Any) -> bytes:
    return json.dumps({"events": events, **more}).encode()


def test_valid_events_decode_to_what_the_exact_path_makes() -> None:
    push = fastpush.decode(body(VALID, health={"ready": True}))
    assert push is not None and push.has_health and push.health == {"ready": True}
    for got, obj in zip(push.events, VALID, strict=True):
        want = p.WireEvent.from_dict(obj)
        assert got == want and json.loads(got.data_json or "null") == json.loads(want.data_json or "null")


def test_anything_the_exact_path_refuses_takes_the_exact_path() -> None:
    for obj in INVALID:
        assert refused_by_the_exact_path(obj), obj
        assert fastpush.decode(body([VALID[0], obj])) is None, obj
    # Valid, but rare enough to be left to the exact path: a time as ISO 8601 text.
    assert fastpush.decode(body([{"event_id": "e", "kind": "k", "ts": "2025-01-01T10:00:00Z"}])) is None
    for raw in (b"", b"[]", b'{"events": {}}', b'{"events": [' + b"[" * 5000 + b"]" * 5000 + b"]}", b"{\"events\": [NaN]}"):
        assert fastpush.decode(raw) is None


def test_the_events_digest_ignores_the_health_sent_with_them() -> None:
    a = fastpush.decode(body(VALID, health={"outbox_pending": 3}))
    b = fastpush.decode(body(VALID, health={"outbox_pending": 0}))
    assert a is not None and b is not None and a.events_digest == b.events_digest


_text = st.text(max_size=12)
_value = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                   st.floats(allow_nan=False, allow_infinity=False), _text)
_event = st.fixed_dictionaries({"event_id": _text, "kind": _text, "ts": st.one_of(_value, st.just(NOW))},
                               optional={"seq": _value, "source": _value, "zone": _value, "subject": _value,
                                         "customer": _value, "type": _value, "received_at": _value,
                                         "data": st.one_of(_value, st.dictionaries(_text, _value, max_size=3))})


@settings(max_examples=500, deadline=None)
@given(event=_event)
def test_any_event_decodes_the_same_on_both_paths_or_takes_the_exact_one(event: dict[str, Any]) -> None:
    try:
        raw = json.dumps({"events": [event]}).encode()
    except UnicodeEncodeError:
        return
    push = fastpush.decode(raw)
    if push is None:
        return
    assert push.events == [p.WireEvent.from_dict(json.loads(raw)["events"][0])]


def test_a_nul_in_data_is_kept_by_the_exact_path_and_a_nul_in_an_id_refused() -> None:
    kept = {"event_id": "e-nul", "kind": "presence", "ts": NOW, "data": {"note": "a\x00b"}}
    assert fastpush.decode(body([kept])) is None  # the fast path does not look inside: it steps aside
    assert p.WireEvent.from_dict(kept).data == {"note": "a\x00b"}
    for field in ("event_id", "kind", "source", "zone", "subject", "customer", "type"):
        bad = {"event_id": "e", "kind": "presence", "ts": NOW, field: "x\x00y"}
        assert fastpush.decode(body([bad])) is None, field
        assert refused_by_the_exact_path(bad), field


def test_every_kind_the_central_applies_is_checked_on_the_fast_path_too() -> None:
    """An event of a kind the central applies (consent, erasure, identity link, campaign report, shopper event)
    with nothing in its data is refused, so the fast path, which checks only the kinds in CHECKED_KINDS, must
    step aside for each of them."""
    applied = [{"kind": p.CONSENT_KIND, "type": p.CONSENT_TYPE}, {"kind": p.ERASURE_KIND},
               {"kind": p.IDENTITY_LINK_KIND, "customer": "C-1"}, {"kind": p.CAMPAIGN_KIND, "type": "applied"},
               {"kind": p.SHOPPER_KIND, "type": "wishlist_add", "customer": "C-1"}]
    for fields in applied:
        event = {"event_id": "e", "ts": NOW, **fields}
        assert refused_by_the_exact_path(event), event
        assert fastpush.decode(body([VALID[0], event])) is None, event
