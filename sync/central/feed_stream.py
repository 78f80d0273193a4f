"""The change feed as a stream: one request that carries every page as it comes, for up to `wait_s`.

A long-poll costs a store a request per change: the answer, then a new request (read, routed,
authenticated, handed to a thread, the feed read again). With a change for every store each second,
300 stores made 600 requests a second of it, ~2 ms of the central's CPU per store and change, the
largest item of its load (docs/scale.md). With `stream=1` the request stays open instead: the first
page at once (what there is now, perhaps nothing: the store then knows it is heard), then a page each
time the store's feed grows (pages follow each other at once while `more`), one JSON object a line,
each the object a long-poll answers. It ends when `wait_s` runs out (the store asks again from the last
`next`, as after a long-poll), when the server stops, or when reading the feed fails: the status line is
long gone by then, so the stream just ends and the store's next request gets the error.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("instore_central")


def pages(read: Callable[[str | None, float], dict[str, Any]], since: str | None, wait_s: float, *,
          closed: Callable[[], bool], on_page: Callable[[], None] = lambda: None) -> Iterator[bytes]:
    """The stream's lines. `read(since, wait_s)` is the long-poll (answers at once when there is something,
    else waits up to wait_s); `closed()` says the server is stopping; `on_page` runs after each line. The
    first page is read here, before the answer begins, so a bad cursor is still a 400."""
    deadline = time.monotonic() + wait_s
    return _lines(read, read(since, 0.0), deadline, closed, on_page)


def _lines(read: Callable[[str | None, float], dict[str, Any]], page: dict[str, Any], deadline: float,
           closed: Callable[[], bool], on_page: Callable[[], None]) -> Iterator[bytes]:
    while True:
        yield json.dumps(page, separators=(",", ":")).encode() + b"\n"
        wait = deadline - time.monotonic()
        if wait <= 0 or closed():
            return
        try:
            on_page()
            page = read(page["next"], wait)
        except Exception as exc:  # noqa: BLE001 - the answer has begun: end it, the next request reports
            log.warning("change feed stream ended early: %s", str(exc)[:200] or type(exc).__name__)
            return
        if not page["changes"] and not page.get("reset"):
            return  # the wait ran out (or the server is stopping) with nothing new
