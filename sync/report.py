"""`instore-edge sync status` for people: a small table of ages and local times, one line per fact."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo


def age(seconds: float | None) -> str:
    """12 s, 4 min, 2.5 h, 3.1 days."""
    if seconds is None:
        return "—"
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def when(ts: float | None, now: float, tz: ZoneInfo) -> str:
    """A moment as the store's local time with its offset and how long ago it was, or "never"."""
    if not ts:
        return "never"
    local = datetime.fromtimestamp(ts, tz).isoformat(sep=" ", timespec="seconds")
    return f"{local} ({age(now - ts)} ago)"


def plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def status_lines(st: dict[str, Any], *, now: float, tz: ZoneInfo, source: str, live: bool) -> list[str]:
    """The rows of the human table; `live` is False when read from the database without the running edge."""
    rows: list[tuple[str, str]] = []
    url = st.get("central_url")
    rows.append(("central store", f"{url} (store {st.get('store')})" if url
                 else "not configured ([central] url): events stay in the outbox"))
    rows.append(("read from", source))
    pending = int(st.get("outbox_pending") or 0)
    backlog = plural(pending, "event") + " waiting"
    if pending:
        backlog += f", the oldest {age(st.get('outbox_oldest_age_s'))} old"
    rows.append(("outbox", backlog))
    rows.append(("cursor", str(st["cursor"]) if st.get("cursor") not in (None, "") else "none yet (no pull so far)"))
    rows.append(("profiles cached", f"{int(st.get('profiles_cached') or 0):,}"))
    rejected = int(st.get("rejected_total") or 0)
    rows.append(("rejected", plural(rejected, "event") + " refused by the central store" if rejected else "none"))
    if live:
        rows.append(("last push", when(st.get("last_push_success"), now, tz)))
        every = st.get("push_every_s")
        if every:  # the central paces a fleet larger than its push budget
            rows.append(("push interval", f"every {every:g} s, as the central store asks"))
        rows.append(("last pull", when(st.get("last_pull"), now, tz)))
        rows.append(("breaker", str(st.get("breaker") or "—")))
        auth = st.get("auth_ok")
        rows.append(("store token", "accepted" if auth is True else "refused: check [central] token"
                     if auth is False else "not used yet"))
        error = st.get("last_error")
        rows.append(("last error", f"{error} (at {when(st.get('last_error_at'), now, tz)})" if error else "none"))
        rows.append(("this run", f"{plural(int(st.get('pushed') or 0), 'event')} pushed, "
                                 f"{plural(int(st.get('changes_applied') or 0), 'profile change')} applied"))
    else:
        rows.append(("last push/pull", "known only to the running edge (start it, or check [http] host/port)"))
    width = max(len(k) for k, _ in rows)
    return [f"{k:<{width}}  {v}" for k, v in rows]
