"""Shell: read back the window state of one pairs partition from its compacted topic.

The aggregate agent writes every changed key of ``windows.PartitionWindows`` (JSON
value, or a tombstone) to partition p of the state topic, through the worker's
producer, before the events that caused the change are acknowledged. Whoever is
assigned pairs partition p next replays state partition p up to its end and rebuilds
the store; per-source offsets inside the state absorb any replay of the pairs topic.
"""

from __future__ import annotations

import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from .windows import PartitionWindows

__all__ = ["restore"]


async def restore(bootstrap: str, topic: str, store: PartitionWindows, max_bytes: int = 8 << 20,
                  timeout_s: float = 120.0) -> int:
    """Load partition ``store.partition`` of ``topic`` into ``store``; returns the keys loaded."""
    tp = TopicPartition(topic, store.partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=max_bytes)
    await consumer.start()
    latest: dict[bytes, bytes | None] = {}
    try:
        consumer.assign([tp])
        # The log end is the larger of what ListOffsets and the fetch responses say: Tansu's
        # ListOffsets answers the last batch's base offset + 1 (found by the benchmarks), so
        # alone it would stop short of the last batch; the fetch high watermark is right there.
        end = (await consumer.end_offsets([tp]))[tp]
        # an explicit offset: seek_to_beginning() is lazy, and on Apache Kafka position() then
        # answered the log end (seen in tests), which silently restored nothing
        consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
        deadline = time.monotonic() + timeout_s
        while True:
            batch = await consumer.getmany(tp, timeout_ms=200)
            for msg in batch.get(tp, ()):
                latest[msg.key] = msg.value
            hw = consumer.highwater(tp)
            pos = await consumer.position(tp)
            if not batch and hw is not None and pos >= max(hw, end):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"restoring {topic}[{store.partition}]: at offset {pos}, end {max(hw or 0, end)}")
    finally:
        await consumer.stop()
    n = 0
    for key, value in latest.items():
        if value is not None:
            store.load(key.decode(), orjson.loads(value))
            n += 1
    return n
