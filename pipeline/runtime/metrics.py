"""Counters every stage keeps, exported with prometheus-client (``/metrics`` when ``metrics_port`` is set).

Each ``Metrics`` owns its registry, so several pipelines in one process (tests) do not clash.

Examples
--------
>>> m = Metrics()
>>> m.deadletters.labels(reason="late").inc(3)
>>> m.value("flowmon_deadletter_samples_total", reason="late")
3.0
"""

from __future__ import annotations

from prometheus_client import (CollectorRegistry, Counter, Gauge, GCCollector, Histogram, ProcessCollector,
                               start_http_server)

from pipeline.runtime.loopwatch import BUCKETS as LOOP_LAG_BUCKETS

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.reports = Counter("flowmon_reports", "Reports read from the reports topic", registry=r)
        self.samples = Counter("flowmon_samples_accepted", "Samples accepted by validation", registry=r)
        self.deadletters = Counter("flowmon_deadletter_samples", "Samples (or messages) dead-lettered, by reason",
                                   ["reason"], registry=r)
        self.partials = Counter("flowmon_partials_applied", "Partials applied to windows", registry=r)
        self.duplicates = Counter("flowmon_partials_duplicate", "Partials of a report already counted, skipped: a replay "
                                  "after a crash, or a report its agent sent again",
                                  registry=r)
        self.pairs_replayed = Counter("flowmon_pairs_replayed", "Pairs messages read again after a restart or a "
                                      "rebalance that the restored state already held, skipped", registry=r)
        self.pairs_rewinds = Counter("flowmon_pairs_rewinds", "Times a pairs partition was moved back to the message "
                                     "after its state's, because a later one came first (runtime.gaps)", registry=r)
        self.fenced = Counter("flowmon_pairs_fenced", "Pairs messages whose batch was dropped, unacknowledged, because "
                              "the worker was no longer in the group (its partitions' new owner reads them again)",
                              registry=r)
        self.stale_marks = Counter("flowmon_stale_idle_marks", "Idle marks ignored because they were made before "
                                   "their reports partition was last woken: a worker frozen while it made them, "
                                   "past its hand-over (aggregate.windows)", registry=r)
        self.windows = Counter("flowmon_windows_emitted", "Windows closed and emitted", registry=r)
        self.open_windows = Gauge("flowmon_open_windows", "Open (pair, window) states held", registry=r)
        self.landed = Counter("flowmon_windows_landed", "Windows written to ClickHouse", registry=r)
        self.sink_errors = Counter("flowmon_sink_write_errors", "ClickHouse writes that failed and were retried",
                                   ["table"], registry=r)
        self.consumer_lag = Gauge("flowmon_consumer_lag", "Messages not yet committed by a consumer group, per topic",
                                  ["group", "topic"], registry=r)
        self.watermark_age = Gauge("flowmon_watermark_age_seconds", "Wall clock minus the oldest event-time "
                                   "watermark of the pairs partitions this worker owns", registry=r)
        self.idle_sources = Gauge("flowmon_idle_sources", "Reports partitions this worker reads whose last progress "
                                  "mark said idle (caught up, nothing new for FLOWMON_SOURCE_IDLE_S): they no longer "
                                  "hold the windows back", registry=r)
        self.healthy = Gauge("flowmon_healthy", "1 when /healthz says ok", registry=r)
        self.sink_healthy = Gauge("flowmon_sink_healthy", "1 when the last ClickHouse write succeeded", registry=r)
        self.intervals = Counter("flowmon_intervals_scored", "Complete (pair, agent interval) handed to detection",
                                 registry=r)
        self.late_for_detection = Counter("flowmon_partials_late_for_detection",
                                          "Partials that reached their window after their interval was scored",
                                          registry=r)
        self.anomalies = Counter("flowmon_anomaly_events", "Alert events emitted", ["event", "metric"], registry=r)
        self.detect_errors = Counter("flowmon_detect_errors", "Intervals whose scoring raised (a bug; logged)",
                                     registry=r)
        self.attributions = Counter("flowmon_attributions", "Alerts attributed, by cause", ["cause"], registry=r)
        self.detector_keys = Gauge("flowmon_detector_keys", "Detector keys (pair and instance) held", registry=r)
        self.detector_state_bytes = Gauge("flowmon_detector_state_bytes_max",
                                          "Largest serialised detector state of a key written in the last batch",
                                          registry=r)
        self.loop_lag = Histogram("flowmon_loop_lag_seconds", "How much later than asked the event loop woke a "
                                  "0.1-s timer (runtime.loopwatch): what every agent, heartbeat and commit waited",
                                  buckets=LOOP_LAG_BUCKETS, registry=r)

    def value(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(name, labels or None)
        return 0.0 if v is None else v

    def with_process(self) -> Metrics:
        """Also export the process's own figures (``process_resident_memory_bytes``, CPU seconds, ...) and
        Python's garbage collector (``python_gc_collections_total`` by generation): what a worker's ``/metrics``
        shows, not the in-process pipelines of the tests and the evaluation."""
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        return self

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)
