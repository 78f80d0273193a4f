"""The edge's metrics (names start with `instore_edge_`), exposed as Prometheus text by prometheus_client.

A small façade keeps call sites simple (`inc`, `add_many`, `gauge`, `render`) over one
`CollectorRegistry` per running edge, never the global one: tests build several edges in one process.
Counters are kept here (the writer adds a whole batch's counts under one lock) and handed to the registry
as metric families when it collects; gauges are read from their callbacks at that moment.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

HELP = {
    "instore_edge_events_total": ("counter", "Events recorded, by kind."),
    "instore_edge_deadletters_total": ("counter", "Messages refused into the dead-letter table, by reason."),
    "instore_edge_ignored_total": ("counter", "Messages deliberately not stored (e.g. anonymous random MACs), by reason."),
    "instore_edge_duplicates_total": ("counter", "Redelivered messages recognised and recorded once."),
    "instore_edge_unknown_devices_total": ("counter", "Events from devices not in the config, by kind."),
    "instore_edge_decisions_total": ("counter", "Content decisions, by rule."),
    "instore_edge_mqtt_connects_total": ("counter", "Successful connections to the MQTT broker."),
    "instore_edge_ingest_lag_seconds": ("gauge", "Age of the oldest received message not yet committed."),
    "instore_edge_ingest_queue": ("gauge", "Messages received and waiting for the writer."),
    "instore_edge_mqtt_connected": ("gauge", "1 when connected to the MQTT broker with every subscription granted."),
    "instore_edge_outbox_pending": ("gauge", "Events recorded and not yet accepted by the central store."),
    "instore_edge_presence_subjects": ("gauge", "Subjects currently present in a zone."),
    "instore_edge_sync_last_success_timestamp": ("gauge", "Unix time of the last push the central store accepted."),
    "instore_edge_sync_last_pull_timestamp": ("gauge", "Unix time of the last profile change-feed pull."),
    "instore_edge_sync_outbox_oldest_age_seconds": ("gauge", "Age of the oldest event not yet accepted centrally."),
    "instore_edge_sync_breaker_open": ("gauge", "1 while the on-demand fetch circuit breaker is open."),
    "instore_edge_sync_events_total": ("counter", "Events pushed to the central store, by result."),
    "instore_edge_sync_errors_total": ("counter", "Failed sync requests, by operation."),
    "instore_edge_sync_profile_changes_total": ("counter", "Profile changes applied from the central store."),
    "instore_edge_commit_batch_size": ("gauge", "Events in the last group commit."),
    "instore_edge_http_connections": ("gauge", "HTTP connections open (idle keep-alive and page streams too)."),
    "instore_edge_http_connections_dropped_total": ("counter", "HTTP connections closed or refused to protect the "
                                                    "server, by reason (per_client, limit, slow_request)."),
    "instore_edge_page_streams": ("gauge", "Open signage and kiosk page streams (SSE), each holding a thread."),
    "instore_edge_http_rate_limited_total": ("counter", "Requests answered 429 by a per-client rate limit, by route."),
    "instore_edge_erasures_unverified": ("gauge", "Erasures whose erased values were still found in the database "
                                         "file's free space after every rebuild (0 when all are verified gone)."),
    "instore_edge_campaign_versions_total": ("counter", "Campaign versions from the central store, by outcome "
                                             "(applied, refused, pending)."),
    "instore_edge_campaigns_applied": ("gauge", "Campaigns from the central store applied here (in or out of schedule)."),
    "instore_edge_assets_cache_bytes": ("gauge", "Bytes of campaign and product assets cached on this device."),
    "instore_edge_erasure_rebuilds_total": ("counter", "Rebuilds after an erasure found copies of erased data in the "
                                            "file's free space, by how (reindex, rewrite, vacuum, failed)."),
}

Labels = tuple[tuple[str, str], ...]


class Metrics(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._gauges: dict[str, Callable[[], float]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + amount

    def add_many(self, name: str, label: str, counts: dict[str, int]) -> None:
        with self._lock:
            series = self._counters[name]
            for value, n in counts.items():
                key = ((label, value),)
                series[key] = series.get(key, 0.0) + n

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._counters.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def gauge(self, name: str, fn: Callable[[], float]) -> None:
        self._gauges[name] = fn

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry).decode()

    def collect(self) -> Iterator[Metric]:
        """For the registry: each counter with its labelled series, each gauge read now (one that raises is
        left out of this scrape)."""
        with self._lock:
            counters = {k: dict(v) for k, v in self._counters.items()}
        for name in sorted(counters):
            series = counters[name]
            labels = sorted({k for key in series for k, _ in key})
            family = CounterMetricFamily(name, HELP.get(name, ("counter", name))[1], labels=labels)
            for key, value in sorted(series.items()):
                values = dict(key)
                family.add_metric([values.get(label, "") for label in labels], value)
            yield family
        for name in sorted(self._gauges):
            try:
                value = float(self._gauges[name]())
            except Exception:
                continue
            yield GaugeMetricFamily(name, HELP.get(name, ("gauge", name))[1], value=value)
