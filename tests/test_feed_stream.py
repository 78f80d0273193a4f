"""The change feed as a stream (sync/central/feed_stream.py): when its errors are the request's, and when the
stream just ends."""

from __future__ import annotations

import time
from typing import Any

import pytest

from sync.central.feed_stream import pages


def page(n: int, changes: int = 1) -> dict[str, Any]:
    return {"changes": [{"customer_id": f"C-{n}"}] * changes, "next": f"c{n}", "more": False}


def test_a_bad_cursor_fails_the_request_before_the_stream_begins() -> None:
    def read(since: str | None, wait: float) -> dict[str, Any]:
        raise ValueError(f"invalid cursor {since!r}")

    with pytest.raises(ValueError, match="invalid cursor 'nope'"):
        pages(read, "nope", 5.0, closed=lambda: False)


def test_a_failure_once_the_stream_has_begun_ends_it_after_the_pages_sent() -> None:
    asked: list[str | None] = []

    def read(since: str | None, wait: float) -> dict[str, Any]:
        asked.append(since)
        if len(asked) == 3:
            raise ConnectionError("database away")
        return page(len(asked))

    lines = list(pages(read, None, 5.0, closed=lambda: False))
    assert [line.count(b"\n") for line in lines] == [1, 1]
    assert asked == [None, "c1", "c2"]  # each read goes on from the page before


def test_the_stream_ends_when_its_wait_runs_out_with_nothing_new() -> None:
    def read(since: str | None, wait: float) -> dict[str, Any]:
        if since is None:
            return page(0, changes=0)
        time.sleep(wait)
        return page(1, changes=0)

    started = time.monotonic()
    lines = list(pages(read, None, 0.3, closed=lambda: False))
    assert len(lines) == 1 and b'"changes":[]' in lines[0]  # the first page at once, even empty
    assert 0.25 <= time.monotonic() - started < 2


def test_a_stopping_server_ends_the_stream() -> None:
    lines = list(pages(lambda since, wait: page(1), None, 30.0, closed=lambda: True))
    assert len(lines) == 1
