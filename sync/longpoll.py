"""What the two feeds the edge follows (profile changes, sync/pull.py; store content, sync/content.py) share:
how a page is asked for, and the thread that long-polls, pauses and backs off.

Both feeds are read the same way: from the cursor the edge kept, `limit` entries a page, and with `wait_s`
the central store holds the request until something for this store arrives. The loop asks at once on start,
then long-polls; an authentication error is retried slowly (an operator must fix the token), a failed pull
with back-off capped so a recovered central store is heard from soon.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sync.transport import AuthError, Backoff, Errors, SyncError

log = logging.getLogger(__name__)


def page_params(limit: int, since: str | None, wait_s: float) -> dict[str, Any]:
    """The query of a feed page: `since` omitted for the feed's start, `wait_s` only for a long-poll."""
    params: dict[str, Any] = {"limit": limit}
    if since:
        params["since"] = since
    if wait_s > 0:
        params["wait_s"] = f"{wait_s:g}"
    return params


def page_timeout(timeout_s: float, wait_s: float) -> tuple[float, float]:
    """(connect, read) timeouts of a feed request: the read may last as long as the central store may hold it."""
    return min(5.0, timeout_s), timeout_s + wait_s


def follow(pull_once: Callable[[float], int], *, stop: threading.Event, backoff: Backoff, interval_s: float,
           long_poll_s: float, errors: Errors, channel: str, what: str, retry_cap_s: float,
           held: Callable[[SyncError, float], float | None] | None = None) -> None:
    """Run `pull_once(wait_s)` until `stop`: at once, then long-polling with `interval_s` between two pulls.

    `channel` names the error slot in the sync status, `what` the pull in messages ("profile pull").
    `held(exc, delay)` may answer a delay for a failure that is not this edge's error (an older central store
    without the feed): waited silently, nothing recorded."""
    delay = 0.0
    wait_s = 0.0  # the first pull answers at once; the next ones long-poll
    while not stop.is_set():
        if delay and stop.wait(delay):
            return
        try:
            pull_once(wait_s)
            backoff.reset()
            delay = interval_s
            wait_s = long_poll_s
        except AuthError as exc:
            errors.record(channel, str(exc), logging.ERROR)
            delay = max(backoff.next_delay(), min(backoff.cap_s, 5.0))
        except SyncError as exc:
            quiet = held(exc, delay) if held is not None else None
            if quiet is not None:
                delay = quiet
                continue
            delay = min(backoff.next_delay(), retry_cap_s)
            errors.record(channel, f"{what} failed, retrying in {delay:.2f}s: {exc}")
        except Exception as exc:
            log.exception("%s failed unexpectedly", what)
            delay = backoff.next_delay()
            errors.record(channel, f"{what} failed unexpectedly ({type(exc).__name__}: {exc})", logging.ERROR)
