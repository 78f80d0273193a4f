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
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("instore_central")


def pages(answers: Iterator[dict[str, Any]], *, closed: Callable[[], bool],
          on_page: Callable[[], None] = lambda: None) -> Iterator[bytes]:
    """The stream's lines from `answers` (Storage.change_stream: the first page at once, then each page as it
    comes); `closed()` says the server is stopping; `on_page` runs after each line. The first page is read
    here, before the answer begins, so a bad cursor is still a 400."""
    return _lines(next(answers), answers, closed, on_page)


def _lines(page: dict[str, Any], answers: Iterator[dict[str, Any]], closed: Callable[[], bool],
           on_page: Callable[[], None]) -> Iterator[bytes]:
    try:
        while True:
            yield json.dumps(page, separators=(",", ":")).encode() + b"\n"
            if closed():
                return
            try:
                on_page()
                page = next(answers)
            except StopIteration:
                return  # the wait ran out (or the server is stopping) with nothing new
            except Exception as exc:  # noqa: BLE001 - the answer has begun: end it, the next request reports
                log.warning("change feed stream ended early: %s", str(exc)[:200] or type(exc).__name__)
                return
    finally:
        close = getattr(answers, "close", None)
        if close is not None:
            close()  # the stream's wake-up registration ends with it (a store gone mid-stream included)
