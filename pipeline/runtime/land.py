"""Shell: land closed windows, anomaly events and dead letters in ClickHouse (consumer group ``<app_id>-sink``).

A plain aiokafka consumer rather than a Faust agent: the sink must commit offsets only
*after* a batch is written, and with chdb exactly one process may own the database, so
the sink runs in the processes whose ``roles`` include ``sink`` and nowhere else.
Writes are idempotent (``sink.WindowSink``), so a replay after a crash lands nothing twice.
The ClickHouse client is synchronous: every call runs in one dedicated thread.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from pipeline.config import Settings
from pipeline.runtime import kafka
from pipeline.runtime.metrics import Metrics
from pipeline.clickhouse.writer import WindowSink
from pipeline.runtime.topics import Topics

__all__ = ["Lander"]

log = logging.getLogger("flowmon.land")


class Lander:
    """Consume the windows, anomalies and dead-letter topics; write batches; commit after each write."""

    def __init__(self, settings: Settings, conn: kafka.Connection | str, sink: WindowSink, executor: ThreadPoolExecutor,
                 metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.conn = conn
        self.sink = sink
        self.executor = executor
        self.metrics = metrics or Metrics()
        self.topics = Topics.from_settings(settings)

    async def run(self) -> None:
        s = self.settings
        consumer = kafka.consumer(
            self.conn, self.topics.windows, self.topics.deadletter, self.topics.anomalies,
            self.topics.attributions, self.topics.nhi, group=f"{s.app_id}-sink", **kafka.group_timings(s),
            auto_offset_reset="earliest", max_partition_fetch_bytes=max(s.max_message_bytes * 2, 1_048_576),
        )
        await consumer.start()
        loop = asyncio.get_running_loop()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=int(s.sink_flush_s * 1000), max_records=s.sink_batch)
                windows: list[dict[str, Any]] = []
                dead: list[dict[str, Any]] = []
                anomalies: list[dict[str, Any]] = []
                attributions: list[dict[str, Any]] = []
                nhi: list[dict[str, Any]] = []
                for tp, msgs in batch.items():
                    target = {self.topics.windows: windows, self.topics.anomalies: anomalies,
                              self.topics.attributions: attributions, self.topics.nhi: nhi}.get(tp.topic, dead)
                    for m in msgs:
                        try:
                            target.append(orjson.loads(m.value))
                        except (orjson.JSONDecodeError, TypeError):
                            # only flowmon writes these topics; a stray message is logged, not fatal
                            log.error("skipping undecodable message %s[%d]@%d", tp.topic, tp.partition, m.offset)
                if not batch:
                    continue
                if windows:
                    await loop.run_in_executor(self.executor, self.sink.write_windows, windows)
                    self.metrics.landed.inc(len(windows))
                if dead:
                    await loop.run_in_executor(self.executor, self.sink.write_deadletters, dead)
                if anomalies:
                    await loop.run_in_executor(self.executor, self.sink.write_anomalies, anomalies)
                if attributions:
                    await loop.run_in_executor(self.executor, self.sink.write_attributions, attributions)
                if nhi:
                    await loop.run_in_executor(self.executor, self.sink.write_nhi, nhi)
                await consumer.commit()
        finally:
            await consumer.stop()
