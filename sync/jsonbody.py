"""Request bodies as JSON with a nesting limit, checked by a cheap scan before json.loads ever recurses.

Python's json parser recurses once per nesting level: a 30,000-deep `[[[...]]]` (60 KB, under any body
cap) raises RecursionError, which Flask turns into a 500 with a traceback. No API document we take is
deeper than a handful of levels, so anything past MAX_DEPTH is refused with 400 "too_deep" before
parsing. Used by every JSON endpoint of the edge (edge.web, edge.pages.blueprint) and of the central store
(sync.central.app).
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import request

from sync.protocol import lone_surrogate, may_hold_surrogates, surrogate_detail

MAX_DEPTH = 32
TOO_DEEP = "too_deep"

# One token per match: a string (escapes skipped; an unterminated one runs to the end, so every byte is
# looked at once and no input makes the scan quadratic) or a bracket. Brackets inside strings never count.
_TOKENS = re.compile(rb'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.DOTALL)
_OPEN = frozenset(b"[{")
_CLOSE = frozenset(b"]}")


class TooDeep(ValueError):
    """A JSON document nested deeper than the limit."""

    code = TOO_DEEP

    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels; no request to this API needs more: "
                         "send a flatter document")
        self.limit = limit


class NotText(ValueError):
    """A JSON document whose strings or keys hold a lone surrogate: not text any store can keep."""

    code = "invalid_value"


def nesting_depth_exceeds(raw: bytes, limit: int = MAX_DEPTH) -> bool:
    """True when the brackets outside strings nest deeper than `limit` (stops at the first level past it)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # too few brackets to nest that deep: the common case costs two C-speed counts
    depth = 0
    for m in _TOKENS.finditer(raw):
        c = raw[m.start()]
        if c in _OPEN:
            depth += 1
            if depth > limit:
                return True
        elif c in _CLOSE:
            depth -= 1
    return False


def check_depth(raw: bytes, limit: int = MAX_DEPTH) -> None:
    """Raise TooDeep when `raw` nests deeper than `limit`."""
    if nesting_depth_exceeds(raw, limit):
        raise TooDeep(limit)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(raw: bytes, limit: int = MAX_DEPTH) -> Any:
    """Strict JSON (no NaN/Infinity) nested at most `limit` deep: TooDeep, or ValueError when not JSON."""
    check_depth(raw, limit)
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except RecursionError:  # unreachable after the scan; never let it become a 500
        raise TooDeep(limit) from None


def request_json(limit: int = MAX_DEPTH) -> Any:
    """The Flask request's body as JSON, whatever its Content-Type; None when it is empty or not JSON (the
    endpoint answers with what it expects); TooDeep past `limit` (edge.web answers 400 "too_deep");
    NotText when a string or key holds a lone surrogate, which no text column or JSON consumer can hold
    (400 "invalid_value")."""
    raw = request.get_data(cache=True)
    if not raw:
        return None
    try:
        body = loads(raw, limit)
    except TooDeep:
        raise
    except ValueError:  # also UnicodeDecodeError
        return None
    if may_hold_surrogates(raw):
        where = lone_surrogate(body)
        if where is not None:
            raise NotText(surrogate_detail(where or "body"))
    return body
