"""Checks shared by every wire format: JSON decoding, typed fields with their path, timestamps.

Payloads are checked by hand after one `json.loads`: the careful path, which names the reason and the
path of whatever is wrong. (Native sightings, nearly all of the traffic, are read first by a one-pass
msgspec decoder, edge.wire.adapters.native.fast_sightings; only what it refuses comes here.) Checks take
the fast path first (right type, in range) and only build error text when a check fails. Error details name the field by its path in the payload
(`sightings[3].beacon.uuid`) and say what is expected; they quote at most the offending value, cut to 40
characters, because dead letters are kept and shown on the dashboard and must not become a second copy of
personal data.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from edge.model import INVALID_VALUE, MISSING_FIELD, NOT_JSON, NOT_OBJECT, NOT_UTF8, WRONG_TYPE, Rejected
from sync.protocol import lone_surrogate, may_hold_surrogates, nested_deeper, surrogate_detail

# Accepted ranges. Timestamps outside 2000..2100 are a device clock or unit bug, not an event.
# Accepted ranges. Timestamps outside 2000..2100 are a device clock or unit bug, not an event.
TS_MIN_S = 946_684_800.0  # 2000-01-01T00:00:00Z
TS_MAX_S = 4_102_444_800.0  # 2100-01-01T00:00:00Z
RSSI_RANGE = (-130, 20)
TX_POWER_RANGE = (-128, 127)  # a signed byte on the air
U16_RANGE = (0, 65535)

# Longest accepted strings: generous for real devices, small enough to keep rows and caches bounded.
# Longest accepted strings: generous for real devices, small enough to keep rows and caches bounded.
MAX_ID_LEN = 128
MAX_INT_ID = 2**63 - 1  # integer ids: what SQLite and every JSON consumer hold exactly
SHOW_MAX = 40  # characters of an offending value quoted in an error detail
MAX_DEPTH = 32  # JSON nesting: no device format needs a tenth of it
TS_EXPECTED = "epoch milliseconds or an ISO 8601 time"
MISSING: Any = object()
HEX = "[0-9a-fA-F]"
UUID_RE = re.compile(f"({HEX}{{8}})-?({HEX}{{4}})-?({HEX}{{4}})-?({HEX}{{4}})-?({HEX}{{12}})")


def parse_ts(value: Any, tz: tzinfo | str = timezone.utc, path: str = "ts") -> float:
    """Epoch seconds from epoch milliseconds (int/float) or an ISO 8601 string; raise Rejected.

    Naive ISO times are wall-clock times in `tz` (the store's timezone): that is what a device
    without a timezone setting means. Times before 2000 or after 2100 are refused.
    """
    kind = type(value)
    if kind is int or kind is float:
        if 1000.0 * TS_MIN_S <= value <= 1000.0 * TS_MAX_S:
            return value / 1000.0
        hint = "; it looks like seconds, send milliseconds" if TS_MIN_S <= value <= TS_MAX_S else ""
        raise Rejected(INVALID_VALUE, f"{path}: expected epoch milliseconds between 2000 and 2100, "
                                      f"got {show(value)}{hint}")
    if kind is str:
        return _parse_iso(value, tz, path)
    raise Rejected(WRONG_TYPE, f"{path}: expected {TS_EXPECTED}, got {show(value)}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {cut(text, SHOW_MAX)} is too large")
    return value


# NaN/Infinity (or 1e999, which Python reads as inf) would pass Python's json but break every consumer
# that speaks real JSON when the event is stored or synced. Floats are rare in payloads: the hook is cheap.
_JSON = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def decode_json(payload: bytes) -> dict[str, Any]:
    """Bytes -> JSON object, with a distinct reason for each way a payload can fail to be one."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(NOT_UTF8, f"payload: not UTF-8 (invalid byte at offset {exc.start})") from None
    if text[:1] == "\ufeff":  # some device SDKs write a byte-order mark; it is not JSON but harmless
        text = text[1:]
    try:
        obj = _JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise Rejected(NOT_JSON, f"payload: not JSON ({exc.msg} at character {exc.pos})") from None
    except RecursionError:
        raise Rejected(NOT_JSON, f"payload: JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # NaN/Infinity, 1e999, integers with thousands of digits
        raise Rejected(NOT_JSON, f"payload: not JSON ({cut(str(exc), 80)})") from None
    # Where json.loads runs out of stack depends on the calling thread: a fixed limit makes the verdict the same
    # everywhere. Only text with more than MAX_DEPTH brackets can nest that deep, so most payloads skip the walk.
    if text.count("{") + text.count("[") > MAX_DEPTH and nested_deeper(obj, MAX_DEPTH):
        raise Rejected(NOT_JSON, f"payload: JSON nested deeper than {MAX_DEPTH} levels")
    if type(obj) is not dict:
        raise Rejected(NOT_OBJECT, f"payload: expected a JSON object, got {show(obj)}")
    if "\\u" in text and may_hold_surrogates(text):  # "\ud800": text UTF-8 (so SQLite, the central) cannot hold
        where = lone_surrogate(obj)
        if where is not None:
            raise Rejected(INVALID_VALUE, surrogate_detail(where or "payload"))
    return obj


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def show(value: Any, limit: int = SHOW_MAX) -> str:
    """A short, JSON-flavoured rendering of an offending value for an error detail."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(cut(value, limit))
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    try:
        return cut(repr(value), limit)
    except ValueError:  # an int too long to print
        return "a huge number"


def absent(obj: dict[str, Any], key: str, where: str, expected: str, required: bool) -> None:
    """A field that is missing or null: fine when optional, an error naming the field when required."""
    if not required:
        return None
    if key in obj:
        raise Rejected(WRONG_TYPE, f"{where}{key}: expected {expected}, got null")
    raise Rejected(MISSING_FIELD, f"{where}{key}: missing; expected {expected}")


def int_field(obj: dict[str, Any], key: str, where: str, bounds: tuple[int, int], required: bool = True) -> Any:
    """An integer field within bounds; bools are refused (JSON true is not 1)."""
    value = obj.get(key)
    lo, hi = bounds
    if type(value) is int and lo <= value <= hi:
        return value
    expected = f"an integer {lo}..{hi}"
    if value is None:
        return absent(obj, key, where, expected, required)
    reason = INVALID_VALUE if type(value) is int else WRONG_TYPE
    raise Rejected(reason, f"{where}{key}: expected {expected}, got {show(value)}")


def str_field(obj: dict[str, Any], key: str, where: str, max_len: int = MAX_ID_LEN, required: bool = True) -> Any:
    """A non-empty string field of bounded length."""
    value = obj.get(key)
    if type(value) is str and 0 < len(value) <= max_len:
        return value
    expected = f"a non-empty string of at most {max_len} characters"
    if value is None:
        return absent(obj, key, where, expected, required)
    reason = INVALID_VALUE if type(value) is str else WRONG_TYPE
    got = f"{len(value)} characters" if type(value) is str and value else show(value)
    raise Rejected(reason, f"{where}{key}: expected {expected}, got {got}")


def ident_field(obj: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    """An id that devices send as a string or an integer (message ids, customer ids); as a string."""
    value = obj.get(key)
    kind = type(value)
    if kind is str and 0 < len(value) <= MAX_ID_LEN:
        return value
    if kind is int and -MAX_INT_ID <= value <= MAX_INT_ID:
        return str(value)
    expected = f"a string (at most {MAX_ID_LEN} characters) or an integer of at most 19 digits"
    if value is None:
        return absent(obj, key, where, expected, required)
    reason = INVALID_VALUE if kind is str or kind is int else WRONG_TYPE
    raise Rejected(reason, f"{where}{key}: expected {expected}, got {show(value)}")


def ts_field(obj: dict[str, Any], where: str, tz: tzinfo) -> float:
    """The required "ts" field as epoch seconds."""
    value = obj.get("ts")
    if value is None:
        absent(obj, "ts", where, TS_EXPECTED, True)
    return parse_ts(value, tz, where + "ts")


def _parse_iso(value: str, tz: tzinfo | str, path: str) -> float:
    if len(value) > 64:
        raise Rejected(INVALID_VALUE, f"{path}: expected an ISO 8601 time, got {len(value)} characters")
    try:
        moment = datetime.fromisoformat(value)  # 3.11+: accepts a trailing 'Z'
    except ValueError:
        raise Rejected(INVALID_VALUE, f"{path}: expected an ISO 8601 time, got {show(value)}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(tz) if isinstance(tz, str) else tz)
    seconds = moment.timestamp()
    if not TS_MIN_S <= seconds <= TS_MAX_S:
        raise Rejected(INVALID_VALUE, f"{path}: expected a time between 2000 and 2100, got {show(value)}")
    return seconds
