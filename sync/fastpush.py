"""A push body decoded and checked in C (msgspec) when every event in it is well-formed: the common case.

The exact path (sync.jsonbody.loads, then protocol.WireEvent.from_dict per event) costs about 25 µs per
event in Python; at a chain's peak (tens of thousands of events a second) that was most of the central's
CPU. Here msgspec decodes the body straight into typed structs, checking types, lengths and ranges as it
reads, and refuses anything else: a lone surrogate (it decodes only valid UTF-8), a value out of range, an
ISO 8601 `ts`, nesting past the interpreter's recursion limit, a missing field. `decode` then answers
None and the caller takes the exact path, which rejects each bad event with its own reason: the answers
are the same on both paths, only their cost differs (tests/test_fastpush.py holds them equal).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from sync import protocol as p

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=p.MAX_ID_LEN)]
_Str = Annotated[str, msgspec.Meta(min_length=1, max_length=p.MAX_STR_LEN)]
_Ts = Annotated[float, msgspec.Meta(ge=p.TS_MIN_S, le=p.TS_MAX_S)]


class _Event(msgspec.Struct):
    event_id: Annotated[str, msgspec.Meta(min_length=1, max_length=p.MAX_EVENT_ID_LEN)]
    kind: _Str
    ts: _Ts
    seq: Annotated[int, msgspec.Meta(ge=0, le=p.MAX_SEQ)] | None = None
    received_at: _Ts | None = None
    source: _Id | None = None
    zone: _Str | None = None
    subject: _Str | None = None
    customer: _Id | None = None
    type: _Str | None = None
    data: dict[str, Any] | None = None


class _Envelope(msgspec.Struct):
    events: msgspec.Raw
    health: msgspec.Raw = msgspec.Raw(b"")  # empty: not sent


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_EVENTS = msgspec.json.Decoder(list[_Event])
_ANY = msgspec.json.Decoder()
_ENCODE = msgspec.json.Encoder().encode
_NUL_ESCAPE = b"\\u0000"


@dataclass(frozen=True, slots=True)
class Push:
    """A push body that passed every check: its events, its health report (not yet checked) and the
    digest of its events alone (the Idempotency-Key covers the batch, not the health sent with it)."""

    events: list[p.WireEvent]
    health: Any
    has_health: bool
    events_digest: str


def decode(raw: bytes) -> Push | None:
    """The push body's events, all valid; None when anything in it needs the exact path."""
    try:
        envelope = _ENVELOPE.decode(raw)
        items = _EVENTS.decode(envelope.events)
        sent = len(envelope.health) > 0
        health = _ANY.decode(envelope.health) if sent else None
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if len(items) > p.MAX_BATCH_EVENTS:
        return None
    # A NUL can only reach a decoded string as the escape \u0000 (msgspec refuses raw control characters
    # in strings): a body without one needs no look at each event's text, a body with one (rare: a NUL in an
    # id is refused, in data it is kept) takes the exact path.
    if _NUL_ESCAPE in raw:
        return None
    events: list[p.WireEvent] = []
    for item in items:
        event = _checked(item)
        if event is None:
            return None
        events.append(event)
    return Push(events, health, sent, hashlib.sha256(bytes(envelope.events)).hexdigest())


def _checked(e: _Event) -> p.WireEvent | None:
    """What msgspec cannot check: data's depth and size, what consent, erasure and identity_link events need
    (protocol.WireEvent._check_semantics). Called for every event of every push, so kept to what each needs."""
    data = e.data
    data_json = None
    if data:
        try:
            encoded = _ENCODE(data)  # UTF-8 where the exact path escapes to ASCII: the same JSON, 30x faster
        except (msgspec.EncodeError, RecursionError):
            return None
        if len(encoded) * 6 > p.MAX_EVENT_DATA_BYTES:
            return None  # near the limit, measured the exact path's way (escaped, 6 bytes a character at most)
        data_json = encoded.decode()
        # Fewer brackets than the limit cannot nest past it: the walk is for the rare deep document.
        if data_json.count("{") + data_json.count("[") > p.MAX_DATA_DEPTH and p.nested_deeper(data, p.MAX_DATA_DEPTH):
            return None
    else:
        data = {}
    # Positional, in WireEvent's field order (a quarter cheaper than by keyword; tests hold both paths' events equal).
    event = p.WireEvent(e.event_id, e.kind, e.ts, e.seq, e.source, e.zone, e.subject, e.customer, e.type, data,
                        e.received_at, data_json)
    try:
        event._check_semantics()  # returns at once for the kinds the central only records (CHECKED_KINDS)
    except p.InvalidEvent:
        return None
    return event
