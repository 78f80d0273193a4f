"""The central store's Prometheus metrics at GET /metrics (names `instore_central_*`, prometheus_client).

Counters, the push-latency histogram and the long-poll gauge live in each process. With `--workers N`
(gunicorn's worker processes) they must add up across workers, whichever worker answers the scrape: the
CLI points PROMETHEUS_MULTIPROC_DIR at a fresh temporary folder before the workers fork, each worker
writes its samples there (prometheus_client's multiprocess mode, one mmap file per process and type) and
/metrics reads them all. The fleet's gauges (stores known, quiet, not ready; their outbox backlog) are
read from the database at scrape time, so any worker gives the same answer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sync import package_version

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

EVENTS = Counter("instore_central_events", "Events pushed by stores, by what became of them",
                 ["result"])  # accepted | duplicate | rejected
REJECTED = Counter("instore_central_events_rejected", "Events refused, by reason", ["reason"])
PUSH_SECONDS = Histogram("instore_central_push_seconds", "Time to answer a push (a batch of events)",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
PUSH_BATCH = Histogram("instore_central_push_batch_events", "Events in one push",
                       buckets=(0, 1, 10, 50, 100, 250, 500, 1000))
REQUESTS = Counter("instore_central_http_requests", "HTTP requests answered, by route and status",
                   ["route", "status"])
HEALTH_ERRORS = Counter("instore_central_health_reports_unreadable", "Health reports from stores that were ignored")
FEED_WAITERS = Gauge("instore_central_feed_waiters", "Long-polls waiting for a change", multiprocess_mode="livesum")


def multiprocess() -> bool:
    return bool(os.environ.get(ENV_DIR))


class FleetCollector(Collector):
    """Gauges from the database at scrape time: the stores as the fleet view sees them, and the engine."""

    def __init__(self, fleet: Callable[[], list[dict[str, Any]]], engine: str, workers: int,
                 push_every: Callable[[], float | None] = lambda: None) -> None:
        self.fleet = fleet
        self.engine = engine
        self.workers = workers
        self.push_every = push_every  # the interval the central asks of its stores (pacing.py), None: none

    def collect(self) -> Iterator[GaugeMetricFamily]:
        info = GaugeMetricFamily("instore_central_info", "The central store: engine, version, worker processes",
                                 labels=["engine", "version", "workers"])
        info.add_metric([self.engine, package_version(), str(self.workers)], 1.0)
        yield info
        rows = self.fleet()
        stores = GaugeMetricFamily("instore_central_stores", "Stores by state: known (a token or heard from), "
                                   "heard, quiet (not heard lately), not_ready (their own /readyz fails)",
                                   labels=["state"])
        stores.add_metric(["known"], float(len(rows)))
        stores.add_metric(["heard"], float(sum(1 for r in rows if r["last_seen_at"] is not None)))
        stores.add_metric(["quiet"], float(sum(1 for r in rows if r["quiet"])))
        stores.add_metric(["not_ready"], float(sum(1 for r in rows if r.get("ready") is False)))
        yield stores
        backlog = GaugeMetricFamily("instore_central_fleet_outbox_pending_events",
                                    "Events waiting in the stores' outboxes, as they last reported")
        backlog.add_metric([], float(sum(r.get("outbox_pending") or 0 for r in rows)))
        yield backlog
        oldest = GaugeMetricFamily("instore_central_fleet_outbox_oldest_age_seconds",
                                   "The oldest event waiting in any store's outbox, as last reported")
        oldest.add_metric([], float(max((r.get("outbox_oldest_age_s") or 0.0 for r in rows), default=0.0)))
        yield oldest
        seen = [r["last_seen_at"] for r in rows if r["last_seen_at"] is not None]
        silence = GaugeMetricFamily("instore_central_fleet_longest_silence_seconds",
                                    "How long the quietest store that was ever heard has not been")
        silence.add_metric([], max(0.0, time.time() - min(seen)) if seen else 0.0)
        yield silence
        pace = GaugeMetricFamily("instore_central_push_interval_seconds",
                                 "Seconds between pushes the central asks of each store (1: none asked, the fleet is "
                                 "within --push-budget)")
        pace.add_metric([], self.push_every() or 1.0)
        yield pace


def render(fleet_collector: FleetCollector) -> bytes:
    """The Prometheus text for a scrape: this process's (or every worker's) samples and the fleet's."""
    registry = CollectorRegistry()
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.MultiProcessCollector(registry)
        own = b""
    else:
        from prometheus_client import REGISTRY

        own = generate_latest(REGISTRY)
    registry.register(fleet_collector)
    return own + generate_latest(registry)


def mark_dead(pid: int) -> None:
    """A worker ended: its live gauges (waiters) stop counting."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)
