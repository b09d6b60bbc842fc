"""Is the pipeline making progress? ``/healthz`` and the lag gauges on the metrics port.

The question a health check must answer is not "is the process alive" but "is the work
getting done": a worker can run happily while its consumer group is stalled (a stage
that cannot write, ClickHouse unreachable, a partition nobody owns). So:

- **Lag** of the pipeline's two consumer groups, whatever this worker's own roles
  (``<app_id>``: reports, pairs, health, and the windows and NHI topics the monitor agents
  read; ``<app_id>-sink``: the topics the sink lands): per topic, the sum over partitions
  of (end offset − committed offset), polled every ``FLOWMON_HEALTH_INTERVAL_S`` by
  :class:`LagMonitor` with an admin client and exported as ``flowmon_consumer_lag{group,topic}``.
- **Stuck**: a group with lag whose committed offsets have not moved for
  ``FLOWMON_HEALTH_STUCK_S`` (:class:`Progress`, pure). A backfill with a huge lag that
  advances is healthy; a small lag that never moves is not.
- **Watermark age**: wall clock − the oldest event-time watermark of the pairs
  partitions this worker owns (``flowmon_watermark_age_seconds``): how far behind real
  time the windows are. Reported, not judged (a backfill is legitimately far behind).
- **Sink**: the last ClickHouse write failed (and is being retried).
- **Broker**: the lag could not be read for ``FLOWMON_HEALTH_STUCK_S``.

``GET /healthz`` answers 200 with a JSON body when healthy, 503 with the same body (and
its ``reasons``) when not; ``GET /metrics`` is the Prometheus exposition.

Examples
--------
>>> p = Progress(stuck_after_s=60)
>>> p.observe("flowmon", lag=500, committed=1000, now=0)
>>> p.observe("flowmon", lag=480, committed=1020, now=50)    # moving: fine
>>> p.stuck(now=100)
[]
>>> p.observe("flowmon", lag=900, committed=1020, now=100)   # not moved since t=50...
>>> p.stuck(now=111)                                         # ...for 61 s, with work waiting
['consumer group flowmon: 900 messages waiting, no offset committed for 61 s']
>>> p.observe("flowmon", lag=0, committed=1020, now=112)     # idle with nothing to do: fine
>>> p.stuck(now=500)
[]
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import exposition

from pipeline.errors import first_line

__all__ = ["Progress", "HealthReport", "assess", "LagMonitor", "serve"]

log = logging.getLogger("flowmon.health")


@dataclass
class _Group:
    lag: int
    committed: int
    moved_at: float  # when the committed offsets last changed (or the lag was last zero)


class Progress:
    """Per consumer group: the last lag and committed total seen, and since when nothing moved (pure)."""

    def __init__(self, stuck_after_s: float) -> None:
        self.stuck_after_s = stuck_after_s
        self.groups: dict[str, _Group] = {}

    def observe(self, group: str, lag: int, committed: int, now: float) -> None:
        g = self.groups.get(group)
        if g is None or committed != g.committed or lag == 0:
            self.groups[group] = _Group(lag, committed, now)
        else:
            g.lag = lag

    def stuck(self, now: float) -> list[str]:
        out = []
        for name, g in sorted(self.groups.items()):
            idle = now - g.moved_at
            if g.lag > 0 and idle >= self.stuck_after_s:
                out.append(f"consumer group {name}: {g.lag} messages waiting, no offset committed for {idle:.0f} s")
        return out


@dataclass
class HealthReport:
    """What ``/healthz`` says."""

    healthy: bool
    reasons: list[str] = field(default_factory=list)
    watermark_age_s: float | None = None
    lag: dict[str, dict[str, int]] = field(default_factory=dict)
    lag_read_at: float | None = None

    def to_json(self) -> bytes:
        return json.dumps({"status": "ok" if self.healthy else "unhealthy", "reasons": self.reasons,
                           "watermark_age_s": None if self.watermark_age_s is None else round(self.watermark_age_s, 1),
                           "consumer_lag": self.lag, "lag_read_at": self.lag_read_at}, indent=1).encode() + b"\n"


def assess(progress: Progress, now: float, *, lag: dict[str, dict[str, int]], lag_read_at: float | None,
           started_at: float, watermark: float | None, sink_failing: bool) -> HealthReport:
    """The health of the worker now, from what was last observed (pure).

    >>> p = Progress(stuck_after_s=60)
    >>> r = assess(p, 100.0, lag={}, lag_read_at=None, started_at=0.0, watermark=40.0, sink_failing=True)
    >>> r.healthy, r.reasons, r.watermark_age_s
    (False, ['ClickHouse writes are failing (retried with backoff)', 'consumer lag unknown for 100 s (broker unreachable?)'], 60.0)
    """
    reasons: list[str] = []
    if sink_failing:
        reasons.append("ClickHouse writes are failing (retried with backoff)")
    last = lag_read_at if lag_read_at is not None else started_at
    if now - last >= progress.stuck_after_s:
        reasons.append(f"consumer lag unknown for {now - last:.0f} s (broker unreachable?)")
    reasons += progress.stuck(now)
    return HealthReport(not reasons, reasons, None if watermark is None else max(0.0, now - watermark), lag,
                        lag_read_at)


class LagMonitor:
    """Polls the lag of ``groups`` (group → its topics) every ``interval_s``; keeps the gauges and the
    :class:`Progress` current; :meth:`report` is what ``/healthz`` says. ``watermark`` and ``sink_failing``
    are read when a report is made."""

    def __init__(self, conn: Any, groups: dict[str, list[str]], metrics: Any, *, interval_s: float,
                 stuck_after_s: float, watermark: Callable[[], float | None] = lambda: None,
                 sink_failing: Callable[[], bool] = lambda: False) -> None:
        self.conn = conn  # a kafka.Connection (or a bootstrap string)
        self.groups = groups
        self.metrics = metrics
        self.interval_s = interval_s
        self.progress = Progress(stuck_after_s)
        self.watermark = watermark
        self.sink_failing = sink_failing
        self.started_at = time.time()
        self.lag: dict[str, dict[str, int]] = {}
        self.lag_read_at: float | None = None

    def report(self) -> HealthReport:
        now = time.time()
        wm = self.watermark()
        r = assess(self.progress, now, lag=self.lag, lag_read_at=self.lag_read_at, started_at=self.started_at,
                   watermark=wm, sink_failing=self.sink_failing())
        if r.watermark_age_s is not None:
            self.metrics.watermark_age.set(r.watermark_age_s)
        self.metrics.healthy.set(1 if r.healthy else 0)
        return r

    async def run(self) -> None:
        from pipeline.runtime import kafka

        while True:
            try:
                admin = kafka.admin(self.conn, timeout_s=max(5.0, self.interval_s))
                reader = kafka.consumer(self.conn)
                await admin.start()
                await reader.start()
                try:
                    while True:
                        await self.poll(admin, reader)
                        self.report()
                        await asyncio.sleep(self.interval_s)
                finally:
                    await reader.stop()
                    await admin.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker may be away; /healthz will say so
                log.warning("health: cannot read consumer lag (%s); retrying", first_line(exc))
                self.report()
                await asyncio.sleep(self.interval_s)

    async def poll(self, admin: Any, reader: Any) -> None:
        """One reading of every group's lag."""
        from aiokafka.structs import TopicPartition

        lag: dict[str, dict[str, int]] = {}
        now = time.time()
        for group, topics in self.groups.items():
            tps = [TopicPartition(t, p) for t in topics for p in sorted(reader.partitions_for_topic(t) or ())]
            if not tps or any(not reader.partitions_for_topic(t) for t in topics):
                await reader._client.force_metadata_update()
                tps = [TopicPartition(t, p) for t in topics for p in sorted(reader.partitions_for_topic(t) or ())]
            ends = await reader.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            per_topic: dict[str, int] = {}
            total_committed = 0
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                total_committed += done
                per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, ends.get(tp, 0) - done)
            for topic, n in per_topic.items():
                self.metrics.consumer_lag.labels(group=group, topic=topic).set(n)
            self.progress.observe(group, sum(per_topic.values()), total_committed, now)
            lag[group] = per_topic
        self.lag, self.lag_read_at = lag, now


class _Handler(BaseHTTPRequestHandler):
    monitor: LagMonitor
    registry: Any

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        if path == "/healthz":
            r = self.monitor.report()
            self._reply(200 if r.healthy else 503, r.to_json(), "application/json")
        elif path in ("/metrics", "/"):
            self._reply(200, exposition.generate_latest(self.registry), exposition.CONTENT_TYPE_LATEST)
        else:
            self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

    def _reply(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:  # quiet: health checks poll every few seconds
        pass


def serve(port: int, monitor: LagMonitor, registry: Any, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve ``/metrics`` and ``/healthz`` on ``port`` in a daemon thread; returns the server."""
    handler = type("Handler", (_Handler,), {"monitor": monitor, "registry": registry})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, name=f"metrics:{port}", daemon=True).start()
    return httpd
