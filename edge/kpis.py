"""Store KPIs from the edge's own SQLite file: what the store dashboard draws and `GET /api/v1/kpis` returns.

All figures cover events with `start_ts <= ts < end_ts` (epoch seconds); buckets follow the store's wall
clock (an hour bucket is "10:00" in [store].timezone, a day bucket starts at local midnight).

- visitors: distinct visit ids of `visit_start` events (staff/asset beacons excluded), per bucket too;
- zones: per zone, distinct visits that entered it (`zone_enter`) and the average stay (`dwell_s` of
  `zone_exit`, i.e. completed stays), per bucket too;
- funnel: shoppers sighted (distinct subjects that started a visit: sightings that passed the zone
  filters) -> QR scans -> kiosk sessions (distinct kiosk session ids) -> POS purchases (+ revenue);
- content: decisions by content id: times shown, distinct displays (screens and kiosks), distinct
  shoppers reached (the customer, else the subject of the event that triggered the decision), and the
  rules that showed it (`rule_id` is the one that showed it most);
- sync: outbox pending and the age of the oldest pending event (`outbox_stats`);
- deadletters: messages refused in the range, by reason.

Queries use the events(ts) index (events(kind, seq) cannot bound a time range); time buckets are grouped
per minute in SQL and folded into local buckets in Python, so DST days stay right and no row is fetched
one by one. Decisions have no ts index: their id range is found by bisection (ids follow time).
"""

from __future__ import annotations

import bisect
import sqlite3
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from edge.model import EdgeError
from edge.store.queries import NOT_SIGHTING, outbox_stats

MAX_RANGE_S = 31 * 86400
BUCKETS_S = (300, 900, 1800, 3600, 86400)
NOT_TAGGED = "json_extract(data, '$.staff') IS NULL AND json_extract(data, '$.asset') IS NULL"


class KpiError(EdgeError, ValueError):
    """A range or bucket the KPIs cannot be computed for (the API answers 400 with the message)."""


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def default_bucket(start_ts: float, end_ts: float) -> int:
    """Hours for up to two days, days beyond."""
    return 3600 if end_ts - start_ts <= 2 * 86400 else 86400


def buckets(start_ts: float, end_ts: float, tz: str | ZoneInfo, bucket_s: int) -> list[tuple[float, str]]:
    """(epoch start, local label) of each bucket covering [start_ts, end_ts), aligned to the local clock."""
    z = _zone(tz)
    local = datetime.fromtimestamp(start_ts, z)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    out: list[tuple[float, str]] = []
    if bucket_s >= 86400:
        day = midnight.replace(tzinfo=None)
        while True:
            b = day.replace(tzinfo=z).timestamp()
            if b >= end_ts:
                break
            out.append((b, day.strftime("%Y-%m-%d")))
            day += timedelta(days=1)
        return out
    since = (local.replace(tzinfo=None) - midnight.replace(tzinfo=None)).total_seconds()
    wall = midnight.replace(tzinfo=None) + timedelta(seconds=since // bucket_s * bucket_s)
    b = wall.replace(tzinfo=z).timestamp()
    if b > start_ts:  # a wall time in a DST gap
        b -= bucket_s
    while b < end_ts:
        out.append((b, datetime.fromtimestamp(b, z).strftime("%H:%M")))
        b += bucket_s
    return out


def _first_decision_id(conn: sqlite3.Connection, since: float) -> int:
    """The smallest decision id whose ts may be >= since (bisection over the rowid; ids follow time)."""
    lo_hi = conn.execute("SELECT min(id), max(id) FROM decisions").fetchone()
    if lo_hi[0] is None:
        return 0
    lo, hi = lo_hi
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute("SELECT ts FROM decisions WHERE id >= ? ORDER BY id LIMIT 1", (mid,)).fetchone()
        if row is None or (row[0] is not None and row[0] >= since):
            hi = mid
        else:
            lo = mid + 1
    return lo


def kpis(conn: sqlite3.Connection, start_ts: float, end_ts: float, tz: str | ZoneInfo, bucket_s: int | None = 3600,
         *, now: float | None = None, outbox_capacity: int | None = None) -> dict[str, Any]:
    """Every dashboard figure for [start_ts, end_ts) as a JSON-ready dict (see the module docstring)."""
    if not end_ts > start_ts:
        raise KpiError("the range is empty: 'to' must be after 'from'")
    if end_ts - start_ts > MAX_RANGE_S:
        raise KpiError(f"the range is longer than {MAX_RANGE_S // 86400} days; ask for a shorter one")
    if bucket_s is None:
        bucket_s = default_bucket(start_ts, end_ts)
    if bucket_s not in BUCKETS_S:
        raise KpiError(f"bucket must be one of {', '.join(map(str, BUCKETS_S))} seconds")
    if (end_ts - start_ts) / bucket_s > 800:
        raise KpiError("too many buckets for this range: use a larger bucket (e.g. 86400)")
    z = _zone(tz)
    now = time.time() if now is None else now
    rng = (start_ts, end_ts)
    q = conn.execute

    bk = buckets(start_ts, end_ts, z, bucket_s)
    starts = [b for b, _ in bk]

    def slot(minute: int) -> int:
        return max(0, bisect.bisect_right(starts, minute * 60) - 1)

    timeline: list[dict[str, Any]] = [{"start": b, "label": label, "visitors": 0, "entries": {}, "dwell_avg_s": {}}
                                      for b, label in bk]

    # Visitors: distinct visits started in the range (one visit_start per visit; staff/assets excluded).
    visitors, shoppers = q(
        "SELECT count(DISTINCT json_extract(data, '$.visit_id')), count(DISTINCT subject) FROM events "
        f"WHERE ts >= ? AND ts < ? AND kind = 'visit_start' AND {NOT_SIGHTING} AND {NOT_TAGGED}", rng).fetchone()
    for minute, n in q(f"SELECT CAST(ts / 60 AS INTEGER) m, count(DISTINCT json_extract(data, '$.visit_id')) "
                       f"FROM events WHERE ts >= ? AND ts < ? AND kind = 'visit_start' AND {NOT_SIGHTING} AND {NOT_TAGGED} "
                       "GROUP BY m", rng):
        timeline[slot(minute)]["visitors"] += n

    # Zones: visits that entered, and completed stays (zone_exit carries the stay's dwell_s).
    zones: dict[str, dict[str, Any]] = {}

    def zone(name: str | None) -> dict[str, Any]:
        return zones.setdefault(name or "unknown", {"zone": name or "unknown", "visitors": 0, "entries": 0,
                                                    "stays": 0, "dwell_avg_s": None, "dwell_max_s": None})

    for name, n_visits, n_entries in q(
            "SELECT zone, count(DISTINCT json_extract(data, '$.visit_id')), count(*) FROM events "
            f"WHERE ts >= ? AND ts < ? AND kind = 'zone_enter' AND {NOT_SIGHTING} AND {NOT_TAGGED} GROUP BY zone", rng):
        zone(name).update(visitors=n_visits, entries=n_entries)
    sums: dict[tuple[int, str], list[float]] = {}
    for name, minute, n, total, longest in q(
            "SELECT zone, CAST(ts / 60 AS INTEGER) m, count(*), sum(json_extract(data, '$.dwell_s')), "
            "max(json_extract(data, '$.dwell_s')) FROM events "
            f"WHERE ts >= ? AND ts < ? AND kind = 'zone_exit' AND {NOT_SIGHTING} AND {NOT_TAGGED} GROUP BY zone, m", rng):
        zd = zone(name)
        zd["stays"] += n
        zd["_sum"] = zd.get("_sum", 0.0) + (total or 0.0)
        zd["dwell_max_s"] = max(zd["dwell_max_s"] or 0.0, longest or 0.0)
        acc = sums.setdefault((slot(minute), zd["zone"]), [0, 0.0])
        acc[0] += n
        acc[1] += total or 0.0
    for name, minute, n in q(
            "SELECT zone, CAST(ts / 60 AS INTEGER) m, count(*) FROM events "
            f"WHERE ts >= ? AND ts < ? AND kind = 'zone_enter' AND {NOT_SIGHTING} AND {NOT_TAGGED} GROUP BY zone, m", rng):
        entries = timeline[slot(minute)]["entries"]
        key = name or "unknown"
        entries[key] = entries.get(key, 0) + n
    for (i, name), (n, total) in sums.items():
        timeline[i]["dwell_avg_s"][name] = round(total / n, 1) if n else None
    for zd in zones.values():
        total = zd.pop("_sum", 0.0)
        zd["dwell_avg_s"] = round(total / zd["stays"], 1) if zd["stays"] else None
        if zd["dwell_max_s"] is not None:
            zd["dwell_max_s"] = round(zd["dwell_max_s"], 1)

    # Engagement funnel.
    qr_scans, qr_codes = q("SELECT count(*), count(DISTINCT json_extract(data, '$.code')) FROM events "
                           f"WHERE ts >= ? AND ts < ? AND kind = 'qr' AND {NOT_SIGHTING}", rng).fetchone()
    kiosk_sessions, kiosk_events, identified = q(
        "SELECT count(DISTINCT json_extract(data, '$.session')), count(*), "
        "count(DISTINCT CASE WHEN type = 'identify' THEN coalesce(customer, json_extract(data, '$.identity')) END) "
        f"FROM events WHERE ts >= ? AND ts < ? AND kind = 'kiosk' AND {NOT_SIGHTING}", rng).fetchone()
    purchases, revenue, buyers = q(
        "SELECT count(*), sum(json_extract(data, '$.total')), count(DISTINCT customer) FROM events "
        f"WHERE ts >= ? AND ts < ? AND kind = 'pos' AND {NOT_SIGHTING}", rng).fetchone()
    funnel = [
        {"step": "sightings", "label": "Shoppers sighted", "value": shoppers or 0},
        {"step": "qr_scans", "label": "QR scans", "value": qr_scans or 0},
        {"step": "kiosk_sessions", "label": "Kiosk sessions", "value": kiosk_sessions or 0},
        {"step": "purchases", "label": "POS purchases", "value": purchases or 0},
    ]

    # Content shown and its reach: one row per content id, whichever rules showed it (two rules may show
    # the same content, e.g. a greeting for anonymous and for known shoppers).
    first_id = _first_decision_id(conn, start_ts - 86400)
    window = (first_id, *rng)
    rules_of: dict[str, list[str]] = {}
    for content_id, rule_id, _n in q(
            "SELECT content_id, rule_id, count(*) FROM decisions WHERE id >= ? AND ts >= ? AND ts < ? "
            "GROUP BY content_id, rule_id ORDER BY count(*) DESC, rule_id", window):
        if rule_id is not None:
            rules_of.setdefault(content_id, []).append(rule_id)
    content = []
    for content_id, shown, screens, reached in q(
            "SELECT d.content_id, count(*), count(DISTINCT d.screen), "
            "count(DISTINCT coalesce(d.customer, e.subject)) FROM decisions d "
            "LEFT JOIN events e ON e.event_id = d.event_id "
            "WHERE d.id >= ? AND d.ts >= ? AND d.ts < ? GROUP BY d.content_id "
            "ORDER BY count(*) DESC, d.content_id LIMIT 50", window):
        rules = rules_of.get(content_id, [])
        content.append({"content_id": content_id, "rule_id": rules[0] if rules else None, "rules": rules,
                        "shown": shown, "screens": screens, "reached": reached})

    # Sync lag (now, not over the range) and refused messages in the range.
    pending, oldest = outbox_stats(conn, now)
    sync = {"outbox_pending": pending, "oldest_pending_age_s": None if oldest is None else round(oldest, 1),
            "outbox_capacity": outbox_capacity,
            "outbox_used_ratio": round(pending / outbox_capacity, 4) if outbox_capacity else None}
    deadletters = [{"reason": reason, "count": n} for reason, n in q(
        "SELECT reason, count(*) FROM deadletters WHERE received_at >= ? AND received_at < ? "
        "GROUP BY reason ORDER BY count(*) DESC, reason", rng)]

    return {
        "range": {"from": start_ts, "to": end_ts, "timezone": z.key, "bucket_s": bucket_s,
                  "from_local": datetime.fromtimestamp(start_ts, z).isoformat(),
                  "to_local": datetime.fromtimestamp(end_ts, z).isoformat()},
        "generated_at": round(now, 3),
        "visitors": {"total": visitors or 0},
        "zones": sorted(zones.values(), key=lambda d: (-d["visitors"], d["zone"])),
        "timeline": timeline,
        "funnel": funnel,
        "engagement": {"qr_scans": qr_scans or 0, "qr_codes": qr_codes or 0, "kiosk_sessions": kiosk_sessions or 0,
                       "kiosk_events": kiosk_events or 0, "kiosk_identified": identified or 0,
                       "purchases": purchases or 0, "revenue": round(revenue or 0.0, 2),
                       "identified_buyers": buyers or 0},
        "content": content,
        "sync": sync,
        "deadletters": {"total": sum(d["count"] for d in deadletters), "by_reason": deadletters},
    }


def parse_time(raw: str, tz: str | ZoneInfo) -> float:
    """Epoch seconds, or ISO 8601: a date (local midnight), a local date-time, or one with an offset/Z."""
    z = _zone(tz)
    text = raw.strip()
    if not text:
        raise KpiError("empty value")
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if value != value or value in (float("inf"), float("-inf")):
            raise KpiError(f"{text[:40]!r} is not a finite number")
        if value > 1e11:
            raise KpiError(f"{text[:40]!r} looks like milliseconds; send epoch seconds")
        if value < 0:
            raise KpiError(f"{text[:40]!r} is before 1970")
        return value
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise KpiError(f"{text[:40]!r} is neither epoch seconds nor ISO 8601 "
                       "(e.g. 2024-05-01, 2024-05-01T09:00 or 2024-05-01T09:00:00+02:00)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=z)
    return dt.timestamp()


def resolve_range(raw_from: str | None, raw_to: str | None, tz: str | ZoneInfo,
                  now: float | None = None) -> tuple[float, float]:
    """The API's from/to: both optional; by default today in the store's timezone (local midnights)."""
    z = _zone(tz)
    now = time.time() if now is None else now
    start = end = None
    if raw_from is not None and raw_from != "":
        try:
            start = parse_time(raw_from, z)
        except KpiError as exc:
            raise KpiError(f"query parameter 'from': {exc}") from None
    if raw_to is not None and raw_to != "":
        try:
            end = parse_time(raw_to, z)
        except KpiError as exc:
            raise KpiError(f"query parameter 'to': {exc}") from None
    if start is None and end is None:
        today = datetime.fromtimestamp(now, z).date()
        start = datetime(today.year, today.month, today.day, tzinfo=z).timestamp()
        nxt = today + timedelta(days=1)
        end = datetime(nxt.year, nxt.month, nxt.day, tzinfo=z).timestamp()
    elif start is None:
        start = end - 86400  # type: ignore[operator]
    elif end is None:
        end = start + 86400
    if end <= start:  # type: ignore[operator]
        raise KpiError("'to' must be after 'from'")
    if end - start > MAX_RANGE_S:  # type: ignore[operator]
        raise KpiError(f"the range from 'from' to 'to' is longer than {MAX_RANGE_S // 86400} days")
    return start, end  # type: ignore[return-value]
