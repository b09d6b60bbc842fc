"""The ingest reader on a real broker: where a newly assigned partition starts being read.

aiokafka gives the fetcher a new assignment before the reader's rebalance callback runs, and
``getmany`` returns records meanwhile. The callback first wakes the partitions (progress marks
sent and delivered: broker round trips) and then, on an upgrade, seeks each partition to where
the old Faust group left it. Records returned before that seek come from the auto-reset position,
the beginning of the topic: old reports replayed into closed windows (late dead letters, and a
partial first window landed). Here the wake is slowed down, as a busy broker does, so such a
replay would surely be returned; the test fails without the reader holding the partitions back.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition

from pipeline.ingest.progress import SourceProgress
from pipeline.runtime import kafka
from pipeline.runtime.agents.ingest import ReportsReader
from tests.support.harness import Deployment

PER_PARTITION = 60
LEFT_AT = 40  # where the old Faust group committed each partition


class SlowWakeReader(ReportsReader):
    """The real reader, with a wake that takes 2 s (no marks sent) and a ``_process`` that records offsets."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.read: dict[int, list[int]] = {}

    async def wake(self, partitions, why, timeout_s=10.0) -> None:
        await asyncio.sleep(2.0)

    async def _process(self, batch) -> None:
        for tp, records in batch.items():
            self.read.setdefault(tp.partition, []).extend(r.offset for r in records)


def test_an_upgraded_partition_is_read_from_where_the_faust_group_left_it_and_never_before(broker, tmp_path):
    d = Deployment(broker, tmp_path / "d", partitions=2)
    s, topic = d.settings, d.topics.reports
    tps = [TopicPartition(topic, p) for p in range(s.partitions)]

    async def go() -> dict[int, list[int]]:
        p = kafka.producer(d.conn)
        await p.start()
        try:
            for i in range(PER_PARTITION):
                for tp in tps:
                    await p.send(topic, b"{}", partition=tp.partition)
            await p.flush()
        finally:
            await p.stop()
        old = kafka.consumer(d.conn, group=s.app_id)  # the Faust group of a worker from before the reader
        await old.start()
        try:
            old.assign(tps)
            await old.commit({tp: LEFT_AT for tp in tps})
        finally:
            await old.stop()

        ctx = SimpleNamespace(settings=s, topics=d.topics, flow=SimpleNamespace(conn=d.conn),
                              progress=SourceProgress(s.source_idle_s, s.source_idle_lag_s))
        reader = SlowWakeReader(ctx)
        task = asyncio.create_task(reader._consume())
        try:
            for _ in range(300):
                if all(len(reader.read.get(tp.partition, [])) >= PER_PARTITION - LEFT_AT for tp in tps):
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return reader.read

    try:
        read = asyncio.run(go())
        assert read == {tp.partition: list(range(LEFT_AT, PER_PARTITION)) for tp in tps}
    finally:
        d.close()
