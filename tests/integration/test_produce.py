"""``produce_reports`` on real brokers: each key's partition is the Java client's, order per key, counts.

(Kafka is never mocked: the reports are read back from the broker.)
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

from pipeline.runtime import kafka
from pipeline.runtime.produce import produce_reports
from tests.support.helpers import unique_name

pytestmark = pytest.mark.integration


async def _create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def _read_all(bootstrap: str, topic: str, n: int, timeout_s: float = 60.0) -> list:
    c = kafka.consumer(bootstrap, topic, auto_offset_reset="earliest")
    await c.start()
    out = []
    try:
        async with asyncio.timeout(timeout_s):
            while len(out) < n:
                for records in (await c.getmany(timeout_ms=500)).values():
                    out.extend(records)
    finally:
        await c.stop()
    return out


def test_keys_partitions_order_and_counts(broker):
    topic = unique_name("produce")
    reports = [{"instance": f"i-{n % 5}", "seq": n, "samples": [1] * (n % 3)} for n in range(40)]
    reports += [[1, 2], {"no": "instance"}]  # unkeyed: spread over partitions
    seen: list[int] = []

    async def run():
        await _create(broker, topic, 4)
        stats = await produce_reports(broker, topic, reports, progress_every=10,
                                      progress=lambda st: seen.append(st.reports))
        return stats, await _read_all(broker, topic, len(reports))

    stats, got = asyncio.run(run())
    assert (stats.reports, stats.samples) == (42, sum(n % 3 for n in range(40)) + 2)
    assert seen == [10, 20, 30, 40, 42]
    assert len(got) == 42
    by_key: dict[bytes, list[int]] = {}
    for m in sorted(got, key=lambda m: (m.partition, m.offset)):
        if m.key is None:
            continue
        assert m.partition == (murmur2(m.key) & 0x7FFFFFFF) % 4  # the Java client's partition for the key
        by_key.setdefault(m.key, []).append(orjson.loads(m.value)["seq"])
    assert by_key == {f"i-{i}".encode(): list(range(i, 40, 5)) for i in range(5)}
    assert sorted((orjson.loads(m.value) for m in got if m.key is None), key=str) == sorted([[1, 2], {"no": "instance"}], key=str)


def test_async_iterable(broker):
    topic = unique_name("produce")

    async def gen():
        for n in range(7):
            yield {"instance": "a", "n": n}

    async def run():
        await _create(broker, topic, 1)
        stats = await produce_reports(broker, topic, gen())
        return stats, await _read_all(broker, topic, 7)

    stats, got = asyncio.run(run())
    assert stats.reports == 7
    assert [orjson.loads(m.value)["n"] for m in got] == list(range(7))
