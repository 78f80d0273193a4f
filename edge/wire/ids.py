"""Event ids, the dedupe key: a redelivered message must get the id its first receipt got.

A device that numbers its messages gets `kind:source:id`; otherwise the id is a hash of the topic and
the bytes (with the device's own timestamp in front, so ids grow with time), and for formats without a
timestamp the receive time is part of it.
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import tzinfo
from typing import Any

from edge.model import Rejected
from edge.wire.fields import ident_field, parse_ts
from edge.wire.inbound import Inbound

_qos0_counter = itertools.count()


def _time_key(msg: Inbound) -> str:
    """The payload's own "ts" (a {"sightings": [...]} batch: its first sighting's), as time_key reads it."""
    ts = msg.obj.get("ts")
    if ts is None:  # a {"sightings": [...]} batch: its first sighting's time
        batch = msg.obj.get("sightings")
        ts = batch[0].get("ts") if type(batch) is list and batch and type(batch[0]) is dict else None
    return time_key(ts, msg.site.tz)


def time_key(ts: Any, tz: tzinfo) -> str:
    """A hex millisecond prefix for hashed ids, from the payload's own "ts" (the same bytes give the same
    prefix): ids then grow with time, so the unique index on events.event_id is appended to, not written
    at a random leaf per insert (which made each commit rewrite ~1 page per event once the log is large)."""
    kind = type(ts)
    if kind is int or kind is float:
        ms = ts
    elif kind is str:
        try:
            ms = parse_ts(ts, tz) * 1000
        except Rejected:
            return ""
    else:
        return ""
    return f"{int(ms):011x}:" if 0 <= ms < 1 << 44 else ""


def hash_id(msg: Inbound) -> str:
    """An id from the message bytes: an MQTT redelivery (same topic, same bytes) gets the same id."""
    return hashed_id(msg.topic, msg.payload, msg.qos, msg.received_at, _time_key(msg))


def hashed_id(topic: str, payload: bytes, qos: int, received_at: float, key: str, sha1: bytes | None = None) -> str:
    """hash_id from its parts (`key`: time_key's prefix; `sha1`: sha1(topic + NUL + payload) when the caller
    has it already, as the writer does for the quarantine).

    QoS 0 is never redelivered, so there identical bytes are distinct events: the receive time and
    a process counter are mixed in to keep them apart.
    """
    if sha1 is not None and qos:
        return "h:" + key + sha1[:10].hex()
    digest = hashlib.sha1(topic.encode() + b"\0" + payload, usedforsecurity=False)
    if qos == 0:
        digest.update(b"\0%r:%d" % (received_at, next(_qos0_counter)))
    return "h:" + key + digest.hexdigest()[:20]


# (topic, payload) digest -> the id given at its latest receipt, for messages without a device timestamp
# that came at QoS 1: a broker redelivery (DUP flag) of one of them gets the same id again. Bounded: a
# redelivery follows a reconnect, and the broker redelivers at most its in-flight window per client.
_recent_ids: dict[bytes, str] = {}
RECENT_IDS_MAX = 8192


def receipt_id(msg: Inbound) -> str:
    """An id for a message that carries neither a timestamp nor a message id (foreign gateways).

    Identical bytes received twice are two real sightings (a beacon that did not move), so the receive
    time is part of the id at any QoS. A QoS 1 redelivery, which the broker flags DUP, takes back the
    id its first receipt got, if this process saw it; after a crash between commit and ack it is
    recorded a second time (a repeated sighting, harmless to presence).
    """
    digest = hashlib.sha1(msg.topic.encode() + b"\0" + msg.payload, usedforsecurity=False)
    key = digest.digest() if msg.qos else b""
    if key and msg.dup:
        known = _recent_ids.get(key)
        if known is not None:
            return known
    digest.update(b"\0%r:%d" % (msg.received_at, next(_qos0_counter)))
    event_id = f"h:{int(msg.received_at * 1000):011x}:" + digest.hexdigest()[:20]  # time first: see _time_key
    if key:
        if _recent_ids.pop(key, None) is None and len(_recent_ids) >= RECENT_IDS_MAX:
            del _recent_ids[next(iter(_recent_ids))]  # the oldest: dicts keep insertion order
        _recent_ids[key] = event_id
    return event_id


def device_id(kind: str, msg: Inbound, obj: dict[str, Any], where: str) -> str | None:
    """kind:source:id when the device numbered its message, so its own retries dedupe too."""
    ident = ident_field(obj, "id", where)
    return None if ident is None else f"{kind}:{msg.source}:{ident}"


def message_id(kind: str, msg: Inbound) -> str:
    return device_id(kind, msg, msg.obj, "") or hash_id(msg)
