"""The change feed as a stream (sync/central/feed_stream.py): when its errors are the request's, and when the
stream just ends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sync.central.feed_stream import pages


def page(n: int, changes: int = 1) -> dict[str, Any]:
    return {"changes": [{"customer_id": f"C-{n}"}] * changes, "next": f"c{n}", "more": False}


def test_a_bad_cursor_fails_the_request_before_the_stream_begins() -> None:
    def answers() -> Iterator[dict[str, Any]]:
        raise ValueError("invalid cursor 'nope'")
        yield page(0)

    with pytest.raises(ValueError, match="invalid cursor 'nope'"):
        pages(answers(), closed=lambda: False)


def test_a_failure_once_the_stream_has_begun_ends_it_after_the_pages_sent() -> None:
    def answers() -> Iterator[dict[str, Any]]:
        yield page(1)
        yield page(2)
        raise ConnectionError("database away")

    lines = list(pages(answers(), closed=lambda: False))
    assert [line.count(b"\n") for line in lines] == [1, 1]
    assert b'"next":"c2"' in lines[1]


def test_the_stream_ends_when_its_pages_do_and_the_first_goes_even_empty() -> None:
    lines = list(pages(iter([page(0, changes=0)]), closed=lambda: False))
    assert len(lines) == 1 and b'"changes":[]' in lines[0]


def test_a_stopping_server_ends_the_stream() -> None:
    lines = list(pages(iter([page(1), page(2)]), closed=lambda: True))
    assert len(lines) == 1


def test_a_stream_left_early_closes_its_pages() -> None:
    """A store gone mid-stream: the server closes the answer, which ends the storage's stream (its wake-up
    registration with it)."""
    ended: list[bool] = []

    def answers() -> Iterator[dict[str, Any]]:
        try:
            yield page(1)
            yield page(2)
            yield page(3)
        finally:
            ended.append(True)

    lines = pages(answers(), closed=lambda: False)
    assert next(lines).endswith(b"\n")
    lines.close()  # type: ignore[attr-defined]
    assert ended == [True]
